"""``--source lsl:...`` / ``--markers lsl:...``: an LSL stream (realtime/sources/lsl.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.errors import UserError
from neuralign.realtime.sources.registry import register_source

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source


@register_source(
    "lsl", usage="lsl:NAME", grammar="lsl:NAME | lsl:source_id=ID | lsl:type=TYPE",
    markers="lsl:NAME (a Markers stream, image id per marker; mne-lsl player annotation "
    "streams work too)")
def build_lsl(rest: str, markers: str | None, rt: RealtimeConfig, speed: float) -> Source:
    """An LSL inlet selected by name or properties, with an LSL marker inlet when given."""
    from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource

    marker_inlet = None
    if markers:
        mkind, _, mrest = markers.partition(":")
        if mkind != "lsl":
            raise UserError(f"--markers: expected lsl:NAME, got {markers!r}")
        marker_inlet = LSLMarkerInlet(**lsl_selector(mrest, "--markers"),
                                      clock_sync=rt.clock_sync)
    return LSLSource(**lsl_selector(rest, "--source"), markers=marker_inlet,
                     timeout=rt.connect_timeout_s, buffer_seconds=rt.buffer_seconds,
                     units=rt.units, clock_sync=rt.clock_sync)


def lsl_selector(rest: str, flag: str) -> dict[str, str]:
    """``NAME`` or ``key=value[,key=value]`` as keyword arguments of an LSL inlet: every given
    property must match (``name=EEG,source_id=ID`` never connects to another sender named EEG).
    """
    if not rest:
        raise UserError(f"{flag}: expected lsl:NAME (or lsl:source_id=ID / lsl:type=TYPE)")
    if "=" not in rest:
        return {"name": rest}
    keys = {"name": "name", "type": "stype", "source_id": "source_id"}
    out = {}
    for part in rest.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in keys or not value:
            raise UserError(f"{flag}: expected lsl:NAME or lsl:key=value[,key=value] with keys "
                            f"name, type, source_id; got {rest!r}")
        out[keys[key.strip()]] = value
    return out
