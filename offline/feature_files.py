"""Image-feature files as the decoding literature stores them, reordered to neuralign's image ids.

Supported layouts (the formats the decoding literature publishes; docs/tutorials/things_eeg2.md):
- NPZ ``{features, image_ids}`` (+ optional ``prototypes``) — the BrainAE release and neuralign's own;
- NICE: a directory with ``clip_feature_maps_training.npy`` / ``clip_feature_maps_test.npy``
  shaped (n, 1, d) in THINGS-EEG2 metadata order, plus optional ``center_clip.npy``
  (n_test_concepts, d) -> prototypes. The files carry no ids: the caller passes the ordered ids
  (``ordered_ids``: training ids then test ids, as in ``image_metadata.npy``);
- ATM: a torch file ``{'text_features', 'img_features'}`` (rows in the caller's ``ordered_ids``
  order), loaded with ``torch.load(weights_only=True)`` — never unpickling arbitrary objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuralign.errors import DataError
from neuralign.npy_files import load_arrays

log = logging.getLogger(__name__)

NICE_TRAIN = "clip_feature_maps_training.npy"
NICE_TEST = "clip_feature_maps_test.npy"
NICE_CENTER = "center_clip.npy"


@dataclass
class FeatureTable:
    """Features (n, d) float32 aligned row by row with ``image_ids``."""

    features: np.ndarray
    image_ids: list[str]
    prototypes: np.ndarray | None = None  # (n_test_concepts, d), classification templates
    text_features: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def _as_2d(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[1] == 1:
        arr = arr[:, 0, :]
    if arr.ndim != 2:
        raise DataError(
            f"{path}: {key}: expected a (n, d) or (n, 1, d) array, got shape {arr.shape}"
        )
    return arr.astype(np.float32, copy=False)


def reorder(
    table_ids: Sequence[str], features: np.ndarray, wanted: Sequence[str], source: Path | str
) -> np.ndarray:
    """Rows of ``features`` in the order of ``wanted``; DataError listing the ids it lacks."""
    index = {str(i): k for k, i in enumerate(table_ids)}
    missing = [str(i) for i in wanted if str(i) not in index]
    if missing:
        raise DataError(
            f"{source}: image_ids: {len(missing)} of {len(wanted)} requested image ids have no "
            f"features (first: {missing[:5]})"
        )
    return features[[index[str(i)] for i in wanted]]


def load_features(
    path: str | Path,
    image_ids: Sequence[str] | None = None,
    ordered_ids: Sequence[str] | None = None,
) -> FeatureTable:
    """Load a feature file and return it reordered to ``image_ids`` (all rows if None).

    ``ordered_ids`` names the rows of id-less files (NICE .npy, ATM torch files).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: feature file or directory not found")
    prototypes = None
    text = None
    if path.is_dir():
        ids, feats, prototypes = _load_nice_dir(path, ordered_ids)
    elif path.suffix == ".npz":
        ids, feats, prototypes = _load_npz(path)
    elif path.suffix in (".pt", ".pth"):
        ids, feats, text = _load_torch(path, ordered_ids)
    elif path.suffix == ".npy":
        ids, feats, prototypes = _load_nice_dir(path.parent, ordered_ids, only=path)
    else:
        raise DataError(
            f"{path}: unknown feature file type (expected .npz, .pt/.pth, .npy or a NICE directory)"
        )
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: image_ids: ids are not unique")
    if image_ids is not None:
        feats = reorder(ids, feats, image_ids, path)
        if text is not None:
            text = reorder(ids, text, image_ids, path)
        ids = [str(i) for i in image_ids]
    return FeatureTable(
        features=np.ascontiguousarray(feats, dtype=np.float32),
        image_ids=list(ids),
        prototypes=prototypes,
        text_features=text,
    )


