"""Soak: replay + engine + recorder for a long stretch, faster than real time.

What a 2-hour session would do to the engine, in a fraction of the time: the replayer loops a
recording over LSL at ``speed`` x real time (timestamps stay on the nominal timeline, so the engine
sees a 2-hour session), the engine decodes it and the recorder writes it. The report says whether
anything degrades: samples dropped (must be 0), resident memory after warm-up vs at the end, and
the p99 engine latency of the first vs the last 10 % of the decoded trials.

``neuralign bench soak`` prints it; the command and its figures are in the README.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay.player import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source

if TYPE_CHECKING:
    from neuralign.realtime.sources.base import Source
    from neuralign.realtime.subscriptions import Subscription

log = logging.getLogger(__name__)


def rss_mb() -> float:
    """Resident memory of this process, MB (/proc; psutil when /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


@dataclass
class SoakReport:
    """The figures of one soak run (JSON-ready)."""

    equivalent_s: float  # stream time replayed
    wall_s: float
    speed: float
    n_channels: int
    sfreq: float
    sent_samples: int
    received_samples: int
    recorded_samples: int
    dropped_samples: int  # sent but never received + dropped by timestamp + lost in the engine
    markers_sent: int
    decoded: int
    rss_start_mb: float  # after warm-up
    rss_end_mb: float
    rss_max_mb: float
    # engine latency from the epoch's last chunk leaving the acquisition thread to publication
    # (at speed != 1 the stream's timestamps run ahead of the wall clock, so 'engine_total',
    # which starts at the sample's timestamp, is not meaningful); first 10 % of trials
    p99_first_ms: float
    p99_last_ms: float  # ... last 10 %
    p50_ms: float
    health: dict = field(default_factory=dict)
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def lines(self) -> list[str]:
        """The human-readable report."""
        return [
            f"soak: {self.equivalent_s / 3600:.2f} h of {self.n_channels} ch @ {self.sfreq:g} Hz "
            f"replayed at {self.speed:g}x in {self.wall_s / 60:.1f} min "
            f"(load average {self.load_average[0]:.2f} / {self.load_average[1]:.2f} / "
            f"{self.load_average[2]:.2f})",
            f"  decoded trials {self.decoded} of {self.markers_sent} markers sent",
            f"  samples: sent {self.sent_samples}, received {self.received_samples}, recorded "
            f"{self.recorded_samples}, dropped {self.dropped_samples}",
            f"  resident memory: {self.rss_start_mb:.0f} MB after warm-up, {self.rss_end_mb:.0f} "
            f"MB at the end (max {self.rss_max_mb:.0f} MB)",
            f"  engine latency (acquired -> published) p99: first 10 % {self.p99_first_ms:.1f} ms, last 10 % "
            f"{self.p99_last_ms:.1f} ms (p50 {self.p50_ms:.1f} ms)",
        ]


def _engine_ms(stages_ms: dict[str, float]) -> float:
    """Acquired -> published: every engine stage after the acquisition thread."""
    total, acquire = stages_ms.get("engine_total"), stages_ms.get("acquire")
    return math.nan if total is None or acquire is None else float(total - acquire)


def _p99(a: np.ndarray) -> float:
    return float(np.percentile(a, 99)) if len(a) else math.nan


def run_soak(bundle_dir: Path, raw_path: Path, equivalent_s: float = 7200.0,
             speed: float = 10.0, record_dir: Path | None = None, keep_recording: bool = False,
             warmup_s: float = 60.0, chunk_size: int = 10, out: Path | None = None,
             progress_every_s: float = 60.0) -> SoakReport:
    """Loop ``raw_path`` over LSL for ``equivalent_s`` of stream time at ``speed`` x, decode it
    with ``bundle_dir`` and record it; returns the :class:`SoakReport`.

    Memory is sampled once ``warmup_s`` of stream time has passed (model, buffers and queues
    warmed up) and at the end. The soak itself consumes the engine's results as it goes,
    through a subscription, as a long-running client would.
    """
    from neuralign.realtime.recorder import Recorder, read_recording

    bundle = load_bundle(bundle_dir)
    rep, sfreq = _looping_replayer(raw_path, equivalent_s, speed, chunk_size)
    rt = RealtimeConfig(chunk_size=chunk_size)
    src = replay_source(rep, timeout=rt.connect_timeout_s, buffer_seconds=rt.buffer_seconds)
    tmp = None
    if record_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="neuralign-soak-"))
        record_dir = tmp / "rec"
    # a small kept history: the soak reads every result through its subscription, so the
    # memory it measures is the engine's working set, not a growing history
    engine = Engine(bundle, src, rt, publish_lsl=True, results_maxlen=1000)
    rep.start()
    desc = src.open()
    engine.recorder = Recorder.for_stream(record_dir, desc)
    results = engine.subscribe()  # before the start: every result is read
    engine.start()
    t0 = time.monotonic()
    try:
        seen = _follow(engine, rep, src, results, sfreq, equivalent_s, warmup_s,
                       progress_every_s, t0)
    finally:
        engine.stop()
        rep.stop()
    wall = time.monotonic() - t0
    status = engine.status()
    recorded = read_recording(record_dir)[1].shape[0]
    if tmp is not None and not keep_recording:
        shutil.rmtree(tmp, ignore_errors=True)
    report = _report(seen, engine, rep, src, sfreq, speed, wall, len(desc.ch_names),
                     int(recorded), status)
    if out is not None:
        Path(out).write_text(json.dumps(asdict(report), indent=1))
    if engine.error is not None:
        raise RuntimeError(f"the engine stopped during the soak: {engine.error!r}")
    return report


