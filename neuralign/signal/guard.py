"""Keep non-finite and railed samples out of the causal chain's state.

One NaN entering an IIR filter stays in its state forever, and an average reference spreads it
to every channel: one bad sample would poison the session. :class:`SampleGuard` replaces each bad
value by the channel's last good value (sample-and-hold, 0 before any) BEFORE the chain sees it,
and reports which samples were bad so the epochs that touch them can be flagged. On clean data it
changes nothing (parity holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GuardReport:
    """What :meth:`SampleGuard.apply` found in one chunk."""

    bad: np.ndarray  # (n,) bool: the sample had a non-finite or railed value on some channel
    n_non_finite: int  # samples with a NaN/Inf
    n_railed: int  # finite samples with |x| > rail on some channel


class SampleGuard:
    """Sample-and-hold replacement of NaN/Inf (and, with ``rail``, values beyond +-rail)."""

    def __init__(self, n_channels: int, rail: float | None = None):
        self.rail = rail
        self._hold = np.zeros(n_channels, dtype=np.float64)

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, GuardReport]:
        """``x`` (channels, n) -> (cleaned copy or ``x`` itself when clean, report)."""
        finite = np.isfinite(x)
        ok = finite if self.rail is None else finite & (np.abs(np.where(finite, x, 0.0))
                                                         <= self.rail)
        if ok.all():
            if x.shape[1]:
                self._hold = x[:, -1].astype(np.float64, copy=True)
            return x, GuardReport(np.zeros(x.shape[1], dtype=bool), 0, 0)
        nonfin = ~finite.all(axis=0)
        bad = ~ok.all(axis=0)
        y = np.array(x, dtype=np.float64, copy=True)
        hold = self._hold
        for j in range(y.shape[1]):  # only chunks with bad samples take this path
            col = ok[:, j]
            if not col.all():
                y[~col, j] = hold[~col]
            hold = y[:, j]
        self._hold = hold.copy()
        return y, GuardReport(bad, int(nonfin.sum()), int((bad & ~nonfin).sum()))
