"""Garbage-collector pauses in the benchmark process, on the engine's clock.

A collection holds the GIL: every Python thread of the process (acquisition, processing,
inference) stands still while it runs, whichever thread triggered it. ``GcWatch`` records each
collection's start and stop (``lsl_io.local_clock``, the clock of the epochs' stage stamps), its
generation and the thread that ran it, so the tail breakdown (:mod:`.tail`) can tell a slow epoch
that overlapped a pause from one that did not. Installed only while ``bench latency`` runs: it
adds one Python call per collection start and stop, and nothing else to the engine.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from neuralign.realtime.lsl_io import local_clock

#: collections kept (the newest); a 60 s run has a few thousand, 10 minutes tens of thousands
MAX_EVENTS = 200_000


@dataclass(frozen=True, slots=True)
class GcEvent:
    """One collection: local_clock() seconds at start and stop."""

    start: float
    stop: float
    generation: int
    thread: str
    collected: int

    @property
    def duration_ms(self) -> float:
        return 1e3 * (self.stop - self.start)


class GcWatch:
    """``gc.callbacks`` hook recording every collection while installed (a context manager).

    The callback stores plain tuples (no allocation beyond one tuple per collection) in a bounded
    deque; :meth:`events` turns them into :class:`GcEvent` afterwards. Collections do not nest
    and only one thread runs one at a time (the GIL), so a single pending start suffices."""

    def __init__(self, maxlen: int = MAX_EVENTS):
        self._raw: deque[tuple[float, float, int, str, int]] = deque(maxlen=maxlen)
        self._start = 0.0
        self.n_seen = 0  # collections seen, including those that fell out of the deque
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = local_clock()
            return
        self._raw.append((self._start, local_clock(), info["generation"],
                          threading.current_thread().name, info.get("collected", 0)))
        self.n_seen += 1

    def install(self) -> GcWatch:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def __enter__(self) -> GcWatch:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def events(self) -> list[GcEvent]:
        """The recorded collections, oldest first."""
        return [GcEvent(*row) for row in list(self._raw)]
