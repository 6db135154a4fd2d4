"""Replay a recording as LSL streams in real time, with exact sample and marker timestamps.

Why not mne-lsl's ``PlayerLSL``: it stamps each chunk with the time its LAST sample is due and
then sends it early, so its data run one chunk ahead of real time (latency measured on its stamps
is too small by a chunk), its annotation stamps are one sample before their data sample, and a
consumer connecting late never sees the first samples. Here:

* sample ``k`` (counted from the first sample sent) is stamped exactly ``t0 + k / sfreq`` (pushed
  with explicit per-sample timestamps, so liblsl transmits the values, not deduced ones);
* a chunk is sent when its last sample is due on the wall clock (``local_clock()``) — never early;
  at ``speed != 1`` the pacing is scaled but the stamps stay on the nominal timeline, so what the
  consumer computes from timestamps (epochs, markers) is identical at any speed;
* each marker is pushed with EXACTLY its onset sample's timestamp, before the chunk that contains
  that sample, so an epocher never sees the sample before the marker that names it;
* with ``wait_for_consumers`` nothing is sent until a consumer is connected, so the consumer's
  causal filters see the stream from sample 0 (online/offline parity needs that).
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Sequence

import numpy as np

from neuralign.realtime.lsl_io import local_clock, make_outlet
from neuralign.signal.events import stimulus_events

log = logging.getLogger(__name__)

_NON_DATA_TYPES = {"stim", "chpi", "syst", "ias", "exci"}


def marker_source_id(source_id: str) -> str:
    """The ``source_id`` of a replay's marker stream, from its data stream's."""
    return f"{source_id}-markers"


class LSLReplayer:
    """Send ``data`` (channels x samples) as a regular LSL stream plus a string ``Markers`` stream.

    Runs in its own thread (``start`` / ``stop`` / ``wait_done``); the outlets live until
    ``stop()`` so a consumer can drain the tail after the last chunk was sent.
    ``loop=True`` repeats the data (``n_loops`` passes in all, None = until stopped) with sample
    indices and timestamps continuing and markers repeated at the same offsets.
    """

    def __init__(self, data: np.ndarray, sfreq: float, ch_names: Sequence[str],
                 ch_types: Sequence[str] | None = None,
                 events: Sequence[tuple[int, str]] = (), name: str = "neuralign-replay",
                 stype: str = "EEG", source_id: str | None = None,
                 marker_name: str | None = None, chunk_size: int = 10, speed: float = 1.0,
                 loop: bool = False, n_loops: int | None = None, start_offset_s: float = 0.0,
                 wait_for_consumers: float = 10.0, dtype: str = "float32"):
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != len(ch_names):
            raise ValueError(f"data must be (n_channels={len(ch_names)}, n_samples), "
                             f"got {data.shape}")
        if sfreq <= 0 or chunk_size < 1:
            raise ValueError("sfreq must be > 0 and chunk_size >= 1")
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 or inf = as fast as possible)")
        self.sfreq = float(sfreq)
        self.ch_names = list(ch_names)
        self.ch_types = list(ch_types) if ch_types is not None else [stype.lower()] * len(ch_names)
        self.name, self.stype = name, stype
        self.source_id = source_id or uuid.uuid4().hex
        self.marker_name = marker_name or f"{name}-markers"
        self.marker_source_id = marker_source_id(self.source_id)
        self.chunk_size, self.speed = int(chunk_size), float(speed)
        self.loop, self.n_loops = loop, (n_loops if loop else 1)
        self.wait_for_consumers = wait_for_consumers
        self.dtype = dtype
        self.first_sample = int(round(start_offset_s * self.sfreq))
        if not 0 <= self.first_sample < data.shape[1]:
            raise ValueError(f"start_offset_s={start_offset_s} is outside the data "
                             f"({data.shape[1] / self.sfreq:g} s)")
        # sample-major and C-contiguous once, so each push is a view (no per-chunk copy)
        self._data = np.ascontiguousarray(data[:, self.first_sample:].T,
                                          dtype=np.float32 if dtype == "float32" else np.float64)
        ev = sorted((int(s) - self.first_sample, str(v)) for s, v in events
                    if self.first_sample <= int(s) < data.shape[1])
        self._ev_idx = np.array([s for s, _ in ev], dtype=np.int64)
        self._ev_val = [v for _, v in ev]
        self.n_sent = 0
        self.n_markers_sent = 0
        self.t0: float | None = None
        self._outlet = None
        self._marker_outlet = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None

    # --- construction from MNE ----------------------------------------------------------------
    @classmethod
    def from_raw(cls, raw, picks: Sequence[str] | None = None, **kw) -> LSLReplayer:
        """Replay an MNE Raw: its data channels (or ``picks``), annotations as markers.

        Annotation onsets become sample indices by :func:`~neuralign.signal.events.
        stimulus_events` (the formula offline epoching uses), descriptions become the marker
        values; ``BAD*`` and ``EDGE*`` annotations (segments, not stimuli) are skipped.
        """
        types = raw.get_channel_types()
        if picks is None:
            picks = [ch for ch, t in zip(raw.ch_names, types) if t not in _NON_DATA_TYPES]
        idx = [raw.ch_names.index(ch) for ch in picks]
        data = raw.get_data(picks=idx)
        kw.setdefault("stype", "MEG" if any(types[i] in ("mag", "grad") for i in idx) else "EEG")
        return cls(data, raw.info["sfreq"], [raw.ch_names[i] for i in idx],
                   [types[i] for i in idx], stimulus_events(raw), **kw)

    # --- control ------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        """Markers in one pass."""
        return len(self._ev_val)

    @property
    def n_samples(self) -> int:
        """Samples in one pass."""
        return self._data.shape[0]

    def timestamp_of(self, k: int) -> float:
        """LSL timestamp of sent sample ``k`` (after ``start``)."""
        return self.t0 + k / self.sfreq

    def start(self) -> None:
        """Create both outlets (visible when this returns) and start the sending thread."""
        if self._thread is not None:
            raise RuntimeError("replayer already started")
        self._outlet = make_outlet(self.name, self.stype, self.ch_names, self.sfreq,
                                   self.source_id, self.ch_types, chunk_size=0, dtype=self.dtype)
        self._marker_outlet = make_outlet(self.marker_name, "Markers", ["marker"], 0.0,
                                          self.marker_source_id, ["misc"], chunk_size=1,
                                          dtype="string")
        self._thread = threading.Thread(target=self._run, name=f"replay-{self.name}", daemon=True)
        self._thread.start()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Block until every sample was sent (True) or ``timeout`` expired (False)."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        """Stop sending and destroy the outlets (consumers' inlets should be closed first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._marker_outlet = None
        self._outlet = None

    def __enter__(self) -> LSLReplayer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- sending ------------------------------------------------------------------------------
    def _wait_consumers(self) -> None:
        if not self.wait_for_consumers:
            return
        deadline = local_clock() + self.wait_for_consumers
        need_markers = self.n_events > 0
        while not self._stop.is_set() and local_clock() < deadline:
            if self._outlet.have_consumers() and (not need_markers
                                                  or self._marker_outlet.have_consumers()):
                return
            self._stop.wait(0.005)
        if not self._stop.is_set():
            log.warning("%s: no %s consumer after %g s; sending anyway", self.name,
                        "data" if not self._outlet.have_consumers() else "marker",
                        self.wait_for_consumers)

    def _run(self) -> None:
        try:
            self._send_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the owner via .error
            self.error = exc
            log.exception("%s: replay failed", self.name)
        finally:
            self._done.set()

    def _send_all(self) -> None:
        self._wait_consumers()
        fast = self.speed == 0 or math.isinf(self.speed)
        n, cs = self.n_samples, self.chunk_size
        self.t0 = local_clock()
        wall0 = self.t0
        log.info("%s: replaying %d ch x %d samples @ %g Hz (speed %g, chunk %d)", self.name,
                 len(self.ch_names), n, self.sfreq, self.speed, cs)
        passes = 0
        while not self._stop.is_set() and (self.n_loops is None or passes < self.n_loops):
            base = passes * n  # global index of this pass's first sample
            ev_ptr = 0
            for a in range(0, n, cs):
                b = min(a + cs, n)
                ka, kb = base + a, base + b
                if not fast:  # send when the chunk's LAST sample is due, never earlier
                    due = wall0 + (kb - 1) / (self.sfreq * self.speed)
                    delay = due - local_clock()
                    if delay > 0 and self._stop.wait(delay):
                        return
                elif self._stop.is_set():
                    return
                while ev_ptr < len(self._ev_idx) and self._ev_idx[ev_ptr] < b:
                    k = base + int(self._ev_idx[ev_ptr])
                    self._marker_outlet.push_sample([self._ev_val[ev_ptr]], self.t0
                                                    + k / self.sfreq)
                    self.n_markers_sent += 1
                    ev_ptr += 1
                stamps = (self.t0 + np.arange(ka, kb) / self.sfreq).tolist()
                self._outlet.push_chunk(self._data[a:b], stamps)
                self.n_sent = kb
            passes += 1
        log.info("%s: sent %d samples, %d markers", self.name, self.n_sent, self.n_markers_sent)
