"""paired.npz validation, the retina simulator, and the 69-digits / Vim-1 loaders on fixtures
written in their published layouts."""

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from neuralign.errors import DataError
from neuralign.generative_config import RetinaSimConfig
from neuralign.offline.generative.digits69 import load_digits69
from neuralign.offline.generative.metrics import decoding_metrics, nmse
from neuralign.offline.generative.paired import load_paired_dataset, load_paired_npz
from neuralign.offline.generative.vim1 import load_vim1
from neuralign.offline.simulator.retina import simulate_retina


def _paired(tmp_path, **over):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (10, 32, 32), dtype=np.uint8),
              "train_responses": rng.normal(size=(10, 5)),
              "test_images": rng.integers(0, 256, (4, 32, 32), dtype=np.uint8),
              "test_responses": rng.normal(size=(4, 3, 5))}
    arrays.update(over)
    path = tmp_path / "paired.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_paired_npz_resizes_and_averages_repetitions(tmp_path):
    path, raw = _paired(tmp_path)
    d = load_paired_npz(path, size=16)
    assert d.train_images.shape == (10, 16, 16) and d.train_images.dtype == np.float32
    assert 0 <= d.train_images.min() and d.train_images.max() <= 1
    np.testing.assert_allclose(d.test_responses, raw["test_responses"].mean(1), rtol=1e-6)
    assert d.test_responses_reps.shape == (4, 3, 5)
    rgb = load_paired_npz(_paired(tmp_path, train_images=np.random.rand(10, 32, 32, 3),
                                  test_images=np.random.rand(4, 32, 32, 3))[0], 32, grayscale=False)
    assert rgb.train_images.shape == (10, 32, 32, 3) and rgb.n_channels == 3


@pytest.mark.parametrize("over,match", [
    ({"train_responses": np.zeros((9, 5))}, "10 rows but train_responses 9"),
    ({"test_images": np.full((4, 32, 32), 2.0)}, r"must lie in \[0, 1\]"),
    ({"test_responses": np.zeros((4, 6))}, "5 units but test_responses 6"),
    ({"train_images": np.zeros((10, 32))}, r"expected \(N, H, W\)"),
])
def test_paired_npz_errors_name_the_problem(tmp_path, over, match):
    with pytest.raises(DataError, match=match):
        load_paired_npz(_paired(tmp_path, **over)[0])
    with pytest.raises(DataError, match="missing"):
        np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 8, 8)))
        load_paired_npz(tmp_path / "bad.npz")


def test_retina_simulator_is_deterministic_poisson_counts(tmp_path):
    cfg = RetinaSimConfig(n_cells=9, n_images=40, n_extra_images=5, train_repetitions=3,
                          test_repetitions=4)
    a = simulate_retina(cfg, tmp_path / "a", seed=3)
    b = simulate_retina(cfg, tmp_path / "b", seed=3)
    za, zb = np.load(a.paired_file), np.load(b.paired_file)
    for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key])
    assert za["test_responses"].shape == (4, 4, 9)
    assert za["train_responses"].shape == (36, 9)
    counts = za["test_responses"]
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))  # spike counts
    # the counts follow the images: the rates explain the test responses' variance
    rates, mean_counts = za["true_rates_test"], counts.mean(1)
    assert np.corrcoef(rates.ravel(), mean_counts.ravel())[0, 1] > 0.5
    d = load_paired_dataset("simulated", a.out_dir, 64, True)
    assert d.extra_images.shape == (5, 64, 64)


def test_retina_subunit_cells_integrate_nonlinearly():
    """The subunit cell answers to contrast of both signs inside its centre, so a linear model of
    its log-rate explains it less well than an LNP cell's; the LNP cell is exactly log-linear."""
    from sklearn.linear_model import RidgeCV

    from neuralign.offline.simulator.retina import add_subunits, dead_leaves, make_cells, rates

    images = dead_leaves(500, np.random.default_rng(1))
    flat = images.reshape(len(images), -1)
    r2 = {}
    for model in ("lnp", "subunit"):
        cells = make_cells(16, 1.0, np.random.default_rng(2))
        if model == "subunit":
            cells = add_subunits(cells)
        log_rate = np.log(rates(cells, images, 0.7))
        fit = RidgeCV(alphas=10.0 ** np.arange(-3, 4)).fit(flat[:400], log_rate[:400])
        r2[model] = fit.score(flat[400:], log_rate[400:])
        assert np.isclose(rates(cells, images, 0.7).mean(), 1.0, rtol=1.5)  # spiking, not silent
    assert r2["lnp"] > 0.95
    assert r2["subunit"] < r2["lnp"] - 0.2, r2


