"""Keep non-finite and railed samples out of the causal chain's state.

One NaN entering an IIR filter stays in its state forever, and an average reference spreads it
to every channel: one bad sample would poison the session. :class:`SampleGuard` replaces each bad
value by the channel's last good value (sample-and-hold, 0 before any) BEFORE the chain sees it,
and reports which samples were bad so the epochs that touch them can be flagged. On clean data it
changes nothing (parity holds).

A bad sample is non-finite, or finite but beyond its channel's limit: a fixed ceiling (the EEG
``rail``, or what no sensor of the channel's type can report, :data:`PHYSICAL_CEILINGS`), or, for
any modality (MEG, MUA, units without a physical ceiling), ``spike_limit`` times the channel's
typical magnitude learned from the stream's first samples. One 1e30 on an MEG or MUA channel
would otherwise ring through the IIR state (and the average reference) for minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: channel types whose values are volts: ``realtime.rail_volts`` applies to them
VOLT_TYPES = frozenset({"eeg", "eog", "ecg", "emg", "seeg", "ecog", "dbs"})
#: |value| no sensor of the type reports, in the SI units the readers deliver. SQUID and OPM
#: magnetometers saturate at a few to tens of nT (brain signals: pT), planar gradiometers at
#: ~1e-6 T/m: 100 nT and 1e-5 T/m are beyond any real sample and far below an absurd one.
PHYSICAL_CEILINGS = {"mag": 1e-7, "meg": 1e-7, "grad": 1e-5}
#: default ``spike_limit``: no physiological signal reaches 10^4 x its own typical magnitude
#: (blinks on EEG ~20x, MEG movement artefacts ~100x), while a sample that large would leave
#: filter residue above the signal for tens of seconds (IIR tail ~1e-3 of the spike)
SPIKE_LIMIT = 1e4
#: typical magnitude of a channel: this quantile of |x| over the learning samples (robust to a
#: spike among them; non-zero for sparse count data up to 90 % zeros)
MAGNITUDE_QUANTILE = 0.9
#: samples the typical magnitude is learned from (spread over the first seconds), and the fewest
#: from which the relative limit applies
LEARN_SAMPLES = 1024
MIN_LEARN_SAMPLES = 16


def channel_ceilings(types: Sequence[str], rail_volts: float | None,
                     rail_all: bool = False) -> np.ndarray:
    """Per-channel fixed ceilings (inf: none): ``rail_volts`` on volt channels (on every channel
    with ``rail_all``, what EEG bundles always had), :data:`PHYSICAL_CEILINGS` by sensor type."""
    out = np.full(len(types), np.inf)
    for i, t in enumerate(types):
        t = str(t).lower()
        if rail_volts is not None and (rail_all or t in VOLT_TYPES):
            out[i] = rail_volts
        elif t in PHYSICAL_CEILINGS:
            out[i] = PHYSICAL_CEILINGS[t]
    return out


@dataclass
class GuardReport:
    """What :meth:`SampleGuard.apply` found in one chunk."""

    bad: np.ndarray  # (n,) bool: the sample had a non-finite or railed value on some channel
    n_non_finite: int  # samples with a NaN/Inf
    n_railed: int  # finite samples beyond the channel's limit (rail, ceiling, spike_limit)


class SampleGuard:
    """Sample-and-hold replacement of NaN/Inf and of finite values beyond the channel's limit.

    ``rail``: a fixed ceiling on |x|, one for all channels or one per channel (inf: none).
    ``spike_limit``: also hold values beyond this many times the channel's typical magnitude
    (:data:`MAGNITUDE_QUANTILE` of |x| over ``learn`` samples spread over the first
    ``learn_stride * learn`` samples, raised to the median magnitude of its ``groups`` mates:
    a channel quiet while learning is not held to a tighter limit than its type; when every
    channel was flat (all 0) there is no relative limit). The limit applies from
    :data:`MIN_LEARN_SAMPLES` samples on and is refined until ``learn`` are seen, then fixed:
    held samples never teach it, so a channel stuck at an absurd value stays held and flagged.
    Magnitude, not deviation: DC offsets and drifts never trip it.
    """

    def __init__(self, n_channels: int, rail: float | np.ndarray | None = None,
                 spike_limit: float | None = None, learn: int = LEARN_SAMPLES,
                 learn_stride: int = 1, groups: Sequence[str] | None = None):
        if spike_limit is not None and not spike_limit > 1:
            raise ValueError(f"spike_limit must be > 1 (a multiple of the typical magnitude), "
                             f"got {spike_limit!r}")
        if groups is not None and len(groups) != n_channels:
            raise ValueError(f"groups: one per channel ({n_channels}), got {len(groups)}")
        self.rail = rail
        self._ceiling = None if rail is None else self._per_channel(rail, n_channels)
        self.spike_limit = spike_limit
        self._hold = np.zeros(n_channels, dtype=np.float64)
        self._groups = None if groups is None else np.asarray([str(g) for g in groups])
        self._learn = np.empty((n_channels, max(learn, MIN_LEARN_SAMPLES)), dtype=np.float32) \
            if spike_limit is not None else None
        self._n_learned = 0
        self._next_fit = MIN_LEARN_SAMPLES
        self._stride = max(1, int(learn_stride))
        self._n_seen = 0
        self.limit: np.ndarray | None = None  # the relative limit per channel (None: not yet)
        self._lim = self._ceiling  # the per-channel ceiling in force (None: only non-finite)

    @staticmethod
    def _per_channel(rail: float | np.ndarray, n: int) -> np.ndarray | None:
        r = np.broadcast_to(np.asarray(rail, dtype=np.float64), (n,)).copy()
        if np.any(np.isnan(r) | (r <= 0)):
            raise ValueError("rail: ceilings must be > 0 (inf for none)")
        return None if np.isinf(r).all() else r

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, GuardReport]:
        """``x`` (channels, n) -> (cleaned copy or ``x`` itself when clean, report)."""
        finite = np.isfinite(x)
        lim = self._lim
        ok = finite if lim is None else finite & (np.abs(np.where(finite, x, 0.0))
                                                  <= lim[:, None])
        if ok.all():
            if x.shape[1]:
                self._hold = x[:, -1].astype(np.float64, copy=True)
            self._observe(x)
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
        self._observe(y)
        return y, GuardReport(bad, int(nonfin.sum()), int((bad & ~nonfin).sum()))

    def _observe(self, y: np.ndarray) -> None:
        """Learn the typical magnitudes from cleaned samples (every ``learn_stride``-th)."""
        buf = self._learn
        if buf is None or self._n_learned >= buf.shape[1]:
            return
        first = (-self._n_seen) % self._stride
        self._n_seen += y.shape[1]
        take = np.abs(y[:, first::self._stride])[:, : buf.shape[1] - self._n_learned]
        buf[:, self._n_learned:self._n_learned + take.shape[1]] = take
        self._n_learned += take.shape[1]
        if self._n_learned >= min(self._next_fit, buf.shape[1]):
            self._next_fit *= 2  # refit at 16, 32, 64 ... samples and once full: cheap
            self.limit = self._relative_limit(buf[:, : self._n_learned])
            self._lim = (self.limit if self._ceiling is None
                         else np.minimum(self._ceiling, self.limit))
            if self._n_learned >= buf.shape[1]:
                self._learn = None  # fixed from now on

    def _relative_limit(self, mags: np.ndarray) -> np.ndarray:
        """spike_limit x max(each channel's typical magnitude, its group's median) (inf: none)."""
        typical = np.quantile(mags, MAGNITUDE_QUANTILE, axis=1).astype(np.float64)
        groups = self._groups if self._groups is not None else np.zeros(len(typical), str)
        for g in np.unique(groups):
            members = groups == g
            pos = typical[members & (typical > 0)]
            if len(pos):  # a channel quiet while learning gets its mates' magnitude
                typical[members] = np.maximum(typical[members], float(np.median(pos)))
        typical[~(typical > 0)] = np.inf  # flat everywhere: no relative limit
        return self.spike_limit * typical
