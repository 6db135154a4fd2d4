"""SMR, structured multi-output regression (Du et al. AAAI 2020, Eq. 1-6, Proposition 1).

H = X W + 1 b^T + E, rows of E ~ N(0, Omega); prior on W: prod_k N(w_k | 0, I) x MN(0, Sigma_r,
Sigma_c). MAP by alternating optimisation of Eq. 6:

- W: Proposition 1, vec(W) = U^-1 V with U = Omega^-1 (x) X^T X + lam I + lam1 Sigma_c^-1 (x)
  Sigma_r^-1, when K*D <= ``closed_form_max``; otherwise the same normal equations solved by
  conjugate gradients (a gradient method on the quadratic L_W of Eq. 10, matrix-free);
- b: the mean residual;
- Omega^-1, Sigma_r^-1, Sigma_c^-1: the l1-penalised Gaussian log-likelihood of Eq. 6 on the
  residual covariance / lam1 W Sigma_c^-1 W^T / K / lam1 W^T Sigma_r^-1 W / D, i.e. the graphical
  lasso (scikit-learn) on the correlation-scaled matrix. Appendix B (the paper's update rules) is not
  in the text we have; these are the standard MRCE / matrix-normal updates that Eq. 6 implies.

Two choices the paper leaves open: the rank-deficient arguments (lam1 W Sigma_c^-1 W^T / K and
lam1 W^T Sigma_r^-1 W / D have rank <= min(D, K)) are shrunk toward their mean diagonal
(``SHRINK``), and so is the residual covariance when N < 2K; a well-determined residual covariance
is not, since the inverse of a shrunk matrix is dense and the graphical lasso could then no longer
find the zeros of a sparse Omega^-1. The Kronecker factors are only identified up to
reciprocal scale, so Sigma_r^-1 and Sigma_c^-1 are rescaled to unit mean diagonal (lam1 keeps its
meaning). Ablations (SMR-O, -IT, ...) fix the unlearned precisions to I.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator, cg

from neuralign.generative_config import SmrConfig

log = logging.getLogger(__name__)

SHRINK = 0.1


@dataclass
class SmrFit:
    """The MAP estimate; ``predict`` works on the same (standardized) inputs it was fitted on."""

    W: np.ndarray  # (D, K)
    b: np.ndarray  # (K,)
    omega_inv: np.ndarray  # (K, K)
    sigma_r_inv: np.ndarray  # (D, D)
    sigma_c_inv: np.ndarray  # (K, K)
    lam1: float
    objective: list[float] = field(default_factory=list)
    cv_scores: dict[str, float] = field(default_factory=dict)
    oof_pred: np.ndarray | None = None  # out-of-fold predictions at the chosen lam1 (decodability)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.W + self.b


def solve_w_closed_form(X: np.ndarray, Hc: np.ndarray, omega_inv: np.ndarray, sr_inv: np.ndarray,
                        sc_inv: np.ndarray, lam: float, lam1: float) -> np.ndarray:
    """Proposition 1: vec(W) = U^-1 V (column-major vec), Hc = H - 1 b^T."""
    D, K = X.shape[1], Hc.shape[1]
    U = np.kron(omega_inv, X.T @ X) + lam * np.eye(K * D) + lam1 * np.kron(sc_inv, sr_inv)
    V = (X.T @ Hc @ omega_inv).ravel(order="F")
    return np.linalg.solve(U, V).reshape(D, K, order="F")


def solve_w_iterative(X: np.ndarray, Hc: np.ndarray, omega_inv: np.ndarray, sr_inv: np.ndarray,
                      sc_inv: np.ndarray, lam: float, lam1: float, W0: np.ndarray | None = None,
                      rtol: float = 1e-8, maxiter: int = 2000) -> np.ndarray:
    """The normal equations of Eq. 10, X^T X W Omega^-1 + lam W + lam1 Sigma_r^-1 W Sigma_c^-1
    = X^T Hc Omega^-1, by conjugate gradients (the operator is symmetric positive definite)."""
    D, K = X.shape[1], Hc.shape[1]
    xtx = X.T @ X

    def matvec(v: np.ndarray) -> np.ndarray:
        W = v.reshape(D, K)
        return (xtx @ W @ omega_inv + lam * W + lam1 * (sr_inv @ W @ sc_inv)).ravel()

    # Preconditioner: the exact inverse of the two-term operator A W Omega^-1 + Sr W Sc with
    # Sr = lam1 Sigma_r^-1 + lam I, Sc = Sigma_c^-1 (generalized eigenvectors of the pencils
    # (A, Sr) and (Omega^-1, Sc) diagonalise both terms at once), so CG needs few iterations.
    from scipy.linalg import eigh

    sr_p = lam1 * sr_inv + lam * np.eye(D) if lam1 > 0 else max(lam, 1e-8) * np.eye(D)
    sc_p = sc_inv if lam1 > 0 else np.eye(K)
    da, V = eigh(xtx, sr_p)
    do, Uo = eigh(omega_inv, sc_p)
    denom = np.outer(da, do) + 1.0

    def precond(v: np.ndarray) -> np.ndarray:
        return (V @ ((V.T @ v.reshape(D, K) @ Uo) / denom) @ Uo.T).ravel()

    op = LinearOperator((D * K, D * K), matvec=matvec, dtype=np.float64)
    pre = LinearOperator((D * K, D * K), matvec=precond, dtype=np.float64)
    rhs = (X.T @ Hc @ omega_inv).ravel()
    sol, info = cg(op, rhs, x0=None if W0 is None else W0.ravel(), rtol=rtol, atol=0.0,
                   maxiter=maxiter, M=pre)
    if info > 0:
        log.warning("SMR: conjugate gradients stopped after %d iterations before tolerance", info)
    return sol.reshape(D, K)


def precision(S: np.ndarray, sparse: bool, l1: float, shrink: float = 0.0,
              ridge: float = 1e-6) -> np.ndarray:
    """Inverse covariance of ``S``: graphical lasso on its correlation matrix with penalty ``l1``
    (sparse case, the l1 terms of Eq. 6), or (S + ridge I)^-1 (non-sparse case).

    ``shrink`` blends ``S`` toward its mean diagonal first; only for rank-deficient ``S`` (it
    makes the target's inverse dense, so a sparse precision is recovered only with 0)."""
    p = S.shape[0]
    if shrink > 0:
        S = (1 - shrink) * S + shrink * np.trace(S) / p * np.eye(p)
    if not sparse:
        return np.linalg.inv(S + ridge * np.eye(p))
    from sklearn.covariance import graphical_lasso

    d = np.sqrt(np.diag(S))
    corr = S / np.outer(d, d)
    # An ill-conditioned matrix (W^T W; the residuals of collinear CNN units) can defeat the
    # solver: then shrink more, first by the SHRINK used for rank-deficient arguments.
    for extra in (0.0, SHRINK, 0.3, 0.6):
        try:
            _, prec = graphical_lasso((1 - extra) * corr + extra * np.eye(p), alpha=l1,
                                      max_iter=100, tol=1e-3, mode="cd")
            return prec / np.outer(d, d)
        except FloatingPointError:
            log.warning("graphical lasso ill-conditioned (p=%d); retrying with more shrinkage", p)
    return np.linalg.inv(S)


def _unit_mean_diag(P: np.ndarray) -> np.ndarray:
    return P / np.mean(np.diag(P))


def objective(X, H, W, b, omega_inv, sr_inv, sc_inv, lam, lam1, cfg: SmrConfig) -> float:
    """Eq. 6 (up to constants)."""
    R = H - X @ W - b
    K, D = H.shape[1], X.shape[1]
    logdet = lambda P: np.linalg.slogdet(P)[1]  # noqa: E731
    val = (np.trace(R @ omega_inv @ R.T) - len(X) * logdet(omega_inv) + lam * np.sum(W * W)
           + lam1 * np.trace(sr_inv @ W @ sc_inv @ W.T) - K * logdet(sr_inv) - D * logdet(sc_inv))
    if cfg.sparse:
        val += cfg.lam2 * np.abs(omega_inv).sum() + cfg.lam3 * (np.abs(sr_inv).sum() + np.abs(sc_inv).sum())
    return float(val)


def fit_smr_fixed(X: np.ndarray, H: np.ndarray, cfg: SmrConfig, lam1: float, n_iter: int,
                  sparse: bool | None = None) -> SmrFit:
    """Alternating optimisation of Eq. 6 at a given lam1 (X, H standardized, float64)."""
    X, H = np.asarray(X, np.float64), np.asarray(H, np.float64)
    N, D = X.shape
    K = H.shape[1]
    sparse = cfg.sparse if sparse is None else sparse
    omega_inv, sr_inv, sc_inv = np.eye(K), np.eye(D), np.eye(K)
    b = H.mean(0)
    W = None
    hist = []
    closed = K * D <= cfg.closed_form_max
    for it in range(n_iter):
        args = (X, H - b, omega_inv, sr_inv, sc_inv, cfg.lam, lam1)
        W = solve_w_closed_form(*args) if closed else solve_w_iterative(*args, W0=W)
        b = (H - X @ W).mean(0)
        learn_any = cfg.learn_output or cfg.learn_input or cfg.learn_task
        if cfg.learn_output:
            R = H - X @ W - b
            omega_inv = precision(R.T @ R / N, sparse, cfg.lam2 if sparse else 0.0,
                                  shrink=0.0 if N >= 2 * K else SHRINK)
        if cfg.learn_input:
            sr_inv = _unit_mean_diag(precision(lam1 * W @ sc_inv @ W.T / K, sparse, cfg.lam3, SHRINK))
        if cfg.learn_task:
            sc_inv = _unit_mean_diag(precision(lam1 * W.T @ sr_inv @ W / D, sparse, cfg.lam3, SHRINK))
        hist.append(objective(X, H, W, b, omega_inv, sr_inv, sc_inv, cfg.lam, lam1, cfg))
        log.debug("SMR sweep %d: objective %.4g", it, hist[-1])
        if not learn_any:
            break
    # One last W given the final precisions, so W is optimal for the structures it is paired with.
    if cfg.learn_output or cfg.learn_input or cfg.learn_task:
        args = (X, H - b, omega_inv, sr_inv, sc_inv, cfg.lam, lam1)
        W = solve_w_closed_form(*args) if closed else solve_w_iterative(*args, W0=W)
        b = (H - X @ W).mean(0)
    return SmrFit(W=W, b=b, omega_inv=omega_inv, sigma_r_inv=sr_inv, sigma_c_inv=sc_inv, lam1=lam1,
                  objective=hist)


def fit_smr(X: np.ndarray, H: np.ndarray, cfg: SmrConfig, seed: int = 0) -> SmrFit:
    """lam1 by K-fold CV on NMSE with the non-sparse model (the paper's protocol: "for the sparse
    case, we use the same value of lam1 selected for the non-sparse case"), then the full fit."""
    from neuralign.offline.generative.metrics import nmse

    X, H = np.asarray(X, np.float64), np.asarray(H, np.float64)
    grid = [cfg.lam1] if cfg.lam1 is not None else list(cfg.lam1_grid)
    folds = np.array_split(np.random.default_rng(seed).permutation(len(X)), cfg.cv_folds)
    scores, oof = {}, {}
    for lam1 in grid:
        pred = np.zeros_like(H)
        for f in folds:
            tr = np.setdiff1d(np.arange(len(X)), f)
            fit = fit_smr_fixed(X[tr], H[tr], cfg, lam1, cfg.cv_iter, sparse=False)
            pred[f] = fit.predict(X[f])
        scores[lam1], oof[lam1] = nmse(pred, H), pred
        log.info("SMR CV lam1=%g: NMSE %.4f", lam1, scores[lam1])
    best = min(scores, key=scores.get)
    fit = fit_smr_fixed(X, H, cfg, best, cfg.n_iter)
    fit.cv_scores = {str(k): v for k, v in scores.items()}
    fit.oof_pred = oof[best].astype(np.float32)
    return fit