def _load_npz(path: Path) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    z = load_arrays(path, "feature file")
    if not isinstance(z, dict):
        raise DataError(f"{path}: expected an .npz archive of arrays, got a single .npy array")
    for key in ("features", "image_ids"):
        if key not in z:
            raise DataError(
                f"{path}: missing key {key!r} (expected 'features' and 'image_ids', found {sorted(z)})"
            )
    feats = _as_2d(z["features"], path, "features")
    ids = [str(i) for i in z["image_ids"].tolist()]
    protos = _as_2d(z["prototypes"], path, "prototypes") if "prototypes" in z else None
    if len(ids) != feats.shape[0]:
        raise DataError(f"{path}: image_ids: {len(ids)} ids for {feats.shape[0]} feature rows")
    if protos is not None and protos.shape[1] != feats.shape[1]:
        raise DataError(
            f"{path}: prototypes: dimension {protos.shape[1]} != features dimension {feats.shape[1]}"
        )
    return ids, feats, protos


def _need_ids(path: Path, ordered_ids: Sequence[str] | None, n: int) -> list[str]:
    if ordered_ids is None:
        raise DataError(
            f"{path}: this file stores no image ids; pass ordered_ids (the THINGS-EEG2 metadata order: "
            f"training ids then test ids)"
        )
    if len(ordered_ids) != n:
        raise DataError(
            f"{path}: image_ids: file has {n} feature rows but {len(ordered_ids)} ordered ids were given"
        )
    return [str(i) for i in ordered_ids]


def _load_nice_dir(
    root: Path, ordered_ids: Sequence[str] | None, only: Path | None = None
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    parts = []
    files = [only] if only is not None else [root / NICE_TRAIN, root / NICE_TEST]
    for f in files:
        if f.exists():
            parts.append(_as_2d(load_arrays(f, "feature file"), f, "array"))
    if not parts:
        raise DataError(f"{root}: no {NICE_TRAIN} or {NICE_TEST} found")
    feats = np.concatenate(parts, axis=0)
    if len({p.shape[1] for p in parts}) != 1:
        raise DataError(f"{root}: training and test feature files differ in dimension")
    ids = _need_ids(root if only is None else only, ordered_ids, feats.shape[0])
    protos = None
    center = root / NICE_CENTER
    if center.exists():
        protos = _as_2d(load_arrays(center, "feature file"), center, "array")
        if protos.shape[1] != feats.shape[1]:
            raise DataError(
                f"{center}: dimension {protos.shape[1]} != features dimension {feats.shape[1]}"
            )
    return ids, feats, protos


def _load_torch(
    path: Path, ordered_ids: Sequence[str] | None
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused or corrupt file
        raise DataError(
            f"{path}: cannot read as a weights-only torch file ({err.__class__.__name__}: {err})"
        ) from None
    if not isinstance(obj, dict) or "img_features" not in obj:
        keys = list(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(
            f"{path}: missing key 'img_features' (expected {{'text_features','img_features'}}, found {keys})"
        )
    feats = _as_2d(obj["img_features"].float().numpy(), path, "img_features")
    text = None
    if "text_features" in obj and obj["text_features"] is not None:
        text = _as_2d(obj["text_features"].float().numpy(), path, "text_features")
        if text.shape[0] != feats.shape[0]:
            log.info(
                "%s: text_features has %d rows (one per concept?), not per image: kept aside",
                path,
                text.shape[0],
            )
            text = None
    ids = _need_ids(path, ordered_ids, feats.shape[0])
    return ids, feats, text


def save_features_npz(
    path: str | Path,
    features: np.ndarray,
    image_ids: Sequence[str],
    prototypes: np.ndarray | None = None,
) -> Path:
    """Write neuralign's feature layout: NPZ {features float32, image_ids str[, prototypes]}."""
    path = Path(path)
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(image_ids):
        raise DataError(
            f"{path}: features must be (n_ids={len(image_ids)}, d), got shape {feats.shape}"
        )
    arrays: dict[str, np.ndarray] = {
        "features": feats,
        "image_ids": np.asarray([str(i) for i in image_ids]),
    }
    if prototypes is not None:
        arrays["prototypes"] = np.asarray(prototypes, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
