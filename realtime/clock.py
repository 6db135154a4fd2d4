"""The engine's view of a source's samples: ring-buffer indices and gap marks, with times from
the stream's clock model (:mod:`neuralign.signal.clock`)."""

from __future__ import annotations

import math

import numpy as np

from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.signal.clock import (  # noqa: F401 - the realtime names of the clock model
    ClockGap,
    ClockReport,
    ClockSettings,
    MarkerClockCheck,
    StreamClock,
)


class ClockedTimeline:
    """A source's samples as the engine needs them: the ring buffer's indices and gap marks,
    times from the stream's :class:`StreamClock` (raw stamps only for diagnostics).

    The acquisition thread feeds chunks through :meth:`observe`, which marks the gaps the clock
    confirms in the buffer *before* :attr:`settled` may pass them: the engine reads only settled
    samples, so it sees every gap mark of what it reads and applies the gap rule once (the filters
    restart there; the epocher learns of it from the processed grid, never from here).
    """

    def __init__(self, buffer: RingBuffer, clock: StreamClock):
        self.buffer, self.clock = buffer, clock
        self._hold: float = math.inf  # during observe(): settled stays below the new chunk

    def observe(self, base: int, stamps: np.ndarray,
                arrival: float | None = None) -> list[ClockGap]:
        """Show the chunk just written at global index ``base`` to the clock and mark the gaps
        it confirms in the buffer; returns them."""
        self._hold = base
        try:
            gaps = self.clock.observe(base, stamps, arrival)
            for g in gaps:
                self.buffer.mark_gap(g.index)
        finally:
            self._hold = math.inf
        return gaps

    @property
    def n_written(self) -> int:
        return self.buffer.n_written

    @property
    def settled(self) -> int:
        """Samples before this index are final (no gap will be found among them)."""
        return int(min(self.clock.settled, self.buffer.n_written, self._hold))

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
