"""``neuralign bench latency`` end to end for a few seconds: producer, engine, naive baseline and
consumer processes over real LSL. Checks the report's fields and their sanity, never speed."""

import json
import math


def _finite_summary(s):
    assert s and s["n"] > 0
    assert all(math.isfinite(s[k]) for k in ("p50", "p95", "p99", "max"))
    assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]


def test_bench_latency_json_has_every_field(bench_latency_run):
    rc, out, png = bench_latency_run  # the run itself: tests/realtime/conftest.py
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("definition", "config", "machine", "versions", "pipelines", "floor",
                "ratio_naive_over_neuralign", "tail"):
        assert key in res, key
    assert res["config"]["streams"] == 2 and res["config"]["chunk_size"] == 2
    assert res["config"]["stamps"] == "push"
    assert res["config"]["realtime"]["scheduling"]["priority"] == "high"
    assert res["config"]["naive_priority"] == "same"  # the baseline at the engine's privilege
    threads = res["config"]["threads"]  # what the OS accepted for each engine thread
    for name in ("neuralign-process", "neuralign-infer"):
        assert threads[name] == "nice -10" or "refused" in threads[name], threads
    assert res["config"]["decoder"]["cuda_graph"] is False  # CPU here
    # whether an image generator shared the engine's CPU is part of the setting
    assert res["config"]["generator"] == {"on": False, "why_off": "no generator"}
    assert res["versions"]["torch"] and res["machine"]["cpu_count"] >= 1
    assert len(res["machine"]["load_average"]) == 3
    steal = res["machine"]["steal_fraction"]  # None off Linux
    assert steal is None or 0 <= steal < 1
    neur, naive = res["pipelines"]["neuralign"], res["pipelines"]["naive"]
    for p in (neur, naive):
        _finite_summary(p["end_to_end_ms"])
        assert p["n_decoded"] > 0 and p["n_counted"] > 0
        assert 0 <= p["cpu_fraction_of_one_core"] < 4
    for stage in ("acquire", "filter", "epoch", "normalize", "wait_in_batch", "inference",
                  "publish", "engine_total"):
        _finite_summary(neur["stages_ms"][stage])
    assert neur["n_decoded"] >= 2 * naive["n_decoded"] - 2  # two streams vs one
    assert set(neur["per_stream_p99_ms"]) and len(neur["per_stream_p99_ms"]) == 2
    assert neur["dropped_samples"] == 0 and neur["lost_in_engine"] == 0
    assert neur["received_samples"] == neur["sent_samples"]
    assert neur["rss_mb"]["end"] > 0 and neur["rss_mb"]["anon_end"] > 0
    assert neur["batches_run_by_processing_thread"] >= 0
    _finite_summary(res["floor"]["transport_ms"])
    for k in ("folded", "as_built"):
        _finite_summary(res["floor"]["forward_ms"][k])
    assert all(math.isfinite(v) and v > 0 for v in res["ratio_naive_over_neuralign"].values())
    assert png.stat().st_size > 1000


def test_latency_by_minute_leaves_out_the_incomplete_last_minute():
    from neuralign.realtime.bench.run import _per_minute

    rows = [(t, 1.0 + (t >= 60)) for t in range(0, 150)]  # 2.5 minutes, slower from minute 2
    mins = _per_minute(rows)
    assert [m["minute"] for m in mins] == [1, 2]
    assert mins[0]["n"] == 60 and mins[0]["p99"] == 1.0 and mins[1]["p99"] == 2.0
    assert _per_minute([]) == []


def test_drift_compares_the_first_and_last_third_of_a_long_run():
    from neuralign.realtime.bench.run import _drift

    steady = [(0.2 * i, 2.0 + (i % 100 == 0)) for i in range(3000)]  # 600 s, 1 % at 3 ms
    d = _drift(steady)
    assert d["n_first"] == d["n_last"] == 1000
    assert math.isclose(d["last_over_first"], 1.0)
    slower = [(t, v + (t >= 400.0)) for t, v in steady]  # the last third 1 ms slower
    assert math.isclose(_drift(slower)["last_over_first"],
                        (d["last_third_p99"] + 1.0) / d["first_third_p99"])
    assert _drift(steady[:500]) == {}  # 100 s: too short to say
    assert _drift([]) == {}


def test_steal_is_the_share_of_cpu_time_the_hypervisor_took():
    from neuralign.realtime.bench.run import cpu_jiffies, steal_between

    assert math.isclose(steal_between((10, 1000), (15, 2000)), 0.005)
    assert steal_between(None, (15, 2000)) is None
    assert steal_between((10, 1000), (10, 1000)) is None  # no time passed
    now = cpu_jiffies()
    if now is not None:  # Linux
        steal, total = now
        assert 0 <= steal <= total and total > 0
