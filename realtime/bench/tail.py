"""Tail breakdown of ``bench latency``: what the slowest epochs waited on (docs/latency_tail.md).

Percentiles say how slow the tail is, not why. For the slowest ``fraction`` of epochs (by the
engine's own ``engine_total`` and by the consumer's end to end) this module lays each epoch's
stage stamps out on the engine clock as consecutive *segments*, compares each segment with its
own median, overlaps the epoch with the process's garbage-collector pauses (:mod:`.gcwatch`) and
with the other batches' inference, and names one cause per epoch:

- ``gc``: a collection (it holds the GIL: every engine thread stands still) overlapped the epoch;
- ``busy``: a waiting segment overlapped another batch's inference (the engine was busy);
- a work segment's name (``inference``, ``filter``, ...): that segment ran longer than its
  median. Wall clock: being descheduled *inside* the segment counts here too (thread CPU time is
  not sampled: that would add calls on the engine's hot path);
- ``wait:<segment>`` (e.g. ``wait:pull``): a waiting segment ran longer than its median with
  no GC pause and no other batch to explain it: the scheduler, the GIL held by another thread,
  LSL transport; *unexplained* from inside this process.

The cause is the candidate with the most milliseconds of excess. Pure functions on typed rows, so
the tests build rows and GC events by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from neuralign.realtime.bench.gcwatch import GcEvent
from neuralign.realtime.threadsched import EpochSched

#: the stage stamps an epoch collects, in time order ('received': the consumer's receive time)
BOUNDARIES = ("sample", "pushed", "pulled", "acquired", "filtered", "ready", "epoched",
              "normalized", "queued", "batch_start", "inferred", "published", "received")


@dataclass(frozen=True)
class Segment:
    """The interval between two consecutive stamps, and whether a thread works in it."""

    name: str
    kind: Literal["work", "wait"]
    doc: str


#: BOUNDARIES[i] -> BOUNDARIES[i + 1]. latency.STAGES' ``epoch`` = epoch_wait + epoch_cut and
#: ``wait_in_batch`` = dispatch_wait + batch_wait.
SEGMENTS = (
    Segment("produce", "wait", "last sample stamped -> the producer's push of it returned (a "
            "device app that pushes late; outside the engine; zero when the producer's push "
            "times are unknown)"),
    Segment("pull", "wait", "pushed -> the acquisition thread has it in the ring buffer (LSL "
            "transport, the pull's sleep or wait, that thread's wake-up)"),
    Segment("wakeup", "wait", "in the ring buffer -> the processing thread starts filtering its "
            "chunk (its wake-up, the other streams of the same pass)"),
    Segment("filter", "work", "filtering the chunk that completed the epoch"),
    Segment("epoch_wait", "wait", "chunk filtered -> the epocher starts cutting (its checks; a "
            "late marker)"),
    Segment("epoch_cut", "work", "cutting the window out of the processed buffer"),
    Segment("normalize", "work", "normalising the epoch"),
    Segment("dispatch_wait", "wait", "normalised -> dispatched (other streams, other epochs of "
            "the same pass)"),
    Segment("batch_wait", "wait", "dispatched -> its batch starts (hand-off to the inference "
            "thread, batching deadline, the inference lock)"),
    Segment("inference", "work", "the batch's forward pass and decisions"),
    Segment("publish", "work", "pushing the result to the LSL outlet"),
    Segment("deliver", "wait", "published -> the consumer process received it (end to end only)"),
)
SEGMENT_NAMES = tuple(s.name for s in SEGMENTS)

#: where the threads on an epoch's path spent it, from the kernel's per-thread accounting
#: (:mod:`neuralign.realtime.threadsched`): the engine's acquisition thread from the pull that
#: brought the last sample to publication, and the consumer's threads for the result
SCHED_PARTS = {
    "pull_runq": "the acquisition thread, woken by the awaited sample, waiting for a CPU",
    "cpu": "that thread on a CPU from the sample to publication (its work; a slow virtual CPU)",
    "runq": "that thread runnable but waiting for a CPU from the sample to publication",
    "off": "that thread neither running nor runnable from the sample to publication: blocked "
           "on the GIL or a lock, or its virtual CPU taken by the hypervisor",
    "consumer_runq": "the consumer's threads (liblsl's receiver included) waiting for a CPU "
                     "to hand it the result",
}
#: the engine thread's parts; the consumer's counts end to end only
_ENGINE_PARTS = ("pull_runq", "cpu", "runq", "off")
#: a tail epoch's scheduling cause needs this much excess over the part's median (ms)
SCHED_MIN_EXCESS_MS = 0.2
TAIL_FRACTION = 0.01
Metric = Literal["engine_total", "end_to_end"]


@dataclass(frozen=True)
class EpochTimeline:
    """One decoded epoch's stamps (local_clock seconds, BOUNDARIES order; NaN: not stamped)."""

    stream: str | None
    epoch_id: int
    t: tuple[float, ...]
    sched: EpochSched | None = None  # the engine thread's time, split (a scheduling probe's)
    consumer_runq_ms: float = math.nan  # the consumer's threads waiting for a CPU for it

    @classmethod
    def from_stages(cls, stream: str | None, epoch_id: int, stages: Mapping[str, float],
                    received: float | None = None, sched: EpochSched | None = None,
                    consumer_runq_ms: float = math.nan) -> EpochTimeline:
        """From an Epoch's ``stages`` dict (the engine's form), the consumer's receive time, the
        engine thread's scheduling split and the consumer's run-queue wait."""
        got = {**stages, "received": received if received is not None else math.nan}
        if "sample" in got:  # a producer without push times / a source without arrivals
            if not math.isfinite(got.get("pushed", math.nan)):
                got["pushed"] = got["sample"]
            if not math.isfinite(got.get("pulled", math.nan)):
                got["pulled"] = got["pushed"]
        return cls(stream, epoch_id, tuple(float(got.get(b, math.nan)) for b in BOUNDARIES),
                   sched, float(consumer_runq_ms))

    def sched_ms(self) -> dict[str, float]:
        """:data:`SCHED_PARTS` of this epoch (ms; NaN: not probed)."""
        p = self.sched.pull if self.sched is not None else None
        q = self.sched.to_publish if self.sched is not None else None
        nan = math.nan
        return {"pull_runq": p.runq_ms if p else nan, "cpu": q.cpu_ms if q else nan,
                "runq": q.runq_ms if q else nan, "off": q.off_ms if q else nan,
                "consumer_runq": self.consumer_runq_ms}

    def at(self, boundary: str) -> float:
        return self.t[BOUNDARIES.index(boundary)]

    def segments_ms(self) -> np.ndarray:
        return 1e3 * np.diff(np.asarray(self.t))

    def metric_ms(self, metric: Metric) -> float:
        end = "published" if metric == "engine_total" else "received"
        return 1e3 * (self.at(end) - self.at("sample"))


