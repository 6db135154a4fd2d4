"""Annotation onsets as sample indices: the one formula every epoching path uses.

Parity needs the offline epochs, the replayer's markers and the engine's epochs to agree on the
sample a stimulus fell on. MNE stores annotation onsets relative to the measurement start, so the
sample index relative to the first retained sample is ``round((onset - first_time) * sfreq)``.
"""

from __future__ import annotations

import numpy as np

# MNE's conventions for segments, not stimuli: never epoched, never replayed as markers.
NON_STIMULUS_PREFIXES = ("BAD", "EDGE")


def annotation_onsets(raw) -> tuple[np.ndarray, list[str]]:
    """(sample index of every annotation relative to the first sample, its description)."""
    ann = raw.annotations
    if not len(ann):
        return np.zeros(0, dtype=int), []
    samples = raw.time_as_index(ann.onset - raw.first_time, use_rounding=True)
    return np.asarray(samples, dtype=int), [str(d) for d in ann.description]


def is_stimulus(description: str) -> bool:
    """False for BAD*/EDGE* segment annotations."""
    return not description.upper().startswith(NON_STIMULUS_PREFIXES)


def stimulus_events(raw) -> list[tuple[int, str]]:
    """(onset sample, label) of every stimulus annotation, in recording order."""
    samples, labels = annotation_onsets(raw)
    return [(int(s), lab) for s, lab in zip(samples, labels) if is_stimulus(lab)]


def nearest_samples(sample_times: np.ndarray, event_times: np.ndarray) -> np.ndarray:
    """Index of the sample whose timestamp is nearest each event time (ties to the earlier sample).

    The rule the live ring buffer applies to an LSL marker (``index_of_time``) and the recorder's
    FIF export use, so a recording's markers land on the sample the engine would have cut at.
    ``sample_times`` must be non-decreasing; events outside it map to the first or last sample.
    """
    ts = np.asarray(sample_times, dtype=np.float64)
    t = np.asarray(event_times, dtype=np.float64)
    if len(ts) == 0:
        raise ValueError("no samples to align events to")
    j = np.clip(np.searchsorted(ts, t), 1, max(len(ts) - 1, 1)) if len(ts) > 1 \
        else np.zeros(len(t), dtype=np.int64)
    if len(ts) > 1:
        earlier = np.abs(ts[j - 1] - t) <= np.abs(ts[j] - t)
        j = np.where(earlier, j - 1, j)
    return j.astype(np.int64)
