"""Thread priorities: what the OS accepts is applied to the calling thread and reported; what it
refuses is reported too, and the thread runs on. Checked against the kernel's own view of each
thread (``os.getpriority`` / ``os.sched_getscheduler`` on its native id)."""

from __future__ import annotations

import gc
import os
import threading

import pytest
from pydantic import ValidationError

from neuralign.config import RealtimeConfig
from neuralign.realtime import scheduling
from neuralign.realtime.scheduling import SchedulingPolicy, apply_to_current_thread

linux = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling")


def _in_thread(fn, name: str):
    """Run ``fn`` in a new thread named ``name``; return its result."""
    out = {}

    def run():
        out["v"] = fn()

    t = threading.Thread(target=run, name=name)
    t.start()
    t.join(10)
    return out["v"]


@linux
def test_background_thread_gets_the_idle_class_and_a_higher_niceness():
    def work():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        what = apply_to_current_thread("background", SchedulingPolicy(background_nice=7))
        return before, os.getpriority(os.PRIO_PROCESS, tid), what, os.sched_getscheduler(tid)

    before, after, what, klass = _in_thread(work, "test-background")
    assert klass == os.SCHED_IDLE
    assert after == min(19, before + 7) and what == "SCHED_IDLE, nice +7"
    assert scheduling.applied()["test-background"] == what
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # only it


@linux
def test_realtime_priority_is_applied_or_reported_as_refused():
    def work():
        what = apply_to_current_thread("critical", SchedulingPolicy(priority="realtime",
                                                                    rt_priority=5))
        return what, os.sched_getscheduler(threading.get_native_id())

    what, policy = _in_thread(work, "test-critical")
    if "refused" in what:  # no CAP_SYS_NICE / rtprio limit here: normal scheduling, said so
        assert policy == os.SCHED_OTHER
    else:
        assert what == "SCHED_FIFO 5" and policy == os.SCHED_FIFO
    assert scheduling.applied()["test-critical"] == what


@linux
def test_normal_priority_changes_nothing():
    def work():
        tid = threading.get_native_id()
        before = (os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid))
        what = apply_to_current_thread("critical", SchedulingPolicy())
        return before, (os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)), what

    before, after, what = _in_thread(work, "test-normal")
    assert before == after and what == "normal"


def test_scheduling_config_is_validated():
    cfg = RealtimeConfig(scheduling={"priority": "high", "cpus": [0]})
    assert SchedulingPolicy.from_config(cfg.scheduling) == SchedulingPolicy("high", 10, (0,), 10)
    with pytest.raises(ValidationError, match="priority"):
        RealtimeConfig(scheduling={"priority": "urgent"})
    with pytest.raises(ValidationError, match="rt_priority"):
        RealtimeConfig(scheduling={"rt_priority": 100})


def test_engine_freezes_startup_objects_and_unfreezes_at_stop(tiny_bundle):
    from neuralign.bundle import load_bundle
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.sources.file import FileSource

    bundle_dir, data = tiny_bundle
    src = FileSource(data / "sim_test_raw.fif", speed=1.0, chunk_size=10)
    engine = Engine(load_bundle(bundle_dir), src, RealtimeConfig(), publish_lsl=False)
    assert gc.get_freeze_count() == 0
    engine.start()
    try:
        assert gc.get_freeze_count() > 10000  # the model, the bundle, the libraries
        names = {t.name for t in threading.enumerate()}
        assert {"neuralign-process", "neuralign-infer"} <= names
        assert scheduling.applied()["neuralign-process"] == "normal"
    finally:
        engine.stop()
    assert gc.get_freeze_count() == 0


def _sched(tid: int) -> tuple[int, int]:
    return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)


@linux
def test_background_thread_leaves_the_realtime_class_it_inherited():
    """A generator thread started from a SCHED_FIFO engine thread must not run at SCHED_FIFO:
    niceness means nothing there, and it would hold a core ahead of every normal process."""
    def spawn_background():
        what = apply_to_current_thread("critical", SchedulingPolicy(priority="realtime"))
        if "refused" in what:
            return None
        return _in_thread(lambda: (
            os.sched_getscheduler(threading.get_native_id()),
            apply_to_current_thread("background", SchedulingPolicy(priority="realtime")),
            os.sched_getscheduler(threading.get_native_id())), "test-bg-from-fifo")

    got = _in_thread(spawn_background, "test-fifo-parent")
    if got is None:
        pytest.skip("SCHED_FIFO refused here")
    inherited, what, after = got
    assert inherited == os.SCHED_FIFO  # what Linux does
    assert after == os.SCHED_IDLE and what == "SCHED_IDLE, nice +10"


@linux
def test_liblsl_threads_started_in_the_block_get_the_policy_and_the_caller_is_restored():
    """An outlet's own threads (they send each result) take the engine's priority; the thread
    that opened it goes back to what it was."""
    from neuralign.realtime.lsl_io import make_outlet

    def work():
        tid = threading.get_native_id()
        before = _sched(tid)
        tasks = set(os.listdir("/proc/self/task"))
        policy = SchedulingPolicy(priority="high")
        with scheduling.native_threads_as("critical", policy):
            inside = _sched(tid)
            outlet = make_outlet("sched-test", "Markers", ["m"], 0.0, "sched-test-outlet",
                                 dtype="string")
        new = [int(t) for t in set(os.listdir("/proc/self/task")) - tasks]
        spawned = [_sched(t) for t in new]
        del outlet
        return before, inside, _sched(tid), spawned

    before, inside, after, spawned = _in_thread(work, "test-opener")
    assert after == before and spawned  # liblsl started at least one thread
    if inside == before:  # nice -10 refused (no CAP_SYS_NICE): nothing to inherit
        assert all(s == before for s in spawned)
    else:
        assert inside == (os.SCHED_OTHER, scheduling.HIGH_NICE)
        assert all(s == inside for s in spawned)


@linux
def test_auto_takes_the_highest_level_the_os_grants():
    def work():
        tid = threading.get_native_id()
        what = apply_to_current_thread("critical", SchedulingPolicy(priority="auto"))
        return what, _sched(tid)

    what, (klass, nice) = _in_thread(work, "test-auto")
    if klass == os.SCHED_FIFO:
        assert what == "SCHED_FIFO 10"
    elif nice == scheduling.HIGH_NICE:
        assert what == "nice -10"
    else:  # an unprivileged user: normal, said so, no warning
        assert what.startswith("normal (auto")
    assert scheduling.applied()["test-auto"] == what


def test_auto_is_normal_for_a_file_or_several_streams():
    auto = SchedulingPolicy(priority="auto")
    assert auto.for_sources(1, live=True).priority == "auto"
    assert auto.for_sources(1, live=False).priority == "normal"
    assert auto.for_sources(8, live=True).priority == "normal"
    assert SchedulingPolicy(priority="realtime").for_sources(8, live=True).priority == "realtime"
