"""The engine's one bounded hand-off between threads: a queue that drops its oldest item.

A producer on the latency path (the processing thread, the inference thread) must never block on
a slow consumer (inference behind, the GUI behind, the generator behind), and memory must stay
bounded: when the queue is full the oldest waiting item goes, and the owner is told which one
(``on_drop``) so it can count and log it. Never silent, never blocking.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(queue.Queue, Generic[T]):
    """A :class:`queue.Queue` whose :meth:`push` never blocks: when full, the oldest item is
    taken out and handed to ``on_drop`` (in the producer's thread), then the push is retried.

    Everything else is the standard queue (``get`` with a timeout, ``get_nowait``, ``empty``,
    ``maxsize``), so a consumer waits on it as on any queue.
    """

    def __init__(self, maxsize: int, on_drop: Callable[[T], None] | None = None):
        if maxsize < 1:
            raise ValueError("a drop-oldest queue needs maxsize >= 1")
        super().__init__(maxsize=maxsize)
        self.on_drop = on_drop

    def push(self, item: T) -> None:
        """Queue ``item``; when full, drop the oldest waiting item first (``on_drop`` sees it)."""
        while True:
            try:
                self.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self.get_nowait()
                except queue.Empty:  # the consumer took one meanwhile: there is room now
                    continue
                if self.on_drop is not None:
                    self.on_drop(old)

    def drain(self) -> list[T]:
        """Every waiting item, oldest first (never blocks)."""
        out: list[T] = []
        while True:
            try:
                out.append(self.get_nowait())
            except queue.Empty:
                return out
