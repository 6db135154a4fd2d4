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
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import LinearOperator, cg
from sklearn.exceptions import ConvergenceWarning

from neuralign.generative_config import SmrConfig

log = logging.getLogger(__name__)

SHRINK = 0.1
# scikit-learn's graphical lasso is used up to this many variables. Above, its coordinate descent
# costs seconds per outer iteration (measured: 20-40 s per 448 x 448 precision on one core, and
# FloatingPointError on the residual covariance of 448 collinear CNN units), while the ADMM solver
# of the same objective takes ~40 ms per iteration and warm-starts from the previous sweep.
SKLEARN_MAX_P = 128


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


def glasso_admm(C: np.ndarray, l1: float, init: np.ndarray | None = None, rho: float = 1.0,
                max_iter: int = 500, tol: float = 1e-4, dual: np.ndarray | None = None,
                return_state: bool = False):
    """argmin_P tr(C P) - log det P + l1 ||P||_1,off (scikit-learn's graphical lasso objective)
    by ADMM (Boyd et al. 2011, Sec. 6.5): one eigendecomposition per iteration.

    The same objective as the graphical lasso; used when scikit-learn's coordinate descent cannot
    (its inner lasso on an ill-conditioned Gram matrix stops short and the precision loses
    definiteness). ``init`` / ``dual`` (the previous sweep's Z and U) warm-start it."""
    p = C.shape[0]
    Z = np.eye(p) if init is None else init.copy()
    U = np.zeros((p, p)) if dual is None else dual.copy()
    off = 1.0 - np.eye(p)  # the diagonal is not penalised
    for _ in range(max_iter):
        e, V = np.linalg.eigh(rho * (Z - U) - C)
        P = (V * ((e + np.sqrt(e * e + 4 * rho)) / (2 * rho))) @ V.T
        A = P + U
        Z_old, Z = Z, np.sign(A) * np.maximum(np.abs(A) - l1 / rho * off, 0.0)
        U += P - Z
        if (np.linalg.norm(P - Z) < tol * p and rho * np.linalg.norm(Z - Z_old) < tol * p):
            break
    # Z is sparse; P is positive definite: keep Z's zeros unless that costs definiteness.
    out = Z if np.linalg.eigvalsh(Z)[0] > 0 else P
    return (out, Z, U) if return_state else out


class Precision:
    """One inverse covariance of Eq. 6 across the alternating sweeps.

    Sparse case: the graphical lasso on the correlation-scaled matrix (l1 on the off-diagonal
    entries, scikit-learn's convention; a zero diagonal is impossible anyway) - scikit-learn
    first; when it reports the system ill-conditioned (the residuals of hundreds of collinear CNN units),
    the same objective by ADMM, for that precision's remaining sweeps too (no time lost on a
    second failure), warm-started from its previous sweep; ADMM directly above SKLEARN_MAX_P. Non-sparse case: (S + ridge I)^-1.

    ``shrink`` blends ``S`` toward its mean diagonal first; only for rank-deficient ``S`` (it
    makes the target's inverse dense, so a sparse precision is recovered only with 0)."""

    def __init__(self, sparse: bool, l1: float, shrink: float = 0.0, ridge: float = 1e-6,
                 sklearn_max_iter: int = 100, tol: float = 1e-3, admm_iter: tuple[int, int] = (300, 60)):
        self.sparse, self.l1, self.shrink, self.ridge = sparse, l1, shrink, ridge
        self.sklearn_max_iter, self.tol = sklearn_max_iter, tol
        # ADMM iterations: first call, then warm-started calls. A capped inner solve is enough
        # inside an alternating scheme (the next sweep resumes from Z, U) and keeps a sweep cheap.
        self.admm_iter = admm_iter
        self.use_sklearn = True  # until it fails once (or p > SKLEARN_MAX_P)
        self.state: tuple[np.ndarray, np.ndarray] | None = None  # ADMM's (Z, U) of the last sweep
        self.solver = ""

    def __call__(self, S: np.ndarray) -> np.ndarray:
        p = S.shape[0]
        if self.shrink > 0:
            S = (1 - self.shrink) * S + self.shrink * np.trace(S) / p * np.eye(p)
        if not self.sparse:
            self.solver = "inverse"
            return np.linalg.inv(S + self.ridge * np.eye(p))
        d = np.sqrt(np.diag(S))
        corr = S / np.outer(d, d)
        prec = None
        if self.use_sklearn and p <= SKLEARN_MAX_P:
            from sklearn.covariance import graphical_lasso

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    _, prec = graphical_lasso(corr, alpha=self.l1,
                                              max_iter=self.sklearn_max_iter, tol=self.tol, mode="cd")
                self.solver = "sklearn"
            except FloatingPointError:
                log.info("graphical lasso (scikit-learn) ill-conditioned (p=%d); ADMM on the same "
                         "objective from now on for this precision", p)
                self.use_sklearn = False
        if prec is None:
            Z0, U0 = self.state if self.state is not None else (None, None)
            prec, Z, U = glasso_admm(corr, self.l1, init=Z0, dual=U0, return_state=True,
                                     max_iter=self.admm_iter[self.state is not None])
            self.state = (Z, U)
            self.solver = "admm"
        return prec / np.outer(d, d)


