"""The engine's view of a source's samples: ring-buffer indices and gap marks, with times from
the stream's clock model (:mod:`neuralign.signal.clock`)."""

from __future__ import annotations

from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.signal.clock import (  # noqa: F401 - the realtime names of the clock model
    ClockGap,
    ClockReport,
    ClockSettings,
    MarkerClockCheck,
    StreamClock,
)


class ClockedTimeline:
    """A source's samples as the epocher needs them: the ring buffer's indices and gap marks,
    times from the stream's :class:`StreamClock` (raw stamps only for diagnostics)."""

    def __init__(self, buffer: RingBuffer, clock: StreamClock):
        self.buffer, self.clock = buffer, clock

    @property
    def n_written(self) -> int:
        return self.buffer.n_written

    @property
    def settled(self) -> int:
        """Samples before this index are final (no gap will be found among them)."""
        return min(self.clock.settled, self.buffer.n_written)

    def timestamp_at(self, index: int) -> float | None:
        """Model time of sample ``index`` (a sample not yet arrived: where the line puts it;
        one that left the buffer: None)."""
        if index < self.buffer.first_available:
            return None
        return self.clock.time_of(index)

    def index_of_time(self, t: float) -> int | None:
        i = self.clock.index_of(t)
        if i is None:
            return None
        if i < self.buffer.first_available:
            return None
        return min(i, self.buffer.n_written - 1)

    def gap_between(self, start: int, stop: int) -> bool:
        return self.buffer.gap_between(start, stop)
