"""The engine against the field: device timing profiles x faults, measured end to end over LSL.

Each :class:`FieldCase` replays a recording through a device timing profile
(:mod:`neuralign.realtime.replay.timing`: how a wired amplifier, an OpenBCI dongle, a Bluetooth
headset or a BrainFlow bridge stamp and deliver their samples), optionally with one real gap (a
run of samples that never arrives), in volts or in microvolts, or with one NaN sample. The
engine decodes it live; the reference is offline decoding of exactly the samples that arrived
(the chain restarted at the gap, the epochs across it not decoded, the NaN held at the last good
value as the engine's guard does). :func:`run_field_case` says how many of the complete epochs
were decoded, how many agree with the reference on top-1, how many epochs were dropped for the
gap against how many span it, what health reported and the latency; ``neuralign bench field``
runs the matrix and prints the table.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.offline.single_trial import decode_continuous
from neuralign.realtime.engine import Engine
from neuralign.realtime.recorder import Recorder
from neuralign.realtime.replay import LSLReplayer, get_profile
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import recent
from neuralign.recording_format import read_clock_log, read_recording, recorded_clock
from neuralign.signal.events import stimulus_events

log = logging.getLogger(__name__)

#: offline top-1 and top-2 scores closer than this are a tie (either is the same decision)
TIE = 1e-4
#: the matrix ``neuralign bench field`` runs by default
DEFAULT_PROFILES = ("wired-1khz", "cyton-dongle", "consumer-256", "brainflow")
DEFAULT_FAULTS = ("none", "gap", "uV", "gap+uV", "nan")


@dataclass(frozen=True)
class FieldCase:
    """One replay: a timing profile, with or without one real gap, in V or uV, or one NaN."""

    profile: str
    gap: bool = False
    unit: str = "V"  # the unit the stream is sent (and declared) in
    nan: bool = False
    gap_at_s: float = 4.0
    gap_s: float = 0.08
    nan_at_s: float = 10.0
    seed: int = 0

    @classmethod
    def from_fault(cls, profile: str, fault: str, **kw) -> FieldCase:
        """``fault``: ``none``, ``gap``, ``uV``, ``gap+uV`` or ``nan``."""
        parts = set(fault.split("+")) - {"none"}
        unknown = parts - {"gap", "uV", "nan"}
        if unknown:
            raise ValueError(f"unknown fault {fault!r} (none, gap, uV, gap+uV, nan)")
        return cls(profile, gap="gap" in parts, unit="uV" if "uV" in parts else "V",
                   nan="nan" in parts, **kw)

    @property
    def fault(self) -> str:
        parts = [p for p, on in (("gap", self.gap), ("uV", self.unit != "V"),
                                 ("nan", self.nan)) if on]
        return "+".join(parts) or "none"


@dataclass
class FieldOutcome:
    """What the engine did with one case, against offline decoding of the samples received."""

    profile: str
    fault: str
    n_markers: int  # stimuli sent
    expected: int  # epochs whose samples all arrived (offline decodes exactly these)
    decoded: int  # results the engine published
    parity: int  # decoded epochs whose top-1 equals the offline top-1 of the same epoch
    top1: float  # live top-1 accuracy (image id == marker) over the decoded epochs
    gap_epochs_expected: int  # epochs whose window spans a gap where the recording has it
    gap_epochs_dropped: int  # ... and those the engine dropped for a gap
    gap_epochs_true: int  # epochs whose window spans the injected hole where it truly is
    gaps_injected: int
    gaps_reported: int
    samples_lost: int  # samples that never arrived
    samples_reported_lost: int
    finite: bool  # every published score finite
    jitter_p99_ms: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    placement_error_max: int = 0  # |placed - true onset| in samples, worst marker
    unit_warning: str = ""
    clock_warning: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every complete epoch decoded as offline, exactly the gap's epochs dropped."""
        return (self.decoded == self.expected and self.parity == self.decoded
                and self.gap_epochs_dropped == self.gap_epochs_expected
                and self.gaps_reported == self.gaps_injected and self.finite)


def _received(data: np.ndarray, dropped) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(the samples that arrived, received index of every original sample (-1: lost), the
    received index that follows each hole)."""
    n = data.shape[1]
    keep = np.ones(n, dtype=bool)
    for r in dropped:
        keep[r.start:r.stop] = False
    new_index = np.cumsum(keep) - 1
    new_index[~keep] = -1
    breaks = sorted({int(np.sum(keep[:r.stop])) for r in dropped if r.stop < n})
    return data[:, keep], new_index, breaks


def _hold_non_finite(x: np.ndarray) -> np.ndarray:
    """Each non-finite value replaced by its channel's last finite one (0 before any), as the
    engine's sample guard does."""
    for j in np.flatnonzero(~np.isfinite(x).all(axis=0)):
        bad = ~np.isfinite(x[:, j])
        x[bad, j] = x[bad, j - 1] if j else 0.0
    return x


