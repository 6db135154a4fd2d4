"""The viewer's panels: live traces, stimulus + retrieved images, masked-channel reconstruction.

Every panel is fed from the GUI thread with data the feed already copied; each ``show_*`` method
returns quickly and does nothing when its input did not change, because it runs on a 30 fps timer
next to an engine that must not be starved of CPU (2 cores).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QImage, QPixmap
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedLayout,
    QVBoxLayout,
    QWidget,
)

from neuralign.ui.feeds import TraceSnapshot, default_trace_channels

log = logging.getLogger(__name__)

GOOD_PEN = pg.mkPen((200, 220, 255), width=1)
BAD_PEN = pg.mkPen((255, 60, 60), width=1)
TILE_PX = 64  # retrieved thumbnails (48 px in the bundle): readable at 1366x768 with k=5 in a row
STIM_PX = 112


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two traces; NaN when either is constant or not finite."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def static_plot() -> pg.PlotWidget:
    """A plot the user cannot pan, zoom or open a context menu on: the panels redraw it live."""
    plot = pg.PlotWidget()
    plot.setMouseEnabled(False, False)
    plot.hideButtons()
    plot.setMenuEnabled(False)
    return plot


def thumbnail_pixmap(rgb: np.ndarray, size: int) -> QPixmap:
    """A QPixmap of an (h, w, 3) uint8 image scaled to ``size`` px (QImage copies the buffer)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(img).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation)


def unavailable_label(text: str) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lab.setStyleSheet("color: #777; font-style: italic; padding: 12px;")
    return lab


def _flat_button(text: str, tip: str) -> QPushButton:
    b = QPushButton(text)
    b.setToolTip(tip)
    # buttons must not take keyboard focus: Space is the window's pause key, not "press button"
    b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return b


# ---------------------------------------------------------------------------------------------
# Traces


