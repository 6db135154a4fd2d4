"""The neuralign recording format, read by both flows (the writer is realtime's Recorder).

Layout of a recording directory::

    header.json        channel names/types, sfreq, dtypes; "complete": true once closed;
                       "units" (the unit samples are stored in, SI), "stream_units" and
                       "stream_scales" (the stream's own unit, the factor applied to it)
    samples.f32        float32, sample-major (s0c0 s0c1 ... s1c0 ...), appended
    timestamps.f64     float64 LSL timestamp of each sample, appended
    events.jsonl       one marker per line {"timestamp", "value", "received"}
    results.jsonl      one engine result per line
    raw.fif            written on a clean close: MNE Raw with events as annotations

Reading lives in the core so that offline training (a lab's own recording) and realtime replay
read it with the same code; a crashed recording (torn last sample or line) reads up to the tear.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from neuralign.errors import DataError, read_json, require_file
from neuralign.signal.clock import place_recorded_events
from neuralign.units import unit_scale

log = logging.getLogger(__name__)

FORMAT = "neuralign-recording"
VERSION = 1
SAMPLES, TIMES, EVENTS, RESULTS, HEADER = ("samples.f32", "timestamps.f64", "events.jsonl",
                                           "results.jsonl", "header.json")
#: what the engine's clock model decided live: {"gap": sample} and {"marker": timestamp,
#: "value": v, "sample": sample} lines (sample = index in this recording)
CLOCK = "clock.jsonl"


#: annotation descriptions of a discontinuity (MNE's, from concatenate_raws)
BOUNDARY = ("BAD boundary", "EDGE boundary")


def is_recording(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / HEADER).is_file()


def recorded_events(ts: np.ndarray, events: list[dict], sfreq: float) -> list[tuple[int, str]]:
    """(sample index, value) of each event inside the recording, placed as the engine placed it
    live: by the stream's clock model run over the recorded stamps
    (:func:`neuralign.signal.clock.place_recorded_events`), so jittered chunk stamps and gaps
    put a marker on the sample it names (on ideal stamps: the nearest sample)."""
    return recorded_clock(ts, events, sfreq)[0]


def recorded_clock(ts: np.ndarray, events: list[dict], sfreq: float,
                   live: list[dict] | None = None) -> tuple[list[tuple[int, str]], list[int]]:
    """``(events as in recorded_events, breaks)``: ``breaks`` are the samples that do not follow
    their predecessor (gaps the clock model confirmed): epoching restarts the chain there.

    ``live``: the engine's own decisions (:data:`CLOCK` lines). Where they exist they are used
    as they are (the recording is then epoched exactly where the engine cut it live); the model
    is run over the stamps for what they do not cover."""
    if not len(ts):
        return [], []
    where = {(round(float(c["marker"]), 9), str(c["value"])): int(c["sample"])
             for c in live or () if "marker" in c}
    keys = [(round(float(e["timestamp"]), 9), str(e["value"])) for e in events]
    model = None  # the clock model, run only for what the engine's log does not say
    if not live or any(k not in where for k in keys):
        times = np.array([float(e["timestamp"]) for e in events], dtype=np.float64)
        model = place_recorded_events(ts, times, sfreq)
    out = []
    for j, (k, e) in enumerate(zip(keys, events)):
        i = where[k] if k in where else model.events[j]
        if i is not None and 0 <= i < len(ts):
            out.append((int(i), str(e["value"])))
    if live:
        return out, sorted({int(c["gap"]) for c in live if "gap" in c and int(c["gap"]) > 0})
    return out, [g.index for g in model.gaps if g.index > 0]


def read_clock_log(directory: str | Path) -> list[dict]:
    """The engine's clock decisions stored with a recording (empty for older recordings)."""
    return read_jsonl(Path(directory) / CLOCK)


