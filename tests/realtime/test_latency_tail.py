"""The tail breakdown of ``bench latency``: attribution on hand-built stage stamps and GC events
(never timing), the GC watcher, and the ``tail`` section of a real short run's JSON."""

import gc
import json
import math
import threading

import numpy as np

from neuralign.realtime.bench.gcwatch import GcEvent, GcWatch
from neuralign.realtime.bench.procs import PushRecord, pushes_path
from neuralign.realtime.bench.tail import (
    BOUNDARIES,
    SCHED_PARTS,
    SEGMENT_NAMES,
    EpochTimeline,
    format_tail,
    tail_breakdown,
)
from neuralign.realtime.threadsched import EpochSched, SchedSplit

#: a typical epoch, ms per segment (produce ... publish, deliver)
BASE = {"produce": 0.15, "pull": 0.15, "wakeup": 0.2, "filter": 0.1, "epoch_wait": 0.05, "epoch_cut": 0.1, "normalize": 0.1,
        "dispatch_wait": 0.05, "batch_wait": 0.05, "inference": 3.0, "publish": 0.2,
        "deliver": 0.4}


def _row(i: int, t0: float | None = None, **ms: float) -> EpochTimeline:
    """Epoch ``i`` at t0 (default i x 200 ms), segments from BASE overridden by ``ms``."""
    t = 0.2 * i if t0 is None else t0
    stages = {"sample": t}
    for name, nxt in zip(SEGMENT_NAMES, BOUNDARIES[1:]):
        t += 1e-3 * ms.get(name, BASE[name])
        stages[nxt] = t
    received = stages.pop("received")
    return EpochTimeline.from_stages(None, i, stages, received)


def _rows(n: int = 100, **spikes: dict[str, float]) -> list[EpochTimeline]:
    """n epochs with a little variation; spikes: {"i<k>": {segment: ms}} for epoch k."""
    rows = []
    for i in range(n):
        ms = {"inference": 3.0 + 0.01 * (i % 7), "wakeup": 0.2 + 0.01 * (i % 5),
              **spikes.get(f"i{i}", {})}
        rows.append(_row(i, **ms))
    return rows


def test_timeline_segments_follow_the_stage_stamps():
    r = _row(3, inference=7.0)
    seg = dict(zip(SEGMENT_NAMES, r.segments_ms()))
    assert math.isclose(seg["inference"], 7.0, abs_tol=1e-6)
    total = sum(v for k, v in BASE.items() if k not in ("inference", "deliver")) + 7.0
    assert math.isclose(r.metric_ms("engine_total"), total, abs_tol=1e-6)
    assert math.isclose(r.metric_ms("end_to_end"), total + BASE["deliver"], abs_tol=1e-6)
    missing = EpochTimeline.from_stages("s", 1, {"sample": 1.0, "published": 1.01})
    assert math.isnan(missing.metric_ms("end_to_end"))
    assert math.isclose(missing.metric_ms("engine_total"), 10.0)


def test_slowest_one_percent_is_selected():
    rows = _rows(300, i10={"inference": 9.0}, i20={"inference": 8.0}, i30={"inference": 7.0},
                 i40={"inference": 6.5})
    rep = tail_breakdown(rows, [], "engine_total", 0.01)
    assert rep.n_epochs == 300 and rep.n_tail == 3
    assert [e.epoch_id for e in rep.epochs] == [10, 20, 30]
    assert math.isclose(rep.threshold_ms, rep.epochs[-1].metric_ms)
    assert rep.threshold_ms > rows[40].metric_ms("engine_total")
    # fewer than 100 epochs: still the slowest one
    assert tail_breakdown(rows[:50], [], "engine_total", 0.01).n_tail == 1


def test_inference_spike_is_attributed_to_inference():
    rep = tail_breakdown(_rows(100, i42={"inference": 25.0}), [], "engine_total", 0.01)
    (e,) = rep.epochs
    assert e.epoch_id == 42 and e.cause == "inference"
    assert e.largest == "inference" and e.largest_share > 0.8
    assert e.top_excess == "inference"
    s = e.segments["inference"]
    assert math.isclose(s.excess_ms, s.ms - s.median_ms) and s.excess_ms > 20
    assert e.gc == [] and e.gc_ms == 0 and rep.causes == {"inference": 1.0}


def test_a_late_push_is_the_producers_and_a_late_pull_the_transports():
    rep = tail_breakdown(_rows(200, i7={"produce": 4.0}, i9={"pull": 3.0}), [],
                         "engine_total", 0.01)
    assert {e.epoch_id: e.cause for e in rep.epochs} == {7: "wait:produce", 9: "wait:pull"}
    # no push time (a producer that does not record it): its time stays in pull
    r = EpochTimeline.from_stages(None, 0, {"sample": 1.0, "pulled": 1.002, "published": 1.003})
    seg = dict(zip(SEGMENT_NAMES, r.segments_ms()))
    assert seg["produce"] == 0 and math.isclose(seg["pull"], 2.0, abs_tol=1e-9)


