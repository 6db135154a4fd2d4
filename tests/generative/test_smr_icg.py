"""SMR: Proposition 1 equals the iterative solution, graphical lasso recovers a sparse precision,
ablations behave; ICG: the alpha/beta special cases are the CVAE and CGAN losses."""

import numpy as np
import pytest
import torch

from neuralign.generative_config import SmrConfig
from neuralign.models.icg import ICG, icg_losses, kl_normal
from neuralign.offline.generative.smr import (
    fit_smr,
    fit_smr_fixed,
    glasso_admm,
    precision,
    solve_w_closed_form,
    solve_w_iterative,
)


def _spd(n, rng):
    a = rng.normal(size=(n, n))
    return a @ a.T / n + 0.5 * np.eye(n)


def test_closed_form_w_equals_gradient_solution():
    rng = np.random.default_rng(0)
    N, D, K = 40, 6, 5
    X, H = rng.normal(size=(N, D)), rng.normal(size=(N, K))
    om, sr, sc = _spd(K, rng), _spd(D, rng), _spd(K, rng)
    w_closed = solve_w_closed_form(X, H, om, sr, sc, lam=0.1, lam1=2.0)
    w_iter = solve_w_iterative(X, H, om, sr, sc, lam=0.1, lam1=2.0)
    np.testing.assert_allclose(w_iter, w_closed, atol=1e-7)
    # ... and it is the minimiser of Eq. 10: the gradient vanishes there.
    grad = -X.T @ (H - X @ w_closed) @ om + 0.1 * w_closed + 2.0 * sr @ w_closed @ sc
    assert np.abs(grad).max() < 1e-9
    # With identity precisions it is ridge regression with penalty lam + lam1.
    w_ridge = np.linalg.solve(X.T @ X + 2.1 * np.eye(D), X.T @ H)
    np.testing.assert_allclose(solve_w_closed_form(X, H, np.eye(K), np.eye(D), np.eye(K), 0.1, 2.0),
                               w_ridge, atol=1e-10)


def test_graphical_lasso_recovers_sparse_precision():
    rng = np.random.default_rng(1)
    p = 8
    true = np.eye(p) + np.diag(np.full(p - 1, 0.4), 1) + np.diag(np.full(p - 1, 0.4), -1)
    samples = rng.multivariate_normal(np.zeros(p), np.linalg.inv(true), size=5000)
    est = precision(np.cov(samples.T), sparse=True, l1=0.05)
    support = np.abs(true) > 0
    assert np.mean(est[~support] == 0) > 0.8  # exact zeros off the true support
    assert np.all(np.abs(est[~support]) < 0.05), np.abs(est[~support]).max()
    assert np.all(np.abs(est[support]) > 0.2)
    assert np.all(np.sign(est[support]) == np.sign(true[support]))
    dense = precision(np.cov(samples.T), sparse=False, l1=0.0)
    assert np.abs(dense[~support]).max() > np.abs(est[~support]).max()  # l1 is what zeroes them
    # From the population covariance the support is exact; shrinking the covariance first (only
    # meant for rank-deficient arguments) makes the target's inverse dense and loses it.
    cov = np.linalg.inv(true)
    assert np.all(precision(cov, sparse=True, l1=0.05)[~support] == 0)
    assert np.any(precision(cov, sparse=True, l1=0.05, shrink=0.1)[~support] != 0)


