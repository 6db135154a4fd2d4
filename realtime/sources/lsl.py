"""LSL acquisition: a data inlet into the ring buffer, reconnection, marker inlets.

Timestamps are stored as the sender stamped them; the source's clock model
(:mod:`neuralign.signal.clock`, fed by :meth:`Source._write`) says where each sample lies in time
and which discontinuities are gaps. liblsl's ``proc_dejitter`` is not used: its recursive fit
takes minutes to converge, smooths over real gaps (a hole becomes a slow drift, so the epochs
across it would be decoded), and offline readers of the same stamps could not reproduce it.
Clock synchronisation is applied only when the outlet runs on another host (``clock_sync='auto'``): on this host both ends read the same clock, so
the true offset is exactly 0, while liblsl's estimate is biased by tens of microseconds of
asymmetric loopback latency (-32 us measured here) and differs between the data and the marker
inlet. ``clock_sync='lsl'`` forces ``proc_clocksync``, ``'none'`` disables it.

Reconnection is done here rather than by liblsl (``recover=False``): liblsl's silent recovery hides
the outage from us (no gap, no event) and destroying an inlet while it is recovering has crashed
liblsl (sccn/liblsl#220).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from neuralign.errors import UserError
from neuralign.realtime.health import RateLimitedLog
from neuralign.realtime.lsl_io import (
    NUMPY_DTYPES,
    ContinuousResolver,
    LostError,
    StreamInfo,
    StreamInlet,
    channel_names,
    channel_types,
    channel_units,
    clock_sync_flags,
    describe,
    find_stream,
    is_string_stream,
    local_clock,
    open_inlet,
    resolve_stream,
    watch_streams,
)
from neuralign.realtime.scheduling import native_threads_as
from neuralign.realtime.sources.base import (
    MAX_EVENTS,
    Marker,
    Source,
    SourceHealth,
    StreamDescription,
)
from neuralign.realtime.threadsched import AwaitedPull, thread_times
from neuralign.units import (  # noqa: F401 - re-exported: these names lived here first
    _PHYSICAL_TYPES,
    UNIT_SCALE,
    UNITLESS,
    channel_scales,
    declared_units,
    unit_scale,
)

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

#: Per-call wait of a pull: bounds the acquisition loop's latency and its reaction to stop().
PULL_WAIT_S = 0.005
#: While the awaited sample is further than this (or none is), the acquisition thread sleeps
#: (at most IDLE_PULL_S, and no longer than the stream needs to bring that sample but this
#: margin) and then takes what came without waiting; within it, one blocking pull waits for
#: exactly that sample, so the epoch is not late. A blocking liblsl pull wakes its thread at
#: every sample that arrives: this keeps those wake-ups to the last couple of samples of an epoch.
NEAR_S = 0.002
#: Longest sleep of the acquisition thread while the stream runs: one wake-up per stream this
#: often keeps markers, health and the engine's filters fresh.
IDLE_PULL_S = 0.02
#: Inlet transmission chunk (samples). Small so the sender's chunking cannot add lag (0 would
#: inherit the sender's chunk size; a 1200-sample sender chunk once caused 20 s of lag).
MAX_CHUNKLEN = 32
#: Inlet-side queue in seconds: a slow consumer loses nothing for this long.
MAX_BUFLEN_S = 360
RESOLVE_WAVE_S = 1.0


class LSLMarkerInlet:
    """Stimulus markers from an LSL stream, as :class:`Marker` (local-clock timestamps).

    Accepts the two encodings met in practice: string streams (type ``Markers``; the first
    non-empty channel is the label) and mne-lsl ``PlayerLSL`` annotation streams, which are either
    strings (``annotations_encoding='string'``) or one float channel per annotation description
    (``'one-hot'``: a non-zero value on channel k means "annotation named like channel k"). A
    single-channel numeric trigger stream gives the value itself (``"3"`` for 3.0).

    ``offset_s`` is added to every timestamp: mne-lsl's player stamps annotations one sample
    before the data sample they belong to, so ``offset_s=1/sfreq`` realigns those. ``None``
    (default): that offset exactly for an mne-lsl player annotation stream (type
    ``annotations`` with the data stream's ``source_id``, as ``PlayerLSL`` makes it), else 0.

    Empty and non-UTF-8 string samples are counted in ``n_bad`` (and logged), never used. A
    multi-channel string sample is ONE event: its first non-empty channel is the label, the other
    non-empty values (trial numbers, conditions, ...) are counted in ``n_ignored`` and logged,
    not decoded as markers of their own (that would cut extra epochs at the same onset).

    Losing the stream is not only a log line: ``connected`` turns False (the source's health
    ``markers_connected``, so the engine is not healthy and its status says "marker stream lost"),
    an event is recorded, and reconnection to the same ``source_id`` is counted in
    ``n_reconnects``. :meth:`sync_health` copies this state into the source's health.
    """

    def __init__(self, name: str | None = None, stype: str | None = None,
                 source_id: str | None = None, timeout: float = 5.0, clock_sync: str = "auto",
                 offset_s: float | None = None):
        if name is None and stype is None and source_id is None:
            stype = "Markers"
        self.name, self.stype, self.source_id = name, stype, source_id
        self.timeout, self.clock_sync, self.offset_s = timeout, clock_sync, offset_s
        self._offset = offset_s or 0.0  # in use (auto: set when attached)
        self.data_sfreq: float | None = None  # the data stream's rate (set by the LSL source)
        self.data_source_id: str | None = None
        self.n_bad = 0
        self.n_ignored = 0  # non-empty values besides the label of multi-channel string samples
        self.n_reconnects = 0
        self._was_connected = False
        self._events: deque[str] = deque(maxlen=MAX_EVENTS)  # for health.events (sync_health)
        self._inlet: StreamInlet | None = None
        self._labels: list[str] = []
        self._string = True
        self._one_hot = False
        self.connected = False
        self._resolver: ContinuousResolver | None = None
        self._next_probe = 0.0  # monotonic time of the next pull even when nothing is announced

    def open(self) -> None:
        """Resolve and connect; :class:`UserError` when the stream is not found in time."""
        info = resolve_stream(self.name, self.stype, self.source_id, self.timeout, regular=False)
        self._attach(info)

    def _attach(self, info: StreamInfo) -> None:
        inlet = open_inlet(info, self.timeout, max_buflen=MAX_BUFLEN_S, max_chunklen=1,
                           processing_flags=clock_sync_flags(info, self.clock_sync))
        full = inlet.info(self.timeout)
        self._string = is_string_stream(full)
        self._labels = channel_names(full)
        self._one_hot = not self._string and (full.type().lower() == "annotations"
                                              or full.channel_count() > 1)
        if self.source_id is None and full.source_id():
            self.source_id = full.source_id()  # reconnect to the same sender, not any "Markers"
        if self.offset_s is None:
            player = (full.type().lower() == "annotations" and self.data_sfreq
                      and full.source_id() and full.source_id() == self.data_source_id)
            self._offset = 1.0 / self.data_sfreq if player else 0.0
            if player:
                log.info("marker stream %s is an mne-lsl player annotation stream: its stamps "
                         "are one sample early, shifted by %.6f s", full.name(), self._offset)
        self._inlet = inlet
        self.connected = True
        if self._was_connected:
            self.n_reconnects += 1
            self._event(f"marker stream reconnected (#{self.n_reconnects})", logging.INFO)
        self._was_connected = True
        log.info("marker inlet connected: %s (%s, %d ch, %s)", full.name(), full.type(),
                 full.channel_count(), "one-hot" if self._one_hot else
                 ("string" if self._string else "numeric"))

    def pull(self) -> list[Marker]:
        """Markers available now (never waits). Tries to reconnect every 0.5 s when lost."""
        if self._inlet is None:
            # A continuous resolver searches in liblsl's own thread, so this never blocks the
            # data acquisition that calls it (a blocking resolve needs ~1 s to find old outlets).
            if self._resolver is None:
                self._resolver = watch_streams(self.name, self.stype, self.source_id,
                                               regular=False)
            found = self._resolver.results()
            if found:
                self._attach(found[0])
                self._resolver = None
            if self._inlet is None:
                return []
        # Called on every acquisition step (1 kHz for 1-sample chunks); an empty string-chunk
        # pull still costs liblsl's string-buffer handling (~40 % of the acquisition thread's busy
        # time, profiled), so ask first whether anything is there - and pull anyway twice a
        # second, which is how a lost stream shows (samples_available never raises).
        now_m = time.monotonic()
        if now_m < self._next_probe and not self._inlet.samples_available():
            return []
        self._next_probe = now_m + 0.5
        try:  # strings raw (as_numpy): a non-UTF-8 sample must not take the chunk down with it
            samples, stamps = self._inlet.pull_chunk(timeout=0.0, max_samples=256,
                                                     as_numpy=True)
        except LostError:
            self._inlet, self.connected = None, False
            self._event("marker stream lost: no marker-locked epochs until it returns; "
                        "reconnecting", logging.WARNING)
            return []
        now = local_clock()
        out = []
        for sample, t in zip(samples, stamps):
            for value in self._decode(sample):
                out.append(Marker(timestamp=float(t) + self._offset, value=value, received=now))
        return out

    def _decode(self, sample: Sequence) -> list[str]:
        if self._string:
            vals, undecodable = [], False
            for v in sample:
                try:
                    text = v.decode("utf-8") if isinstance(v, bytes) else str(v)
                except UnicodeDecodeError:
                    self._bad(f"a marker that is not UTF-8 ({bytes(v)[:40]!r})")
                    undecodable = True
                    continue
                if text.strip():
                    vals.append(text)
            if not vals and not undecodable:
                self._bad("an empty marker")
            if len(vals) > 1:
                self._ignore(vals)
            return vals[:1]
        if self._one_hot:
            return [self._labels[k] for k, v in enumerate(sample) if v != 0]
        v = float(sample[0])
        return [str(int(v)) if v.is_integer() else repr(v)] if v != 0 else []

    def _ignore(self, vals: list[str]) -> None:
        self.n_ignored += len(vals) - 1
        _rl.log("ignored-marker-values", logging.WARNING, "marker stream %s sent %d values in one "
                "sample; the first, %.80r, is the label, the others (%.80r) are ignored (%d so "
                "far)", describe(self.name, self.stype, self.source_id), len(vals), vals[0],
                vals[1:], self.n_ignored)

    def _event(self, msg: str, level: int) -> None:
        """Log ``msg`` and keep it for the source's ``health.events``."""
        self._events.append(msg)
        log.log(level, "marker stream %s: %s", describe(self.name, self.stype, self.source_id),
                msg)

    def sync_health(self, health: SourceHealth) -> None:
        """Copy this inlet's state into its source's ``health`` (called by the source after
        every acquisition step, in the thread that pulls)."""
        health.markers_connected = self.connected
        health.n_marker_reconnects = self.n_reconnects
        health.n_bad_markers = self.n_bad
        health.n_ignored_marker_values = self.n_ignored
        while self._events:
            health.events.append(self._events.popleft())

    def _bad(self, what: str) -> None:
        self.n_bad += 1
        _rl.log("bad-marker", logging.WARNING, "marker stream %s sent %s; ignored (%d so far)",
                describe(self.name, self.stype, self.source_id), what, self.n_bad)

    def close(self) -> None:
        self._inlet, self.connected, self._resolver = None, False, None


class LSLSource(Source):
    """A live LSL stream (resolved by name / type / source_id) acquired into the ring buffer.

    One acquisition thread pulls into a preallocated numpy array (no Python lists): it sleeps
    while the sample the engine waits for is far and takes what came, and waits for exactly that
    sample when it is near (:meth:`_pull_plan`), so the sample is in the buffer as it arrives
    without a wake-up per sample. Markers from ``markers`` are polled in the same thread (no
    extra thread to stop).
    """

    def __init__(self, name: str | None = None, stype: str | None = None,
                 source_id: str | None = None, markers: LSLMarkerInlet | None = None,
                 timeout: float = 5.0, buffer_seconds: float = 30.0,
                 expected_sfreq: float | None = None,
                 expected_channels: int | Sequence[str] | None = None,
                 clock_sync: str = "auto", reconnect_interval: float = 0.5,
                 stall_timeout: float = 1.0, max_pull: int = 1024, units: str | None = None):
        super().__init__(buffer_seconds)
        self.units = units  # --units: the stream's unit, whatever its metadata says
        self._scale: np.ndarray | None = None  # per-channel factor to volts (None: all 1)
        self.name, self.stype, self.source_id = name, stype, source_id
        self.marker_inlet = markers
        self.has_markers = markers is not None  # the engine epochs on markers, else slides
        self.timeout = timeout
        self.expected_sfreq, self.expected_channels = expected_sfreq, expected_channels
        self.clock_sync = clock_sync
        self.reconnect_interval, self.stall_timeout = reconnect_interval, stall_timeout
        self.max_pull = max_pull
        self._inlet: StreamInlet | None = None
        self._pull_buf: np.ndarray | None = None
        self._last_data = 0.0  # monotonic time of the last received chunk
        self._stall_reported = False
        self._next_retry = 0.0
        self._after_reconnect = False
        self._sfreq = 0.0
        self._n_channels = 0
        # repeated warnings within a second go to DEBUG (errors always go out)
        self._event_log = RateLimitedLog(log, interval=1.0, demote_to=logging.DEBUG,
                                         min_level=logging.WARNING, max_level=logging.ERROR)

    # --- connection ---------------------------------------------------------------------------
    def _query(self) -> str:
        return describe(self.name, self.stype, self.source_id)

    def _open_inlet(self, info: StreamInfo) -> tuple[StreamInlet, StreamInfo]:
        # liblsl's receiver thread starts in here and hands the acquisition thread each sample:
        # it gets the acquisition thread's priority (a board's own threads are left alone: a
        # driver that polls would hold a core at SCHED_FIFO)
        with native_threads_as("critical", self.scheduling):
            inlet = open_inlet(info, self.timeout, max_buflen=MAX_BUFLEN_S,
                               max_chunklen=MAX_CHUNKLEN,
                               processing_flags=clock_sync_flags(info, self.clock_sync))
        return inlet, inlet.info(self.timeout)

    def _validate(self, full: StreamInfo) -> None:
        """UserError naming the stream, what was expected and what it has."""
        label = f"LSL stream {full.name()!r} ({self._query()})"
        if full.nominal_srate() <= 0:
            raise UserError(f"{label} has an irregular rate; a data stream needs a nominal "
                            "sampling rate (marker streams go to LSLMarkerInlet)")
        if full.channel_format() not in NUMPY_DTYPES:
            raise UserError(f"{label} carries strings; a data stream must be numeric")
        if self.expected_sfreq is not None and abs(full.nominal_srate()
                                                   - self.expected_sfreq) > 1e-6:
            raise UserError(f"{label}: expected sampling rate {self.expected_sfreq:g} Hz, "
                            f"got {full.nominal_srate():g} Hz")
        exp = self.expected_channels
        if exp is not None:
            n_exp = exp if isinstance(exp, int) else len(exp)
            if full.channel_count() != n_exp:
                raise UserError(f"{label}: expected {n_exp} channels, got "
                                f"{full.channel_count()}")
            names = channel_names(full)
            if not isinstance(exp, int) and names[0] != "ch0" and list(exp) != names:
                missing = [c for c in exp if c not in names]
                raise UserError(f"{label}: expected channels {list(exp)}, got {names}"
                                + (f" (missing: {missing})" if missing else " (order differs)"))

    def _connect(self) -> StreamDescription:
        info = resolve_stream(self.name, self.stype, self.source_id, self.timeout, regular=True)
        inlet, full = self._open_inlet(info)
        try:
            self._validate(full)
        except UserError:
            del inlet
            raise
        self._inlet = inlet
        if self.source_id is None and full.source_id():
            self.source_id = full.source_id()  # reconnect to this sender only
        self._sfreq = full.nominal_srate()
        # the pull just before the awaited sample (NEAR_S) wakes the engine: it filters and
        # encodes what came, and only the last samples are left for when that one lands
        self.near_samples = max(1, int(round(2 * NEAR_S * self._sfreq)))
        self._n_channels = full.channel_count()
        names, types = channel_names(full), channel_types(full)
        scale = channel_scales(names, types, channel_units(full), self.units,
                               f"LSL stream {full.name()!r} ({self._query()})")
        self._scale = None if np.all(scale == 1.0) else scale[:, None]
        if self._scale is not None:
            log.info("LSL stream %s: converting to volts/teslas (factors %s)", full.name(),
                     sorted(set(scale.tolist())))
        self._pull_buf = np.zeros((self.max_pull, self._n_channels),
                                  dtype=NUMPY_DTYPES[full.channel_format()])
        self._last_data = time.monotonic()
        if self.marker_inlet is not None:
            self.marker_inlet.data_sfreq = self._sfreq
            self.marker_inlet.data_source_id = full.source_id()
        if self.marker_inlet is not None and self.marker_inlet._inlet is None:
            try:
                with native_threads_as("critical", self.scheduling):
                    self.marker_inlet.open()
            except Exception:
                self._inlet = None
                raise
        self.health = SourceHealth(connected=True)
        log.info("LSL source connected: %s (%d ch @ %g Hz, host %s, clock sync %s)", full.name(),
                 self._n_channels, self._sfreq, full.hostname(),
                 "on" if clock_sync_flags(full, self.clock_sync) else "off (same host)")
        return StreamDescription(name=full.name(), stype=full.type(), sfreq=self._sfreq,
                                 ch_names=names, ch_types=types, source_id=full.source_id(),
                                 units=declared_units(types, channel_units(full), self.units),
                                 scales=scale.tolist())

    def _event(self, msg: str, level: int = logging.INFO) -> None:
        """Record ``msg`` in ``health.events`` (last :data:`MAX_EVENTS`) and log it; repeated
        warnings within a second go to DEBUG so a jittery sender cannot flood the log."""
        self.health.events.append(msg)  # a bounded deque
        self._event_log.log("event", level, "%s: %s", self._query(), msg)

    def _mark_lost(self, reason: str) -> None:
        self._inlet = None  # inlet only: we own no outlet
        self.health.connected = False
        self.health.last_error = reason
        self._next_retry = time.monotonic()
        self._event(f"disconnected ({reason}) after {self.health.n_received} samples; "
                    "trying to reconnect", logging.WARNING)

    def _try_reconnect(self) -> None:
        now = time.monotonic()
        if now < self._next_retry:
            self._stop.wait(min(self._next_retry - now, PULL_WAIT_S * 10))
            return
        self._next_retry = now + self.reconnect_interval
        # 1 s, not less: with machine scope only the newest outlet answers the multicast wave and
        # older ones are found through KnownPeers' unicast wave, which takes ~0.5 s (measured).
        info = find_stream(self.name, self.stype, self.source_id, RESOLVE_WAVE_S, regular=True)
        if info is None:
            return
        try:
            inlet, full = self._open_inlet(info)
        except Exception as exc:  # the sender vanished again while we connected
            self.health.last_error = repr(exc)
            return
        if full.channel_count() != self._n_channels or abs(full.nominal_srate()
                                                           - self._sfreq) > 1e-6:
            self.health.last_error = (f"stream came back with {full.channel_count()} ch @ "
                                      f"{full.nominal_srate():g} Hz, expected {self._n_channels} "
                                      f"ch @ {self._sfreq:g} Hz; not reconnecting")
            self._event(self.health.last_error, logging.ERROR)
            return
        self._inlet = inlet
        self.health.connected = True
        self.health.n_reconnects += 1
        self._after_reconnect = True
        self._last_data = time.monotonic()
        self._stall_reported = False
        self._event(f"reconnected (#{self.health.n_reconnects})")

    # --- acquisition --------------------------------------------------------------------------
    def _acquire_once(self) -> None:
        if self.marker_inlet is not None:
            for m in self.marker_inlet.pull():
                self.markers.append(m)
                self._note_marker(m)
            self.health.n_bad_markers = self.marker_inlet.n_bad
        if self._inlet is None:
            self._try_reconnect()
            return
        self._rewake.clear()  # before reading wake_at: a change meanwhile ends the sleep
        sleep_s, need = self._pull_plan()
        timeout = PULL_WAIT_S
        if need is None:
            # the awaited sample is not near: sleep, then take what came without waiting (a
            # blocking liblsl pull wakes its thread at every sample: 1000 a second per 1 kHz
            # stream, ~5 % of a core each, measured with 8 streams)
            if self._sleep(sleep_s):
                return
            timeout, need = 0.0, 1
        before = thread_times() if self.sched_probe and timeout > 0 else None
        try:
            samples, ts = self._inlet.pull_chunk(timeout=timeout, max_samples=self.max_pull,
                                                 dest_obj=self._pull_buf,
                                                 min_samples=need, as_numpy=True)
        except LostError:
            self._mark_lost("stream lost")
            return
        n = len(ts)
        if n == 0:
            self._check_stall()
            return
        self._last_data = time.monotonic()
        self._stall_reported = False
        if self._after_reconnect:  # the sender may have restarted: a new line from here on
            self._after_reconnect = False
            base = self.buffer.n_written
            self.buffer.mark_gap(base)
            self.clock.break_at(base)
            self.health.n_gaps += 1
            self._event(f"gap: reconnected at t={ts[0]:.4f}", logging.WARNING)
        data = samples.T if self._scale is None else samples.T * self._scale
        if before is not None:  # the waited-for pull: where its wait and what follows went
            w = self.buffer.n_written
            self.awaited_pulls.append(AwaitedPull(w, w + n, before, thread_times()))
        self._write(data, ts, arrival=local_clock())
        self.health.n_received += n

    def _pull_plan(self) -> tuple[float, int | None]:
        """(seconds to sleep, samples to wait for) of the next pull. The sample the engine waits
        for due within :data:`NEAR_S`: no sleep, a blocking pull for exactly the samples up to it
        (handed over the moment it arrives). Further, or none awaited: sleep until :data:`NEAR_S`
        before it is due (at most :data:`IDLE_PULL_S`), then take what came (``None``: no wait).
        A sample never arrives before it is due (:meth:`_due_in`), so the thread is awake and
        waiting when it lands; a chunked sender's burst comes later and finds it so too. Only a
        sender catching up on a backlog can be picked up one sleep late."""
        wanted = self.samples_wanted()
        if wanted is None or self._awaited_in():  # none awaited, or delivered: the next is new
            return IDLE_PULL_S, None
        sleep_s = min(IDLE_PULL_S, self._due_in(wanted) - NEAR_S)
        if wanted <= max(1, int(NEAR_S * self._sfreq)) or sleep_s <= 0:
            return 0.0, max(1, min(self.max_pull, wanted))
        return sleep_s, None

    def _due_in(self, wanted: int) -> float:
        """Seconds until the sample ``wanted`` samples after the newest can arrive, at the
        earliest: its time at the nominal rate after the newest sample's time on the stream's
        clock model, or after the last delivery, whichever is sooner (after a quiet sleep the
        newest sample is no fresher than the last delivery: counting from now would sleep past a
        chunked sender's next burst)."""
        ahead = wanted / self._sfreq
        due = self._last_data + ahead - time.monotonic()
        t_newest = (self.timeline.timestamp_at(self.buffer.n_written - 1)
                    if self.timeline is not None and self.buffer.n_written else None)
        if t_newest is not None:
            due = min(due, t_newest + ahead - local_clock())
        return due

    def _check_stall(self) -> None:
        """No data for a while: find out whether the sender is gone (then reconnect) or paused."""
        quiet = time.monotonic() - self._last_data
        limit = max(self.stall_timeout, 10.0 / self._sfreq)
        if quiet < limit or self._stall_reported:
            return
        self._stall_reported = True
        if find_stream(self.name, self.stype, self.source_id, RESOLVE_WAVE_S, regular=True) is None:
            self._mark_lost(f"no data for {quiet:.1f} s and the stream is no longer visible")
        else:
            self._event(f"no data for {quiet:.1f} s (sender paused; stream still visible)",
                        logging.WARNING)

    def _disconnect(self) -> None:
        if self.marker_inlet is not None:
            self.marker_inlet.close()
        self._inlet = None