@dataclass
class GcHit:
    """A collection that overlapped a tail epoch (times relative to its last sample)."""

    start_ms: float
    duration_ms: float
    overlap_ms: float
    generation: int
    thread: str
    segment: str  # the segment it overlapped most


@dataclass
class SegmentTime:
    ms: float
    median_ms: float
    excess_ms: float  # ms - median_ms


@dataclass
class TailEpoch:
    """Why one slow epoch was slow."""

    stream: str | None
    epoch_id: int
    metric_ms: float
    engine_total_ms: float
    end_to_end_ms: float | None
    largest: str  # the segment with the largest share of the metric
    largest_share: float
    top_excess: str  # the segment furthest above its own median
    segments: dict[str, SegmentTime]
    gc: list[GcHit]
    gc_ms: float  # collection time inside the epoch
    busy_ms: float  # waiting segments overlapping another batch's inference
    explained_ms: dict[str, float]  # candidate cause -> ms of excess it accounts for
    cause: str
    #: SCHED_PARTS -> ms (NaN: not probed), and the part furthest above its median
    sched_ms: dict[str, float] = field(default_factory=dict)
    sched_cause: str = "none"


@dataclass
class TailReport:
    """The slowest ``fraction`` of epochs by ``metric``, and the share of each cause."""

    metric: str
    fraction: float
    n_epochs: int
    n_tail: int
    threshold_ms: float  # the fastest tail epoch's metric
    median_ms: float
    segment_median_ms: dict[str, float]
    causes: dict[str, float]  # cause -> fraction of tail epochs
    epochs: list[TailEpoch] = field(default_factory=list)
    sched_median_ms: dict[str, float] = field(default_factory=dict)  # over every epoch
    sched_causes: dict[str, float] = field(default_factory=dict)  # part -> fraction of tail


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def tail_breakdown(rows: Sequence[EpochTimeline], gc_events: Sequence[GcEvent],
                   metric: Metric = "engine_total", fraction: float = TAIL_FRACTION,
                   busy_rows: Sequence[EpochTimeline] | None = None) -> TailReport:
    """Attribute the slowest ``fraction`` (at least one) of ``rows`` by ``metric``.

    ``busy_rows`` (default ``rows``): the epochs whose inference intervals count as the engine
    being busy (pass the warm-up's too, so a counted epoch waiting on one is explained)."""
    n_seg = len(SEGMENTS) if metric == "end_to_end" else len(SEGMENTS) - 1
    rows = [r for r in rows if math.isfinite(r.metric_ms(metric))]
    if not rows:
        return TailReport(metric, fraction, 0, 0, math.nan, math.nan, {}, {})
    values = np.array([r.metric_ms(metric) for r in rows])
    seg = np.array([r.segments_ms()[:n_seg] for r in rows])
    with np.errstate(all="ignore"):
        med = np.array([np.nanmedian(c) if np.isfinite(c).any() else math.nan for c in seg.T])
    n_tail = max(1, math.ceil(fraction * len(rows)))
    order = np.argsort(-values, kind="stable")[:n_tail]
    batches = sorted({(r.at("batch_start"), r.at("inferred")) for r in (busy_rows or rows)
                      if math.isfinite(r.at("batch_start")) and math.isfinite(r.at("inferred"))})
    median_total = float(np.median(values))
    parts = _ENGINE_PARTS + (("consumer_runq",) if metric == "end_to_end" else ())
    sched = np.array([[r.sched_ms()[p] for p in parts] for r in rows])
    with np.errstate(all="ignore"):
        sched_med = np.array([np.nanmedian(c) if np.isfinite(c).any() else math.nan
                              for c in sched.T])
    epochs = []
    for i in order:
        r = rows[int(i)]
        # a collection here stalls the engine up to publication, not the consumer's transport
        t0, t1 = r.at("sample"), r.at("published")
        hits, gc_in_seg = [], np.zeros(n_seg)
        for ev in gc_events:
            ov = _overlap(ev.start, ev.stop, t0, t1)
            if ov <= 0:
                continue
            per = [_overlap(ev.start, ev.stop, r.t[k], r.t[k + 1]) if
                   math.isfinite(r.t[k]) and math.isfinite(r.t[k + 1]) else 0.0
                   for k in range(n_seg)]
            gc_in_seg += 1e3 * np.asarray(per)
            hits.append(GcHit(1e3 * (ev.start - t0), ev.duration_ms, 1e3 * ov, ev.generation,
                              ev.thread, SEGMENT_NAMES[int(np.argmax(per))]))
        busy_in_seg = np.zeros(n_seg)
        own = (r.at("batch_start"), r.at("inferred"))
        for k in range(n_seg):
            a, b = r.t[k], r.t[k + 1]
            if SEGMENTS[k].kind != "wait" or not (math.isfinite(a) and math.isfinite(b)):
                continue
            busy_in_seg[k] = 1e3 * sum(_overlap(b0, b1, a, b) for b0, b1 in batches
                                       if (b0, b1) != own and b0 < b and b1 > a)
        d = seg[int(i)]
        excess = d - med
        explained: dict[str, float] = {"gc": float(sum(h.overlap_ms for h in hits)),
                                       "busy": float(busy_in_seg.sum())}
        for k, s in enumerate(SEGMENTS[:n_seg]):
            if not math.isfinite(excess[k]):
                continue
            left = excess[k] - gc_in_seg[k] - busy_in_seg[k]
            explained[s.name if s.kind == "work" else f"wait:{s.name}"] = max(0.0, float(left))
        best = max(explained, key=lambda k: explained[k])
        cause = best if explained[best] > 0 else "none"
        finite = np.where(np.isfinite(d), d, -np.inf)
        exc = np.where(np.isfinite(excess), excess, -np.inf)
        metric_ms = float(values[int(i)])
        e2e = r.metric_ms("end_to_end")
        epochs.append(TailEpoch(
            r.stream, r.epoch_id, metric_ms, r.metric_ms("engine_total"),
            e2e if math.isfinite(e2e) else None,
            SEGMENT_NAMES[int(np.argmax(finite))], float(np.max(finite)) / metric_ms
            if metric_ms > 0 else math.nan,
            SEGMENT_NAMES[int(np.argmax(exc))],
            {s.name: SegmentTime(float(d[k]), float(med[k]), float(excess[k]))
             for k, s in enumerate(SEGMENTS[:n_seg]) if math.isfinite(d[k])},
            hits, explained["gc"], explained["busy"], explained, cause,
            dict(zip(parts, (float(v) for v in sched[int(i)]))),
            _sched_cause(parts, sched[int(i)] - sched_med)))
    return TailReport(metric, fraction, len(rows), n_tail, float(values[order[-1]]),
                      median_total, {s.name: float(med[k]) for k, s in
                                     enumerate(SEGMENTS[:n_seg]) if math.isfinite(med[k])},
                      _shares([e.cause for e in epochs]), epochs,
                      {p: float(m) for p, m in zip(parts, sched_med) if math.isfinite(m)},
                      _shares([e.sched_cause for e in epochs]))


