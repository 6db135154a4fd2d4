"""Vim-1 (Kay et al. 2008; SMR + ICG's natural-image fMRI set), in its published CRCNS layout:

- ``Stimuli.mat``: ``stimTrn`` (1750, 128, 128) and ``stimVal`` (120, 128, 128) grey images;
- ``EstimatedResponses.mat``: ``dataTrnS{n}`` (voxels, 1750) and ``dataValS{n}`` (voxels, 120)
  response amplitudes, ``roiS{n}`` (voxels,) ROI codes (1-7 = V1, V2, V3, V3A, V3B, V4, LO).

Both files are MATLAB v7.3 (HDF5, read with h5py; dimensions come reversed) in the release; v5
files (scipy) are read too. Voxels in ``rois`` with finite responses are kept (the paper's 8428
are its own selection). Stimuli are rescaled to [0, 1] from their own range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuralign.errors import DataError, require_file

EARLY_VISUAL = (1, 2, 3)


def _read_mat(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    import h5py
    from scipy.io import loadmat

    require_file(path, "not found (Vim-1 layout: Stimuli.mat + EstimatedResponses.mat)")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(f"{path}: missing {missing}")
            return {k: np.asarray(f[k]).T for k in keys}  # HDF5 reverses MATLAB's dimensions
    mat = loadmat(str(path))
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f"{path}: missing {missing}")
    return {k: np.asarray(mat[k]) for k in keys}


def load_vim1(path: Path, subject: int = 1, rois: tuple[int, ...] = EARLY_VISUAL) -> dict[str, np.ndarray]:
    """The paired arrays of Vim-1 subject ``subject`` (``path``: the folder holding both files)."""
    root = Path(path)
    root = root.parent if root.is_file() else root
    stim = _read_mat(root / "Stimuli.mat", ("stimTrn", "stimVal"))
    keys = (f"dataTrnS{subject}", f"dataValS{subject}", f"roiS{subject}")
    resp = _read_mat(root / "EstimatedResponses.mat", keys)
    trn, val, roi = (resp[k] for k in keys)
    roi = roi.ravel()
    keep = np.isin(roi, rois) & np.isfinite(trn).all(1) & np.isfinite(val).all(1)
    if not keep.any():
        raise DataError(f"{root}: no voxel of subject {subject} in ROIs {rois} with finite responses")
    images = [np.asarray(stim[k], np.float32) for k in ("stimTrn", "stimVal")]
    lo, hi = min(i.min() for i in images), max(i.max() for i in images)
    images = [(i - lo) / max(hi - lo, 1e-12) for i in images]
    return {"train_images": images[0], "test_images": images[1],
            "train_responses": trn[keep].T.astype(np.float32),
            "test_responses": val[keep].T.astype(np.float32)}
