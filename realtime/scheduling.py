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
  throttling (95 % of each second by default) bounds them anyway.
* ``background``: work off the latency path (the generator of images): ``nice +background_nice``
  at every priority level, so it never competes with an epoch. Always allowed.

Nothing here raises: a setting the OS refuses is logged once and reported by
:func:`applied` (the bench's JSON and ``neuralign run``'s status show it), and the thread runs
on as before. ``docs/latency_tail.md`` has the measured effect of each level.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from neuralign.config import SchedulingConfig

log = logging.getLogger(__name__)

Priority = Literal["normal", "high", "realtime"]
Role = Literal["critical", "background"]

#: nice value of critical threads at priority 'high'
HIGH_NICE = -10


@dataclass(frozen=True)
class SchedulingPolicy:
    """What the engine asks of the OS for its threads (``realtime.scheduling``)."""

    priority: Priority = "normal"
    rt_priority: int = 10  # SCHED_FIFO priority at 'realtime' (1..99; audio servers use ~20-70)
    cpus: tuple[int, ...] | None = None  # pin the critical threads to these CPUs (None: any)
    background_nice: int = 10  # added niceness of background threads (0: none)

    @classmethod
    def from_config(cls, cfg: SchedulingConfig) -> SchedulingPolicy:
        """The policy of a ``realtime.scheduling`` config section."""
        return cls(cfg.priority, cfg.rt_priority, tuple(cfg.cpus) if cfg.cpus else None,
                   cfg.background_nice)


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
        if policy.background_nice <= 0:
            return _note(name, "normal")
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                     + policy.background_nice))
        except OSError as exc:
            return _note(name, f"nice +{policy.background_nice}", exc.strerror)
        return _note(name, f"nice +{policy.background_nice}")
    parts = []
    if policy.cpus:
        try:
            os.sched_setaffinity(tid, set(policy.cpus))
            parts.append(f"cpus {sorted(policy.cpus)}")
        except OSError as exc:
            _note(name, f"affinity {sorted(policy.cpus)}", exc.strerror)
    if policy.priority == "high":
        try:
            os.setpriority(os.PRIO_PROCESS, tid, HIGH_NICE)
            parts.append(f"nice {HIGH_NICE}")
        except OSError as exc:
            return _note(name, f"nice {HIGH_NICE}", exc.strerror)
    elif policy.priority == "realtime":
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(policy.rt_priority))
            parts.append(f"SCHED_FIFO {policy.rt_priority}")
        except OSError as exc:
            return _note(name, f"SCHED_FIFO {policy.rt_priority}", exc.strerror)
    return _note(name, ", ".join(parts) or "normal")
