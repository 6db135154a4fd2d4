"""TVSD (macaque multi-unit activity, THINGS images): ``THINGS_MUA_trials.mat`` (MATLAB v7.3 / HDF5).

Reading rules (neuralign's documented choices):
- ``ALLMUA``: 300 samples at 1 kHz (-100..200 ms), trials, 1024 channels. MATLAB v7.3 stores
  arrays transposed relative to MATLAB's view, so axes are identified by size, not position: the
  trial axis has ALLMAT's trial count, the channel axis ``n_channels``, the time axis 300.
- ``ALLMAT``: one column per trial in MATLAB's view (a (n_info, n_trials) matrix, stored
  transposed; either orientation is accepted). Rows follow the TVSD README order
  ``[trial_idx, train_idx, test_idx, rep, count, correct, day]``; neuralign uses row 1
  (``train_row``, 0-based) = 1-based training-image id (0 if not a training trial) and row 2
  (``test_row``) = 1-based test-image id (0 if not a test trial). Both rows are parameters.
- samples 100:300 (0-200 ms) are kept; each trial is z-scored per channel over those samples;
  nothing is averaged (train reps = 1, test reps = min count per test image, ~30).
- zero-shot: training images whose concept is a test concept are removed. Concepts come from
  ``train_image_paths`` / ``test_image_paths`` ('<concept>/<file>.jpg', as in things_imgs.mat);
  without them ids are ``train_00000`` and the exclusion cannot be applied (warned).
- channels are grouped by area with index ranges (``DEFAULT_AREAS``; configurable via ``areas``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from neuralign.errors import DataError
from neuralign.offline.dataset import BrainDataset, SplitData

from ._common import exclude_concepts, group_by_image, stem_and_concept

log = logging.getLogger(__name__)

N_SAMPLES = 300
KEEP = slice(100, 300)  # 0..200 ms at 1 kHz
SFREQ = 1000.0
# Array (channel index) ranges per area, 0-based half-open; the monkey-specific mapping of
# arrays to areas is in the TVSD docs — override ``areas`` for each animal.
DEFAULT_AREAS: dict[str, tuple[int, int]] = {"V1": (0, 512), "V4": (512, 768), "IT": (768, 1024)}


def _h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not an HDF5 (MATLAB v7.3) file ({err})") from None


def channel_areas(n_channels: int, areas: Mapping[str, tuple[int, int]]) -> list[str]:
    """Area label per channel from index ranges; channels outside every range are 'other'."""
    labels = ["other"] * n_channels
    for name, (lo, hi) in areas.items():
        for k in range(max(lo, 0), min(hi, n_channels)):
            labels[k] = name
    return labels


def _allmat_rows(allmat: np.ndarray, n_trials_hint: int | None, path: Path) -> np.ndarray:
    """ALLMAT as (n_info, n_trials) whatever its stored orientation."""
    if allmat.ndim != 2:
        raise DataError(f"{path}: ALLMAT: expected a 2-D matrix, got shape {allmat.shape}")
    if n_trials_hint is not None:
        if allmat.shape[1] == n_trials_hint:
            return allmat
        if allmat.shape[0] == n_trials_hint:
            return allmat.T
        raise DataError(
            f"{path}: ALLMAT: shape {allmat.shape} has no axis of {n_trials_hint} trials (ALLMUA)"
        )
    return allmat if allmat.shape[0] < allmat.shape[1] else allmat.T


def _mua_axes(
    shape: tuple[int, ...], n_channels: int, allmat_shape: tuple[int, int], path: Path
) -> tuple[int, int, int]:
    """(time_axis, trial_axis, channel_axis) of ALLMUA found by sizes."""
    if len(shape) != 3:
        raise DataError(
            f"{path}: ALLMUA: expected 3-D (samples, trials, channels) in some order, got shape {shape}"
        )
    for trial_ax in range(3):
        if shape[trial_ax] not in allmat_shape:
            continue
        rest = [a for a in range(3) if a != trial_ax]
        for t_ax, c_ax in (rest, rest[::-1]):
            if shape[t_ax] == N_SAMPLES and shape[c_ax] == n_channels:
                return t_ax, trial_ax, c_ax
    raise DataError(
        f"{path}: ALLMUA: shape {shape} does not hold {N_SAMPLES} samples x {n_channels} channels x "
        f"the trials of ALLMAT {allmat_shape}"
    )


def load_tvsd_mua(
    path: str | Path,
    n_channels: int = 1024,
    train_row: int = 1,
    test_row: int = 2,
    train_image_paths: Sequence[str] | None = None,
    test_image_paths: Sequence[str] | None = None,
    areas: Mapping[str, tuple[int, int]] | None = None,
    block_trials: int = 512,
) -> BrainDataset:
    """TVSD MUA epochs (0-200 ms, per-trial z-scored) as a zero-shot BrainDataset (modality 'mua')."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: TVSD THINGS_MUA_trials.mat not found")
    with _h5(path) as f:
        for key in ("ALLMUA", "ALLMAT"):
            if key not in f:
                raise DataError(
                    f"{path}: missing key {key!r} (expected 'ALLMUA' and 'ALLMAT', found {sorted(f.keys())})"
                )
        allmat_raw = np.asarray(f["ALLMAT"][()])
        dset = f["ALLMUA"]
        if allmat_raw.ndim != 2:
            raise DataError(f"{path}: ALLMAT: expected a 2-D matrix, got shape {allmat_raw.shape}")
        t_ax, tr_ax, c_ax = _mua_axes(dset.shape, n_channels, allmat_raw.shape, path)
        allmat = _allmat_rows(allmat_raw, dset.shape[tr_ax], path)
        if max(train_row, test_row) >= allmat.shape[0]:
            raise DataError(
                f"{path}: ALLMAT: has {allmat.shape[0]} rows, train_row={train_row}/test_row={test_row} requested"
            )
        train_idx = np.rint(allmat[train_row]).astype(np.int64)
        test_idx = np.rint(allmat[test_row]).astype(np.int64)
        if np.any((train_idx > 0) & (test_idx > 0)):
            raise DataError(
                f"{path}: ALLMAT: some trials have both a train id (row {train_row}) and a test id (row {test_row})"
            )
        splits = {}
        for name, idx, paths in (
            ("train", train_idx, train_image_paths),
            ("test", test_idx, test_image_paths),
        ):
            trials = np.flatnonzero(idx > 0)
            trials = trials[
                np.argsort(idx[trials], kind="stable")
            ]  # image-list order, reps in trial order
            if len(trials) == 0:
                raise DataError(
                    f"{path}: ALLMAT: no {name} trials (row {train_row if name == 'train' else test_row} is all 0)"
                )
            ids, concepts = _ids(idx[trials], paths, name, path)
            uniq, table = group_by_image(ids, path, name)
            con_of = dict(zip(ids, concepts))
            splits[name] = (uniq, [con_of[i] for i in uniq], trials[table])
        te_ids, te_con, te_rows = splits["test"]
        tr_ids, tr_con, tr_rows = splits["train"]
        if train_image_paths is None or test_image_paths is None:
            log.warning(
                "%s: no image paths given: concepts unknown, zero-shot exclusion NOT applied", path
            )
        else:
            tr_ids, tr_con, tr_rows = exclude_concepts(tr_ids, tr_con, tr_rows, set(te_con), path)
        tr = _read_trials(dset, tr_rows, (t_ax, tr_ax, c_ax), block_trials)
        te = _read_trials(dset, te_rows, (t_ax, tr_ax, c_ax), block_trials)
    times = (np.arange(KEEP.start, KEEP.stop) - 100) / SFREQ
    labels = channel_areas(n_channels, dict(areas) if areas is not None else DEFAULT_AREAS)
    ch_names = [f"{a}-{k:04d}" for k, a in enumerate(labels)]
    log.info("TVSD %s: train %s, test %s", path, tr.shape, te.shape)
    return BrainDataset(
        train=SplitData(tr, tr_ids, tr_con),
        test=SplitData(te, te_ids, te_con),
        ch_names=ch_names,
        ch_types=["misc"] * n_channels,
        sfreq=SFREQ,
        times=times,
        modality="mua",
        provenance="external-preprocessed",
        source=str(path),
    )


