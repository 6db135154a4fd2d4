"""How a reader consumes an engine's decoded results: one subscription per reader.

``sub = engine.subscribe(maxlen=512)`` opens a subscription; ``sub.drain()`` returns the results
published since the last drain, oldest first; ``sub.close()`` (or leaving a ``with`` block) stops
delivery. The CLI, the viewer, the soak, the benchmark and the replay session all read this way,
so there is one contract to keep rather than a shared deque, a cursor and a viewer queue.

Choices, and why:

- **New results only, by default.** A subscription receives what is published after it opens,
  like an LSL inlet on an outlet or an MNE-LSL ``StreamLSL`` that just connected. To get every
  result of a run, subscribe before :meth:`Engine.start`.
- **Kept history on request.** The engine keeps its newest results (``results_maxlen``,
  :data:`MAX_RESULTS` by default), as MNE-LSL keeps a stream's recent buffer.
  ``subscribe(replay=True)`` starts the subscription with that history: the newest ``maxlen``
  of it, oldest first, then live results. This suits a viewer attached to a running engine, or a
  look at a finished run. :func:`recent` is the same thing as a single call: "the last N".
- **The engine never waits for a reader.** Publishing appends to every open subscription's
  bounded deque under one lock. A reader holds that lock for O(1): a drain swaps its deque out
  and copies it after releasing the lock. When a reader falls more than ``maxlen`` behind, its
  own oldest results are dropped. Other readers lose nothing. ``Subscription.dropped`` counts
  the reader's losses, and ``ResultHub.n_dropped`` counts all of them (the engine's health
  reports that total as ``viewer_dropped``). Results from before a subscription opened were never
  promised to it, so they do not count as dropped.
- **Memory stays bounded** whatever the readers do. The history is a bounded deque, every
  subscription is bounded by its ``maxlen``, and only the newest :data:`KEEP_HEALTH` published
  results keep their ``health`` snapshot. Older results lose it: the snapshot already went out
  on the result stream and into the recording, and about 40 counters per result would add up to
  hundreds of MB at :data:`MAX_RESULTS`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Protocol

from neuralign.realtime.decisions import Result

log = logging.getLogger(__name__)

#: Results the engine keeps for ``subscribe(replay=True)`` (the newest), and a subscription's
#: default ``maxlen``.
MAX_RESULTS = 100000
#: Only the newest published results keep their ``health`` snapshot in memory.
KEEP_HEALTH = 1000


class Subscription:
    """One reader's queue of results, oldest first. Opened by :meth:`ResultHub.subscribe`.

    Any thread may drain it. The engine's thread appends to it and never waits on the reader;
    past ``maxlen`` the reader's oldest results are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, hub: ResultHub, maxlen: int, initial: Iterable[Result] = ()):
        self._hub = hub
        self.maxlen = maxlen
        self._q: deque[Result] = deque(initial, maxlen=maxlen)
        self._dropped = 0
        self._closed = False
        self._ready = threading.Event()  # set when results wait: for wait()
        if self._q:
            self._ready.set()

    @property
    def dropped(self) -> int:
        """Results this reader lost because it fell more than ``maxlen`` behind."""
        return self._dropped

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: nothing new arrives (what waited can still be drained)."""
        return self._closed

    def __len__(self) -> int:
        """Results waiting to be drained."""
        return len(self._q)

    def drain(self) -> list[Result]:
        """Every waiting result, oldest first, and forget them; never blocks the engine."""
        with self._hub._lock:
            q = self._q
            if q:
                self._q = deque(maxlen=self.maxlen)
            self._ready.clear()
        return list(q)

    def wait(self, timeout: float | None = None) -> bool:
        """Block this reader (never the engine) until results wait or ``timeout`` passes;
        returns whether results wait."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        """Stop receiving; idempotent. Results already waiting can still be drained."""
        self._hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultHub:
    """Fans published results out to subscriptions, keeps the newest ``keep`` for late readers
    (``subscribe(replay=True)``) and bounds the memory of health snapshots.

    ``publish`` runs on the engine's latency path: one lock, and O(subscriptions) work.
    """

    def __init__(self, keep: int = MAX_RESULTS, keep_health: int = KEEP_HEALTH):
        if keep < 1 or keep_health < 1:
            raise ValueError("keep and keep_health must be >= 1")
        self._lock = threading.Lock()
        self._kept: deque[Result] = deque(maxlen=keep)
        self._with_health: deque[Result] = deque(maxlen=keep_health)
        self._subs: tuple[Subscription, ...] = ()  # replaced, never mutated
        self.n_published = 0
        self.n_dropped = 0  # over all subscriptions, closed ones included

    @property
    def keep(self) -> int:
        """How many of the newest results the hub keeps for late readers."""
        return self._kept.maxlen or 0

    def publish(self, r: Result) -> None:
        """Hand ``r`` to every open subscription; never waits on a reader."""
        warn: list[Subscription] = []
        with self._lock:
            h = self._with_health
            if len(h) == h.maxlen:  # older results: on the wire and recorded only
                h[0].health = None
            h.append(r)
            self._kept.append(r)
            self.n_published += 1
            for sub in self._subs:
                q = sub._q
                if len(q) == sub.maxlen:
                    sub._dropped += 1
                    self.n_dropped += 1
                    if sub._dropped == 1 or sub._dropped % 1000 == 0:
                        warn.append(sub)
                q.append(r)
                if not sub._ready.is_set():
                    sub._ready.set()
        for sub in warn:
            log.warning("a results reader falls behind: %d results dropped unseen (it keeps "
                        "the newest %d)", sub.dropped, sub.maxlen)

    def subscribe(self, maxlen: int | None = None, replay: bool = False) -> Subscription:
        """A new reader. ``maxlen``: results it may fall behind before its oldest are dropped
        (default: :attr:`keep`). ``replay``: start with the kept history (its newest
        ``maxlen``), not only with what is published from now on."""
        n = self.keep if maxlen is None else int(maxlen)
        if n < 1:
            raise ValueError(f"maxlen must be >= 1, not {maxlen}")
        with self._lock:
            initial: Iterable[Result] = ()
            if replay:
                initial = list(islice(reversed(self._kept), n))[::-1]
            sub = Subscription(self, n, initial)
            self._subs = (*self._subs, sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            sub._closed = True
            self._subs = tuple(s for s in self._subs if s is not sub)

    @property
    def n_subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._subs)


class Publisher(Protocol):
    """Anything results can be subscribed to (an :class:`Engine`, a :class:`ResultHub`)."""

    def subscribe(self, maxlen: int | None = None, replay: bool = False) -> Subscription: ...


def recent(publisher: Publisher, n: int | None = None) -> list[Result]:
    """The newest ``n`` kept results (all kept: None), oldest first: a replaying subscription,
    drained and closed. For a finished run, or a look at the history of a running engine."""
    with publisher.subscribe(maxlen=n, replay=True) as sub:
        return sub.drain()
