"""A rehearsal session: replay a recording over LSL and decode it live with a bundle.

Used by ``neuralign demo``: the replayer, the LSL source and the engine are the same objects a
live session uses, so what the demo shows (accuracy, latency) is what a lab would see.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import mne

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource


@dataclass
class ReplaySession:
    replayer: LSLReplayer
    engine: Engine
    n_trials: int  # stimuli whose whole epoch window is replayed (the results to expect)
    template_ids: set[str] = field(default_factory=set)
    duration_s: float = 0.0
    sfreq: float = 0.0

    def start(self) -> None:
        self.replayer.start()
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()
        self.replayer.stop()

    def accuracy(self) -> dict:
        """Running single-trial and repetition-averaged top-1/top-5 on trials with known truth."""
        judged = [r for r in list(self.engine.results) if r.get("marker") in self.template_ids]
        if not judged:
            return {"n": 0}
        top1 = sum(r["topk_ids"][0] == r["marker"] for r in judged) / len(judged)
        top5 = sum(r["marker"] in r["topk_ids"][:5] for r in judged) / len(judged)
        avg = [r for r in judged if "avg_topk_ids" in r]
        out = {"n": len(judged), "top1": top1, "top5": top5, "chance_top1": 1 / len(self.template_ids)}
        if avg:
            last = avg[-len(self.template_ids):]  # the latest running decision per image
            out["avg_top1"] = sum(r["avg_topk_ids"][0] == r["marker"] for r in last) / len(last)
            out["avg_n_repetitions"] = max(r["n_repetitions"] for r in last)
        return out


def replay_session(bundle: Bundle, raw_path: Path, rt: RealtimeConfig, speed: float = 1.0,
                   n_trials: int | None = None, duration_s: float | None = None,
                   device: str = "auto", result_source_id: str | None = None,
                   name: str = "neuralign-demo") -> ReplaySession:
    """Build (not start) a replay of ``raw_path`` (its first ``n_trials`` stimuli and/or first
    ``duration_s`` seconds) over LSL and an engine reading it through an LSL source."""
    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    window_end = bundle.manifest.epoch.tmax
    if n_trials is not None and n_trials < len(raw.annotations):
        # keep the window after the last kept onset so its epoch completes
        end = raw.annotations.onset[n_trials - 1] - raw.first_time + window_end + 0.2
        raw.crop(0, min(end, raw.times[-1]))
        raw.set_annotations(raw.annotations[:n_trials])
    if duration_s is not None:
        raw.crop(0, min(duration_s, raw.times[-1]))
    complete = int(sum(o - raw.first_time + window_end <= raw.times[-1]
                       for o in raw.annotations.onset))
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"{name}-{sid[:6]}", source_id=sid, speed=speed,
                               chunk_size=rt.chunk_size, wait_for_consumers=30.0)
    src = LSLSource(source_id=sid, markers=LSLMarkerInlet(source_id=f"{sid}-markers"),
                    timeout=rt.connect_timeout_s, buffer_seconds=rt.buffer_seconds)
    engine = Engine(bundle, src, rt, device=device, result_source_id=result_source_id)
    return ReplaySession(rep, engine, complete, set(bundle.template_ids),
                         float(raw.times[-1]), raw.info["sfreq"])
