"""Turn anything a user has on disk into a continuous (data, events) timeline for LSL replay.

What ``neuralign replay`` sends (through :class:`~neuralign.realtime.replay.player.LSLReplayer`).
It is data loading, so it lives offline, next to the loaders it dispatches to:

- recordings mne can read (``.fif``, ``.edf``, ``.bdf``, ``.vhdr``, ``.set``) with annotations;
- LabRecorder ``.xdf`` files: the first EEG stream and its marker stream, clock offsets applied;
- a THINGS-EEG2 raw session (``raw_eeg_*.npy``: stim-channel events, 99999 targets dropped);
- a neuralign recording directory (``neuralign run --record``);
- epoched datasets (THINGS-EEG2 preprocessed ``.npy``, TVSD ``.mat``) laid back on a timeline:
  trials in presentation order, one every SOA, so a session can be rehearsed on data one has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuralign.errors import DataError
from neuralign.offline.loaders.recording import (
    MNE_SUFFIXES,
    XDF_SUFFIXES,
    Continuous,
    continuous_from_raw,
    read_continuous,
)
from neuralign.recording_format import is_recording

# A replay timeline is a continuous block as the lab-recording loader reads it: replaying a file
# and training on it read the same samples and put each marker on the same sample.
Timeline = Continuous


def stitch_epochs(epochs: np.ndarray, labels: list[str], sfreq: float, soa: float,
                  tmin: float = 0.0, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Lay (n_trials, C, T) epochs on a continuous timeline, one onset every ``soa`` seconds.

    Overlapping windows (SOA shorter than the epoch) are summed where they overlap, which is how
    RSVP responses superimpose; trials are shuffled with ``seed`` as a presentation order.
    """
    n, c, t = epochs.shape
    step = int(round(soa * sfreq))
    lead = max(int(round(-tmin * sfreq)), 0) + step
    order = np.random.default_rng(seed).permutation(n)
    total = lead + step * n + t
    data = np.zeros((c, total), dtype=np.float64)
    events = []
    for k, i in enumerate(order):
        onset = lead + k * step
        start = onset + int(round(tmin * sfreq))
        data[:, start : start + t] += epochs[i]
        events.append((onset, labels[i]))
    return data, events


def load_timeline(path: Path, soa: float | None = None, split: str = "test") -> Timeline:
    """Dispatch on what ``path`` is; one DataError naming the file when it is none of these."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    name = path.name.lower()
    if is_recording(path) or name.endswith(XDF_SUFFIXES + MNE_SUFFIXES):
        return read_continuous(path)
    if name.startswith("raw_eeg_") and name.endswith(".npy"):
        from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_raw

        raw, events = load_things_eeg2_raw(path)
        raw.set_annotations(__import__("mne").Annotations(
            (events[:, 0] - raw.first_samp) / raw.info["sfreq"], 0.1,
            [str(int(c)) for c in events[:, 2]]))
        return continuous_from_raw(raw, path, f"THINGS-EEG2 raw {path}")
    if name.startswith("preprocessed_eeg_") and name.endswith(".npy"):
        from neuralign.offline.loaders.things_eeg2 import load_published_dict

        d = load_published_dict(path, ("preprocessed_eeg_data", "ch_names", "times"))
        x = np.asarray(d["preprocessed_eeg_data"])  # images x reps x ch x times
        times = np.asarray(d["times"])[-x.shape[-1]:]
        sfreq = float(round(1.0 / np.median(np.diff(times)), 6))
        labels = [f"{i}" for i in range(x.shape[0]) for _ in range(x.shape[1])]
        data, events = stitch_epochs(x.reshape(-1, *x.shape[2:]), labels, sfreq, soa or 0.2,
                                     float(times[0]))
        return Timeline(data, sfreq, list(d["ch_names"]), ["eeg"] * x.shape[2], events, path,
                        f"THINGS-EEG2 epochs {path} stitched at SOA {soa or 0.2:g} s")
    if name.endswith(".mat"):
        from neuralign.offline.loaders.tvsd import load_tvsd_mua

        ds = load_tvsd_mua(path)
        sp = ds.test if split == "test" else ds.train
        x = sp.data.reshape(-1, *sp.data.shape[2:])
        labels = [i for i in sp.image_ids for _ in range(sp.n_repetitions)]
        data, events = stitch_epochs(x, labels, ds.sfreq, soa or 0.4, float(ds.times[0]))
        return Timeline(data, ds.sfreq, ds.ch_names, ["misc"] * len(ds.ch_names), events, path,
                        f"TVSD {split} trials {path} stitched at SOA {soa or 0.4:g} s")
    raise DataError(f"{path}: expected a recording (.fif/.edf/.bdf/.vhdr/.set/.xdf), a THINGS-EEG2 "
                    "raw_eeg_*.npy or preprocessed_eeg_*.npy, a TVSD .mat, or a neuralign "
                    "recording directory")
