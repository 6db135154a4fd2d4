"""One source from a user's spec string (``--source`` / ``--markers`` of ``neuralign run``).

Kept out of the command line so any caller (CLI, scripts, tests) turns the same spec into the same
source, with the same one-line user errors naming the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source


def open_source(spec: str, markers: str | None, rt: RealtimeConfig, speed: float = 1.0) -> Source:
    """The (not yet opened) source of ``spec``: ``lsl:NAME`` | ``lsl:source_id=ID`` |
    ``lsl:type=EEG`` | ``brainflow:synthetic`` | ``brainflow:BOARD[:key=value,...]`` |
    ``file:PATH``; markers ``lsl:NAME`` (same forms) or ``board`` (BrainFlow's marker row)."""
    kind, _, rest = spec.partition(":")
    if kind == "lsl":
        from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource

        marker_inlet = None
        if markers:
            mkind, _, mrest = markers.partition(":")
            if mkind != "lsl":
                raise UserError(f"--markers: expected lsl:NAME, got {markers!r}")
            marker_inlet = LSLMarkerInlet(**_lsl_selector(mrest, "--markers"),
                                          clock_sync=rt.clock_sync)
        return _clocked(LSLSource(**_lsl_selector(rest, "--source"), markers=marker_inlet,
                                  timeout=rt.connect_timeout_s,
                                  buffer_seconds=rt.buffer_seconds, units=rt.units,
                                  clock_sync=rt.clock_sync), rt)
    if kind == "brainflow":
        from neuralign.realtime.sources.brainflow import BrainFlowSource

        board, _, params = rest.partition(":")
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if markers not in (None, "board"):
            raise UserError(f"--markers: a BrainFlow source takes its markers from the board's "
                            f"marker row: use --markers board (got {markers!r})")
        return _clocked(BrainFlowSource(board or "synthetic", kv,
                                        buffer_seconds=rt.buffer_seconds,
                                        markers=markers == "board"), rt)
    if kind == "file":
        from neuralign.realtime.sources.file import FileSource

        if not Path(rest).is_file():
            raise UserError(f"--source: {rest}: file not found")
        return _clocked(FileSource(Path(rest), speed=speed, chunk_size=rt.chunk_size,
                                   buffer_seconds=rt.buffer_seconds), rt)
    raise UserError(f"--source: expected lsl:NAME, brainflow:BOARD or file:PATH, got {spec!r}")


def _clocked(src: Source, rt: RealtimeConfig) -> Source:
    """``src`` with the configured clock model and marker-lag check."""
    from neuralign.realtime.clock import ClockSettings, MarkerClockCheck

    c = rt.clock
    src.clock_settings = ClockSettings(
        window_s=c.window_s, min_slope_span_s=c.min_slope_span_s, max_ppm=c.max_ppm,
        tol_samples=c.tol_samples, tol_jitter_k=c.tol_jitter_k,
        initial_jitter_s=c.initial_jitter_s, warmup_s=c.warmup_s,
        envelope_quantile=c.envelope_quantile, confirm_s=c.confirm_s,
        max_suspect_s=c.max_suspect_s, drift_warn_ppm=c.drift_warn_ppm,
        drift_min_span_s=c.drift_min_span_s)
    src.marker_clock = MarkerClockCheck(max_lag_s=rt.marker_max_lag_s)
    return src


def _lsl_selector(rest: str, flag: str) -> dict:
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
