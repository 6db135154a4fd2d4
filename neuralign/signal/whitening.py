"""Spatial noise normalisation applied identically offline and online.

The whitener W (``inverse_sqrt`` of a noise covariance) and its application x'(t) = W (x(t) - m)
are purely spatial, hence causal: the engine applies the very matrix the training data saw. The
fit (MVNN covariance estimation, z-score statistics) is offline work and lives in
``neuralign.offline.mvnn``; this module holds what the realtime side needs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from neuralign.errors import DataError

log = logging.getLogger(__name__)


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


def apply_whitening(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x'(t) = W x(t) for any (..., ch, times) array; spatial only, so identical online."""
    w = np.asarray(w)
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[-2] != w.shape[1]:
        raise DataError(
            f"whitening: data must be (..., {w.shape[1]} channels, times), got shape {x.shape}"
        )
    # matmul broadcasts over the leading axes exactly like einsum "ij,...jt->...it"; einsum with
    # optimize=True spent ~15 ms per 63 x 250 epoch planning and casting (matmul: ~0.2 ms)
    out = np.matmul(w, x)
    return out.astype(np.result_type(x.dtype, np.float32), copy=False)


@dataclass
class Whitening:
    """A frozen spatial normalizer: MVNN whitening or per-channel z-score (MUA/MEG configs).

    Fitted offline (``neuralign.offline.mvnn.NoiseNormalizer.fit``), applied by both flows.

    Both are x' = W (x - mean[:, None]) with W diagonal for z-score, so the engine needs one code
    path. ``mean`` is zero for MVNN (whitening does not centre).
    """

    w: np.ndarray
    method: Literal["mvnn", "zscore", "none"] = "mvnn"
    mode: str = "epochs"
    mean: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalize any (..., ch, times) array."""
        x = np.asarray(x)
        if self.mean is not None and np.any(self.mean):
            x = x - self.mean[:, None]
        d = self._diagonal
        if d is not None and x.ndim >= 2 and x.shape[-2] == d.shape[0]:
            # a diagonal W (z-score) is a per-channel scale: the same numbers as W @ x (the
            # off-diagonal terms are exact zeros) without the C^2 product (1024 ch: ~16 ms/epoch)
            return (d[:, None] * x).astype(np.result_type(x.dtype, np.float32), copy=False)
        return apply_whitening(self.w, x)

    def restricted(self, present: Sequence[int], recentred: bool = False) -> Whitening:
        """The normalizer for data in which only the ``present`` channels exist (``--fill-missing``).

        Why: zero rows for the absent channels fed to the full W leak into the present rows
        through W's off-diagonal terms. Instead, for MVNN the noise covariance W implies,
        Sigma = (W^T W)^-1, is cut to the present block and whitened on its own:
        W_p = Sigma_pp^(-1/2), what MVNN fitted on those channels' covariance gives.
        ``recentred``: the present channels were re-referenced to their own average (an average
        reference without the absent channels), so their covariance is C Sigma_pp C (C the
        centring matrix); its null direction, the common mode, which such data never have, is
        mapped to zero. A diagonal W (z-score, none) mixes no channels: its present entries
        stay as fitted, and the mean is recentred like the data. Same size as ``self``: the
        absent rows (and columns) are zero, so they come out as 0, the neutral value the model's
        reconstruction fills in (it masks them to 0 itself).
        """
        p = np.asarray(present, dtype=np.int64)
        w = np.asarray(self.w, dtype=np.float64)
        n, k = w.shape[0], len(p)
        if k == 0 or np.any((p < 0) | (p >= n)) or len(np.unique(p)) != k:
            raise DataError(f"whitening: present channels must be distinct indices in [0, {n}), "
                            f"got {p.tolist()[:10]}")
        centre = np.eye(k) - 1.0 / k if recentred and k > 1 else np.eye(k)
        mean = np.zeros(n) if self.mean is None else np.asarray(self.mean, dtype=np.float64)
        out_w = np.zeros((n, n))
        out_mean = np.zeros(n)
        out_mean[p] = centre @ mean[p]
        if self._diagonal is not None:
            out_w[p, p] = self._diagonal[p]
        else:
            try:
                sigma = np.linalg.inv(w.T @ w)
            except np.linalg.LinAlgError:
                raise DataError("whitening: W is singular, so it implies no noise covariance to "
                                "restrict to the present channels") from None
            s = centre @ sigma[np.ix_(p, p)] @ centre
            if recentred and k > 1:
                # give the common mode (null in s) the mean eigenvalue so the floor never sees
                # it, then drop it: such data have none
                s = s + (np.trace(s) / (k - 1)) / k
            wp = inverse_sqrt(s, float(self.extra.get("eigenvalue_floor", 1e-6)))
            out_w[np.ix_(p, p)] = centre @ wp
        return Whitening(w=out_w, method=self.method, mode=self.mode, mean=out_mean,
                         extra=dict(self.extra))

    @functools.cached_property
    def _diagonal(self) -> np.ndarray | None:
        """W's diagonal when W is diagonal (z-score, none), else None (MVNN)."""
        w = np.asarray(self.w)
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            return None
        d = np.diagonal(w).copy()
        return d if np.array_equal(w, np.diag(d)) else None

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
    def from_dict(cls, d: dict[str, Any]) -> Whitening:
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
