"""The generic paired format (``paired.npz``) and the typed arrays every generative stage uses.

``paired.npz`` keys (any user can write it with ``np.savez``):

- ``train_images`` (N, H, W) or (N, H, W, 3), uint8 or float in [0, 1];
- ``train_responses`` (N, M) or (N, R, M) (repetitions are averaged);
- ``test_images`` (N_test, H, W[, 3]); ``test_responses`` (N_test, M) or (N_test, R, M);
- optional ``extra_images`` (unpaired, for ICG's augmentation) and ``unit_names`` (M,).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralign.errors import DataError, require_file
from neuralign.npy_files import load_arrays

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("train_images", "train_responses", "test_images", "test_responses")


@dataclass
class PairedData:
    """Images in [0, 1] at the model resolution and repetition-averaged responses."""

    train_images: np.ndarray  # (N, S, S) or (N, S, S, 3) float32 in [0, 1]
    train_responses: np.ndarray  # (N, M) float32, repetition-averaged
    test_images: np.ndarray  # (N_test, S, S[, 3])
    test_responses: np.ndarray  # (N_test, M), repetition-averaged
    extra_images: np.ndarray | None = None  # (N_extra, S, S[, 3]) unpaired
    test_responses_reps: np.ndarray | None = None  # (N_test, R, M) when given with repetitions
    unit_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return int(self.train_responses.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    @property
    def n_channels(self) -> int:
        return 1 if self.train_images.ndim == 3 else int(self.train_images.shape[3])

    def save(self, path: Path) -> None:
        """Write the exact arrays trained on into the run (plain npz, no pickle)."""
        arrays = {"train_images": self.train_images, "train_responses": self.train_responses,
                  "test_images": self.test_images, "test_responses": self.test_responses,
                  "unit_names": np.array(self.unit_names, dtype=str)}
        if self.extra_images is not None:
            arrays["extra_images"] = self.extra_images
        if self.test_responses_reps is not None:
            arrays["test_responses_reps"] = self.test_responses_reps
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> PairedData:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                train_images=z["train_images"], train_responses=z["train_responses"],
                test_images=z["test_images"], test_responses=z["test_responses"],
                extra_images=z["extra_images"] if "extra_images" in z else None,
                test_responses_reps=z["test_responses_reps"] if "test_responses_reps" in z else None,
                unit_names=[str(u) for u in z["unit_names"]] if "unit_names" in z else [],
            )


def to_unit_float(images: np.ndarray, what: str) -> np.ndarray:
    """uint8 -> /255; float must already lie in [0, 1] (a silent rescale would hide a bug)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{what}: expected uint8 or float images, got {images.dtype}")
    lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
    if lo < -1e-6 or hi > 1 + 1e-6 or not np.isfinite(images).all():
        raise DataError(f"{what}: float images must lie in [0, 1] (got [{lo:.3g}, {hi:.3g}])")
    return np.clip(images.astype(np.float32), 0.0, 1.0)


def resize_images(images: np.ndarray, size: int, grayscale: bool) -> np.ndarray:
    """(N, H, W[, 3]) in [0, 1] -> (N, size, size[, 3]); anti-aliased (scikit-image)."""
    from skimage.transform import resize

    if grayscale and images.ndim == 4:
        images = images @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
    if images.shape[1:3] == (size, size):
        return images.astype(np.float32)
    out_shape = (images.shape[0], size, size) + tuple(images.shape[3:])
    return resize(images, out_shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def prepare_paired(raw: dict[str, np.ndarray], size: int, grayscale: bool, source: str) -> PairedData:
    """Validate shapes, average repetitions, bring images to [0, 1] at ``size`` x ``size``."""
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise DataError(f"{source}: missing arrays {missing} (paired format: {', '.join(REQUIRED_KEYS)})")
    images = {}
    for key in ("train_images", "test_images", "extra_images"):
        if key not in raw or raw[key] is None:
            continue
        arr = np.asarray(raw[key])
        if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3)):
            raise DataError(f"{source}: {key}: expected (N, H, W) or (N, H, W, 3), got {arr.shape}")
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        images[key] = resize_images(to_unit_float(arr, f"{source}: {key}"), size, grayscale)
    responses, reps = {}, None
    for key in ("train_responses", "test_responses"):
        arr = np.asarray(raw[key], dtype=np.float32)
        if arr.ndim == 3:
            if key == "test_responses":
                reps = arr
            arr = arr.mean(axis=1)
        if arr.ndim != 2:
            raise DataError(f"{source}: {key}: expected (N, M) or (N, R, M), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{source}: {key}: contains NaN or inf")
        responses[key] = arr
    for split in ("train", "test"):
        n_img, n_resp = len(images[f"{split}_images"]), len(responses[f"{split}_responses"])
        if n_img != n_resp:
            raise DataError(f"{source}: {split}_images has {n_img} rows but {split}_responses {n_resp}")
    m_train, m_test = responses["train_responses"].shape[1], responses["test_responses"].shape[1]
    if m_train != m_test:
        raise DataError(f"{source}: train_responses has {m_train} units but test_responses {m_test}")
    names = [str(u) for u in raw["unit_names"]] if "unit_names" in raw else [f"u{i}" for i in range(m_train)]
    return PairedData(
        train_images=images["train_images"], train_responses=responses["train_responses"],
        test_images=images["test_images"], test_responses=responses["test_responses"],
        extra_images=images.get("extra_images"), test_responses_reps=reps, unit_names=names,
        meta={"source": source},
    )


def load_paired_npz(path: Path, size: int = 64, grayscale: bool = True) -> PairedData:
    """Read a user's ``paired.npz`` (see the module docstring for its keys)."""
    path = require_file(path, "paired data file not found")
    raw = load_arrays(path, "paired data file")  # refuses pickles, naming the file
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an .npz archive of arrays, got a single .npy array")
    return prepare_paired(raw, size, grayscale, str(path))


def load_paired_dataset(kind: str, path: Path | None, size: int, grayscale: bool,
                        subject: int = 1) -> PairedData:
    """Dispatch on the dataset kind (or a ``.npz`` path) to the paired arrays."""
    if path is None:
        raise DataError(f"dataset.kind {kind!r}: give --data (a paired.npz, or the dataset's file)")
    path = Path(path)
    if path.is_dir() and (path / "paired.npz").is_file():
        path = path / "paired.npz"
    if path.suffix == ".npz" or kind in ("paired", "simulated"):
        return load_paired_npz(path, size, grayscale)
    if kind == "digits69":
        from neuralign.offline.generative.digits69 import load_digits69

        return prepare_paired(load_digits69(path), size, grayscale, str(path))
    if kind == "vim1":
        from neuralign.offline.generative.vim1 import load_vim1

        return prepare_paired(load_vim1(path, subject=subject), size, grayscale, str(path))
    raise DataError(f"dataset.kind {kind!r} has no paired image/response layout "
                    "(use kind: paired with a paired.npz)")
