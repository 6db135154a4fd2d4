"""One unit table for every reader of continuous data: values become volts / teslas / teslas/metre.

A model's noise whitening is fitted on numbers; if training read a block in microvolts and the
engine reads the same amplifier in volts, the whitening is off by 1e6 and decoding is at chance,
silently. So every reader (LSL and BrainFlow sources, XDF files, neuralign recordings; MNE does it
itself) converts to SI through :func:`channel_scales`, and the statistics the engine's scale check
compares with the bundle (:func:`median_epoch_rms`, :func:`channel_std`) are defined here once for
both flows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from neuralign.errors import UserError

#: unit (as streams and files spell it, lower-case) -> factor to SI (volts, teslas, teslas/metre).
#: mne-lsl writes the power of ten of the SI unit instead ("0", "-6"), handled apart.
UNIT_SCALE = {
    "v": 1.0, "volt": 1.0, "volts": 1.0, "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3,
    "uv": 1e-6, "\u00b5v": 1e-6, "\u03bcv": 1e-6, "microvolt": 1e-6, "microvolts": 1e-6,
    "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9,
    "t": 1.0, "tesla": 1.0, "teslas": 1.0, "ft": 1e-15, "femtotesla": 1e-15,
    "femtoteslas": 1e-15, "pt": 1e-12, "picotesla": 1e-12, "picoteslas": 1e-12,
    "nt": 1e-9, "nanotesla": 1e-9, "nanoteslas": 1e-9,
    "t/m": 1.0, "teslas/meter": 1.0, "teslas/metre": 1.0, "ft/cm": 1e-13, "ft/m": 1e-15,
}
#: units of channels that carry no physical quantity (kept as they are)
UNITLESS = {"", "none", "n/a", "na", "a.u.", "au", "arbitrary", "counts", "unitless"}
#: channel types whose unit matters (an unknown unit on them is an error)
PHYSICAL_TYPES = {"eeg", "eog", "ecg", "emg", "seeg", "ecog", "dbs", "mag", "grad", "meg"}
_PHYSICAL_TYPES = PHYSICAL_TYPES  # the name realtime.sources.lsl used before this module

#: SI unit of each physical channel type (what readers return, what bundles record)
SI_UNITS = {"mag": "T", "meg": "T", "grad": "T/m"} | {
    t: "V" for t in PHYSICAL_TYPES - {"mag", "meg", "grad"}}
#: the units a scale-check message may name, per SI unit: power of ten -> (name, --units spelling)
NAMED_UNITS = {
    "V": {0: ("volts", "V"), -3: ("millivolts", "mV"), -6: ("microvolts", "uV"),
          -9: ("nanovolts", "nV")},
    "T": {0: ("teslas", "T"), -9: ("nanoteslas", "nT"), -12: ("picoteslas", "pT"),
          -15: ("femtoteslas", "fT")},
    "T/m": {0: ("teslas/metre", "T/m"), -13: ("femtoteslas/centimetre", "fT/cm"),
            -15: ("femtoteslas/metre", "fT/m")},
}
#: largest plausible standard deviation of a channel (within a window) in SI; above it the data
#: is almost surely in a smaller unit (microvolts read as volts ...); and a typical one
PLAUSIBLE_MAX = {"V": 1e-2, "T": 1e-8, "T/m": 1e-6}
TYPICAL = {"V": 2e-5, "T": 1e-12, "T/m": 1e-11}
KNOWN_UNITS = "V, mV, uV, nV, T, nT, pT, fT, T/m, fT/cm"


def unit_scale(unit: str) -> float | None:
    """Factor that converts ``unit`` to volts / teslas, 1 for unit-less, None when unknown."""
    u = unit.strip().lower()
    if u in UNITLESS:
        return 1.0
    if u in UNIT_SCALE:
        return UNIT_SCALE[u]
    if u.lstrip("+-").isdigit():  # mne-lsl: power of ten of the SI unit
        return 10.0 ** int(u)
    return None


def si_unit(ch_type: str) -> str:
    """The SI unit of a channel type (``'V'``, ``'T'``, ``'T/m'``); ``''`` for non-physical
    channels (MUA, misc: arbitrary units)."""
    return SI_UNITS.get(ch_type.strip().lower(), "")


def declared_units(types: Sequence[str], units: Sequence[str], override: str | None
                   ) -> list[str]:
    """Each channel's unit as declared: ``override`` (``--units`` / ``dataset.recording.units``)
    for the physical channels, else the stream's or file's own (``''`` where absent)."""
    out = []
    for i, t in enumerate(types):
        own = units[i] if i < len(units) else ""
        out.append(override if override is not None and t.lower() in PHYSICAL_TYPES else own)
    return out


def channel_scales(names: list[str], types: list[str], units: list[str],
                   override: str | None, label: str, how: str = "--units (e.g. --units uV)",
                   error: type[UserError] = UserError) -> np.ndarray:
    """Per-channel factors to volts (teslas). ``override`` replaces the units of every physical
    channel. One ``error`` naming ``label``, the channels and ``how`` to declare the unit when
    a physical channel's unit is unknown; on other channels an unknown unit (an accelerometer's
    ``g``) is kept as it is."""
    if override is not None and unit_scale(override) is None:
        key = how.split(" ", 1)[0]
        raise error(f"{key}: unknown unit {override!r} (known: {KNOWN_UNITS})")
    types = [types[i].lower() if i < len(types) else "misc" for i in range(len(names))]
    scales, unknown = [], []
    for name, t, u in zip(names, types, declared_units(types, units, override)):
        f = unit_scale(u)
        if f is None and t in PHYSICAL_TYPES:
            unknown.append(f"{name} ({u!r})")
        scales.append(1.0 if f is None else f)
    if unknown:
        raise error(f"{label}: unknown channel unit for {', '.join(unknown[:6])}"
                    f"{' ...' if len(unknown) > 6 else ''}; neuralign converts {KNOWN_UNITS} to "
                    f"volts/teslas. Declare the unit with {how}")
    return np.asarray(scales, dtype=np.float64)


def implausible_unit(data: np.ndarray, ch_types: Sequence[str], window: int = 256) -> str | None:
    """A sentence naming the likely unit when SI-labelled ``data`` (channels, n) is far too
    large for SI (e.g. microvolts kept as volts), else None.

    The amplitude is :func:`channel_std` over windows of ``window`` samples (the mean of each
    window removed: blind to the DC offsets of DC-coupled amplifiers, large even in volts),
    median over channels; above :data:`PLAUSIBLE_MAX` it is implausible, and the named unit
    that brings it nearest :data:`TYPICAL` is the likely one."""
    n = min(data.shape[1], 100 * window) // window
    for si, limit in PLAUSIBLE_MAX.items():
        rows = [i for i, t in enumerate(ch_types) if si_unit(t) == si][:64]
        if not rows or n < 1:
            continue
        x = np.nan_to_num(np.asarray(data[rows, : n * window], dtype=np.float64))
        amp = float(np.median(channel_std(
            x.reshape(len(rows), n, window).transpose(1, 0, 2))))
        if amp > limit:
            k = math.log10(amp / TYPICAL[si])
            name, spelling = NAMED_UNITS[si][min(NAMED_UNITS[si], key=lambda p: abs(p + k))]
            return (f"values read as {si_unit_name(si)} look like {name} (median channel std "
                    f"{amp:.3g} {si}, implausible for {si_unit_name(si)}); if they are, "
                    f"declare dataset.recording.units: {spelling} (--set "
                    f"dataset.recording.units={spelling})")
    return None


def si_unit_name(si: str) -> str:
    """``'volts'``, ``'teslas'``, ``'teslas/metre'``."""
    return NAMED_UNITS[si][0][0] if si in NAMED_UNITS else "values"


def median_epoch_rms(epochs: np.ndarray) -> float:
    """Median over epochs of each epoch's RMS (``(..., channels, times)``): the amplitude of
    whitened epochs, ~1 for MVNN. The bundle records it; the engine compares live epochs."""
    x = np.asarray(epochs, dtype=np.float64)
    x = x.reshape(-1, *x.shape[-2:])
    return float(np.median(np.sqrt(np.mean(x ** 2, axis=(1, 2))))) if len(x) else float("nan")


def channel_std(epochs: np.ndarray) -> np.ndarray:
    """Each channel's standard deviation over time within an epoch (or window), median over
    epochs: ``(..., channels, times)`` -> ``(channels,)``. Windows of filtered samples give the
    same statistic live as training epochs give offline.

    Robust: 1.4826 x the median absolute deviation (the standard deviation of a Gaussian), so an
    artefact in part of a window (a blink, a few railed samples while electrodes settle) does not
    pass for a change of unit."""
    x = np.asarray(epochs, dtype=np.float64)
    x = x.reshape(-1, *x.shape[-2:])
    mad = np.median(np.abs(x - np.median(x, axis=2, keepdims=True)), axis=2)
    return np.median(1.4826 * mad, axis=0)


def per_type_median(values: np.ndarray, ch_types: Sequence[str]) -> dict[str, float]:
    """Median of ``values`` (one per channel) per channel type."""
    out: dict[str, float] = {}
    for t in sorted(set(ch_types)):
        v = values[[i for i, c in enumerate(ch_types) if c == t]]
        v = v[np.isfinite(v)]
        if len(v):
            out[t] = float(np.median(v))
    return out
