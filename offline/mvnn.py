"""Noise normalization fitted offline and frozen into the bundle.

Multivariate noise normalization (MVNN, Guggenmos et al. 2018), implemented from the algorithm
description (not from the non-commercial reference code): per image condition, a Ledoit-Wolf
shrinkage covariance of the channels; averaged over conditions to Sigma; whitener
W = Sigma^(-1/2). Applying W is purely spatial (x'(t) = W x(t)), hence causal, so the engine
applies the very same matrix sample by sample.

Fit on the training optimisation rows only — never on test or validation rows (the official
THINGS-EEG2 code also averaged in test data; NICE and BrainAE do not, neither does neuralign).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.covariance import LedoitWolf

from neuralign.errors import DataError

log = logging.getLogger(__name__)

Mode = Literal["epochs", "time"]


def _check_4d(data: np.ndarray, what: str = "data") -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 4:
        raise DataError(
            f"{what}: expected a 4-D array (images, repetitions, channels, times), got shape {data.shape}"
        )
    return data


def noise_covariance(data: np.ndarray, mode: Mode = "epochs") -> np.ndarray:
    """Sigma: condition-averaged Ledoit-Wolf channel covariance (see module docstring)."""
    data = _check_4d(data)
    n_img, n_rep, n_ch, n_t = data.shape
    if mode not in ("epochs", "time"):
        raise DataError(f"MVNN mode: expected 'epochs' or 'time', got {mode!r}")
    if mode == "time" and n_rep < 2:
        raise DataError(
            f"MVNN mode 'time' estimates noise across repetitions at each time point and needs at "
            f"least 2 repetitions per image, got {n_rep}; use mode='epochs'"
        )
    sigma = np.zeros((n_ch, n_ch), dtype=np.float64)
    for i in range(n_img):
        cond = data[i].astype(np.float64, copy=False)  # (rep, ch, t)
        if mode == "time":
            # observations = repetitions, one covariance per time point
            covs = [LedoitWolf().fit(cond[:, :, t]).covariance_ for t in range(n_t)]
        else:
            # observations = time samples, one covariance per epoch (repetition)
            covs = [LedoitWolf().fit(cond[r].T).covariance_ for r in range(n_rep)]
        sigma += np.mean(covs, axis=0)
    return sigma / n_img


def inverse_sqrt(sigma: np.ndarray, eigenvalue_floor: float = 1e-6) -> np.ndarray:
    """Symmetric Sigma^(-1/2); eigenvalues below floor * max are raised to it (rank-deficient data)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    sigma = (sigma + sigma.T) / 2.0
    evals, evecs = np.linalg.eigh(sigma)
    top = float(evals.max())
    if not np.isfinite(top) or top <= 0:
        raise DataError(
            "MVNN: the noise covariance has no positive eigenvalue (all-zero or non-finite data)"
        )
    floor = eigenvalue_floor * top
    n_floored = int(np.sum(evals < floor))
    if n_floored:
        log.info(
            "MVNN: %d of %d eigenvalues raised to the floor %.3g", n_floored, len(evals), floor
        )
    evals = np.maximum(evals, floor)
    w = (evecs * (1.0 / np.sqrt(evals))) @ evecs.T
    return (w + w.T) / 2.0


def fit_mvnn(data: np.ndarray, mode: Mode = "epochs", eigenvalue_floor: float = 1e-6) -> np.ndarray:
    """Whitening matrix W (ch x ch) from TRAINING epochs (images, reps, ch, times) only."""
    return inverse_sqrt(noise_covariance(data, mode), eigenvalue_floor)


def apply_whitening(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x'(t) = W x(t) for any (..., ch, times) array; spatial only, so identical online."""
    w = np.asarray(w)
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-2] != w.shape[1]:
        raise DataError(
            f"whitening: data must be (..., {w.shape[1]} channels, times), got shape {x.shape}"
        )
    out = np.einsum("ij,...jt->...it", w, x, optimize=True)
    return out.astype(np.result_type(x.dtype, np.float32), copy=False)


@dataclass
class NoiseNormalizer:
    """A frozen spatial normalizer: MVNN whitening or per-channel z-score (MUA/MEG configs).

    Both are x' = W (x - mean[:, None]) with W diagonal for z-score, so the engine needs one code
    path. ``mean`` is zero for MVNN (whitening does not centre).
    """

    w: np.ndarray
    method: Literal["mvnn", "zscore", "none"] = "mvnn"
    mode: str = "epochs"
    mean: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        train: np.ndarray,
        method: Literal["mvnn", "zscore", "none"] = "mvnn",
        mode: Mode = "epochs",
        eigenvalue_floor: float = 1e-6,
    ) -> NoiseNormalizer:
        """Fit on the training rows (images, reps, ch, times) only."""
        train = _check_4d(train, "training data")
        n_ch = train.shape[2]
        if method == "mvnn":
            w = fit_mvnn(train, mode=mode, eigenvalue_floor=eigenvalue_floor)
            return cls(
                w=w,
                method="mvnn",
                mode=mode,
                mean=np.zeros(n_ch),
                extra={"eigenvalue_floor": eigenvalue_floor},
            )
        if method == "zscore":
            mean, std = zscore_stats(train)
            return cls(w=np.diag(1.0 / std), method="zscore", mode="channel", mean=mean)
        if method == "none":
            return cls(w=np.eye(n_ch), method="none", mode="", mean=np.zeros(n_ch))
        raise DataError(
            f"noise normalization method: expected 'mvnn', 'zscore' or 'none', got {method!r}"
        )

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalize any (..., ch, times) array."""
        x = np.asarray(x)
        if self.mean is not None and np.any(self.mean):
            x = x - self.mean[:, None]
        return apply_whitening(self.w, x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the bundle manifest."""
        return {
            "method": self.method,
            "mode": self.mode,
            "w": np.asarray(self.w, dtype=np.float64).tolist(),
            "mean": None if self.mean is None else np.asarray(self.mean, dtype=np.float64).tolist(),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseNormalizer:
        """Inverse of :meth:`to_dict`; checks W is square and matches the mean."""
        try:
            w = np.asarray(d["w"], dtype=np.float64)
            method = d["method"]
        except KeyError as err:
            raise DataError(
                f"noise normalizer: missing key {err.args[0]!r} (expected 'w' and 'method')"
            ) from None
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise DataError(
                f"noise normalizer: key 'w' must be a square matrix, got shape {w.shape}"
            )
        mean = d.get("mean")
        mean_arr = None if mean is None else np.asarray(mean, dtype=np.float64)
        if mean_arr is not None and mean_arr.shape != (w.shape[0],):
            raise DataError(
                f"noise normalizer: key 'mean' must have {w.shape[0]} entries, got shape {mean_arr.shape}"
            )
        return cls(
            w=w,
            method=method,
            mode=d.get("mode", ""),
            mean=mean_arr,
            extra=dict(d.get("extra") or {}),
        )


def zscore_stats(train: np.ndarray, min_std: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all training images, reps and samples."""
    train = _check_4d(train, "training data")
    x = train.astype(np.float64, copy=False)
    mean = x.mean(axis=(0, 1, 3))
    std = x.std(axis=(0, 1, 3))
    flat = std < min_std
    if np.any(flat):
        log.warning("z-score: %d flat channel(s) get std 1", int(flat.sum()))
        std = np.where(flat, 1.0, std)
    return mean, std
