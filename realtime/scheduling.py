"""Thread priorities and CPU affinity of the engine's threads, where the OS allows them.

Why: on a shared two-core machine the engine's latency tail is set by the scheduler, not by the
engine's own work. An epoch's last sample waits for the acquisition thread to be scheduled, its
forward pass is preempted by whatever else runs. Linux lets a process give its own threads
lower priority (``nice`` is per thread there) without any privilege, and higher or real-time
priority with ``CAP_SYS_NICE`` or an ``rtprio`` limit (``/etc/security/limits.conf``).

Roles:

* ``critical``: the threads an epoch passes through (acquisition, processing, inference). At
  ``priority='high'`` they get ``nice -10``; at ``'realtime'`` ``SCHED_FIFO`` (priority
  ``rt_priority``): they run the moment they are runnable, ahead of every normal process. They
  block between samples, so they cannot starve the machine, and the kernel's real-time
  throttling (95 % of each second by default) bounds them anyway. ``'auto'`` (the default)
  takes the highest of these the OS grants without asking - ``SCHED_FIFO`` for root or an
  ``rtprio`` limit, else ``nice -10`` with ``CAP_SYS_NICE``, else normal - as audio servers do,
  for an engine of one live stream; several streams or a replayed file get normal
  (:meth:`SchedulingPolicy.for_sources` says why).
* ``background``: work off the latency path (the generator of images): ``SCHED_IDLE`` (it yields
  a core at any other thread's wake-up, the engine's or another process's) and
  ``nice +background_nice``, at every priority level, so it never competes with an epoch or
  its delivery. Always allowed.

liblsl's own threads (an inlet's receiver, an outlet's sender) are started while an inlet or
outlet opens; :func:`native_threads_as` gives them the critical threads' policy.

Nothing here raises: a setting the OS refuses is logged once and reported by
:func:`applied` (the bench's JSON and ``neuralign run``'s status show it), and the thread runs
on as before. ``docs/latency_tail.md`` has the measured effect of each level.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from neuralign.config import SchedulingConfig

log = logging.getLogger(__name__)

Priority = Literal["auto", "normal", "high", "realtime"]
Role = Literal["critical", "background"]

#: nice value of critical threads at priority 'high'
HIGH_NICE = -10


@dataclass(frozen=True)
class SchedulingPolicy:
    """What the engine asks of the OS for its threads (``realtime.scheduling``)."""

    priority: Priority = "normal"  # the engine's default is RealtimeConfig's ('auto')
    rt_priority: int = 10  # SCHED_FIFO priority at 'realtime' (1..99; audio servers use ~20-70)
    cpus: tuple[int, ...] | None = None  # pin the critical threads to these CPUs (None: any)
    background_nice: int = 10  # added niceness of background threads (0: none)
    background_idle: bool = True  # background threads in SCHED_IDLE where the OS has it

    def for_sources(self, n_streams: int, live: bool) -> SchedulingPolicy:
        """This policy for an engine of ``n_streams`` streams: ``auto`` means ``normal`` unless
        it is one live stream. A file's pace may be faster than real time (its threads would
        never block); with 8 streams, SCHED_FIFO threads of equal priority delayed each other
        past the clock model's gap limit (30 s: 520 samples and 271 of 1032 epochs lost as
        gaps, p99 63 ms; at normal priority none lost, 54 ms)."""
        if self.priority == "auto" and (n_streams > 1 or not live):
            return replace(self, priority="normal")
        return self

    @classmethod
    def from_config(cls, cfg: SchedulingConfig) -> SchedulingPolicy:
        """The policy of a ``realtime.scheduling`` config section."""
        return cls(cfg.priority, cfg.rt_priority, tuple(cfg.cpus) if cfg.cpus else None,
                   cfg.background_nice, cfg.background_idle)


_lock = threading.Lock()
_applied: dict[str, str] = {}  # thread name -> what was applied, or why not
_warned: set[str] = set()


def applied() -> dict[str, str]:
    """Every thread this process configured: its name -> what the OS accepted or refused."""
    with _lock:
        return dict(_applied)


def _note(name: str, what: str, refused: str | None = None) -> str:
    said = what if refused is None else f"{what} refused ({refused})"
    with _lock:
        _applied[name] = said
    if refused is not None and what not in _warned:
        _warned.add(what)
        log.warning("thread scheduling: %s refused by the OS (%s); the thread runs at normal "
                    "priority (grant CAP_SYS_NICE or an rtprio limit to allow it)", what, refused)
    return said


def apply_to_current_thread(role: Role, policy: SchedulingPolicy) -> str:
    """Set the calling thread's priority (and affinity) for ``role``; returns what happened."""
    name = threading.current_thread().name
    if not hasattr(os, "sched_setscheduler") or not hasattr(threading, "get_native_id"):
        return _note(name, "unchanged (no per-thread scheduling on this OS)")
    tid = threading.get_native_id()
    if role == "background":
        try:
            return _note(name, _background(tid, policy))
        except OSError as exc:  # pragma: no cover - lowering one's priority is always allowed
            return _note(name, "background", exc.strerror)
    parts = []
    if policy.cpus:
        try:
            os.sched_setaffinity(tid, set(policy.cpus))
            parts.append(f"cpus {sorted(policy.cpus)}")
        except OSError as exc:
            _note(name, f"affinity {sorted(policy.cpus)}", exc.strerror)
    if policy.priority == "auto":  # the highest level the OS grants, quietly
        for level in ("realtime", "high"):
            try:
                parts.append(_raise(tid, level, policy.rt_priority))
                break
            except OSError:
                continue
        else:
            parts.append("normal (auto: the OS grants no higher priority)")
        with _lock:
            first = "auto" not in _warned
            _warned.add("auto")
        if first:
            log.info("thread scheduling auto: the engine's threads run at %s", parts[-1])
    elif policy.priority in ("high", "realtime"):
        try:
            parts.append(_raise(tid, policy.priority, policy.rt_priority))
        except OSError as exc:
            return _note(name, _LEVEL[policy.priority].format(p=policy.rt_priority),
                         exc.strerror)
    return _note(name, ", ".join(parts) or "normal")


