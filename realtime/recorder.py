"""Continuous, crash-safe recording of what the engine saw: samples, timestamps, events, results.

The format (and its reader) is :mod:`neuralign.recording_format`.

Why raw binary + JSON lines instead of writing a FIF directly: appending to flat files is
constant-cost and survives a crash (a FIF is only valid once finalised).

The files are written by the recorder's own thread: ``write_*`` only validate, encode and queue
(the engine's processing thread never waits on the disk), and the writer flushes and ``fsync``-s
at most every ``flush_interval`` s (1 s) holding no lock any caller needs, so a slow disk delays
the recording, never decoding, and a crash loses at most the last second;
:func:`read_recording` reads an unclosed recording, ignoring a torn last sample or line. Lines are
strict JSON (non-finite numbers become ``null``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralign.errors import DataError
from neuralign.realtime.decisions import finite_json
from neuralign.recording_format import (  # read_recording: re-exported for existing callers
    CLOCK,
    EVENTS,
    FORMAT,
    HEADER,
    RESULTS,
    SAMPLES,
    TIMES,
    VERSION,
    export_fif,
    read_recording,
)
from neuralign.units import si_unit

if TYPE_CHECKING:
    from neuralign.realtime.sources.base import StreamDescription

__all__ = ["Recorder", "export_fif", "read_recording"]

log = logging.getLogger(__name__)



def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def _strict_json(obj: Any) -> str:
    """One line of strict JSON: numpy values converted, NaN/Inf as null."""
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False)
    except ValueError:  # a non-finite number somewhere: null it
        # a round trip that keeps NaN as a float, only so finite_json can turn it into null
        loose = json.loads(json.dumps(obj, default=_json_default, allow_nan=True))
        return json.dumps(finite_json(loose), allow_nan=False)


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default, allow_nan=False))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: queued bytes beyond which writers wait for the disk (a stalled disk must not eat the RAM)
MAX_PENDING_BYTES = 256 * 1024 * 1024


class Recorder:
    """Append-only recorder; ``write_*`` are thread-safe and never touch the disk (the writer
    thread does)."""

    def __init__(self, directory: str | Path, ch_names: list[str], ch_types: list[str],
                 sfreq: float, flush_interval: float = 1.0, export_fif: bool = True,
                 units: Sequence[str] | None = None, stream_units: Sequence[str] | None = None,
                 stream_scales: Sequence[float] | None = None):
        """``units``: the unit each channel's samples are written in (default: the SI unit of
        its type, what the engine's buffer holds); ``stream_units`` / ``stream_scales``: the
        stream's own unit and the factor the source applied to reach ``units`` (default: the
        same unit, 1), so the stream's own values stay recoverable."""
        if len(ch_types) != len(ch_names):
            raise ValueError(f"{len(ch_names)} channel names but {len(ch_types)} types")
        units = list(units) if units else [si_unit(t) for t in ch_types]
        stream_units = list(stream_units) if stream_units else list(units)
        stream_scales = [float(f) for f in stream_scales] if stream_scales else \
            [1.0] * len(ch_names)
        for what, v in (("units", units), ("stream_units", stream_units),
                        ("stream_scales", stream_scales)):
            if len(v) != len(ch_names):
                raise ValueError(f"{len(ch_names)} channel names but {len(v)} {what}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / HEADER).exists():
            raise DataError(f"{self.directory}: already holds a recording; choose a new directory")
        self.ch_names, self.ch_types = list(ch_names), list(ch_types)
        self.sfreq = float(sfreq)
        self.n_channels = len(ch_names)
        self.export_fif = export_fif
        self.n_samples = 0
        self.n_events = 0
        self.n_results = 0
        self.n_write_errors = 0
        self.header = {"format": FORMAT, "version": VERSION, "ch_names": self.ch_names,
                       "ch_types": self.ch_types, "sfreq": self.sfreq, "units": units,
                       "stream_units": stream_units, "stream_scales": stream_scales,
                       "samples": {"file": SAMPLES, "dtype": "<f4", "layout": "sample-major"},
                       "timestamps": {"file": TIMES, "dtype": "<f8", "clock": "LSL local_clock"},
                       "created_unix": time.time(), "complete": False}
        _write_json_atomic(self.directory / HEADER, self.header)
        self._files = {k: open(self.directory / k, "ab")  # noqa: SIM115 - closed in close()
                       for k in (SAMPLES, TIMES, EVENTS, RESULTS, CLOCK)}
        self._lock = threading.Lock()  # counters and the closed flag only: never held for IO
        self._closed = False
        self._queue: queue.SimpleQueue[tuple[str, bytes] | threading.Event | None] = \
            queue.SimpleQueue()
        self._pending = 0  # bytes queued, not yet written
        self._room = threading.Condition(self._lock)
        self._n_queued = 0  # items queued so far
        self._n_synced = 0  # items written AND fsynced so far
        self._flush_interval = flush_interval
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="recorder-writer",
                                        daemon=True)
        self._writer.start()

    @classmethod
    def for_stream(cls, directory: str | Path, desc: StreamDescription, **kw: Any) -> Recorder:
        """A recorder of what a source delivers: its channels, rate and units (the buffer holds
        SI; the header keeps the stream's own unit and the factor applied to it)."""
        return cls(directory, desc.ch_names, desc.ch_types, desc.sfreq, stream_units=desc.units,
                   stream_scales=desc.scales, **kw)

    @property
    def _dirty(self) -> bool:
        """Something was written that is not yet durable."""
        return self._n_synced < self._n_queued

    # --- writing (any thread; no disk access) -------------------------------------------------
    def write_samples(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append ``data`` (n_channels, n) and its ``timestamps`` (n,). Validated before any
        byte is queued, so a bad call raises and leaves the recording intact."""
        data = np.asarray(data)
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if data.ndim != 2 or data.shape[0] != self.n_channels:
            raise DataError(f"{self.directory}: write_samples expects ({self.n_channels}, n) "
                            f"samples for channels {self.ch_names[:3]}..., got shape {data.shape}")
        if data.shape[1] != len(ts):
            raise DataError(f"{self.directory}: {data.shape[1]} samples but {len(ts)} timestamps")
        if data.shape[1] == 0:
            return
        block = np.ascontiguousarray(data.T, dtype="<f4").tobytes()
        # one item: samples and their timestamps are written together (a crash tears both alike)
        self._enqueue(SAMPLES, block + ts.astype("<f8").tobytes(), data.shape[1])

    def write_event(self, marker: Any) -> None:
        """Append one marker (a :class:`~neuralign.realtime.sources.base.Marker` or a dict with
        at least ``timestamp`` and ``value``)."""
        rec = dataclasses.asdict(marker) if dataclasses.is_dataclass(marker) else dict(marker)
        if "timestamp" not in rec or "value" not in rec:
            raise DataError(f"{self.directory}: an event needs 'timestamp' and 'value', got "
                            f"{sorted(rec)}")
        self._enqueue(EVENTS, (_strict_json(rec) + "\n").encode())
        self.n_events += 1

    def write_gap(self, sample: int) -> None:
        """The engine's clock model found that recorded sample ``sample`` does not follow its
        predecessor (a gap): offline epoching restarts the chain there, as the engine did."""
        self._enqueue(CLOCK, (_strict_json({"gap": int(sample)}) + "\n").encode())

    def write_placement(self, timestamp: float, value: str, sample: int) -> None:
        """The engine cut the epoch of the marker (``timestamp``, ``value``) at recorded sample
        ``sample``: offline epoching of the recording uses the same sample."""
        self._enqueue(CLOCK, (_strict_json({"marker": float(timestamp), "value": str(value),
                                            "sample": int(sample)}) + "\n").encode())

    def write_result(self, result: dict) -> None:
        """Append one engine result (any JSON-serialisable dict; numpy values are converted)."""
        self._enqueue(RESULTS, (_strict_json(result) + "\n").encode())
        self.n_results += 1

    def _enqueue(self, key: str, payload: bytes, n_samples: int = 0) -> None:
        with self._lock:
            self._check_open()
            while self._pending > MAX_PENDING_BYTES and not self._closed:
                self._room.wait(0.1)  # the disk is far behind: back-pressure, lose nothing
            self._pending += len(payload)
            self._n_queued += 1
            self.n_samples += n_samples
        self._queue.put((key, payload))

    def _check_open(self) -> None:
        if self._closed:
            raise DataError(f"{self.directory}: recording already closed")

    # --- the writer thread --------------------------------------------------------------------
    def _write_loop(self) -> None:
        """Write queued items; flush + fsync every ``flush_interval`` s, holding no lock."""
        next_sync = time.monotonic() + self._flush_interval
        written = 0  # items written, not yet fsynced
        while True:
            timeout = max(0.0, next_sync - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = False  # time to sync
            if item is None or isinstance(item, threading.Event):
                written = self._sync(written)
                if item is None:
                    return
                item.set()  # a flush() caller waits for this
                continue
            if item is not False:
                key, payload = item
                try:
                    if key == SAMPLES:
                        n = len(payload) // (4 * self.n_channels + 8)
                        self._files[SAMPLES].write(payload[: n * 4 * self.n_channels])
                        self._files[TIMES].write(payload[n * 4 * self.n_channels:])
                    else:
                        self._files[key].write(payload)
                except OSError as exc:
                    self._write_failed(exc)
                written += 1
                with self._lock:
                    self._pending -= len(payload)
                    self._room.notify_all()
            if time.monotonic() >= next_sync:
                written = self._sync(written)
                next_sync = time.monotonic() + self._flush_interval

    def _sync(self, written: int) -> int:
        """Flush and fsync the files (the writer thread only); returns 0 (nothing unsynced)."""
        if written:
            try:
                for f in self._files.values():
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:  # disk full etc.: report, keep the engine running
                self._write_failed(exc)
            self._n_synced += written
        return 0

    def _write_failed(self, exc: OSError) -> None:
        self.n_write_errors += 1
        if self.n_write_errors == 1 or self.n_write_errors % 1000 == 0:
            log.error("%s: writing the recording failed (%d errors): %s", self.directory,
                      self.n_write_errors, exc)

    # --- durability ---------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything written so far is flushed and fsynced (by the writer)."""
        if self._closed or not self._writer.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> Path | None:
        """Write what is queued, fsync, close the files, export ``raw.fif`` and mark the header
        complete. Returns the FIF path (None when nothing was recorded or export is off).
        Idempotent."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            self._room.notify_all()
        self._stop.set()
        self._queue.put(None)
        self._writer.join()
        for f in self._files.values():
            f.close()
        fif = None
        if self.export_fif and self.n_samples:
            fif = export_fif(self.directory)
        self.header.update(complete=True, n_samples=self.n_samples, n_events=self.n_events,
                           n_results=self.n_results, closed_unix=time.time(),
                           fif=fif.name if fif else None)
        _write_json_atomic(self.directory / HEADER, self.header)
        log.info("recording closed: %s (%d samples, %d events, %d results)", self.directory,
                 self.n_samples, self.n_events, self.n_results)
        return fif

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
