"""The result stream and the viewer queue: where decoded epochs leave the engine.

The LSL result stream (type ``NeuralignResults``) has one string channel; each sample is one
:class:`~neuralign.realtime.decisions.Result` as JSON (that class is the schema); its LSL timestamp
is the publication time on the engine's clock. :class:`ResultInlet` reads it back (the viewer's
LSL feed, the latency benchmark); :class:`ViewerQueue` hands results to an in-process viewer.
"""

from __future__ import annotations

import logging
import queue
import uuid

from neuralign.realtime.decisions import Result
from neuralign.realtime.lsl_io import StreamInfo, local_clock, make_outlet, open_inlet

log = logging.getLogger(__name__)

RESULT_STREAM_TYPE = "NeuralignResults"


class ResultOutlet:
    """Publishes each result as one JSON string sample (any LSL client can read it)."""

    def __init__(self, name: str = "neuralign-results", source_id: str | None = None):
        self.source_id = source_id or f"neuralign-results-{uuid.uuid4().hex}"
        self._outlet = make_outlet(name, RESULT_STREAM_TYPE, ["result"], 0.0, self.source_id,
                                   ["misc"], dtype="string",
                                   description={"layout": "one JSON object per decoded epoch"})
        self.name = name

    def publish(self, result: Result) -> float:
        """Push one result; returns its publication time (local LSL clock)."""
        t = local_clock()
        self._outlet.push_sample([result.to_json()], t)
        return t

    def have_consumers(self) -> bool:
        return self._outlet.have_consumers()

    def close(self) -> None:
        self._outlet = None


class ResultInlet:
    """Reads a result stream found by :func:`~neuralign.realtime.lsl_io.resolve_stream`.

    ``pull`` raises :class:`~neuralign.realtime.lsl_io.LostError` when the outlet is gone: the
    caller decides whether to reconnect.
    """

    def __init__(self, info: StreamInfo, timeout: float = 2.0, max_buflen: int = 60):
        self._inlet = open_inlet(info, timeout, max_buflen=max_buflen)

    def pull(self, timeout: float = 0.1) -> list[tuple[Result, float]]:
        """Every result waiting (the first wait at most ``timeout`` s), each with its receipt
        time on the local LSL clock; samples that are not results are logged and skipped."""
        out = []
        sample, _ = self._inlet.pull_sample(timeout=timeout)
        while sample is not None:
            received = local_clock()
            try:
                out.append((Result.from_json(sample[0]), received))
            except (ValueError, TypeError, IndexError):
                log.warning("ignoring a sample that is not a result: %.80r", sample)
            sample, _ = self._inlet.pull_sample(timeout=0.0)
        return out

    def close(self) -> None:
        self._inlet.close_stream()


class ViewerQueue:
    """Bounded queue: when the GUI falls behind, the OLDEST results are dropped, never blocking.

    ``n_dropped`` counts the results a reader lost that way, from its first :meth:`drain` on:
    without a reader (headless) the queue only keeps the newest and no one misses anything."""

    def __init__(self, maxsize: int = 512):
        self._q: queue.Queue[Result] = queue.Queue(maxsize=maxsize)
        self.n_dropped = 0  # written by the one producer (the engine's batch, under its lock)
        self._has_reader = False

    def put(self, item: Result) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    if self._has_reader:
                        self.n_dropped += 1
                        if self.n_dropped == 1 or self.n_dropped % 1000 == 0:
                            log.warning("the viewer falls behind: %d results dropped unseen",
                                        self.n_dropped)
                except queue.Empty:
                    pass

    def drain(self) -> list[Result]:
        self._has_reader = True
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out
