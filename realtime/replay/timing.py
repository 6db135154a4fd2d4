"""Device timing profiles: when a replayed chunk is pushed and which timestamps it carries.

Why: every stream in the test suite and the benchmarks stamps sample ``k`` exactly
``t0 + k / sfreq``, which no real device does. Device apps stamp a chunk when they read it from
the driver, or every sample on arrival; the steps between chunks jitter with USB / Bluetooth
scheduling, deliveries stall and then burst, the device's clock drifts against the host's, and
radio links lose samples. A :class:`TimingProfile` describes one such device; :func:`plan_schedule`
turns it, for a recording of ``n_samples`` at ``sfreq``, into a :class:`Schedule`: for every
chunk the host time at which it is pushed, the samples it carries and the stamps to push, plus the
ground truth (the host time each sample was produced, the runs of samples that never arrive) that
tests and benchmarks measure a consumer against. ``docs/timing_profiles.md`` describes each
profile and what it is modelled on.

The model, on the host clock (``local_clock()``), in the order the planner applies it:

1. **production** - sample ``k`` is produced at ``t_true[k] = t0 + k / (sfreq * (1 + drift_ppm
   * 1e-6))``: the device's true rate differs from the nominal one by ``drift_ppm``;
2. **packets** - the device sends its samples in packets whose sizes are drawn from
   :class:`ChunkSizes`; a packet is ready when its last sample is produced;
3. **dropouts** - runs of samples that never arrive (:class:`Dropouts` at random, :class:`Gap` at
   a given time); a packet keeps the samples that survive;
4. **latency** - each packet reaches the host ``base_s + Gamma(shape, jitter_sd_s / sqrt(shape))``
   after it is ready (:class:`Latency`): a non-negative, right-skewed delay whose standard
   deviation is ``jitter_sd_s`` - transports are late by a variable amount, never early;
5. **order** - packets arrive in order (a serial link or a BLE connection is a FIFO): a packet
   delayed more than the next one holds that one back;
6. **stalls** - at random times the link delivers nothing for a while (:class:`Stalls`); the
   backlog arrives at once when it resumes, as over Bluetooth;
7. **transport period** - a USB-serial chip hands data to the host only every
   ``transport_period_s`` (the FTDI latency timer): arrivals are delayed to the next tick;
8. **poll period** - the device app reads what has arrived only every ``poll_period_s`` and pushes
   it as one chunk (a BrainFlow bridge polling ``get_board_data``); without it every packet is
   pushed on its own when it arrives (callback-style apps; packets arriving at the same instant
   go out as one push unless the stamps are taken at the push);
9. **stamps** (:data:`Stamping`) - ``nominal``: ``t0 + k / sfreq`` on the device's own clock
   (a hardware-clocked sender; drift shows as stamps that slowly leave the host's time);
   ``chunk_push``: the chunk's last sample is stamped at the push and the others are
   back-computed at the nominal rate (pylsl ``push_chunk(data)`` without stamps);
   ``sample_arrival``: every sample carries the time its packet reached the host (step 7
   included, step 8 not: apps that stamp samples as they parse them and push later).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

Stamping = Literal["nominal", "chunk_push", "sample_arrival"]
STAMPINGS: tuple[str, ...] = get_args(Stamping)


@dataclass(frozen=True)
class ChunkSizes:
    """Samples per device packet, drawn uniformly from ``choices`` (one value = fixed size)."""

    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.choices or any(int(c) < 1 for c in self.choices):
            raise ValueError(f"chunk sizes must be >= 1, got {self.choices}")
        object.__setattr__(self, "choices", tuple(int(c) for c in self.choices))

    @classmethod
    def fixed(cls, n: int) -> ChunkSizes:
        return cls((n,))

    @classmethod
    def between(cls, low: int, high: int) -> ChunkSizes:
        """Uniform over ``low..high`` inclusive."""
        return cls(tuple(range(low, high + 1)))

    @property
    def mean(self) -> float:
        return float(np.mean(self.choices))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if len(self.choices) == 1:
            return np.full(n, self.choices[0], dtype=np.int64)
        return rng.choice(np.asarray(self.choices, dtype=np.int64), size=n)


@dataclass(frozen=True)
class Latency:
    """Delay from a packet being ready to it reaching the host: ``base_s + Gamma``.

    The gamma part has shape ``shape`` and scale ``jitter_sd_s / sqrt(shape)``, so its standard
    deviation is ``jitter_sd_s`` and its mean ``jitter_sd_s * sqrt(shape)``. Why gamma: a delay is
    never negative and mostly small with a tail (a USB frame missed, a BLE connection event
    skipped); shape 2 has its mode at half its mean and an exponential tail.
    """

    base_s: float = 0.0
    jitter_sd_s: float = 0.0
    shape: float = 2.0

    def __post_init__(self) -> None:
        if self.base_s < 0 or self.jitter_sd_s < 0 or self.shape <= 0:
            raise ValueError("latency: base_s and jitter_sd_s must be >= 0 and shape > 0")

    @property
    def mean_s(self) -> float:
        return self.base_s + self.jitter_sd_s * math.sqrt(self.shape)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.jitter_sd_s == 0:
            return np.full(n, self.base_s)
        return self.base_s + rng.gamma(self.shape, self.jitter_sd_s / math.sqrt(self.shape), n)


@dataclass(frozen=True)
class Stalls:
    """Periods in which the link delivers nothing: they start at ``rate_hz`` (Poisson) and last
    uniformly ``min_s..max_s``; what was held back arrives at once when they end."""

    rate_hz: float
    min_s: float
    max_s: float

    def __post_init__(self) -> None:
        if self.rate_hz < 0 or not 0 <= self.min_s <= self.max_s:
            raise ValueError("stalls: rate_hz >= 0 and 0 <= min_s <= max_s")


@dataclass(frozen=True)
class Dropouts:
    """Runs of samples that never arrive: they start at ``rate_hz`` (Poisson, on the stream's
    time) and are ``min_samples..max_samples`` long (uniform). Overlapping runs merge."""

    rate_hz: float
    min_samples: int = 1
    max_samples: int = 1

    def __post_init__(self) -> None:
        if self.rate_hz < 0 or not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("dropouts: rate_hz >= 0 and 1 <= min_samples <= max_samples")


@dataclass(frozen=True)
class Gap:
    """One run of ``n_samples`` lost samples starting at the sample of nominal time ``at_s``
    (``round(at_s * sfreq)``, counted from the stream's first sample)."""

    at_s: float
    n_samples: int

    def __post_init__(self) -> None:
        if self.at_s < 0 or self.n_samples < 1:
            raise ValueError("gap: at_s >= 0 and n_samples >= 1")


@dataclass(frozen=True)
class TimingProfile:
    """How a device's samples reach LSL: stamping, packets, latency, drift, stalls, losses.

    ``chunks=None`` uses the replayer's ``chunk_size`` (the planner's ``chunk_size`` argument).
    ``sfreq`` is the rate of the device modelled (information only: sizes are in samples and the
    replay runs at its data's rate). Build variants with :meth:`replace`, :meth:`with_gap` and
    :meth:`without_losses`.
    """

    name: str
    stamping: Stamping = "nominal"
    chunks: ChunkSizes | None = None
    latency: Latency = field(default_factory=Latency)
    drift_ppm: float = 0.0
    transport_period_s: float | None = None
    poll_period_s: float | None = None
    stalls: Stalls | None = None
    dropouts: Dropouts | None = None
    gaps: tuple[Gap, ...] = ()
    sfreq: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.stamping not in STAMPINGS:
            raise ValueError(f"stamping must be one of {STAMPINGS}, got {self.stamping!r}")
        for what in ("transport_period_s", "poll_period_s"):
            v = getattr(self, what)
            if v is not None and v <= 0:
                raise ValueError(f"{what} must be > 0 or None")
        if abs(self.drift_ppm) >= 1e6:
            raise ValueError("drift_ppm must be within +-1e6")
        object.__setattr__(self, "gaps", tuple(self.gaps))

    def replace(self, **changes) -> TimingProfile:
        """A copy with some components changed (e.g. ``drift_ppm=0``, ``stalls=None``)."""
        return dataclasses.replace(self, **changes)

    def with_gap(self, at_s: float, n_samples: int) -> TimingProfile:
        """A copy that also loses ``n_samples`` samples from nominal time ``at_s`` on."""
        return self.replace(gaps=(*self.gaps, Gap(at_s, n_samples)))

    def without_losses(self) -> TimingProfile:
        """A copy that loses nothing (no random dropouts, no gaps); timing unchanged."""
        return self.replace(dropouts=None, gaps=())


# --- the schedule -------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexRange:
    """Samples ``start`` (inclusive) to ``stop`` (exclusive), as global sample indices."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, eq=False)
class ScheduledChunk:
    """One push: at host time ``push_time``, samples ``indices`` (ascending, global; a chunk read
    across a dropout skips the lost ones) with ``stamps`` (for ``chunk_push``: the stamps a push at
    exactly ``push_time`` gets; the replayer recomputes them from ``local_clock()`` at the push)."""

    push_time: float
    indices: np.ndarray
    stamps: np.ndarray

    @property
    def start(self) -> int:
        return int(self.indices[0])

    @property
    def stop(self) -> int:
        return int(self.indices[-1]) + 1

    @property
    def contiguous(self) -> bool:
        return self.stop - self.start == len(self.indices)


@dataclass(frozen=True, eq=False)
class Schedule:
    """A planned replay: what is pushed when, and the truth behind it.

    Flat arrays (chunk ``c`` holds ``index[bounds[c]:bounds[c + 1]]``) so that shifting a plan to
    its start time and concatenating loop passes are vector operations. Times are host
    ``local_clock()`` seconds.
    """

    sfreq: float  #: nominal rate
    stamping: Stamping
    t0: float  #: host time sample 0 (global) was produced
    first_index: int  #: global index of ``t_true[0]``
    t_true: np.ndarray  #: (n_samples,) host time each sample was produced
    push_time: np.ndarray  #: (n_chunks,) host time each chunk is pushed (non-decreasing)
    bounds: np.ndarray  #: (n_chunks + 1,) offsets of the chunks in ``index`` / ``stamps``
    index: np.ndarray  #: (n_delivered,) global index of every delivered sample, in order
    stamps: np.ndarray  #: (n_delivered,) the stamp pushed with each delivered sample
    dropped: tuple[IndexRange, ...]  #: runs of samples never sent (global indices)

    @property
    def n_samples(self) -> int:
        return len(self.t_true)

    @property
    def n_chunks(self) -> int:
        return len(self.push_time)

    @property
    def n_delivered(self) -> int:
        return len(self.index)

    @property
    def n_dropped(self) -> int:
        return sum(len(r) for r in self.dropped)

    def true_time(self, k: int) -> float:
        """Host time global sample ``k`` was produced (what a presenter on this host sees)."""
        return float(self.t_true[k - self.first_index])

    def chunk(self, c: int) -> ScheduledChunk:
        lo, hi = int(self.bounds[c]), int(self.bounds[c + 1])
        return ScheduledChunk(float(self.push_time[c]), self.index[lo:hi], self.stamps[lo:hi])

    def chunks(self) -> Iterator[ScheduledChunk]:
        for c in range(self.n_chunks):
            yield self.chunk(c)

    @property
    def chunk_sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    @property
    def chunk_last_index(self) -> np.ndarray:
        """Global index of each chunk's last sample."""
        return self.index[self.bounds[1:] - 1]

    @property
    def delay_s(self) -> np.ndarray:
        """Per chunk: push time minus the production time of its last sample (>= 0)."""
        return self.push_time - self.t_true[self.chunk_last_index - self.first_index]

    @property
    def stamp_error_s(self) -> np.ndarray:
        """Per delivered sample: its stamp minus the host time it was produced."""
        return self.stamps - self.t_true[self.index - self.first_index]

    def shifted(self, dt: float) -> Schedule:
        """The same plan ``dt`` seconds later (every time moves, indices do not)."""
        return dataclasses.replace(self, t0=self.t0 + dt, t_true=self.t_true + dt,
                                   push_time=self.push_time + dt, stamps=self.stamps + dt)

    @classmethod
    def concat(cls, parts: Sequence[Schedule]) -> Schedule:
        """Consecutive plans (loop passes) as one: their samples must follow each other."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for a, b in zip(parts, parts[1:]):
            if b.first_index != a.first_index + a.n_samples:
                raise ValueError("schedules to concatenate must be consecutive")
        offsets = np.cumsum([0] + [p.n_delivered for p in parts[:-1]])
        bounds = np.concatenate([parts[0].bounds[:1]]
                                + [p.bounds[1:] + o for p, o in zip(parts, offsets)])
        return cls(first.sfreq, first.stamping, first.t0, first.first_index,
                   np.concatenate([p.t_true for p in parts]),
                   np.concatenate([p.push_time for p in parts]), bounds,
                   np.concatenate([p.index for p in parts]),
                   np.concatenate([p.stamps for p in parts]),
                   tuple(r for p in parts for r in p.dropped))


# --- the planner --------------------------------------------------------------------------------

def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _next_tick(t: np.ndarray, period: float, phase: float) -> np.ndarray:
    """The first tick ``phase + j * period`` at or after each ``t`` (monotone in ``t``)."""
    return phase + np.ceil((t - phase) / period) * period


def plan_schedule(n_samples: int, sfreq: float, profile: TimingProfile, seed: int = 0,
                  t0: float = 0.0, first_index: int = 0, chunk_size: int = 10) -> Schedule:
    """Plan the pushes of samples ``first_index .. first_index + n_samples - 1`` of a stream
    whose sample 0 is produced at host time ``t0`` (see the module docstring for the model).

    Deterministic for ``(seed, first_index)``: a loop pass plans with its own ``first_index`` and
    gets its own draws. ``chunk_size`` is the packet size when ``profile.chunks`` is None.
    """
    if n_samples < 1 or sfreq <= 0 or chunk_size < 1:
        raise ValueError("n_samples >= 1, sfreq > 0 and chunk_size >= 1 are required")
    rng = np.random.default_rng([int(seed), int(first_index)])
    # tick phases from the seed alone: the ticks of consecutive loop passes line up
    phases = np.random.default_rng([int(seed)]).uniform(0.0, 1.0, 2)
    rate_true = sfreq * (1.0 + profile.drift_ppm * 1e-6)
    k = np.arange(first_index, first_index + n_samples, dtype=np.int64)
    t_rel = k / rate_true  # production times, relative to t0 (t0 is added last)
    duration = n_samples / rate_true

    # 2. packets: consecutive runs of sizes drawn from the profile
    sizes_of = profile.chunks or ChunkSizes.fixed(chunk_size)
    n_draw = n_samples // min(sizes_of.choices) + 1
    ends = np.cumsum(sizes_of.draw(rng, n_draw))
    ends = np.minimum(ends[: int(np.searchsorted(ends, n_samples)) + 1], n_samples)
    starts = np.r_[0, ends[:-1]]  # pass-relative [start, end) of each packet

    # 3. losses (pass-relative ranges)
    lost: list[tuple[int, int]] = []
    if profile.dropouts is not None and profile.dropouts.rate_hz > 0:
        d = profile.dropouts
        n_runs = rng.poisson(d.rate_hz * duration)
        at = rng.integers(0, n_samples, n_runs)
        length = rng.integers(d.min_samples, d.max_samples + 1, n_runs)
        lost += [(int(a), int(min(a + n, n_samples))) for a, n in zip(at, length)]
    for gap in profile.gaps:
        a = int(round(gap.at_s * sfreq)) - first_index
        b = a + gap.n_samples
        if b > 0 and a < n_samples:
            lost.append((max(a, 0), min(b, n_samples)))
    lost = _merge_ranges(lost)
    kept = np.ones(n_samples, dtype=bool)
    for a, b in lost:
        kept[a:b] = False

    # 4.-7. arrival of each packet at the host
    ready = t_rel[ends - 1]
    arrival = ready + profile.latency.draw(rng, len(ends))
    arrival = np.maximum.accumulate(arrival)  # 5. in order
    if profile.stalls is not None and profile.stalls.rate_hz > 0:  # 6. stalls
        s = profile.stalls
        horizon = duration + profile.latency.mean_s
        n_st = rng.poisson(s.rate_hz * horizon)
        st_start = np.sort(rng.uniform(t_rel[0], t_rel[0] + horizon, n_st))
        st_len = rng.uniform(s.min_s, s.max_s, n_st)
        for a, ln in zip(st_start, st_len):
            lo, hi = np.searchsorted(arrival, [a, a + ln], side="left")
            arrival[lo:hi] = a + ln
    if profile.transport_period_s is not None:  # 7. USB latency timer
        p = profile.transport_period_s
        arrival = _next_tick(arrival, p, phases[0] * p)
    push = arrival
    if profile.poll_period_s is not None:  # 8. the app polls
        p = profile.poll_period_s
        push = _next_tick(arrival, p, phases[1] * p)

    # samples that survive, their packet, and the chunks they are pushed in
    idx_rel = np.flatnonzero(kept)
    packet = np.searchsorted(starts, idx_rel, side="right") - 1
    # one push per poll; without polling one per packet, except that packets arriving at the same
    # instant go out together when their stamps do not depend on the push (fewer pushes, the
    # same stamps); chunk_push apps push every packet they read on its own
    merge = profile.poll_period_s is not None or profile.stamping != "chunk_push"
    key = push[packet] if merge else packet
    if len(idx_rel):
        bounds = np.r_[0, np.flatnonzero(np.diff(key) != 0) + 1, len(idx_rel)].astype(np.int64)
    else:
        bounds = np.zeros(1, dtype=np.int64)
    push_time = push[packet[bounds[:-1]]] if len(idx_rel) else np.zeros(0)

    # 9. stamps
    if profile.stamping == "nominal":
        stamps = (idx_rel + first_index) / sfreq
    elif profile.stamping == "sample_arrival":
        stamps = arrival[packet].copy()
    else:  # chunk_push: last sample at the push, the others back-computed at the nominal rate
        chunk_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        back = bounds[1:][chunk_of] - 1 - np.arange(len(idx_rel))
        stamps = push_time[chunk_of] - back / sfreq

    return Schedule(
        sfreq=float(sfreq), stamping=profile.stamping, t0=t0, first_index=int(first_index),
        t_true=t0 + t_rel, push_time=push_time + t0, bounds=bounds,
        index=idx_rel + first_index, stamps=stamps + t0,
        dropped=tuple(IndexRange(a + first_index, b + first_index) for a, b in lost))


# --- named profiles -----------------------------------------------------------------------------

IDEAL = TimingProfile(
    name="ideal",
    description="Sample k stamped exactly t0 + k/sfreq, fixed chunks pushed when their last "
    "sample is due: the replayer's behaviour without a profile (test streams, benchmarks).",
)

WIRED_1KHZ = TimingProfile(
    name="wired-1khz", sfreq=1000.0, stamping="chunk_push", chunks=ChunkSizes.between(10, 20),
    latency=Latency(base_s=0.0002, jitter_sd_s=0.0003), drift_ppm=20.0,
    description="A wired research amplifier at 1000 Hz read in blocks of 10-20 samples by a "
    "connector app that stamps each block with local_clock() when it has read it and pushes it "
    "with push_chunk (Brain Products' BrainAmpSeries connector: push_chunk(buffer, "
    "local_clock())). USB bulk transfers: 0.2 ms + 0.3 ms SD delay; crystal clock 20 ppm off "
    "the host's (assumed); no losses.",
)

CYTON_DONGLE = TimingProfile(
    name="cyton-dongle", sfreq=250.0, stamping="sample_arrival", chunks=ChunkSizes.fixed(1),
    latency=Latency(base_s=0.002, jitter_sd_s=0.006), drift_ppm=50.0,
    transport_period_s=0.016, stalls=Stalls(rate_hz=0.05, min_s=0.05, max_s=0.25),
    dropouts=Dropouts(rate_hz=0.02, min_samples=1, max_samples=3),
    description="OpenBCI Cyton at 250 Hz through its RFduino USB dongle (FTDI FT231X serial): "
    "one 33-byte radio packet per sample, read by a script that pushes each parsed sample with "
    "push_sample() without a stamp (pyOpenBCI/OpenBCI_LSL style), so each sample is stamped on "
    "arrival. The FTDI latency timer (16 ms by default; OpenBCI's troubleshooting guide sets 1 ms) "
    "hands the data over in bursts every 16 ms; radio polling adds 2 ms + 6 ms SD; radio "
    "interference stalls delivery for 50-250 ms about every 20 s and loses 1-3 samples about "
    "every 50 s (the packet counter shows it). Drift 50 ppm (assumed).",
)

CONSUMER_256 = TimingProfile(
    name="consumer-256", sfreq=256.0, stamping="chunk_push", chunks=ChunkSizes.fixed(12),
    latency=Latency(base_s=0.005, jitter_sd_s=0.015), drift_ppm=100.0,
    stalls=Stalls(rate_hz=0.05, min_s=0.1, max_s=0.4),
    dropouts=Dropouts(rate_hz=0.01, min_samples=12, max_samples=12),
    description="A consumer headset at 256 Hz over Bluetooth LE (Muse-like: one notification "
    "carries 12 samples of a channel), pushed by a bridge that calls push_chunk without stamps "
    "per notification. BLE connection events: 5 ms + 15 ms SD delay; stalls of 100-400 ms about "
    "every 20 s whose backlog arrives at once; a notification (12 samples) lost about every "
    "100 s; drift 100 ppm (assumed). muselsl itself smooths its stamps with a running "
    "regression; this profile is the raw case.",
)

BRAINFLOW = TimingProfile(
    name="brainflow", sfreq=250.0, stamping="sample_arrival", chunks=ChunkSizes.fixed(1),
    latency=Latency(base_s=0.001, jitter_sd_s=0.001), drift_ppm=30.0, poll_period_s=0.005,
    description="A BrainFlow board bridged to LSL: BrainFlow stamps each package on the PC as "
    "it is received (its timestamp row, UNIX time; the bridge maps it to local_clock() with a "
    "constant offset), the bridge polls get_board_data every 5 ms and pushes what it got with "
    "those per-sample stamps. Serial link with the 1 ms latency timer BrainFlow recommends: "
    "1 ms + 1 ms SD delay; drift 30 ppm (assumed); no losses.",
)

#: the named profiles, by name (``neuralign replay --timing NAME``)
PROFILES: dict[str, TimingProfile] = {
    p.name: p for p in (IDEAL, WIRED_1KHZ, CYTON_DONGLE, CONSUMER_256, BRAINFLOW)}


def get_profile(name: str, **changes) -> TimingProfile:
    """The named profile, with optional component changes (``drift_ppm=0``, ``stalls=None``,
    ``dropouts=None``...). Raises ``KeyError`` listing the names for an unknown one."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown timing profile {name!r}; known: {', '.join(PROFILES)}") from None
    return profile.replace(**changes) if changes else profile
