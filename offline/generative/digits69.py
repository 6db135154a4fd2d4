"""The '69' handwritten-digits fMRI set (van Gerven et al.; FLIG's fMRI data, Table II), in the
``digit69_28x28.mat`` layout used by DGMM / FLIG: ``stimTrn`` (90, 784) and ``stimTest`` (10, 784)
uint8 0-255 digits stored column-major (MATLAB), ``fmriTrn`` (90, V) and ``fmriTest`` (10, V)
voxel responses (V = 3092 in the public file; FLIG keeps DGMM's 1813 selected voxels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from neuralign.errors import DataError

KEYS = ("stimTrn", "stimTest", "fmriTrn", "fmriTest")


def _images(flat: np.ndarray) -> np.ndarray:
    side = int(round(np.sqrt(flat.shape[1])))
    if side * side != flat.shape[1]:
        raise DataError(f"digit69: stimuli have {flat.shape[1]} pixels, not a square image")
    # MATLAB stores each 28x28 digit column-major: reshape then transpose rows and columns.
    imgs = flat.reshape(len(flat), side, side).transpose(0, 2, 1)
    return imgs.astype(np.uint8) if imgs.max() > 1 else imgs.astype(np.float32)


def load_digits69(path: Path) -> dict[str, np.ndarray]:
    """The paired arrays (keys of ``paired.npz``) of ``digit69_28x28.mat``."""
    try:
        mat = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError) as exc:
        raise DataError(f"{path}: not a readable digit69 .mat file ({exc})") from exc
    missing = [k for k in KEYS if k not in mat]
    if missing:
        raise DataError(f"{path}: missing {missing} (expected the digit69_28x28.mat layout: {KEYS})")
    return {"train_images": _images(mat["stimTrn"]), "test_images": _images(mat["stimTest"]),
            "train_responses": mat["fmriTrn"].astype(np.float32),
            "test_responses": mat["fmriTest"].astype(np.float32)}
