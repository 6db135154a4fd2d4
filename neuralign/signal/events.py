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
