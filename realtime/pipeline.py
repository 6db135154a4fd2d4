"""The online signal path: the bundle's causal chain run on chunks as they arrive.

Raw samples (stream channel order) -> channel map (bundle order) -> :class:`CausalChain` (state
kept; the same object offline training used) -> a ring buffer at the model rate. Noise
normalisation is the bundle's frozen :class:`~neuralign.signal.whitening.Whitening`, applied by
:meth:`Pipeline.normalise` with the very code offline evaluation uses. Cutting epochs out of the
buffer is the :class:`~neuralign.realtime.epocher.Epocher`'s job.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from neuralign.bundle import Bundle
from neuralign.errors import UserError
from neuralign.realtime.channels import ChannelMap, map_channels
from neuralign.realtime.lsl_io import local_clock
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.signal.chain import CausalChain, ChainSpec
from neuralign.signal.whitening import Whitening, inverse_sqrt

log = logging.getLogger(__name__)


class Pipeline:
    """Filters raw chunks into the processed buffer and normalises epochs (one owner thread).

    Global indices: input sample ``i`` (counted from the first sample pushed) lands on processed
    sample ``i / q`` when ``i`` is a multiple of the decimation ``q`` (see
    :mod:`neuralign.signal.chain`).
    """

    def __init__(self, bundle: Bundle, stream_ch_names: list[str], stream_sfreq: float,
                 fill_missing: bool = False, buffer_seconds: float = 30.0,
                 stream_label: str = "the stream"):
        m = bundle.manifest
        pre = m.preprocessing
        self.channel_map: ChannelMap = map_channels(stream_ch_names, bundle.ch_names, fill_missing,
                                                    stream_label)
        self.spec = ChainSpec.from_preprocessing(pre, stream_sfreq, bundle.ch_names)
        if abs(self.spec.sfreq_out - m.sfreq) > 1e-6:
            raise UserError(
                f"{stream_label}: sampling rate {stream_sfreq:g} Hz cannot feed the bundle's "
                f"{m.sfreq:g} Hz model (needs an integer multiple of it)"
            )
        self.chain = CausalChain(self.spec)
        self.q = self.chain.q
        self.sfreq_out = self.spec.sfreq_out
        self.whitening: Whitening = m.noise_normalization.whitening()
        self.processed = RingBuffer(len(bundle.ch_names), int(buffer_seconds * self.sfreq_out))
        self.missing = np.flatnonzero(self.channel_map.index < 0)  # filled by the model
        self.n_in = 0  # raw input samples pushed so far
        nn_cfg = pre.noise_normalization
        # Optional online noise normalisation: an exponentially weighted channel covariance of the
        # filtered stream, re-whitened once a second. Off by default: it breaks exact parity with
        # the offline evaluation, by design (it adapts to the live session's noise).
        self.online_update = nn_cfg.online_update and self.whitening.method == "mvnn"
        self._ew_alpha = 1.0 - 0.5 ** (1.0 / (nn_cfg.online_halflife_s * self.sfreq_out))
        self._ew_cov: np.ndarray | None = None
        self._ew_next = 0
        self._ew_floor = nn_cfg.eigenvalue_floor

    def push(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[float, float]:
        """Filter a raw chunk (stream channel order). Returns (t_start, t_filtered)."""
        t0 = local_clock()
        x = self.channel_map.apply(np.asarray(data, dtype=np.float64))
        y = self.chain.process(x)
        if y.shape[1]:
            self.processed.write(y.astype(np.float32), timestamps[(-self.n_in) % self.q :: self.q]
                                 [: y.shape[1]])
            if self.online_update:
                self._update_whitening(y)
        self.n_in += data.shape[1]
        return t0, local_clock()

    def normalise(self, epoch: np.ndarray) -> np.ndarray:
        """Noise-normalise a (channels, times) epoch: W (x - mean), shared with offline."""
        return self.whitening.apply(epoch)

    def _update_whitening(self, y: np.ndarray) -> None:
        """Fold new samples into the EW covariance; recompute W = Sigma^-1/2 once per second."""
        yc = y - y.mean(axis=1, keepdims=True)
        cov = yc @ yc.T / max(y.shape[1], 1)
        a = 1.0 - (1.0 - self._ew_alpha) ** y.shape[1]  # weight of this chunk
        self._ew_cov = cov if self._ew_cov is None else (1 - a) * self._ew_cov + a * cov
        if self.processed.n_written >= self._ew_next:
            self._ew_next = self.processed.n_written + int(self.sfreq_out)
            self.whitening = dataclasses.replace(
                self.whitening, w=inverse_sqrt(self._ew_cov, self._ew_floor))
