"""The causal preprocessing chain: re-reference -> notch -> band-pass -> anti-aliased decimation.

One :class:`ChainSpec` (JSON-serialisable, stored in the model bundle) builds one
:class:`CausalChain`. Offline training cuts epochs from continuous data run through a chain; the
realtime engine runs an identical chain on chunks as they arrive. Because every stage is causal
and keeps its state, chunking does not change the output: that is the parity invariant.

Decimation keeps input samples ``0, q, 2q, ...`` (global indices) after the anti-alias filter, so
output sample ``i`` is input sample ``i * q``; :func:`epoch_start` uses the same rule online and
offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from neuralign.errors import UserError
from neuralign.signal.filters import CausalFilter, antialias_sos, bandpass_sos, notch_sos

if TYPE_CHECKING:
    from neuralign.config import PreprocessingConfig


@dataclass
class ChainSpec:
    """Everything needed to rebuild the causal chain exactly (stored in the bundle manifest)."""

    sfreq_in: float
    sfreq_out: float
    ch_names: list[str]
    reference: str | list[str] = "average"  # 'average' | 'none' | channel names to average
    l_freq: float | None = 0.1
    h_freq: float | None = 100.0
    order: int = 4
    notch_freqs: list[float] = field(default_factory=list)
    notch_q: float = 30.0

    @property
    def decimation(self) -> int:
        ratio = self.sfreq_in / self.sfreq_out
        q = int(round(ratio))
        if q < 1 or abs(ratio - q) > 1e-6:
            raise UserError(
                f"resampling {self.sfreq_in:g} Hz -> {self.sfreq_out:g} Hz: expected the input rate "
                f"to be an integer multiple of the model rate (ratio {ratio:.4f}); set "
                "preprocessing.resample_sfreq to a divisor of the input rate"
            )
        return q

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ChainSpec:
        return cls(**d)

    @classmethod
    def from_preprocessing(cls, pre: PreprocessingConfig, sfreq_in: float, ch_names: list[str]) -> ChainSpec:
        """Build from a :class:`neuralign.config.PreprocessingConfig`."""
        return cls(
            sfreq_in=float(sfreq_in),
            sfreq_out=float(min(pre.resample_sfreq, sfreq_in)),
            ch_names=list(ch_names),
            reference=pre.reference if isinstance(pre.reference, str) else list(pre.reference),
            l_freq=pre.l_freq,
            h_freq=pre.h_freq,
            order=pre.filter_order,
            notch_freqs=list(pre.notch_freqs),
            notch_q=pre.notch_q,
        )


class CausalChain:
    """Stateful chain; ``process(chunk)`` takes (channels, n) at ``sfreq_in`` and returns
    (channels, m) at ``sfreq_out`` (m may be 0 for a short chunk)."""

    def __init__(self, spec: ChainSpec):
        self.spec = spec
        self.q = spec.decimation
        self._ref_idx = self._reference_indices(spec)
        self._filters = [
            CausalFilter(sos)
            for sos in (
                notch_sos(spec.sfreq_in, spec.notch_freqs, spec.notch_q),
                bandpass_sos(spec.sfreq_in, spec.l_freq, spec.h_freq, spec.order),
                antialias_sos(self.q) if self.q > 1 else None,
            )
            if sos is not None
        ]
        self.n_in = 0  # global count of input samples consumed

    @staticmethod
    def _reference_indices(spec: ChainSpec) -> np.ndarray | None:
        if spec.reference == "none":
            return None
        if spec.reference == "average":
            return np.arange(len(spec.ch_names))
        lower = [c.lower() for c in spec.ch_names]
        missing = [c for c in spec.reference if c.lower() not in lower]
        if missing:
            raise UserError(f"preprocessing.reference: channels {missing} are not in the data")
        return np.array([lower.index(c.lower()) for c in spec.reference])

    def reset(self) -> None:
        for f in self._filters:
            f.reset()
        self.n_in = 0

    def restart(self, at: int) -> None:
        """Input sample ``at`` does not follow the previous one (a gap, a lost stretch): the
        filters start again from the next sample (settled on its value), and the decimation
        phase stays on the global grid (output sample ``i`` is still input ``i * q``)."""
        self.reset()
        self.n_in = at

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(self.spec.ch_names):
            raise ValueError(f"expected ({len(self.spec.ch_names)}, n) samples, got {x.shape}")
        if self._ref_idx is not None:
            x = x - x[self._ref_idx].mean(axis=0, keepdims=True)
        for f in self._filters:
            x = f.process(x)
        start = self.n_in
        self.n_in += x.shape[1]
        if self.q == 1:
            return x
        first = (-start) % self.q  # first local index whose global index is a multiple of q
        return x[:, first :: self.q]

    def output_index(self, input_sample: int) -> int:
        """Output-grid index nearest to a global input sample index."""
        return int(np.floor(input_sample / self.q + 0.5))


def epoch_start(onset_input_sample: int, q: int, sfreq_out: float, tstart: float) -> int:
    """First output index of an epoch whose window starts ``tstart`` s from the onset."""
    return int(np.floor(onset_input_sample / q + 0.5)) + int(round(tstart * sfreq_out))


def cut_epoch(
    y: np.ndarray, onset_input_sample: int, q: int, sfreq_out: float,
    tmin: float, tmax: float, baseline: tuple[float, float] | None,
    offset: int = 0,
) -> np.ndarray | None:
    """Cut one baseline-corrected epoch from decimated data ``y`` (channels, n).

    ``offset`` is the global output index of ``y[:, 0]`` (a ring buffer's start). Returns None if
    the window is not (yet) inside ``y``.
    """
    tstart = min(tmin, baseline[0]) if baseline is not None else tmin
    i0 = epoch_start(onset_input_sample, q, sfreq_out, tstart) - offset
    n_pre = int(round((tmin - tstart) * sfreq_out))
    n_times = int(round((tmax - tmin) * sfreq_out))
    i1 = i0 + n_pre + n_times
    if i0 < 0 or i1 > y.shape[1]:
        return None
    seg = y[:, i0:i1]
    if baseline is not None:
        b0, b1 = baseline_span(baseline, tstart, sfreq_out)
        seg = seg - seg[:, b0:b1].mean(axis=1, keepdims=True)
    return seg[:, n_pre:]


def baseline_span(baseline: tuple[float, float], tstart: float,
                  sfreq_out: float) -> tuple[int, int]:
    """The samples ``[b0, b1)`` from a window starting ``tstart`` s from the onset whose mean the
    baseline correction subtracts (at least one)."""
    b0 = int(round((baseline[0] - tstart) * sfreq_out))
    return b0, max(int(round((baseline[1] - tstart) * sfreq_out)), b0 + 1)


def epoch_times(sfreq_out: float, tmin: float, tmax: float) -> np.ndarray:
    n_times = int(round((tmax - tmin) * sfreq_out))
    return tmin + np.arange(n_times) / sfreq_out
