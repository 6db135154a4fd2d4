"""What the viewer's panels are given: one typed snapshot per display tick.

Why a snapshot: the window polls its feed once per tick and hands every panel the same
:class:`Frame`, so a panel never reads the feed (or an engine) itself and all panels show the
same instant. The frame carries the engine's own typed objects
(:class:`~neuralign.realtime.decisions.Result`,
:class:`~neuralign.realtime.decisions.Reconstruction`,
:class:`~neuralign.realtime.decisions.Generated`): a panel tells a new object from the one on
screen by identity or id, and the display forms derived from them (:class:`ChannelComparison`)
live here in ``ui/``, not in the realtime package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuralign.realtime.decisions import Generated, Reconstruction, Result
from neuralign.ui.feeds import TraceSnapshot


@dataclass(frozen=True)
class Frame:
    """One display tick as the panels see it (built only while the display is not paused)."""

    #: results that arrived since the panels' previous frame, oldest first (those ingested while
    #: paused included)
    results: tuple[Result, ...] = ()
    latest: Result | None = None  # the newest result ever received (None before the first)
    traces: TraceSnapshot | None = None  # the feed's latest trace copy (None: no traces)
    reconstruction: Reconstruction | None = None  # the latest masked-channel reconstruction
    generated: Generated | None = None  # the generator's latest image
    status: Mapping[str, Any] = field(default_factory=dict)  # the feed's status (read only)


@dataclass(frozen=True)
class ChannelComparison:
    """One masked channel of a :class:`Reconstruction`: what the mask panel plots."""

    epoch_id: int
    channel: int  # bundle channel index
    original: np.ndarray  # (T,) float64
    reconstructed: np.ndarray  # (T,) float64

    @classmethod
    def of(cls, rec: Reconstruction, channel: int) -> ChannelComparison | None:
        """Channel ``channel`` of ``rec``; None when the engine did not reconstruct it."""
        chans = list(rec.channels)
        if channel not in chans:
            return None
        j = chans.index(channel)
        return cls(rec.epoch_id, channel, np.asarray(rec.original[j], np.float64),
                   np.asarray(rec.reconstructed[j], np.float64))
