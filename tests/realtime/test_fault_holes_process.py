"""Fault-matrix holes, engine side: a lost marker stream, the CLI's results past the engine's
full history, drops that nothing counted (a stalled reader, marker queue, multi-channel markers,
recorder write errors) and results published out of epoch order. All on real LSL streams with
the tiny bundle."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.cli.online import follow_results
from neuralign.cli.report import print_engine_status
from neuralign.config import RealtimeConfig
from neuralign.realtime.decisions import RunningAccuracy
from neuralign.realtime.engine import Engine
from neuralign.realtime.lsl_io import make_outlet
from neuralign.realtime.queues import DropOldestQueue
from neuralign.realtime.recorder import Recorder
from neuralign.realtime.sources.base import MarkerQueue
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.realtime.subscriptions import recent
from neuralign.recording_format import RESULTS
from tests.realtime.faults import (
    Sender,
    now,
    raw_events,
    stream_until,
    tiny_raw,
    wait_until,
)

SFREQ = 500.0


def _engine(bundle, sender: Sender, markers: bool = True, **kw) -> Engine:
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10)
                    if markers else None)
    cfg = kw.pop("cfg", None) or RealtimeConfig(batch_size=4, max_wait_ms=10)
    return Engine(bundle, src, cfg, publish_lsl=False, **kw)


def _send_in_thread(sender: Sender, raw, events, speed: float = 4.0,
                    chunk: int = 10) -> threading.Thread:
    data = raw.get_data()
    stamps = now() + 0.1 + np.arange(raw.n_times) / SFREQ
    t = threading.Thread(target=sender.send, args=(data, stamps, events),
                         kwargs={"speed": speed, "chunk": chunk}, daemon=True)
    t.start()
    return t


# ---- a lost marker stream ---------------------------------------------------------------------
def test_fault_marker_stream_lost_and_back_shows_in_health_and_status(tiny_bundle, capsys):
    """The marker outlet vanishes while data go on: decoding stops, and health, events and the
    status line say so; the same source_id returns: reconnected, counted, decoding resumes."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 4.0)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    label = bundle.template_ids[0]
    stop = threading.Event()
    engine.start()
    try:
        sender.wait_for_consumers()
        stream_until(sender, raw.get_data(), stop)
        time.sleep(1.0)  # the first epoch's pre-stimulus samples
        for _ in range(3):
            sender.marker(label, now())
            time.sleep(0.1)
        assert engine.wait_for(3, timeout=20), engine.status()
        assert engine.status()["markers_connected"] is True
        sender.marker_outlet = None  # the stimulus PC's marker outlet goes away
        assert wait_until(lambda: engine.status()["markers_connected"] is False, 10)
        lost = engine.status()
        print_engine_status(engine)
        line = capsys.readouterr().out
        sender.marker_outlet = make_outlet(f"{sender.name}-markers", "Markers", ["marker"], 0.0,
                                           sender.marker_sid, ["misc"], chunk_size=1,
                                           dtype="string")
        assert wait_until(lambda: engine.status()["markers_connected"] is True, 15)
        assert wait_until(sender.marker_outlet.have_consumers, 5)
        back = engine.status()
        for _ in range(3):
            sender.marker(label, now())
            time.sleep(0.1)
        assert engine.wait_for(6, timeout=20), engine.status()
    finally:
        stop.set()
        engine.stop()
    assert engine.error is None
    assert lost["connected"] is False and lost["data_connected"] is True
    assert lost["health"]["markers_connected"] is False
    assert "marker stream lost" in line and "NOT CONNECTED" not in line, line
    assert back["connected"] is True and back["health"]["marker_reconnects"] == 1
    events = " | ".join(engine.source.health.events)
    assert "marker stream lost" in events and "marker stream reconnected (#1)" in events, events


