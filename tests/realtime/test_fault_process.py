"""Fault matrix, process side (issue 11): SIGTERM / Ctrl-C / kill -9 of a recording
'neuralign run' (a real subprocess on a real LSL stream), a slow disk under the recorder, and the
bounds on everything that used to grow without limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neuralign.realtime.decisions import RepetitionStore
from neuralign.realtime.recorder import Recorder, read_recording
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.sources.base import MAX_EVENTS, SourceHealth
from tests.realtime.faults import tiny_raw, wait_until


def _run(bundle_dir, sid: str, rec) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "neuralign", "run", "--bundle", str(bundle_dir), "--source",
         f"lsl:source_id={sid}", "--markers", f"lsl:source_id={sid}-markers", "--headless",
         "--record", str(rec), "--status-every", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sigterm-at-start", "kill-9"])
def test_fault_stop_signals_leave_a_valid_recording(tiny_bundle, tmp_path, how):
    """SIGTERM and Ctrl-C, mid-run or while starting: the recording is complete and valid;
    kill -9: readable up to at most the last second."""
    bundle_dir, data_dir = tiny_bundle
    raw = tiny_raw(data_dir)
    sid = os.urandom(8).hex()
    rep = LSLReplayer.from_raw(raw, name=f"sig-{sid[:6]}", source_id=sid, loop=True,
                               wait_for_consumers=60.0)
    rep.start()
    rec = tmp_path / "rec"
    proc = _run(bundle_dir, sid, rec)
    try:
        if how == "sigterm-at-start":
            assert wait_until(lambda: (rec / "header.json").is_file(), 60)
            proc.send_signal(signal.SIGTERM)
        else:
            assert wait_until(lambda: rep.n_sent > 3 * raw.info["sfreq"], 60), proc.poll()
            time.sleep(1.5)
            sig = {"sigterm": signal.SIGTERM, "ctrl-c": signal.SIGINT,
                   "kill-9": signal.SIGKILL}[how]
            sent_at_kill = rep.n_sent
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        rep.stop()
    data, ts, events, results, header = read_recording(rec)
    if how == "kill-9":
        assert proc.returncode == -signal.SIGKILL
        assert header["complete"] is False
        # readable, and nothing older than the last second (+ delivery slack) is missing
        assert data.shape[1] >= sent_at_kill - 1.5 * raw.info["sfreq"], (data.shape, sent_at_kill)
        return
    assert proc.returncode in (0, 130), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert header["complete"] is True and header["n_samples"] == data.shape[1]
    if data.shape[1]:
        assert (rec / "raw.fif").is_file()
        assert np.all(np.diff(ts) > 0)
    for line in (rec / "results.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_fault_recorder_never_blocks_the_processing_thread_on_fsync(tmp_path, monkeypatch):
    """Defect 9: the recorder fsynced while holding the lock write_samples needs (205 ms stalls
    of the processing thread with a 50 ms fsync)."""
    import neuralign.realtime.recorder as recorder_mod

    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.05)
        real_fsync(fd)

    monkeypatch.setattr(recorder_mod.os, "fsync", slow_fsync)
    rec = Recorder(tmp_path / "slow", ["a", "b"], ["eeg", "eeg"], 500.0, flush_interval=0.1)
    worst = 0.0
    x = np.zeros((2, 10), np.float32)
    for i in range(300):  # 1.5 s of 10-sample chunks every 5 ms, many fsyncs meanwhile
        t = time.perf_counter()
        rec.write_samples(x, np.arange(10) / 500 + i)
        worst = max(worst, time.perf_counter() - t)
        time.sleep(0.005)
    rec.close()
    assert worst < 0.02, f"write_samples blocked {worst * 1e3:.0f} ms"
    data, *_ = read_recording(tmp_path / "slow")
    assert data.shape == (2, 3000)


def test_fault_nothing_grows_without_bound(tiny_bundle):
    """Defect 10: the ready queue, deferred markers, repetition store and health.events had no
    bound."""
    from neuralign.bundle import load_bundle
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.epocher import MAX_UNPLACED, Epocher, EpochWindow
    from neuralign.realtime.pipeline import Pipeline
    from neuralign.realtime.ringbuffer import RingBuffer
    from neuralign.realtime.sources.base import Marker
    from neuralign.realtime.sources.lsl import LSLSource

    h = SourceHealth()
    for i in range(10 * MAX_EVENTS):
        h.events.append(f"gap {i}")
    assert len(h.events) == MAX_EVENTS
    store = RepetitionStore(max_labels=50)
    for i in range(1000):
        store.add(f"label{i}", np.zeros((63, 250), np.float32))
    assert len(store) == 50
    bundle = load_bundle(tiny_bundle[0])
    pipe = Pipeline(bundle, bundle.ch_names, 500.0)
    ep = Epocher(pipe.output, EpochWindow.for_signal(bundle.manifest.epoch, pipe.output),
                 RingBuffer(63, 100), health=pipe.health)
    ep.add_markers(Marker(float(i), "c0001_i00") for i in range(MAX_UNPLACED + 500))
    ep.ready_epochs()
    assert len(ep._unplaced) <= MAX_UNPLACED
    assert pipe.health.deferred_markers_dropped >= 500
    engine = Engine(bundle, LSLSource(name="never-opened"), RealtimeConfig(), publish_lsl=False)
    assert 0 < engine._ready.maxsize <= 4096
    # results: the newest KEEP_HEALTH keep their health snapshot in memory, older ones drop it
    # (it went out on the wire and into the recording): 100000 snapshots were hundreds of MB
    from neuralign.realtime.decisions import Result
    from neuralign.realtime.subscriptions import KEEP_HEALTH

    reader = engine.subscribe()
    for i in range(KEEP_HEALTH + 50):
        engine._fan_out(Result(i, "x", 0.0, 0.0, 1, ["x"], [1.0], health={"gaps": 0}))
    kept = [r.health is not None for r in reader.drain()]
    assert sum(kept) == KEEP_HEALTH and all(kept[-KEEP_HEALTH:]) and not any(kept[:50])
