"""Each stream's sample clock, estimated online: where a sample lies in time, and what a gap is.

Real devices do not stamp ``t0 + k / sfreq``. Most device apps stamp a chunk when they push it
(pylsl's ``push_chunk`` without stamps gives the last sample ``local_clock()`` and back-computes the
others at the nominal rate), others stamp every sample on arrival; the steps between chunks jitter
by USB / Bluetooth scheduling (0.1-5 ms wired, tens of ms wireless, bursts after stalls) and can
even go backwards. Hardware-clocked senders stamp ``t0 + k / nominal`` on their own clock, which
drifts against the host's by 10-200 ppm. A rule on single stamp steps ("more than 1.5 periods is
a gap") therefore drops almost every epoch of a real stream although every sample arrived.

:class:`StreamClock` does what liblsl's dejitter does (a linear fit of stamp against sample
count), robustly and with gaps in mind:

* a sliding-window least-squares line ``t = t_ref + (i - i_ref) * period`` over one point per
  contiguous run of stamps (the last sample of a pulled chunk: the least delayed one), with the
  slope held at the nominal period until the window spans ``min_slope_span_s`` and clamped to
  ``max_ppm`` after; points further from the line than the tolerance never enter the fit;
* the tolerance follows the observed jitter (``tol_jitter_k`` x the p99 of the residuals, at
  least ``tol_samples`` periods);
* a **gap** is a sample-count deficit (or surplus) against the line that *persists*: a point off
  the line opens a suspicion at the first sample of its run; when later points return to the
  line, it was a late (or early) delivery and counts as jitter; when they stay on a parallel line
  for ``confirm_s`` of samples with a consistent offset, a gap of ``round(offset / period)``
  samples is confirmed there and a new segment of the line starts. A single step between stamps
  never makes a gap;
* until a suspicion is resolved, :attr:`StreamClock.settled` stays at its first sample: the
  engine neither filters nor cuts epochs beyond it, so no epoch is decoded across a gap that is
  confirmed a moment later.

Raw stamps stay in the engine's ring buffer for diagnostics; the engine's ``ClockedTimeline``
(``neuralign.realtime.clock``) answers the epocher's questions (time of a sample, sample of a
time) from the model, and :func:`place_recorded_events` runs the same model over a recording's
stamps, so offline epochs are cut where the engine cut them live. Health gets the stamp
jitter (p99), the effective rate against nominal (ppm), and the drift of the stamps against the
arrival times (a sender that stamps ``t0 + k / nominal`` while its true rate differs).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: points of the current segment's fit kept at most (one per contiguous run of stamps)
MAX_POINTS = 16384
#: recent |residuals| kept for the jitter estimate
JITTER_POINTS = 4096
#: a stream's first line is learnt from at least this many points (and warmup_s)
WARMUP_POINTS = 20
#: a gap is confirmed by at least this many points off the line (and confirm_s of samples)
CONFIRM_POINTS = 3
#: ... or, when each is within the jitter, by this many in a row later than 3 in 4 stamps
#: (a false alarm needs 0.25 ** (ENVELOPE_POINTS - 1) luck: about 1e-7)
ENVELOPE_POINTS = 13


@dataclass(frozen=True)
class ClockSettings:
    """How a stream's clock is estimated (``realtime.clock`` in the config)."""

    window_s: float = 30.0  # the fit uses the points of the last window_s seconds
    min_slope_span_s: float = 10.0  # fit the slope only once the window spans this much
    max_ppm: float = 2000.0  # the effective rate stays within this of nominal
    tol_samples: float = 2.5  # a gap is at least this many samples
    tol_jitter_k: float = 4.0  # ... and at least this many times the observed p99 jitter
    initial_jitter_s: float = 0.002  # assumed p99 jitter before 50 residuals are seen
    warmup_s: float = 1.0  # the first line of a stream (or after a reconnect) is learnt this long
    # the line runs along this quantile of the stamps' residuals, not their mean: pushes and
    # arrivals are only ever late, so the lower envelope is where the samples were produced
    envelope_quantile: float = 0.02
    confirm_s: float = 0.05  # a deficit must persist over this much signal to be a gap
    max_suspect_s: float = 2.0  # decide after this much signal even if the evidence is mixed
    drift_warn_ppm: float = 50.0  # stamps vs arrival drift worth a warning
    drift_min_span_s: float = 20.0  # ... once the arrival fit spans this long


