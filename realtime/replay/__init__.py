"""Replaying recordings as LSL streams: the player, timelines from files, the receiving source.

The rehearsal session (``neuralign.realtime.replay.session``) is not imported here: it loads the
engine and torch, which ``neuralign replay`` does not need.
"""

from neuralign.realtime.replay.player import LSLReplayer, marker_source_id
from neuralign.realtime.replay.timelines import Timeline, load_timeline, stitch_epochs

__all__ = ["LSLReplayer", "Timeline", "load_timeline", "marker_source_id", "stitch_epochs"]