def _ids(
    one_based: np.ndarray, paths: Sequence[str] | None, name: str, source: Path
) -> tuple[list[str], list[str]]:
    if paths is None:
        return [f"{name}_{i - 1:05d}" for i in one_based], [
            f"{name}_concept_{i - 1:05d}" for i in one_based
        ]
    if one_based.max() > len(paths):
        raise DataError(
            f"{source}: ALLMAT: {name} id {int(one_based.max())} exceeds the {len(paths)} {name} image paths"
        )
    pairs = [stem_and_concept(paths[i - 1]) for i in one_based]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _read_trials(dset, rows: np.ndarray, axes: tuple[int, int, int], block: int) -> np.ndarray:
    """(images, reps, channels, 200) z-scored, read in trial blocks (the file is ~tens of GB)."""
    t_ax, tr_ax, c_ax = axes
    n_img, n_rep = rows.shape
    flat = rows.ravel()
    out = np.empty((flat.size, dset.shape[c_ax], KEEP.stop - KEEP.start), dtype=np.float32)
    order = np.argsort(flat)
    sorted_rows = flat[order]
    for s in range(0, flat.size, block):
        chunk = sorted_rows[s : s + block]
        uniq, inv = np.unique(chunk, return_inverse=True)  # h5py needs increasing indices
        sel: list[object] = [slice(None)] * 3
        sel[tr_ax] = uniq.tolist()
        sel[t_ax] = KEEP
        x = np.asarray(dset[tuple(sel)], dtype=np.float32)
        x = np.moveaxis(x, (tr_ax, c_ax, t_ax), (0, 1, 2))[inv]
        out[order[s : s + block]] = x
    mean = out.mean(axis=-1, keepdims=True)
    std = out.std(axis=-1, keepdims=True)
    out = (out - mean) / np.where(std > 0, std, 1.0)
    return out.reshape(n_img, n_rep, out.shape[1], out.shape[2])
