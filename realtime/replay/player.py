"""Replay a recording as LSL streams in real time, with exact sample and marker timestamps.

Why not mne-lsl's ``PlayerLSL``: it stamps each chunk with the time its LAST sample is due and
then sends it early, so its data run one chunk ahead of real time (latency measured on its stamps
is too small by a chunk), its annotation stamps are one sample before their data sample, and a
consumer connecting late never sees the first samples. Here:

* sample ``k`` (counted from the first sample sent) is stamped exactly ``t0 + k / sfreq`` (pushed
  with explicit per-sample timestamps, so liblsl transmits the values, not deduced ones);
* a chunk is sent when its last sample is due on the wall clock (``local_clock()``) — never early;
  at ``speed != 1`` the pacing is scaled but the stamps stay on the nominal timeline, so what the
  consumer computes from timestamps (epochs, markers) is identical at any speed;
* each marker is pushed with EXACTLY its onset sample's timestamp, before the chunk that contains
  that sample, so an epocher never sees the sample before the marker that names it;
* with ``wait_for_consumers`` nothing is sent until a consumer is connected, so the consumer's
  causal filters see the stream from sample 0 (online/offline parity needs that).

With a :class:`~neuralign.realtime.replay.timing.TimingProfile` (``timing=``) the stream looks like
a real device's instead: chunks, push times, stamps and lost samples follow the profile's plan
(:func:`~neuralign.realtime.replay.timing.plan_schedule`), markers carry the true host time of
their onset sample, and :attr:`LSLReplayer.schedule` holds the ground truth. ``timing=None`` is
the exact behaviour above.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Sequence

import numpy as np

from neuralign.realtime.lsl_io import local_clock, make_outlet
from neuralign.realtime.replay.timing import Schedule, TimingProfile, plan_schedule
from neuralign.signal.events import stimulus_events

log = logging.getLogger(__name__)

_NON_DATA_TYPES = {"stim", "chpi", "syst", "ias", "exci"}


def marker_source_id(source_id: str) -> str:
    """The ``source_id`` of a replay's marker stream, from its data stream's."""
    return f"{source_id}-markers"


class LSLReplayer:
    """Send ``data`` (channels x samples) as a regular LSL stream plus a string ``Markers`` stream.

    Runs in its own thread (``start`` / ``stop`` / ``wait_done``); the outlets live until
    ``stop()`` so a consumer can drain the tail after the last chunk was sent.
    ``loop=True`` repeats the data (``n_loops`` passes in all, None = until stopped) with sample
    indices and timestamps continuing and markers repeated at the same offsets.
    ``timing``: a device timing profile (chunking, push times, stamps, losses; its ``chunks=None``
    means ``chunk_size``), planned with ``timing_seed``; None = exact ``t0 + k / sfreq`` stamps.
    """

    def __init__(self, data: np.ndarray, sfreq: float, ch_names: Sequence[str],
                 ch_types: Sequence[str] | None = None,
                 events: Sequence[tuple[int, str]] = (), name: str = "neuralign-replay",
                 stype: str = "EEG", source_id: str | None = None,
                 marker_name: str | None = None, chunk_size: int = 10, speed: float = 1.0,
                 loop: bool = False, n_loops: int | None = None, start_offset_s: float = 0.0,
                 wait_for_consumers: float = 10.0, dtype: str = "float32",
                 timing: TimingProfile | None = None, timing_seed: int = 0,
                 unit: str | None = None):
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != len(ch_names):
            raise ValueError(f"data must be (n_channels={len(ch_names)}, n_samples), "
                             f"got {data.shape}")
        if sfreq <= 0 or chunk_size < 1:
            raise ValueError("sfreq must be > 0 and chunk_size >= 1")
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 or inf = as fast as possible)")
        self.sfreq = float(sfreq)
        self.ch_names = list(ch_names)
        self.ch_types = list(ch_types) if ch_types is not None else [stype.lower()] * len(ch_names)
        self.name, self.stype = name, stype
        self.source_id = source_id or uuid.uuid4().hex
        self.marker_name = marker_name or f"{name}-markers"
        self.marker_source_id = marker_source_id(self.source_id)
        self.chunk_size, self.speed = int(chunk_size), float(speed)
        self.loop, self.n_loops = loop, (n_loops if loop else 1)
        self.wait_for_consumers = wait_for_consumers
        self.dtype = dtype
        self.first_sample = int(round(start_offset_s * self.sfreq))
        if not 0 <= self.first_sample < data.shape[1]:
            raise ValueError(f"start_offset_s={start_offset_s} is outside the data "
                             f"({data.shape[1] / self.sfreq:g} s)")
        # ``unit``: send the (SI) data in this unit and declare it, as an amplifier app that
        # streams microvolts does (None: volts / teslas as each channel type's SI unit)
        self.unit = unit
        if unit is not None:
            from neuralign.units import unit_scale

            factor = unit_scale(unit)
            if factor is None:
                raise ValueError(f"unknown unit {unit!r}")
            data = data / factor
        # sample-major and C-contiguous once, so each push is a view (no per-chunk copy)
        self._data = np.ascontiguousarray(data[:, self.first_sample:].T,
                                          dtype=np.float32 if dtype == "float32" else np.float64)
        ev = sorted((int(s) - self.first_sample, str(v)) for s, v in events
                    if self.first_sample <= int(s) < data.shape[1])
        self._ev_idx = np.array([s for s, _ in ev], dtype=np.int64)
        self._ev_val = [v for _, v in ev]
        self.n_sent = 0
        self.n_markers_sent = 0
        self.t0: float | None = None
        self._outlet = None
        self._marker_outlet = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None
        self.timing, self.timing_seed = timing, int(timing_seed)
        self._schedules: list[Schedule] = []  # one per loop pass sent or being sent
        #: with ``timing``: ``local_clock()`` read just before each push (the chunk_push stamp
        #: of its last sample), in schedule order
        self.push_clocks: list[float] = []

    # --- construction from MNE ----------------------------------------------------------------
    @classmethod
    def from_raw(cls, raw, picks: Sequence[str] | None = None, **kw) -> LSLReplayer:
        """Replay an MNE Raw: its data channels (or ``picks``), annotations as markers.

        Annotation onsets become sample indices by :func:`~neuralign.signal.events.
        stimulus_events` (the formula offline epoching uses), descriptions become the marker
        values; ``BAD*`` and ``EDGE*`` annotations (segments, not stimuli) are skipped.
        """
        types = raw.get_channel_types()
        if picks is None:
            picks = [ch for ch, t in zip(raw.ch_names, types) if t not in _NON_DATA_TYPES]
        idx = [raw.ch_names.index(ch) for ch in picks]
        data = raw.get_data(picks=idx)
        kw.setdefault("stype", "MEG" if any(types[i] in ("mag", "grad") for i in idx) else "EEG")
        return cls(data, raw.info["sfreq"], [raw.ch_names[i] for i in idx],
                   [types[i] for i in idx], stimulus_events(raw), **kw)

    # --- control ------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Markers in one pass."""
        return len(self._ev_val)

    @property
    def n_samples(self) -> int:
        """Samples in one pass."""
        return self._data.shape[0]

    def timestamp_of(self, k: int) -> float:
        """LSL timestamp of sent sample ``k`` (after ``start``) of a replay without ``timing``
        (with a profile the stamps are in :attr:`schedule`)."""
        return self.t0 + k / self.sfreq

    @property
    def schedule(self) -> Schedule | None:
        """With ``timing``: the plan of every loop pass sent so far (each pass is planned as it
        starts), on the host clock: push times, delivered samples and their stamps, the true
        production time of every sample, the dropped runs. None before sending or without it.
        Every pass's plan is kept (a few arrays of n_samples), so an endless loop grows."""
        parts = list(self._schedules)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Schedule.concat(parts)

    @property
    def n_dropped(self) -> int:
        """Samples the timing profile lost so far (never sent)."""
        return sum(s.n_dropped for s in self._schedules)

    def start(self) -> None:
        """Create both outlets (visible when this returns) and start the sending thread."""
        if self._thread is not None:
            raise RuntimeError("replayer already started")
        self._outlet = make_outlet(self.name, self.stype, self.ch_names, self.sfreq,
                                   self.source_id, self.ch_types, chunk_size=0, dtype=self.dtype,
                                   unit=self.unit)
        self._marker_outlet = make_outlet(self.marker_name, "Markers", ["marker"], 0.0,
                                          self.marker_source_id, ["misc"], chunk_size=1,
                                          dtype="string")
        self._thread = threading.Thread(target=self._run, name=f"replay-{self.name}", daemon=True)
        self._thread.start()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until every sample was sent (True) or ``timeout`` expired (False)."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Stop sending and destroy the outlets (consumers' inlets should be closed first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._marker_outlet = None
        self._outlet = None

    def __enter__(self) -> LSLReplayer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- sending ------------------------------------------------------------------------------
    def _wait_consumers(self) -> None:
        if not self.wait_for_consumers:
            return
        deadline = local_clock() + self.wait_for_consumers
        need_markers = self.n_events > 0
        while not self._stop.is_set() and local_clock() < deadline:
            if self._outlet.have_consumers() and (not need_markers
                                                  or self._marker_outlet.have_consumers()):
                return
            self._stop.wait(0.005)
        if not self._stop.is_set():
            log.warning("%s: no %s consumer after %g s; sending anyway", self.name,
                        "data" if not self._outlet.have_consumers() else "marker",
                        self.wait_for_consumers)

    def _run(self) -> None:
        try:
            self._send_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the owner via .error
            self.error = exc
            log.exception("%s: replay failed", self.name)
        finally:
            self._done.set()

    def _send_all(self) -> None:
        if self.timing is not None:
            self._send_timed(self.timing)
            return
        self._wait_consumers()
        fast = self.speed == 0 or math.isinf(self.speed)
        n, cs = self.n_samples, self.chunk_size
        self.t0 = local_clock()
        wall0 = self.t0
        log.info("%s: replaying %d ch x %d samples @ %g Hz (speed %g, chunk %d)", self.name,
                 len(self.ch_names), n, self.sfreq, self.speed, cs)
        passes = 0
        while not self._stop.is_set() and (self.n_loops is None or passes < self.n_loops):
            base = passes * n  # global index of this pass's first sample
            ev_ptr = 0
            for a in range(0, n, cs):
                b = min(a + cs, n)
                ka, kb = base + a, base + b
                if not fast:  # send when the chunk's LAST sample is due, never earlier
                    due = wall0 + (kb - 1) / (self.sfreq * self.speed)
                    delay = due - local_clock()
                    if delay > 0 and self._stop.wait(delay):
                        return
                elif self._stop.is_set():
                    return
                while ev_ptr < len(self._ev_idx) and self._ev_idx[ev_ptr] < b:
                    k = base + int(self._ev_idx[ev_ptr])
                    self._marker_outlet.push_sample([self._ev_val[ev_ptr]], self.t0
                                                    + k / self.sfreq)
                    self.n_markers_sent += 1
                    ev_ptr += 1
                stamps = (self.t0 + np.arange(ka, kb) / self.sfreq).tolist()
                self._outlet.push_chunk(self._data[a:b], stamps)
                self.n_sent = kb
            passes += 1
        log.info("%s: sent %d samples, %d markers", self.name, self.n_sent, self.n_markers_sent)

    def _plan(self, passes: int) -> Schedule:
        return plan_schedule(self.n_samples, self.sfreq, self.timing, seed=self.timing_seed,
                             t0=self.t0, first_index=passes * self.n_samples,
                             chunk_size=self.chunk_size)

    def _send_timed(self, timing: TimingProfile) -> None:
        """Send by the profile's plan: each chunk at its push time (never before its samples were
        produced), markers first with the true time of their onset sample.

        ``chunk_push`` stamps are computed here from ``local_clock()`` right before the push, the
        way liblsl stamps a ``push_chunk`` without stamps (last sample = now, the others
        back-computed at the nominal rate), and then pushed explicitly. Why not let liblsl do it:
        the replayer then knows (:attr:`push_clocks`) the exact stamps a consumer receives,
        chunks read across a dropout keep the back-computation over the samples actually sent,
        and at ``speed != 1`` the stamps stay on the stream's timeline (plus the replayer's own
        lateness, as a device app's stamps include its own).
        """
        self._wait_consumers()
        fast = self.speed == 0 or math.isinf(self.speed)
        n = self.n_samples
        plan0 = plan_schedule(n, self.sfreq, timing, seed=self.timing_seed, t0=0.0,
                              chunk_size=self.chunk_size)  # planned before t0: no late start
        self.t0 = local_clock()
        wall0 = self.t0
        log.info("%s: replaying %d ch x %d samples @ %g Hz (speed %g, timing %s, seed %d)",
                 self.name, len(self.ch_names), n, self.sfreq, self.speed, timing.name,
                 self.timing_seed)
        at_push = timing.stamping == "chunk_push" and not fast
        passes = 0
        while not self._stop.is_set() and (self.n_loops is None or passes < self.n_loops):
            sched = plan0.shifted(self.t0) if passes == 0 else self._plan(passes)
            self._schedules.append(sched)
            base = passes * n
            ev_ptr = 0
            for c in range(sched.n_chunks):
                lo, hi = int(sched.bounds[c]), int(sched.bounds[c + 1])
                idx = sched.index[lo:hi] - base
                due = wall0 + (float(sched.push_time[c]) - self.t0) / (1.0 if fast else self.speed)
                if not fast:  # never before the plan's push time (>= its samples' production)
                    delay = due - local_clock()
                    if delay > 0 and self._stop.wait(delay):
                        return
                elif self._stop.is_set():
                    return
                ev_ptr = self._push_markers(sched, base, ev_ptr, int(idx[-1]))
                a, b = int(idx[0]), int(idx[-1]) + 1
                data = self._data[a:b] if b - a == hi - lo else self._data[idx]
                stamps = sched.stamps[lo:hi]
                now = local_clock()
                if at_push:
                    stamps = stamps + (now - due)
                self._outlet.push_chunk(data, stamps.tolist())
                self.push_clocks.append(now)
                self.n_sent += hi - lo
            self._push_markers(sched, base, ev_ptr, n - 1)  # onsets in a lost tail
            passes += 1
        log.info("%s: sent %d samples (%d lost), %d markers", self.name, self.n_sent,
                 self.n_dropped, self.n_markers_sent)

    def _push_markers(self, sched: Schedule, base: int, ev_ptr: int, last: int) -> int:
        """Push the markers whose onset is at or before pass-relative sample ``last``, stamped
        with their onset sample's true production time; returns the next marker's position."""
        while ev_ptr < len(self._ev_idx) and self._ev_idx[ev_ptr] <= last:
            k = base + int(self._ev_idx[ev_ptr])
            self._marker_outlet.push_sample([self._ev_val[ev_ptr]], sched.true_time(k))
            self.n_markers_sent += 1
            ev_ptr += 1
        return ev_ptr