def test_digits69_loader_reads_the_published_layout(tmp_path):
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    # MATLAB column-major storage of each image, as in digit69_28x28.mat
    flat = digits.transpose(0, 2, 1).reshape(100, 784)
    fmri = rng.normal(size=(100, 3092))
    savemat(tmp_path / "digit69_28x28.mat", {"stimTrn": flat[:90], "stimTest": flat[90:],
                                             "fmriTrn": fmri[:90], "fmriTest": fmri[90:]})
    raw = load_digits69(tmp_path / "digit69_28x28.mat")
    np.testing.assert_array_equal(raw["train_images"], digits[:90])
    assert raw["test_responses"].shape == (10, 3092)
    d = load_paired_dataset("digits69", tmp_path / "digit69_28x28.mat", 64, True)
    assert d.train_images.shape == (90, 64, 64) and d.n_units == 3092
    savemat(tmp_path / "other.mat", {"X": flat})
    with pytest.raises(DataError, match="missing"):
        load_digits69(tmp_path / "other.mat")


@pytest.mark.parametrize("hdf5", [True, False])
def test_vim1_loader_reads_the_published_layout(tmp_path, hdf5):
    rng = np.random.default_rng(2)
    stim_trn, stim_val = rng.normal(size=(12, 16, 16)), rng.normal(size=(3, 16, 16))
    roi = np.array([1, 2, 3, 6, 0, 1])
    trn, val = rng.normal(size=(6, 12)), rng.normal(size=(6, 3))
    trn[5, 0] = np.nan  # voxels with NaN responses are dropped
    if hdf5:  # v7.3: HDF5 with MATLAB dimensions reversed
        with h5py.File(tmp_path / "Stimuli.mat", "w") as f:
            f["stimTrn"], f["stimVal"] = stim_trn.T, stim_val.T
        with h5py.File(tmp_path / "EstimatedResponses.mat", "w") as f:
            f["dataTrnS1"], f["dataValS1"], f["roiS1"] = trn.T, val.T, roi[None].T.T
    else:
        savemat(tmp_path / "Stimuli.mat", {"stimTrn": stim_trn, "stimVal": stim_val})
        savemat(tmp_path / "EstimatedResponses.mat", {"dataTrnS1": trn, "dataValS1": val, "roiS1": roi})
    raw = load_vim1(tmp_path, subject=1)
    assert raw["train_responses"].shape == (12, 3)  # voxels 0, 1, 2 (V1-V3, finite)
    np.testing.assert_allclose(raw["test_responses"], val[:3].T, rtol=1e-6)
    lo, hi = min(stim_trn.min(), stim_val.min()), max(stim_trn.max(), stim_val.max())
    np.testing.assert_allclose(raw["train_images"], (stim_trn - lo) / (hi - lo), atol=1e-6)
    with pytest.raises(DataError, match="missing"):
        load_vim1(tmp_path, subject=2)


def test_metrics_on_known_cases():
    rng = np.random.default_rng(3)
    imgs = rng.random((5, 16, 16)).astype(np.float32)
    perfect = decoding_metrics(imgs, imgs)
    assert perfect["mse"] == 0 and perfect["pcc"] == pytest.approx(1) and perfect["ssim"] == pytest.approx(1)
    noisy = decoding_metrics(np.clip(imgs + 0.2 * rng.normal(size=imgs.shape), 0, 1), imgs)
    assert noisy["ssim"] < 0.9 and noisy["mse"] > 0
    h = rng.normal(size=(50, 4))
    assert nmse(np.tile(h.mean(0), (50, 1)), h) == pytest.approx(1.0)
    assert nmse(h, h) == 0.0
