"""MVNN whitening: checked by direct computation, not by re-running the implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg

from neuralign.errors import DataError
from neuralign.offline.mvnn import (
    NoiseNormalizer,
    apply_whitening,
    fit_mvnn,
    inverse_sqrt,
    noise_covariance,
)


def _mixing(n_ch: int, rng: np.random.Generator) -> np.ndarray:
    """Mixing whose covariance has eigenvalues 1..6: correlated, far from white, not degenerate."""
    q, _ = np.linalg.qr(rng.standard_normal((n_ch, n_ch)))
    return q @ np.diag(np.sqrt(np.linspace(1, 6, n_ch))) @ q.T


def _data(n_img=6, n_rep=400, n_ch=6, n_t=8, seed=0) -> tuple[np.ndarray, np.ndarray]:
    # Ledoit-Wolf shrinks towards a scaled identity; many observations per covariance keep that
    # (intended) bias small enough for a tolerance check against the identity.
    rng = np.random.default_rng(seed)
    mix = _mixing(n_ch, rng)
    signal = rng.standard_normal((n_img, 1, n_ch, n_t)) * 3  # per-condition evoked response
    noise = np.einsum("ij,abjt->abit", mix, rng.standard_normal((n_img, n_rep, n_ch, n_t)))
    return signal + noise, mix @ mix.T


def _noise_cov_direct(x: np.ndarray) -> np.ndarray:
    """Covariance of residuals after removing per-condition means (unbiased)."""
    res = x - x.mean(axis=1, keepdims=True)
    n_img, n_rep, n_ch, n_t = x.shape
    flat = res.transpose(2, 0, 1, 3).reshape(n_ch, -1)
    return flat @ flat.T / (n_img * (n_rep - 1) * n_t)


def test_time_mode_whitens_training_noise_to_identity() -> None:
    x, true_cov = _data()
    w = fit_mvnn(x, mode="time")
    assert w.shape == (6, 6)
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    cov_before = _noise_cov_direct(x)
    assert np.abs(cov_before - np.eye(6)).max() > 0.9  # the test data are far from white
    cov_after = _noise_cov_direct(apply_whitening(w, x))
    np.testing.assert_allclose(cov_after, np.eye(6), atol=0.15)
    # the signal (per-condition means) is not what is whitened: fitting on signal+noise or on
    # noise alone gives nearly the same W
    w_noise = fit_mvnn(x - x.mean(axis=1, keepdims=True), mode="time")
    np.testing.assert_allclose(w, w_noise, atol=1e-6)


def test_epochs_mode_on_noise_only_data() -> None:
    rng = np.random.default_rng(1)
    mix = _mixing(5, rng)
    x = np.einsum("ij,abjt->abit", mix, rng.standard_normal((20, 2, 5, 2000)))
    w = fit_mvnn(x, mode="epochs")
    flat = apply_whitening(w, x).transpose(2, 0, 1, 3).reshape(5, -1)
    np.testing.assert_allclose(np.cov(flat), np.eye(5), atol=0.05)


def test_inverse_sqrt_matches_direct_computation() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((7, 7))
    sigma = a @ a.T + 0.5 * np.eye(7)
    w = inverse_sqrt(sigma)
    direct = np.linalg.inv(scipy.linalg.sqrtm(sigma).real)
    np.testing.assert_allclose(w, direct, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(w @ sigma @ w, np.eye(7), atol=1e-9)
    np.testing.assert_allclose(w, w.T, atol=1e-12)


def test_noise_covariance_is_ledoit_wolf_average() -> None:
    from sklearn.covariance import LedoitWolf

    x, _ = _data(n_img=3, n_rep=5, n_ch=4, n_t=6, seed=3)
    expected = np.mean(
        [
            np.mean([LedoitWolf().fit(x[i, :, :, t]).covariance_ for t in range(6)], axis=0)
            for i in range(3)
        ],
        axis=0,
    )
    np.testing.assert_allclose(noise_covariance(x, "time"), expected, rtol=1e-10)


def test_floor_prevents_blow_up_on_rank_deficient_data() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 4, 8, 300))
    x = x - x.mean(axis=2, keepdims=True)  # average reference: rank 7 of 8
    sigma = noise_covariance(x, "epochs")
    flat = x.transpose(2, 0, 1, 3).reshape(8, -1)
    exact = np.cov(flat)
    assert np.linalg.eigvalsh(exact).min() < 1e-10 * np.linalg.eigvalsh(exact).max()
    floor = 1e-3
    for cov in (exact, sigma):
        w = inverse_sqrt(cov, eigenvalue_floor=floor)
        assert np.all(np.isfinite(w))
        # no gain above 1/sqrt(floor * largest eigenvalue)
        assert np.linalg.norm(w, 2) <= 1 / np.sqrt(floor * np.linalg.eigvalsh(cov).max()) * (
            1 + 1e-9
        )
    w = fit_mvnn(x, mode="epochs", eigenvalue_floor=floor)
    y = apply_whitening(w, x)
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 50


def test_time_mode_needs_repetitions() -> None:
    with pytest.raises(DataError, match="at least 2 repetitions"):
        fit_mvnn(np.zeros((3, 1, 4, 10)), mode="time")
    with pytest.raises(DataError, match="4-D"):
        fit_mvnn(np.zeros((3, 4, 10)))
    with pytest.raises(DataError, match="mode"):
        fit_mvnn(np.zeros((3, 2, 4, 10)), mode="bogus")  # type: ignore[arg-type]


def test_apply_whitening_is_spatial_on_any_leading_shape() -> None:
    rng = np.random.default_rng(5)
    w = inverse_sqrt(np.cov(rng.standard_normal((4, 50))))
    x = rng.standard_normal((2, 3, 4, 11)).astype(np.float32)
    y = apply_whitening(w, x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y[1, 2], w @ x[1, 2], rtol=1e-5)
    np.testing.assert_allclose(apply_whitening(w, x[0, 0]), y[0, 0], rtol=1e-6)
    # causal: a prefix of the input gives the same prefix of the output
    np.testing.assert_allclose(apply_whitening(w, x[..., :5]), y[..., :5], rtol=1e-6)
    with pytest.raises(DataError, match="4 channels"):
        apply_whitening(w, np.zeros((3, 10)))


def test_normalizer_roundtrip_json_and_zscore() -> None:
    x, _ = _data(n_img=10, n_rep=3, n_ch=4, n_t=30, seed=6)
    norm = NoiseNormalizer.fit(x, method="mvnn", mode="epochs")
    back = NoiseNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert back.method == "mvnn" and back.mode == "epochs"
    np.testing.assert_array_equal(back.w, norm.w)
    np.testing.assert_allclose(back.apply(x), norm.apply(x))

    z = NoiseNormalizer.fit(x + 7.0, method="zscore")
    y = z.apply(x + 7.0)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 3)), 1, atol=1e-4)
    z2 = NoiseNormalizer.from_dict(json.loads(json.dumps(z.to_dict())))
    np.testing.assert_allclose(z2.apply(x), z.apply(x), rtol=1e-6)
    with pytest.raises(DataError, match="'w' must be a square"):
        NoiseNormalizer.from_dict({"method": "mvnn", "w": [[1.0, 2.0]]})
    with pytest.raises(DataError, match="missing key 'w'"):
        NoiseNormalizer.from_dict({"method": "mvnn"})
