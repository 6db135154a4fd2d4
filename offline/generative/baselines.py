"""Baselines tuned as carefully as the models they are compared with, fitted on training rows only.

A generative decoder beating a ridge regression whose penalty came from an eight-point grid, or an
LNP encoder run at one fixed PCA size and penalty, says little. Here the ridge penalty comes from
efficient leave-one-out CV over a quarter-decade grid (optionally one penalty per pixel), the LNP
encoder's PCA size and penalty from K-fold CV on the training rows, and two floors bound what
"decoding" means: the mean training image (no information from the response) and the retrieved
template (the training image whose response looks most alike: memorisation without generation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from neuralign.offline.generative.correlation import zscore_rows

log = logging.getLogger(__name__)

RIDGE_ALPHAS_FINE = tuple(float(a) for a in 10.0 ** np.arange(-2.0, 6.0 + 1e-9, 0.25))
LNP_FOLDS = 3


@dataclass
class RidgeResult:
    """Decoded test images and the penalty LOO-CV chose on the training rows."""

    images: np.ndarray  # (N_test, S, S[, 3]) float32 clipped to [0, 1]
    alpha: float  # the chosen alpha; per-pixel CV: the median over pixels
    cv: str  # how alpha was chosen
    alpha_per_pixel: np.ndarray | None = None  # (S*S[*3],) when tuned per pixel

    @property
    def at_grid_edge(self) -> bool:
        """The (median) alpha is the grid's smallest or largest: the grid may be too narrow."""
        return bool(np.isclose(self.alpha, RIDGE_ALPHAS_FINE[0])
                    or np.isclose(self.alpha, RIDGE_ALPHAS_FINE[-1]))


@dataclass
class LnpChoice:
    """The LNP hyper-parameters K-fold CV chose, and the CV deviance of every grid point."""

    n_components: int
    alpha: float
    components: tuple[int, ...]
    alphas: tuple[float, ...]
    deviance: np.ndarray  # (len(components), len(alphas)) mean held-out Poisson deviance
    cv: str


def _fit_ridge(train_resp: np.ndarray, targets: np.ndarray, per_target: bool):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(),
                          RidgeCV(alphas=RIDGE_ALPHAS_FINE, alpha_per_target=per_target))
    return model.fit(np.asarray(train_resp, np.float64), targets)


def tuned_ridge(train_resp: np.ndarray, train_images: np.ndarray, test_resp: np.ndarray,
                per_pixel: bool = False) -> RidgeResult:
    """Standardized responses -> pixels; alpha by efficient leave-one-out CV over
    :data:`RIDGE_ALPHAS_FINE` (one alpha for all pixels, or one per pixel)."""
    n = len(train_images)
    model = _fit_ridge(train_resp, np.asarray(train_images, np.float64).reshape(n, -1), per_pixel)
    out = model.predict(np.asarray(test_resp, np.float64))
    images = np.clip(out.reshape((len(test_resp),) + train_images.shape[1:]), 0.0, 1.0)
    alpha_ = np.atleast_1d(np.asarray(model[-1].alpha_, np.float64))
    grid = f"{len(RIDGE_ALPHAS_FINE)} alphas 1e-2..1e6 (quarter decades)"
    result = RidgeResult(
        images=images.astype(np.float32), alpha=float(np.median(alpha_)),
        cv=f"efficient LOO on {n} training rows, {grid}, "
           + ("one alpha per pixel (median reported)" if per_pixel else "one alpha for all pixels"),
        alpha_per_pixel=alpha_ if per_pixel else None)
    if result.at_grid_edge:
        log.warning("ridge alpha %.3g is at the edge of the grid: the grid may be too narrow",
                    result.alpha)
    return result


def ridge_into_codes(train_resp: np.ndarray, train_codes: np.ndarray,
                     test_resp: np.ndarray) -> np.ndarray:
    """The same tuned ridge into arbitrary code vectors (e.g. an auto-encoder's latents, which
    the caller decodes); returns (N_test, D) predicted codes, unclipped."""
    codes = np.asarray(train_codes, np.float64)
    model = _fit_ridge(train_resp, codes.reshape(len(codes), -1), per_target=False)
    return model.predict(np.asarray(test_resp, np.float64)).reshape(
        (len(test_resp),) + codes.shape[1:])


def mean_image(train_images: np.ndarray, n: int) -> np.ndarray:
    """Floor: the mean training image for every test response (uses no response at all)."""
    mean = np.asarray(train_images, np.float64).mean(axis=0).astype(np.float32)
    return np.repeat(mean[None], n, axis=0)