class TracePanel(QWidget):
    """Scrolling filtered traces, all good channels in ONE curve (NaN-separated, connect='finite').

    One PlotDataItem instead of one per channel halves the paint cost (streams.md: 64 curves ~65 %
    of a core at 30 fps, one curve ~35 %). Channels flagged bad (flat or huge variance) go into a
    second, red curve. Each channel lives in a lane of height 1; ``gain`` scales the signal
    relative to the median channel std (auto scale) and is clipped to +/-1.5 lanes so one wild
    channel cannot cover the others.
    """

    channelsRequested = pyqtSignal()

    def __init__(self, available: bool, window_s: float = 5.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.window_s = window_s
        self.gain = 1.0
        self.auto = True
        self._fixed_ref: float | None = None
        self._shown: TraceSnapshot | None = None
        self._ticks_key: tuple | None = None
        self.n_frames = 0

        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        bar = QHBoxLayout()
        self.title = QLabel("<b>Filtered traces</b>")
        bar.addWidget(self.title)
        bar.addStretch(1)
        self.btn_channels = _flat_button("Channels… (C)", "choose the channels shown")
        self.btn_minus = _flat_button("−", "smaller traces")
        self.btn_plus = _flat_button("+", "larger traces")
        self.btn_auto = _flat_button("Auto", "scale from the median channel std (continuously)")
        self.btn_auto.setCheckable(True)
        self.btn_auto.setChecked(True)
        for b in (self.btn_channels, self.btn_minus, self.btn_plus, self.btn_auto):
            bar.addWidget(b)
        outer.addLayout(bar)
        self.btn_channels.clicked.connect(self.channelsRequested)
        self.btn_minus.clicked.connect(lambda: self.scale_by(1 / 1.4))
        self.btn_plus.clicked.connect(lambda: self.scale_by(1.4))
        self.btn_auto.toggled.connect(self.set_auto)

        self.stack = QStackedLayout()
        outer.addLayout(self.stack, 1)
        self.plot = static_plot()
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", "time (s)")
        # no showGrid(): a grid is painted by the AxisItem across the whole plot, so every
        # frame would replay it (measured: ~18 % of a core at 30 fps). Four dim lines instead.
        for x in range(-int(window_s) + 1, 0):
            pi.addItem(pg.InfiniteLine(pos=x, angle=90, movable=False,
                                       pen=pg.mkPen((60, 60, 60), width=1)))
        pi.disableAutoRange()
        pi.setXRange(-window_s, 0, padding=0.01)
        font = QFont()
        font.setPointSize(9)
        for ax in ("left", "bottom"):
            pi.getAxis(ax).setTickFont(font)
        self.good = pg.PlotDataItem(pen=GOOD_PEN, connect="finite", antialias=False)
        self.bad = pg.PlotDataItem(pen=BAD_PEN, connect="finite", antialias=False)
        pi.addItem(self.good)
        pi.addItem(self.bad)
        self.stack.addWidget(self.plot)
        self.stack.addWidget(unavailable_label(
            "Traces unavailable: this viewer reads the engine's LSL result stream, which carries "
            "decoded results only. Run the engine in this process (neuralign run --view) to see "
            "live filtered traces."))
        self.available = available
        self.stack.setCurrentIndex(0 if available else 1)
        for b in (self.btn_channels, self.btn_minus, self.btn_plus, self.btn_auto):
            b.setEnabled(available)

    def scale_by(self, factor: float) -> None:
        self.gain *= factor
        self._shown = None  # redraw at the next tick even if no new samples came

    def set_auto(self, on: bool) -> None:
        """Auto: the scale follows the median std; off: it freezes at its current value."""
        self.auto = on
        if on:
            self.gain, self._fixed_ref = 1.0, None
        elif self._shown is not None:
            self._fixed_ref = self._shown.ref_std
        self._shown = None

    def show_traces(self, snap: TraceSnapshot | None) -> bool:
        """Draw a snapshot (no-op if it is the one already drawn). Returns True if it drew."""
        if snap is None or snap is self._shown or not self.available:
            return False
        n, T = snap.data.shape
        if n == 0 or T < 2:
            self.good.setData([], [])
            self.bad.setData([], [])
            self._shown = snap
            return True
        ref = self._fixed_ref if (not self.auto and self._fixed_ref) else snap.ref_std
        scale = self.gain / (6.0 * ref) if ref and np.isfinite(ref) and ref > 0 else self.gain
        offsets = np.arange(n - 1, -1, -1, dtype=np.float64)  # first channel on top
        y = np.clip(np.nan_to_num(snap.data, nan=0.0) * scale, -1.5, 1.5) + offsets[:, None]
        for item, mask in ((self.good, ~snap.bad), (self.bad, snap.bad)):
            k = int(mask.sum())
            if k == 0:
                item.setData([], [])
                continue
            xs = np.empty((k, T + 1))
            ys = np.empty((k, T + 1))
            xs[:, :T] = snap.t
            xs[:, T] = snap.t[-1]
            ys[:, :T] = y[mask]
            ys[:, T] = np.nan  # the separator: connect='finite' lifts the pen here
            item.setData(xs.ravel(), ys.ravel(), connect="finite")
        key = (tuple(snap.channels), tuple(bool(b) for b in snap.bad))
        if key != self._ticks_key:
            ticks = [(float(offsets[i]), name + (" (bad)" if snap.bad[i] else ""))
                     for i, name in enumerate(snap.channels)]
            self.plot.getPlotItem().getAxis("left").setTicks([ticks, []])
            self.plot.getPlotItem().setYRange(-0.8, n - 0.2, padding=0)
            self._ticks_key = key
        self._shown = snap
        self.n_frames += 1
        return True


class ChannelDialog(QDialog):
    """Pick the trace channels from a checkable list (defaults: occipital/parietal)."""

    def __init__(self, names: Sequence[str], selected: Sequence[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Trace channels")
        self.names = list(names)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Channels shown in the trace panel:"))
        self.list = QListWidget()
        chosen = set(selected)
        for n in self.names:
            it = QListWidgetItem(n)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Checked if n in chosen else Qt.CheckState.Unchecked)
            self.list.addItem(it)
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        for text, fn in (("Default", self._default), ("All", lambda: self._set(self.names)),
                         ("None", lambda: self._set([]))):
            b = QPushButton(text)
            b.clicked.connect(fn)
            row.addWidget(b)
        lay.addLayout(row)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                               | QDialogButtonBox.StandardButton.Cancel)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay.addWidget(box)
        self.resize(260, 520)

    def _set(self, names: Sequence[str]) -> None:
        keep = set(names)
        for i in range(self.list.count()):
            it = self.list.item(i)
            it.setCheckState(Qt.CheckState.Checked if it.text() in keep else Qt.CheckState.Unchecked)

    def _default(self) -> None:
        self._set(default_trace_channels(self.names))

    def selected(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]


# ---------------------------------------------------------------------------------------------
# Stimulus and retrieved images


class ThumbTile(QFrame):
    """One image: thumbnail (or its id as text when not in the template bank), id and score."""

    def __init__(self, size: int = TILE_PX, parent: QWidget | None = None):
        super().__init__(parent)
        self.size_px = size
        self.image_id: str | None = None
        self.score: float | None = None
        self.setFrameShape(QFrame.Shape.Box)
        self.setLineWidth(2)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(1)
        self.pic = QLabel()
        self.pic.setFixedSize(size, size)
        self.pic.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.pic.setWordWrap(True)
        self.text = QLabel()
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        f = self.text.font()
        f.setPointSize(8)
        self.text.setFont(f)
        lay.addWidget(self.pic, 0, Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.text)
        self.set_image(None, None, None)

    def set_image(self, image_id: str | None, pixmap: QPixmap | None, score: float | None,
                  highlight: bool = False) -> None:
        self.image_id, self.score = image_id, score
        if pixmap is not None:
            self.pic.setPixmap(pixmap)
            self.pic.setStyleSheet("")
        else:
            self.pic.clear()
            self.pic.setText("" if image_id is None else str(image_id))
            self.pic.setStyleSheet("background: #ddd; color: #333;")
        label = "" if image_id is None else str(image_id)
        if score is not None:
            label += f"\n{score:.3f}"
        self.text.setText(label)
        self.setStyleSheet("ThumbTile { border: 2px solid %s; }"
                           % ("#2a2" if highlight else "transparent"))

    def pixmap_key(self) -> int | None:
        pm = self.pic.pixmap()
        return None if pm is None or pm.isNull() else pm.cacheKey()


class StimulusPanel(QWidget):
    """Current stimulus beside its top-k retrieved images; below, the repetition-average decision.

    A tile is framed green when it is the image actually shown (ground truth known).
    """

    def __init__(self, template_ids: Sequence[str], thumbnails: np.ndarray, k: int = 5,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.pixmaps = {tid: thumbnail_pixmap(thumbnails[i], TILE_PX)
                        for i, tid in enumerate(template_ids) if i < len(thumbnails)}
        self.stim_pixmaps = {tid: thumbnail_pixmap(thumbnails[i], STIM_PX)
                             for i, tid in enumerate(template_ids) if i < len(thumbnails)}
        self.k = k
        self.shown: dict | None = None  # the result currently displayed
        self.n_changes = 0

        lay = QGridLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        stim_box = QVBoxLayout()
        stim_box.addWidget(QLabel("<b>Stimulus</b>"))
        self.stim = ThumbTile(STIM_PX)
        stim_box.addWidget(self.stim)
        self.stim_info = QLabel("waiting for the first decoded epoch…")
        self.stim_info.setWordWrap(True)
        stim_box.addWidget(self.stim_info)
        stim_box.addStretch(1)
        lay.addLayout(stim_box, 0, 0, 2, 1)

        self.topk_title = QLabel("<b>Top-k retrieved (single trial)</b>")
        self.avg_title = QLabel("<b>Repetition average</b>")
        self.topk_grid, self.avg_grid = QGridLayout(), QGridLayout()
        for row, (title, grid) in enumerate(((self.topk_title, self.topk_grid),
                                             (self.avg_title, self.avg_grid))):
            box = QVBoxLayout()
            box.addWidget(title)
            box.addLayout(grid)
            box.addStretch(1)
            lay.addLayout(box, row, 1)
        lay.setColumnStretch(1, 1)
        self.topk_tiles: list[ThumbTile] = []
        self.avg_tiles: list[ThumbTile] = []
        self.set_k(k)

    def set_k(self, k: int) -> None:
        """Show ``k`` tiles per row (1-10); wraps at 5 so k=10 fits 1366 px."""
        self.k = int(min(10, max(1, k)))
        for tiles, grid in ((self.topk_tiles, self.topk_grid), (self.avg_tiles, self.avg_grid)):
            while len(tiles) < self.k:
                t = ThumbTile()
                grid.addWidget(t, len(tiles) // 5, len(tiles) % 5)
                tiles.append(t)
            for i, t in enumerate(tiles):
                t.setVisible(i < self.k)
        self.topk_title.setText(f"<b>Top-{self.k} retrieved (single trial)</b>")
        if self.shown is not None:
            r, self.shown = self.shown, None
            self.show_result(r)

    def _fill(self, tiles: list[ThumbTile], ids: Sequence[str], scores: Sequence[float],
              truth: str | None) -> None:
        for i, t in enumerate(tiles[: self.k]):
            if i < len(ids):
                tid = ids[i]
                t.set_image(tid, self.pixmaps.get(tid), float(scores[i]) if i < len(scores)
                            else None, highlight=truth is not None and tid == truth)
            else:
                t.set_image(None, None, None)

    def show_result(self, r: dict | None) -> bool:
        """Display one result dict (no-op when it is the one on screen). True if it changed."""
        if r is None or (self.shown is not None and r.get("epoch_id") == self.shown.get("epoch_id")):
            return False
        marker = r.get("marker")
        self.stim.set_image(marker, self.stim_pixmaps.get(marker), None)
        if marker is None:
            self.stim.pic.setText("no marker\n(sliding window)")
        known = marker in self.pixmaps
        truth = marker if known else None
        info = f"epoch {r.get('epoch_id')}"
        if marker is not None and not known:
            info += " — not in the template bank"
        self.stim_info.setText(info)
        self._fill(self.topk_tiles, r.get("topk_ids") or [], r.get("topk_scores") or [], truth)
        avg_ids = r.get("avg_topk_ids")
        if avg_ids:
            self.avg_title.setText(f"<b>Repetition average (n = {r.get('n_repetitions', '?')})</b>")
            self._fill(self.avg_tiles, avg_ids, r.get("avg_topk_scores") or [], truth)
        else:
            self.avg_title.setText("<b>Repetition average</b> (first presentation)")
            for t in self.avg_tiles:
                t.set_image(None, None, None)
        self.shown = r
        self.n_changes += 1
        return True

    def displayed_ids(self) -> list[str | None]:
        """The ids the top-k tiles show right now (read from the widgets, for tests and logs)."""
        return [t.image_id for t in self.topk_tiles[: self.k]]


# ---------------------------------------------------------------------------------------------
# Masked-channel reconstruction


def sensor_positions(ch_names: Sequence[str], ch_types: Sequence[str] | None = None
                     ) -> dict[str, tuple[float, float]]:
    """2-D positions (unit box) of the EEG channels found in the easycap-M1 10-10 montage.

    Uses MNE's own topographic projection (``make_eeg_layout``). Returns {} when fewer than 3
    channels have positions (MEG, spikes, unknown names): the panel then falls back to a list.
    """
    try:
        import mne

        names = [n for i, n in enumerate(ch_names)
                 if ch_types is None or i >= len(ch_types) or ch_types[i] == "eeg"]
        montage = mne.channels.make_standard_montage("easycap-M1")
        known = {n.upper() for n in montage.ch_names}
        names = [n for n in names if n.upper() in known]
        if len(names) < 3:
            return {}
        info = mne.create_info(names, 100.0, "eeg")
        info.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
        lay = mne.channels.make_eeg_layout(info)
        xy = lay.pos[:, :2] + lay.pos[:, 2:4] / 2
        return {n: (float(x), float(y)) for n, (x, y) in zip(lay.names, xy)}
    except Exception as exc:  # a layout is a convenience: never let it take the viewer down
        log.warning("no sensor layout (%s); using a channel list", exc)
        return {}


class MaskPanel(QWidget):
    """Toggle channel masks on a sensor map (or list) and compare original vs reconstruction.

    The engine reconstructs every masked channel of its latest batch from the others; the plot
    shows the selected masked channel's original and reconstructed epoch and their Pearson r.
    """

    maskChanged = pyqtSignal(list)  # sorted bundle channel indices

    def __init__(self, ch_names: Sequence[str], ch_types: Sequence[str] | None, available: bool,
                 sfreq: float, tmin: float = 0.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.ch_names = list(ch_names)
        self.sfreq, self.tmin = sfreq, tmin
        self.masked: list[int] = []
        self.selected: int | None = None
        self.last_r: float | None = None
        self.last_epoch: int | None = None
        self._shown_key: tuple | None = None

        outer = QVBoxLayout(self)
        outer.setContentsMargins(2, 2, 2, 2)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Masked-channel reconstruction</b>"))
        head.addStretch(1)
        head.addWidget(QLabel("show:"))
        self.combo = QComboBox()
        self.combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.combo.setMinimumWidth(70)
        self.combo.currentTextChanged.connect(self._on_combo)
        head.addWidget(self.combo)
        self.btn_clear = _flat_button("Unmask all", "remove every mask")
        self.btn_clear.clicked.connect(lambda: self.set_masked([]))
        head.addWidget(self.btn_clear)
        outer.addLayout(head)

        self.stack = QStackedLayout()
        outer.addLayout(self.stack, 1)
        body = QWidget()
        row = QHBoxLayout(body)
        row.setContentsMargins(0, 0, 0, 0)
        self.positions = sensor_positions(self.ch_names, ch_types)
        self.map: pg.PlotWidget | None = None
        self.list: QListWidget | None = None
        if self.positions:
            self._build_map(row)
        else:
            self._build_list(row)
        self.rec_plot = static_plot()
        rp = self.rec_plot.getPlotItem()
        rp.setLabel("bottom", "time (s)")
        rp.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.orig_curve = rp.plot(pen=pg.mkPen((200, 200, 200), width=1), name="original")
        self.rec_curve = rp.plot(pen=pg.mkPen((255, 160, 0), width=2), name="reconstructed")
        rp.setTitle("click a sensor to mask it", size="10pt")
        row.addWidget(self.rec_plot, 3)
        self.stack.addWidget(body)
        self.stack.addWidget(unavailable_label(
            "Masking unavailable: the LSL result stream carries decoded results only; masked-"
            "channel reconstruction needs the engine in this process (neuralign run --view)."))
        self.available = available
        self.stack.setCurrentIndex(0 if available else 1)
        self.btn_clear.setEnabled(available)
        self.combo.setEnabled(available)

    # -- channel selectors -------------------------------------------------------------------
    def _build_map(self, row: QHBoxLayout) -> None:
        self.map = static_plot()
        self.map.setAspectLocked(True)
        pi = self.map.getPlotItem()
        pi.hideAxis("left")
        pi.hideAxis("bottom")
        self._map_index = [i for i, n in enumerate(self.ch_names) if n in self.positions]
        xy = np.array([self.positions[self.ch_names[i]] for i in self._map_index])
        c = (xy.max(0) + xy.min(0)) / 2
        rad = float(np.max(np.linalg.norm(xy - c, axis=1))) * 1.12
        th = np.linspace(0, 2 * np.pi, 200)
        pen = pg.mkPen((140, 140, 140), width=1.5)
        pi.plot(c[0] + rad * np.cos(th), c[1] + rad * np.sin(th), pen=pen)
        pi.plot([c[0] - 0.1 * rad, c[0], c[0] + 0.1 * rad],
                [c[1] + 0.99 * rad, c[1] + 1.12 * rad, c[1] + 0.99 * rad], pen=pen)  # nose
        self._xy = xy
        self.scatter = pg.ScatterPlotItem(size=13, hoverable=True, hoverSize=17, tip=None)
        self.scatter.sigClicked.connect(self._on_click)
        pi.addItem(self.scatter)
        small = QFont()
        small.setPointSize(7)
        for (x, y), i in zip(xy, self._map_index):
            t = pg.TextItem(self.ch_names[i], color=(210, 210, 210), anchor=(0.5, -0.35))
            t.setFont(small)
            t.setPos(x, y)
            pi.addItem(t)
        pi.setXRange(c[0] - rad * 1.05, c[0] + rad * 1.05, padding=0)
        pi.setYRange(c[1] - rad * 1.05, c[1] + rad * 1.18, padding=0)
        self.map.setToolTip("click a sensor to mask / unmask it")
        row.addWidget(self.map, 2)
        self._refresh_map()

    def _build_list(self, row: QHBoxLayout) -> None:
        self.list = QListWidget()
        for n in self.ch_names:
            it = QListWidgetItem(n)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            it.setCheckState(Qt.CheckState.Unchecked)
            self.list.addItem(it)
        self.list.itemChanged.connect(self._on_list)
        row.addWidget(self.list, 1)

    def _refresh_map(self) -> None:
        if self.map is None:
            return
        masked = set(self.masked)
        brushes, pens = [], []
        for i in self._map_index:
            brushes.append(pg.mkBrush((230, 50, 50) if i in masked else (90, 140, 220)))
            pens.append(pg.mkPen((255, 220, 0), width=3) if i == self.selected
                        else pg.mkPen((20, 20, 20), width=1))
        self.scatter.setData(pos=self._xy, data=list(self._map_index), brush=brushes, pen=pens)

    def map_point(self, name: str) -> QPointF | None:
        """Widget (viewport) coordinates of a sensor, so tests can click it like a user."""
        if self.map is None or name not in self.positions:
            return None
        x, y = self.positions[name]
        scene = self.map.getPlotItem().vb.mapViewToScene(QPointF(x, y))
        return QPointF(self.map.mapFromScene(scene))

    def _on_click(self, _item, points, _ev=None) -> None:
        if len(points):
            self.toggle(int(points[0].data()))

    def _on_list(self, item: QListWidgetItem) -> None:
        i = self.ch_names.index(item.text())
        on = item.checkState() == Qt.CheckState.Checked
        if on != (i in self.masked):
            self.toggle(i)

    def _on_combo(self, text: str) -> None:
        if text in self.ch_names:
            self.selected = self.ch_names.index(text)
            self._shown_key = None
            self._refresh_map()

    # -- mask API ---------------------------------------------------------------------------
    def toggle(self, index: int) -> None:
        """Mask channel ``index`` (bundle order) if unmasked, else unmask it."""
        if not self.available:
            return
        m = set(self.masked)
        if index in m:
            m.discard(index)
            if self.selected == index:
                self.selected = None
        else:
            m.add(index)
            self.selected = index
        self.set_masked(sorted(m), self.selected)

    def set_masked(self, indices: Sequence[int], selected: int | None = None) -> None:
        self.masked = sorted(set(int(i) for i in indices))
        if selected is None or selected not in self.masked:
            selected = self.selected if self.selected in self.masked else (
                self.masked[-1] if self.masked else None)
        self.selected = selected
        self.combo.blockSignals(True)
        self.combo.clear()
        self.combo.addItems([self.ch_names[i] for i in self.masked])
        if selected is not None:
            self.combo.setCurrentText(self.ch_names[selected])
        self.combo.blockSignals(False)
        if self.list is not None:
            self.list.blockSignals(True)
            for i in range(self.list.count()):
                self.list.item(i).setCheckState(Qt.CheckState.Checked if i in self.masked
                                                else Qt.CheckState.Unchecked)
            self.list.blockSignals(False)
        self._refresh_map()
        self._shown_key = None
        if not self.masked:
            self.orig_curve.setData([], [])
            self.rec_curve.setData([], [])
            self.last_r = None
            self.rec_plot.getPlotItem().setTitle("click a sensor to mask it", size="10pt")
        self.maskChanged.emit(list(self.masked))

    def show_reconstruction(self, rec: dict | None) -> bool:
        """Plot the selected channel of the engine's latest reconstruction (if it has it)."""
        if rec is None or self.selected is None or not self.available:
            return False
        chans = list(rec.get("channels") or [])
        if self.selected not in chans:
            return False  # the engine has not run a batch with this mask yet
        key = (rec.get("epoch_id"), self.selected, id(rec))
        if key == self._shown_key:
            return False
        j = chans.index(self.selected)
        orig = np.asarray(rec["original"][j], np.float64)
        recon = np.asarray(rec["reconstructed"][j], np.float64)
        t = self.tmin + np.arange(orig.size) / self.sfreq
        self.orig_curve.setData(t, orig)
        self.rec_curve.setData(t, recon)
        self.last_r = pearson_r(orig, recon)
        self.last_epoch = rec.get("epoch_id")
        self.rec_plot.getPlotItem().setTitle(
            f"{self.ch_names[self.selected]}: r = {self.last_r:.2f} (epoch {self.last_epoch})",
            size="10pt")
        self.rec_plot.getPlotItem().enableAutoRange()
        self._shown_key = key
        return True


def color_text(text: str, color: QColor | str | None) -> str:
    """Rich text in a colour (status-bar labels)."""
    if color is None:
        return text
    c = color.name() if isinstance(color, QColor) else color
    return f"<span style='color:{c}'>{text}</span>"