def _looping_replayer(raw_path: Path, equivalent_s: float, speed: float,
                      chunk_size: int) -> tuple[LSLReplayer, float]:
    """A replayer looping the recording for at least ``equivalent_s`` of stream time, and the
    recording's rate (the raw data is released on return: the replayer holds its own copy)."""
    import mne

    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    sfreq = raw.info["sfreq"]
    n_total = int(round(equivalent_s * sfreq))
    n_loops = max(1, math.ceil(n_total / raw.n_times))
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"neuralign-soak-{sid[:6]}", source_id=sid, speed=speed,
                               chunk_size=chunk_size, loop=True, n_loops=n_loops,
                               wait_for_consumers=30.0)
    return rep, sfreq


@dataclass
class _Seen:
    """What the soak measured while the stream ran."""

    latencies: list[float]  # engine latency of every decoded trial, ms (acquired -> published)
    rss_start: float | None  # after warm-up (None: the stream ended first)
    rss_max: float
    rss_end: float


def _follow(engine: Engine, rep: LSLReplayer, src: Source, results: Subscription, sfreq: float,
            equivalent_s: float, warmup_s: float, progress_every_s: float, t0: float) -> _Seen:
    """Read results and sample memory until the replayer has sent every pass, then wait for the
    last samples and epochs to go through the engine."""
    latencies: list[float] = []
    rss_start: float | None = None
    rss_max = rss_mb()
    next_progress = t0 + progress_every_s
    while engine.error is None:
        done = rep.wait_done(0.0)  # whole passes: the stream time is >= equivalent_s
        for r in results.drain():
            latencies.append(_engine_ms(r.stages_ms))
        stream_s = rep.n_sent / sfreq
        if rss_start is None and stream_s >= min(warmup_s, equivalent_s / 10):
            rss_start = rss_mb()
        rss_max = max(rss_max, rss_mb())
        if time.monotonic() >= next_progress:
            next_progress += progress_every_s
            log.info("soak: %.0f / %.0f s of stream, %d decoded, rss %.0f MB", stream_s,
                     equivalent_s, engine.n_decoded, rss_mb())
        if done:
            break
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while src.buffer.n_written < rep.n_sent and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the last epochs' inference
    latencies += [_engine_ms(r.stages_ms) for r in results.drain()]
    return _Seen(latencies, rss_start, rss_max, rss_mb())


def _report(seen: _Seen, engine: Engine, rep: LSLReplayer, src: Source, sfreq: float,
            speed: float, wall: float, n_channels: int, recorded: int,
            status: dict) -> SoakReport:
    """The figures of a finished soak."""
    lat = np.asarray([v for v in seen.latencies if np.isfinite(v)])
    tenth = max(1, len(lat) // 10)
    received = src.health.n_received
    return SoakReport(
        equivalent_s=rep.n_sent / sfreq, wall_s=wall, speed=speed, n_channels=n_channels,
        sfreq=sfreq, sent_samples=rep.n_sent, received_samples=received,
        recorded_samples=recorded,
        dropped_samples=max(0, rep.n_sent - received) + src.health.n_dropped
        + engine.n_lost_samples,
        markers_sent=rep.n_markers_sent, decoded=engine.n_decoded,
        rss_start_mb=seen.rss_start if seen.rss_start is not None else seen.rss_end,
        rss_end_mb=seen.rss_end, rss_max_mb=seen.rss_max, p99_first_ms=_p99(lat[:tenth]),
        p99_last_ms=_p99(lat[-tenth:]), p50_ms=float(np.median(lat)) if len(lat) else math.nan,
        health=dict(status.get("health") or {}), load_average=os.getloadavg())