def _shares(labels: Sequence[str]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for x in labels:
        counts[x] = counts.get(x, 0) + 1
    return {k: v / len(labels) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _sched_cause(parts: Sequence[str], excess: np.ndarray) -> str:
    """The scheduling part furthest above its median, if by :data:`SCHED_MIN_EXCESS_MS`
    ("none": no part is, or nothing was probed)."""
    if not excess.size:
        return "none"
    exc = np.where(np.isfinite(excess), excess, -np.inf)
    k = int(np.argmax(exc))
    return parts[k] if exc[k] >= SCHED_MIN_EXCESS_MS else "none"


def gc_summary(events: Sequence[GcEvent], rows: Sequence[EpochTimeline], n_seen: int,
               t_from: float) -> dict[str, Any]:
    """Every collection from ``t_from`` on: count, time, worst, per generation and thread, and
    the share of all counted epochs one overlapped (to compare with the tail's share)."""
    evs = [e for e in events if e.start >= t_from]
    ms = np.array([e.duration_ms for e in evs]) if evs else np.zeros(0)
    by_gen: dict[str, dict[str, float]] = {}
    for e in evs:
        g = by_gen.setdefault(str(e.generation), {"n": 0, "total_ms": 0.0, "max_ms": 0.0})
        g["n"] += 1
        g["total_ms"] += e.duration_ms
        g["max_ms"] = max(g["max_ms"], e.duration_ms)
    by_thread: dict[str, int] = {}
    for e in evs:
        by_thread[e.thread] = by_thread.get(e.thread, 0) + 1
    starts = np.array([e.start for e in evs])
    stops = np.array([e.stop for e in evs])
    hit = 0
    for r in rows:
        a, b = r.at("sample"), r.at("published")
        if starts.size and np.any((starts < b) & (stops > a)):
            hit += 1
    return {"n": len(evs), "n_seen_in_run": n_seen, "total_ms": float(ms.sum()),
            "max_ms": float(ms.max()) if ms.size else 0.0,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else 0.0,
            "by_generation": dict(sorted(by_gen.items())), "by_thread": by_thread,
            "share_of_epochs_overlapped": hit / len(rows) if rows else None}


def tail_section(rows: Sequence[EpochTimeline], gc_events: Sequence[GcEvent], n_gc_seen: int,
                 t_from: float, busy_rows: Sequence[EpochTimeline] | None = None,
                 fraction: float = TAIL_FRACTION) -> dict[str, Any]:
    """The report's ``tail`` key (JSON-ready)."""
    return {
        "fraction": fraction,
        "segments": {s.name: {"kind": s.kind, "doc": s.doc} for s in SEGMENTS},
        "by_engine_total": asdict(tail_breakdown(rows, gc_events, "engine_total", fraction,
                                                 busy_rows)),
        "by_end_to_end": asdict(tail_breakdown(rows, gc_events, "end_to_end", fraction,
                                               busy_rows)),
        "gc": gc_summary(gc_events, rows, n_gc_seen, t_from),
        "sched_parts": SCHED_PARTS,
    }


def format_tail(tail: Mapping[str, Any], max_rows: int = 8) -> list[str]:
    """Lines for ``format_report``: per metric, the causes and the slowest epochs."""
    lines = []
    for key in ("by_engine_total", "by_end_to_end"):
        t = tail.get(key) or {}
        if not t.get("n_tail"):
            continue
        causes = ", ".join(f"{k} {v:.0%}" for k, v in t["causes"].items())
        lines.append(f"tail: slowest {t['fraction']:.0%} by {t['metric']} ({t['n_tail']} of "
                     f"{t['n_epochs']}, >= {t['threshold_ms']:.1f} ms, median "
                     f"{t['median_ms']:.1f}): {causes}")
        lines.append(f"  {'ms':>7s}  {'largest segment':>23s}  {'top excess (ms)':>24s}  "
                     f"{'gc ms':>6s} {'busy':>5s}  {'cpu/runq/off':>13s}  cause")
        for e in t["epochs"][:max_rows]:
            top = e["segments"].get(e["top_excess"], {}).get("excess_ms", math.nan)
            gcs = "/".join(sorted({f"g{h['generation']}@{h['segment']}" for h in e["gc"]}))
            sc = e.get("sched_ms") or {}
            split = "/".join("-" if not math.isfinite(sc.get(p, math.nan)) else
                             f"{sc[p]:.1f}" for p in ("cpu", "runq", "off"))
            lines.append(f"  {e['metric_ms']:7.1f}  {e['largest']:>16s} ({e['largest_share']:4.0%})"
                         f"  {e['top_excess']:>16s} {top:+7.1f}  {e['gc_ms']:6.2f} "
                         f"{e['busy_ms']:5.1f}  {split:>13s}  {e['cause']}"
                         f"{' (' + gcs + ')' if gcs else ''}"
                         f"{'' if e.get('sched_cause', 'none') == 'none' else '; sched:' + e['sched_cause']}")
        med = t.get("sched_median_ms") or {}
        if med:
            lines.append("  scheduling (median of all epochs, ms): " + ", ".join(
                f"{p} {v:.2f}" for p, v in med.items()) + "; tail by scheduling: " + ", ".join(
                f"{k} {v:.0%}" for k, v in (t.get("sched_causes") or {}).items()))
    g = tail.get("gc")
    if g:
        gens = ", ".join(f"gen{k} {v['n']} ({v['total_ms']:.1f} ms, max {v['max_ms']:.2f})"
                         for k, v in g["by_generation"].items())
        share = g["share_of_epochs_overlapped"]
        lines.append(f"gc: {g['n']} collections, {g['total_ms']:.1f} ms, max {g['max_ms']:.2f} ms"
                     f" [{gens}]; {'n/a' if share is None else f'{share:.0%}'} of all counted "
                     "epochs overlap one")
    return lines
