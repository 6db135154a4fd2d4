"""The online signal path: the bundle's causal chain run on chunks as they arrive.

Raw samples (stream channel order) -> channel map (bundle order) -> :class:`CausalChain` (state
kept; the same object offline training used) -> a ring buffer at the model rate. Noise
normalisation is the bundle's frozen :class:`~neuralign.signal.whitening.Whitening`, applied by
:meth:`Pipeline.normalize` with the very code offline evaluation uses. Deciding which epochs to
cut is the :class:`~neuralign.realtime.epocher.Epocher`'s job: it reads the output through
:attr:`Pipeline.output` (a :class:`ProcessedView`: windows already normalised, where the gaps and
bad samples are), never the pipeline itself, so data flows one way.

Bad input never reaches the chain's state: a :class:`~neuralign.signal.guard.SampleGuard` holds
the last good value in place of NaN/Inf (and railed) samples and the pipeline remembers where
they were (:meth:`Pipeline.bad_between`), so the epochs they touch are flagged, never decoded
silently. Samples the engine never saw (a ring-buffer overrun) are skipped on both grids so that
global indices keep following the source's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from neuralign.bundle import Bundle
from neuralign.errors import UserError
from neuralign.realtime.channels import ChannelMap, check_types, map_channels
from neuralign.realtime.epocher import NormalizedWindow
from neuralign.realtime.health import Health, RateLimitedLog
from neuralign.realtime.lsl_io import local_clock
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.realtime.scale_check import ScaleCheck
from neuralign.signal.chain import CausalChain, ChainSpec
from neuralign.signal.guard import LEARN_SAMPLES, SampleGuard, channel_ceilings
from neuralign.signal.whitening import Whitening, inverse_sqrt

#: bad-sample ranges remembered (older ones have left any epoch window)
MAX_BAD_RANGES = 4096
#: seconds of input the sample guard learns each channel's typical magnitude over
LEARN_SECONDS = 2.0

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


@dataclass(frozen=True)
class SignalSnapshot:
    """The newest processed samples of one stream (bundle channel order, model rate): what a
    viewer plots. ``data`` and ``timestamps`` are copies, safe to keep."""

    data: np.ndarray  # (C, T) float32
    timestamps: np.ndarray  # (T,) LSL time of each processed sample
    sfreq: float
    n_written: int  # processed samples written so far (one past the last one here)
    stream: str | None = None  # the engine's name of the stream (None with one source)


class Pipeline:
    """Filters raw chunks into the processed buffer and normalises epochs (one owner thread).

    Global indices: input sample ``i`` (counted from the first sample pushed) lands on processed
    sample ``i / q`` when ``i`` is a multiple of the decimation ``q`` (see
    :mod:`neuralign.signal.chain`).
    """

    def __init__(self, bundle: Bundle, stream_ch_names: list[str], stream_sfreq: float,
                 fill_missing: bool = False, buffer_seconds: float = 30.0,
                 stream_label: str = "the stream", rail: float | None = None,
                 health: Health | None = None, stream_ch_types: Sequence[str] | None = None,
                 spike_limit: float | None = None):
        m = bundle.manifest
        pre = m.preprocessing
        self.health = health if health is not None else Health()
        self.channel_map: ChannelMap = map_channels(stream_ch_names, bundle.ch_names, fill_missing,
                                                    stream_label)
        if stream_ch_types is not None:
            check_types(self.channel_map, list(stream_ch_types), bundle.ch_names,
                        m.channels.types, stream_label)
        self.spec = ChainSpec.from_preprocessing(pre, stream_sfreq, bundle.ch_names)
        if self.channel_map.has_missing and self.spec.reference == "average":
            # the average of the channels that exist: zeros for the missing ones would pull
            # every present channel away from what training saw
            self.spec.reference = [bundle.ch_names[i] for i in self.channel_map.present]
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
        if len(self.missing):
            # the present channels whitened on their own (their re-referenced covariance), the
            # missing rows left at 0: the full W would mix the zero rows into the present ones
            self.whitening = self.whitening.restricted(
                self.channel_map.present, recentred=self.spec.reference != pre.reference
                and pre.reference == "average")
        self.n_in = 0  # global input index of the next sample (follows the source's index)
        self._present = self.channel_map.present if len(self.missing) else None
        # rail (volts) on volt channels (on every channel of an EEG bundle, as always), fixed
        # ceilings on MEG sensors, and for every modality spike_limit x each channel's typical
        # magnitude, learned over the stream's first seconds (LEARN_SECONDS)
        kept = self.channel_map.present
        types = [m.channels.types[i] for i in kept] if len(m.channels.types) == len(
            bundle.ch_names) else ["misc"] * len(kept)
        self.guard = SampleGuard(
            len(kept), channel_ceilings(types, rail, rail_all=m.modality in (None, "eeg")),
            spike_limit, learn_stride=max(1, round(LEARN_SECONDS * stream_sfreq / LEARN_SAMPLES)),
            groups=types)
        self.scale_check = ScaleCheck(m, self.health, self.spec, self.missing, stream_label)
        self._bad: deque[tuple[int, int]] = deque(maxlen=MAX_BAD_RANGES)  # [start, stop) input
        nn_cfg = pre.noise_normalization
        # Optional online noise normalisation: an exponentially weighted channel covariance of the
        # filtered stream, re-whitened once a second. Off by default: it breaks exact parity with
        # the offline evaluation, by design (it adapts to the live session's noise).
        self.online_update = nn_cfg.online_update and self.whitening.method == "mvnn"
        self._ew_alpha = 1.0 - 0.5 ** (1.0 / (nn_cfg.online_halflife_s * self.sfreq_out))
        self._ew_sum: np.ndarray | None = None  # EW sums of x, x x^T and of the weights
        self._ew_sq: np.ndarray | None = None
        self._ew_w = 0.0
        self._ew_next = 0
        self._ew_floor = nn_cfg.eigenvalue_floor
        #: what the epocher reads (the pipeline stays the only writer)
        self.output = ProcessedView(self)

    def push(self, data: np.ndarray, timestamps: np.ndarray, start: int | None = None,
             restarts: Collection[int] = ()) -> tuple[float, float]:
        """Filter a raw chunk (stream channel order) whose first sample has the source's global
        index ``start`` (default: right after the previous chunk). Returns (t_start, t_filtered).

        ``restarts``: global indices inside the chunk whose sample does not follow its
        predecessor (the gaps the source's clock confirmed, found once by the caller): the
        filters restart there (:meth:`restart_filters`) and the processed grid is marked, which
        is where the epocher learns of the gap.
        """
        if not restarts:
            return self._filter(data, timestamps, start)
        first = self.n_in if start is None else start
        cuts = sorted({first, first + data.shape[1], *restarts})
        t_start = t_done = None
        for a, b in zip(cuts[:-1], cuts[1:]):
            if a in restarts:
                if a != self.n_in:  # samples lost before the gap: skip to it first
                    self._skip_to(a)
                self.restart_filters(a)
            t0, t_done = self._filter(data[:, a - first:b - first],
                                      timestamps[a - first:b - first], start=a)
            t_start = t0 if t_start is None else t_start
        return t_start, t_done

    def _filter(self, data: np.ndarray, timestamps: np.ndarray,
                start: int | None) -> tuple[float, float]:
        """One contiguous piece of :meth:`push`."""
        t0 = local_clock()
        if start is not None and start != self.n_in:
            self._skip_to(start)
        x = self.channel_map.apply(np.asarray(data, dtype=np.float64))
        self.scale_check.feed_input(x)  # before the rail guard: it would hide a unit mistake
        present = self._present
        if present is None:
            x, rep = self.guard.apply(x)
        else:  # --fill-missing: only the channels the stream has can be bad
            x[present], rep = self.guard.apply(x[present])
        if rep.bad.any():
            self._note_bad(rep.bad, rep.n_non_finite, rep.n_railed)
        y = self.chain.process(x)
        if y.shape[1]:
            if len(self.missing):
                y[self.missing] = 0.0  # ignored by the restricted whitening; the model fills them in
            self.processed.write(y.astype(np.float32), timestamps[(-self.n_in) % self.q :: self.q]
                                 [: y.shape[1]])
            if self.online_update:
                self._update_whitening(y)
        self.n_in += data.shape[1]
        return t0, local_clock()

    def _note_bad(self, bad: np.ndarray, n_non_finite: int, n_railed: int) -> None:
        """Remember the bad input ranges of a chunk; count and (rate-limited) warn."""
        idx = np.flatnonzero(bad)
        splits = np.flatnonzero(np.diff(idx) > 1) + 1
        for run in np.split(idx, splits):
            self._bad.append((self.n_in + int(run[0]), self.n_in + int(run[-1]) + 1))
        h = self.health
        h.non_finite_samples += n_non_finite
        h.railed_samples += n_railed
        _rl.log("bad-samples", logging.WARNING,
                "bad input: %d non-finite and %d railed samples in this chunk (%d / %d so far); "
                "held at the last good value, the epochs they touch are flagged",
                n_non_finite, n_railed, h.non_finite_samples, h.railed_samples)

    def bad_between(self, start: int, stop: int) -> bool:
        """True when an input sample in ``[start, stop]`` was non-finite or railed."""
        return any(a <= stop and b > start for a, b in self._bad)

    def _skip_to(self, start: int) -> None:
        """Samples ``[n_in, start)`` will never arrive (overrun): jump both grids to ``start``
        and restart the filters there (the signal is not continuous across the hole)."""
        if start < self.n_in:
            raise ValueError(f"input index went back from {self.n_in} to {start}")
        lost = start - self.n_in
        self.health.lost_samples += lost
        n_out_before = -(-self.n_in // self.q)
        n_out_after = -(-start // self.q)
        self.processed.skip(n_out_after - n_out_before)
        self.processed.mark_gap(n_out_after)
        self.chain.restart(start)
        self.n_in = start
        _rl.log("lost", logging.WARNING, "engine fell behind: %d input samples lost "
                "(%d so far); epochs across the hole are dropped", lost,
                self.health.lost_samples)

    def restart_filters(self, at: int) -> None:
        """Input sample ``at`` does not follow its predecessor (a gap, a reconnection): restart
        the chain there, so the hole does not ring through the filters. The filters take their
        state from the first sample after it (the steady state of a step of that value: settled,
        no start-up transient from the DC offset); the decimation phase stays on the global
        grid, and the processed sample of ``at`` is marked as a discontinuity too."""
        if at != self.n_in:
            raise ValueError(f"restart at input {at}, but the next input sample is {self.n_in}")
        self.chain.restart(at)
        self.processed.mark_gap(-(-at // self.q))
        self.health.filter_restarts += 1

    def normalize(self, epoch: np.ndarray) -> np.ndarray:
        """Noise-normalise a (channels, times) epoch: W (x - mean), shared with offline (with
        --fill-missing, W restricted to the present channels: :meth:`Whitening.restricted`)."""
        return self.whitening.apply(epoch)

    def snapshot(self, seconds: float, stream: str | None = None) -> SignalSnapshot | None:
        """A copy of the last ``seconds`` of the processed signal (None: fewer than 2 samples,
        or overwritten while read). Safe from any thread."""
        buf = self.processed
        n = buf.n_written
        start = max(buf.first_available, n - int(round(seconds * self.sfreq_out)))
        if n - start < 2:
            return None
        got = buf.read(start, n)
        if got is None:
            return None
        return SignalSnapshot(got[0], got[1], self.sfreq_out, n, stream)

    @property
    def online_covariance(self) -> np.ndarray | None:
        """The exponentially weighted channel covariance of the filtered stream (None before the
        first sample or when ``online_update`` is off)."""
        if self._ew_sum is None or self._ew_w <= 0:
            return None
        mean = self._ew_sum / self._ew_w
        return self._ew_sq / self._ew_w - np.outer(mean, mean)

    def _update_whitening(self, y: np.ndarray) -> None:
        """Fold new samples into the EW mean and covariance, sample by sample (per-sample
        weights, so the chunk size does not matter); recompute W = Sigma^-1/2 once a second."""
        y = np.asarray(y, dtype=np.float64)
        n = y.shape[1]
        decay = 1.0 - self._ew_alpha
        wts = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)  # newest sample weighs 1
        if self._ew_sum is None:
            self._ew_sum = np.zeros(y.shape[0])
            self._ew_sq = np.zeros((y.shape[0], y.shape[0]))
        keep = decay ** n
        self._ew_sum = keep * self._ew_sum + y @ wts
        self._ew_sq = keep * self._ew_sq + (y * wts) @ y.T
        self._ew_w = keep * self._ew_w + float(wts.sum())
        if self.processed.n_written >= self._ew_next:
            self._ew_next = self.processed.n_written + int(self.sfreq_out)
            cov = self.online_covariance
            p = self._present
            try:
                if p is None:
                    w = inverse_sqrt(cov, self._ew_floor)
                else:  # the missing rows are zeros: whiten the present block, as at start
                    w = np.zeros_like(cov)
                    w[np.ix_(p, p)] = inverse_sqrt(cov[np.ix_(p, p)], self._ew_floor)
            except UserError as exc:  # all-zero input (a flat stream): keep the previous W
                _rl.log("whitening", logging.WARNING, "online whitening not updated: %s", exc)
                return
            self.whitening = dataclasses.replace(self.whitening, w=w)


class ProcessedView:
    """The read side of a :class:`Pipeline`'s output, all the epocher gets (it implements
    :class:`~neuralign.realtime.epocher.ProcessedSignal`): the grid (rates, decimation), how far
    the signal is written, where the gaps and bad input samples are, and windows baseline-corrected
    and noise-normalised with the pipeline's current whitening."""

    def __init__(self, pipeline: Pipeline):
        self._pipe = pipeline
        self._buf = pipeline.processed
        self.q: int = pipeline.q
        self.sfreq_in: float = pipeline.spec.sfreq_in
        self.sfreq_out: float = pipeline.sfreq_out
        self.capacity: int = pipeline.processed.capacity

    @property
    def n_in(self) -> int:
        """Input samples consumed (global index of the next one)."""
        return self._pipe.n_in

    @property
    def n_written(self) -> int:
        """Processed samples written (global index of the next one)."""
        return self._buf.n_written

    @property
    def first_available(self) -> int:
        """Oldest processed sample still held."""
        return self._buf.first_available

    def gap_between(self, start: int, stop: int) -> bool:
        """A discontinuity (gap, reconnection, overrun) inside processed ``(start, stop]``."""
        return self._buf.gap_between(start, stop)

    def bad_between(self, start: int, stop: int) -> bool:
        """A non-finite or railed input sample in input ``[start, stop]``."""
        return self._pipe.bad_between(start, stop)

    def read_normalized(self, start: int, stop: int,
                        baseline: Callable[[np.ndarray], np.ndarray]) -> NormalizedWindow:
        """Processed samples ``[start, stop)``, corrected by ``baseline`` (the epoch's cut, the
        offline function) and then noise-normalised: the order offline evaluation uses."""
        seg, _ = self._buf.read(start, stop)
        ep = baseline(seg)
        t_cut = local_clock()
        ep = self._pipe.normalize(ep)
        return NormalizedWindow(ep, t_cut, local_clock())

    def read(self, start: int, stop: int) -> np.ndarray:
        """Processed samples ``[start, stop)`` as written (channels, n); ValueError when they
        are not all held."""
        got = self._buf.read(start, stop)
        if got is None:
            raise ValueError(f"processed samples [{start}, {stop}) are not held")
        return got[0]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """The pipeline's noise normalisation (what :meth:`read_normalized` applies)."""
        return self._pipe.normalize(x)
