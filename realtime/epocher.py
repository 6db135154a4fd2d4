"""Epochs out of the processed stream: stimulus markers (or a sliding window) -> ready epochs.

A marker arrives on the LSL clock, possibly before the sample it names. The epocher places it on
the INPUT sample grid through the source's :class:`InputTimeline` (global index <-> LSL timestamp,
passed in explicitly) once that sample has arrived, and reads the epoch from the pipeline's
output (a :class:`ProcessedSignal`, the one thing it knows of the pipeline) as soon as the last
sample its window needs has been filtered: baseline correction by
:func:`~neuralign.signal.chain.cut_epoch` (the offline function), then the pipeline's noise
normalisation. Without markers a window starts every hop. Every epoch carries the timestamps of
the stages it went through.

Nothing is dropped or decoded silently (each case is counted in :class:`Health` and logged,
rate-limited): an epoch whose window already left the buffer, or spans a gap in the input (its
samples would not be the contiguous time the model was trained on: the pipeline marked it on the
processed grid where it restarted the filters), is dropped; one that touches
a non-finite or railed sample is flagged (or dropped, ``bad_epochs='drop'``); a marker that is
not an image id of the bundle is not decoded (``known_labels``); a marker stamped more than
``marker_max_wait_s`` after the newest sample for as long (or over an hour after it: on another
clock, e.g. ``time.time()``) is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from neuralign.errors import UserError
from neuralign.realtime.health import Health, RateLimitedLog
from neuralign.realtime.lsl_io import local_clock
from neuralign.signal.chain import baseline_span, cut_epoch, epoch_start

if TYPE_CHECKING:
    from neuralign.bundle import EpochSection
    from neuralign.realtime.inference import PartialEncoding
    from neuralign.realtime.sources.base import Marker
    from neuralign.realtime.threadsched import ThreadTimes

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

#: markers waiting for their sample, at most (the oldest are dropped beyond)
MAX_UNPLACED = 10000
#: distinct unknown marker values logged once each, at most
MAX_LOGGED_UNKNOWN = 1000


class InputTimeline(Protocol):
    """The source's raw samples as the epocher needs them (a source's ring buffer is one)."""

    @property
    def n_written(self) -> int: ...

    def timestamp_at(self, index: int) -> float | None: ...

    def index_of_time(self, t: float) -> int | None: ...

    @property
    def settled(self) -> int:
        """Samples before this index are final: no gap will be found among them any more."""
        ...


@dataclass(frozen=True)
class NormalizedWindow:
    """A window of the processed signal, baseline-corrected then noise-normalised, and when each
    step finished (the epoch's ``epoched`` / ``normalized`` latency stages)."""

    data: np.ndarray  # (C, T), the dtype the whitening returns
    epoched: float  # local_clock() after the baseline correction
    normalized: float  # local_clock() after the noise normalisation


class ProcessedSignal(Protocol):
    """The pipeline's output as the epocher reads it (:class:`~neuralign.realtime.pipeline.
    ProcessedView`): read only, so data flows one way, pipeline -> epocher.

    Processed sample ``i`` is input sample ``i * q``. Gaps live on the processed grid (the
    pipeline marks them where it restarts its filters: the gap rule is applied once, upstream);
    bad samples on the input grid.
    """

    q: int  # decimation: input samples per processed sample
    sfreq_in: float
    sfreq_out: float
    capacity: int  # processed samples held

    @property
    def n_in(self) -> int: ...

    @property
    def n_written(self) -> int: ...

    @property
    def first_available(self) -> int: ...

    def gap_between(self, start: int, stop: int) -> bool: ...

    def bad_between(self, start: int, stop: int) -> bool: ...

    def read_normalized(self, start: int, stop: int,
                        baseline: Callable[[np.ndarray], np.ndarray]) -> NormalizedWindow: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Processed samples ``[start, stop)`` as written (channels, n)."""
        ...

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """The pipeline's noise normalisation of (channels, n) samples."""
        ...


@dataclass
class Epoch:
    """One decoded unit: normalised data (C, T) + what it is + when each stage happened."""

    epoch_id: int
    data: np.ndarray
    label: str | None  # image id from the marker, None in sliding-window mode
    onset_index: int  # global input sample index of the stimulus onset (or window start)
    onset_timestamp: float
    last_input_index: int  # global input index of the last raw sample the epoch needed
    last_sample_timestamp: float  # LSL timestamp of that sample
    stages: dict[str, float] = field(default_factory=dict)  # stage -> local_clock()
    flags: list[str] = field(default_factory=list)  # e.g. "bad_samples": decoded, but suspect
    stream: str | None = None  # which input stream (set by an engine with several sources)
    #: its first frames, encoded while its last samples were arriving (early encoding)
    early: PartialEncoding | None = None
    #: the acquisition thread's clocks before and after the pull that brought its last sample
    #: (only while a benchmark probes scheduling)
    pull_times: tuple[ThreadTimes, ThreadTimes] | None = None


@dataclass(frozen=True)
class EpochWindow:
    """Where the epoch of an onset lies on the processed grid, and the input it needs.

    ``tmin``/``tmax``/``baseline`` in seconds from the onset; the window read from the buffer
    starts at the earlier of ``tmin`` and the baseline start.
    """

    q: int  # decimation: input samples per processed sample
    sfreq_out: float
    tmin: float
    tmax: float
    baseline: tuple[float, float] | None
    n_times: int

    @classmethod
    def for_signal(cls, epoch: EpochSection, signal: ProcessedSignal) -> EpochWindow:
        """The bundle's epoch window on this processed signal's grid."""
        return cls(signal.q, signal.sfreq_out, epoch.tmin, epoch.tmax,
                   tuple(epoch.baseline) if epoch.baseline else None, epoch.n_times)

    @property
    def tstart(self) -> float:
        return min(self.tmin, self.baseline[0]) if self.baseline else self.tmin

    def bounds(self, onset_index: int) -> tuple[int, int]:
        """Processed indices ``[i0, i1)`` the epoch of an input onset reads (baseline included)."""
        i0 = epoch_start(onset_index, self.q, self.sfreq_out, self.tstart)
        n_pre = int(round((self.tmin - self.tstart) * self.sfreq_out))
        return i0, i0 + n_pre + self.n_times

    def last_input_index(self, onset_index: int) -> int:
        """Global input index of the last raw sample the epoch of this onset needs."""
        return (self.bounds(onset_index)[1] - 1) * self.q

    @property
    def baseline_span(self) -> tuple[int, int]:
        """The samples ``[b0, b1)`` from the window's start whose mean the baseline correction
        subtracts (:func:`~neuralign.signal.chain.cut_epoch`'s; (0, 0): none)."""
        return baseline_span(self.baseline, self.tstart, self.sfreq_out) if self.baseline \
            else (0, 0)

    def first_window_onset(self) -> int:
        """Input index of the first sliding-window onset whose window starts at input 0."""
        return int(round(-self.tstart * self.q * self.sfreq_out))

    def cut(self, segment: np.ndarray, onset_index: int, offset: int) -> np.ndarray:
        """Baseline-corrected epoch from ``segment`` = processed samples from index ``offset``."""
        return cut_epoch(segment, onset_index, self.q, self.sfreq_out, self.tmin, self.tmax,
                         self.baseline, offset=offset)


@dataclass
class QueuedEpoch:
    """An onset placed on the input grid whose window is not complete yet."""

    label: str | None
    onset_index: int
    onset_timestamp: float
    marker_received: float
    #: its first frames, encoded so far (early encoding; the engine keeps it up to date)
    early: PartialEncoding | None = None
    #: its baseline's per-channel mean (C, 1) once read (early encoding; 0: no baseline)
    baseline_mean: np.ndarray | float | None = None
    #: its window's processed indices [i0, i1) and last input index (``EpochWindow``'s, set
    #: when queued: every pass reads them for every queued epoch)
    i0: int = 0
    i1: int = 0
    last: int = 0
    #: its first ``n_ahead`` columns, baseline-corrected and normalised as they came (what
    #: early encoding read): the cut epoch only normalises the columns after them
    ahead: np.ndarray | None = None
    n_ahead: int = 0


@dataclass(frozen=True)
class Filling:
    """A queued epoch's first ``n_cols`` samples, readable by column: baseline-corrected and
    noise-normalised exactly as its complete window will be (float32). Reading only the
    columns a step needs keeps a 1024-channel epoch's early encoding short."""

    epoch: QueuedEpoch
    n_cols: int  # epoch columns written so far (< the epoch's length)
    read: Callable[[int, int], np.ndarray]  # epoch columns [c0, c1) -> (C, c1 - c0)


class Epocher:
    """Markers in, ready normalised epochs out (single-threaded: the engine's processing thread).

    ``signal``: the pipeline's output (:attr:`Pipeline.output`). ``inputs``: the source's
    sample timeline (its ring buffer). ``sliding_hop_s``: without markers, a window every hop
    (seconds of input). ``health``: where drops and flags are counted (the engine's).
    """

    def __init__(self, signal: ProcessedSignal, window: EpochWindow, inputs: InputTimeline,
                 sliding_hop_s: float | None = None, health: Health | None = None,
                 known_labels: Iterable[str] | None = None,
                 bad_epochs: Literal["flag", "drop"] = "flag",
                 marker_max_wait_s: float = 10.0):
        self.signal = signal
        self.window = window
        self.inputs = inputs
        self.health = health if health is not None else Health()
        self.known = None if known_labels is None else frozenset(known_labels)
        self.bad_epochs = bad_epochs
        self.marker_max_wait_s = marker_max_wait_s
        self._unknown_logged: set[str] = set()
        span = window.tmax - window.tstart
        held = signal.capacity / window.sfreq_out
        if span >= held:
            raise UserError(f"the epoch window ({window.tstart:g} .. {window.tmax:g} s = {span:g} "
                            f"s) does not fit in the buffer (realtime.buffer_seconds = "
                            f"{held:g} s); raise realtime.buffer_seconds above {span:g}")
        self.input_sfreq = signal.sfreq_in
        self.sliding_hop = (int(round(sliding_hop_s * self.input_sfreq)) if sliding_hop_s
                            else None)
        self._next_window: int | None = None
        self._unplaced: list[Marker] = []  # markers whose sample has not arrived yet
        self._pending: list[QueuedEpoch] = []  # placed, window not complete yet
        self._n_epochs = 0
        #: called with (marker, input index) when a marker is placed (the recorder logs it, so
        #: offline epoching of the recording cuts where the engine cut)
        self.on_placed: Callable[[Marker, int], None] | None = None

    # ---- in ---------------------------------------------------------------------------------
    def add_markers(self, markers: Iterable[Marker]) -> None:
        """Queue stimulus markers (LSL time); each is placed once its sample has arrived.
        Markers that are not image ids of the bundle (with ``known_labels``) are counted and
        logged once per value, never decoded."""
        for m in markers:
            if self.known is not None and m.value not in self.known:
                self.health.unknown_markers += 1
                if m.value not in self._unknown_logged and len(self._unknown_logged) < \
                        MAX_LOGGED_UNKNOWN:
                    self._unknown_logged.add(m.value)
                    log.warning("marker %r is not an image id of the bundle: not decoded (set "
                                "realtime.decode_markers: all to decode every marker)",
                                m.value[:80])
                continue
            self._unplaced.append(m)
        if len(self._unplaced) > MAX_UNPLACED:
            n = len(self._unplaced) - MAX_UNPLACED
            self._drop_deferred(self._unplaced[:n], "too many markers waiting for their samples")
            self._unplaced = self._unplaced[n:]

    def _drop_deferred(self, markers: list[Marker], why: str) -> None:
        self.health.deferred_markers_dropped += len(markers)
        last = self.inputs.timestamp_at(self.inputs.n_written - 1) if self.inputs.n_written \
            else None
        ahead = (f"; it is {markers[0].timestamp - last:.3g} s ahead of the newest sample: is "
                 "the marker stream stamped on another clock (e.g. time.time())?"
                 if last is not None else "")
        _rl.log("deferred", logging.WARNING, "%d marker(s) dropped (%s), first %r at %.3f%s "
                "(%d so far)", len(markers), why, markers[0].value[:80], markers[0].timestamp,
                ahead, self.health.deferred_markers_dropped)

    def add_onset(self, label: str | None, onset_index: int, onset_timestamp: float,
                  received: float | None = None) -> None:
        """Queue the epoch of an onset already on the input grid."""
        i0, i1 = self.window.bounds(onset_index)
        self._pending.append(QueuedEpoch(label, onset_index, onset_timestamp,
                                         received if received is not None else local_clock(),
                                         i0=i0, i1=i1,
                                         last=self.window.last_input_index(onset_index)))

    def _place(self, m: Marker) -> bool:
        """Put a marker on the input grid; False when its sample has not arrived (retry)."""
        n = self.inputs.settled  # a sample beyond may still turn out to follow a gap
        last = self.inputs.timestamp_at(n - 1) if n else None
        if last is None or m.timestamp > last + 0.5 / self.input_sfreq:
            # markers may arrive before their sample: wait for the data, but not for a sample
            # that lies further ahead of the newest one than any network delay explains
            # (an hour ahead is another clock at once; otherwise the data may only be late:
            # give it marker_max_wait_s of wall time too)
            ahead = m.timestamp - last if last is not None else 0.0
            waited = local_clock() - m.received if m.received else 0.0
            if ahead > self.marker_max_wait_s and (ahead > 3600.0
                                                   or waited > self.marker_max_wait_s):
                self._drop_deferred([m], f"it is more than {self.marker_max_wait_s:g} s ahead "
                                         "of the data")
                return True
            return False
        idx = self.inputs.index_of_time(m.timestamp)
        if idx is None:
            self.health.epochs_outside_buffer += 1
            _rl.log("outside", logging.WARNING, "marker %r at %.3f is outside the buffer; "
                    "dropped", m.value[:80], m.timestamp)
        else:
            self.add_onset(m.value, idx, m.timestamp, m.received or local_clock())
            if self.on_placed is not None:
                self.on_placed(m, idx)
        return True

    def _schedule_sliding(self) -> None:
        """Sliding-window mode: a window (tmin..tmax relative to its start) every hop."""
        if self._next_window is None:
            self._next_window = self.window.first_window_onset()
        while self._next_window <= self.signal.n_in:
            ts = self.inputs.timestamp_at(self._next_window)
            self.add_onset(None, self._next_window, ts if ts is not None else float("nan"))
            self._next_window += self.sliding_hop

    # ---- out --------------------------------------------------------------------------------
    def last_input_index(self, onset_index: int) -> int:
        """Global input index of the last raw sample the epoch of this onset needs."""
        return self.window.last_input_index(onset_index)

    def ready_epochs(self) -> list[Epoch]:
        """Cut every queued epoch whose window is complete in the processed buffer."""
        if self._unplaced:
            self._unplaced = [m for m in self._unplaced if not self._place(m)]
        if self.sliding_hop:
            self._schedule_sliding()
        signal = self.signal
        settled = self.inputs.settled
        out, keep = [], []
        for p in self._pending:
            i0, i1, last = p.i0, p.i1, p.last
            if i1 > signal.n_written or last >= settled:
                keep.append(p)
                continue
            if i0 < signal.first_available:
                self.health.epochs_outside_buffer += 1
                _rl.log("left", logging.WARNING, "epoch %s dropped: its window left the buffer "
                        "(%d so far)", p.label, self.health.epochs_outside_buffer)
                continue
            first = i0 * self.window.q
            if signal.gap_between(i0, i1 - 1):  # an input gap in [first, last] marks it
                self.health.gap_epochs_dropped += 1
                _rl.log("gap", logging.WARNING, "epoch %s dropped: its window spans a gap in the "
                        "input (%d so far)", p.label, self.health.gap_epochs_dropped)
                continue
            flags = []
            if signal.bad_between(first, last):
                if self.bad_epochs == "drop":
                    self.health.bad_epochs_dropped += 1
                    _rl.log("bad-drop", logging.WARNING, "epoch %s dropped: non-finite or railed "
                            "samples (%d so far)", p.label, self.health.bad_epochs_dropped)
                    continue
                self.health.flagged_epochs += 1
                flags.append("bad_samples")
            t_ep = local_clock()
            if p.ahead is not None:  # normalised while it filled: only its last columns left
                n_times, k = self.window.n_times, p.n_ahead
                t_cut = t_ep
                if k < n_times:
                    p.ahead[:, k:], t_cut = self._normalized(p, i1 - n_times, k, n_times)
                data, t_norm = p.ahead, local_clock()
            else:
                win = signal.read_normalized(i0, i1, partial(self.window.cut,
                                                             onset_index=p.onset_index,
                                                             offset=i0))
                data, t_cut, t_norm = win.data.astype(np.float32), win.epoched, win.normalized
            last_ts = self.inputs.timestamp_at(last)
            out.append(Epoch(self._n_epochs, data, p.label,
                             p.onset_index, p.onset_timestamp, last,
                             last_ts if last_ts is not None else float("nan"),
                             {"marker_received": p.marker_received, "ready": t_ep,
                              "epoched": t_cut, "normalized": t_norm}, flags,
                             early=p.early))
            self._n_epochs += 1
        self._pending = keep
        return out

    def filling(self, within: int) -> list[Filling]:
        """The queued epochs whose window ends within ``within`` processed samples of the
        newest and whose baseline is in, with their samples so far (what early encoding
        reads; an epoch whose window is already complete is :meth:`ready_epochs`' to cut, one
        that spans a gap will be dropped there)."""
        signal, w = self.signal, self.window
        n = signal.n_written
        b0, b1 = w.baseline_span
        out = []
        for p in self._pending:
            i0, i1 = p.i0, p.i1
            n_pre = i1 - i0 - w.n_times
            if (i1 <= n or i1 - n > within or n - i0 < max(b1, n_pre + 1)
                    or i0 < signal.first_available or signal.gap_between(i0, n - 1)):
                continue
            if p.baseline_mean is None:  # cut_epoch's mean, over the same samples (0: none)
                p.baseline_mean = (signal.read(i0 + b0, i0 + b1).mean(axis=1, keepdims=True)
                                   if b1 else 0.0)
            out.append(Filling(p, n - i0 - n_pre, partial(self._read_filling, p, i0 + n_pre)))
        return out

    def _read_filling(self, p: QueuedEpoch, first: int, c0: int, c1: int) -> np.ndarray:
        """Epoch columns ``[c0, c1)`` (the epoch's column 0 is processed sample ``first``):
        minus the baseline mean, noise-normalised, float32 - the cut epoch's numbers. Each
        column is normalised once, into the epoch's ``ahead`` buffer (a view of it is returned):
        overlapping frames read it again, and the cut epoch is that buffer, completed."""
        if c1 > p.n_ahead:
            k = p.n_ahead
            x = self._normalized(p, first, k, c1)[0]
            if p.ahead is None:
                p.ahead = np.empty((x.shape[0], self.window.n_times), np.float32)
            p.ahead[:, k:c1] = x
            p.n_ahead = c1
        return p.ahead[:, c0:c1]

    def _normalized(self, p: QueuedEpoch, first: int, c0: int,
                    c1: int) -> tuple[np.ndarray, float]:
        """Columns ``[c0, c1)`` minus the baseline mean, then normalised (float32), and when
        the baseline correction was done (the ``epoched`` stamp)."""
        x = self.signal.read(first + c0, first + c1) - p.baseline_mean
        t_cut = local_clock()
        return self.signal.normalize(x).astype(np.float32, copy=False), t_cut

    def samples_needed(self) -> int | None:
        """Input samples (a count from the first) that complete the next queued epoch: the
        engine's source hands the samples over at the latest when this many are settled
        (None: no epoch queued; a sliding window counts as queued from its start)."""
        ends = [p.last + 1 for p in self._pending]
        if self.sliding_hop and self._next_window is not None:
            ends.append(self.last_input_index(self._next_window) + 1)
        return min(ends) if ends else None

    def seconds_until_next_ready(self) -> float | None:
        """Stream time until the next queued epoch's window is complete (None: none queued).

        Lets the batcher dispatch at once when no other epoch can join the batch before its
        deadline, instead of always waiting for the deadline.
        """
        if not self._pending:
            return None
        end = min(p.i1 for p in self._pending)
        return max(0.0, (end - self.signal.n_written) / self.window.sfreq_out)
