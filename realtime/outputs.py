"""Result outputs: an LSL outlet any LSL client can read, and an in-process queue for the viewer.

The LSL result stream has one string channel; each sample is one decoded epoch as JSON:
``{"epoch_id", "marker", "marker_timestamp", "last_sample_timestamp", "topk_ids", "topk_scores",
"n_repetitions", "avg_topk_ids", "avg_topk_scores", "stages_ms"}``; its LSL timestamp is the
publication time on the engine's clock. Stream type ``NeuralignResults``.
"""

from __future__ import annotations

import json
import queue
import uuid

import pylsl

RESULT_STREAM_TYPE = "NeuralignResults"


class ResultOutlet:
    def __init__(self, name: str = "neuralign-results", source_id: str | None = None):
        self.source_id = source_id or f"neuralign-results-{uuid.uuid4().hex}"
        info = pylsl.StreamInfo(name, RESULT_STREAM_TYPE, 1, pylsl.IRREGULAR_RATE,
                                pylsl.cf_string, self.source_id)
        info.desc().append_child_value("layout", "one JSON object per decoded epoch")
        self._outlet = pylsl.StreamOutlet(info)
        self.name = name

    def publish(self, result: dict) -> float:
        t = pylsl.local_clock()
        self._outlet.push_sample([json.dumps(result)], t)
        return t

    def have_consumers(self) -> bool:
        return self._outlet.have_consumers()

    def close(self) -> None:
        self._outlet = None


class ViewerQueue:
    """Bounded queue: when the GUI falls behind, the OLDEST results are dropped, never blocking."""

    def __init__(self, maxsize: int = 512):
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)

    def put(self, item) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out
