"""The neuralign recording format, read by both flows (the writer is realtime's Recorder).

Layout of a recording directory::

    header.json        channel names/types, sfreq, dtypes; "complete": true once closed
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

from neuralign.errors import DataError, read_json
from neuralign.signal.events import nearest_samples

log = logging.getLogger(__name__)

FORMAT = "neuralign-recording"
VERSION = 1
SAMPLES, TIMES, EVENTS, RESULTS, HEADER = ("samples.f32", "timestamps.f64", "events.jsonl",
                                           "results.jsonl", "header.json")


def is_recording(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / HEADER).is_file()


def recorded_events(ts: np.ndarray, events: list[dict], sfreq: float) -> list[tuple[int, str]]:
    """(sample index, value) of each event inside the recording, on the sample whose timestamp
    is nearest: equal to "timestamp - first timestamp" for a regular stream, and still the right
    sample when the stream had gaps (where elapsed time and sample count disagree)."""
    if not len(ts):
        return []
    half = 0.5 / sfreq
    inside = [e for e in events if ts[0] - half <= float(e["timestamp"]) <= ts[-1] + half]
    idx = nearest_samples(ts, np.array([float(e["timestamp"]) for e in inside]))
    return [(int(i), str(e["value"])) for i, e in zip(idx, inside)]


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


def read_recording(directory: str | Path
                   ) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict], dict]:
    """``(data (C, n) float32, timestamps (n,), events, results, header)`` of a recording,
    closed or not (a crash may leave a torn last sample: it is ignored)."""
    directory = Path(directory)
    hpath = directory / HEADER
    if not hpath.is_file():
        raise DataError(f"{directory}: not a neuralign recording (no {HEADER})")
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
    if events and len(ts):
        # onset = index of the sample nearest the event's timestamp / sfreq: equal to
        # "timestamp - first timestamp" for a regular stream, and still on the right sample
        # when the stream had gaps (where elapsed time and sample count disagree)
        keep = [(j / header["sfreq"], value) for j, value in recorded_events(ts, events,
                                                                             header["sfreq"])]
        if keep:
            raw.set_annotations(mne.Annotations(onset=[k[0] for k in keep],
                                                duration=[0.0] * len(keep),
                                                description=[k[1] for k in keep]))
    path = directory / fname
    raw.save(path, overwrite=True, verbose="error")
    return path
