"""The frame-by-frame logic of a presentation, without Qt: what each frame shows, the onsets on
frame boundaries, the marker per onset, dropped frames, closed-loop decisions and the log rows.

Why without Qt: the window only paints, swaps and reads the clock; everything that decides
timing or content is here and runs in unit tests with made-up swap times.

Onset rule: an image goes up on the first frame whose predicted swap time is at or after its
requested onset, less a quarter frame (the frame clock's jitter is no reason to wait a whole
frame). Requested onsets follow the sequence's SOAs from the first frame; an onset late by
whole frames (a stall, dropped frames) moves the rest of the schedule by as many frames, so no
SOA is ever shortened to catch up; an image goes up only once the previous one's duration is
over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from neuralign.ui.presenter.closed_loop import ResultEvent
from neuralign.ui.presenter.sequence import Trial
from neuralign.ui.presenter.stopping import ActiveQueue, Decided

#: a swap interval above this many frame periods means frames were dropped
DROP_FACTOR = 1.5
#: an onset may go up this fraction of a frame before its requested time (frame clock jitter)
ONSET_TOLERANCE = 0.25


@dataclass(frozen=True)
class Frame:
    """What the next swap shows: an image (None: blank) and whether it is an onset."""

    image_id: str | None
    onset: bool = False

    @property
    def photodiode_on(self) -> bool:
        return self.image_id is not None


@dataclass
class LogRow:
    """One shown image (the log's columns, in order). Times are LSL seconds."""

    index: int
    image_id: str
    mode: str  # 'opengl' or 'raster': how the swap was timed
    requested_s: float
    onset_s: float  # the swap that showed it
    stamp_s: float  # the marker's LSL timestamp (onset + --latency)
    offset_ms: float  # marker push time - swap: what a push-time stamp would have been late by
    paint_ms: float  # start of this frame's paint to the swap (when, within it, the frame showed)
    onset_error_ms: float  # onset - requested
    dropped_frames: int  # so far in the session
    repetition: int = 1
    decision: str = ""  # closed loop: stop / continue / aborted
    reason: str = ""
    posterior: float | None = None
    decided_s: float | None = None  # when the decision was taken (result receipt or timeout)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Current:
    trial: Trial
    row: LogRow | None = None
    off_at: float = math.inf  # nominal time the image goes off


@dataclass
class SessionSummary:
    """Printed at the end and returned by the command."""

    mode: str
    n_shown: int
    frame_period_ms: float
    offset_ms_p50: float
    offset_ms_p99: float
    onset_error_ms_p50: float
    onset_error_ms_p99: float
    dropped_frames: int
    aborted: bool
    n_decisions: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"shown {self.n_shown} images ({self.mode} timing, frame {self.frame_period_ms:.2f} "
               f"ms){' - aborted' if self.aborted else ''}",
               f"swap-to-marker offset p50 {self.offset_ms_p50:.3f} ms, p99 "
               f"{self.offset_ms_p99:.3f} ms",
               f"onset error (swap - requested) p50 {self.onset_error_ms_p50:.2f} ms, p99 "
               f"{self.onset_error_ms_p99:.2f} ms",
               f"dropped frames {self.dropped_frames}"]
        if self.n_decisions:
            out.append("decisions " + ", ".join(f"{k} {v}" for k, v in self.n_decisions.items()))
        return out


