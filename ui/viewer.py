"""The viewer window: traces, stimulus + top-k images, masked-channel reconstruction, status.

The window only consumes a :class:`~neuralign.ui.feeds.Feed`. A ``QTimer`` at ~30 fps pulls the
feed's latest snapshot (cheap copies made by the feed's own thread), folds new results into a
:class:`ViewerState` and redraws what changed. Nothing here waits on the engine, a stream or a
lock held by them, so a stalled stream shows up as "stalled" in the status bar, never as a frozen
window. Pausing (Space) freezes the display only: results keep being ingested (counts and
accuracy stay exact) and the newest data appear on resume.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyqtgraph as pg
from PyQt6.QtCore import QEvent, QObject, Qt, QTimer
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QInputDialog, QLabel, QMainWindow, QSplitter, QVBoxLayout, QWidget

from neuralign.realtime.decisions import Reconstruction, Result, RunningAccuracy
from neuralign.ui.feeds import EngineFeed, Feed
from neuralign.ui.panels import ChannelDialog, MaskPanel, StimulusPanel, TracePanel, color_text
from neuralign.ui.panels.generated import GeneratedPanel, unavailable_text
from neuralign.ui.panels.traces import amplitude_unit

log = logging.getLogger(__name__)

STALL_S = 2.0  # no result for this long -> the status bar says 'stalled'


def default_screenshot_dir() -> Path:
    """Where the S key saves: ``$NEURALIGN_SCREENSHOT_DIR``, else ``~/neuralign/screenshots``
    (never the current directory, which may be a git checkout)."""
    env = os.environ.get("NEURALIGN_SCREENSHOT_DIR")
    return Path(env).expanduser() if env else Path.home() / "neuralign" / "screenshots"


def reconstruction_amplitude_label(manifest) -> str:
    """The reconstruction plot's y label: it shows the model's input, i.e. the epoch after the
    bundle's noise normalization (whitened: in units of the noise s.d.), not the raw signal."""
    method = manifest.noise_normalization.method if manifest.noise_normalization else "none"
    if method == "mvnn":
        return "whitened amplitude (noise s.d.)"
    if method == "zscore":
        return "z-scored amplitude (s.d.)"
    unit, _ = amplitude_unit(manifest.channels.types)
    return f"amplitude ({'V' if unit == 'µV' else unit})"


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
        return s


class _PanelForm:
    """The dict form the panels take, converted once per new object (the mask panel tells a new
    reconstruction from the one on screen by the identity of what it is given)."""

    def __init__(self) -> None:
        self._obj: Result | Reconstruction | None = None
        self._form: dict | None = None

    def __call__(self, obj: Result | Reconstruction | None) -> dict | None:
        if obj is not self._obj:
            self._obj, self._form = obj, None if obj is None else obj.to_dict()
        return self._form


def _fmt_ms(summary: dict | None) -> str:
    if not summary or "p50" not in summary:
        return "–"
    return f"{summary['p50']:.1f} / {summary['p99']:.1f} ms"


