"""``--source file:PATH``: a recording replayed in-process over LSL (realtime/sources/file.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.errors import UserError, require_file
from neuralign.realtime.sources.registry import register_source

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source


@register_source("file", usage="file:PATH")
def build_file(rest: str, markers: str | None, rt: RealtimeConfig, speed: float) -> Source:
    """The recording at ``rest`` replayed at ``speed`` (its own events are the markers)."""
    from neuralign.realtime.sources.file import FileSource

    path = require_file(rest, "file not found", error=UserError, where="--source: ")
    return FileSource(path, speed=speed, chunk_size=rt.chunk_size,
                      buffer_seconds=rt.buffer_seconds)
