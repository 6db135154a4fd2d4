"""The result stream: where decoded epochs leave the engine for other processes.

The LSL result stream (type ``NeuralignResults``) has one string channel; each sample is one
:class:`~neuralign.realtime.decisions.Result` as JSON (that class is the schema); its LSL timestamp
is the publication time on the engine's clock. :class:`ResultInlet` reads it back (the viewer's
LSL feed, the latency benchmark). In-process readers subscribe instead
(:mod:`neuralign.realtime.subscriptions`).
"""

from __future__ import annotations

import logging
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