def precision(S: np.ndarray, sparse: bool, l1: float, shrink: float = 0.0,
              ridge: float = 1e-6) -> np.ndarray:
    """One-off :class:`Precision` (graphical lasso with penalty ``l1``, or the plain inverse)."""
    return Precision(sparse, l1, shrink, ridge)(S)


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
    """Alternating optimisation of Eq. 6 at a given lam1 (X, H standardized, float64).

    Stops after ``n_iter`` sweeps or once Eq. 6 changes by less than ``cfg.tol`` (relative)."""
    X, H = np.asarray(X, np.float64), np.asarray(H, np.float64)
    N, D = X.shape
    K = H.shape[1]
    sparse = cfg.sparse if sparse is None else sparse
    omega_inv, sr_inv, sc_inv = np.eye(K), np.eye(D), np.eye(K)
    # One solver state per precision: warm starts, and the solver that worked last sweep.
    p_out = Precision(sparse, cfg.lam2 if sparse else 0.0, 0.0 if N >= 2 * K else SHRINK)
    p_in = Precision(sparse, cfg.lam3, SHRINK)
    p_task = Precision(sparse, cfg.lam3, SHRINK)
    b = H.mean(0)
    W = None
    hist = []
    closed = K * D <= cfg.closed_form_max
    learn_any = cfg.learn_output or cfg.learn_input or cfg.learn_task
    for it in range(n_iter):
        t0 = time.perf_counter()
        args = (X, H - b, omega_inv, sr_inv, sc_inv, cfg.lam, lam1)
        W = solve_w_closed_form(*args) if closed else solve_w_iterative(*args, W0=W)
        b = (H - X @ W).mean(0)
        t_w = time.perf_counter() - t0
        if cfg.learn_output:
            R = H - X @ W - b
            omega_inv = p_out(R.T @ R / N)
        if cfg.learn_input:
            sr_inv = _unit_mean_diag(p_in(lam1 * W @ sc_inv @ W.T / K))
        if cfg.learn_task:
            sc_inv = _unit_mean_diag(p_task(lam1 * W.T @ sr_inv @ W / D))
        hist.append(objective(X, H, W, b, omega_inv, sr_inv, sc_inv, cfg.lam, lam1, cfg))
        log.debug("SMR sweep %d: objective %.6g (W %.1f s, sweep %.1f s; solvers %s/%s/%s)", it,
                  hist[-1], t_w, time.perf_counter() - t0, p_out.solver, p_in.solver, p_task.solver)
        if not learn_any:
            break
        if it > 0 and abs(hist[-1] - hist[-2]) <= cfg.tol * abs(hist[-2]):
            break
    # One last W given the final precisions, so W is optimal for the structures it is paired with.
    if learn_any:
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
