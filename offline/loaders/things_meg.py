"""THINGS-MEG (Hebart et al. 2023): per-subject epoched MNE files.

Published preprocessed layout read here: ``preprocessed_P{n}-epo.fif`` (271 CTF axial
gradiometers typed 'mag' by MNE, 200 Hz) with one row per trial in
``sample_attributes_P{n}.csv`` (same order as the epochs), or the same columns in
``epochs.metadata``. Columns used:
- ``trial_type``: 'exp' = training, 'test' = test, 'catch' (anything else) = dropped;
- ``image_path`` ('.../<concept>/<file>.jpg') -> image id = file stem, concept = folder;
  alternatively explicit ``image_id`` and ``concept`` columns.

Zero-shot protocol: training images of the 200 test concepts are REMOVED (ATM does this; the
BrainAE release keeps them). Test images keep all their repetitions (12); training images 1.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.errors import DataError
from neuralign.offline.dataset import BrainDataset, SplitData

from ._common import crop_mask, exclude_concepts, group_by_image, stem_and_concept

log = logging.getLogger(__name__)

TRAIN_TYPES = ("exp", "train", "training")
TEST_TYPES = ("test",)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _attributes(
    epochs: Any, fif: Path, attributes: Path | None
) -> tuple[list[dict[str, Any]], str]:
    if attributes is not None:
        if not Path(attributes).exists():
            raise DataError(f"{attributes}: sample attributes file not found")
        return _read_csv(Path(attributes)), str(attributes)
    name = fif.name.replace("preprocessed_", "sample_attributes_").replace("-epo.fif", ".csv")
    side = fif.parent / name
    if side != fif and side.exists():
        return _read_csv(side), str(side)
    md = epochs.metadata
    if md is not None:
        return md.to_dict("records"), f"{fif} (metadata)"
    raise DataError(
        f"{fif}: no trial attributes: expected {side.name} next to it, an explicit attributes file, "
        f"or epochs.metadata with columns trial_type and image_path"
    )


def load_things_meg(
    fif: str | Path,
    attributes: str | Path | None = None,
    tmin: float | None = None,
    tmax: float | None = None,
    picks: str = "mag",
) -> BrainDataset:
    """One subject's THINGS-MEG epochs as a zero-shot BrainDataset (modality 'meg')."""
    import mne

    fif = Path(fif)
    if not fif.exists():
        raise DataError(f"{fif}: THINGS-MEG epochs file not found")
    try:
        epochs = mne.read_epochs(fif, preload=True, verbose="error")
    except Exception as err:
        raise DataError(
            f"{fif}: cannot read as MNE epochs ({err.__class__.__name__}: {err})"
        ) from None
    rows, src = _attributes(epochs, fif, Path(attributes) if attributes is not None else None)
    if len(rows) != len(epochs):
        raise DataError(
            f"{src}: {len(rows)} attribute rows but {fif.name} has {len(epochs)} epochs"
        )
    cols = set(rows[0]) if rows else set()
    if "trial_type" not in cols:
        raise DataError(f"{src}: missing column 'trial_type' (expected 'exp'/'test'/'catch')")
    if "image_path" in cols:
        pairs = [stem_and_concept(str(r["image_path"])) for r in rows]
    elif {"image_id", "concept"} <= cols:
        pairs = [(str(r["image_id"]), str(r["concept"])) for r in rows]
    else:
        raise DataError(f"{src}: missing column 'image_path' (or 'image_id' and 'concept')")
    kinds = [str(r["trial_type"]).strip().lower() for r in rows]
    try:
        epochs.pick(picks)
    except ValueError as err:
        raise DataError(f"{fif}: no channels of type {picks!r} ({err})") from None
    times = epochs.times.astype(np.float64)
    mask = crop_mask(times, tmin, tmax, fif)
    data = epochs.get_data(copy=False)[..., mask].astype(np.float32)
    splits = {}
    for name, types in (("train", TRAIN_TYPES), ("test", TEST_TYPES)):
        trials = np.array([k for k, t in enumerate(kinds) if t in types], dtype=np.int64)
        if trials.size == 0:
            raise DataError(f"{src}: trial_type: no {name} trials (expected values {types})")
        ids = [pairs[k][0] for k in trials]
        uniq, table = group_by_image(ids, src, name)
        con_of = {pairs[k][0]: pairs[k][1] for k in trials}
        splits[name] = (uniq, [con_of[i] for i in uniq], trials[table])
    n_drop = sum(1 for t in kinds if t not in TRAIN_TYPES + TEST_TYPES)
    if n_drop:
        log.info("%s: %d catch/other trials dropped", src, n_drop)
    te_ids, te_con, te_rows = splits["test"]
    tr_ids, tr_con, tr_rows = exclude_concepts(*splits["train"], set(te_con), src)
    return BrainDataset(
        train=SplitData(data[tr_rows], tr_ids, tr_con),
        test=SplitData(data[te_rows], te_ids, te_con),
        ch_names=list(epochs.ch_names),
        ch_types=epochs.get_channel_types(),
        sfreq=float(epochs.info["sfreq"]),
        times=times[mask],
        modality="meg",
        provenance="external-preprocessed",
        source=str(fif),
    )
