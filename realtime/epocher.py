"""Epochs out of the processed stream: stimulus markers (or a sliding window) -> ready epochs.

A marker arrives on the LSL clock, possibly before the sample it names. The epocher places it on
the INPUT sample grid through the source's :class:`InputTimeline` (global index <-> LSL timestamp,
passed in explicitly) once that sample has arrived, and cuts the epoch out of the pipeline's
processed buffer as soon as the last sample its window needs has been filtered: baseline
correction by :func:`~neuralign.signal.chain.cut_epoch` (the offline function), then the
pipeline's noise normalisation. Without markers a window starts every hop. An epoch whose window
already left the processed buffer is dropped with a warning. Every epoch carries the timestamps
of the stages it went through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from neuralign.realtime.lsl_io import local_clock
from neuralign.signal.chain import cut_epoch, epoch_start

if TYPE_CHECKING:
    from neuralign.bundle import EpochSection
    from neuralign.realtime.pipeline import Pipeline
    from neuralign.realtime.sources.base import Marker

log = logging.getLogger(__name__)


class InputTimeline(Protocol):
    """The source's raw samples as the epocher needs them (a source's ring buffer is one)."""

    @property
    def n_written(self) -> int: ...

    def timestamp_at(self, index: int) -> float | None: ...

    def index_of_time(self, t: float) -> int | None: ...


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
    stream: str | None = None  # which input stream (set by an engine with several sources)


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
    def for_pipeline(cls, epoch: EpochSection, pipeline: Pipeline) -> EpochWindow:
        """The bundle's epoch window on this pipeline's grid."""
        return cls(pipeline.q, pipeline.sfreq_out, epoch.tmin, epoch.tmax,
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

    def first_window_onset(self) -> int:
        """Input index of the first sliding-window onset whose window starts at input 0."""
        return int(round(-self.tstart * self.q * self.sfreq_out))

    def cut(self, segment: np.ndarray, onset_index: int, offset: int) -> np.ndarray:
        """Baseline-corrected epoch from ``segment`` = processed samples from index ``offset``."""
        return cut_epoch(segment, onset_index, self.q, self.sfreq_out, self.tmin, self.tmax,
                         self.baseline, offset=offset)


@dataclass
class _Pending:
    label: str | None
    onset_index: int
    onset_timestamp: float
    marker_received: float


class Epocher:
    """Markers in, ready normalised epochs out (single-threaded: the engine's processing thread).

    ``inputs``: the source's sample timeline (its ring buffer). ``sliding_hop_s``: without
    markers, a window every hop (seconds of input).
    """

    def __init__(self, pipeline: Pipeline, window: EpochWindow, inputs: InputTimeline,
                 sliding_hop_s: float | None = None):
        self.pipeline = pipeline
        self.window = window
        self.inputs = inputs
        self.input_sfreq = pipeline.spec.sfreq_in
        self.sliding_hop = (int(round(sliding_hop_s * self.input_sfreq)) if sliding_hop_s
                            else None)
        self._next_window: int | None = None
        self._unplaced: list[Marker] = []  # markers whose sample has not arrived yet
        self._pending: list[_Pending] = []  # placed, window not complete yet
        self._n_epochs = 0

    # ---- in ---------------------------------------------------------------------------------
    def add_markers(self, markers: Iterable[Marker]) -> None:
        """Queue stimulus markers (LSL time); each is placed once its sample has arrived."""
        self._unplaced.extend(markers)

    def add_onset(self, label: str | None, onset_index: int, onset_timestamp: float,
                  received: float | None = None) -> None:
        """Queue the epoch of an onset already on the input grid."""
        self._pending.append(_Pending(label, onset_index, onset_timestamp,
                                      received if received is not None else local_clock()))

    def _place(self, m: Marker) -> bool:
        """Put a marker on the input grid; False when its sample has not arrived (retry)."""
        n = self.inputs.n_written
        last = self.inputs.timestamp_at(n - 1) if n else None
        if last is None or m.timestamp > last + 0.5 / self.input_sfreq:
            return False  # markers may arrive before their sample: wait for the data
        idx = self.inputs.index_of_time(m.timestamp)
        if idx is None:
            log.warning("marker %r at %.3f is outside the buffer; dropped", m.value, m.timestamp)
        else:
            self.add_onset(m.value, idx, m.timestamp, m.received or local_clock())
        return True

    def _schedule_sliding(self) -> None:
        """Sliding-window mode: a window (tmin..tmax relative to its start) every hop."""
        if self._next_window is None:
            self._next_window = self.window.first_window_onset()
        while self._next_window <= self.pipeline.n_in:
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
        processed = self.pipeline.processed
        out, keep = [], []
        for p in self._pending:
            i0, i1 = self.window.bounds(p.onset_index)
            if i1 > processed.n_written:
                keep.append(p)
                continue
            if i0 < processed.first_available:
                log.warning("epoch %s dropped: its window left the buffer", p.label)
                continue
            t_ep = local_clock()
            seg, _ = processed.read(i0, i1)
            ep = self.window.cut(seg, p.onset_index, offset=i0)
            t_cut = local_clock()
            ep = self.pipeline.normalise(ep)
            t_norm = local_clock()
            last = self.last_input_index(p.onset_index)
            last_ts = self.inputs.timestamp_at(last)
            out.append(Epoch(self._n_epochs, ep.astype(np.float32), p.label, p.onset_index,
                             p.onset_timestamp, last,
                             last_ts if last_ts is not None else float("nan"),
                             {"marker_received": p.marker_received, "ready": t_ep,
                              "epoched": t_cut, "normalized": t_norm}))
            self._n_epochs += 1
        self._pending = keep
        return out

    def seconds_until_next_ready(self) -> float | None:
        """Stream time until the next queued epoch's window is complete (None: none queued).

        Lets the batcher dispatch at once when no other epoch can join the batch before its
        deadline, instead of always waiting for the deadline.
        """
        if not self._pending:
            return None
        end = min(self.window.bounds(p.onset_index)[1] for p in self._pending)
        return max(0.0, (end - self.pipeline.processed.n_written) / self.window.sfreq_out)
