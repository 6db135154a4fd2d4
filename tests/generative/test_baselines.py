"""Tuned baselines: the fine ridge grid and its LOO choice, the floors (mean image, retrieved
template), and the LNP encoder with cross-validated PCA size and penalty."""

import numpy as np
import pytest

from neuralign.offline.generative import metrics as M
from neuralign.offline.generative.baselines import (
    RIDGE_ALPHAS_FINE,
    lnp_encoder_cv,
    mean_image,
    retrieved_template,
    ridge_into_codes,
    tuned_ridge,
)
from neuralign.offline.simulator.retina import dead_leaves, make_cells, rates


@pytest.fixture(scope="module")
def retina():
    """200 train + 40 test 32 x 32 images, 16 LNP cells, rates and Poisson counts."""
    rng = np.random.default_rng(0)
    images = dead_leaves(240, rng, size=32)
    cells = make_cells(16, 2.0, rng, size=32)
    lam = rates(cells, images, gain=0.7)
    counts = rng.poisson(lam).astype(np.float32)
    return images[:200], counts[:200], images[200:], counts[200:], lam[200:]


def test_fine_grid():
    assert len(RIDGE_ALPHAS_FINE) == 33
    assert RIDGE_ALPHAS_FINE[0] == pytest.approx(1e-2) and RIDGE_ALPHAS_FINE[-1] == pytest.approx(1e6)
    np.testing.assert_allclose(np.diff(np.log10(RIDGE_ALPHAS_FINE)), 0.25)


def _linear_images(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    resp = rng.normal(size=(300, 20))
    weights = rng.normal(size=(20, 8, 8)) * 0.02
    images = 0.5 + np.einsum("nm,mij->nij", resp, weights)
    noisy = resp + rng.normal(0, noise, resp.shape)  # the decoder sees noisy responses
    return noisy[:250], images[:250], noisy[250:], images[250:]


def test_tuned_ridge_picks_larger_alpha_on_noisier_data():
    clean, noisy = tuned_ridge(*_linear_images(0.1)[:3]), tuned_ridge(*_linear_images(3.0)[:3])
    assert noisy.alpha > 10 * clean.alpha
    assert clean.alpha in RIDGE_ALPHAS_FINE and noisy.alpha in RIDGE_ALPHAS_FINE
    assert clean.images.dtype == np.float32 and clean.images.shape == (50, 8, 8)
    assert clean.images.min() >= 0 and clean.images.max() <= 1
    assert "LOO" in clean.cv and clean.alpha_per_pixel is None


def test_tuned_ridge_per_pixel_and_metrics_delegation():
    tr_r, tr_i, te_r, te_i = _linear_images(1.0)
    per = tuned_ridge(tr_r, tr_i, te_r, per_pixel=True)
    assert per.alpha_per_pixel.shape == (64,)
    assert set(per.alpha_per_pixel) <= set(RIDGE_ALPHAS_FINE)
    assert per.alpha == pytest.approx(np.median(per.alpha_per_pixel))
    single = tuned_ridge(tr_r, tr_i, te_r)
    np.testing.assert_array_equal(M.ridge_pixel_decoder(tr_r, tr_i, te_r), single.images)
    assert M.decoding_metrics(single.images, te_i)["pcc"] > 0.5


def test_ridge_into_codes_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    resp = rng.normal(size=(200, 10))
    codes = resp @ rng.normal(size=(10, 4)) + 0.01 * rng.normal(size=(200, 4))
    pred = ridge_into_codes(resp[:150], codes[:150], resp[150:])
    assert pred.shape == (50, 4)
    assert np.abs(pred - codes[150:]).max() < 0.1


def test_floors(retina):
    tr_i, tr_r, te_i, te_r, _ = retina
    mean = mean_image(tr_i, 7)
    assert mean.shape == (7,) + tr_i.shape[1:]
    np.testing.assert_allclose(mean[3], tr_i.mean(axis=0), atol=1e-6)
    picked = [5, 17, 0, 199]
    out = retrieved_template(tr_r, tr_i, tr_r[picked])
    np.testing.assert_array_equal(out, tr_i[picked])
    out = retrieved_template(tr_r, tr_i, te_r)
    assert out.shape == te_i.shape
    assert all(any(np.array_equal(o, t) for t in tr_i) for o in out)


def test_lnp_encoder_cv_chooses_from_its_grid_and_beats_a_constant(retina):
    tr_i, tr_r, te_i, te_r, te_rates = retina
    components, alphas = (5, 10, 40), (1e-2, 1e-1, 1.0)
    pred, chosen = lnp_encoder_cv(tr_i, tr_r, te_i, components=components, alphas=alphas)
    assert chosen.n_components in components and chosen.alpha in alphas
    assert chosen.deviance.shape == (3, 3) and np.isfinite(chosen.deviance).all()
    assert chosen.deviance[components.index(chosen.n_components),
                           alphas.index(chosen.alpha)] == chosen.deviance.min()
    assert pred.shape == te_r.shape and (pred > 0).all()

    def deviance(mu):
        y = te_r
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0)
        return (2 * (ylogy - (y - mu))).mean()

    constant = np.broadcast_to(tr_r.mean(axis=0), te_r.shape)
    assert deviance(pred) < 0.9 * deviance(constant)
    assert np.mean(M.pearson_columns(pred, te_rates)) > 0.5


def test_lnp_fit_matches_sklearn_poisson_regressor(retina):
    """The vectorised GLM solves PoissonRegressor's problem: same predictions as lnp_encoder."""
    tr_i, tr_r, te_i, *_ = retina
    pred, chosen = lnp_encoder_cv(tr_i, tr_r, te_i, components=(10,), alphas=(1e-1,))
    ref = M.lnp_encoder(tr_i, tr_r, te_i, n_components=10, alpha=1e-1)
    np.testing.assert_allclose(pred, ref, rtol=1e-3, atol=1e-4)


def test_lnp_silent_cell_is_predicted_silent(retina):
    tr_i, tr_r, te_i, *_ = retina
    resp = tr_r.copy()
    resp[:, 3] = 0.0
    pred, _ = lnp_encoder_cv(tr_i, resp, te_i, components=(5,), alphas=(1e-1,))
    assert (pred[:, 3] == 0).all() and (pred[:, 2] > 0).all()