def test_push_times_are_looked_up_by_sample_index(tmp_path):
    out = tmp_path / "producer.json"
    # chunks of 4 samples: last indices 3, 7, 11 pushed at 10, 20, 30 s
    PushRecord(np.array([3, 7, 11]), np.array([10.0, 20.0, 30.0])).save(pushes_path(out))
    got = PushRecord.load(pushes_path(out)).times(np.array([0, 3, 4, 11, 12, -1]))
    assert got[:4].tolist() == [10.0, 10.0, 20.0, 30.0]
    assert np.isnan(got[4]) and np.isnan(got[5])  # never pushed / unknown index
    assert PushRecord.load(tmp_path / "none.npz") is None  # no record: no push times


def test_gc_pause_inside_an_epoch_is_attributed_to_it_and_its_segment():
    rows = _rows(100, i57={"inference": 9.0})
    r = rows[57]
    b0, b1 = r.at("batch_start"), r.at("inferred")
    pause = GcEvent(b0 + 1e-3, b0 + 6e-3, 2, "neuralign-infer", 10)  # 5 ms inside inference
    elsewhere = GcEvent(rows[10].at("sample") + 1e-4, rows[10].at("sample") + 2e-4, 0,
                        "neuralign-process", 1)
    rep = tail_breakdown(rows, [pause, elsewhere], "engine_total", 0.01)
    (e,) = rep.epochs
    assert e.epoch_id == 57 and e.cause == "gc"
    (hit,) = e.gc  # the other pause lies in another epoch
    assert hit.segment == "inference" and hit.generation == 2
    assert hit.thread == "neuralign-infer"
    assert math.isclose(hit.overlap_ms, 5.0, abs_tol=1e-6)
    assert math.isclose(hit.start_ms, 1e3 * (pause.start - r.at("sample")), abs_tol=1e-6)
    # the 6 ms over the median: 5 of them the pause, the rest left to inference
    assert math.isclose(e.explained_ms["inference"], e.segments["inference"].excess_ms - 5.0,
                        abs_tol=1e-6)
    assert b1 > pause.stop


def test_gc_pause_in_a_waiting_segment_names_that_segment():
    rows = _rows(100, i5={"wakeup": 6.0})
    r = rows[5]
    pause = GcEvent(r.at("sample") + 1e-3, r.at("sample") + 5e-3, 1, "lsl-acq", 3)
    (e,) = tail_breakdown(rows, [pause], "engine_total", 0.01).epochs
    assert e.cause == "gc" and e.gc[0].segment == "wakeup"


def test_waiting_on_another_batch_is_busy_and_an_unexplained_wait_says_so():
    # epoch 1's sample arrives while epoch 0's batch is still running (its inference: 20 ms);
    # epoch 1 waits 15 ms for the processing thread, all of it inside that batch
    slow = _row(0, t0=10.0, inference=20.0)
    waiting = _row(1, t0=slow.at("batch_start") + 1e-3, wakeup=15.0)
    rows = [slow, waiting] + [_row(i) for i in range(2, 100)]
    rep = tail_breakdown(rows, [], "engine_total", 0.02)
    by_id = {e.epoch_id: e for e in rep.epochs}
    assert by_id[0].cause == "inference"
    assert by_id[1].cause == "busy" and by_id[1].busy_ms > 14
    # the same wait with nothing running meanwhile: unexplained, named by its segment
    rows = [_row(i, wakeup=15.0 if i == 7 else 0.2) for i in range(100)]
    (e,) = tail_breakdown(rows, [], "engine_total", 0.01).epochs
    assert e.epoch_id == 7 and e.cause == "wait:wakeup" and e.busy_ms == 0


def test_end_to_end_tail_includes_delivery():
    rows = _rows(100, i3={"deliver": 30.0})
    eng = tail_breakdown(rows, [], "engine_total", 0.01)
    e2e = tail_breakdown(rows, [], "end_to_end", 0.01)
    assert eng.epochs[0].epoch_id != 3 and "deliver" not in eng.segment_median_ms
    (e,) = e2e.epochs
    assert e.epoch_id == 3 and e.cause == "wait:deliver" and e.largest == "deliver"
    assert e.end_to_end_ms is not None and e.end_to_end_ms > e.engine_total_ms + 25


def _with_sched(row: EpochTimeline, cpu: float = 1.0, runq: float = 0.0, off: float = 0.0,
                pull_runq: float = 0.01, consumer_runq: float = 0.2) -> EpochTimeline:
    wall = cpu + runq + off
    sched = EpochSched(SchedSplit(1.0, 0.2, pull_runq, 0.8), SchedSplit(wall, cpu, runq, off))
    return EpochTimeline(row.stream, row.epoch_id, row.t, sched, consumer_runq)


