"""Data-source adapters for the viewer: everything the window shows comes through a :class:`Feed`.

Why an adapter: the same window must show an engine running in this process (``neuralign run``
without ``--headless``: traces, masking and reconstructions are available) and an engine running elsewhere that
we only see through its LSL result stream (``neuralign view``: results only). The window never
waits on a feed: each feed does its reading in its own worker thread and hands over

* new :class:`~neuralign.realtime.decisions.Result` objects through a lock-free ``deque`` (one
  producer, one consumer), and
* the latest :class:`TraceSnapshot` / status dict by reference assignment (atomic in CPython),

so :meth:`Feed.poll`, called by the GUI timer at ~30 fps, is a handful of cheap copies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from neuralign.bundle import Bundle
from neuralign.realtime.decisions import Generated, Reconstruction, Result
from neuralign.realtime.latency import summarize
from neuralign.realtime.lsl_io import (
    LostError,
    StreamInfo,
    find_stream,
    is_local,
    predicate,
    resolve_stream,
)
from neuralign.realtime.outputs import RESULT_STREAM_TYPE, ResultInlet
from neuralign.realtime.subscriptions import Subscription

log = logging.getLogger(__name__)

#: Channels (10-10 names) the trace panel shows first: visual responses are occipito-parietal.
DEFAULT_TRACE_CHANNELS = ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8", "P7", "P3", "Pz",
                          "P4", "P8")


def default_trace_channels(ch_names: Sequence[str], n: int = 8) -> list[str]:
    """Up to ``n`` occipital/parietal channels present in ``ch_names``, else the first ``n``."""
    upper = {c.upper(): c for c in ch_names}
    picked = [upper[c.upper()] for c in DEFAULT_TRACE_CHANNELS if c.upper() in upper][:n]
    return picked or list(ch_names[:n])


@dataclass
class TraceSnapshot:
    """The last ``window_s`` seconds of filtered samples of the chosen channels (a private copy)."""

    t: np.ndarray  # (T,) seconds relative to the newest sample (<= 0)
    data: np.ndarray  # (n_chosen, T) float32, model rate, bundle units after normalization
    channels: list[str]
    bad: np.ndarray  # (n_chosen,) bool: flat or huge variance compared with all channels
    std: np.ndarray  # (n_chosen,) per-channel standard deviation over the window
    ref_std: float  # median standard deviation over ALL channels (the auto-scale reference)
    n_written: int  # processed samples ever written (lets the window detect a stalled stream)


@dataclass
class FeedUpdate:
    """What one GUI tick gets from a feed: never blocks to produce it."""

    results: list[Result] = field(default_factory=list)
    traces: TraceSnapshot | None = None
    status: dict = field(default_factory=dict)


class Feed:
    """Base class of the viewer's data sources. Subclasses fill ``_results`` / ``_traces`` /
    ``_status`` from their worker thread(s) and list those threads in ``threads``.

    Everything the window needs from a source goes through these methods, so the window never
    checks which feed it has nor reaches into an engine behind it.
    """

    #: whether the source can show live filtered traces / masked-channel reconstructions
    supports_traces: bool = False
    supports_masking: bool = False
    poll_hz: float = 30.0

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.sfreq = float(bundle.manifest.sfreq) or None
        self._results: deque[Result] = deque(maxlen=100_000)  # oldest dropped only if the GUI died
        self._traces: TraceSnapshot | None = None
        self._status: dict = {}
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.trace_channels: list[str] = default_trace_channels(bundle.ch_names)
        #: the window sets this False while paused so the feed skips trace copies it would discard
        self.traces_wanted = True

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread(s). Idempotent."""
        if self.threads:
            return
        self._stop.clear()
        t = threading.Thread(target=self._guarded_run, name=f"neuralign-{type(self).__name__}",
                             daemon=True)
        t.start()
        self.threads.append(t)

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a feed bug must show in the status bar, not kill the GUI
            log.exception("viewer feed thread failed")
            self._status = {**self._status, "error": f"feed failed: {exc}"}

    def _run(self) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 3.0) -> None:
        """Stop and join the worker thread(s); safe to call twice."""
        self._stop.set()
        for t in self.threads:
            t.join(timeout=timeout)
            if t.is_alive():
                log.warning("viewer feed thread %s did not stop within %g s", t.name, timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    # -- what the GUI calls (cheap, never blocking) ------------------------------------------------
    def poll(self) -> FeedUpdate:
        out = []
        while True:
            try:
                out.append(self._results.popleft())
            except IndexError:
                break
        return FeedUpdate(out, self._traces, self._status)

    def set_trace_channels(self, names: Sequence[str]) -> None:
        known = set(self.bundle.ch_names)
        self.trace_channels = [n for n in names if n in known]

    def set_masked(self, indices: Sequence[int]) -> None:
        """Ask the engine to reconstruct these channels (bundle order). No-op when unsupported."""

    def reconstruction(self) -> Reconstruction | None:
        """The engine's latest masked-channel reconstruction, if any."""
        return None

    def generated(self) -> Generated | None:
        """The engine generator's latest image of a decoded epoch, if any."""
        return None

    def generated_unavailable(self) -> str:
        """Why this feed has no generated images ("" when it has): results alone travel on LSL."""
        return "attach"

    @property
    def default_top_k(self) -> int | None:
        """How many retrieved images the source decides per epoch, when the feed knows it (the
        window shows at most that many at first); None when unknown."""
        return None

    def is_source(self, obj: object) -> bool:
        """Whether ``obj`` is what this feed reads from (a window told to own it stops it via
        :meth:`stop_source`)."""
        return False

    def stop_source(self) -> None:
        """Stop what this feed reads from, for a window that owns it. A feed that only listens
        (an LSL result stream of an engine elsewhere) has nothing of its own to stop."""

    def describe(self) -> str:
        return type(self).__name__


def _robust_bad(std: np.ndarray, flat: float = 1e-3, huge: float = 10.0) -> tuple[np.ndarray, float]:
    """Flag channels whose std is < ``flat`` or > ``huge`` times the median std of all channels.

    The median (not the mean) is the reference so that one exploding channel cannot make every
    other channel look flat.
    """
    finite = std[np.isfinite(std)]
    ref = float(np.median(finite)) if finite.size else 0.0
    if ref <= 0:
        return ~np.isfinite(std) | (std <= 0), ref
    return ~np.isfinite(std) | (std < flat * ref) | (std > huge * ref), ref


#: Results an :class:`EngineFeed` may fall behind the engine before its oldest are dropped.
VIEWER_MAXLEN = 512


class EngineFeed(Feed):
    """In-process feed over a running :class:`~neuralign.realtime.engine.Engine`.

    Its thread drains its subscription to the engine's results (opened with the engine's kept
    history, so trials decoded before the window opened show; the engine never blocks on it:
    past ``VIEWER_MAXLEN`` waiting results it drops the oldest, counted in health), copies the
    last ``window_s`` seconds of the first stream's processed signal
    (:meth:`~neuralign.realtime.engine.Engine.processed_snapshot`) and refreshes
    ``engine.status()`` twice a second (that call sorts the latency window, too slow for 30 fps).
    It never stops the engine; the window does that when it owns it.
    """

    supports_traces = True
    supports_masking = True

    def __init__(self, engine, bundle: Bundle | None = None, window_s: float = 5.0,
                 status_period_s: float = 0.5):
        super().__init__(bundle or engine.bundle)
        self.engine = engine
        self.window_s = window_s
        self.status_period_s = status_period_s
        self._index = {c: i for i, c in enumerate(self.bundle.ch_names)}

    def _run(self) -> None:
        with self.engine.subscribe(maxlen=VIEWER_MAXLEN, replay=True) as results:
            self._follow(results)

    def _follow(self, results: Subscription) -> None:
        period = 1.0 / self.poll_hz
        next_status = 0.0
        while not self._stop.is_set():
            t0 = time.monotonic()
            self._results.extend(results.drain())
            if self.traces_wanted:
                self._traces = self._read_traces() or self._traces
            if t0 >= next_status:
                self._status = self._read_status()
                next_status = t0 + self.status_period_s
            self._stop.wait(max(0.0, period - (time.monotonic() - t0)))
        self._results.extend(results.drain())  # nothing decoded before closing is lost

    def _read_status(self) -> dict:
        st = dict(self.engine.status())
        st["latency_ms"] = st.get("latency_ms", {}).get("engine_total", {})
        if self.engine.error is not None:
            st["error"] = f"engine stopped: {self.engine.error}"
        return st

    def _read_traces(self) -> TraceSnapshot | None:
        # the first stream's last window_s (None: not started, too few samples yet, or
        # overwritten while read: next tick)
        snap = self.engine.processed_snapshot(self.window_s)
        if snap is None:
            return None
        data, ts, n = snap.data, snap.timestamps, snap.n_written
        with np.errstate(invalid="ignore"):
            std_all = np.nanstd(data, axis=1)
        bad_all, ref = _robust_bad(std_all)
        idx = [self._index[c] for c in self.trace_channels if c in self._index]
        return TraceSnapshot(t=ts - ts[-1], data=data[idx], channels=[self.bundle.ch_names[i]
                             for i in idx], bad=bad_all[idx], std=std_all[idx], ref_std=ref,
                             n_written=n)

    def set_masked(self, indices: Sequence[int]) -> None:
        self.engine.request_reconstruction(indices)

    def reconstruction(self) -> Reconstruction | None:
        return self.engine.last_reconstruction

    def generated(self) -> Generated | None:
        gen = getattr(self.engine, "generation", None)
        return None if gen is None else gen.latest

    def generated_unavailable(self) -> str:
        if getattr(self.engine, "generation", None) is not None:
            return ""
        return getattr(self.engine, "generation_off", "") or "no generator"

    @property
    def default_top_k(self) -> int | None:
        return getattr(getattr(self.engine, "cfg", None), "top_k", None)

    def is_source(self, obj: object) -> bool:
        return obj is self.engine

    def stop_source(self) -> None:
        log.info("stopping the engine the viewer owns")
        self.engine.stop()

    def describe(self) -> str:
        return "in-process engine"


def _all_streams(name: str, stype: str, wait: float = 1.0) -> list[StreamInfo]:
    """Every stream visible now with this name and type (a short, bounded wait)."""
    import pylsl

    return list(pylsl.resolve_bypred(predicate(name, stype), 1000, wait))


class LSLResultFeed(Feed):
    """Feed over an engine's LSL result stream (type ``NeuralignResults``, one JSON per epoch).

    Only results travel on that stream, so traces and masking are unavailable. The stream is
    resolved once in :meth:`start` (a missing stream is a :class:`~neuralign.errors.UserError`
    naming it); the worker thread then pulls samples with a short timeout and, if the outlet
    disappears, re-resolves it itself. ``recover=False`` on purpose: destroying an inlet while
    liblsl is recovering it has crashed liblsl (sccn/liblsl#220), and our own loop can stop cleanly.
    """

    def __init__(self, name: str | None, bundle: Bundle, source_id: str | None = None,
                 timeout: float = 5.0, reconnect_interval: float = 0.5):
        super().__init__(bundle)
        if name is None and source_id is None:
            raise ValueError("LSLResultFeed needs the result stream's name or source_id")
        self.name, self.source_id = name, source_id
        self.timeout, self.reconnect_interval = timeout, reconnect_interval
        self._info: StreamInfo | None = None
        self.hostname: str | None = None
        #: source_ids of other result streams with the same name (found at start; None = look)
        self.others: list[str] | None = None if source_id is None else []
        self._n = 0
        self._reconnects = 0
        self._connected = False
        self._local = False
        self._latency: deque[float] = deque(maxlen=2000)  # engine_total ms from each result
        self._e2e: deque[float] = deque(maxlen=2000)  # receipt - last input sample, ms

    def start(self) -> None:
        if self.threads:
            return
        self._info = resolve_stream(self.name, RESULT_STREAM_TYPE, self.source_id,
                                    timeout=self.timeout)
        self.source_id = self.source_id or self._info.source_id()
        self.name = self.name or self._info.name()
        self.hostname = self._info.hostname()
        # receipt time minus input-sample time is only meaningful on the engine's own clock
        self._local = is_local(self._info)
        if self.others is None:
            self.others = [s.source_id() for s in _all_streams(self.name, RESULT_STREAM_TYPE)
                           if s.source_id() != self.source_id]
        super().start()

    def following(self) -> str:
        """Which engine this feed follows (after :meth:`start`), and the others it could follow:
        several engines on one host publish the same stream name, only source_ids differ."""
        text = (f"Following result stream '{self.name}' (source_id {self.source_id}) on "
                f"{self.hostname}")
        if self.others:
            text += (f"; {len(self.others)} other engine(s) publish '{self.name}' "
                     f"(source_id {', '.join(self.others)}): choose with --result-source-id")
        return text

    def _open(self) -> ResultInlet | None:
        try:
            return ResultInlet(self._info, timeout=2.0, max_buflen=60)
        except Exception as exc:  # the outlet vanished between resolve and open: retry later
            log.info("result stream not openable yet: %s", exc)
            return None

    def _run(self) -> None:
        inlet = self._open()
        self._connected = inlet is not None
        last_status = 0.0
        while not self._stop.is_set():
            if inlet is None:
                if self._stop.wait(self.reconnect_interval):
                    break
                found = find_stream(stype=RESULT_STREAM_TYPE, source_id=self.source_id,
                                    timeout=0.5)
                if found is not None:
                    self._info = found
                    inlet = self._open()
                    if inlet is not None:
                        self._reconnects += 1
                        self._connected = True
                        log.info("result stream %s reconnected", self.source_id)
            else:
                try:
                    if self._pull(inlet):
                        last_status = 0.0  # new results: refresh the counters now
                except LostError:
                    log.warning("result stream %s lost; reconnecting", self.source_id)
                    self._connected = False
                    inlet.close()
                    inlet = None
            now = time.monotonic()
            if now - last_status >= 0.5:
                self._status = self._make_status()
                last_status = now
        if inlet is not None:
            inlet.close()
        self._connected = False
        self._status = self._make_status()

    def _pull(self, inlet: ResultInlet) -> int:
        """Read every result waiting (first wait <= 0.1 s); returns how many arrived."""
        got = inlet.pull(timeout=0.1)
        for r, received in got:
            self._n += 1
            tot = r.stages_ms.get("engine_total")
            if tot is not None:
                self._latency.append(float(tot))
            if self._local:
                self._e2e.append(1e3 * (received - r.last_sample_timestamp))
            self._results.append(r)
        return len(got)

    def _make_status(self) -> dict:
        return {"decoded": self._n, "latency_ms": summarize(list(self._latency)),
                "e2e_ms": summarize(list(self._e2e)), "dropped": None,
                "reconnects": self._reconnects, "connected": self._connected}

    def describe(self) -> str:
        return f"LSL result stream '{self.name}' (source_id {self.source_id})"
