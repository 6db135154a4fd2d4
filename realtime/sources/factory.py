"""One source from a user's spec string (``--source`` / ``--markers`` of ``neuralign run``).

Kept out of the command line so any caller (CLI, scripts, tests) turns the same spec into the same
source, with the same one-line user errors naming the flag. Which prefixes exist, and how each
builds its source, is the registry's (:mod:`neuralign.realtime.sources.registry`): a new kind is
one file ``realtime/sources/kind_<name>.py``; this module only applies what every source shares
(the configured clock model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.sources.base import Source


def open_source(spec: str, markers: str | None, rt: RealtimeConfig, speed: float = 1.0) -> Source:
    """The (not yet opened) source of ``spec`` ``PREFIX:REST``, built by the kind registered for
    ``PREFIX`` (:mod:`neuralign.realtime.sources.registry`; shipped: ``lsl:NAME`` |
    ``lsl:source_id=ID`` | ``lsl:type=EEG`` | ``brainflow:synthetic`` |
    ``brainflow:BOARD[:key=value,...]`` | ``file:PATH``), with the configured clock model;
    markers ``lsl:NAME`` (same forms) or ``board`` (BrainFlow's marker row)."""
    from neuralign.realtime.sources.registry import expected_sources, source_kinds

    prefix, _, rest = spec.partition(":")
    kind = source_kinds().get(prefix)
    if kind is None:
        raise UserError(f"--source: expected {expected_sources()}, got {spec!r}")
    return _clocked(kind.build(rest, markers, rt, speed), rt)


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

