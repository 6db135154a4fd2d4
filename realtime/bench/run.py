"""``neuralign bench latency``: the engine against the pipeline a user would write instead, and
against the machine's floor, on the same LSL streams in the same run.

Processes (each its own interpreter, so CPU use and GIL are not shared): a producer pushes a
recording (or, in MUA mode, 1024 channels of noise) through real LSL at real time with honest
stamps and a marker stream per data stream; THIS process runs only the engine; a naive baseline
process (mne-lsl ``StreamLSL`` + ``filter()`` + 5 ms polling + ``get_data()`` + the model per
epoch) decodes the first stream; a consumer process reads both result streams and another the
first data stream, with plain blocking pylsl pulls. End-to-end latency (docs/design.md) =
consumer receive time - LSL stamp of the last input sample the epoch needed; the first
``warmup_s`` are not counted. The floor: the raw transport (the data reader's receive time -
stamp of the data stream's samples, no processing) and the model's forward time.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import platform
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.bundle import Bundle, load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime import scheduling
from neuralign.realtime.bench.gcwatch import GcWatch
from neuralign.realtime.bench.procs import (
    ConsumerSpec,
    NaiveSpec,
    ProducerSpec,
    PushRecord,
    StreamIds,
    pushes_path,
    run_consumer,
    run_naive,
    run_producer,
)
from neuralign.realtime.bench.tail import EpochTimeline, format_tail, tail_section
from neuralign.realtime.decisions import Result, RunningAccuracy
from neuralign.realtime.latency import STAGES, summarize
from neuralign.realtime.subscriptions import MAX_RESULTS, Subscription

log = logging.getLogger(__name__)

#: epochs whose raw stage stamps the engine keeps for the tail breakdown (about 1 KB each)
MAX_TAIL_ROWS = 20000

DEFINITION = ("end-to-end = consumer receive time (local LSL clock) - LSL timestamp of the last "
              "input sample the epoch needed")


@dataclass
class BenchConfig:
    """One benchmark run (the CLI's options)."""

    bundle_dir: Path
    raw_path: Path | None = None  # None: synthetic noise with markers every soa_s
    duration_s: float = 60.0
    streams: int = 1
    chunk_size: int = 1
    warmup_s: float = 3.0
    baseline: bool = True  # run the naive mne-lsl pipeline on stream 0 in the same run
    soa_s: float = 0.2  # synthetic mode only (a recording brings its own markers)
    n_channels: int = 0  # synthetic mode: channels of the noise stream (0: the bundle's)
    realtime: RealtimeConfig | None = None
    device: str = "auto"
    tail_fraction: float = 0.01  # the slowest share of epochs the tail breakdown explains
    stamps: str = "nominal"  # the producer's stamps: 'nominal' (t0 + k/sfreq) or 'push'
    # the naive pipeline's threads: 'normal' (what one writes), or 'same' as the engine's
    naive_priority: str = "normal"


def cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) time of all CPUs since boot, from Linux's /proc/stat (None elsewhere).
    Steal is the time a virtual machine's CPUs were ready but the hypervisor ran another
    guest: no thread priority helps against it, and stalls of a few ms land in the tail."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal (guest times are inside user and nice)
    return values[7], sum(values[:8])


