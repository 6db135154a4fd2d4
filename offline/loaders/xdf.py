"""XDF files (LabRecorder): one EEG stream plus one marker stream, aligned on their LSL clocks.

LabRecorder stores each stream's timestamps in the clock of the machine that sent it, plus
ClockOffset chunks (collection time, offset to the recorder's clock). ``pyxdf`` applies those
offsets (``synchronize_clocks=True``: a robust linear fit per stream), so the EEG and marker
timestamps land on one clock. pyxdf's jitter removal stays OFF: each marker is placed on the
data stream by neuralign's own clock model run over the recorded stamps
(:func:`neuralign.signal.clock.place_recorded_events`), the one the engine places live markers
with, which also finds the gaps (samples that never arrived; the chain restarts there and the
epochs across are dropped, as live). Values are converted to volts / teslas with
each channel's ``unit`` from the stream header (``desc/channels/channel/unit``, LabRecorder keeps
what the amplifier app declared, often ``microvolts``), through the same table the engine's LSL
source uses (:mod:`neuralign.units`): the live engine sees the same numbers. A channel without
a unit is kept as it is (volts assumed); ``dataset.recording.units`` overrides the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from neuralign.errors import DataError, require_file
from neuralign.signal.clock import place_recorded_events
from neuralign.units import channel_scales

log = logging.getLogger(__name__)

# XDF channel types (as amplifiers write them, any case) -> MNE channel types; others are dropped.
_CH_TYPES = {"eeg": "eeg", "": "eeg", "meg": "mag", "mag": "mag", "grad": "grad", "misc": "misc",
             "seeg": "seeg", "ecog": "ecog"}
MARKER_TYPES = ("markers", "marker", "events", "stimulus", "stimuli")


def _first(d: dict, key: str, default: str = "") -> str:
    v = d.get(key)
    if isinstance(v, list):
        v = v[0] if v else None
    return default if v is None else str(v)


def _pick_stream(streams: list[dict], want: str | None, kinds: tuple[str, ...], what: str,
                 path: Path, key: str) -> dict:
    """The stream named ``want`` (or of type ``want``); without it, the first of type ``kinds``."""
    names = [f"{_first(s['info'], 'name')} ({_first(s['info'], 'type')})" for s in streams]
    if want:
        for field in ("name", "type"):
            hits = [s for s in streams if _first(s["info"], field).lower() == want.lower()]
            if hits:
                return hits[0]
        raise DataError(f"{path}: {key}: no stream named or typed {want!r} (streams: {names})")
    if what == "data":
        hits = [s for s in streams if _first(s["info"], "type").lower() in kinds
                and _first(s["info"], "channel_format") != "string"]
    else:
        hits = [s for s in streams if _first(s["info"], "type").lower() in kinds
                or _first(s["info"], "channel_format") == "string"]
    if not hits:
        raise DataError(f"{path}: no {what} stream of type {'/'.join(kinds)} (streams: {names}); "
                        f"name one with {key}")
    if len(hits) > 1:
        log.warning("%s: %d %s streams; using '%s' (set %s to choose)", path, len(hits), what,
                    _first(hits[0]["info"], "name"), key)
    return hits[0]


def _channels(stream: dict, n: int) -> tuple[list[str], list[str], list[str]]:
    """Channel labels, types and units from the stream header's desc (defaults: ch1.., eeg,
    no unit)."""
    labels, types, units = [f"ch{i + 1}" for i in range(n)], ["eeg"] * n, [""] * n
    desc = stream["info"].get("desc")
    try:
        chans = desc[0]["channels"][0]["channel"]
    except (TypeError, KeyError, IndexError):
        return labels, types, units
    for i, ch in enumerate(chans[:n]):
        labels[i] = _first(ch, "label", labels[i]) or labels[i]
        types[i] = _first(ch, "type", "eeg").strip().lower()
        units[i] = _first(ch, "unit", "").strip()
    return labels, types, units


class XdfBlock(NamedTuple):
    """What :func:`read_xdf` reads: the data stream in SI units and its events."""

    data: np.ndarray  # (C, n) float64, volts / teslas
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    events: list[tuple[int, str]]  # (sample, label)
    breaks: list[int]  # samples that do not follow their predecessor (gaps)


def read_xdf(path: Path, eeg_stream: str | None = None, marker_stream: str | None = None,
             units: str | None = None) -> XdfBlock:
    """The data stream of an XDF (volts / teslas) with its markers placed on it.

    ``eeg_stream`` / ``marker_stream``: a stream name or type (defaults: the first EEG-type
    numeric stream, the first Markers-type or string stream). Channels whose declared type is not
    a neural one (trigger, aux, accelerometer...) are dropped. A file without a marker stream
    gives no events (use an events table). ``units`` (``dataset.recording.units``) replaces the
    units the header declares; an unknown unit is one DataError.
    """
    try:
        import pyxdf
    except ImportError as exc:
        raise DataError(f"{path}: reading .xdf needs pyxdf (pip install 'neuralign[lab]')") from exc
    path = require_file(path, "XDF file not found")
    try:
        streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=True,
                                    dejitter_timestamps=False)
    except Exception as exc:  # pyxdf raises IOError/ValueError/struct.error on bad files
        raise DataError(f"{path}: cannot read as XDF ({exc})") from exc
    eeg = _pick_stream(streams, eeg_stream, ("eeg", "meg", "exg"), "data", path,
                       "dataset.recording.xdf_eeg_stream")
    sfreq = float(_first(eeg["info"], "nominal_srate", "0"))
    ts = np.asarray(eeg["time_stamps"], dtype=np.float64)
    x = np.asarray(eeg["time_series"], dtype=np.float64)
    if sfreq <= 0 or len(ts) < 2:
        raise DataError(f"{path}: stream '{_first(eeg['info'], 'name')}' has no regular samples "
                        f"(nominal_srate {sfreq:g}, {len(ts)} samples)")
    names, types, ch_units = _channels(eeg, x.shape[1])
    keep = [i for i, t in enumerate(types) if t in _CH_TYPES]
    if len(keep) < len(types):
        log.info("%s: dropped non-neural channels %s", path,
                 [f"{names[i]} ({types[i]})" for i in range(len(types)) if i not in keep])
    data = x[:, keep].T.copy()
    names = [names[i] for i in keep]
    types = [_CH_TYPES[types[i]] for i in keep]
    scales = channel_scales(names, types, [ch_units[i] for i in keep], units,
                            f"{path}: stream '{_first(eeg['info'], 'name')}'",
                            "dataset.recording.units (e.g. --set dataset.recording.units=uV)",
                            DataError)
    if np.any(scales != 1.0):
        data *= scales[:, None]
        log.info("%s: converted to volts/teslas (factors %s)", path, sorted(set(scales.tolist())))
    markers = [s for s in streams if s is not eeg]
    events: list[tuple[int, str]] = []
    if marker_stream is not None or any(
            _first(s["info"], "type").lower() in MARKER_TYPES
            or _first(s["info"], "channel_format") == "string" for s in markers):
        mk = _pick_stream(markers, marker_stream, MARKER_TYPES, "marker", path,
                          "dataset.recording.xdf_marker_stream")
        m_ts = np.asarray(mk["time_stamps"], dtype=np.float64)
        labels = [str(v[0]) if isinstance(v, (list, np.ndarray)) else str(v)
                  for v in mk["time_series"]]
        placed = place_recorded_events(ts, m_ts, sfreq)
        n_out = sum(i is None for i in placed.events)
        if n_out:
            log.warning("%s: %d markers fall outside the data stream; dropped", path, n_out)
        events = [(int(s), str(lab)) for s, lab in zip(placed.events, labels) if s is not None]
        breaks = [g.index for g in placed.gaps if g.index > 0]
    else:
        breaks = [g.index for g in place_recorded_events(ts, np.zeros(0), sfreq).gaps
                  if g.index > 0]
    if breaks:
        log.warning("%s: stream '%s' has %d gap(s) (samples that never arrived); the epochs "
                    "across them are dropped", path, _first(eeg["info"], "name"), len(breaks))
    log.info("%s: stream '%s' %d ch @ %g Hz, %d samples, %d markers", path,
             _first(eeg["info"], "name"), len(names), sfreq, len(ts), len(events))
    return XdfBlock(data, sfreq, names, types, events, breaks)
