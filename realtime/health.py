"""The engine's health in one typed place: what went wrong, how often, and the last error.

Every stage that meets bad input (non-finite or railed samples, gaps, unknown or unplaceable
markers, acquisition errors, a full queue) counts it here instead of failing silently; the engine
surfaces one snapshot in :meth:`Engine.status`, the CLI status line and each result on the LSL
result stream (``health``). Per-sample problems are logged through :class:`RateLimitedLog`, so a
broken amplifier cannot flood the log.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass


@dataclass
class Health:
    """Counters of everything the engine did about bad input (monotonic; never reset)."""

    non_finite_samples: int = 0  # input samples with a NaN/Inf on any channel (held, flagged)
    railed_samples: int = 0  # beyond rail_volts, a sensor ceiling or spike_limit (any channel)
    flagged_epochs: int = 0  # decoded epochs that touched a non-finite or railed sample
    bad_epochs_dropped: int = 0  # ... dropped instead (realtime.bad_epochs: drop)
    gap_epochs_dropped: int = 0  # epochs whose window spans a gap in the input
    lost_samples: int = 0  # input samples the engine never saw (ring-buffer overrun)
    filter_restarts: int = 0  # causal chain restarted at a gap or reconnection
    unknown_markers: int = 0  # markers that are not an image id of the bundle (not decoded)
    deferred_markers_dropped: int = 0  # markers whose sample never arrived (another clock?)
    epochs_outside_buffer: int = 0  # epochs whose window had already left the buffer
    ready_dropped: int = 0  # epochs dropped because the ready queue was full
    acquisition_errors: int = 0  # exceptions raised while acquiring (the source kept going)
    last_error: str = ""
    # the signal scale check's finding (realtime.scale_check): the stream's amplitude is off the
    # training data's by a power of ten, naming the likely unit mistake; "" while all is well
    unit_warning: str = ""

    def to_dict(self) -> dict[str, int | str]:
        # every field is a scalar: no deep copy (dataclasses.asdict's costs ~10 us on each
        # result's publication path)
        return {name: getattr(self, name) for name in _FIELDS}

    def merged(self, **source: int | str) -> dict[str, int | str]:
        """This snapshot with the source's counters added (what the result stream carries)."""
        d = self.to_dict()
        d.update(source)
        return d


_FIELDS = tuple(f.name for f in dataclasses.fields(Health))


class RateLimitedLog:
    """At most one record per ``interval`` s per key; the ones in between are counted and the
    count is reported with the next record that goes out.

    With ``demote_to`` (e.g. ``logging.DEBUG``) the records in between are not dropped but
    logged at that level (a source's event log: every event stays visible when debugging).
    Records below ``min_level`` are never limited; from ``max_level`` up they always go out too,
    but start the interval like any record that goes out.
    """

    def __init__(self, logger: logging.Logger, interval: float = 5.0,
                 demote_to: int | None = None, min_level: int = logging.NOTSET,
                 max_level: int = logging.CRITICAL + 1):
        self.logger = logger
        self.interval = interval
        self.demote_to = demote_to
        self.min_level, self.max_level = min_level, max_level
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, key: str, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than ``interval`` s ago (then it is
        counted, or logged at ``demote_to``); True when it went out at ``level``."""
        if level < self.min_level:
            self.logger.log(level, msg, *args)
            return True
        now = time.monotonic()
        with self._lock:
            limited = level < self.max_level and now - self._last.get(key, -1e18) < self.interval
            if limited and self.demote_to is None:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            if not limited:
                self._last[key] = now
            n = 0 if limited else self._suppressed.pop(key, 0)
        if limited:
            self.logger.log(self.demote_to, msg, *args)
            return False
        if n:
            msg += f" ({n} similar messages suppressed)"
        self.logger.log(level, msg, *args)
        return True
