"""Continuous, crash-safe recording of what the engine saw: samples, timestamps, events, results.

The format (and its reader) is :mod:`neuralign.recording_format`.

Why raw binary + JSON lines instead of writing a FIF directly: appending to flat files is
constant-cost and survives a crash (a FIF is only valid once finalised). Files are flushed and
``fsync``-ed by a background timer at most every ``flush_interval`` s (1 s), so a crash loses at
most the last second; :func:`read_recording` reads an unclosed recording, ignoring a torn last
sample or line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.errors import DataError
from neuralign.recording_format import (  # read_recording: re-exported for existing callers
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


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Recorder:
    """Append-only recorder; thread-safe (the engine may write samples and results from
    different threads)."""

    def __init__(self, directory: str | Path, ch_names: list[str], ch_types: list[str],
                 sfreq: float, flush_interval: float = 1.0, export_fif: bool = True):
        if len(ch_types) != len(ch_names):
            raise ValueError(f"{len(ch_names)} channel names but {len(ch_types)} types")
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
        self.header = {"format": FORMAT, "version": VERSION, "ch_names": self.ch_names,
                       "ch_types": self.ch_types, "sfreq": self.sfreq,
                       "samples": {"file": SAMPLES, "dtype": "<f4", "layout": "sample-major"},
                       "timestamps": {"file": TIMES, "dtype": "<f8", "clock": "LSL local_clock"},
                       "created_unix": time.time(), "complete": False}
        _write_json_atomic(self.directory / HEADER, self.header)
        self._files = {k: open(self.directory / k, "ab")  # noqa: SIM115 - closed in close()
                       for k in (SAMPLES, TIMES, EVENTS, RESULTS)}
        self._lock = threading.Lock()
        self._closed = False
        self._dirty = False
        self._flush_interval = flush_interval
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="recorder-flush",
                                         daemon=True)
        self._flusher.start()

    # --- writing ------------------------------------------------------------------------------
    def write_samples(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        """Append ``data`` (n_channels, n) and its ``timestamps`` (n,). Validated before any
        byte is written, so a bad call raises and leaves the recording intact."""
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
        with self._lock:
            self._check_open()
            self._files[SAMPLES].write(block)
            self._files[TIMES].write(ts.astype("<f8").tobytes())
            self.n_samples += data.shape[1]
            self._dirty = True

    def write_event(self, marker: Any) -> None:
        """Append one marker (a :class:`~neuralign.realtime.sources.base.Marker` or a dict with
        at least ``timestamp`` and ``value``)."""
        rec = dataclasses.asdict(marker) if dataclasses.is_dataclass(marker) else dict(marker)
        if "timestamp" not in rec or "value" not in rec:
            raise DataError(f"{self.directory}: an event needs 'timestamp' and 'value', got "
                            f"{sorted(rec)}")
        self._append_line(EVENTS, rec)
        self.n_events += 1

    def write_result(self, result: dict) -> None:
        """Append one engine result (any JSON-serialisable dict; numpy values are converted)."""
        self._append_line(RESULTS, result)
        self.n_results += 1

    def _append_line(self, key: str, obj: dict) -> None:
        line = (json.dumps(obj, default=_json_default) + "\n").encode()  # fails before writing
        with self._lock:
            self._check_open()
            self._files[key].write(line)
            self._dirty = True

    def _check_open(self) -> None:
        if self._closed:
            raise DataError(f"{self.directory}: recording already closed")

    # --- durability ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Flush and fsync everything written so far."""
        with self._lock:
            if self._closed or not self._dirty:
                return
            for f in self._files.values():
                f.flush()
                os.fsync(f.fileno())
            self._dirty = False

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self.flush()
            except OSError as exc:  # disk full etc.: report, keep the engine running
                log.error("%s: flushing the recording failed: %s", self.directory, exc)

    def close(self) -> Path | None:
        """Flush, close the files, export ``raw.fif`` and mark the header complete.

        Returns the FIF path (None when nothing was recorded or export is off). Idempotent.
        """
        if self._closed:
            return None
        self._stop.set()
        self._flusher.join(timeout=5)
        self.flush()
        with self._lock:
            self._closed = True
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