@dataclass
class Segment:
    """A stretch of contiguous samples on one line: ``t = t_ref + (i - i_ref) * period``."""

    start: int  # first global sample index of the segment
    i_ref: int
    t_ref: float
    period: float

    def time_of(self, index: float) -> float:
        return self.t_ref + (index - self.i_ref) * self.period

    def index_of(self, t: float) -> float:
        return self.i_ref + (t - self.t_ref) / self.period


@dataclass
class ClockGap:
    """A confirmed discontinuity: the sample at ``index`` does not follow ``index - 1``.

    ``missing`` > 0: that many samples never arrived; < 0: the stamps jumped back (a sender
    restart or clock step), nothing counted as dropped."""

    index: int
    missing: int
    offset_s: float  # how far the new line lies from the old one

    def describe(self, t: float) -> str:
        if self.missing > 0:
            return (f"gap: {self.missing} samples missing before sample {self.index} "
                    f"(the stamps run {self.offset_s * 1e3:.1f} ms ahead of the sample count) "
                    f"at t={t:.4f}")
        return (f"gap: the stamps jump {-self.offset_s * 1e3:.1f} ms back at sample "
                f"{self.index} (sender restarted or its clock was reset) at t={t:.4f}")


@dataclass
class ClockReport:
    """What the clock knows about its stream (health)."""

    jitter_p99_ms: float = 0.0  # p99 of |stamp - model| over recent points
    rate_ppm: float = 0.0  # effective rate of the stamps against nominal
    arrival_drift_ppm: float | None = None  # stamps against arrival times (None: too short)
    data_latency_ms: float | None = None  # median arrival - model time of the newest sample
    late_deliveries: int = 0  # suspected gaps that were late or early chunks (no gap)
    gaps: int = 0
    missing_samples: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Suspect:
    start: int  # first sample of the run that left the line
    points: list[tuple[int, int, float, float]]  # (first, last index of the run, stamp, residual)


class _LineFit:
    """Running least-squares sums over a window of (index, time) points, relative to an anchor
    (float64 keeps microseconds on clocks of days)."""

    def __init__(self, i0: int, t0: float):
        self.i0, self.t0 = i0, t0
        self.pts: deque[tuple[float, float]] = deque()
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = 0.0
        self._since_exact = 0

    def add(self, i: int, t: float) -> None:
        x, y = float(i - self.i0), t - self.t0
        self.pts.append((x, y))
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self._since_exact += 1
        if len(self.pts) > MAX_POINTS:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        x, y = self.pts.popleft()
        self.n -= 1
        self.sx -= x
        self.sy -= y
        self.sxx -= x * x
        self.sxy -= x * y

    def evict_before(self, x_min: float) -> None:
        while self.pts and self.pts[0][0] < x_min and len(self.pts) > 2:
            self._drop_oldest()
        if self._since_exact > 4096:  # running sums drift: recompute them now and then
            a = np.asarray(self.pts)
            self.sx, self.sy = float(a[:, 0].sum()), float(a[:, 1].sum())
            self.sxx, self.sxy = float(a[:, 0] @ a[:, 0]), float(a[:, 0] @ a[:, 1])
            self._since_exact = 0

    @property
    def span(self) -> float:
        return self.pts[-1][0] - self.pts[0][0] if self.pts else 0.0

    def fit(self, period: float, free_slope: bool, lo: float, hi: float) -> tuple[float, float]:
        """(intercept at i0 relative to t0, period): the slope fixed at ``period`` unless
        ``free_slope``, then clamped to [lo, hi]."""
        if self.n == 0:
            return 0.0, period
        if free_slope and self.n > 2:
            den = self.n * self.sxx - self.sx * self.sx
            if den > 0:
                period = min(max((self.n * self.sxy - self.sx * self.sy) / den, lo), hi)
        return (self.sy - period * self.sx) / self.n, period


