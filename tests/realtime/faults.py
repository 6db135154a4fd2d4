"""Helpers of the fault-matrix tests (issue 11): real LSL outlets that misbehave on purpose.

:class:`Sender` is a data + marker outlet pair that pushes exactly the samples, timestamps and
markers a test gives it (gaps, jumps, duplicates, NaN, foreign clocks, odd units), paced on the
wall clock so the engine meets them as it would from a device.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import mne
import numpy as np
import pylsl

from neuralign.realtime.lsl_io import local_clock, make_outlet
from neuralign.signal.events import stimulus_events


def tiny_raw(data_dir, seconds: float | None = None) -> mne.io.BaseRaw:
    raw = mne.io.read_raw_fif(data_dir / "sim_test_raw.fif", preload=True, verbose="error")
    return raw.crop(0, seconds) if seconds else raw


def make_info(name: str, ch_names: list[str], sfreq: float, source_id: str,
              unit: str | None = "volts", stype: str = "EEG",
              ch_type: str = "eeg", fmt: str = "float32") -> pylsl.StreamInfo:
    """A data stream description with a chosen unit (None: no unit element at all)."""
    info = pylsl.StreamInfo(name, stype, len(ch_names), sfreq, fmt, source_id)
    chans = info.desc().append_child("channels")
    for label in ch_names:
        ch = chans.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("type", ch_type)
        if unit is not None:
            ch.append_child_value("unit", unit)
    return info


class Sender:
    """Pushes (channels, n) data with explicit timestamps, and string markers, over LSL."""

    def __init__(self, ch_names: list[str], sfreq: float, name: str | None = None,
                 unit: str | None = "volts", ch_type: str = "eeg", markers: bool = True,
                 source_id: str | None = None):
        self.sid = source_id or uuid.uuid4().hex
        self.name = name or f"fault-{self.sid[:8]}"
        self.sfreq = sfreq
        self.outlet = pylsl.StreamOutlet(make_info(self.name, ch_names, sfreq, self.sid, unit,
                                                   ch_type=ch_type), 0, 360)
        self.marker_sid = f"{self.sid}-markers"
        self.marker_outlet = (make_outlet(f"{self.name}-markers", "Markers", ["marker"], 0.0,
                                          self.marker_sid, ["misc"], chunk_size=1,
                                          dtype="string") if markers else None)

    def wait_for_consumers(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outlet.have_consumers() and (self.marker_outlet is None
                                                 or self.marker_outlet.have_consumers()):
                return
            time.sleep(0.01)
        raise TimeoutError("no consumer connected")

    def marker(self, value, t: float) -> None:
        self.marker_outlet.push_sample([value], t)

    def send(self, data: np.ndarray, stamps: np.ndarray, events=(), chunk: int = 10,
             speed: float = 4.0) -> None:
        """Push ``data`` in chunks stamped ``stamps``; ``events`` = (column, value) markers,
        each pushed just before the chunk holding its sample. Paced at ``speed`` x real time."""
        events = sorted(events)
        e = 0
        t_wall = time.monotonic()
        for a in range(0, data.shape[1], chunk):
            b = min(a + chunk, data.shape[1])
            while e < len(events) and events[e][0] < b:
                self.marker(events[e][1], float(stamps[events[e][0]]))
                e += 1
            self.outlet.push_chunk(np.ascontiguousarray(data[:, a:b].T, dtype=np.float32),
                                   stamps[a:b].tolist())
            t_wall += (b - a) / self.sfreq / speed
            delay = t_wall - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def raw_events(raw) -> list[tuple[int, str]]:
    return stimulus_events(raw)


def stamps_from(t0: float, n: int, sfreq: float) -> np.ndarray:
    return t0 + np.arange(n) / sfreq


def now() -> float:
    return local_clock()


def strict_json(text: str) -> dict:
    """Parse like a strict JSON client: a bare NaN/Infinity is an error."""
    def refuse(const):
        raise ValueError(f"non-standard JSON constant {const}")
    return json.loads(text, parse_constant=refuse)


class ResultReader:
    """A strict-JSON client of a result stream, connected before the results are published."""

    def __init__(self, source_id: str):
        infos = pylsl.resolve_byprop("source_id", source_id, minimum=1, timeout=10)
        assert infos, "result stream not found"
        self.inlet = pylsl.StreamInlet(infos[0], max_buflen=60)
        self.inlet.open_stream(timeout=5)

    def read(self, n: int, timeout: float, idle: float | None = None) -> list[dict]:
        """Up to ``n`` results within ``timeout`` s (stop early after ``idle`` s without one)."""
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while len(out) < n and time.monotonic() < deadline:
            sample, _ = self.inlet.pull_sample(timeout=0.2)
            if sample is not None:
                out.append(strict_json(sample[0]))
                last = time.monotonic()
            elif idle is not None and time.monotonic() - last > idle:
                break
        return out

    def close(self) -> None:
        self.inlet.close_stream()


def wait_until(cond, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def stream_until(sender: Sender, data: np.ndarray, stop) -> threading.Thread:
    """Push ``data`` looped, in real time and stamped on the local clock, until ``stop`` (a
    ``threading.Event``) is set: a device whose data never pause while other things fail."""

    def run() -> None:
        t0, i, n, chunk = now(), 0, data.shape[1], 10
        while not stop.is_set():
            cols = np.arange(i, i + chunk) % n
            sender.outlet.push_chunk(np.ascontiguousarray(data[:, cols].T, dtype=np.float32),
                                     (t0 + np.arange(i, i + chunk) / sender.sfreq).tolist())
            i += chunk
            time.sleep(max(0.0, t0 + i / sender.sfreq - now()))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
