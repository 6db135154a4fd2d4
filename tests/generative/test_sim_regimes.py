"""The fMRI-like simulator regimes (pRF voxels on dead leaves, synthetic 6/9 digits): paired files,
determinism, spatially structured responses, HRF carry-over and a decodable but noisy signal."""

import json

import numpy as np
import pytest

from neuralign.generative_config import DigitsSimConfig, VoxelResponseConfig, VoxelSimConfig
from neuralign.offline.generative.metrics import ridge_pixel_decoder
from neuralign.offline.generative.paired import load_paired_npz
from neuralign.offline.simulator.digits import simulate_digits
from neuralign.offline.simulator.voxels import hrf_kernel, simulate_voxels

SMALL = dict(n_voxels=500, n_train=300, n_test=30, train_repetitions=2, test_repetitions=6,
             n_extra_images=4)
TINY = dict(n_voxels=100, n_train=60, n_test=30, train_repetitions=2, test_repetitions=6,
            n_extra_images=3)


@pytest.fixture(scope="module")
def voxel_sim(tmp_path_factory):
    return simulate_voxels(VoxelSimConfig(**SMALL), tmp_path_factory.mktemp("vox"), seed=5)


def test_voxel_regime_writes_the_paired_format(voxel_sim):
    d = load_paired_npz(voxel_sim.paired_file)
    assert d.train_images.shape == (300, 64, 64) and d.test_images.shape == (30, 64, 64)
    assert d.n_units == 500 > len(d.train_images)  # more voxels than training images
    assert d.test_responses_reps.shape == (30, 6, 500) and d.extra_images.shape == (4, 64, 64)
    assert d.unit_names[0] == "vox0000" and d.unit_names[-1] == "vox0499"
    assert (d.train_responses < 0).any() and np.isfinite(d.train_responses).all()  # signed betas
    manifest = json.loads((voxel_sim.out_dir / "simulation.json").read_text())
    assert manifest["modality"] == "voxels" and manifest["hrf_kernel"][0] == 1.0
    assert "pRF" in manifest["model"]


def test_same_seed_same_files_and_images_have_their_own_stream(tmp_path):
    cfg = VoxelSimConfig(**TINY)
    first = np.load(simulate_voxels(cfg, tmp_path / "a", seed=5).paired_file)
    again = np.load(simulate_voxels(cfg, tmp_path / "b", seed=5).paired_file)
    assert sorted(first.files) == sorted(again.files)
    for key in first.files:
        np.testing.assert_array_equal(first[key], again[key])
    other = np.load(simulate_voxels(cfg, tmp_path / "c", seed=6).paired_file)
    assert not np.array_equal(first["train_images"], other["train_images"])
    assert not np.allclose(first["test_responses"], other["test_responses"])
    # Changing the voxels leaves the images of a seed alone.
    noisier = VoxelSimConfig(**{**TINY, "n_voxels": 50}, response=VoxelResponseConfig(noise_sd=2.0))
    moved = np.load(simulate_voxels(noisier, tmp_path / "d", seed=5).paired_file)
    np.testing.assert_array_equal(first["train_images"], moved["train_images"])
    np.testing.assert_array_equal(first["extra_images"], moved["extra_images"])


def test_neighbouring_voxels_correlate_more_than_distant_ones(voxel_sim):
    z = np.load(voxel_sim.paired_file)
    r = np.corrcoef(z["train_responses"].T)
    dist = np.linalg.norm(z["voxel_centers"][:, None] - z["voxel_centers"][None], axis=-1)
    off = ~np.eye(len(dist), dtype=bool)
    near, far = r[off & (dist < 3.0)].mean(), r[off & (dist > 25.0)].mean()
    assert near > far + 0.2, (near, far)


def _carry_over(paired_file) -> float:
    """Mean over voxels of the correlation between a test repetition's deviation from its image's
    mean and the noise-free drive of the trial presented just before it."""
    z = np.load(paired_file)
    reps, pos, order, drive = z["test_responses"], z["test_trial_pos"], z["trial_image"], z["true_drive"]
    resid = reps - reps.mean(1, keepdims=True)
    keep = pos > 0
    prev = drive[order[pos[keep] - 1]]
    res = resid[keep]
    prev, res = prev - prev.mean(0), res - res.mean(0)
    r = (prev * res).sum(0) / np.sqrt((prev ** 2).sum(0) * (res ** 2).sum(0))
    return float(r.mean())


def test_hrf_blurs_a_trial_with_the_previous_trials_drive(tmp_path):
    k = hrf_kernel(4.0, 4)
    assert k[0] == pytest.approx(1.0) and 0.25 < k[1] < 0.4 and k[2] < 0  # undershoot
    with_hrf = _carry_over(simulate_voxels(VoxelSimConfig(**TINY), tmp_path / "hrf", seed=5).paired_file)
    cfg = VoxelSimConfig(**TINY, response=VoxelResponseConfig(hrf_lags=1))
    without = _carry_over(simulate_voxels(cfg, tmp_path / "nohrf", seed=5).paired_file)
    assert with_hrf > 0.1 and abs(without) < 0.05, (with_hrf, without)


def test_ridge_decoder_gets_meaningful_but_imperfect_reconstructions(voxel_sim):
    d = load_paired_npz(voxel_sim.paired_file)
    dec = ridge_pixel_decoder(d.train_responses, d.train_images, d.test_responses)
    a = dec.reshape(len(dec), -1) - dec.reshape(len(dec), -1).mean(1, keepdims=True)
    b = d.test_images.reshape(len(dec), -1) - d.test_images.reshape(len(dec), -1).mean(1, keepdims=True)
    pcc = float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())
    assert 0.1 < pcc < 0.85, pcc


def test_digits_regime_small_n_sixes_and_nines(tmp_path):
    cfg = DigitsSimConfig(n_voxels=300, n_train=40, n_test=10, test_repetitions=3, n_extra_images=6)
    sim = simulate_digits(cfg, tmp_path / "d", seed=2)
    d = load_paired_npz(sim.paired_file)
    assert d.n_units == 300 > len(d.train_images) == 40
    assert d.test_responses_reps.shape == (10, 3, 300) and d.extra_images.shape == (6, 64, 64)
    z = np.load(sim.paired_file)
    labels = np.concatenate([z["train_labels"], z["test_labels"]])
    assert set(labels) == {6, 9} and (labels == 6).sum() == 25
    # bright strokes on a dark background, neither empty nor filled
    ink = (d.train_images > 0.5).mean(axis=(1, 2))
    assert np.median(d.train_images) < 0.05 and (ink > 0.03).all() and (ink < 0.4).all()
    again = np.load(simulate_digits(cfg, tmp_path / "e", seed=2).paired_file)
    for key in z.files:
        np.testing.assert_array_equal(z[key], again[key])
    assert json.loads((sim.out_dir / "simulation.json").read_text())["modality"] == "digits"