#: after the last sample arrived: several of the acquisition thread's marker pulls (it pulls at
#: least every 20 ms)
TAIL_SETTLE_S = 0.2


def run_field_case(bundle: Bundle, raw, case: FieldCase, config: RealtimeConfig | None = None,
                   tail_s: float = 2.0) -> FieldOutcome:
    """Replay ``raw`` (an MNE Raw with stimulus annotations) through ``case``'s profile and
    faults, decode it live with ``bundle``, and compare with offline decoding."""
    sfreq = float(raw.info["sfreq"])
    data = raw.get_data(picks=bundle.ch_names)
    events = stimulus_events(raw)
    profile = get_profile(case.profile).without_losses()
    half = raw.times[-1] / 2  # a short recording gets its fault in the middle
    if case.gap:
        profile = profile.with_gap(min(case.gap_at_s, half),
                                   max(1, int(round(case.gap_s * sfreq))))
    sent = data.copy()
    nan_at = int(round(min(case.nan_at_s, half) * sfreq)) if case.nan else None
    if nan_at is not None:
        sent[:, nan_at] = np.nan
    sid = uuid.uuid4().hex
    rep = LSLReplayer(sent, sfreq, bundle.ch_names, list(bundle.manifest.channels.types),
                      events, name=f"field-{sid[:8]}", source_id=sid, speed=1.0,
                      wait_for_consumers=30.0, timing=profile, timing_seed=case.seed,
                      unit=None if case.unit == "V" else case.unit)
    src = replay_source(rep, timeout=20)
    engine = Engine(bundle, src, config or RealtimeConfig(batch_size=4, max_wait_ms=10),
                    publish_lsl=False)
    rec_dir = Path(tempfile.mkdtemp(prefix="neuralign-field-"))
    rep.start()  # its outlets exist from here; it waits for the engine's inlets to send
    try:
        src.open()
        # what a lab does: record the session; the reference is offline decoding of it
        engine.recorder = Recorder.for_stream(rec_dir / "rec", src.description,
                                              export_fif=False)
        engine.start()
        rep.wait_done(timeout=data.shape[1] / sfreq * 3 + 60)
        # until every sample the profile let through is in the engine's buffer (at most
        # tail_s), then a moment for the acquisition thread's last marker pull; stop() then
        # processes all of it
        lost = rep.schedule.n_dropped if rep.schedule is not None else 0
        deadline = time.monotonic() + tail_s
        while (time.monotonic() < deadline and engine.error is None
               and src.buffer.n_written < rep.n_sent - lost):
            time.sleep(0.02)
        time.sleep(TAIL_SETTLE_S)
    finally:
        engine.stop()
        rep.stop()
    if engine.error is not None:
        raise RuntimeError(f"the engine failed in {case}: {engine.error!r}")
    sched = rep.schedule
    dropped = list(sched.dropped) if sched is not None else []
    got, stamps, recorded, _, _ = read_recording(rec_dir / "rec")
    live_clock = read_clock_log(rec_dir / "rec")
    shutil.rmtree(rec_dir, ignore_errors=True)
    got = _hold_non_finite(got.astype(np.float64))  # as the engine's guard does
    placed, breaks = recorded_clock(stamps, recorded, sfreq, live_clock)
    # the clock model run offline over the same stamps (what an XDF of the session gives)
    model_only, _ = recorded_clock(stamps, recorded, sfreq)
    model_vs_live = max((abs(a[0] - b[0]) for a, b in zip(placed, model_only)), default=0)
    onsets, labels = [k for k, _ in placed], [v for _, v in placed]
    offline = decode_continuous(bundle, got, sfreq, onsets, labels, breaks=breaks)
    within = decode_continuous(bundle, got, sfreq, onsets, labels) if breaks else offline
    # where each marker was placed against where its sample truly is among those received
    _, new_index, true_breaks = _received(data, dropped)
    truly_across = (len(within) - len(decode_continuous(bundle, got, sfreq, onsets, labels,
                                                        breaks=true_breaks))
                    if true_breaks else 0)
    t_true = sched.t_true if sched is not None else None
    true_onset = {}
    if t_true is not None:
        for e in recorded:
            k = int(np.argmin(np.abs(t_true - float(e["timestamp"]))))
            true_onset[float(e["timestamp"])] = int(new_index[k])
    errors = [abs(i - true_onset[float(e["timestamp"])]) for (i, _), e in
              zip(placed, recorded) if true_onset.get(float(e["timestamp"]), -1) >= 0]
    # live results -> the offline epoch of the same marker
    by_stamp = {}
    for (i, _), e in zip(placed, recorded):
        by_stamp[round(float(e["timestamp"]), 6)] = i
    by_onset = {o["onset_sample"]: o for o in offline}
    results = recent(engine)  # every result of the finished run (the engine keeps them)
    parity, top1_hits, finite = 0, 0, True
    for r in results:
        finite &= bool(np.all(np.isfinite(r.topk_scores)))
        top1_hits += r.topk_ids[0] == r.marker
        o = by_onset.get(by_stamp.get(round(r.marker_timestamp, 6), -1))
        # equal top-1, or an exact tie offline (float rounding of another batch size decides)
        parity += o is not None and (o["topk_ids"][0] == r.topk_ids[0] or (
            len(o["topk_scores"]) > 1
            and abs(o["topk_scores"][0] - o["topk_scores"][1]) < TIE))
    st = engine.status()
    h = st["health"]
    lat = st["latency_ms"].get("engine_total", {})
    return FieldOutcome(
        profile=case.profile, fault=case.fault, n_markers=len(events), expected=len(offline),
        decoded=len(results), parity=parity,
        top1=top1_hits / len(results) if results else 0.0,
        gap_epochs_expected=len(within) - len(offline),
        gap_epochs_dropped=int(h["gap_epochs_dropped"]), gap_epochs_true=truly_across,
        gaps_injected=len(dropped),
        gaps_reported=int(st["gaps"]), samples_lost=sum(len(r) for r in dropped),
        samples_reported_lost=int(st["dropped"]), finite=finite,
        jitter_p99_ms=float(h.get("jitter_p99_ms") or 0.0),
        latency_p50_ms=lat.get("p50"), latency_p99_ms=lat.get("p99"),
        unit_warning=str(h.get("unit_warning", "")),
        clock_warning=str(h.get("clock_warning", "")),
        placement_error_max=max(errors) if errors else 0,
        extra={"offline_model_vs_live_samples": model_vs_live,
               "late_deliveries": h.get("late_deliveries"), "rate_ppm": h.get("rate_ppm"),
               "flagged_epochs": h.get("flagged_epochs"),
               "latencies_ms": [round(r.stages_ms.get("engine_total", float("nan")), 2)
                                for r in results]})


