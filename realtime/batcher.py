"""When the inference thread runs a batch: the fixed-latency policy, as a pure unit.

A batch goes to the model when it is full, when its oldest epoch has waited ``max_wait_s``, or at
once when no further epoch can join before that deadline (the epocher knows when the next window
completes): waiting would only add latency. No threads, clocks or queues here; the engine's
inference thread asks :meth:`BatchPolicy.should_dispatch` and :meth:`BatchPolicy.timeout`.

Shape buckets (:func:`shape_buckets`, :func:`bucket_for`): the model runs on one of a few fixed
batch shapes. A GPU keeps the single full shape (its cost hardly depends on the batch, and one
shape keeps kernel times constant); a CPU pays per row, and at SOA 200 ms a batch of 4 carries 1-2
real epochs, so there the smallest power-of-two shape that holds the batch is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neuralign.config import RealtimeConfig


@dataclass(frozen=True)
class BatchPolicy:
    """Deadline and capacity of one batch (times in seconds on one clock)."""

    capacity: int  # epochs per batch
    max_wait_s: float  # the oldest epoch waits at most this long for others to join
    idle_wait_s: float  # how long to wait for an epoch when none is pending

    @classmethod
    def from_config(cls, cfg: RealtimeConfig, n_streams: int = 1) -> BatchPolicy:
        """Half the :func:`batch_size` slots: a repeated image also needs one for its average."""
        return cls(capacity=max(1, batch_size(cfg, n_streams) // 2),
                   max_wait_s=cfg.max_wait_ms / 1e3, idle_wait_s=cfg.cadence_ms / 1e3)

    def deadline(self, oldest_queued_at: float) -> float:
        return oldest_queued_at + self.max_wait_s

    def timeout(self, oldest_queued_at: float | None, now: float) -> float:
        """How long to wait for the next epoch: the idle wait, cut short by the deadline."""
        if oldest_queued_at is None:
            return self.idle_wait_s
        return max(0.0, min(self.idle_wait_s, self.deadline(oldest_queued_at) - now))

    def should_dispatch(self, n_pending: int, oldest_queued_at: float | None, now: float,
                        next_ready_in_s: float | None, queue_empty: bool) -> bool:
        """Run the pending epochs now?

        ``next_ready_in_s``: time until the next epoch's window completes (None: none expected);
        ``queue_empty``: no ready epoch is waiting to be picked up.
        """
        if n_pending == 0 or oldest_queued_at is None:
            return False
        if n_pending >= self.capacity or now >= self.deadline(oldest_queued_at):
            return True
        if not queue_empty:
            return False  # another epoch is ready: take it first
        return next_ready_in_s is None or next_ready_in_s > self.deadline(oldest_queued_at) - now


def batch_size(cfg: RealtimeConfig, n_streams: int = 1) -> int:
    """The batch slots of an engine reading ``n_streams`` streams: ``cfg.batch_size``, and at
    least two per stream (an epoch and its repetition average), so the epochs that streams
    recorded together (one stimulus seen by several subjects or headsets) go through the model in
    one batch. Split into batches of two, the last of 8 such epochs waited for three forward
    passes: p99 52 ms against 43 in one batch (8 streams at 1 kHz on 2 cores)."""
    return max(cfg.batch_size, 2 * n_streams)


def shape_buckets(batch_size: int, device_type: str = "cpu") -> list[int]:
    """The batch shapes inference runs on: ``[batch_size]`` on an accelerator, else powers of
    two below ``batch_size`` and ``batch_size`` itself (1, 2, 4 for 4; 1, 2, 4, 6 for 6)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device_type != "cpu":
        return [batch_size]
    out, b = [], 1
    while b < batch_size:
        out.append(b)
        b *= 2
    return out + [batch_size]


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``n`` rows (``buckets`` sorted ascending)."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"{n} rows exceed the largest batch shape {buckets[-1]}")
