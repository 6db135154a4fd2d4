"""`neuralign train` on a THINGS-EEG2-layout folder with each feature layout docs/tutorials/things_eeg2.md names.

NICE directories and ATM torch files store no image ids: their rows follow the dataset's own
order (training images then test images, as image_metadata.npy lists them). Training through the
CLI must work with all three layouts and give the same prepared features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralign.offline.feature_files import save_features_npz
from neuralign.offline.prepare import Prepared
from tests.offline.fixtures import write_image_metadata, write_preprocessed
from tests.offline.test_pipeline import cli

N_TRAIN_CONCEPTS, PER_TRAIN, N_TEST, DIM = 10, 2, 5, 16
SETS = ["training.epochs=1", "training.batch_size=8", "training.n_val_trials=4",
        "model.k=4", "training.calibrate_encoding=false"]


@pytest.fixture(scope="module")
def things_dir(tmp_path_factory) -> tuple[Path, dict, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("things")
    sub = root / "sub-01"
    meta = write_image_metadata(root / "image_set", N_TRAIN_CONCEPTS, PER_TRAIN, N_TEST,
                                write_images=False)
    write_preprocessed(sub, "nice", n_train=N_TRAIN_CONCEPTS * PER_TRAIN, n_test=N_TEST)
    rng = np.random.default_rng(1)
    f_train = rng.standard_normal((N_TRAIN_CONCEPTS * PER_TRAIN, DIM)).astype(np.float32)
    f_test = rng.standard_normal((N_TEST, DIM)).astype(np.float32)
    return sub, meta, f_train, f_test


def _ids(meta: dict) -> tuple[list[str], list[str]]:
    stem = [f.rsplit(".", 1)[0] for f in meta["train_img_files"]]
    return stem, [f.rsplit(".", 1)[0] for f in meta["test_img_files"]]


def _write(fmt: str, where: Path, meta: dict, f_train: np.ndarray, f_test: np.ndarray) -> Path:
    if fmt == "nice":
        where.mkdir()
        np.save(where / "clip_feature_maps_training.npy", f_train)
        np.save(where / "clip_feature_maps_test.npy", f_test)
        return where
    if fmt == "atm":
        path = where.with_suffix(".pt")
        torch.save({"img_features": torch.from_numpy(np.concatenate([f_train, f_test])),
                    "text_features": None}, path)
        return path
    tr, te = _ids(meta)
    # NPZ rows in a shuffled order: ids, not positions, decide
    order = np.random.default_rng(0).permutation(len(tr) + len(te))
    return save_features_npz(where.with_suffix(".npz"), np.concatenate([f_train, f_test])[order],
                             list(np.asarray(tr + te)[order]))


@pytest.mark.parametrize("fmt", ["nice", "atm", "npz"])
def test_train_and_evaluate_with_feature_file(things_dir, tmp_path, fmt):
    sub, meta, f_train, f_test = things_dir
    feats = _write(fmt, tmp_path / f"features_{fmt}", meta, f_train, f_test)
    run = tmp_path / "run"
    cli("train", "--config", "things_eeg2", "--data", str(sub), "--features", str(feats),
        "--out", str(run), "--device", "cpu", *[a for s in SETS for a in ("--set", s)])
    prep = Prepared.load(run / "prepared.npz")
    np.testing.assert_allclose(prep.f_train, f_train, rtol=1e-6)
    np.testing.assert_allclose(prep.f_test, f_test, rtol=1e-6)
    cli("evaluate", "--run", str(run), "--no-masks", "--json", str(tmp_path / "rep.json"))
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert 0.0 <= rep["retrieval"]["top1"] <= 1.0
