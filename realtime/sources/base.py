"""The one interface every acquisition source implements.

A source owns an acquisition thread that pulls chunks from its transport into a preallocated
:class:`~neuralign.realtime.ringbuffer.RingBuffer` (samples + LSL-clock timestamps), collects
stimulus markers, and keeps health counters (dropped samples, gaps, reconnects). It never blocks
the consumer: the engine reads the ring buffer by global sample index at its own pace.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from neuralign.realtime.clock import (
    ClockedTimeline,
    ClockGap,
    ClockReport,
    ClockSettings,
    MarkerClockCheck,
    StreamClock,
)
from neuralign.realtime.health import RateLimitedLog
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.realtime.scheduling import SchedulingPolicy, apply_to_current_thread
from neuralign.realtime.threadsched import AwaitedPull
from neuralign.realtime.worker import ThreadedWorker

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

#: ``SourceHealth.events`` keeps the most recent this many entries.
MAX_EVENTS = 500
#: markers waiting for the engine, at most (the oldest are dropped beyond)
MAX_MARKERS = 100000
#: chunk arrival times kept for the latency breakdown (one per pull: seconds of 1-sample chunks)
MAX_ARRIVALS = 4096
#: Longest a listener waits for new samples when none of them completes an epoch: the viewer's
#: display and the filters' state stay this fresh, and the catch-up work at an epoch's last
#: sample stays a few samples long.
NOTIFY_PERIOD_S = 0.02


@dataclass
class StreamDescription:
    """What a source delivers: channel names/types, nominal rate, identity."""

    name: str
    stype: str
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    source_id: str = ""
    # the stream's own unit per channel (its metadata, or --units) and the factor the source
    # multiplies its values by so the buffer holds volts / teslas (empty: unknown, all 1)
    units: list[str] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)


@dataclass
class Marker:
    """A stimulus event on the LSL clock (local time after clock correction)."""

    timestamp: float
    value: str  # the image id (or any label)
    received: float = 0.0  # local_clock() when the marker arrived (instrumentation)


@dataclass
class SourceHealth:
    n_received: int = 0
    n_dropped: int = 0  # samples missing by timestamp / package counter
    n_gaps: int = 0  # discontinuities (forward jumps or timestamps going back)
    n_reconnects: int = 0
    connected: bool = False
    last_error: str = ""
    n_errors: int = 0  # exceptions raised by an acquisition step (each logged, rate-limited)
    failing: bool = False  # the last acquisition step raised: not healthy, whatever 'connected'
    n_bad_markers: int = 0  # marker samples that were empty or not UTF-8 (not used)
    # marker values discarded because the marker queue was full (the engine did not read them)
    n_markers_dropped: int = 0
    # values of a multi-channel string marker besides its label (first non-empty channel)
    n_ignored_marker_values: int = 0
    # the separate marker stream (LSL --markers): None when the source has none; False while it
    # is lost (no markers, so marker-locked decoding stops): not healthy, whatever 'connected'
    markers_connected: bool | None = None
    n_marker_reconnects: int = 0
    # human-readable log of gaps / reconnects / errors, the most recent MAX_EVENTS
    events: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    @property
    def healthy(self) -> bool:
        """Connected, the last acquisition step did not fail and no marker stream is lost."""
        return self.connected and not self.failing and self.markers_connected is not False


class MarkerFeed(Protocol):
    """A separate marker stream a source polls (:class:`~neuralign.realtime.sources.lsl.
    LSLMarkerInlet`): it keeps its own connection state and counters, copied into the source's
    health after every acquisition step (the source may replace its ``health`` on connect)."""

    def sync_health(self, health: SourceHealth) -> None: ...


class MarkerQueue(deque):
    """The markers waiting for the engine: at most ``maxlen``; beyond, the oldest is dropped
    and counted in ``n_dropped`` (a deque with ``maxlen`` would discard it without a word).

    One producer (the acquisition thread) and one consumer (:meth:`drain`); the small lock
    makes the count exact when the consumer drains a full queue while a marker arrives."""

    def __init__(self, markers: Iterable[Marker] = (), maxlen: int = MAX_MARKERS) -> None:
        super().__init__(markers, maxlen)  # (iterable, maxlen): what deque's copy/pickle pass
        self.n_dropped = 0
        self.n_added = 0  # markers appended so far (a listener is woken for each new one)
        self._lock = threading.Lock()

    def append(self, m: Marker) -> None:
        with self._lock:
            full = len(self) == self.maxlen
            if full:
                self.n_dropped += 1
            super().append(m)
            self.n_added += 1
        if full:
            _rl.log(f"markers-full-{id(self)}", logging.WARNING, "%d markers waiting: the oldest "
                    "was dropped unread (%d so far)", self.maxlen, self.n_dropped)

    def extend(self, markers: Iterable[Marker]) -> None:
        for m in markers:
            self.append(m)

    def drain(self) -> list[Marker]:
        """Every waiting marker, oldest first; the queue is empty after."""
        with self._lock:
            out = list(self)
            self.clear()
        return out


class Source(ThreadedWorker, ABC):
    """Base class: subclasses only connect and acquire (``_connect``, ``_acquire_once``)."""

    #: True when the source delivers stimulus markers (else the engine uses sliding windows).
    has_markers: bool = False
    #: a separate marker stream polled by ``_acquire_once`` (LSL sources), else None
    marker_inlet: MarkerFeed | None = None
    #: paced by a device or a sender (False: a file read here, perhaps faster than real time,
    #: whose threads may never block: never above normal priority)
    live: bool = True

    def __init__(self, buffer_seconds: float = 30.0):
        self.buffer_seconds = buffer_seconds
        self.description: StreamDescription | None = None
        self.buffer: RingBuffer | None = None
        #: the stream's sample clock (set by :meth:`open`): gaps, jitter, times of samples
        self.clock: StreamClock | None = None
        self.clock_settings = ClockSettings()
        #: what the epocher reads: buffer indices, model times (set by :meth:`open`)
        self.timeline: ClockedTimeline | None = None
        #: is the marker stream on the data's clock (sources with a separate marker stream)
        self.marker_clock = MarkerClockCheck()
        self._clock_warned: list[str] = []  # warnings logged so far (stream's and markers')
        self._n_stream_warnings = 0  # the stream clock's warnings seen by _clock_warnings
        self.markers = MarkerQueue(maxlen=MAX_MARKERS)
        #: (samples written, local_clock()) after each chunk a transport delivered, the newest
        #: MAX_ARRIVALS: when the engine's epochs were pulled (latency instrumentation)
        self.arrivals: deque[tuple[int, float]] = deque(maxlen=MAX_ARRIVALS)
        #: each pull that waited for the awaited sample, when ``sched_probe`` is on (a
        #: benchmark's scheduler attribution)
        self.awaited_pulls: deque[AwaitedPull] = deque(maxlen=MAX_ARRIVALS)
        self.sched_probe = False
        self.health = SourceHealth()
        self._init_threads()
        self._lock = threading.Lock()
        self._listeners: list[threading.Event] = []
        self._wake_at: int | None = None
        self._notified_wake: int | None = None  # the wake_at the listeners were woken for
        #: listeners are also woken once when the awaited sample is this few samples away (0:
        #: not): their pass filters and encodes what came just before it, so that little is
        #: left to do when it lands (a source that pulls just before it sets this)
        self.near_samples = 0
        #: called on the acquisition thread when the awaited sample is in, before the listeners'
        #: events would be set: a listener that can do its work right here (the engine's pass)
        #: saves a thread wake-up; it returns False when it could not (the events are set then)
        self.on_awaited: Callable[[], bool] | None = None
        self._near_notified: int | None = None  # the wake_at woken for as near
        self._n_markers_notified = 0  # markers received when the listeners were last woken
        #: set when wake_at changes (and on stop): a sleeping acquisition step re-plans at once
        self._rewake = threading.Event()
        #: listeners are woken at least this often while samples arrive (see NOTIFY_PERIOD_S);
        #: None: only for markers and the awaited sample (a listener that wakes itself
        #: periodically, as the engine does for all its streams at once)
        self.notify_period_s: float | None = NOTIFY_PERIOD_S
        self._last_notify = 0.0
        self._notified_upto = 0  # samples written when the listeners were last woken
        #: the acquisition thread's priority (the engine sets it; None: left as it is)
        self.scheduling: SchedulingPolicy | None = None

    @property
    def wake_at(self) -> int | None:
        """The sample count a listener is waiting for (the engine: the last sample of the next
        epoch, + 1); None: no epoch pending. Written by the listener, read by the acquisition
        thread, which is woken when it changes."""
        return self._wake_at

    @wake_at.setter
    def wake_at(self, value: int | None) -> None:
        if value != self._wake_at:
            self._wake_at = value
            self._rewake.set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, or until :attr:`wake_at` changes or the source stops; True
        when stopping. Acquisition steps sleep here, so a new awaited sample is planned for at
        once (clear :attr:`_rewake` before reading ``wake_at``)."""
        if seconds > 0:
            self._rewake.wait(seconds)
        return self._stop.is_set()

    def _wake_threads(self) -> None:
        self._rewake.set()

    def add_listener(self, event: threading.Event) -> None:
        """Set ``event`` when markers arrive, when the sample a listener waits for
        (:attr:`wake_at`) is settled, and every :attr:`notify_period_s` while samples arrive:
        consumers wake on data instead of polling, but not once per sample (a 1 kHz stream in
        1-sample chunks would wake the engine 1000 times a second for nothing)."""
        self._listeners.append(event)

    def _notify(self) -> None:
        self._last_notify = time.monotonic()
        self._notified_upto = self.buffer.n_written if self.buffer is not None else 0
        self._n_markers_notified = self.markers.n_added
        awaited = self.wake_at is not None and self._awaited_in()
        if awaited:
            self._notified_wake = self.wake_at
            if self.on_awaited is not None and self.on_awaited():
                return  # the listener did its work on this thread
        for ev in self._listeners:
            ev.set()

    def _awaited_in(self) -> bool:
        """Is the sample a listener waits for in and settled?"""
        w = self.wake_at
        return w is not None and self.timeline is not None and self.timeline.settled >= w

    def _samples_due(self) -> bool:
        """Do the samples written so far call for waking the listeners? Once for the awaited
        sample (the listener names the next one when it has read it), once when it is
        :attr:`near_samples` away, and periodically."""
        w = self.wake_at
        if w is not None and self._awaited_in() and w != self._notified_wake:
            return True
        if (w is not None and self.near_samples and w != self._near_notified
                and w - self.buffer.n_written <= self.near_samples):
            self._near_notified = w
            return True
        period = self.notify_period_s
        return period is not None and time.monotonic() - self._last_notify >= period

    def samples_wanted(self) -> int | None:
        """Samples still to arrive before the one a listener waits for (None: no such sample):
        an acquisition step may wait for that many, and no more, before it returns."""
        w = self.wake_at
        return None if w is None or self.buffer is None else w - self.buffer.n_written

    # --- subclass API ------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> StreamDescription:
        """Open the transport; raise neuralign.errors.UserError if not found within the timeout."""

    @abstractmethod
    def _acquire_once(self) -> None:
        """Pull whatever is available (bounded wait, <= ~5 ms), push into ``self.buffer`` /
        ``self.markers``; detect gaps; handle reconnection."""

    def _disconnect(self) -> None:  # noqa: B027 - optional hook, most sources override it
        """Close the transport (inlets before outlets)."""

    # --- public API ---------------------------------------------------------------------------
    def open(self) -> StreamDescription:
        self.description = self._connect()
        n = int(self.buffer_seconds * self.description.sfreq)
        self.buffer = RingBuffer(len(self.description.ch_names), n)
        self.clock = StreamClock(self.description.sfreq, self.clock_settings)
        self.timeline = ClockedTimeline(self.buffer, self.clock)
        self.health.connected = True
        return self.description

    def _write(self, data: np.ndarray, stamps: np.ndarray, arrival: float | None = None,
               count_gaps: bool = True) -> list[ClockGap]:
        """Append a chunk to the ring buffer and show it to the stream's clock; the gaps the
        clock confirms are marked in the buffer (epochs across them are dropped) and, with
        ``count_gaps``, counted in health (a source with an exact drop counter, such as
        BrainFlow's package numbers, counts its own)."""
        base = self.buffer.n_written
        self.buffer.write(data, stamps)
        if arrival is not None:
            self.arrivals.append((self.buffer.n_written, arrival))
        gaps = self.timeline.observe(base, stamps, arrival)  # marks the gaps in the buffer
        if len(self.clock.report.warnings) != self._n_stream_warnings:
            self._clock_warnings()
        for g in gaps:
            if count_gaps:
                self.health.n_gaps += 1
                self.health.n_dropped += max(g.missing, 0)
                t = self.clock.time_of(g.index)
                self._gap_event(g.describe(t if t is not None else float("nan")))
        return gaps

    def _gap_event(self, msg: str) -> None:
        """Record a gap in ``health.events`` and log it (rate-limited)."""
        self.health.events.append(msg)
        _rl.log(f"gap-{id(self)}", logging.WARNING, "%s: %s", type(self).__name__, msg)

    def _note_marker(self, m: Marker) -> None:
        """Compare a marker's stamp with its arrival (a marker clock behind the data's)."""
        rep = self.clock.snapshot() if self.clock is not None else None
        lat = None if rep is None or rep.data_latency_ms is None else rep.data_latency_ms * 1e-3
        self.marker_clock.add(m.timestamp, m.received, lat)
        self._clock_warnings()

    def _clock_warnings(self) -> None:
        """Log and record each new warning of the stream's or the markers' clock once."""
        stream = self.clock.report.warnings if self.clock else []
        self._n_stream_warnings = len(stream)
        new = [w for w in (*stream, *self.marker_clock.warnings) if w not in self._clock_warned]
        for w in new:
            self._clock_warned.append(w)
            self.health.events.append(w)
            log.warning("%s: %s", type(self).__name__, w)

    def clock_report(self) -> ClockReport | None:
        """Jitter, effective rate, drift and gap counts of the stream's clock."""
        return None if self.clock is None else self.clock.snapshot()

    def start(self) -> None:
        if self.description is None:
            self.open()
        self._stop.clear()
        self._spawn(self._run, f"acquire-{type(self).__name__}")

    def _run(self) -> None:
        if self.scheduling is not None:
            apply_to_current_thread("critical", self.scheduling)
        while not self._stop.is_set():
            try:
                self._acquire_once()
                if (self.markers.n_added != self._n_markers_notified
                        or (self.buffer is not None
                            and self.buffer.n_written != self._notified_upto
                            and self._samples_due())):
                    self._notify()
            except Exception as exc:  # keep acquiring; report (never silently)
                h = self.health
                h.n_errors += 1
                h.last_error = repr(exc)  # before 'failing': a reader of both sees this error
                h.failing = True
                h.events.append(f"acquisition error: {exc!r}")
                _rl.log(f"acquire-{id(self)}", logging.ERROR,
                        "%s: acquisition failed (%d errors so far): %r; retrying",
                        type(self).__name__, h.n_errors, exc)
                self._stop.wait(0.05)
            else:
                self.health.failing = False
            self._sync_health()

    def _sync_health(self) -> None:
        """Copy the counters kept outside ``health`` into it (the acquisition thread writes
        both), so a marker queue overflow or a lost marker stream shows in health."""
        self.health.n_markers_dropped = self.markers.n_dropped
        if self.marker_inlet is not None:
            self.marker_inlet.sync_health(self.health)

    def pop_markers(self) -> list[Marker]:
        return self.markers.drain()

    def stop(self) -> None:
        self._halt(timeout=5)
        self._disconnect()
        self.health.connected = False