class Session:
    """Drives one presentation. The window calls, for every frame: :meth:`plan` before painting
    (what to draw), then :meth:`swapped` with the measured swap time; :meth:`poll` with the
    results that arrived (closed loop). Finished rows go to ``on_row`` (the log)."""

    def __init__(self, trials: Sequence[Trial], frame_period: float, mode: str,
                 push: Callable[[str, float], float], on_row: Callable[[LogRow], None],
                 queue: ActiveQueue | None = None, latency_s: float = 0.0, seed: int = 0,
                 lead_in_s: float = 0.0):
        if not trials:
            raise ValueError("nothing to present")
        self.period, self.mode, self.latency_s = frame_period, mode, latency_s
        self.lead_in_s = lead_in_s  # blank before the first image (the display settles)
        self._push, self._on_row, self.queue = push, on_row, queue
        self._trials = list(trials)
        self._by_id = {t.image_id: t for t in self._trials}
        self._next = 0  # open loop: index of the next trial
        self._rng = np.random.default_rng(seed)
        self._requested: float | None = None  # of the next onset; None until the first swap
        self._starved = False  # closed loop: a slot came and no image was ready
        self._current: _Current | None = None
        self._shown = 0
        self._last_shown: str | None = None
        self._last_swap: float | None = None
        self._planned: Frame = Frame(None)
        self._paint_start = 0.0
        self._held: dict[int, LogRow] = {}  # closed loop: rows awaiting their decision
        self.rows: list[LogRow] = []
        self.dropped = 0
        self.paused = False
        self.aborted = False
        self._anchor: float | None = None  # the first frame's time
        self.paced = True  # frames paced by a timer (raster, no vsync); False: vsync'd swaps
        self._end_at = math.inf  # nominal time the session ends (last SOA elapsed)

    # -- per frame ---------------------------------------------------------------------------

    def predicted_swap(self, now: float) -> float:
        """When the frame painted ``now`` will be swapped: ``now`` on a paced surface (the swap
        follows the paint), else (vsync) one frame after the last swap."""
        if self.paced or self._last_swap is None:
            return now
        return max(now, self._last_swap + self.period)

    def plan(self, now: float, grid_time: float | None = None) -> Frame:
        """What the next swap shows (call right before painting it). ``grid_time``: the frame's
        point on a pacing timer's grid (it anchors the schedule: the first paint is slow)."""
        self._paint_start = now
        if self._anchor is None:
            self._anchor = now if grid_time is None else min(now, grid_time)
        t = self.predicted_swap(now)
        cur = self._current
        if cur is not None and t >= cur.off_at - ONSET_TOLERANCE * self.period:
            self._current = cur = None
        frame = Frame(None if cur is None else cur.trial.image_id)
        if (self._requested is not None and cur is None and not self.paused and not self.done
                and t >= self._requested - ONSET_TOLERANCE * self.period):
            trial = self._take()
            if trial is not None:
                if self._starved:  # waited for a result: requested when it became possible
                    self._requested, self._starved = t, False
                self._current = _Current(trial)
                frame = Frame(trial.image_id, onset=True)
            else:
                self._starved = True
        self._planned = frame
        return frame

    def swapped(self, t_swap: float) -> None:
        """The planned frame is on screen since ``t_swap`` (LSL seconds, read right after the
        swap): count dropped frames; for an onset, push its marker and log it."""
        if (self._last_swap is not None and self._shown > 0  # from the first image on
                and t_swap - self._last_swap > DROP_FACTOR * self.period):
            self.dropped += max(1, round((t_swap - self._last_swap) / self.period) - 1)
        self._last_swap = t_swap
        if self._requested is None:  # the first frame anchors the schedule
            assert self._anchor is not None
            self._requested = self._anchor + max(self.period, self.lead_in_s)
        if not self._planned.onset:
            return
        cur = self._current
        assert cur is not None
        trial = cur.trial
        stamp = t_swap + self.latency_s
        pushed = self._push(trial.image_id, stamp)
        requested = self._requested
        row = LogRow(index=self._shown, image_id=trial.image_id, mode=self.mode,
                     requested_s=requested, onset_s=t_swap, stamp_s=stamp,
                     offset_ms=(pushed - t_swap) * 1e3,
                     paint_ms=(t_swap - self._paint_start) * 1e3,
                     onset_error_ms=(t_swap - requested) * 1e3, dropped_frames=self.dropped)
        cur.row = row
        cur.off_at = t_swap + trial.timing.duration
        soa = trial.timing.soa + (self._rng.uniform(0.0, trial.timing.jitter)
                                  if trial.timing.jitter else 0.0)
        # the next onset one SOA on; an onset late by whole frames (a stall) moves the rest of
        # the schedule by them: no SOA is ever shortened to catch up
        late_frames = max(0, math.floor((t_swap - requested) / self.period))
        self._requested = requested + soa + late_frames * self.period
        self._end_at = t_swap + soa
        self._shown += 1
        self._last_shown = trial.image_id
        self.rows.append(row)
        if self.queue is None:
            self._on_row(row)
        else:
            row.repetition = self.queue.shown(trial.image_id, row.index, stamp)
            self._held[row.index] = row

    def poll(self, now: float, events: Sequence[ResultEvent] = ()) -> None:
        """Closed loop: apply the results that arrived and the timeouts due by ``now``."""
        if self.queue is None:
            return
        for ev in events:
            d = self.queue.result(ev.marker, ev.marker_timestamp, ev.posterior)
            if d is not None:
                self._decided(d, ev.received)
        for d in self.queue.expire(now):
            self._decided(d, now)

    # -- state -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every image shown (open loop) or stopped (closed loop)."""
        if self.queue is None:
            return self._next >= len(self._trials)
        return self.queue.finished

    def finished(self, now: float) -> bool:
        """Done, and the last image's SOA is over (the window may close)."""
        if self.aborted:
            return True
        return self.done and self._current is None and self.predicted_swap(now) >= self._end_at

    def toggle_pause(self, now: float) -> bool:
        """Space: pause (no new onsets) or resume (the schedule restarts one frame on)."""
        self.paused = not self.paused
        if not self.paused:
            self._requested = self.predicted_swap(now) + self.period
            self._starved = False
        return self.paused

    def abort(self, now: float) -> None:
        """Esc: stop; every row awaiting its decision is logged as aborted."""
        self.aborted = True
        self.close(now)

    def close(self, now: float) -> None:
        """Flush the rows still awaiting a decision (nothing shown goes unlogged)."""
        for index in sorted(self._held):
            row = self._held.pop(index)
            row.decision, row.reason, row.decided_s = "aborted", "aborted", now
            self._on_row(row)

    def summary(self) -> SessionSummary:
        off = np.array([r.offset_ms for r in self.rows]) if self.rows else np.array([math.nan])
        err = (np.array([r.onset_error_ms for r in self.rows]) if self.rows
               else np.array([math.nan]))
        decisions: dict[str, int] = {}
        for r in self.rows:
            if r.decision:
                decisions[r.decision] = decisions.get(r.decision, 0) + 1
        return SessionSummary(
            mode=self.mode, n_shown=len(self.rows), frame_period_ms=self.period * 1e3,
            offset_ms_p50=float(np.percentile(off, 50)), offset_ms_p99=float(np.percentile(off, 99)),
            onset_error_ms_p50=float(np.percentile(err, 50)),
            onset_error_ms_p99=float(np.percentile(err, 99)), dropped_frames=self.dropped,
            aborted=self.aborted, n_decisions=decisions)

    # -- internals ---------------------------------------------------------------------------

    def _take(self) -> Trial | None:
        if self.queue is None:
            trial = self._trials[self._next]
            self._next += 1
            return trial
        image_id = self.queue.next_image(self._last_shown)
        return None if image_id is None else self._by_id[image_id]

    def _decided(self, d: Decided, at: float) -> None:
        row = self._held.pop(d.index, None)
        if row is None:
            return
        row.decision, row.reason = d.decision.decision, d.decision.reason
        row.posterior, row.decided_s = d.decision.posterior, at
        self._on_row(row)
