"""A rehearsal session: replay a recording over LSL and decode it live with a bundle.

Used by ``neuralign demo`` and the latency benchmark: the replayer, the LSL source and the engine
are the same objects a live session uses, so what the demo shows (accuracy, latency) is what a
lab would see.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import mne

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.decisions import Result, RunningAccuracy
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay.player import LSLReplayer
from neuralign.realtime.replay.timing import TimingProfile
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import Subscription
from neuralign.signal.events import stimulus_events


@dataclass
class ReplaySession:
    replayer: LSLReplayer
    engine: Engine
    n_trials: int  # stimuli whose whole epoch window is replayed (the results to expect)
    template_ids: set[str] = field(default_factory=set)
    duration_s: float = 0.0
    sfreq: float = 0.0
    _sub: Subscription | None = field(default=None, init=False, repr=False)
    _decoded: list[Result] = field(default_factory=list, init=False, repr=False)

    def start(self) -> None:
        # subscribed before the engine starts: the session sees every result it decodes
        self._sub = self.engine.subscribe()
        self.replayer.start()
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()
        self.replayer.stop()
        if self._sub is not None:  # what it decoded while stopping stays readable
            self._sub.close()

    def results(self) -> list[Result]:
        """Every result decoded since :meth:`start`, in publication order (a copy)."""
        if self._sub is not None:
            self._decoded += self._sub.drain()
        return list(self._decoded)

    def results_in_stimulus_order(self) -> list[Result]:
        """The engine's results sorted by stimulus onset (trial order, whatever the batching)."""
        return sorted(self.results(), key=lambda r: r.marker_timestamp)

    def accuracy(self) -> dict[str, float]:
        """Running single-trial and repetition-averaged top-1/top-5 on trials with known truth
        (:meth:`RunningAccuracy.summary`)."""
        return RunningAccuracy(self.template_ids).extend(self.results()).summary()


def replay_session(bundle: Bundle, raw_path: Path, rt: RealtimeConfig, speed: float = 1.0,
                   n_trials: int | None = None, duration_s: float | None = None,
                   device: str = "auto", result_source_id: str | None = None,
                   name: str = "neuralign-demo", timing: TimingProfile | None = None,
                   timing_seed: int = 0) -> ReplaySession:
    """Build (not start) a replay of ``raw_path`` (its first ``n_trials`` stimuli and/or first
    ``duration_s`` seconds) over LSL and an engine reading it through an LSL source.
    ``timing``: replay like that device (:mod:`~neuralign.realtime.replay.timing`)."""
    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    window_end = bundle.manifest.epoch.tmax
    sfreq = raw.info["sfreq"]
    if n_trials is not None and n_trials < len(raw.annotations):
        # keep the window after the last kept onset so its epoch completes
        end = raw.annotations.onset[n_trials - 1] - raw.first_time + window_end + 0.2
        raw.crop(0, min(end, raw.times[-1]))
        raw.set_annotations(raw.annotations[:n_trials])
    if duration_s is not None:
        raw.crop(0, min(duration_s, raw.times[-1]))
    complete = int(sum(s / sfreq + window_end <= raw.times[-1] for s, _ in stimulus_events(raw)))
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"{name}-{sid[:6]}", source_id=sid, speed=speed,
                               chunk_size=rt.chunk_size, wait_for_consumers=30.0,
                               timing=timing, timing_seed=timing_seed)
    src = replay_source(rep, timeout=rt.connect_timeout_s, buffer_seconds=rt.buffer_seconds)
    engine = Engine(bundle, src, rt, device=device, result_source_id=result_source_id)
    return ReplaySession(rep, engine, complete, set(bundle.template_ids),
                         float(raw.times[-1]), sfreq)
