"""Replaying recordings as LSL streams: the player, device timing profiles (``timing``) and the
receiving source's wiring.

Turning files into a replay timeline is data loading, done offline (offline/timelines.py). The
rehearsal session (``neuralign.realtime.replay.session``) is not imported here: it loads the
engine and torch, which ``neuralign replay`` does not need.
"""

from neuralign.realtime.replay.player import LSLReplayer, marker_source_id
from neuralign.realtime.replay.timing import (
    PROFILES,
    Schedule,
    TimingProfile,
    get_profile,
    plan_schedule,
)

__all__ = ["LSLReplayer", "PROFILES", "Schedule", "TimingProfile", "get_profile",
           "marker_source_id", "plan_schedule"]
