"""Feature files in the NPZ, NICE (.npy) and ATM (torch) layouts, reordered to requested ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neuralign.errors import DataError
from neuralign.offline.feature_files import load_features, save_features_npz


def _feats(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_npz_roundtrip_and_reorder(tmp_path: Path) -> None:
    ids = [f"img{i}" for i in range(5)]
    f = _feats(5)
    protos = _feats(2, seed=1)
    path = save_features_npz(tmp_path / "feat.npz", f, ids, prototypes=protos)
    table = load_features(path, ["img3", "img0"])
    assert table.image_ids == ["img3", "img0"] and table.features.dtype == np.float32
    np.testing.assert_array_equal(table.features, f[[3, 0]])
    np.testing.assert_array_equal(table.prototypes, protos)
    assert load_features(path).image_ids == ids


def test_mismatched_ids_lists_missing(tmp_path: Path) -> None:
    path = save_features_npz(tmp_path / "feat.npz", _feats(3), ["a", "b", "c"])
    with pytest.raises(DataError, match=r"feat\.npz: image_ids: 2 of 3 requested .*\['x', 'y'\]"):
        load_features(path, ["a", "x", "y"])


def test_npz_missing_key_and_bad_ndim(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", features=_feats(2))
    with pytest.raises(DataError, match=r"a\.npz: missing key 'image_ids'"):
        load_features(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", features=np.zeros((2, 3, 4, 5)), image_ids=np.array(["p", "q"]))
    with pytest.raises(DataError, match=r"b\.npz: features: expected a \(n, d\)"):
        load_features(tmp_path / "b.npz")


def test_nice_directory(tmp_path: Path) -> None:
    tr, te = _feats(6, 8), _feats(2, 8, seed=2)
    np.save(tmp_path / "clip_feature_maps_training.npy", tr[:, None, :])
    np.save(tmp_path / "clip_feature_maps_test.npy", te[:, None, :])
    np.save(tmp_path / "center_clip.npy", _feats(2, 8, seed=3))
    ordered = [f"t{i}" for i in range(6)] + ["q0", "q1"]
    table = load_features(tmp_path, ["q1", "t2"], ordered_ids=ordered)
    np.testing.assert_array_equal(table.features, np.stack([te[1], tr[2]]))
    assert table.prototypes is not None and table.prototypes.shape == (2, 8)
    with pytest.raises(DataError, match="pass ordered_ids"):
        load_features(tmp_path, ["t0"])
    with pytest.raises(DataError, match="8 feature rows but 3 ordered ids"):
        load_features(tmp_path, ["t0"], ordered_ids=["t0", "t1", "t2"])


def test_atm_torch_file(tmp_path: Path) -> None:
    img = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    path = tmp_path / "ViT-H-14_features_train.pt"
    torch.save({"text_features": torch.randn(4, 5), "img_features": img}, path)
    table = load_features(path, ["b", "d"], ordered_ids=["a", "b", "c", "d"])
    np.testing.assert_allclose(table.features, img.numpy()[[1, 3]])
    assert table.text_features is not None and table.text_features.shape == (2, 5)
    torch.save({"features": img}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=r"bad\.pt: missing key 'img_features'"):
        load_features(tmp_path / "bad.pt", ordered_ids=list("abcd"))


def test_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_features(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown feature file type"):
        load_features(tmp_path / "x.csv")
