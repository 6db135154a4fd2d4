"""The one interface every acquisition source implements.

A source owns an acquisition thread that pulls chunks from its transport into a preallocated
:class:`~neuralign.realtime.ringbuffer.RingBuffer` (samples + LSL-clock timestamps), collects
stimulus markers, and keeps health counters (dropped samples, gaps, reconnects). It never blocks
the consumer: the engine reads the ring buffer by global sample index at its own pace.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field

from neuralign.realtime.health import RateLimitedLog
from neuralign.realtime.ringbuffer import RingBuffer

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

#: ``SourceHealth.events`` keeps the most recent this many entries.
MAX_EVENTS = 500
#: markers waiting for the engine, at most (the oldest are dropped beyond)
MAX_MARKERS = 100000


@dataclass
class StreamDescription:
    """What a source delivers: channel names/types, nominal rate, identity."""

    name: str
    stype: str
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    source_id: str = ""


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
    # human-readable log of gaps / reconnects / errors, the most recent MAX_EVENTS
    events: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    @property
    def healthy(self) -> bool:
        """Connected and the last acquisition step did not fail."""
        return self.connected and not self.failing


class Source(ABC):
    """Base class: subclasses only connect and acquire (``_connect``, ``_acquire_once``)."""

    #: True when the source delivers stimulus markers (else the engine uses sliding windows).
    has_markers: bool = False

    def __init__(self, buffer_seconds: float = 30.0):
        self.buffer_seconds = buffer_seconds
        self.description: StreamDescription | None = None
        self.buffer: RingBuffer | None = None
        self.markers: deque[Marker] = deque(maxlen=MAX_MARKERS)
        self.health = SourceHealth()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._listeners: list[threading.Event] = []

    def add_listener(self, event: threading.Event) -> None:
        """Set ``event`` whenever samples or markers arrive: consumers wake on data instead of
        polling (the engine's processing thread waits on one event shared by its sources)."""
        self._listeners.append(event)

    def _notify(self) -> None:
        for ev in self._listeners:
            ev.set()

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
        self.health.connected = True
        return self.description

    def start(self) -> None:
        if self.description is None:
            self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"acquire-{type(self).__name__}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n_before = self.buffer.n_written if self.buffer is not None else 0
                self._acquire_once()
                if self.markers or (self.buffer is not None
                                    and self.buffer.n_written != n_before):
                    self._notify()
            except Exception as exc:  # keep acquiring; report (never silently)
                h = self.health
                h.n_errors += 1
                h.failing = True
                h.last_error = repr(exc)
                h.events.append(f"acquisition error: {exc!r}")
                _rl.log(f"acquire-{id(self)}", logging.ERROR,
                        "%s: acquisition failed (%d errors so far): %r; retrying",
                        type(self).__name__, h.n_errors, exc)
                self._stop.wait(0.05)
            else:
                self.health.failing = False

    def pop_markers(self) -> list[Marker]:
        out = []
        while self.markers:
            out.append(self.markers.popleft())
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._disconnect()
        self.health.connected = False

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