# ---- the CLI's results past a small subscription and a full history ------------------------------
def test_fault_cli_results_follow_past_a_full_result_history(tiny_bundle, capsys):
    """The engine keeps the newest ``results_maxlen``; the CLI's running accuracy and
    --verbose-results follow their own subscription, so they go on once that history is full
    and a reader that falls behind says how many results it did not score."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    events = raw_events(raw)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender, results_maxlen=5)
    acc = RunningAccuracy(bundle.template_ids)
    follow = engine.subscribe(maxlen=len(events))  # before the start, as the CLI does
    stalled = engine.subscribe(maxlen=5)  # a reader that never looks until the end
    dropped = 0
    engine.start()
    try:
        sender.wait_for_consumers()
        t = _send_in_thread(sender, raw, events)
        deadline = time.monotonic() + 30
        while (t.is_alive() or engine.n_decoded < len(events)) and time.monotonic() < deadline:
            dropped = follow_results(follow, acc, True, dropped)  # what the CLI loop does
            time.sleep(0.02)
    finally:
        engine.stop()
    dropped = follow_results(follow, acc, True, dropped)
    out = capsys.readouterr().out
    n = engine.n_decoded
    assert engine.error is None and n == len(events) > 3 * 5
    assert dropped == 0 and follow.dropped == 0
    assert [r.epoch_id for r in recent(engine)] == list(range(n - 5, n))  # the kept history
    printed = [int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("  epoch ")]
    assert printed == list(range(n)), printed  # every result once, in order, past the history
    assert "not scored" not in out
    assert acc.n_judged == n
    assert stalled.dropped == n - 5  # the stalled reader: the newest 5, the rest dropped
    assert follow_results(stalled, RunningAccuracy(bundle.template_ids)) == n - 5
    assert f"{n - 5} results not scored" in capsys.readouterr().out
    assert stalled.drain() == [] and follow_results(stalled, acc, reported=n - 5) == n - 5
    assert "not scored" not in capsys.readouterr().out  # said once


# ---- drops that nothing counted ----------------------------------------------------------------
def test_fault_viewer_queue_and_recorder_losses_are_in_health(tiny_bundle, tmp_path, capsys):
    """A stalled reader's subscription drops its oldest results and a full disk fails the
    recorder's writes: both counted in health (each result carries it) and named in the status
    line."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    events = raw_events(raw)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    viewer = engine.subscribe(maxlen=3)  # a viewer is attached ... and then never reads again
    rec = Recorder(tmp_path / "rec", raw.ch_names, raw.get_channel_types(), SFREQ)
    rec._files[RESULTS].close()
    rec._files[RESULTS] = open("/dev/full", "ab", buffering=0)  # noqa: SIM115 - the disk is full
    engine.recorder = rec
    engine.start()
    try:
        sender.wait_for_consumers()
        _send_in_thread(sender, raw, events, speed=6).join()
        assert engine.wait_for(len(events), timeout=20), engine.status()
        assert wait_until(lambda: rec.n_write_errors >= len(events), 5), rec.n_write_errors
        h = engine.status()["health"]
        print_engine_status(engine)
        line = capsys.readouterr().out
        last = recent(engine, 1)[0].health
    finally:
        engine.stop()
    n = engine.n_decoded
    assert h["viewer_dropped"] == n - 3 == viewer.dropped and len(viewer.drain()) == 3
    assert n <= h["recorder_write_errors"] <= rec.n_write_errors  # closing fails some more
    assert last["viewer_dropped"] == n - 4  # the result carries the count at its publication
    assert f"{n - 3} results dropped by the viewer" in line
    assert "recorder write errors" in line, line


def test_fault_marker_queue_overflow_is_counted(tiny_bundle, capsys):
    """Markers the engine did not read in time were discarded by a bounded deque, silently."""
    bundle_dir, data_dir = tiny_bundle
    raw = tiny_raw(data_dir, 1.0)
    sender = Sender(raw.ch_names, SFREQ)
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10))
    src.markers = MarkerQueue(maxlen=4)  # MAX_MARKERS, scaled down: the engine is stalled
    src.start()
    try:
        sender.wait_for_consumers()
        for i in range(10):
            sender.marker(f"m{i}", now())
        assert wait_until(lambda: src.health.n_markers_dropped == 6, 5), src.health
        kept = [m.value for m in src.pop_markers()]
        engine = Engine(load_bundle(bundle_dir), src, publish_lsl=False)
        h = engine.health_snapshot()
        print_engine_status(engine)
    finally:
        src.stop()
    assert kept == ["m6", "m7", "m8", "m9"]
    assert h["markers_dropped"] == 6
    assert "6 markers dropped" in capsys.readouterr().out


