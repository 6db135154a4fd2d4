"""Online preprocessing and epoching: the bundle's causal chain run on chunks as they arrive.

Raw samples (stream channel order) -> channel map (bundle order) -> :class:`CausalChain` (state
kept; the same object offline training used) -> a ring buffer at the model rate. Markers become
epochs as soon as the last processed sample of their window exists; each epoch is baseline-
corrected and noise-normalised with the bundle's frozen matrix. Without markers, a sliding window
emits an epoch every hop. Every epoch carries the timestamps of the stages it went through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from pylsl import local_clock

from neuralign.bundle import Bundle
from neuralign.realtime.channels import ChannelMap, map_channels
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.signal.chain import CausalChain, ChainSpec, cut_epoch, epoch_start
from neuralign.signal.whitening import inverse_sqrt

log = logging.getLogger(__name__)


@dataclass
class Epoch:
    """One decoded unit: normalised data (C, T) + what it is + when each stage happened."""

    epoch_id: int
    data: np.ndarray
    label: str | None  # image id from the marker, None in sliding-window mode
    onset_index: int  # global input sample index of the stimulus onset (or window start)
    onset_timestamp: float
    last_sample_timestamp: float  # LSL timestamp of the last input sample the epoch needed
    stages: dict[str, float] = field(default_factory=dict)  # stage -> local_clock()


@dataclass
class _Pending:
    label: str | None
    onset_index: int
    onset_timestamp: float
    marker_received: float


class OnlinePipeline:
    """Turns raw chunks + markers into ready, normalised epochs (single-threaded; one owner)."""

    def __init__(self, bundle: Bundle, stream_ch_names: list[str], stream_sfreq: float,
                 fill_missing: bool = False, sliding_hop_s: float | None = None,
                 buffer_seconds: float = 30.0, stream_label: str = "the stream"):
        m = bundle.manifest
        self.pre = m.preprocessing
        self.channel_map: ChannelMap = map_channels(stream_ch_names, bundle.ch_names, fill_missing,
                                                    stream_label)
        self.spec = ChainSpec.from_preprocessing(self.pre, stream_sfreq, bundle.ch_names)
        if abs(self.spec.sfreq_out - m.sfreq) > 1e-6:
            from neuralign.errors import UserError

            raise UserError(
                f"{stream_label}: sampling rate {stream_sfreq:g} Hz cannot feed the bundle's "
                f"{m['sfreq']:g} Hz model (needs an integer multiple of it)"
            )
        self.chain = CausalChain(self.spec)
        self.q = self.chain.q
        self.sfreq_out = self.spec.sfreq_out
        self.normalizer = m.noise_normalization.whitening()
        self.w = self.normalizer.w.astype(np.float32)
        self.mean = (self.normalizer.mean.astype(np.float32) if self.normalizer.mean is not None
                     else np.zeros(len(bundle.ch_names), np.float32))
        self.tmin, self.tmax = self.pre.tmin, self.pre.tmax
        self.baseline = tuple(self.pre.baseline) if self.pre.baseline else None
        self.n_times = m.epoch.n_times
        self.tstart = min(self.tmin, self.baseline[0]) if self.baseline else self.tmin
        self.n_pre = int(round((self.tmin - self.tstart) * self.sfreq_out))
        self.processed = RingBuffer(len(bundle.ch_names), int(buffer_seconds * self.sfreq_out))
        self.missing = np.flatnonzero(self.channel_map.index < 0)  # filled by the model
        nn_cfg = self.pre.noise_normalization
        # Optional online noise normalisation: an exponentially weighted channel covariance of the
        # filtered stream, re-whitened once a second. Off by default: it breaks exact parity with
        # the offline evaluation, by design (it adapts to the live session's noise).
        self.online_update = nn_cfg.online_update and self.normalizer.method == "mvnn"
        self._ew_alpha = 1.0 - 0.5 ** (1.0 / (nn_cfg.online_halflife_s * self.sfreq_out))
        self._ew_cov: np.ndarray | None = None
        self._ew_next = 0
        self._ew_floor = nn_cfg.eigenvalue_floor
        self.sliding_hop = (int(round(sliding_hop_s * stream_sfreq)) if sliding_hop_s else None)
        self._next_window = None
        self._pending: list[_Pending] = []
        self._n_epochs = 0
        self.n_in = 0
        self._in_ts: RingBuffer | None = None

    # ---- raw in -----------------------------------------------------------------------------
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

    def _update_whitening(self, y: np.ndarray) -> None:
        """Fold new samples into the EW covariance; recompute W = Sigma^-1/2 once per second."""
        yc = y - y.mean(axis=1, keepdims=True)
        cov = yc @ yc.T / max(y.shape[1], 1)
        a = 1.0 - (1.0 - self._ew_alpha) ** y.shape[1]  # weight of this chunk
        self._ew_cov = cov if self._ew_cov is None else (1 - a) * self._ew_cov + a * cov
        if self.processed.n_written >= self._ew_next:
            self._ew_next = self.processed.n_written + int(self.sfreq_out)
            self.w = inverse_sqrt(self._ew_cov, self._ew_floor).astype(np.float32)

    # ---- events -----------------------------------------------------------------------------
    def add_marker(self, label: str | None, onset_index: int, onset_timestamp: float,
                   received: float | None = None) -> None:
        self._pending.append(_Pending(label, onset_index, onset_timestamp,
                                      received if received is not None else local_clock()))

    def _window_bounds(self, onset_index: int) -> tuple[int, int]:
        i0 = epoch_start(onset_index, self.q, self.sfreq_out, self.tstart)
        return i0, i0 + self.n_pre + self.n_times

    def last_input_index(self, onset_index: int) -> int:
        """Global input index of the last raw sample this epoch needs."""
        return (self._window_bounds(onset_index)[1] - 1) * self.q

    def ready_epochs(self, raw_timestamp_of) -> list[Epoch]:
        """Cut every pending epoch whose window is complete; ``raw_timestamp_of(i)`` maps an
        input index to its LSL timestamp (from the source's ring buffer)."""
        if self.sliding_hop:
            self._schedule_sliding(raw_timestamp_of)
        out, keep = [], []
        n_done = self.processed.n_written
        for p in self._pending:
            i0, i1 = self._window_bounds(p.onset_index)
            if i1 > n_done:
                keep.append(p)
                continue
            if i0 < self.processed.first_available:
                log.warning("epoch %s dropped: its window left the buffer", p.label)
                continue
            t_ep = local_clock()
            seg, _ = self.processed.read(i0, i1)
            ep = cut_epoch(seg, p.onset_index, self.q, self.sfreq_out, self.tmin, self.tmax,
                           self.baseline, offset=i0)
            t_cut = local_clock()
            ep = self.w @ (ep - self.mean[:, None])
            t_norm = local_clock()
            last_ts = raw_timestamp_of(self.last_input_index(p.onset_index))
            out.append(Epoch(self._n_epochs, ep.astype(np.float32), p.label, p.onset_index,
                             p.onset_timestamp, last_ts if last_ts is not None else float("nan"),
                             {"marker_received": p.marker_received, "ready": t_ep,
                              "epoched": t_cut, "normalized": t_norm}))
            self._n_epochs += 1
        self._pending = keep
        return out

    def seconds_until_next_ready(self) -> float | None:
        """Stream time until the next pending epoch's window is complete (None: none pending).

        Lets the batcher dispatch at once when no other epoch can join the batch before its
        deadline, instead of always waiting for the deadline.
        """
        if not self._pending:
            return None
        end = min(self._window_bounds(p.onset_index)[1] for p in self._pending)
        return max(0.0, (end - self.processed.n_written) / self.sfreq_out)

    def _schedule_sliding(self, raw_timestamp_of) -> None:
        """Sliding-window mode: a window (tmin..tmax relative to its start) every hop."""
        if self._next_window is None:
            self._next_window = int(round(-self.tstart * self.q * self.sfreq_out))
        while self._next_window <= self.n_in:
            ts = raw_timestamp_of(self._next_window)
            self.add_marker(None, self._next_window, ts if ts is not None else float("nan"))
            self._next_window += self.sliding_hop
