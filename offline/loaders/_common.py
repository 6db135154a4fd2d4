"""Helpers shared by the loaders: trial grouping, time cropping, zero-shot exclusion."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neuralign.errors import DataError

log = logging.getLogger(__name__)


def sfreq_from_times(times: np.ndarray, source: Path | str, key: str = "times") -> float:
    """Sampling rate from the spacing of a time axis (the files store no sfreq)."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) < 2:
        raise DataError(
            f"{source}: {key}: expected a 1-D time axis with >= 2 entries, got shape {times.shape}"
        )
    step = np.diff(times)
    if np.any(step <= 0):
        raise DataError(f"{source}: {key}: time axis is not strictly increasing")
    return float(round(1.0 / float(np.median(step)), 6))


def crop_mask(
    times: np.ndarray, tmin: float | None, tmax: float | None, source: Path | str
) -> np.ndarray:
    """Boolean mask of samples in [tmin, tmax) (tolerant to float round-off)."""
    eps = 1e-6
    mask = np.ones(len(times), dtype=bool)
    if tmin is not None:
        mask &= times >= tmin - eps
    if tmax is not None:
        mask &= times < tmax - eps
    if not mask.any():
        raise DataError(
            f"{source}: times: no sample in [{tmin}, {tmax}) (data cover {times[0]:.3f}..{times[-1]:.3f} s)"
        )
    return mask


def group_by_image(
    trial_ids: Sequence[str], source: Path | str, what: str
) -> tuple[list[str], np.ndarray]:
    """Image ids in first-seen order and an (images, reps) trial-index table.

    Images shown a different number of times are cut to the smallest count (logged), so the
    split stays a dense 4-D array; the earliest presentations are kept.
    """
    order: dict[str, list[int]] = {}
    for k, i in enumerate(trial_ids):
        order.setdefault(str(i), []).append(k)
    if not order:
        raise DataError(f"{source}: no {what} trials found")
    counts = np.array([len(v) for v in order.values()])
    n_rep = int(counts.min())
    if counts.max() != n_rep:
        log.warning(
            "%s: %s images have %d..%d repetitions; keeping the first %d of each (%d trials dropped)",
            source,
            what,
            n_rep,
            counts.max(),
            n_rep,
            int(counts.sum() - n_rep * len(counts)),
        )
    table = np.array([v[:n_rep] for v in order.values()], dtype=np.int64)
    return list(order), table


def exclude_concepts(
    ids: list[str], concepts: list[str], rows: np.ndarray, banned: set[str], source: Path | str
) -> tuple[list[str], list[str], np.ndarray]:
    """Zero-shot protocol: drop training images whose concept is a test concept (logged)."""
    keep = [k for k, c in enumerate(concepts) if c not in banned]
    dropped = len(concepts) - len(keep)
    if dropped:
        log.info(
            "%s: zero-shot split: %d training images of test concepts removed", source, dropped
        )
    if not keep:
        raise DataError(
            f"{source}: every training image belongs to a test concept; nothing left to train on"
        )
    return [ids[k] for k in keep], [concepts[k] for k in keep], rows[keep]


def stem_and_concept(image_path: str) -> tuple[str, str]:
    """THINGS image path '.../<concept>/<file>.jpg' -> (file stem, concept folder)."""
    p = Path(str(image_path).replace("\\", "/"))
    concept = p.parent.name or p.stem.rsplit("_", 1)[0]
    return p.stem, concept
