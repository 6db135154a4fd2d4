"""``--source brainflow:BOARD[:key=value,...]``: a BrainFlow board (sources/brainflow.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.errors import UserError
from neuralign.realtime.sources.registry import register_source

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source


@register_source(
    "brainflow", usage="brainflow:BOARD",
    grammar="brainflow:synthetic | brainflow:BOARD[:serial_port=...,ip_address=...]",
    markers="'board' (BrainFlow's marker row)")
def build_brainflow(rest: str, markers: str | None, rt: RealtimeConfig, speed: float) -> Source:
    """The board named by ``rest`` (default synthetic); markers only from its marker row."""
    from neuralign.realtime.sources.brainflow import BrainFlowSource

    board, _, params = rest.partition(":")
    kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
    if markers not in (None, "board"):
        raise UserError(f"--markers: a BrainFlow source takes its markers from the board's "
                        f"marker row: use --markers board (got {markers!r})")
    return BrainFlowSource(board or "synthetic", kv, buffer_seconds=rt.buffer_seconds,
                           markers=markers == "board")
