"""The marker stream: one string sample per shown image, stamped with its frame swap.

Why explicit stamps: pylsl stamps a sample with the time it is pushed, which is after the paint,
the swap and Python's bookkeeping; an epoch cut from that stamp would start late by as much.
"""

from __future__ import annotations

import uuid

from neuralign.realtime.lsl_io import local_clock, make_outlet

MARKER_STREAM_TYPE = "Markers"


class MarkerOutlet:
    """An irregular string LSL outlet (type ``Markers``) whose samples carry given stamps."""

    def __init__(self, name: str = "neuralign-markers", source_id: str | None = None):
        self.name = name
        self.source_id = source_id or f"neuralign-present-{uuid.uuid4().hex}"
        self._outlet = make_outlet(name, MARKER_STREAM_TYPE, ["marker"], 0.0, self.source_id,
                                   ["stim"], dtype="string",
                                   description={"layout": "one image id per shown image, "
                                                "stamped with the frame swap that showed it"})

    def push(self, image_id: str, stamp: float) -> float:
        """Send ``image_id`` stamped ``stamp`` (LSL seconds); returns the push time."""
        self._outlet.push_sample([image_id], stamp)
        return local_clock()

    def have_consumers(self) -> bool:
        return self._outlet.have_consumers()

    def wait_for_consumers(self, timeout: float) -> bool:
        return self._outlet.wait_for_consumers(timeout)

    def close(self) -> None:
        self._outlet = None
