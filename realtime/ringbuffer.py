"""A preallocated ring buffer of samples and their timestamps, addressed by GLOBAL sample index.

The writer (one acquisition thread) appends; readers ask for ``[start, stop)`` in global indices
(sample 0 = the first sample ever received) and get a copy, or None if the range is not (or no
longer) in the buffer. Nothing is ever reallocated or rolled, so acquisition cost is constant.

Discontinuities are marked by index (:meth:`RingBuffer.mark_gap`): the sample at a marked index
does not follow its predecessor in time (a gap, a clock jump, a reconnection, samples skipped by
:meth:`RingBuffer.skip`). Readers ask :meth:`RingBuffer.gap_between` before trusting that a
range of indices is a range of contiguous time.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class RingBuffer:
    def __init__(self, n_channels: int, capacity: int, dtype=np.float32):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.n_channels, self.capacity = n_channels, capacity
        self._data = np.zeros((n_channels, capacity), dtype=dtype)
        self._ts = np.zeros(capacity, dtype=np.float64)
        self._n = 0  # total samples ever written
        self._lock = threading.Lock()
        # indices of samples that follow a discontinuity; bounded (old ones left the buffer)
        self._gaps: deque[int] = deque(maxlen=4096)

    @property
    def n_written(self) -> int:
        return self._n

    @property
    def first_available(self) -> int:
        return max(0, self._n - self.capacity)

    def write(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append (channels, n) samples with their (n,) timestamps."""
        n = data.shape[1]
        if n == 0:
            return
        if data.shape[0] != self.n_channels or len(timestamps) != n:
            raise ValueError(f"expected ({self.n_channels}, n) + n timestamps, got {data.shape}, "
                             f"{len(timestamps)}")
        if n > self.capacity:
            data, timestamps = data[:, -self.capacity:], timestamps[-self.capacity:]
            with self._lock:
                self._n += n - self.capacity
            n = self.capacity
        with self._lock:
            start = self._n % self.capacity
            first = min(n, self.capacity - start)
            self._data[:, start:start + first] = data[:, :first]
            self._ts[start:start + first] = timestamps[:first]
            if first < n:
                self._data[:, : n - first] = data[:, first:]
                self._ts[: n - first] = timestamps[first:]
            self._n += n

    def mark_gap(self, index: int) -> None:
        """Sample ``index`` (global) does not follow sample ``index - 1`` in time."""
        with self._lock:
            if not self._gaps or self._gaps[-1] != index:
                self._gaps.append(int(index))

    @property
    def settled(self) -> int:
        """Every written sample is final here (a :class:`~neuralign.realtime.clock.
        ClockedTimeline` holds back samples whose gap status is still open)."""
        return self._n

    def gaps_in(self, start: int, stop: int) -> list[int]:
        """Marked discontinuities ``g`` with ``start <= g < stop``, in order."""
        with self._lock:
            return sorted({g for g in self._gaps if start <= g < stop})

    def gap_between(self, start: int, stop: int) -> bool:
        """True when a discontinuity lies inside ``(start, stop]``: sample ``start`` and sample
        ``stop`` are not connected by contiguous samples."""
        with self._lock:
            return any(start < g <= stop for g in self._gaps)

    def skip(self, n: int, fill: float = np.nan) -> None:
        """Advance the write position by ``n`` samples that never arrived (filled with ``fill``,
        timestamps NaN) and mark the gap, so global indices keep following the source's."""
        if n <= 0:
            return
        self.mark_gap(self._n)
        k = min(n, self.capacity)
        with self._lock:
            self._n += n - k
            idx = np.arange(self._n, self._n + k) % self.capacity
            self._data[:, idx] = fill
            self._ts[idx] = np.nan
            self._n += k
        self.mark_gap(self._n)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Copy of samples [start, stop) and their timestamps, or None if not available."""
        with self._lock:
            if start < self.first_available or stop > self._n or stop < start:
                return None
            a, b = start % self.capacity, (stop - 1) % self.capacity + 1
            if stop > start and a < b:  # one slice: a plain copy (a 1024-channel epoch's
                return self._data[:, a:b].copy(), self._ts[a:b].copy()  # gather was ~1 ms)
            idx = np.arange(start, stop) % self.capacity
            return self._data[:, idx], self._ts[idx]  # fancy indexing copies already

    def timestamp_at(self, index: int) -> float | None:
        """Timestamp of global sample ``index`` (None if not, or no longer, in the buffer)."""
        with self._lock:
            if not self.first_available <= index < self._n:
                return None
            return float(self._ts[index % self.capacity])

    def index_of_time(self, t: float) -> int | None:
        """Global index of the sample whose timestamp is nearest to ``t`` (None if outside)."""
        with self._lock:
            lo, hi = self.first_available, self._n
            if hi == lo:
                return None
            idx = np.arange(lo, hi) % self.capacity
            ts = self._ts[idx]
        if t < ts[0] - 1.0 or t > ts[-1] + 1.0:
            return None
        j = int(np.searchsorted(ts, t))
        if j == len(ts):
            j -= 1
        elif j > 0 and abs(ts[j - 1] - t) <= abs(ts[j] - t):
            j -= 1
        return lo + j
