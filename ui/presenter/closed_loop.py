"""Closed loop: read the engine's results and turn them into stop / continue decisions.

Why a thread: a result arrives whenever the engine publishes it; reading (and parsing JSON) in
a thread of its own keeps the presenter's frame loop free of LSL waits. The frame loop drains
what arrived (:meth:`ResultReader.drain`) and the pure :class:`~.stopping.ActiveQueue` decides.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass

from neuralign.errors import UserError
from neuralign.realtime.decisions import Result
from neuralign.realtime.lsl_io import LostError, local_clock, open_inlet, resolve_stream
from neuralign.realtime.outputs import RESULT_STREAM_TYPE
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


def parse_result(text: str, received: float) -> ResultEvent:
    """One result sample -> :class:`ResultEvent` (ValueError when it is not a result)."""
    result = Result.from_json(text)
    p = posterior_of(result)
    if p is None:  # a Result class older than the engine's wire: read the fields from the JSON
        p = posterior_of(json.loads(text))
    return ResultEvent(result.marker, result.marker_timestamp, result.n_repetitions, p, received)


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
        self._inlet = open_inlet(info, timeout=resolve_timeout, max_buflen=60)
        self._queue: queue.SimpleQueue[ResultEvent] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.lost = False
        self.n_bad = 0
        self._thread = threading.Thread(target=self._run, name="present-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample, _ = self._inlet.pull_sample(timeout=0.05)
            except LostError:
                log.error("the result stream is gone: no more decisions (timeouts continue)")
                self.lost = True
                return
            if sample is None:
                continue
            try:
                self._queue.put(parse_result(sample[0], local_clock()))
            except (ValueError, TypeError, IndexError):
                self.n_bad += 1
                log.warning("ignoring a sample that is not a result: %.80r", sample)

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
        self._inlet.close_stream()