def steal_between(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen between two :func:`cpu_jiffies` readings."""
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (load averages included: this machine is shared)."""
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else ""
    except OSError:
        pass
    info["load_average"] = list(os.getloadavg())
    info["torch_threads"] = torch.get_num_threads()
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("neuralign", "torch", "numpy", "scipy", "pylsl", "mne", "mne-lsl"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def forward_floor(bundle: Bundle, device: str = "cpu", n: int = 200) -> dict[str, Any]:
    """The model's own forward time at batch 1 (ms), folded (what the engine runs) and as built
    (what the naive pipeline runs), on the engine's thread count."""
    import torch

    from neuralign.models.folding import fold_for_inference

    m = bundle.manifest.model
    x = torch.randn(1, m.n_chans, m.n_times, device=device)
    out = {}
    for name, model in (("as_built", bundle.build_model().eval()),
                        ("folded", fold_for_inference(bundle.build_model().eval()))):
        model = model.to(device)
        ts = []
        with torch.inference_mode():
            for i in range(n + 10):
                t = time.perf_counter()
                model.encode_brain(x)
                if device != "cpu":
                    torch.cuda.synchronize()
                if i >= 10:
                    ts.append(1e3 * (time.perf_counter() - t))
        out[name] = summarize(ts)
    out["threads"] = torch.get_num_threads()
    return out


class _Proc:
    """A spawned helper process with its readiness and stop events."""

    def __init__(self, ctx, target, spec, name: str, with_go: Any = None):
        self.ready, self.stop = ctx.Event(), ctx.Event()
        args = (spec, self.ready, with_go, self.stop) if with_go is not None else (
            spec, self.ready, self.stop)
        self.proc = ctx.Process(target=target, args=args, name=name, daemon=True)
        self.name = name
        self.proc.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"bench: the {self.name} process did not start "
                                   f"(exit code {self.proc.exitcode})")

    def finish(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


def _cpu_seconds(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


@dataclass
class _Measured:
    """What one run measured while the streams flowed (before the engine stopped)."""

    cpu: dict[str, float]  # fraction of one core per process, "engine" this one
    rss: list[tuple[float, float, float]]  # (s since go, RSS MB, anonymous MB) every second
    status: dict
    steal: float | None = None  # share of the CPUs' time the hypervisor gave other guests


@dataclass
class _BenchRun:
    """The helper processes and the engine of one run, so every step can fail and
    :meth:`shutdown` still stops them in order (readers, engine, then the producer)."""

    ctx: Any
    work: Path
    go: Any
    procs: list[_Proc] = field(default_factory=list)
    engine: Any = None
    gc_watch: GcWatch = field(default_factory=GcWatch)
    results: Subscription | None = None  # the engine's, opened before it started
    decoded: deque[Result] = field(default_factory=lambda: deque(maxlen=MAX_RESULTS))

    def start_producer(self, spec: ProducerSpec) -> _Proc:
        producer = _Proc(self.ctx, run_producer, spec, "producer", with_go=self.go)
        self.procs.append(producer)
        producer.wait_ready(120)
        return producer

    def start_engine(self, cfg: BenchConfig, rt: RealtimeConfig, bundle: Bundle,
                     ids: list[StreamIds], engine_sid: str) -> None:
        from neuralign.realtime.engine import Engine
        from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource

        sources = [LSLSource(source_id=s.source_id, timeout=20, buffer_seconds=rt.buffer_seconds,
                             markers=LSLMarkerInlet(source_id=s.marker_source_id, timeout=20))
                   for s in ids]
        self.engine = Engine(bundle, sources, rt, result_source_id=engine_sid, device=cfg.device)
        self.engine.stats.keep_stamps(MAX_TAIL_ROWS)  # for the tail breakdown
        self.engine.probe_scheduling()  # and where its threads' time went
        self.results = self.engine.subscribe(maxlen=MAX_RESULTS)  # every result from the start
        self.gc_watch.install()
        self.engine.start()

    def _naive_priority(self, cfg: BenchConfig) -> str:
        """The naive pipeline's priority level: normal, or what the engine's threads asked (the
        engine is started first)."""
        return "normal" if cfg.naive_priority == "normal" else self.engine.scheduling.priority

    def start_readers(self, cfg: BenchConfig, ids: list[StreamIds], engine_sid: str,
                      naive_sid: str) -> None:
        """The naive baseline (unless ``cfg.baseline`` is off), the results' reader and the
        transport floor's."""
        results = {"neuralign": engine_sid}
        if cfg.baseline:
            naive = _Proc(self.ctx, run_naive,
                          NaiveSpec(cfg.bundle_dir, ids[0], naive_sid,
                                    priority=self._naive_priority(cfg)), "naive")
            self.procs.append(naive)
            naive.wait_ready(120)
            results["naive"] = naive_sid
        # results and the transport floor in two processes: pulling the 1 kHz data stream in
        # the results' process held its GIL when a result landed (the reader then waited up to
        # the 5 ms switch interval: most of the slowest 5 % end to end, for both pipelines)
        readers = [_Proc(self.ctx, run_consumer,
                         ConsumerSpec(results, None, self.work / "consumer.json"), "consumer"),
                   _Proc(self.ctx, run_consumer,
                         ConsumerSpec({}, ids[0].source_id, self.work / "floor.json"), "floor")]
        for proc in readers:
            self.procs.append(proc)
            proc.wait_ready(60)

    def collect(self) -> None:
        """Keep the engine's newest MAX_RESULTS results (read as they come: none dropped)."""
        if self.results is not None:
            self.decoded.extend(self.results.drain())

    def shutdown(self) -> None:
        self.gc_watch.uninstall()
        for p in reversed(self.procs):
            if p.name != "producer":
                p.finish()
        if self.engine is not None:
            self.engine.stop()
        self.collect()  # what the engine flushed while stopping
        for p in self.procs:
            if p.name == "producer":
                p.finish()


def _measure(run: _BenchRun, cfg: BenchConfig, bundle: Bundle, producer: _Proc) -> _Measured:
    """Let the producer go and follow the run to its end: CPU of every process, this process's
    memory every second, the engine's results; then stop the consumer."""
    import psutil

    engine = run.engine
    me = psutil.Process()
    cpu0 = {p.name: _cpu_seconds(p.proc.pid) for p in run.procs}
    cpu0["engine"] = _cpu_seconds(me.pid)
    wall0 = time.monotonic()
    jiffies0 = cpu_jiffies()
    run.go.set()
    rss: list[tuple[float, float, float]] = []
    tail = bundle.manifest.epoch.tmax + 1.0
    while not producer.stop.is_set():
        time.sleep(1.0)
        run.collect()
        mi = me.memory_info()  # anonymous = rss - file-backed (shared) pages, which the
        # kernel may drop under memory pressure: the part that shows a leak
        rss.append((time.monotonic() - wall0, mi.rss / 2**20, (mi.rss - mi.shared) / 2**20))
        if engine.error is not None:
            raise RuntimeError(f"engine failed: {engine.error!r}")
        if (run.work / "producer.json").exists():
            time.sleep(tail)
            break
        if time.monotonic() - wall0 > cfg.duration_s + 120:
            raise RuntimeError("bench: the producer did not finish")
    wall = time.monotonic() - wall0
    steal = steal_between(jiffies0, cpu_jiffies())
    cpu = {p.name: (_cpu_seconds(p.proc.pid) - cpu0[p.name]) / wall for p in run.procs}
    cpu["engine"] = (_cpu_seconds(me.pid) - cpu0["engine"]) / wall
    for p in run.procs:
        if p.name in ("consumer", "floor"):
            p.finish()
    return _Measured(cpu, rss, engine.status(), steal)


def _producer_spec(cfg: BenchConfig, bundle: Bundle, ids: list[StreamIds],
                   work: Path) -> ProducerSpec:
    return ProducerSpec(ids, cfg.duration_s, cfg.chunk_size, work / "producer.json",
                        raw_path=cfg.raw_path, soa_s=cfg.soa_s, sfreq=1000.0,
                        n_channels=cfg.n_channels or len(bundle.ch_names),
                        labels=bundle.template_ids, ch_names=bundle.ch_names,
                        ch_type=(bundle.manifest.channels.types or ["eeg"])[0],
                        stamps=cfg.stamps)


def latency_benchmark(cfg: BenchConfig, json_out: Path | None = None,
                      plot_out: Path | None = None) -> dict[str, Any]:
    """Run one benchmark; returns (and optionally writes) the report dict."""
    rt = cfg.realtime or RealtimeConfig(chunk_size=cfg.chunk_size)
    bundle = load_bundle(cfg.bundle_dir)
    machine = machine_info()
    ctx = mp.get_context("spawn")
    tag = uuid.uuid4().hex[:8]
    ids = [StreamIds(f"bench{i}-{tag}", f"bench{i}-{tag}-{uuid.uuid4().hex}",
                     f"bench{i}-{tag}-markers-{uuid.uuid4().hex}") for i in range(cfg.streams)]
    engine_sid, naive_sid = f"bench-engine-{uuid.uuid4().hex}", f"bench-naive-{uuid.uuid4().hex}"
    work = Path(tempfile.mkdtemp(prefix="neuralign-bench-"))
    pspec = _producer_spec(cfg, bundle, ids, work)
    run = _BenchRun(ctx, work, ctx.Event())
    try:
        producer = run.start_producer(pspec)
        run.start_engine(cfg, rt, bundle, ids, engine_sid)
        run.start_readers(cfg, ids, engine_sid, naive_sid)
        measured = _measure(run, cfg, bundle, producer)
    finally:
        run.shutdown()
    return _write_report(cfg, rt, bundle, run, measured, machine, json_out, plot_out)


def _write_report(cfg: BenchConfig, rt: RealtimeConfig, bundle: Bundle, run: _BenchRun,
                  measured: _Measured, machine: dict, json_out: Path | None,
                  plot_out: Path | None) -> dict[str, Any]:
    """The report from the processes' JSON files and what this process measured."""
    engine, decoded = run.engine, list(run.decoded)
    prod = json.loads((run.work / "producer.json").read_text())
    cons = json.loads((run.work / "consumer.json").read_text())
    cons["transport"] = json.loads((run.work / "floor.json").read_text())["transport"]
    res = _report(cfg, rt, bundle, engine, decoded, measured.status, prod, cons, measured.cpu,
                  measured.rss, machine)
    pushes = PushRecord.load(pushes_path(run.work / "producer.json"))  # read once
    t_count = prod["t0"] + cfg.warmup_s
    res["tail"] = _tail(engine, decoded, cons, run.gc_watch, t_count, cfg.tail_fraction, pushes)
    res["producer_late_at_epoch_ends_ms"] = _late_at_epoch_ends(engine, prod, pushes, t_count)
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["machine"]["steal_fraction"] = measured.steal
    res["floor"]["forward_ms"] = forward_floor(bundle, "cuda" if engine.decoder.device.type ==
                                               "cuda" else "cpu")
    if plot_out is not None:
        plot_report(res, Path(plot_out))
    res.pop("_samples")  # raw per-epoch values: for the plot only, too large for the JSON
    if json_out is not None:
        Path(json_out).write_text(json.dumps(res, indent=1))
    return res


def sweep(cfg: BenchConfig, deadline_ms: float = 50.0,
          counts: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 24, 32)) -> dict[str, Any]:
    """How many streams one engine holds: run ``counts`` in turn (no baseline) until the p99
    end to end passes ``deadline_ms`` or a sample or epoch is lost."""
    from dataclasses import replace

    rows = []
    for n in counts:
        r = latency_benchmark(replace(cfg, streams=n, baseline=False))
        p = r["pipelines"]["neuralign"]
        e2e = p["end_to_end_ms"]
        ok = (bool(e2e) and e2e["p99"] < deadline_ms and p["dropped_samples"] == 0
              and p["lost_in_engine"] == 0 and p["n_counted"] >= p["n_expected_after_warmup"])
        rows.append({"streams": n, "ok": ok, "end_to_end_ms": e2e,
                     "n_counted": p["n_counted"],
                     "n_expected_after_warmup": p["n_expected_after_warmup"],
                     "dropped_samples": p["dropped_samples"], "lost_in_engine": p["lost_in_engine"],
                     "engine_cpu": p["cpu_fraction_of_one_core"],
                     "producer_cpu": r.get("producer_cpu_fraction_of_one_core"),
                     "generator": r["config"]["generator"],
                     "load_average": r["machine"]["load_average"]})
        log.info("sweep: %d streams: p99 %.1f ms (%s)", n, e2e.get("p99", float("nan")),
                 "ok" if ok else "over")
        if not ok:
            break
    held = [row["streams"] for row in rows if row["ok"]]
    return {"deadline_ms": deadline_ms, "duration_s": cfg.duration_s, "rows": rows,
            "max_streams": max(held) if held else 0, "machine": machine_info(),
            "versions": versions()}


def _timelines(engine, decoded: list[Result], cons: dict,
               pushes: PushRecord | None = None) -> list[EpochTimeline]:
    """Every result read from the engine (``decoded``, the newest kept) with its raw stage
    stamps, when the producer's push of its last sample returned (``pushes``: the producer's
    record; the engine's source indices count from the producer's first sample) and the
    consumer's receive time.

    ``LatencyStats.add`` and the engine's publication see the epochs in the same order (one loop
    in ``_run_batch``), so both are matched from their newest end; a pair whose last-sample
    stamps differ is skipped rather than misattributed."""
    received: dict[tuple[str | None, int], tuple[float, float]] = {}
    for text, recv, runq_ms in cons["results"].get("neuralign", []):
        r = Result.from_json(text)
        received[(r.stream, r.epoch_id)] = (recv, runq_ms)
    results, stamps = decoded, engine.stats.stamps()
    n = min(len(results), len(stamps))
    results, stamps = results[len(results) - n:], stamps[len(stamps) - n:]
    index = np.array([-1 if k.last_input_index is None else k.last_input_index for k in stamps],
                     dtype=np.int64)
    pushed = pushes.times(index) if pushes is not None else np.full(n, np.nan)
    rows = []
    for r, st, t_push in zip(results, stamps, pushed):
        if st.stages.get("sample") != r.last_sample_timestamp:
            continue
        recv, runq_ms = received.get((r.stream, r.epoch_id), (None, math.nan))
        rows.append(EpochTimeline.from_stages(r.stream, r.epoch_id,
                                              {**st.stages, "pushed": float(t_push)},
                                              recv, st.sched, runq_ms))
    return rows


def _tail(engine, decoded: list[Result], cons: dict, gc_watch: GcWatch, t_count: float,
          fraction: float, pushes: PushRecord | None = None) -> dict[str, Any]:
    """The report's ``tail`` section: the slowest ``fraction`` of counted epochs, and why."""
    every = _timelines(engine, decoded, cons, pushes)
    counted = [r for r in every if r.at("sample") >= t_count]
    return tail_section(counted, gc_watch.events(), gc_watch.n_seen, t_count, busy_rows=every,
                        fraction=fraction)


def _late_at_epoch_ends(engine, prod: dict, pushes: PushRecord | None,
                        t_count: float) -> dict[str, float]:
    """How late the producer pushed the samples epochs waited for (their last ones), against
    when they were due: compare with its lateness over every push (``producer_late_ms``). Larger
    here means something - the engine included - takes the producer's core at those moments."""
    kept = [k for k in engine.stats.stamps() if k.last_input_index is not None
            and k.stages.get("sample", -math.inf) >= t_count]
    if not kept or pushes is None:
        return {}
    index = np.array([k.last_input_index for k in kept], dtype=np.int64)
    late = pushes.times(index) - (prod["t0"] + index / prod["sfreq"])
    late = 1e3 * late[np.isfinite(late)]
    if not late.size:
        return {}
    return {"n": int(late.size), "p50": float(np.percentile(late, 50)),
            "p99": float(np.percentile(late, 99)), "max": float(late.max())}


def _report(cfg: BenchConfig, rt: RealtimeConfig, bundle: Bundle, engine, decoded: list[Result],
            status: dict, prod: dict, cons: dict, cpu: dict, rss: list,
            machine: dict) -> dict[str, Any]:
    """The bench's JSON: each pipeline's end-to-end figures, the engine's stages, counts and
    memory, the configuration and the transport floor; ``_samples`` keeps the raw values."""
    t_count = prod["t0"] + cfg.warmup_s
    counted = [r for r in decoded if r.last_sample_timestamp >= t_count]
    stage_rows = {name: [r.stages_ms[name] for r in counted if name in r.stages_ms]
                  for name in STAGES}
    pipelines: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    for label, got in cons["results"].items():
        pipelines[label], samples[label] = _pipeline_entry(cfg, bundle, label, got, prod, cpu)
    neur = pipelines["neuralign"]
    neur["stages_ms"] = {k: summarize(v) for k, v in stage_rows.items() if v}
    neur.update(_engine_counts(cfg, engine, status, prod))
    if cfg.streams > 1:  # end to end per stream, from the consumer's receipts
        per: dict[str, list[float]] = {}
        for text, recv, _ in cons["results"]["neuralign"]:
            r = Result.from_json(text)
            if r.last_sample_timestamp >= t_count:
                per.setdefault(r.stream or "", []).append(1e3 * (recv - r.last_sample_timestamp))
        neur["per_stream_p99_ms"] = {k: summarize(v)["p99"] for k, v in sorted(per.items())}
    neur["rss_mb"] = _rss_summary(cfg, rss)
    # the engine's own time over the run: a drift of the end to end that this does not show is
    # the machine's or the other processes', not the engine's
    own = [(r.last_sample_timestamp - t_count, r.stages_ms["engine_total"]) for r in counted
           if "engine_total" in r.stages_ms]
    own_drift = _drift(own)
    if own_drift:
        neur["engine_total_p99_drift"] = own_drift
    transport = [1e3 * v for v, ts in cons["transport"] if ts >= t_count]
    res: dict[str, Any] = {
        "definition": DEFINITION,
        "config": _config_section(cfg, rt, bundle, engine, prod),
        "machine": machine, "versions": versions(),
        "pipelines": pipelines,
        "floor": {"transport_ms": summarize(transport)},
        "producer_late_ms": prod["late_ms"],
        # the producer shares the machine's cores with the engine (all streams in one process)
        "producer_cpu_fraction_of_one_core": prod.get("cpu_fraction_of_one_core"),
    }
    if "naive" in pipelines:
        n, b = pipelines["neuralign"]["end_to_end_ms"], pipelines["naive"]["end_to_end_ms"]
        if n and b:
            res["ratio_naive_over_neuralign"] = {k: b[k] / n[k] for k in ("p50", "p95", "p99",
                                                                          "max")}
    res["_samples"] = {**samples, "transport": transport, **{f"stage:{k}": v for k, v in
                                                            stage_rows.items() if v}}
    return res


def _pipeline_entry(cfg: BenchConfig, bundle: Bundle, label: str, got: list, prod: dict,
                    cpu: dict) -> tuple[dict[str, Any], list[float]]:
    """One pipeline's figures from the consumer's receipts ``got`` (JSON, receive time), and
    its counted end-to-end latencies (ms)."""
    t_count = prod["t0"] + cfg.warmup_s
    sfreq, tmax = prod["sfreq"], bundle.manifest.epoch.tmax
    # every marker whose whole window was sent, after the warm-up
    n_expected = sum(1 for s in prod["marker_samples"]
                     if s + tmax * sfreq <= prod["n_sent"]) * cfg.streams
    rs = [(Result.from_json(s), recv) for s, recv, _ in got]
    e2e = [1e3 * (recv - r.last_sample_timestamp) for r, recv in rs]
    keep = [(r, v) for (r, _), v in zip(rs, e2e) if r.last_sample_timestamp >= t_count]
    counted = [v for _, v in keep]
    by_minute = _per_minute([(r.last_sample_timestamp - t_count, v) for r, v in keep])
    n_exp = n_expected if label == "neuralign" else n_expected // cfg.streams
    ent: dict[str, Any] = {
        "n_decoded": len(rs), "n_counted": len(keep),
        "n_expected_after_warmup": sum(1 for s in prod["marker_samples"]
                                       if s + tmax * sfreq <= prod["n_sent"]
                                       and prod["t0"] + (s + tmax * sfreq - 1) / sfreq
                                       >= t_count) * (cfg.streams if label == "neuralign"
                                                      else 1),
        "n_expected": n_exp,
        "end_to_end_ms": summarize(counted),
        "accuracy": RunningAccuracy(bundle.template_ids).extend(
            [r for r, _ in rs]).summary(),
        "cpu_fraction_of_one_core": cpu.get("engine" if label == "neuralign" else label),
    }
    if len(by_minute) >= 2:  # does the tail drift over a long run?
        ent["end_to_end_by_minute_ms"] = by_minute
        ent["p99_last_over_first_minute"] = by_minute[-1]["p99"] / by_minute[0]["p99"]
    drift = _drift([(r.last_sample_timestamp - t_count, v) for r, v in keep])
    if drift:
        ent["p99_drift"] = drift
    if label == "naive":
        ent["stages_ms"] = {k: summarize([r.stages_ms[k] for r, _ in keep
                                          if k in r.stages_ms])
                            for k in ("detect", "cut", "inference")}
    return ent, counted


def _engine_counts(cfg: BenchConfig, engine, status: dict, prod: dict) -> dict[str, Any]:
    """What the engine received, dropped and lost, and how it batched."""
    return {"dropped_samples": status["dropped"],
            "lost_in_engine": status["lost_in_engine"],
            "gaps": status["gaps"],
            "received_samples": status["received"],
            "sent_samples": prod["n_sent"] * cfg.streams,
            "buckets_used": {str(k): v for k, v in engine.decoder.bucket_counts.items()},
            "batches_run_by_processing_thread": getattr(engine, "n_inline_batches", None),
            "model_prewarms": getattr(engine, "n_prewarms", None),
            "early_encoded_frames": (engine.early.n_frames if getattr(engine, "early", None)
                                     is not None else None),
            "inline_passes": getattr(engine, "n_inline_passes", None)}


def _early_text(rt: dict, counts: dict) -> str:
    """Early encoding (with the frames it encoded) or the prewarm that runs without it."""
    if counts.get("early_encoded_frames") is not None:
        return f"early encoding ({counts['early_encoded_frames']} frames)"
    return f"prewarm {rt.get('prewarm_ms', 0):g} ms"


def _rss_summary(cfg: BenchConfig, rss: list) -> dict[str, Any]:
    """Resident and anonymous memory after the warm-up and at the end, and their trace."""
    after = [row for row in rss if row[0] >= min(30.0, cfg.duration_s / 2)]
    return {"after_warmup": after[0][1] if after else None,
            "end": rss[-1][1] if rss else None,
            "growth": (rss[-1][1] - after[0][1]) if after else None,
            "anon_after_warmup": after[0][2] if after else None,
            "anon_end": rss[-1][2] if rss else None,
            "anon_growth": (rss[-1][2] - after[0][2]) if after else None,
            "trace_t_rss_anon": [[round(v, 1) for v in row]
                                 for row in rss[:: max(1, len(rss) // 60)]]}


def _config_section(cfg: BenchConfig, rt: RealtimeConfig, bundle: Bundle, engine,
                    prod: dict) -> dict[str, Any]:
    """The run's settings, the input's shape and what the decoder ran with."""
    return {"bundle": str(cfg.bundle_dir), "raw": str(cfg.raw_path) if cfg.raw_path
            else None, "duration_s": cfg.duration_s, "streams": cfg.streams,
            "chunk_size": cfg.chunk_size, "warmup_s": cfg.warmup_s,
            "stamps": cfg.stamps, "naive_priority": cfg.naive_priority,
            "input_channels": prod["n_channels"], "input_sfreq": prod["sfreq"],
            "model_sfreq": bundle.manifest.sfreq,
            "model_n_times": bundle.manifest.epoch.n_times,
            "epoch_window_s": [bundle.manifest.epoch.tmin, bundle.manifest.epoch.tmax],
            "realtime": rt.model_dump(mode="json"),
            "device": engine.decoder.device.type,
            "threads": scheduling.applied(),
            "decoder": {"folded": engine.decoder.folded,
                        "cuda_graph": engine.decoder.cuda_graph,
                        "buckets": engine.decoder.buckets},
            "generator": _generator_section(engine)}


def _generator_section(engine) -> dict[str, Any]:
    """Whether the bundle's image generator ran beside the decoder (it shares the CPU and the
    GIL), and how much of its work it did."""
    g = engine.generation
    if g is None:
        return {"on": False, "why_off": engine.generation_off}
    return {"on": True, "n_generated": g.n_generated, "n_dropped": g.n_dropped,
            "n_too_old": g.n_too_old, "n_deferred": g.n_deferred, "cpu_share": g.cpu_share,
            "busy_s": g.busy_s}


def _drift(rows: list[tuple[float, float]], min_span_s: float = 180.0) -> dict[str, float]:
    """p99 of the first and of the last third of a run (by stream time), and their ratio; {}
    for a run shorter than ``min_span_s``. A minute holds ~280 epochs, so its p99 is its third
    slowest epoch: thirds of a 10-minute run (~930 epochs each) say more about a drift."""
    if not rows:
        return {}
    t = np.array([r[0] for r in rows])
    v = np.array([r[1] for r in rows])
    span = float(t.max() - t.min())
    if span < min_span_s:
        return {}
    first = v[t < t.min() + span / 3]
    last = v[t >= t.max() - span / 3]
    p_first, p_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
    return {"first_third_p99": p_first, "last_third_p99": p_last,
            "last_over_first": p_last / p_first, "n_first": int(first.size),
            "n_last": int(last.size)}


def _per_minute(rows: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Latency summaries per whole minute of counted stream time (an incomplete last minute
    is left out: a few epochs would make its p99 noise)."""
    if not rows:
        return []
    n_min = int(max(t for t, _ in rows) // 60.0)
    out = []
    for m in range(n_min):
        vals = [v for t, v in rows if m * 60.0 <= t < (m + 1) * 60.0]
        if vals:
            out.append({"minute": m + 1, "n": len(vals), **summarize(vals)})
    return out


def plot_report(res: dict[str, Any], out: Path) -> Path:
    """Latency CDFs: each pipeline end to end, the transport floor, and the engine's stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["_samples"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, ls in (("neuralign", "-"), ("naive", "--"), ("transport", ":")):
        v = np.sort(np.asarray(s.get(label, [])))
        if v.size:
            name = {"naive": "naive mne-lsl pipeline", "transport": "floor: LSL transport",
                    "neuralign": "neuralign engine"}[label]
            axes[0].plot(v, np.arange(1, v.size + 1) / v.size, ls, label=name)
    axes[0].set(xscale="log", xlabel="end-to-end latency (ms)", ylabel="fraction of epochs",
                title="end to end, same run")
    axes[0].legend(loc="lower right")
    for key, v in s.items():
        if key.startswith("stage:") and key != "stage:engine_total":
            v = np.sort(np.maximum(np.asarray(v), 1e-3))
            axes[1].plot(v, np.arange(1, v.size + 1) / v.size, label=key[6:])
    axes[1].set(xscale="log", xlabel="ms", title="neuralign engine, per stage")
    axes[1].legend(loc="lower right", fontsize=8)
    c = res["config"]
    fig.suptitle(f"{c['streams']} x {c['input_channels']} ch @ {c['input_sfreq']:g} Hz, chunks "
                 f"of {c['chunk_size']}, load avg {res['machine']['load_average'][0]:.1f} on "
                 f"{res['machine']['cpu_count']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _generator_text(g: dict[str, Any] | None) -> str:
    if not g:
        return "n/a"
    if not g["on"]:
        return f"off ({g['why_off']})"
    return f"on ({g['n_generated']} images, {g['n_dropped']} epochs dropped)"


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1f} MB"


def _steal_text(machine: dict[str, Any]) -> str:
    steal = machine.get("steal_fraction")
    return "" if steal is None else f", hypervisor steal {steal:.2%} of CPU time"


def _priority_text(c: dict[str, Any]) -> str:
    """The priority asked for, and what the processing thread got when that differs."""
    asked = c["realtime"]["scheduling"]["priority"]
    got = c.get("threads", {}).get("neuralign-process")
    text = asked if got is None or got == asked else f"{asked} ({got})"
    return text + (" (the naive pipeline's too)" if c.get("naive_priority") == "same" else "")


def format_report(res: dict[str, Any]) -> str:
    """The human-readable table ``neuralign bench latency`` prints."""
    c = res["config"]
    lines = [f"{c['streams']} stream(s) x {c['input_channels']} ch @ {c['input_sfreq']:g} Hz in "
             f"chunks of {c['chunk_size']}, stamped {c.get('stamps', 'nominal')}; model {c['model_sfreq']:g} Hz x "
             f"{c['model_n_times']}; {c['duration_s']:g} s (first {c['warmup_s']:g} s not "
             f"counted); load average {res['machine']['load_average'][0]:.1f} -> "
             f"{res['machine'].get('load_average_end', [float('nan')])[0]:.1f} on "
             f"{res['machine']['cpu_count']} cores{_steal_text(res['machine'])}; threads: "
             f"{_priority_text(c)}, gc freeze "
             f"{'on' if c['realtime']['gc_freeze'] else 'off'}, "
             f"{_early_text(c['realtime'], res['pipelines'].get('neuralign', {}))}; image generator "
             f"{_generator_text(c.get('generator'))}",
             f"{'':34s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'max':>7s}  (ms)"]

    def row(name: str, s: dict) -> None:
        if s:
            lines.append(f"{name:34s} {s['p50']:7.2f} {s['p95']:7.2f} {s['p99']:7.2f} "
                         f"{s['max']:7.2f}")

    for label, p in res["pipelines"].items():
        acc = p["accuracy"].get("top1")
        lines.append(f"{label}: {p['n_decoded']} decoded ({p['n_counted']} counted), top-1 "
                     f"{acc if acc is None else round(acc, 3)}, CPU "
                     f"{p['cpu_fraction_of_one_core']:.0%} of a core")
        row("  end-to-end", p["end_to_end_ms"])
        for k, s in p.get("stages_ms", {}).items():
            row(f"    {k}", s)
    row("floor: LSL transport", res["floor"]["transport_ms"])
    for k in ("folded", "as_built"):
        if k in res["floor"].get("forward_ms", {}):
            row(f"floor: model forward, batch 1, {k}", res["floor"]["forward_ms"][k])
    for label, p in res["pipelines"].items():
        mins = p.get("end_to_end_by_minute_ms")
        if mins:
            lines.append(f"{label} p99 by minute (ms): "
                         + " ".join(f"{m['p99']:.1f}" for m in mins)
                         + f"  (last / first {p['p99_last_over_first_minute']:.2f})")
    drifts = [(f"{label} end to end", p["p99_drift"])
              for label, p in res["pipelines"].items() if p.get("p99_drift")]
    if res["pipelines"]["neuralign"].get("engine_total_p99_drift"):
        drifts.append(("neuralign engine time",
                       res["pipelines"]["neuralign"]["engine_total_p99_drift"]))
    if drifts:
        lines.append("p99, first third -> last third of the run: " + "; ".join(
            f"{name} {d['first_third_p99']:.2f} -> {d['last_third_p99']:.2f} ms "
            f"({d['last_over_first']:.2f})" for name, d in drifts))
    if "ratio_naive_over_neuralign" in res:
        r = res["ratio_naive_over_neuralign"]
        lines.append(f"naive / neuralign: p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x")
    n = res["pipelines"]["neuralign"]
    lines.append(f"samples sent {n['sent_samples']}, received {n['received_samples']}, dropped "
                 f"{n['dropped_samples']}, lost in engine {n['lost_in_engine']}; memory after "
                 f"warm-up: RSS {_mb(n['rss_mb']['growth'])}, anonymous "
                 f"{_mb(n['rss_mb']['anon_growth'])}")
    if res.get("producer_cpu_fraction_of_one_core") is not None:
        late = res.get("producer_late_ms") or {}
        at_ends = res.get("producer_late_at_epoch_ends_ms") or {}
        lines.append(f"producer (every stream, one process): CPU "
                     f"{res['producer_cpu_fraction_of_one_core']:.0%} of a core, pushes late "
                     f"p50 {late.get('p50', float('nan')):.2f} / p99 "
                     f"{late.get('p99', float('nan')):.2f} ms; the pushes epochs waited for: "
                     f"p50 {at_ends.get('p50', float('nan')):.2f} / p99 "
                     f"{at_ends.get('p99', float('nan')):.2f} ms")
    if "tail" in res:
        lines.extend(format_tail(res["tail"]))
    return "\n".join(lines)
