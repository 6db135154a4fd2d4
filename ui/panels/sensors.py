"""Masked-channel reconstruction: a clickable sensor map (or list) and original vs reconstructed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, Qt, pyqtSignal
from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QStackedLayout,
    QVBoxLayout,
    QWidget,
)

from neuralign.realtime.decisions import Reconstruction
from neuralign.ui.forms import ChannelComparison
from neuralign.ui.panels.common import (
    IN_PROCESS_HINT,
    _flat_button,
    pearson_r,
    static_plot,
    unavailable_label,
)
from neuralign.ui.panels.registry import PanelContext, Slot, register_panel
from neuralign.ui.panels.traces import amplitude_unit

if TYPE_CHECKING:
    from neuralign.bundle import Manifest
    from neuralign.ui.forms import Frame

log = logging.getLogger(__name__)


def reconstruction_amplitude_label(manifest: Manifest) -> str:
    """The reconstruction plot's y label: it shows the model's input, i.e. the epoch after the
    bundle's noise normalization (whitened: in units of the noise s.d.), not the raw signal."""
    method = manifest.noise_normalization.method if manifest.noise_normalization else "none"
    if method == "mvnn":
        return "whitened amplitude (noise s.d.)"
    if method == "zscore":
        return "z-scored amplitude (s.d.)"
    unit, _ = amplitude_unit(manifest.channels.types)
    return f"amplitude ({'V' if unit == 'µV' else unit})"


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


def label_anchors(xy: np.ndarray) -> list[tuple[float, float]]:
    """TextItem anchors of the sensor labels: below the dot, or above it for every second dot of
    a row, so neighbours on one row (FT7/FC5, TP7/CP5, CP6/TP8: at the rim they are closer than a
    label is wide) never put their labels side by side."""
    n = len(xy)
    if n == 0:
        return []
    d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    spacing = float(np.median(np.where(d > 0, d, np.inf).min(axis=1)))
    order = np.argsort(-xy[:, 1], kind="stable")
    rows: list[list[int]] = []
    for i in order:  # top to bottom; a dot joins the row whose last dot is at about its height
        if rows and abs(xy[rows[-1][-1], 1] - xy[i, 1]) < 0.35 * spacing:
            rows[-1].append(int(i))
        else:
            rows.append([int(i)])
    below, above = (0.5, -0.3), (0.5, 1.3)
    anchors: list[tuple[float, float]] = [below] * n
    prev_below: list[float] = []  # x of the labels the row above put below its dots
    for row in rows:
        row = sorted(row, key=lambda j: xy[j, 0])

        def clashes(phase: int, row: list[int] = row, prev: list[float] = prev_below) -> int:
            # an 'above' label here meets a 'below' label of the row above at about the same x
            return sum(abs(xy[i, 0] - x) < 0.8 * spacing for k, i in enumerate(row)
                       if (k + phase) % 2 == 1 for x in prev)

        phase = min((0, 1), key=clashes)
        for k, i in enumerate(row):
            anchors[i] = below if (k + phase) % 2 == 0 else above
        prev_below = [xy[i, 0] for i in row if anchors[i] == below]
    return anchors


class MaskPanel(QWidget):
    """Toggle channel masks on a sensor map (or list) and compare original vs reconstruction.

    The engine reconstructs every masked channel of its latest batch from the others; the plot
    shows the selected masked channel's original and reconstructed epoch and their Pearson r.
    """

    maskChanged = pyqtSignal(list)  # sorted bundle channel indices

    def __init__(self, ch_names: Sequence[str], ch_types: Sequence[str] | None, available: bool,
                 sfreq: float, tmin: float = 0.0, amplitude_label: str = "amplitude",
                 parent: QWidget | None = None):
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
        rp.setLabel("left", amplitude_label)
        rp.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.orig_curve = rp.plot(pen=pg.mkPen((200, 200, 200), width=1), name="original")
        self.rec_curve = rp.plot(pen=pg.mkPen((255, 160, 0), width=2), name="reconstructed")
        rp.setTitle("click a sensor to mask it", size="10pt")
        row.addWidget(self.rec_plot, 3)
        self.stack.addWidget(body)
        self.stack.addWidget(unavailable_label(
            "Masking unavailable: the LSL result stream carries decoded results only; masked-"
            "channel reconstruction needs the engine and its viewer in one process: "
            f"{IN_PROCESS_HINT}."))
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
        self.labels: dict[str, pg.TextItem] = {}
        for (x, y), i, anchor in zip(xy, self._map_index, label_anchors(xy)):
            t = pg.TextItem(self.ch_names[i], color=(210, 210, 210), anchor=anchor)
            t.setFont(small)
            t.setPos(x, y)
            pi.addItem(t)
            self.labels[self.ch_names[i]] = t
        pi.setXRange(c[0] - rad * 1.08, c[0] + rad * 1.08, padding=0)
        pi.setYRange(c[1] - rad * 1.1, c[1] + rad * 1.18, padding=0)
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

    def show_reconstruction(self, rec: Reconstruction | None) -> bool:
        """Plot the selected channel of the engine's latest reconstruction (if it has it).

        A new reconstruction is told from the one on screen by its identity: the engine makes a
        new object per batch."""
        if rec is None or self.selected is None or not self.available:
            return False
        key = (rec.epoch_id, self.selected, id(rec))
        if key == self._shown_key:
            return False
        row = ChannelComparison.of(rec, self.selected)
        if row is None:
            return False  # the engine has not run a batch with this mask yet
        t = self.tmin + np.arange(row.original.size) / self.sfreq
        self.orig_curve.setData(t, row.original)
        self.rec_curve.setData(t, row.reconstructed)
        self.last_r = pearson_r(row.original, row.reconstructed)
        self.last_epoch = row.epoch_id
        self.rec_plot.getPlotItem().setTitle(
            f"{self.ch_names[self.selected]}: r = {self.last_r:.2f} (epoch {self.last_epoch})",
            size="10pt")
        self.rec_plot.getPlotItem().enableAutoRange()
        self._shown_key = key
        return True


@register_panel
class MaskView:
    """The masked-channel reconstruction, bottom right: a sensor click asks the feed to mask."""

    name = "mask"
    title = "Masked-channel reconstruction"
    slot = Slot.RIGHT_BOTTOM
    order = 0
    stretch = 0

    def build(self, ctx: PanelContext) -> MaskPanel:
        man = ctx.bundle.manifest
        self.widget = MaskPanel(ctx.bundle.ch_names, man.channels.types,
                                ctx.feed.supports_masking, float(man.sfreq),
                                float(man.epoch.tmin), reconstruction_amplitude_label(man))
        self.widget.maskChanged.connect(ctx.feed.set_masked)
        return self.widget

    def update(self, frame: Frame) -> None:
        self.widget.show_reconstruction(frame.reconstruction)
