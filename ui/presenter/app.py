"""One presentation from options to summary: window, marker outlet, log, closed loop.

Why apart from the CLI: tests (and a script) run a presentation in process with
:func:`run_presentation`, with their own marker outlet when they must wire other streams to it
before the window opens.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from PyQt6.QtCore import QEventLoop, QSize, QTimer
from PyQt6.QtWidgets import QApplication

from neuralign.errors import UserError
from neuralign.ui.presenter.closed_loop import ResultReader, parse_results_spec
from neuralign.ui.presenter.logfile import LogWriter
from neuralign.ui.presenter.markers import MarkerOutlet
from neuralign.ui.presenter.sequence import Trial
from neuralign.ui.presenter.session import LogRow, Session, SessionSummary
from neuralign.ui.presenter.stopping import (
    DEFAULT_MAX_REPETITIONS,
    DEFAULT_THRESHOLD,
    ActiveQueue,
    StoppingPolicy,
)
from neuralign.ui.presenter.window import FramePainter, PresenterController, choose_mode

log = logging.getLogger(__name__)

DEFAULT_REFRESH_HZ = 60.0


@dataclass
class PresentOptions:
    """Everything a presentation needs besides its trials (the CLI's flags)."""

    marker_stream: str = "neuralign-markers"
    log_path: Path | None = None
    windowed: bool = False
    size: tuple[int, int] = (1024, 768)  # windowed
    image_px: int | None = None  # the images' box; default 60 % of the shorter side
    photodiode: str | None = None  # a corner
    patch_px: int = 40
    latency_ms: float = 0.0  # added to every marker stamp (the measured screen lag)
    timing: str = "auto"  # auto / opengl / raster
    refresh_hz: float | None = None  # default: the screen's
    lead_in_s: float = 1.0
    wait_for_consumers_s: float = 0.0
    seed: int = 0
    closed_loop: bool = False
    results: str | None = None  # lsl:NAME
    threshold: float = DEFAULT_THRESHOLD
    max_repetitions: int = DEFAULT_MAX_REPETITIONS
    result_timeout_s: float = 3.0
    max_active: int = 8
    max_duration_s: float | None = None  # a safety stop (counted as an abort)


def recommended_threshold(path: Path) -> float | None:
    """The dynamic-stopping threshold ``neuralign evaluate`` recommends, from a run directory,
    its ``report.json`` or a bundle (``manifest.json`` calibration); None when absent."""
    path = Path(path)
    for f in ([path] if path.is_file() else [path / "report.json", path / "manifest.json"]):
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for keys in (("closed_loop", "dynamic_stopping", "recommended", "threshold"),
                     ("calibration", "recommended_threshold")):
            v: object = d
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                return float(v)
    return None


def _unique(trials: list[Trial]) -> list[Trial]:
    seen: dict[str, Trial] = {}
    for t in trials:
        seen.setdefault(t.image_id, t)
    return list(seen.values())


def run_presentation(trials: list[Trial], opts: PresentOptions,
                     outlet: MarkerOutlet | None = None) -> tuple[SessionSummary, list[LogRow]]:
    """Present ``trials`` (closed loop: each image until its decision says stop) and return the
    summary and the log rows in presentation order. Blocks until done, Esc, Ctrl-C or
    ``max_duration_s``; the log is complete in every case."""
    app = QApplication.instance() or QApplication([])
    mode = choose_mode(opts.timing)
    screen = app.primaryScreen()
    hz = opts.refresh_hz or (screen.refreshRate() if screen else 0) or DEFAULT_REFRESH_HZ
    period = 1.0 / hz
    own_outlet = outlet is None
    outlet = outlet or MarkerOutlet(opts.marker_stream)
    reader = None
    writer = LogWriter(opts.log_path) if opts.log_path else None
    queue = None
    if opts.closed_loop:
        if not opts.results:
            raise UserError("--closed-loop needs --results lsl:NAME (the engine's result stream)")
        trials = _unique(trials)
        queue = ActiveQueue([t.image_id for t in trials],
                            StoppingPolicy(opts.threshold, opts.max_repetitions),
                            opts.result_timeout_s, opts.max_active)
    try:
        if opts.wait_for_consumers_s > 0 and not outlet.wait_for_consumers(
                opts.wait_for_consumers_s):
            log.warning("no consumer of marker stream %r after %g s: presenting anyway",
                        outlet.name, opts.wait_for_consumers_s)
        if opts.closed_loop:
            reader = ResultReader(parse_results_spec(opts.results or ""))

        def on_row(row: LogRow) -> None:
            if writer is not None:
                writer.write(row)

        session = Session(trials, period, mode, outlet.push, on_row, queue=queue,
                          latency_s=opts.latency_ms / 1e3, seed=opts.seed,
                          lead_in_s=opts.lead_in_s)
        size = QSize(*opts.size) if opts.windowed else (
            screen.size() if screen else QSize(*opts.size))
        box = opts.image_px or int(0.6 * min(size.width(), size.height()))
        painter = FramePainter({t.image_id: t.path for t in trials}, QSize(box, box),
                               opts.photodiode, opts.patch_px)
        ctl = PresenterController(session, painter, mode, period,
                                  reader.drain if reader is not None else None)
        loop = QEventLoop()
        ctl.finished.connect(loop.quit)
        stop, restore = _stop_requests()
        watchdog = QTimer()
        watchdog.timeout.connect(lambda: stop.is_set() and ctl.abort())
        watchdog.start(100)
        if opts.max_duration_s:
            QTimer.singleShot(int(opts.max_duration_s * 1e3), ctl.abort)
        print(f"Presenting {len(trials)} {'images (closed loop)' if queue else 'trials'} with "
              f"{mode} swap timing at {hz:g} Hz; markers on LSL stream '{outlet.name}' "
              f"(source_id {outlet.source_id}). Space: pause, Esc: abort.", flush=True)
        ctl.show(opts.windowed, size)
        ctl.start()
        try:
            loop.exec()
        finally:
            watchdog.stop()
            restore()
        ctl.surface.destroy()
    finally:
        if reader is not None:
            reader.close()
        if writer is not None:
            writer.close()
        if own_outlet:
            outlet.close()
    summary = session.summary()
    if queue is not None and queue.late_results:
        log.warning("%d results came after their timeout (counted as continue)",
                    queue.late_results)
    if opts.log_path:
        Path(f"{opts.log_path}.summary.json").write_text(json.dumps(asdict(summary), indent=1))
    return summary, sorted(session.rows, key=lambda r: r.index)


def _stop_requests() -> tuple[threading.Event, Callable[[], None]]:
    """Ctrl-C / SIGTERM set an event the Qt loop polls (a signal never interrupts a paint);
    the second value puts the previous handlers back."""
    ev = threading.Event()
    old: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda *_: ev.set())

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    return ev, restore