class ViewerWindow(QMainWindow):
    """Main window over one feed.

    ``owns_engine``: closing the window also stops the feed's engine (``neuralign run`` without ``--headless``).
    ``owned``: further objects with ``stop()`` the window stops on close (e.g. a replayer), after
    the feed and the engine. Without either, closing stops only the feed's own threads.
    """

    def __init__(self, feed: Feed, owns_engine: bool = False, owned: Sequence = (),
                 fps: float = 30.0, window_s: float = 5.0, k: int | None = None,
                 screenshot_dir: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False, useOpenGL=False)
        self.feed = feed
        self.bundle = feed.bundle
        self.owns_engine = owns_engine
        self.owned = list(owned)
        self.screenshot_dir = Path(screenshot_dir) if screenshot_dir else default_screenshot_dir()
        self.state = ViewerState(self.bundle.template_ids)
        self._result_form, self._reconstruction_form = _PanelForm(), _PanelForm()
        self.paused = False
        self._closed = False
        self.feed_status: dict = {}  # the feed's latest status dict (read-only for callers)
        self._frame_times: deque[float] = deque(maxlen=600)
        self._paint_times: deque[float] = deque(maxlen=600)
        self.n_ticks = 0
        self.n_frames = 0
        self.tick_ms: deque[float] = deque(maxlen=300)  # GUI-thread cost of each tick
        self._last_n_written: int | None = None
        self._last_sample_change = time.monotonic()
        self.feed_status_due = 0.0
        self._cpu0 = (time.thread_time(), time.perf_counter())

        self.setWindowTitle(f"neuralign viewer — {feed.describe()} — {self.bundle.path.name}")
        f = self.font()
        f.setPointSize(max(10, f.pointSize()))
        self.setFont(f)

        man = self.bundle.manifest
        sfreq = float(man.sfreq)
        engine_k = None
        if isinstance(feed, EngineFeed):
            engine_k = getattr(getattr(feed.engine, "cfg", None), "top_k", None)
        self.traces = TracePanel(feed.supports_traces, window_s,
                                 amplitude_unit(man.channels.types))
        self.stimulus = StimulusPanel(self.bundle.template_ids, self.bundle.thumbnails,
                                      k or min(5, engine_k or 5))
        self.mask = MaskPanel(self.bundle.ch_names, man.channels.types,
                              feed.supports_masking, sfreq, float(man.epoch.tmin),
                              reconstruction_amplitude_label(man))
        off = feed.generated_unavailable()
        # a generator that failed its validation: the panel shows the retrieved image instead
        gated = off not in ("", "attach", "no generator")
        self.generated = GeneratedPanel(unavailable_text(off),
                                        fallback=self.stimulus.stim_pixmaps if gated else None)
        self.traces.channelsRequested.connect(self.choose_channels)
        self.mask.maskChanged.connect(self.feed.set_masked)

        right = QSplitter(Qt.Orientation.Vertical)
        top = QSplitter(Qt.Orientation.Horizontal)  # the generated image beside the stimulus
        top.addWidget(self.stimulus)
        top.addWidget(self.generated)
        top.setStretchFactor(0, 1)
        right.addWidget(top)
        right.addWidget(self.mask)
        right.setStretchFactor(0, 0)
        right.setStretchFactor(1, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.traces)
        split.addWidget(right)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 6)
        split.setSizes([600, 740])
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(4, 4, 4, 0)
        lay.addWidget(split)
        self.setCentralWidget(central)

        self._labels = {name: QLabel() for name in
                        ("decoded", "latency", "dropped", "health", "accuracy", "fps", "pause")}
        for lab in self._labels.values():
            lab.setTextFormat(Qt.TextFormat.RichText)
            lab.setContentsMargins(6, 0, 6, 0)
            self.statusBar().addPermanentWidget(lab, 0)
        self._build_actions()

        # count real repaints of the trace plot (offscreen too): the honest frame rate
        self.traces.plot.viewport().installEventFilter(self)
        self.resize(1366, 768)
        self.feed.start()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self.timer.start(max(1, int(round(1000 / fps))))

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
        k, ok = QInputDialog.getInt(self, "Top-k", "Retrieved images to show (1-10):",
                                    self.stimulus.k, 1, 10)
        if ok:
            self.set_k(k)

    def set_k(self, k: int) -> None:
        self.stimulus.set_k(k)

    def toggle_mask(self, channel: int | str) -> None:
        """Mask/unmask a channel by bundle index or name (what a click on the map does)."""
        idx = self.bundle.ch_names.index(channel) if isinstance(channel, str) else int(channel)
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
        self.feed_status = upd.status
        if upd.traces is not None and upd.traces.n_written != self._last_n_written:
            self._last_n_written = upd.traces.n_written
            self._last_sample_change = time.monotonic()
        if not self.paused:
            self.traces.show_traces(upd.traces)
            self.stimulus.show_result(self._result_form(self.state.latest))
            self.mask.show_reconstruction(self._reconstruction_form(self.feed.reconstruction()))
            self.generated.show_generated(self.feed.generated())
            self.generated.show_retrieved(self._result_form(self.state.latest))
            self.n_frames += 1
            self._frame_times.append(t0)
        self._update_status()
        self.tick_ms.append(1e3 * (time.perf_counter() - t0))

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
        """(text, colour) of the stream-health label; 'stalled' after STALL_S without results."""
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
        text, colour = self.health_text()
        lab["health"].setText(color_text(text, colour))
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
        if self.owns_engine and isinstance(self.feed, EngineFeed):
            log.info("stopping the engine the viewer owns")
            self.feed.engine.stop()
        for obj in self.owned:
            try:
                obj.stop()
            except Exception:  # closing must finish even if one owned object misbehaves
                log.exception("stopping %r failed", obj)
