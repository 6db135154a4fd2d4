"""Per-thread scheduling accounting: the kernel's own counters, read on real threads and
processes (a busy loop is on a CPU, a sleep is off it, two spinners on one CPU wait for it)."""

import math
import multiprocessing as mp
import os
import sys
import threading
import time

import pytest

from neuralign.realtime.threadsched import (
    SchedSplit,
    ThreadTimes,
    process_run_delay_ns,
    thread_times,
)

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc schedstat")


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_busy_thread_is_on_cpu_and_a_sleeping_one_off_it():
    a = thread_times()
    _spin(0.05)
    b = thread_times()
    time.sleep(0.05)
    c = thread_times()
    busy, idle = SchedSplit.between(a, b), SchedSplit.between(b, c)
    assert busy.wall_ms >= 50 and busy.cpu_ms > 0.6 * busy.wall_ms
    assert busy.cpu_ms <= busy.wall_ms + 1.0
    assert idle.wall_ms >= 50 and idle.off_ms > 0.8 * idle.wall_ms and idle.cpu_ms < 5


def test_moments_of_different_threads_or_out_of_order_do_not_split():
    here = thread_times()
    box: list[ThreadTimes] = []
    t = threading.Thread(target=lambda: box.append(thread_times()))
    t.start()
    t.join()
    assert box[0].tid != here.tid
    assert SchedSplit.between(here, box[0]) is None
    later = thread_times()
    assert SchedSplit.between(later, here) is None
    assert SchedSplit.between(None, here) is None


def test_each_thread_reads_its_own_counters():
    """The schedstat file is per thread (``thread-self`` resolves to its opener): a thread that
    slept all along shows no CPU time of the spinning main thread."""
    box: list[SchedSplit | None] = []
    started = threading.Event()

    def sleeper():
        a = thread_times()
        started.set()
        time.sleep(0.1)
        box.append(SchedSplit.between(a, thread_times()))

    t = threading.Thread(target=sleeper)
    t.start()
    started.wait()
    _spin(0.08)
    t.join()
    assert box[0] is not None and box[0].cpu_ms < 10 and box[0].off_ms > 50


def _spinner(cpu: int, seconds: float, ready) -> None:
    os.sched_setaffinity(0, {cpu})
    ready.set()
    _spin(seconds)


@linux
def test_two_spinners_on_one_cpu_wait_for_it():
    """Run-queue time is the kernel's (schedstat's run_delay): pinned to one CPU with another
    process that spins, this thread spends part of its time waiting for that CPU."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    keep = os.sched_getaffinity(0)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_spinner, args=(cpu, 1.5, ready))
    p.start()
    try:
        assert ready.wait(30)
        os.sched_setaffinity(0, {cpu})
        a = thread_times()
        _spin(0.4)
        b = thread_times()
    finally:
        os.sched_setaffinity(0, keep)
        p.join(10)
    s = SchedSplit.between(a, b)
    assert math.isfinite(s.runq_ms)
    assert s.runq_ms > 40, s  # ~half of 400 ms when the CPU is shared fairly
    assert s.cpu_ms + s.runq_ms <= s.wall_ms + 2.0
    assert process_run_delay_ns() >= 1e6 * s.runq_ms * 0.9  # the process's total includes it
