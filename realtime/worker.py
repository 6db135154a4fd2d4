"""The one lifecycle of the engine's long-running parts: daemon threads from start() to stop().

The engine and the generator (and anything else that owns threads) spawn named daemon threads
that run until a stop event is set, are joined with a bound on stop() (a thread stuck in native
code must not hang the caller forever) and work as context managers. Kept in one place so the
order that matters (set the stop event, wake the threads, then join) is written once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

W = TypeVar("W", bound="ThreadedWorker")


class ThreadedWorker:
    """Mixin: ``_stop`` (an Event the threads poll), the threads started by :meth:`_spawn`, and
    :meth:`_halt` to stop and join them. Subclasses call :meth:`_init_threads` in ``__init__``
    and implement :meth:`start` / :meth:`stop` on top (``with`` runs both)."""

    _stop: threading.Event
    _threads: list[threading.Thread]
    _threads_lock: threading.Lock

    def _init_threads(self) -> None:
        self._stop = threading.Event()
        self._threads = []
        self._threads_lock = threading.Lock()  # guards _threads between start and stop

    @property
    def running(self) -> bool:
        """Threads were started and not yet stopped."""
        return bool(self._threads)

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start ``target`` in a named daemon thread that :meth:`_halt` joins."""
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _wake_threads(self) -> None:  # noqa: B027 - optional hook
        """Called right after the stop event is set: wake threads that sleep on other events."""

    def _halt(self, timeout: float) -> list[threading.Thread]:
        """Set the stop event, wake the threads, join each for at most ``timeout`` s; returns the
        threads that were running (the caller checks ``is_alive`` for a stuck one)."""
        with self._threads_lock:
            threads, self._threads = self._threads, []
        self._stop.set()
        self._wake_threads()
        for t in threads:
            t.join(timeout=timeout)
        return threads

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: W) -> W:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