def test_fault_multi_channel_markers_keep_the_label_and_count_the_rest(tiny_bundle):
    """A two-channel string marker stream (image id + trial number): one marker per sample,
    its first non-empty channel; the other values used to vanish without a count."""
    bundle_dir, data_dir = tiny_bundle
    raw = tiny_raw(data_dir, 1.0)
    sender = Sender(raw.ch_names, SFREQ, markers=False)
    msid = uuid.uuid4().hex
    outlet = make_outlet(f"multi-{msid[:6]}", "Markers", ["image", "trial"], 0.0, msid,
                         ["misc", "misc"], chunk_size=1, dtype="string")
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=msid, timeout=10))
    src.start()
    try:
        assert wait_until(outlet.have_consumers, 10)
        for sample in (["img1", "trial 1"], ["img2", ""], ["", "img3"], ["img4", "7"]):
            outlet.push_sample(sample, now())
        assert wait_until(lambda: len(src.markers) == 4, 5)
        assert wait_until(lambda: src.health.n_ignored_marker_values == 2, 5), src.health
        values = [m.value for m in src.pop_markers()]
        h = Engine(load_bundle(bundle_dir), src, publish_lsl=False).health_snapshot()
    finally:
        src.stop()
    assert values == ["img1", "img2", "img3", "img4"]
    assert h["ignored_marker_values"] == 2 and h["bad_markers"] == 0


# ---- results in epoch order ------------------------------------------------------------------------
class _SlowHandOff(DropOldestQueue):
    """The ready queue, with the inference thread descheduled for 3 ms right after it takes an
    epoch (what a loaded machine does at any instruction): the epoch is then out of the queue
    but not yet counted as pending, the window in which an inline batch overtook it."""

    def get(self, block: bool = True, timeout: float | None = None):
        item = super().get(block, timeout)
        time.sleep(0.003)
        return item


def test_fault_results_are_published_in_epoch_order(tiny_bundle):
    """Sliding windows every 20 ms, chunks of 7 samples: some batches run inline on the
    processing thread, some queued on the inference thread. Results (and the repetition store)
    must follow epoch order; an inline batch used to overtake an epoch in the hand-off."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 5.0)
    sender = Sender(raw.ch_names, SFREQ, markers=False)
    cfg = RealtimeConfig(batch_size=4, max_wait_ms=10, sliding_hop_s=0.02)
    engine = _engine(bundle, sender, markers=False, cfg=cfg)
    engine._ready = _SlowHandOff(engine._ready.maxsize, on_drop=engine._ready_dropped)
    order: list[int] = []  # epoch ids in the order the decider saw them (repetition store)
    engine.start()
    build = engine.result_builder.build

    def recording_decide(batch):
        order.extend(ep.epoch_id for ep in batch)
        return build(batch)

    engine.result_builder.build = recording_decide
    try:
        sender.wait_for_consumers()
        _send_in_thread(sender, raw, (), speed=3, chunk=7).join()
        time.sleep(0.5)
    finally:
        engine.stop()
    assert engine.error is None
    results = recent(engine)
    ids = [r.epoch_id for r in results]
    onsets = [r.marker_timestamp for r in results]
    n_queued = len(ids) - engine.n_inline_batches  # >= the epochs the inference thread ran
    assert len(ids) > 150 and engine.n_inline_batches > 10 and n_queued > 10, (
        len(ids), engine.n_inline_batches)
    assert ids == sorted(ids) and len(set(ids)) == len(ids), [
        (a, b) for a, b in zip(ids, ids[1:]) if b <= a][:5]
    assert order == ids
    onsets = np.asarray(onsets)
    assert np.all(np.diff(onsets[np.isfinite(onsets)]) > 0)
    assert np.all(np.diff([r.last_sample_timestamp for r in results]) > 0)