def test_scheduling_names_a_slow_cpu_a_wait_for_one_and_a_blocked_thread():
    """Each tail epoch's scheduling cause is the part of its thread's time furthest above that
    part's median: the same work taking longer on a CPU, a run-queue wait (the scheduler), or
    neither running nor runnable (GIL, a lock, a stolen virtual CPU)."""
    rows = _rows(300, i5={"inference": 6.0}, i6={"wakeup": 3.0}, i7={"filter": 3.0},
                 i8={"deliver": 4.0})
    rows = [_with_sched(r, **({5: {"cpu": 4.0}, 6: {"runq": 2.8}, 7: {"off": 2.9},
                               8: {"consumer_runq": 3.5}}.get(r.epoch_id, {})))
            for r in rows]
    rep = tail_breakdown(rows, [], "engine_total", fraction=0.01)
    got = {e.epoch_id: e.sched_cause for e in rep.epochs}
    assert got == {5: "cpu", 6: "runq", 7: "off"}
    assert math.isclose(rep.sched_median_ms["cpu"], 1.0) and "consumer_runq" not in \
        rep.sched_median_ms
    e2e = tail_breakdown(rows, [], "end_to_end", fraction=0.01)
    assert {e.epoch_id: e.sched_cause for e in e2e.epochs}[8] == "consumer_runq"
    assert math.isclose(sum(e2e.sched_causes.values()), 1.0)
    # not probed: no scheduling cause, no medians
    plain = tail_breakdown(_rows(100, i3={"inference": 9.0}), [], "engine_total")
    assert plain.epochs[0].sched_cause == "none" and plain.sched_median_ms == {}
    assert math.isnan(plain.epochs[0].sched_ms["cpu"])


def test_gcwatch_records_collections_with_thread_and_generation():
    got: list[GcEvent] = []

    def collect_in_thread():
        gc.collect(1)

    with GcWatch() as w:
        gc.collect(2)
        t = threading.Thread(target=collect_in_thread, name="tail-test-thread")
        t.start()
        t.join()
        got = w.events()
    gen2 = [e for e in got if e.generation == 2]
    assert gen2 and gen2[0].thread == threading.current_thread().name
    assert any(e.generation == 1 and e.thread == "tail-test-thread" for e in got)
    assert all(e.stop >= e.start and e.duration_ms >= 0 for e in got)
    assert w.n_seen >= 2
    n = len(w.events())
    gc.collect()
    assert len(w.events()) == n  # uninstalled on exit


def test_bench_latency_writes_the_tail_section(bench_latency_run):
    rc, out, _ = bench_latency_run  # the run: tests/realtime/conftest.py (shared)
    assert rc == 0
    tail = json.loads(out.read_text())["tail"]
    assert tail["fraction"] == 0.01
    assert set(tail["segments"]) == set(SEGMENT_NAMES)
    assert set(tail["sched_parts"]) == set(SCHED_PARTS)
    # the kernel's per-thread accounting: the awaited pulls' wake-ups (two streams: the
    # processing thread publishes, so the pass itself is not split) and the consumer's
    assert "pull_runq" in tail["by_engine_total"]["sched_median_ms"]
    assert "consumer_runq" in tail["by_end_to_end"]["sched_median_ms"]
    for key in ("by_engine_total", "by_end_to_end"):
        assert all(e["sched_cause"] in {*SCHED_PARTS, "none"} for e in tail[key]["epochs"])
    for key in ("by_engine_total", "by_end_to_end"):
        t = tail[key]
        assert t["n_epochs"] > 0 and 1 <= t["n_tail"] == len(t["epochs"])
        assert math.isclose(sum(t["causes"].values()), 1.0)
        for e in t["epochs"]:
            assert e["metric_ms"] >= t["threshold_ms"] >= t["median_ms"] > 0
            assert e["largest"] in SEGMENT_NAMES and e["top_excess"] in SEGMENT_NAMES
            assert 0 < e["largest_share"] <= 1
            assert e["cause"] in t["causes"]
            for s in e["segments"].values():
                assert set(s) == {"ms", "median_ms", "excess_ms"}
            for h in e["gc"]:
                assert h["segment"] in SEGMENT_NAMES and h["thread"]
    assert "deliver" in tail["by_end_to_end"]["segment_median_ms"]
    # the producer's push times are known here: its lateness is a segment of its own
    res = json.loads(out.read_text())
    assert res["producer_late_at_epoch_ends_ms"]["n"] > 0
    assert tail["by_engine_total"]["segment_median_ms"]["produce"] != 0
    g = tail["gc"]
    for key in ("n", "total_ms", "max_ms", "p99_ms", "by_generation", "by_thread",
                "share_of_epochs_overlapped"):
        assert key in g
    lines = format_tail(tail)
    assert lines and lines[0].startswith("tail: slowest 1% by engine_total")
