"""Live filtered traces (one curve for all good channels) and the channel picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
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
from neuralign.ui.panels.common import IN_PROCESS_HINT, _flat_button, static_plot, unavailable_label
from neuralign.ui.panels.registry import PanelContext, Slot, register_panel

if TYPE_CHECKING:
    from neuralign.ui.forms import Frame

GOOD_PEN = pg.mkPen((200, 220, 255), width=1)
BAD_PEN = pg.mkPen((255, 60, 60), width=1)


#: channel type -> (display unit, factor from the SI unit neuralign carries: volts, teslas)
UNITS = {"eeg": ("µV", 1e6), "seeg": ("µV", 1e6), "ecog": ("µV", 1e6), "dbs": ("µV", 1e6),
         "eog": ("µV", 1e6), "mag": ("fT", 1e15), "grad": ("fT/cm", 1e13)}


def amplitude_unit(ch_types: Sequence[str] | None) -> tuple[str, float]:
    """(unit, factor) the traces' scale bar uses: the first channel type's display unit, or
    arbitrary units (spike rates, unknown types) with factor 1."""
    for t in ch_types or ():
        if t in UNITS:
            return UNITS[t]
    return ("a.u.", 1.0)


def nice_value(x: float) -> float:
    """The largest 1-2-5 x 10^n value not above ``x`` (a scale bar's length)."""
    if not np.isfinite(x) or x <= 0:
        return 0.0
    mag = 10 ** np.floor(np.log10(x))
    for m in (5, 2, 1):
        if m * mag <= x:
            return float(m * mag)
    return float(mag)


def format_amplitude(value: float, unit: str) -> str:
    return f"{value:g} {unit}"


class TracePanel(QWidget):
    """Scrolling filtered traces, all good channels in ONE curve (NaN-separated, connect='finite').

    One PlotDataItem instead of one per channel halves the paint cost (streams.md: 64 curves ~65 %
    of a core at 30 fps, one curve ~35 %). Channels flagged bad (flat or huge variance) go into a
    second, red curve. Each channel lives in a lane of height 1; ``gain`` scales the signal
    relative to the median channel std (auto scale) and is clipped to +/-1.5 lanes so one wild
    channel cannot cover the others.
    """

    channelsRequested = pyqtSignal()

    def __init__(self, available: bool, window_s: float = 5.0,
                 unit: tuple[str, float] = ("a.u.", 1.0), parent: QWidget | None = None):
        super().__init__(parent)
        self.window_s = window_s
        self.unit, self.unit_factor = unit
        #: the scale bar's length in display units (0 before the first frame)
        self.scale_value = 0.0
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
        # amplitude scale bar, bottom left: its label says what one bar of trace height is
        self.scale_bar = pg.PlotDataItem(pen=pg.mkPen((255, 255, 255), width=3))
        self.scale_label = pg.TextItem("", color=(255, 255, 255), anchor=(0, 0.5))
        self.scale_label.setFont(font)
        pi.addItem(self.scale_bar)
        pi.addItem(self.scale_label)
        self.stack.addWidget(self.plot)
        self.stack.addWidget(unavailable_label(
            "Traces unavailable: this viewer reads the engine's LSL result stream, which carries "
            "decoded results only. For live filtered traces run the engine with its viewer in one "
            f"process: {IN_PROCESS_HINT}."))
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
        self._draw_scale_bar(scale)
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

    def _draw_scale_bar(self, scale: float) -> None:
        """A bar of a round amplitude about half a lane tall (``scale``: lanes per SI unit)."""
        if not scale > 0:
            return
        value = nice_value(0.6 * self.unit_factor / scale)  # display units in ~0.6 lane
        if value == self.scale_value:
            return
        self.scale_value = value
        height = value / self.unit_factor * scale
        x = -self.window_s * 0.985
        y0 = -0.75
        self.scale_bar.setData([x, x], [y0, y0 + height])
        self.scale_label.setText(format_amplitude(value, self.unit))
        self.scale_label.setPos(x + 0.03 * self.window_s, y0 + height / 2)
        self.title.setText(f"<b>Filtered traces</b> (bar = {format_amplitude(value, self.unit)})")


class ChannelDialog(QDialog):
    """Pick the trace channels from a checkable list (defaults: occipital/parietal)."""

    def __init__(self, names: Sequence[str], selected: Sequence[str],
                 parent: QWidget | None = None):
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
            it.setCheckState(Qt.CheckState.Checked if it.text() in keep
                             else Qt.CheckState.Unchecked)

    def _default(self) -> None:
        self._set(default_trace_channels(self.names))

    def selected(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]


@register_panel
class TracesView:
    """The live traces, the window's left column; its Channels button opens the window's picker."""

    name = "traces"
    title = "Filtered traces"
    slot = Slot.LEFT
    order = 0
    stretch = 0

    def build(self, ctx: PanelContext) -> TracePanel:
        self.widget = TracePanel(ctx.feed.supports_traces, ctx.window_s,
                                 amplitude_unit(ctx.bundle.manifest.channels.types))
        self.widget.channelsRequested.connect(ctx.choose_channels)
        return self.widget

    def update(self, frame: Frame) -> None:
        self.widget.show_traces(frame.traces)