def read_jsonl(path: Path) -> list[dict]:
    out: list[dict] = []
    if not path.exists():
        return out
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # torn last line of a crashed recording
                log.warning("%s: ignoring a truncated last line", path)
                continue
            raise DataError(f"{path}: line {i + 1} is not valid JSON") from None
    return out


def si_factors(header: dict, where: Path | str) -> np.ndarray:
    """Per-channel factor from the header's stored ``units`` to volts / teslas.

    The engine's buffer holds SI already (its sources convert), so a recorder writes ``"V"``
    (``"T"``, ``"T/m"``, ``""`` for unit-less channels) and the factors are 1; the header also
    keeps ``stream_units`` / ``stream_scales``, what the stream itself sent. Headers written
    before the ``units`` field existed hold volts / teslas too (the sources already converted).
    """
    n = len(header["ch_names"])
    units = header.get("units") or [""] * n
    factors = [unit_scale(str(u)) for u in units]
    bad = [f"{c} ({u!r})" for c, u, f in zip(header["ch_names"], units, factors) if f is None]
    if bad or len(units) != n:
        raise DataError(f"{where}: header 'units': expected one known unit per channel, got "
                        f"{bad[:4] or len(units)}")
    return np.asarray(factors, dtype=np.float64)


def read_recording(directory: str | Path
                   ) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict], dict]:
    """``(data (C, n) float32, timestamps (n,), events, results, header)`` of a recording,
    closed or not (a crash may leave a torn last sample: it is ignored). ``data`` is in volts /
    teslas (:func:`si_factors`)."""
    directory = Path(directory)
    hpath = require_file(directory / HEADER, f"not found ({directory} is not a neuralign "
                         "recording)")
    header = read_json(hpath, "recording header")
    if header.get("format") != FORMAT:
        raise DataError(f"{hpath}: not a {FORMAT} header")
    n_ch = len(header["ch_names"])
    raw_samples = np.fromfile(directory / SAMPLES, dtype="<f4") if (directory / SAMPLES).exists() \
        else np.zeros(0, "<f4")
    ts = np.fromfile(directory / TIMES, dtype="<f8") if (directory / TIMES).exists() \
        else np.zeros(0, "<f8")
    n = min(len(raw_samples) // n_ch if n_ch else 0, len(ts))
    data = raw_samples[: n * n_ch].reshape(n, n_ch).T.copy()
    factors = si_factors(header, hpath)
    if np.any(factors != 1.0):
        data *= factors[:, None].astype(data.dtype)
    return (data, ts[:n].copy(), read_jsonl(directory / EVENTS),
            read_jsonl(directory / RESULTS), header)


def export_fif(directory: str | Path, fname: str = "raw.fif") -> Path:
    """Write the recording as an MNE Raw FIF; events become annotations on the sample nearest
    their timestamp (onsets relative to the first sample; events outside are dropped)."""
    import mne

    directory = Path(directory)
    data, ts, events, _, header = read_recording(directory)
    info = mne.create_info(header["ch_names"], header["sfreq"], header["ch_types"])
    raw = mne.io.RawArray(data.astype(np.float64), info, verbose="error")
    if len(ts):
        # onset = the sample the engine's clock model puts the event on / sfreq; a gap the
        # model confirmed becomes MNE's discontinuity pair ('BAD boundary' + 'EDGE boundary',
        # as mne.concatenate_raws writes it), which neuralign's readers restart the chain at
        placed, breaks = recorded_clock(ts, events, header["sfreq"], read_clock_log(directory))
        keep = [(j / header["sfreq"], value) for j, value in placed]
        keep += [(b / header["sfreq"], d) for b in breaks for d in BOUNDARY]
        if keep:
            keep.sort(key=lambda k: k[0])
            raw.set_annotations(mne.Annotations(onset=[k[0] for k in keep],
                                                duration=[0.0] * len(keep),
                                                description=[k[1] for k in keep]))
    path = directory / fname
    raw.save(path, overwrite=True, verbose="error")
    return path
