"""The viewer window: traces, stimulus + top-k images, masked-channel reconstruction, status.

The window only consumes a :class:`~neuralign.ui.feeds.Feed`. A ``QTimer`` at ~30 fps pulls the
feed's latest snapshot (cheap copies made by the feed's own thread), folds new results into a
:class:`ViewerState` and hands one :class:`~neuralign.ui.forms.Frame` to every panel, which
redraws what changed. The panels are whatever ``ui/panels/`` registers
(:mod:`neuralign.ui.panels.registry`): the window only places them in their slots. Nothing here
waits on the engine, a stream or a lock held by them, so a stalled stream shows up as "stalled"
in the status bar, never as a frozen window. Pausing (Space) freezes the display only: results
keep being ingested (counts and accuracy stay exact) and the newest data appear on resume.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QObject, Qt, QTimer
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QInputDialog, QLabel, QMainWindow, QSplitter, QVBoxLayout, QWidget

from neuralign.realtime.decisions import Result, RunningAccuracy
from neuralign.ui.feeds import Feed, FeedUpdate
from neuralign.ui.forms import Frame
from neuralign.ui.panels import ChannelDialog, MaskPanel, StimulusPanel, TracePanel, color_text
from neuralign.ui.panels.generated import GeneratedPanel
from neuralign.ui.panels.registry import Panel, PanelContext, Slot, registered_panels

log = logging.getLogger(__name__)

STALL_S = 2.0  # no result for this long -> the status bar says 'stalled'


def default_screenshot_dir() -> Path:
    """Where the S key saves: ``$NEURALIGN_SCREENSHOT_DIR``, else ``~/neuralign/screenshots``
    (never the current directory, which may be a git checkout)."""
    env = os.environ.get("NEURALIGN_SCREENSHOT_DIR")
    return Path(env).expanduser() if env else Path.home() / "neuralign" / "screenshots"


class ViewerState:
    """What the window knows beyond the current frame: counts and running accuracy.

    Accuracy is :class:`~neuralign.realtime.decisions.RunningAccuracy` (the rehearsal session's
    too): ground truth is known when the marker is one of the bundle's template ids; the
    repetition-average decision gets its own top-1 over every averaged decision.
    """

    def __init__(self, template_ids: Iterable[str], history: int = 2000):
        self.accuracy = RunningAccuracy(template_ids)
        self.history: deque[Result] = deque(maxlen=history)
        self.latest: Result | None = None
        self.n_results = 0
        self.last_result_at: float | None = None  # time.monotonic()
        self.started_at = time.monotonic()

    def ingest(self, results: Sequence[Result]) -> None:
        for r in results:
            self.n_results += 1
            self.history.append(r)
            self.accuracy.add(r)
        if results:
            self.latest = results[-1]
            self.last_result_at = time.monotonic()

    @property
    def n_judged(self) -> int:
        return self.accuracy.n_judged

    @property
    def n_top1(self) -> int:
        return self.accuracy.n_top1

    @property
    def n_top5(self) -> int:
        return self.accuracy.n_top5

    def seconds_since_result(self) -> float:
        ref = self.last_result_at if self.last_result_at is not None else self.started_at
        return time.monotonic() - ref

    def accuracy_text(self) -> str:
        acc = self.accuracy
        if not acc.n_judged:
            return "accuracy: no ground truth yet"
        n = acc.n_judged
        s = (f"top-1 {acc.n_top1}/{n} ({100 * acc.n_top1 / n:.0f} %)  "
             f"top-5 {100 * acc.n_top5 / n:.0f} %")
        if acc.n_avg_judged:
            s += f"  avg top-1 {100 * acc.n_avg_top1 / acc.n_avg_judged:.0f} %"
        summary = acc.summary()  # the single-trial Wolpaw ITR at the observed presentation rate
        if "itr_bits_per_min" in summary:
            s += f"  ITR {summary['itr_bits_per_min']:.1f} bits/min"
        return s


def _fmt_ms(summary: dict | None) -> str:
    if not summary or "p50" not in summary:
        return "–"
    return f"{summary['p50']:.1f} / {summary['p99']:.1f} ms"


class ViewerWindow(QMainWindow):
    """Main window over one feed.

    ``owns_source``: closing the window also stops what the feed reads from (the engine of
    ``neuralign run`` without ``--headless``; see :meth:`Feed.stop_source`).
    ``owned``: further objects with ``stop()`` the window stops on close (e.g. a replayer), after
    the feed and its source. Without either, closing stops only the feed's own threads.
    ``panels``: the panel classes to show (default: every registered panel).
    """

    def __init__(self, feed: Feed, owns_source: bool = False, owned: Sequence = (),
                 fps: float = 30.0, window_s: float = 5.0, k: int | None = None,
                 screenshot_dir: Path | None = None, parent: QWidget | None = None,
                 panels: Sequence[type[Panel]] | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, useOpenGL=False)
        self._init_state(feed, owns_source, owned, screenshot_dir)
        self._set_title_and_font()
        top_k = k or min(5, feed.default_top_k or 5)
        ctx = PanelContext(self.bundle, feed, window_s, top_k, self.choose_channels)
        self._build_panels(ctx, registered_panels() if panels is None else panels)
        self._lay_out()
        self._build_status_bar()
        self._build_actions()
        self._count_repaints()
        self.resize(1366, 768)
        self._start(fps)

    # -- construction steps ---------------------------------------------------------------------
    def _init_state(self, feed: Feed, owns_source: bool, owned: Sequence,
                    screenshot_dir: Path | None) -> None:
        self.feed = feed
        self.bundle = feed.bundle
        self.owns_source = owns_source
        self.owned = list(owned)
        self.screenshot_dir = Path(screenshot_dir) if screenshot_dir else default_screenshot_dir()
        self.state = ViewerState(self.bundle.template_ids)
        self.paused = False
        self._closed = False
        self.feed_status: dict = {}  # the feed's latest status dict (read-only for callers)
        #: results not yet in a frame (ingested while paused): the panels get them on resume
        self._unshown: deque[Result] = deque(maxlen=2000)
        self._frame_times: deque[float] = deque(maxlen=600)
        self._paint_times: deque[float] = deque(maxlen=600)
        self.n_ticks = 0
        self.n_frames = 0
        self.tick_ms: deque[float] = deque(maxlen=300)  # GUI-thread cost of each tick
        self._last_n_written: int | None = None
        self._last_sample_change = time.monotonic()
        self.feed_status_due = 0.0
        self._cpu0 = (time.thread_time(), time.perf_counter())

    def _set_title_and_font(self) -> None:
        self.setWindowTitle(
            f"neuralign viewer — {self.feed.describe()} — {self.bundle.path.name}")
        f = self.font()
        f.setPointSize(max(10, f.pointSize()))
        self.setFont(f)

    def _build_panels(self, ctx: PanelContext, classes: Iterable[type[Panel]]) -> None:
        """One instance of each panel class and its widget, keyed by the panel's name."""
        self.panels: dict[str, Panel] = {}
        self.panel_widgets: dict[str, QWidget] = {}
        self._failed_panels: set[str] = set()
        for cls in classes:
            panel = cls()
            widget = panel.build(ctx)
            widget.setAccessibleName(panel.title)
            self.panels[panel.name] = panel
            self.panel_widgets[panel.name] = widget

    def _slot_widget(self, slot: Slot) -> QWidget | None:
        """The slot's one widget, or a splitter of its widgets in order; None when empty."""
        names = [n for n, p in self.panels.items() if p.slot is slot]
        names.sort(key=lambda n: self.panels[n].order)
        if len(names) <= 1:
            return self.panel_widgets[names[0]] if names else None
        split = QSplitter(slot.orientation)
        for i, n in enumerate(names):
            split.addWidget(self.panel_widgets[n])
            split.setStretchFactor(i, self.panels[n].stretch)
        return split

    def _lay_out(self) -> None:
        """Traces on the left; on the right, the top row above the bottom one (which grows)."""
        left = self._slot_widget(Slot.LEFT)
        top, bottom = self._slot_widget(Slot.RIGHT_TOP), self._slot_widget(Slot.RIGHT_BOTTOM)
        right: QWidget | None = top or bottom
        if top is not None and bottom is not None:
            right = QSplitter(Qt.Orientation.Vertical)
            right.addWidget(top)
            right.addWidget(bottom)
            right.setStretchFactor(0, 0)
            right.setStretchFactor(1, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        for side in (left, right):
            if side is not None:
                split.addWidget(side)
        if left is not None and right is not None:
            split.setStretchFactor(0, 5)
            split.setStretchFactor(1, 6)
            split.setSizes([600, 740])
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(4, 4, 4, 0)
        lay.addWidget(split)
        self.setCentralWidget(central)

    def _build_status_bar(self) -> None:
        self._labels = {name: QLabel() for name in
                        ("decoded", "latency", "dropped", "health", "accuracy", "fps", "pause")}
        for lab in self._labels.values():
            lab.setTextFormat(Qt.TextFormat.RichText)
            lab.setContentsMargins(6, 0, 6, 0)
            self.statusBar().addPermanentWidget(lab, 0)

    def _count_repaints(self) -> None:
        """Count real repaints of the trace plot (offscreen too): the honest frame rate."""
        traces = self.panel_widgets.get("traces")
        if isinstance(traces, TracePanel):
            traces.plot.viewport().installEventFilter(self)

    def _start(self, fps: float) -> None:
        self.feed.start()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.timer.start(max(1, int(round(1000 / fps))))

    # -- the built-in panels' widgets (what the keys act on; tests read them) -------------------
    @property
    def traces(self) -> TracePanel:
        return cast(TracePanel, self.panel_widgets["traces"])

    @property
    def stimulus(self) -> StimulusPanel:
        return cast(StimulusPanel, self.panel_widgets["stimulus"])

    @property
    def mask(self) -> MaskPanel:
        return cast(MaskPanel, self.panel_widgets["mask"])

    @property
    def generated(self) -> GeneratedPanel:
        return cast(GeneratedPanel, self.panel_widgets["generated"])

    # -- actions ------------------------------------------------------------------------------
    def _build_actions(self) -> None:
        menu = self.menuBar().addMenu("&View")
        specs = [
            ("Pause / resume", ["Space"], self.toggle_pause),
            ("Choose channels…", ["C"], self.choose_channels),
            ("Choose k…", ["K"], self.choose_k),
            ("Save screenshot", ["S"], lambda: self.save_screenshot()),
            ("Close", ["Q", "Ctrl+W"], self.close),
        ]
        self.actions_by_name: dict[str, QAction] = {}
        for text, keys, fn in specs:
            act = QAction(text, self)
            act.setShortcuts([QKeySequence(k) for k in keys])
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(fn)
            menu.addAction(act)
            self.addAction(act)  # shortcuts work with the menu closed
            self.actions_by_name[text] = act
        self.actions_by_name["Choose channels…"].setEnabled(self.feed.supports_traces)

    def toggle_pause(self) -> None:
        self.set_paused(not self.paused)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.feed.traces_wanted = not paused
        self._update_status(force=True)

    def choose_channels(self) -> None:
        if not self.feed.supports_traces:
            return
        dlg = ChannelDialog(self.bundle.ch_names, self.feed.trace_channels, self)
        if dlg.exec():  # a nested event loop: the timer keeps running, nothing freezes
            self.set_trace_channels(dlg.selected())

    def set_trace_channels(self, names: Sequence[str]) -> None:
        self.feed.set_trace_channels(names)

    def choose_k(self) -> None:
        if "stimulus" not in self.panel_widgets:  # a window built without that panel
            return
        k, ok = QInputDialog.getInt(self, "Top-k", "Retrieved images to show (1-10):",
                                    self.stimulus.k, 1, 10)
        if ok:
            self.set_k(k)

    def set_k(self, k: int) -> None:
        if "stimulus" in self.panel_widgets:
            self.stimulus.set_k(k)

    def toggle_mask(self, channel: int | str) -> None:
        """Mask/unmask a channel by bundle index or name (what a click on the map does)."""
        idx = self.bundle.ch_names.index(channel) if isinstance(channel, str) else int(channel)
        if "mask" in self.panel_widgets:
            self.mask.toggle(idx)

    def save_screenshot(self, path: Path | str | None = None) -> Path:
        """Save the whole window as PNG (default: ``neuralign-viewer-<time>.png`` in
        :attr:`screenshot_dir`, see :func:`default_screenshot_dir`)."""
        if path is None:
            path = self.screenshot_dir / f"neuralign-viewer-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.statusBar().clearMessage()  # no stale "saved …" line in the picture
        if not self.grab().save(str(path)):
            self.statusBar().showMessage(f"could not save {path}", 5000)
            log.error("could not save a screenshot to %s", path)
        else:
            self.statusBar().showMessage(f"saved {path}", 5000)
            log.info("screenshot saved to %s", path)
        return path

    # -- the 30 fps tick ---------------------------------------------------------------------------
    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.n_ticks += 1
        upd = self.feed.poll()
        self.state.ingest(upd.results)
        self._unshown.extend(upd.results)
        self.feed_status = upd.status
        if upd.traces is not None and upd.traces.n_written != self._last_n_written:
            self._last_n_written = upd.traces.n_written
            self._last_sample_change = time.monotonic()
        if not self.paused:
            self._update_panels(upd)
            self.n_frames += 1
            self._frame_times.append(t0)
        self._update_status()
        self.tick_ms.append(1e3 * (time.perf_counter() - t0))

    def _update_panels(self, upd: FeedUpdate) -> None:
        """Hand every panel the same frame. A panel that raises is logged and left alone from
        then on: one broken panel must not take the window (and the engine it owns) down."""
        frame = Frame(tuple(self._unshown), self.state.latest, upd.traces,
                      self.feed.reconstruction(), self.feed.generated(), upd.status)
        self._unshown.clear()
        for name, panel in self.panels.items():
            if name in self._failed_panels:
                continue
            try:
                panel.update(frame)
            except Exception:
                log.exception("viewer panel %r failed; it is no longer updated", name)
                self._failed_panels.add(name)

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:
        if ev.type() == QEvent.Type.Paint:
            self._paint_times.append(time.perf_counter())
        return False

    @staticmethod
    def _rate(times: deque, span: float = 2.0) -> float:
        if len(times) < 2:
            return 0.0
        now = time.perf_counter()
        recent = [t for t in times if now - t <= span]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-9, recent[-1] - recent[0])

    def fps(self) -> float:
        """Display updates per second over the last 2 s (0 while paused)."""
        return self._rate(self._frame_times)

    def paint_fps(self) -> float:
        """Actual repaints of the trace plot per second over the last 2 s."""
        return self._rate(self._paint_times)

    def gui_cpu_fraction(self, reset: bool = False) -> float:
        """CPU time of the GUI thread / wall time since the window opened (or the last reset)."""
        cpu, wall = time.thread_time(), time.perf_counter()
        frac = (cpu - self._cpu0[0]) / max(1e-9, wall - self._cpu0[1])
        if reset:
            self._cpu0 = (cpu, wall)
        return frac

    def health_text(self) -> tuple[str, str | None]:
        """(text, color) of the stream-health label; 'stalled' after STALL_S without results."""
        st = self.feed_status
        if st.get("error"):
            return str(st["error"]), "#c00"
        quiet = self.state.seconds_since_result()
        recon = st.get("reconnects")
        tail = f", {recon} reconnects" if recon else ""
        if st.get("markers_connected") is False:  # why results stopped: say it, not "stalled"
            return f"marker stream lost{tail}", "#c00"
        if quiet > STALL_S:
            what = "no results yet" if self.state.n_results == 0 else "no results"
            return f"stalled: {what} for {quiet:.0f} s{tail}", "#d70"
        if st.get("connected") is False:
            return f"disconnected{tail}", "#c00"
        if self.state.n_results == 0:
            return "waiting for results…", None
        return f"connected{tail}", "#080"

    def _update_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.feed_status_due:
            return
        self.feed_status_due = now + 0.25  # 4 Hz: label relayouts are not free
        st = self.feed_status
        lab = self._labels
        # the feed's counter refreshes at 2 Hz; never show fewer than the window already got
        decoded = max(int(st.get("decoded") or 0), self.state.n_results)
        lab["decoded"].setText(f"decoded <b>{decoded}</b>")
        lat = _fmt_ms(st.get("latency_ms"))
        e2e = st.get("e2e_ms")
        lab["latency"].setText(f"latency p50/p99 {lat}" + (f" (e2e {_fmt_ms(e2e)})" if e2e else ""))
        dropped = st.get("dropped")
        if dropped is None:
            lab["dropped"].setText("dropped n/a")
        else:
            lost = dropped + int(st.get("lost_in_engine", 0) or 0)
            lab["dropped"].setText(color_text(f"dropped {lost}", "#c00" if lost else None))
        text, color = self.health_text()
        lab["health"].setText(color_text(text, color))
        lab["accuracy"].setText(self.state.accuracy_text())
        fps = self.fps()
        lab["fps"].setText(f"{fps:.0f} fps" if not math.isnan(fps) else "")
        lab["pause"].setText(color_text("<b>PAUSED</b> (Space)", "#c00") if self.paused else "")

    # -- closing ---------------------------------------------------------------------------------
    def closeEvent(self, ev) -> None:
        self.shutdown()
        super().closeEvent(ev)

    def shutdown(self) -> None:
        """Stop the timer and the feed's threads (and what the window owns). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.timer.stop()
        self.feed.close()
        if self.owns_source:
            self.feed.stop_source()
        for obj in self.owned:
            try:
                obj.stop()
            except Exception:  # closing must finish even if one owned object misbehaves
                log.exception("stopping %r failed", obj)