def field_table(outcomes: list[FieldOutcome]) -> str:
    """The bench's table (markdown)."""
    rows = ["| profile | fault | decoded / expected | parity | top-1 | gap epochs dropped / "
            "spanning (truly) | gaps reported / injected | samples lost reported / true | "
            "marker error (samples) | jitter p99 ms | latency p50 / p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lat = ("-" if o.latency_p50_ms is None
               else f"{o.latency_p50_ms:.1f} / {o.latency_p99_ms:.1f}")
        rows.append(f"| {o.profile} | {o.fault} | {o.decoded} / {o.expected} | "
                    f"{o.parity} / {o.decoded} | {o.top1:.2f} | {o.gap_epochs_dropped} / "
                    f"{o.gap_epochs_expected} ({o.gap_epochs_true}) | {o.gaps_reported} / "
                    f"{o.gaps_injected} | {o.samples_reported_lost} / {o.samples_lost} | "
                    f"{o.placement_error_max} | {o.jitter_p99_ms:.2f} | {lat} |")
    return "\n".join(rows)


def run_field_bench(bundle: Bundle, raw, profiles=DEFAULT_PROFILES, faults=DEFAULT_FAULTS,
                    json_out: Path | None = None, seed: int = 0) -> list[FieldOutcome]:
    """Every profile x fault; prints each row as it comes and the table at the end."""
    outcomes = []
    for p in profiles:
        for f in faults:
            case = FieldCase.from_fault(p, f, seed=seed)
            t = time.monotonic()
            o = run_field_case(bundle, raw, case)
            outcomes.append(o)
            print(f"{p:14s} {f:8s} decoded {o.decoded}/{o.expected} parity {o.parity} "
                  f"gap-dropped {o.gap_epochs_dropped}/{o.gap_epochs_expected} gaps "
                  f"{o.gaps_reported}/{o.gaps_injected} ({time.monotonic() - t:.0f} s)",
                  flush=True)
    print(field_table(outcomes))
    if json_out is not None:
        Path(json_out).write_text(json.dumps(
            {"cases": [asdict(o) | {"ok": o.ok} for o in outcomes]}, indent=1))
    return outcomes