class StreamClock:
    """The online clock model of one stream (fed by its acquisition thread).

    :meth:`observe` takes each chunk as it is written to the ring buffer (first global index,
    raw stamps, local arrival time) and returns the gaps it confirmed; :meth:`time_of` and
    :meth:`index_of` map between sample indices and stream time.
    """

    def __init__(self, sfreq: float, settings: ClockSettings | None = None):
        if sfreq <= 0:
            raise ValueError("a clock model needs a nominal rate")
        self.s = settings or ClockSettings()
        self.sfreq = float(sfreq)
        self.nominal = 1.0 / self.sfreq
        self._max_run = max(1, int(round(self.sfreq / 50)))  # samples per point at most
        self.segments: deque[Segment] = deque(maxlen=1024)
        self._fit: _LineFit | None = None
        self._arrival: _LineFit | None = None
        self._resid: deque[float] = deque(maxlen=JITTER_POINTS)
        self._inlier_resid: deque[float] = deque(maxlen=JITTER_POINTS)
        self._ls_resid: deque[float] = deque(maxlen=512)  # about the least-squares line
        self._envelope = 0.0
        self._q_low = self._q_hi = self._q_top = 0.0  # residual quantiles about the line
        self._since_envelope = 0
        self._warm_points: list[tuple[int, float]] = []
        self._jitter_p99 = self.s.initial_jitter_s
        self._since_jitter = 0
        self._suspect: _Suspect | None = None
        self._warm = True
        self.n_seen = 0  # samples observed (global index of the next one)
        self.report = ClockReport()
        self.gaps: deque[ClockGap] = deque(maxlen=1024)  # confirmed, oldest first
        self._drift_warned = False
        self._latency: deque[float] = deque(maxlen=256)
        self._next_arrival = 0  # sample index of the next arrival point (about 100 a second)
        self._break: int | None = None  # a new segment starts here (reconnection)

    # ---- the model ----------------------------------------------------------------------------
    @property
    def period(self) -> float:
        return self.segments[-1].period if self.segments else self.nominal

    @property
    def tolerance(self) -> float:
        """Largest |stamp - model| that is still jitter, in seconds."""
        return max(self.s.tol_samples * self.nominal, self.s.tol_jitter_k * self._jitter_p99)

    @property
    def settled(self) -> int:
        """Samples before this index are final: no gap will be found among them any more."""
        return self._suspect.start if self._suspect is not None else self.n_seen

    def segment_of(self, index: int) -> Segment | None:
        for seg in reversed(self.segments):
            if index >= seg.start:
                return seg
        return self.segments[0] if self.segments else None

    def time_of(self, index: int) -> float | None:
        seg = self.segment_of(index)
        return None if seg is None else seg.time_of(index)

    def index_of(self, t: float) -> int | None:
        """The sample whose model time is nearest ``t``. A time inside a gap's hole maps to the
        first sample after the gap (the epoch it starts is then seen to span the gap)."""
        if not self.segments:
            return None
        segs = list(self.segments)
        for k in range(len(segs) - 1, -1, -1):
            seg = segs[k]
            i = int(math.floor(seg.index_of(t) + 0.5))
            if i >= seg.start or k == 0:
                nxt = segs[k + 1].start if k + 1 < len(segs) else None
                return i if nxt is None or i < nxt else nxt
        return None

    def break_at(self, index: int) -> None:
        """The samples from ``index`` on need not follow the line (the stream reconnected, the
        sender may have restarted): start a new segment there, learnt afresh."""
        self._suspect = None
        self._break = index

    # ---- feeding ------------------------------------------------------------------------------
    def observe(self, i0: int, stamps: np.ndarray, arrival: float | None = None
                ) -> list[ClockGap]:
        """A chunk of ``len(stamps)`` samples starting at global index ``i0`` was written."""
        n = len(stamps)
        if n == 0:
            return []
        self.n_seen = i0 + n
        ts = np.asarray(stamps, dtype=np.float64)
        # split the chunk where its own steps are off the nominal period by more than the
        # tolerance (two sender chunks pulled together): one point per contiguous run
        tol = self.tolerance
        cuts = np.flatnonzero(np.abs(np.diff(ts) - self.nominal) > tol) + 1 if n > 1 else ()
        gaps: list[ClockGap] = []
        start = 0
        for end in [*cuts, n]:
            # a long run (a big pull of back-computed or ideal stamps) gives a point every
            # 20 ms, so the model sees a line's worth of points whatever the pull size
            for piece_end in [*range(start + self._max_run, end, self._max_run), end]:
                g = self._point(i0 + start, i0 + piece_end - 1, float(ts[piece_end - 1]))
                if g is not None:
                    gaps.append(g)
                start = piece_end
        if arrival is not None and self._suspect is None:
            self._observe_arrival(i0 + n - 1, arrival)
            newest = self.time_of(i0 + n - 1)
            if newest is not None:
                self._latency.append(arrival - newest)
        if self._fit is not None:
            self._fit.evict_before(self._fit.pts[-1][0] - self.s.window_s * self.sfreq
                                   if self._fit.pts else 0.0)
        return gaps

    def _point(self, first: int, i: int, t: float) -> ClockGap | None:
        if not self.segments or self._break is not None:
            start = first if self._break is None else min(self._break, first)
            self._break = None
            self.segments.append(Segment(start, i, t, self.period))
            self._fit = _LineFit(i, t)
            self._fit.add(i, t)
            self._warm, self._warm_points = True, [(i, t)]
            self._arrival = None
            return None
        seg = self.segments[-1]
        r = t - seg.time_of(i)
        if self._warm:  # the line is not known yet: learn it robustly (a median, not a mean)
            self._warm_points.append((i, t))
            pts = np.asarray(self._warm_points)
            seg.t_ref = float(np.quantile(pts[:, 1] - (pts[:, 0] - seg.i_ref) * seg.period,
                                          self.s.envelope_quantile))
            if ((i - seg.start + 1) * self.nominal >= self.s.warmup_s
                    and len(pts) >= WARMUP_POINTS):
                self._end_warmup(seg, pts)
            return None
        tol = self.tolerance
        margin = self.s.tol_samples * self.nominal
        # off the line: later than most stamps are (a persistent run of these is a gap even when
        # each one is within the jitter), or earlier than any jitter explains
        if margin + self._q_hi >= r >= -tol:
            if self._suspect is not None:  # back on the line: late (or early) deliveries
                self._resolve_as_jitter(self._suspect)
                self._suspect = None
            if abs(r) <= tol:
                self._accept(i, t, r)
            return None
        if self._suspect is None:
            self._suspect = _Suspect(first, [(first, i, t, r)])
            return None
        sus = self._suspect
        sus.points.append((first, i, t, r))
        span = (i - sus.start + 1) * self.nominal
        if span < self.s.confirm_s or len(sus.points) < CONFIRM_POINTS:
            return None
        # the runs after the first one decide: the first may straddle the hole or be a late
        # delivery of samples from before it (then only partly off the line)
        later = np.array([p[3] for p in sus.points[1:]])
        offset = float(np.median(later))
        spread = float(np.max(later) - np.min(later))
        # a clear shift: every point beyond any jitter, all on one parallel line; or a subtle
        # one: ENVELOPE_POINTS in a row later than 3 in 4 stamps, no more spread than the
        # jitter (a backlog delivered at once after a stall spreads by the stall's length)
        clear = float(np.min(np.abs(later))) > tol and spread <= 2 * tol
        subtle = (len(later) >= ENVELOPE_POINTS
                  and spread <= margin + 1.5 * (self._q_top - self._q_low))
        if clear or subtle:
            head = sus.points[0][3]
            points = sus.points
            if abs(head - offset) > tol and 0 < head / offset < 1:
                self._note_residual(head, inlier=False)  # late, from before the hole
                points = sus.points[1:]
            return self._confirm(points, float(np.quantile(later, self.s.envelope_quantile)))
        if span >= self.s.max_suspect_s:  # no clean shift for long: it was jitter after all
            self._resolve_as_jitter(sus)
            self._suspect = None
        return None

    def _resolve_as_jitter(self, sus: _Suspect) -> None:
        """A suspicion that came back to the line: its points within the tolerance join the
        fit, the others were late (or early) deliveries."""
        late = False
        for _, i, t, r in sus.points:
            if abs(r) <= self.tolerance:
                self._accept(i, t, r)
            else:
                self._note_residual(r, inlier=False)
                late = True
        self.report.late_deliveries += late

    def _end_warmup(self, seg: Segment, pts: np.ndarray) -> None:
        """The warm-up's points within the tolerance of the median line start the fit."""
        self._warm, self._warm_points = False, []
        r = pts[:, 1] - (seg.t_ref + (pts[:, 0] - seg.i_ref) * seg.period)
        # the warm-up's spread is the first jitter estimate (a Bluetooth stream's tens of ms
        # must not look like gaps while the estimate builds up)
        self._jitter_p99 = max(self._jitter_p99, float(np.quantile(np.abs(r), 0.9)))
        tol = self.tolerance
        fit = _LineFit(int(pts[0, 0]), float(pts[0, 1]))
        for (i, t), rr in zip(pts, r):
            if abs(rr) <= tol:
                fit.add(int(i), float(t))
                self._note_residual(float(rr), inlier=True)
            else:
                self._note_residual(float(rr), inlier=False)
        self._fit = fit
        self._refit(fit)

    def _confirm(self, points: list[tuple[int, int, float, float]], offset: float) -> ClockGap:
        """A gap before the first of ``points`` (runs ``(first, last, stamp, residual)``)."""
        old = self.segments[-1]
        missing = int(round(offset / old.period))
        start = points[0][0]
        gap = ClockGap(start, missing, offset)
        # the new line: parallel to the old one, through the points after the gap
        i_ref, t_ref = points[-1][1], old.time_of(points[-1][1]) + offset
        self.segments.append(Segment(start, i_ref, t_ref, old.period))
        self._fit = _LineFit(i_ref, t_ref)
        for _, i, t, _ in points:
            self._fit.add(i, t)
        self._refit(self._fit)
        self._suspect = None
        self._warm = False
        self._arrival = None  # the arrival fit starts again on the new segment
        self.report.gaps += 1
        self.report.missing_samples += max(missing, 0)
        self.gaps.append(gap)
        return gap

    def _accept(self, i: int, t: float, r: float) -> None:
        self._fit.add(i, t)
        self._note_residual(r)
        self._refit(self._fit, (i, t))

    def _refit(self, fit: _LineFit, t_new: tuple[int, float] | None = None) -> None:
        """The segment's line from the fit: least-squares slope, then shifted to the
        ``envelope_quantile`` of the recent residuals about the least-squares line."""
        seg = self.segments[-1]
        free = fit.span * self.nominal >= self.s.min_slope_span_s
        lo = self.nominal * (1 - self.s.max_ppm * 1e-6)
        hi = self.nominal * (1 + self.s.max_ppm * 1e-6)
        a, period = fit.fit(self.nominal if free else seg.period, free, lo, hi)
        if t_new is not None:
            self._ls_resid.append(t_new[1] - (fit.t0 + a + (t_new[0] - fit.i0) * period))
            self._since_envelope += 1
        else:  # a new fit: residuals of all its points
            self._ls_resid.clear()
            self._ls_resid.extend(y - (a + x * period) for x, y in fit.pts)
            self._since_envelope = 1 << 20
        due = 64 if len(self._ls_resid) >= 256 else 8  # more often while the fit is young
        if self._since_envelope >= due and self._ls_resid:
            self._since_envelope = 0
            q = np.quantile(np.fromiter(self._ls_resid, float),
                            [self.s.envelope_quantile, 0.01, 0.75, 0.99])
            self._envelope = float(q[0])
            # the spread of the stamps about the line: how late most are, the range of all
            self._q_low, self._q_hi, self._q_top = (float(q[1] - q[0]), float(q[2] - q[0]),
                                                    float(q[3] - q[0]))
        seg.i_ref, seg.t_ref, seg.period = fit.i0, fit.t0 + a + self._envelope, period

    def _note_residual(self, r: float, inlier: bool = True) -> None:
        """Every residual counts in the reported jitter; only the points that stayed on the
        line set the tolerance (rare late chunks must not widen it until real gaps hide)."""
        self._resid.append(abs(r))
        if inlier:
            self._inlier_resid.append(abs(r))
        self._since_jitter += 1
        if self._since_jitter >= 64 and len(self._inlier_resid) >= 50:
            self._since_jitter = 0
            self._jitter_p99 = float(np.percentile(np.fromiter(self._inlier_resid, float), 99))
            # the reported jitter (all residuals) and latency, at the same cadence: health asks
            # for them with every result, which must not cost a percentile each time
            self.report.jitter_p99_ms = round(
                float(np.percentile(np.fromiter(self._resid, float), 99)) * 1e3, 4)
            if self._latency:
                self.report.data_latency_ms = round(
                    float(np.median(np.fromiter(self._latency, float))) * 1e3, 3)

    def _observe_arrival(self, i: int, arrival: float) -> None:
        """Arrival times of the newest sample: their rate against the stamps' shows a sender
        whose stamps run at nominal while its samples do not."""
        if i < self._next_arrival:
            return
        self._next_arrival = i + max(1, int(self.sfreq / 100))
        if self._arrival is None:
            self._arrival = _LineFit(i, arrival)
        self._arrival.add(i, arrival)
        fit = self._arrival
        fit.evict_before(fit.pts[-1][0] - 4 * self.s.window_s * self.sfreq)
        if fit.span * self.nominal < self.s.drift_min_span_s or not self.segments:
            return
        _, period = fit.fit(self.nominal, True, self.nominal * 0.9, self.nominal * 1.1)
        drift = (self.period / period - 1.0) * 1e6
        self.report.arrival_drift_ppm = drift
        if abs(drift) > self.s.drift_warn_ppm and not self._drift_warned:
            self._drift_warned = True
            self.report.warnings.append(
                f"the stamps run {drift:+.0f} ppm against the samples' arrival (a sender that "
                f"stamps t0 + k/{self.sfreq:g} on a clock that drifts): markers stamped on this "
                f"host drift {abs(drift) * 3.6e-3:.2f} s per hour against the samples")

    def snapshot(self) -> ClockReport:
        """The current report (jitter, rate, drift, counts): cheap, no statistics computed
        here (jitter and latency follow the fit's periodic updates)."""
        self.report.rate_ppm = round((self.nominal / self.period - 1.0) * 1e6, 2)
        return self.report


