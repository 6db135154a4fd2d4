"""Latency benchmark: replay a recording over LSL, decode it live, time every result as a consumer.

End-to-end latency (docs/design.md) = local LSL clock when a plain LSL inlet RECEIVES the result
- LSL timestamp of the last input sample the epoch needed. The engine's own per-stage breakdown
(acquire, filter, epoch, normalize, wait-in-batch, inference, publish) comes from its
instrumentation. The replayer stamps sample i with t0 + i / sfreq and sends it when it is due, so
'acquire' includes the transport and the chunking (a chunk of n samples makes its oldest sample
wait (n - 1) / sfreq).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.decisions import Result
from neuralign.realtime.latency import summarize
from neuralign.realtime.lsl_io import resolve_stream
from neuralign.realtime.outputs import RESULT_STREAM_TYPE, ResultInlet


def latency_benchmark(bundle_dir: Path, raw_path: Path, duration_s: float = 60.0,
                      chunk_size: int = 10, batch_size: int = 4, max_wait_ms: float = 20.0,
                      torch_threads: int = 1, out: Path | None = None) -> dict:
    from neuralign.realtime.replay.session import replay_session

    bundle = load_bundle(bundle_dir)
    result_sid = uuid.uuid4().hex
    rt = RealtimeConfig(batch_size=batch_size, max_wait_ms=max_wait_ms, chunk_size=chunk_size,
                        torch_threads=torch_threads)
    session = replay_session(bundle, raw_path, rt, duration_s=duration_s,
                             result_source_id=result_sid, name="bench")
    engine = session.engine
    received: list[tuple[Result, float]] = []
    stop = threading.Event()

    def consume() -> None:
        inlet = ResultInlet(resolve_stream(stype=RESULT_STREAM_TYPE, source_id=result_sid,
                                           timeout=10), timeout=5)
        while not stop.is_set():
            received.extend(inlet.pull(timeout=0.1))
        inlet.close()

    n_expected = session.n_trials
    session.start()
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    t0 = time.monotonic()
    try:
        while len(received) < n_expected and time.monotonic() - t0 < duration_s + 30:
            if engine.error is not None:
                raise engine.error
            time.sleep(0.1)
    finally:
        stop.set()
        consumer.join(timeout=5)
        session.stop()
    e2e = [1e3 * (recv - r.last_sample_timestamp) for r, recv in received]
    status = engine.status()
    res = {
        "input": {"channels": len(bundle.ch_names), "sfreq": session.sfreq,
                  "chunk_size": chunk_size, "duration_s": session.duration_s},
        "model": {"sfreq": bundle.manifest.sfreq, "n_times": bundle.manifest.epoch.n_times,
                  "epoch_window_s": [bundle.manifest.epoch.tmin, bundle.manifest.epoch.tmax]},
        "engine": {"batch_size": batch_size, "max_wait_ms": max_wait_ms,
                   "torch_threads": torch_threads},
        "n_epochs": len(received), "n_expected": n_expected,
        "end_to_end_ms": summarize(e2e),
        "stages_ms": status["latency_ms"],
        "dropped_samples": status["dropped"], "gaps": status["gaps"],
        "lost_in_engine": status["lost_in_engine"],
        "definition": "end-to-end = consumer receive time (local LSL clock) - LSL timestamp of "
                      "the last input sample the epoch needed",
    }
    if out is not None:
        Path(out).write_text(json.dumps(res, indent=1))
    return res


def format_report(res: dict) -> str:
    lines = [f"{res['n_epochs']}/{res['n_expected']} epochs decoded; input "
             f"{res['input']['channels']} ch @ {res['input']['sfreq']:g} Hz (chunks of "
             f"{res['input']['chunk_size']}), model {res['model']['sfreq']:g} Hz x "
             f"{res['model']['n_times']} samples",
             f"{'stage':16s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}  (ms)"]
    rows = [("end-to-end", res["end_to_end_ms"])] + list(res["stages_ms"].items())
    for name, s in rows:
        if s:
            lines.append(f"{name:16s} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}")
    lines.append(f"dropped samples {res['dropped_samples']}, gaps {res['gaps']}")
    return "\n".join(lines)
