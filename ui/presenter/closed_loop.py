"""Closed loop: read the engine's results and turn them into stop / continue decisions.

Why a thread: a result arrives whenever the engine publishes it; reading (and parsing JSON) in
a thread of its own keeps the presenter's frame loop free of LSL waits. The frame loop drains
what arrived (:meth:`ResultReader.drain`) and the pure :class:`~.stopping.ActiveQueue` decides.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from neuralign.errors import UserError
from neuralign.realtime.decisions import Result
from neuralign.realtime.lsl_io import LostError, resolve_stream
from neuralign.realtime.outputs import RESULT_STREAM_TYPE, ResultInlet
from neuralign.ui.presenter.stopping import posterior_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultEvent:
    """What the presenter needs of one result."""

    marker: str | None
    marker_timestamp: float
    n_repetitions: int  # the engine's count
    posterior: float | None  # top-1 posterior (see stopping.posterior_of)
    received: float  # local LSL clock


def event_of(result: Result, received: float) -> ResultEvent:
    """What the presenter keeps of one result."""
    return ResultEvent(result.marker, result.marker_timestamp, result.n_repetitions,
                       posterior_of(result), received)


def parse_result(text: str, received: float) -> ResultEvent:
    """One result sample -> :class:`ResultEvent` (ValueError when it is not a result)."""
    return event_of(Result.from_json(text), received)


def parse_results_spec(spec: str) -> str:
    """``lsl:NAME`` -> NAME (the only results source for now)."""
    kind, _, name = spec.partition(":")
    if kind != "lsl" or not name:
        raise UserError(f"--results: expected lsl:NAME (the engine's result stream, default "
                        f"name neuralign-results), got {spec!r}")
    return name


class ResultReader:
    """Reads a ``NeuralignResults`` stream in a thread; :meth:`drain` hands over what came."""

    def __init__(self, name: str, resolve_timeout: float = 30.0):
        info = resolve_stream(name=name, stype=RESULT_STREAM_TYPE, timeout=resolve_timeout)
        self._inlet = ResultInlet(info, timeout=resolve_timeout, max_buflen=60)
        self._queue: queue.SimpleQueue[ResultEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="present-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self._inlet.pull(timeout=0.05)  # samples that are not results: logged
            except LostError:
                log.error("the result stream is gone: no more decisions (timeouts continue)")
                self.lost = True
                return
            for result, received in got:
                self._queue.put(event_of(result, received))

    def drain(self) -> list[ResultEvent]:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._inlet.close()