def test_admm_graphical_lasso_matches_scikit_learn():
    """The ADMM fallback (used for large / ill-conditioned precisions) solves scikit-learn's
    graphical-lasso objective: same optimum, and it survives a matrix scikit-learn rejects."""
    from sklearn.covariance import graphical_lasso

    rng = np.random.default_rng(3)
    p = 10
    true = np.eye(p) + np.diag(np.full(p - 1, 0.4), 1) + np.diag(np.full(p - 1, 0.4), -1)
    S = np.corrcoef(rng.multivariate_normal(np.zeros(p), np.linalg.inv(true), size=400).T)
    _, ref = graphical_lasso(S, alpha=0.05, tol=1e-6, max_iter=1000)
    est = glasso_admm(S, 0.05, tol=1e-7, max_iter=5000)
    np.testing.assert_allclose(est, ref, atol=2e-3)
    assert np.mean((np.abs(ref) < 1e-8) == (est == 0)) > 0.95  # the same zeros, up to ties
    # Warm start from the answer: converges at once to the same point.
    np.testing.assert_allclose(glasso_admm(S, 0.05, init=est, tol=1e-7), est, atol=2e-3)
    # Nearly collinear variables (what hundreds of pooled CNN units look like): positive definite.
    base = rng.normal(size=(200, 5))
    Z = np.hstack([base, base @ rng.normal(size=(5, 25)) + 1e-3 * rng.normal(size=(200, 25))])
    C = np.corrcoef(Z.T)
    P = glasso_admm(C, 0.05)
    assert np.linalg.eigvalsh(P)[0] > 0


def test_smr_uses_output_structure():
    """Correlated output noise + a weak signal: SMR-O (learned Omega) is a valid MAP fit whose
    objective decreases, and precisions stay identity when their structure is not learned."""
    rng = np.random.default_rng(2)
    N, D, K = 200, 5, 6
    X = rng.normal(size=(N, D))
    W = rng.normal(size=(D, K))
    noise = rng.multivariate_normal(np.zeros(K), 0.5 * np.ones((K, K)) + 0.5 * np.eye(K), size=N)
    H = X @ W + noise
    cfg = SmrConfig(learn_input=False, learn_task=False, sparse=False, lam1=1.0, n_iter=4)
    fit = fit_smr_fixed(X, H, cfg, lam1=1.0, n_iter=4)
    assert fit.objective[-1] <= fit.objective[0] + 1e-6
    np.testing.assert_array_equal(fit.sigma_r_inv, np.eye(D))
    off = fit.omega_inv[~np.eye(K, dtype=bool)]
    assert off.mean() < -0.1  # positively correlated noise -> negative partial precisions
    full = fit_smr(X, H, SmrConfig(sparse=False, n_iter=3, cv_iter=1, lam1_grid=[0.1, 10.0]))
    assert full.lam1 in (0.1, 10.0) and full.oof_pred.shape == H.shape
    assert np.mean((full.predict(X) - H) ** 2) < np.mean((H - H.mean(0)) ** 2)


def _icg_setup():
    torch.manual_seed(0)
    net = ICG(cond_dim=3, latent_dim=4, image_size=16, channels=1, widths=(4, 8))
    y = torch.rand(5, 1, 16, 16)
    h = torch.randn(5, 3)
    return net, y, h


def test_icg_alpha0_beta1_is_the_cvae_loss():
    net, y, h = _icg_setup()
    torch.manual_seed(1)
    terms = icg_losses(net, y, h, alpha=0.0, beta=1.0, margin=10.0)
    torch.manual_seed(1)
    mu, logvar = net.encode(y, h)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    l_ae = 0.5 * ((net.decode(z, h) - y) ** 2).sum((1, 2, 3)).mean()
    kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)).mean()
    torch.testing.assert_close(terms["enc"], l_ae + kl)  # Eq. 7
    torch.testing.assert_close(terms["gen"], l_ae)
    assert "kl_fake" not in terms


