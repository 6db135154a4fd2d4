"""Latency instrumentation: per-epoch stage times -> running p50/p95/p99/max (docs/design.md).

End-to-end latency of one epoch = (local LSL clock when its result is received by an LSL consumer)
- (LSL timestamp of the last input sample the epoch needed). Inside the engine we measure up to
publication; a consumer adds its receive time (see ``neuralign bench latency``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from neuralign.realtime.threadsched import EpochSched

# stage name -> (from, to) stage keys in Epoch.stages; 'sample' is the last input sample's timestamp
STAGES = {
    "acquire": ("sample", "acquired"),
    "pull": ("sample", "pulled"),  # acquire's first part: in the ring buffer
    "filter": ("acquired", "filtered"),
    "epoch": ("filtered", "epoched"),
    "normalize": ("epoched", "normalized"),
    "wait_in_batch": ("normalized", "batch_start"),
    "inference": ("batch_start", "inferred"),
    "publish": ("inferred", "published"),
    "engine_total": ("sample", "published"),
}


def stage_durations(stages: dict[str, float]) -> dict[str, float]:
    """Milliseconds spent in each stage of one epoch (missing stages are skipped)."""
    out = {}
    for name, (a, b) in STAGES.items():
        if a in stages and b in stages:
            out[name] = 1e3 * (stages[b] - stages[a])
    return out


def summarize(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "mean": float(a.mean())}


@dataclass(frozen=True)
class KeptStamps:
    """One epoch's raw stage timestamps and the source index of its last input sample (which
    lets a benchmark look up when its producer pushed that sample)."""

    stages: dict[str, float]
    last_input_index: int | None = None
    sched: EpochSched | None = None  # where its thread's time went (a scheduling probe's)


class LatencyStats:
    """Thread-safe running window of per-epoch stage durations (ms)."""

    def __init__(self, window: int = 10000):
        self._rows: deque[dict[str, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._stamps: deque[KeptStamps] | None = None  # off unless keep_stamps()

    def keep_stamps(self, maxlen: int) -> None:
        """Also keep each epoch's raw stage timestamps (the newest ``maxlen``, in the order
        :meth:`add` saw them): ``bench latency``'s tail breakdown needs where in time each
        epoch waited, which durations alone lose. Off by default; on, :meth:`add` keeps a
        reference to the dict (no copy, nothing more on the publishing path)."""
        with self._lock:
            self._stamps = deque(maxlen=maxlen)

    def add(self, stages: dict[str, float], last_input_index: int | None = None,
            sched: EpochSched | None = None) -> dict[str, float]:
        d = stage_durations(stages)
        with self._lock:
            self._rows.append(d)
            if self._stamps is not None:
                self._stamps.append(KeptStamps(stages, last_input_index, sched))
        return d

    def stamps(self) -> list[KeptStamps]:
        """The kept stage timestamps, oldest first (empty unless :meth:`keep_stamps`)."""
        with self._lock:
            return [] if self._stamps is None else list(self._stamps)

    def summary(self) -> dict[str, dict[str, float]]:
        with self._lock:
            rows = list(self._rows)
        return {name: summarize([r[name] for r in rows if name in r]) for name in STAGES
                if any(name in r for r in rows)}
