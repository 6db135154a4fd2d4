"""Where a thread's wall time went between two moments: on a CPU, waiting for one, or neither.

Why: a slow epoch's stage stamps say *that* a segment took long, not whether the thread was
computing (slow work, a slow virtual CPU), runnable but waiting for a core (the scheduler: other
processes, other real-time threads) or not runnable at all (blocked on the GIL or a lock, asleep
- or its virtual CPU taken by the hypervisor, which the guest kernel does not charge to the
thread). Linux keeps the second per thread in ``/proc/thread-self/schedstat`` (its second field,
``run_delay``: nanoseconds spent on a run queue, updated when the thread is switched in); the
first is ``CLOCK_THREAD_CPUTIME_ID``. Two reads cost ~2 us, so the engine takes them at an
epoch's awaited pull and at its publication, only when a benchmark asks
(:meth:`~neuralign.realtime.engine.Engine.probe_scheduling`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from neuralign.realtime.lsl_io import local_clock

_SCHEDSTAT = "/proc/thread-self/schedstat"
_local = threading.local()


def _run_delay_ns() -> float:
    """This thread's run-queue time so far (ns; NaN where the kernel does not say). The file is
    opened once per thread: ``thread-self`` resolves to the thread that opened it."""
    fd = getattr(_local, "fd", None)
    if fd is None:
        try:
            fd = os.open(_SCHEDSTAT, os.O_RDONLY)
        except OSError:
            fd = -1
        _local.fd = fd
    if fd < 0:
        return math.nan
    try:
        return float(os.pread(fd, 96, 0).split()[1])
    except (OSError, IndexError, ValueError):
        return math.nan


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's clocks at one moment (seconds; ``runq`` NaN where unknown)."""

    tid: int
    wall: float  # local_clock()
    cpu: float  # CPU time of this thread
    runq: float  # time this thread spent runnable, waiting for a CPU


def thread_times() -> ThreadTimes:
    """The calling thread's clocks now."""
    return ThreadTimes(threading.get_native_id(), local_clock(), time.thread_time(),
                       _run_delay_ns() * 1e-9)


class AwaitedPull(NamedTuple):
    """A pull that waited for the sample an epoch needed: the sample indices it brought
    ``[start, end)`` and the pulling thread's clocks before and after it."""

    start: int
    end: int
    before: ThreadTimes
    after: ThreadTimes


@dataclass(frozen=True)
class SchedSplit:
    """One thread's wall time between two moments, split (ms): on a CPU, on a run queue, and
    the rest (``off``: blocked on the GIL, a lock or I/O, asleep, or its virtual CPU stolen)."""

    wall_ms: float
    cpu_ms: float
    runq_ms: float
    off_ms: float

    @classmethod
    def between(cls, a: ThreadTimes | None, b: ThreadTimes | None) -> SchedSplit | None:
        """None unless both moments are the same thread's, in order."""
        if a is None or b is None or a.tid != b.tid or b.wall < a.wall:
            return None
        wall, cpu = 1e3 * (b.wall - a.wall), 1e3 * (b.cpu - a.cpu)
        runq = 1e3 * (b.runq - a.runq)
        known = cpu + (runq if math.isfinite(runq) else 0.0)
        return cls(wall, cpu, runq, max(0.0, wall - known))


@dataclass(frozen=True)
class EpochSched:
    """The acquisition thread's awaited pull (``pull``: its start -> the sample in) and the
    pass from that sample to the published result (``to_publish``: None when another thread
    published it)."""

    pull: SchedSplit | None
    to_publish: SchedSplit | None


def process_run_delay_ns() -> float:
    """Run-queue time so far of every thread of this process, in ns: a consumer reads it at
    each receive, so the growth between two receives is how long its threads (liblsl's
    receiver included) waited for a CPU to hand it the result."""
    total = 0.0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return math.nan
    for t in tids:
        try:
            with open(f"/proc/self/task/{t}/schedstat", "rb") as f:
                total += float(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total