def retrieved_template(train_resp: np.ndarray, train_images: np.ndarray,
                       test_resp: np.ndarray) -> np.ndarray:
    """Floor: per test response, the training image whose standardized response vector
    correlates best with it (top-1 retrieval; a decoder that only memorises scores this)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.asarray(train_resp, np.float64))
    a = zscore_rows(scaler.transform(np.asarray(train_resp, np.float64)))
    b = zscore_rows(scaler.transform(np.asarray(test_resp, np.float64)))
    best = np.argmax(b @ a.T, axis=1)
    return np.asarray(train_images, np.float32)[best].copy()


# --- LNP encoder with cross-validated PCA size and penalty ---------------------------------------


def _poisson_glm(x: np.ndarray, y: np.ndarray, alpha: float,
                 init: tuple[np.ndarray, np.ndarray] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """All neurons' Poisson GLMs in one L-BFGS run: sklearn PoissonRegressor's objective
    (mean half-deviance + alpha/2 |w|^2, intercept unpenalised) summed over the independent
    neurons. Each neuron's weights are rescaled by its curvature (mean rate + alpha; the inputs
    are whitened), so one line search suits low- and high-rate cells alike."""
    from scipy.optimize import minimize

    n, p = x.shape
    m = y.shape[1]
    rate = np.maximum(y.mean(axis=0), 1e-3)
    scale = 1.0 / np.sqrt(rate + alpha)  # w = scale * v
    bscale = 1.0 / np.sqrt(rate)
    if init is None:
        w0, b0 = np.zeros((p, m)), np.log(rate)
    else:
        w0, b0 = init
    theta0 = np.concatenate([(w0 / scale).ravel(), b0 / bscale])

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v, c = theta[: p * m].reshape(p, m), theta[p * m:]
        w, b = v * scale, c * bscale
        eta = np.minimum(x @ w + b, 300.0)
        mu = np.exp(eta)
        loss = (mu - y * eta).sum() / n + 0.5 * alpha * (w * w).sum()
        r = (mu - y) / n
        gw = (x.T @ r + alpha * w) * scale
        gb = r.sum(axis=0) * bscale
        return float(loss), np.concatenate([gw.ravel(), gb])

    res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-7, "ftol": 1e-12})
    v, c = res.x[: p * m].reshape(p, m), res.x[p * m:]
    return v * scale, c * bscale


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    mu = np.maximum(mu, 1e-8)
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float((2.0 * (ylogy - (y - mu))).mean())


def _on_edge(value: float, grid: tuple) -> bool:
    return len(set(grid)) > 1 and value in (min(grid), max(grid))


def _whiten(train: np.ndarray, others: list[np.ndarray], k: int):
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(k, len(train) - 1), whiten=True, random_state=0)
    return pca.fit_transform(train), [pca.transform(o) for o in others]


def lnp_encoder_cv(train_images: np.ndarray, train_resp: np.ndarray, test_images: np.ndarray,
                   components: tuple[int, ...] = (25, 50, 100, 200),
                   alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0),
                   ) -> tuple[np.ndarray, LnpChoice]:
    """FLIG's LNP encoding baseline (PCA-whitened pixels, exponential nonlinearity, Poisson
    likelihood: ``metrics.lnp_encoder``) with its PCA size and penalty chosen by 3-fold CV on
    the training rows (mean held-out Poisson deviance). Folds are contiguous blocks, not
    shuffled, because neighbouring rows may be neighbouring movie frames. Per fold, PCA is fitted
    once at the largest size and sliced (the leading whitened components of a PCA are the
    smaller PCA's), and the penalty path runs from strong to weak with warm starts."""
    from sklearn.model_selection import KFold

    n = len(train_images)
    x = np.asarray(train_images, np.float64).reshape(n, -1)
    xt = np.asarray(test_images, np.float64).reshape(len(test_images), -1)
    y = np.maximum(np.asarray(train_resp, np.float64), 0.0)
    components, alphas = tuple(int(c) for c in components), tuple(float(a) for a in alphas)
    order = np.argsort(alphas)[::-1]  # strong -> weak penalty for warm starts
    deviance = np.zeros((len(components), len(alphas)))
    for fit_rows, held_rows in KFold(LNP_FOLDS).split(x):
        z_fit, (z_held,) = _whiten(x[fit_rows], [x[held_rows]], max(components))
        y_fit, y_held = y[fit_rows], y[held_rows]
        live = y_fit.max(axis=0) > 0  # a silent cell is predicted silent, as in lnp_encoder
        for ci, k in enumerate(components):
            k = min(k, z_fit.shape[1])
            init = None
            for ai in order:
                w, b = _poisson_glm(z_fit[:, :k], y_fit[:, live], alphas[ai], init)
                init = (w, b)
                mu = np.zeros_like(y_held)
                mu[:, live] = np.exp(np.minimum(z_held[:, :k] @ w + b, 300.0))
                deviance[ci, ai] += _poisson_deviance(y_held, mu) / LNP_FOLDS
    ci, ai = np.unravel_index(np.argmin(deviance), deviance.shape)
    k, alpha = components[ci], alphas[ai]
    z_train, (z_test,) = _whiten(x, [xt], k)
    live = y.max(axis=0) > 0
    pred = np.zeros((len(xt), y.shape[1]), np.float32)
    w, b = _poisson_glm(z_train, y[:, live], alpha)
    pred[:, live] = np.exp(np.minimum(z_test @ w + b, 300.0))
    choice = LnpChoice(n_components=k, alpha=alpha, components=components, alphas=alphas,
                       deviance=deviance,
                       cv=f"{LNP_FOLDS}-fold contiguous CV on {n} training rows, mean Poisson "
                          f"deviance over {len(components)} x {len(alphas)} grid")
    log.info("LNP CV chose %d components, alpha %g", k, alpha)
    if _on_edge(k, components) or _on_edge(alpha, alphas):
        log.warning("LNP CV choice (%d components, alpha %g) is at the edge of its grid", k, alpha)
    return pred, choice