_LEVEL = {"high": f"nice {HIGH_NICE}", "realtime": "SCHED_FIFO {p}"}


def _raise(tid: int, level: Literal["high", "realtime"], rt_priority: int) -> str:
    """Give ``tid`` the priority ``level``; what it got (OSError: the OS refused)."""
    if level == "realtime":
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(rt_priority))
    else:
        os.setpriority(os.PRIO_PROCESS, tid, HIGH_NICE)
    return _LEVEL[level].format(p=rt_priority)


def _background(tid: int, policy: SchedulingPolicy) -> str:
    """Make ``tid`` a background thread; what it became (lowering priority is always allowed).

    SCHED_IDLE: the thread runs only on a core nothing else wants and gives it up the moment any
    other thread wakes (the kernel preempts an idle-class task at every wake-up; a nice +10 one
    may finish its slice first). With the image generator at nice +10 its bursts right after
    each result held up the client's receipt of that result: the slowest 1 % end to end were
    all the consumer's wake-up, p99 5.1-5.4 ms with it, 3.9 ms without it. Without SCHED_IDLE
    the thread still leaves a real-time class it inherited (a thread started by a SCHED_FIFO
    one is SCHED_FIFO, where niceness means nothing), and gets ``background_nice``."""
    done = []
    idle = getattr(os, "SCHED_IDLE", None)
    if policy.background_idle and idle is not None:
        os.sched_setscheduler(tid, idle, os.sched_param(0))
        done.append("SCHED_IDLE")
    elif os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    if policy.cpus:  # nor confined to the critical threads' pinned CPUs
        try:
            os.sched_setaffinity(tid, set(range(os.cpu_count() or 1)))
        except OSError:
            pass  # a cpuset narrower than the machine: the creator's CPUs
    if policy.background_nice > 0:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + policy.background_nice)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        done.append(f"nice +{policy.background_nice}")
    return ", ".join(done) or "normal"


@contextmanager
def native_threads_as(role: Role, policy: SchedulingPolicy | None) -> Iterator[None]:
    """Threads a library starts inside this block run as ``role``; the caller is restored after.

    Linux threads inherit their creator's scheduling class, niceness and affinity. liblsl starts
    its own threads for each inlet (the receiver that hands the engine its samples) and outlet
    (the session that sends results to a consumer); they sit on an epoch's path, but Python never
    sees them to configure. Opening inlets and outlets in here gives them the engine's policy.
    ``None`` or ``priority='normal'`` without pinned CPUs: nothing changes.
    """
    if (policy is None or (policy.priority == "normal" and not policy.cpus)
            or not hasattr(os, "sched_setscheduler") or not hasattr(threading, "get_native_id")):
        yield
        return
    tid = threading.get_native_id()
    saved = (os.sched_getscheduler(tid), os.sched_getparam(tid),
             os.getpriority(os.PRIO_PROCESS, tid), os.sched_getaffinity(tid))
    name = threading.current_thread().name
    with _lock:
        note = _applied.get(name)
    apply_to_current_thread(role, policy)
    try:
        yield
    finally:
        klass, param, nice, cpus = saved
        try:  # lowering one's own priority is always allowed
            os.sched_setscheduler(tid, klass, param)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            os.sched_setaffinity(tid, cpus)
        except OSError as exc:  # pragma: no cover - the kernel allows these to anyone
            log.warning("thread scheduling: could not restore %s (%s)", name, exc.strerror)
        with _lock:
            if note is None:
                _applied.pop(name, None)
            else:
                _applied[name] = note
