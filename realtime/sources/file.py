"""Replay a recording in-process through the SAME LSL path a live stream takes.

A :class:`FileSource` starts an :class:`~neuralign.realtime.replay.player.LSLReplayer` on the file
(uuid ``source_id``) and is itself an :class:`~neuralign.realtime.sources.lsl.LSLSource` connected
to it by :func:`~neuralign.realtime.replay.wiring.connect_to_replay`. Nothing is
short-circuited: the engine sees exactly what it would see from a device on the network (chunking,
timestamps, clock handling, reconnection logic), which is what makes a replay a valid parity and
latency test.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from neuralign.errors import DataError, require_file
from neuralign.realtime.replay.player import LSLReplayer
from neuralign.realtime.replay.wiring import connect_to_replay
from neuralign.realtime.sources.base import StreamDescription
from neuralign.realtime.sources.lsl import LSLSource

log = logging.getLogger(__name__)


def read_raw(path: str | Path):
    """Load a ``.fif`` raw recording (preloaded), DataError if missing or unreadable."""
    import mne

    path = require_file(path, "recording not found")
    try:
        return mne.io.read_raw_fif(path, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for a corrupt file
        raise DataError(f"{path}: cannot read as a FIF raw recording ({exc})") from exc


class FileSource(LSLSource):
    """A ``.fif`` file replayed over LSL on this host and acquired like any live stream.

    ``speed`` / ``chunk_size`` / ``loop`` / ``start_offset_s`` are the replayer's. The replayer
    waits (up to ``wait_for_consumers`` s) for this source's inlets before sending, so the
    buffer holds the recording from its first sample on.
    """

    live = False  # the replayer may run faster than real time

    def __init__(self, path: str | Path, speed: float = 1.0, chunk_size: int = 10,
                 loop: bool = False, start_offset_s: float = 0.0, buffer_seconds: float = 30.0,
                 timeout: float = 5.0, wait_for_consumers: float = 10.0, name: str | None = None):
        self.path = Path(path)
        sid = uuid.uuid4().hex
        self._replay_kw = dict(name=name or f"neuralign-file-{self.path.stem}", source_id=sid,
                               chunk_size=chunk_size, speed=speed, loop=loop,
                               start_offset_s=start_offset_s,
                               wait_for_consumers=wait_for_consumers)
        super().__init__(timeout=timeout, buffer_seconds=buffer_seconds)
        connect_to_replay(self, sid)
        self.replayer: LSLReplayer | None = None

    def _connect(self) -> StreamDescription:
        raw = read_raw(self.path)
        self.replayer = LSLReplayer.from_raw(raw, **self._replay_kw)
        del raw
        self.expected_sfreq = self.replayer.sfreq
        self.expected_channels = self.replayer.ch_names
        self.has_markers = self.replayer.n_events > 0  # no events: the engine slides a window
        self.replayer.start()
        try:
            desc = super()._connect()
        except Exception:
            self.replayer.stop()
            raise
        log.info("replaying %s (%d events) in-process over LSL", self.path,
                 self.replayer.n_events)
        return desc

    @property
    def done(self) -> bool:
        """True once the replayer has sent the whole file."""
        return self.replayer is not None and self.replayer.wait_done(0)

    def _disconnect(self) -> None:
        super()._disconnect()  # inlets first, then the replayer's outlets
        if self.replayer is not None:
            self.replayer.stop()
