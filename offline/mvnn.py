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
from typing import Literal

import numpy as np
from sklearn.covariance import LedoitWolf

from neuralign.errors import DataError
from neuralign.signal.whitening import Whitening, apply_whitening, inverse_sqrt

log = logging.getLogger(__name__)

__all__ = ["NoiseNormalizer", "Whitening", "apply_whitening", "fit_mvnn", "inverse_sqrt",
           "noise_covariance", "zscore_stats"]

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


def fit_mvnn(data: np.ndarray, mode: Mode = "epochs", eigenvalue_floor: float = 1e-6) -> np.ndarray:
    """Whitening matrix W (ch x ch) from TRAINING epochs (images, reps, ch, times) only."""
    return inverse_sqrt(noise_covariance(data, mode), eigenvalue_floor)


class NoiseNormalizer(Whitening):
    """A :class:`~neuralign.signal.whitening.Whitening` plus its fit on training rows."""

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
