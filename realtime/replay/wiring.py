"""The receiving end of a replay: an LSL source on its data stream with a marker inlet on its
marker stream, wired in one place (the file source, the rehearsal session and the tests)."""

from __future__ import annotations

from neuralign.realtime.replay.player import LSLReplayer, marker_source_id
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource


def connect_to_replay(source: LSLSource, source_id: str) -> LSLSource:
    """Point a not yet opened ``source`` at the replay whose data stream has ``source_id``: the
    data stream by that id, the markers through an :class:`LSLMarkerInlet` on its marker stream.
    Returns ``source``."""
    source.source_id = source_id
    source.marker_inlet = LSLMarkerInlet(source_id=marker_source_id(source_id),
                                         timeout=source.timeout)
    source.has_markers = True
    return source


def replay_source(replayer: LSLReplayer, timeout: float = 5.0,
                  buffer_seconds: float = 30.0) -> LSLSource:
    """A new :class:`LSLSource` reading ``replayer`` the way it would read a live device."""
    return connect_to_replay(LSLSource(timeout=timeout, buffer_seconds=buffer_seconds),
                             replayer.source_id)
