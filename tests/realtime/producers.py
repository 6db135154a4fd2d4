"""A producer the way device apps write them: real pylsl outlets, chunks stamped when pushed.

:class:`ArrivalProducer` pushes ``push_chunk(data)`` WITHOUT timestamps, so liblsl stamps the last
sample of each chunk with ``local_clock()`` at the push and back-computes the others at the
nominal rate (what most amplifier apps do). Each chunk is pushed when its last sample is due on
the host clock plus a random scheduling delay (the stamp jitter), optionally dropping runs of
samples (a real gap: they are never sent) and scaling the values (microvolts). Markers are
stamped with the host time at which their onset sample was produced, as a presenter on the same
host would stamp its screen flip.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pylsl

from neuralign.realtime.lsl_io import local_clock, make_outlet
from tests.realtime.faults import make_info


@dataclass
class ProducerReport:
    """Ground truth of what was sent."""

    t0: float = 0.0  # host time of sample 0
    sent: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per sample
    n_chunks: int = 0
    markers: list[tuple[int, str]] = field(default_factory=list)


class ArrivalProducer:
    """Streams ``data`` (channels, n) at ``sfreq`` in real time from its own thread."""

    def __init__(self, data: np.ndarray, sfreq: float, ch_names: list[str],
                 events: list[tuple[int, str]], chunk: int = 10, jitter_s: float = 0.0005,
                 unit: str = "volts", scale: float = 1.0, drop: tuple[int, int] | None = None,
                 nan_at: int | None = None, seed: int = 0, stamp: str = "push",
                 marker_lag_s: float = 0.0):
        self.data = np.asarray(data, dtype=np.float64) * scale
        if nan_at is not None:
            self.data[:, nan_at] = np.nan
        self.sfreq, self.chunk, self.jitter = float(sfreq), int(chunk), float(jitter_s)
        self.events = sorted(events)
        self.drop = drop  # (first sample, count) never sent
        self.rng = np.random.default_rng(seed)
        self.stamp = stamp  # "push": liblsl stamps the push; "nominal": t0 + k / sfreq
        self.marker_lag_s = marker_lag_s  # > 0: the presenter's clock runs this far behind
        sid = uuid.uuid4().hex
        self.name = f"arrival-{sid[:8]}"
        self.outlet = pylsl.StreamOutlet(make_info(self.name, ch_names, sfreq, sid, unit), 0, 360)
        self.marker_name = f"{self.name}-markers"
        self.marker_outlet = make_outlet(self.marker_name, "Markers", ["marker"], 0.0,
                                         f"{sid}-markers", ["misc"], chunk_size=1,
                                         dtype="string")
        self.report = ProducerReport()
        self._thread: threading.Thread | None = None

    def wait_for_consumers(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outlet.have_consumers() and self.marker_outlet.have_consumers():
                return
            time.sleep(0.01)
        raise TimeoutError("no consumer connected")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self, timeout: float = 120.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        n = self.data.shape[1]
        sent = np.ones(n, dtype=bool)
        if self.drop is not None:
            sent[self.drop[0]:self.drop[0] + self.drop[1]] = False
        t0 = local_clock() + 0.05
        self.report.t0, self.report.sent = t0, sent
        e = 0
        for a in range(0, n, self.chunk):
            b = min(a + self.chunk, n)
            due = t0 + (b - 1) / self.sfreq  # the chunk's last sample exists from then on
            while e < len(self.events) and self.events[e][0] < b:
                k, value = self.events[e]
                # the presenter stamps the flip: the host time the onset sample was produced
                self.marker_outlet.push_sample([value], t0 + k / self.sfreq - self.marker_lag_s)
                self.report.markers.append((k, value))
                e += 1
            delay = due - local_clock()
            if delay > 0:
                time.sleep(delay)
            if self.jitter > 0:  # USB / scheduler latency of the device app
                time.sleep(float(abs(self.rng.normal(0.0, self.jitter))))
            keep = sent[a:b]
            if not keep.any():
                continue
            block = np.ascontiguousarray(self.data[:, a:b][:, keep].T, dtype=np.float32)
            if self.stamp == "push":
                self.outlet.push_chunk(block)  # liblsl: last sample = local_clock() now
            else:
                idx = np.arange(a, b)[keep]
                self.outlet.push_chunk(block, (t0 + idx / self.sfreq).tolist())
            self.report.n_chunks += 1
