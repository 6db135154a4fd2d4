"""Row-wise correlation primitives shared by the metrics, the scores and the baselines.

Why a module of its own: ``metrics`` (pixel PCC), ``scores`` (2-way identification) and
``baselines`` (the retrieved-template floor) all correlate rows; here none of them imports another
for it.
"""

from __future__ import annotations

import numpy as np


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``a`` with the same row of ``b``; 0 for a constant row."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0.0)


def zscore_rows(a: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm; a constant row stays all-zero (correlation 0)."""
    a = a - a.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1, keepdims=True))
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