def test_icg_alpha1_beta0_is_the_cgan_losses():
    net, y, h = _icg_setup()
    margin = 30.0
    torch.manual_seed(2)
    terms = icg_losses(net, y, h, alpha=1.0, beta=0.0, margin=margin)
    torch.manual_seed(2)
    mu, logvar = net.encode(y, h)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    y_rec = net.decode(z, h)
    l_ae = 0.5 * ((y_rec - y) ** 2).sum((1, 2, 3)).mean()
    y_p = net.decode(torch.randn_like(mu), h)
    kl_fake = [kl_normal(*net.encode(f, h)) for f in (y_rec, y_p)]
    # discriminator (encoder): low energy for real is NOT asked (beta = 0), fakes pushed above m
    d_loss = l_ae + sum(torch.relu(margin - k).mean() for k in kl_fake) / 2
    # generator: make the encoder see its fakes as real (low KL)
    g_loss = l_ae + sum(k.mean() for k in kl_fake) / 2
    torch.testing.assert_close(terms["enc"], d_loss)
    torch.testing.assert_close(terms["gen"], g_loss)
    # The encoder's gradient of ``enc`` (the only one training takes from it) is that of the
    # objective with detached fakes: sharing the prior sample's encoder pass changes nothing.
    enc_params = list(net.enc_conv.parameters()) + list(net.enc_fc.parameters())
    d_detached = l_ae + sum(torch.relu(margin - kl_normal(*net.encode(f.detach(), h))).mean()
                            for f in (y_rec, y_p)) / 2
    g_shared = torch.autograd.grad(terms["enc"], enc_params, retain_graph=True)
    g_detached = torch.autograd.grad(d_detached, enc_params, retain_graph=True)
    for a, b in zip(g_shared, g_detached):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("alpha,beta", [(0.5, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_icg_losses_are_finite_and_differentiable(alpha, beta):
    net, y, h = _icg_setup()
    terms = icg_losses(net, y, h, alpha, beta, margin=5.0)
    terms["enc"].backward(retain_graph=True)
    terms["gen"].backward()
    assert all(torch.isfinite(v) for v in terms.values())


def test_icg_training_keeps_the_best_validation_epoch():
    from neuralign.generative_config import IcgConfig
    from neuralign.offline.generative.smr_icg_train import train_icg

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(48, 16, 16)).astype(np.float32)
    h = rng.normal(size=(48, 5)).astype(np.float32)
    cfg = IcgConfig(latent_dim=4, channels=[4, 8], epochs=4, batch_size=16, lr=1e-2, top_k=5)
    net = ICG(5, 4, 16, 1, (4, 8))
    hist = train_icg(net, images[:40], h[:40], cfg, 0.0, 1.0, torch.device("cpu"), 0,
                     val=(images[40:], h[40:]))
    scores = [e["val_ssim"] for e in hist]
    assert hist[-1]["kept_epoch"] == int(np.argmax(scores))
    with torch.no_grad():
        out = net.decode(torch.zeros(8, 4), torch.as_tensor(h[40:]))[:, 0].numpy()
    from neuralign.offline.generative.metrics import decoding_metrics

    assert decoding_metrics(out, images[40:])["ssim"] == pytest.approx(max(scores), abs=1e-6)


def test_calibrated_likelihood_is_the_gaussian_nll_at_the_batch_mse():
    """sigma-VAE: with the pixel variance at the batch MSE, L_AE = D/2 (1 + log MSE) exactly."""
    net, y, h = _icg_setup()
    torch.manual_seed(0)
    unit = icg_losses(net, y, h, 0.0, 1.0, margin=5.0)
    torch.manual_seed(0)  # the same posterior draw
    cal = icg_losses(net, y, h, 0.0, 1.0, margin=5.0, calibrated=True)
    d = y[0].numel()
    mse = 2 * unit["l_ae"] / d  # Eq. 12 is half the summed squared error
    torch.testing.assert_close(cal["l_ae"], 0.5 * d * (1 + torch.log(mse)))


def test_linear_skip_and_expected_decoding():
    torch.manual_seed(0)
    net = ICG(cond_dim=3, latent_dim=4, image_size=16, channels=1, widths=(4, 8), linear_skip=4)
    h = torch.randn(5, 3)
    net.eval()  # BatchNorm on running statistics: decodes are per image, as at test time
    out = net.decode(torch.zeros(5, 4), h).detach()
    assert out.shape == (5, 1, 16, 16) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert any(p is net.skip.weight for p in net.generator_parameters())
    y = torch.rand(5, 1, 16, 16)
    grad = torch.autograd.grad(icg_losses(net, y, h, 0.5, 1.0, 5.0)["gen"], net.skip.weight)[0]
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(net.decode_expected(h, 0), out)
    draws = [net.decode(torch.randn(5, 4, generator=g), h)
             for g in [torch.Generator().manual_seed(1)] for _ in range(3)]
    torch.testing.assert_close(net.decode_expected(h, 3, torch.Generator().manual_seed(1)),
                               sum(draws) / 3)