class MarkerClockCheck:
    """Is the marker stream on the data's clock? Compares how late markers arrive after their
    stamps with how late data samples arrive after their model times.

    A marker stream whose clock runs *behind* the data's (another host without clock
    synchronisation, a presenter stamping with another clock) puts every marker too early on
    the data: its epochs are cut at the wrong sample while everything looks fine. Markers that
    run *ahead* are caught by the epocher (it waits for their sample, then drops them). The
    offset is reported in health; beyond ``max_lag_s`` (median of the last markers), and when
    the lag drifts by more than ``drift_warn_ppm``, a warning says so.
    """

    def __init__(self, max_lag_s: float = 0.25, drift_warn_ppm: float = 100.0,
                 min_drift_span_s: float = 60.0):
        self.max_lag_s, self.drift_warn_ppm = max_lag_s, drift_warn_ppm
        self.min_drift_span_s = min_drift_span_s
        self._lags: deque[tuple[float, float]] = deque(maxlen=200)  # (stamp, lag)
        self.offset_ms: float | None = None  # median marker lag minus the data's latency
        self.drift_ppm: float | None = None
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def add(self, stamp: float, received: float, data_latency_s: float | None) -> None:
        if not received or not math.isfinite(stamp):
            return
        self._lags.append((stamp, received - stamp - (data_latency_s or 0.0)))
        if len(self._lags) < 3:
            return
        arr = np.asarray(self._lags)
        recent = float(np.median(arr[-9:, 1]))
        self.offset_ms = round(recent * 1e3, 3)
        if recent > self.max_lag_s:
            self._warn("behind", f"markers arrive {recent * 1e3:.0f} ms later after their stamps "
                       "than data samples do: the marker stream's clock seems to run behind "
                       "the data's, so epochs would be cut that much too early (set "
                       "--clock-sync lsl if the presenter runs on another machine, or stamp "
                       "markers with the LSL clock of this host)")
        span = float(arr[-1, 0] - arr[0, 0])
        if span >= self.min_drift_span_s and len(arr) >= 10:
            slope = float(np.polyfit(arr[:, 0] - arr[0, 0], arr[:, 1], 1)[0])
            self.drift_ppm = round(slope * 1e6, 1)
            if abs(slope) * 1e6 > self.drift_warn_ppm:
                self._warn("drift", f"the marker stream's clock drifts {slope * 1e6:+.0f} ppm "
                           f"against the data's ({abs(slope) * 3600:.2f} s per hour): set "
                           "--clock-sync lsl, or stamp markers with the LSL clock of this host")

    def _warn(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(msg)


@dataclass
class RecordedClock:
    """A recording's stamps read through the clock model: where its events belong."""

    events: list[int | None]  # sample index of each event (None: outside the recording)
    gaps: list[ClockGap]  # discontinuities the model confirmed (sample index, missing count)
    report: ClockReport


def place_recorded_events(stamps: np.ndarray, event_times: np.ndarray, sfreq: float,
                          settings: ClockSettings | None = None) -> RecordedClock:
    """Run the online clock model over a recording's per-sample stamps and place its events as
    the engine places live markers: each one once the model has seen the samples up to it.

    The recording does not keep the chunks the samples arrived in, so the stamps are fed in the
    deliveries they show (runs at the nominal period: a chunk stamped at its push; runs of one
    stamp: samples stamped on one arrival), which the model cuts to 20 ms pieces as it does
    live. On ideal stamps
    (``t0 + k / sfreq``) this is exactly the nearest-sample rule.
    """
    ts = np.asarray(stamps, dtype=np.float64)
    ev = np.asarray(event_times, dtype=np.float64)
    out: list[int | None] = [None] * len(ev)
    clock = StreamClock(sfreq, settings)
    if len(ts) == 0:
        return RecordedClock(out, [], clock.snapshot())
    period = 1.0 / sfreq
    # deliveries as they arrived: a new one where the step is neither the nominal period (a
    # chunk back-computed from its push) nor zero (samples stamped on one arrival)
    steps = np.diff(ts)
    new = (np.abs(steps - period) > 1e-6) & (np.abs(steps) > 1e-6)
    breaks = np.flatnonzero(new) + 1
    edges = [0, *breaks.tolist(), len(ts)]
    order = np.argsort(ev, kind="stable")
    k = 0
    gaps: list[ClockGap] = []
    half = 0.5 * period
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        gaps += clock.observe(a, ts[a:b])
        settled = clock.settled
        newest = clock.time_of(settled - 1) if settled else None
        while k < len(order) and newest is not None and ev[order[k]] <= newest + half:
            out[order[k]] = clock.index_of(float(ev[order[k]]))
            k += 1
    first = clock.time_of(0)
    for j in order[k:]:  # after the last sample: the last sample if within half a period
        if clock.time_of(len(ts) - 1) is not None and ev[j] <= clock.time_of(len(ts) - 1) + half:
            out[j] = clock.index_of(float(ev[j]))
    for j, idx in enumerate(out):  # before the first sample: not in the recording
        if idx is not None and first is not None and ev[j] < first - half:
            out[j] = None
    return RecordedClock(out, gaps, clock.snapshot())
