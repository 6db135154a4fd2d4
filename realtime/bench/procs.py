"""The processes of ``neuralign bench latency`` other than the engine: producer, naive baseline,
consumer. Each is a top-level function started with the ``spawn`` method, so it shares nothing
with the engine's process but the machine (and LSL): what it costs is not charged to the engine,
and the engine's CPU use is measurable on its own.

Hand-over: small picklable specs in, ``multiprocessing`` events for readiness and stop, and one
JSON file out per process (read by :mod:`neuralign.realtime.bench.run`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class StreamIds:
    """LSL identities of one produced stream and its markers."""

    name: str
    source_id: str
    marker_source_id: str


@dataclass
class ProducerSpec:
    """What to push: a recording (``raw_path``) or synthetic noise (``n_channels``), looped to
    ``duration_s``, in chunks of ``chunk_size``, on ``streams`` (same data and stamps on each:
    every stream's epochs complete at the same instant, the worst case for a shared batcher)."""

    streams: list[StreamIds]
    duration_s: float
    chunk_size: int
    out: Path
    raw_path: Path | None = None
    n_channels: int = 0  # synthetic mode
    sfreq: float = 1000.0  # synthetic mode
    soa_s: float = 0.2  # synthetic mode: one marker every soa_s
    labels: list[str] = field(default_factory=list)  # synthetic mode: marker values, cycled
    ch_names: list[str] = field(default_factory=list)  # synthetic mode
    ch_type: str = "eeg"
    #: ``nominal``: sample k stamped t0 + k / sfreq (a hardware-clocked sender); ``push``: no
    #: stamp given, so liblsl stamps each chunk's last sample with local_clock() at the push and
    #: back-dates the others at the nominal rate (what device apps do: the jitter of every push
    #: lands in the stamps)
    stamps: str = "nominal"


def _load_producer_data(spec: ProducerSpec) -> tuple[np.ndarray, float, list[str], list[str],
                                                     list[tuple[int, str]]]:
    """(samples x channels float32, sfreq, names, types, events) of one pass of the data."""
    if spec.raw_path is not None:
        import mne

        from neuralign.signal.events import stimulus_events

        raw = mne.io.read_raw_fif(spec.raw_path, preload=True, verbose="error")
        raw.pick("data", exclude=())
        data = np.ascontiguousarray(raw.get_data().T, dtype=np.float32)
        return (data, raw.info["sfreq"], list(raw.ch_names), raw.get_channel_types(),
                stimulus_events(raw))
    n = int(round(min(spec.duration_s, 60.0) * spec.sfreq))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, spec.n_channels)).astype(np.float32)
    step = int(round(spec.soa_s * spec.sfreq))
    events = [(s, spec.labels[i % len(spec.labels)])
              for i, s in enumerate(range(step, n - step, step))]
    return data, spec.sfreq, spec.ch_names, [spec.ch_type] * spec.n_channels, events


def pushes_path(out: Path) -> Path:
    """Where the producer writing its summary to ``out`` saves its push times."""
    return out.with_name(out.stem + "-pushes.npz")


@dataclass(frozen=True)
class PushRecord:
    """When the producer's pushes returned: each chunk's last sample index (increasing) and the
    local_clock time after its push. The tail breakdown tells a late push (the producer's) from
    a late pull (transport, the engine) with it."""

    end: np.ndarray
    at: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, end=self.end, at=self.at)

    @classmethod
    def load(cls, path: Path) -> PushRecord | None:
        """The record at ``path``; None when the producer wrote none."""
        if not path.exists():
            return None
        with np.load(path) as f:
            return cls(f["end"], f["at"])

    def times(self, indices: np.ndarray) -> np.ndarray:
        """When the push of each sample index in ``indices`` had returned (NaN: not pushed)."""
        pos = np.searchsorted(self.end, indices)  # the chunk whose last sample is the first >= index
        ok = (pos < len(self.end)) & (indices >= 0)
        out = np.full(len(indices), np.nan)
        out[ok] = self.at[pos[ok]]
        return out


def run_producer(spec: ProducerSpec, ready: Any, go: Any, stop: Any) -> None:
    """Push the data through real LSL at real time: a chunk is sent when its last sample is due
    (never early); sample k is stamped t0 + k / sfreq (``stamps='nominal'``) or by liblsl at the
    push (``'push'``); each marker is pushed before the chunk holding its onset sample, stamped
    with that sample's due time (a presenter stamps the stimulus, not the data's arrival)."""
    from neuralign.realtime.lsl_io import local_clock, make_outlet

    data, sfreq, names, types, events = _load_producer_data(spec)
    stype = "MUA" if spec.n_channels and spec.raw_path is None else "EEG"
    outlets = [make_outlet(s.name, stype, names, sfreq, s.source_id, types,
                           chunk_size=spec.chunk_size) for s in spec.streams]
    markers = [make_outlet(f"{s.name}-markers", "Markers", ["marker"], 0.0, s.marker_source_id,
                           ["misc"], dtype="string") for s in spec.streams]
    ready.set()
    go.wait()
    n_pass, total = data.shape[0], int(round(spec.duration_s * sfreq))
    ev_at = {}
    for s, lab in events:
        ev_at.setdefault(s, []).append(lab)
    ev_samples = np.array(sorted(ev_at), dtype=np.int64)
    late: list[float] = []
    pushed_end: list[int] = []  # each chunk's last sample (a PushRecord)
    pushed_at: list[float] = []
    n_markers = 0
    marker_samples: list[int] = []
    t0 = local_clock() + 0.05
    cpu0 = time.process_time()
    at_push = spec.stamps == "push"
    k = 0
    while k < total and not stop.is_set():
        b = min(k + spec.chunk_size, total, (k // n_pass + 1) * n_pass)
        due = t0 + (b - 1) / sfreq
        delay = due - local_clock()
        if delay > 0:
            time.sleep(delay)
        base = (k // n_pass) * n_pass
        lo, hi = np.searchsorted(ev_samples, [k - base, b - base])
        for s in ev_samples[lo:hi]:
            for lab in ev_at[int(s)]:
                for m in markers:
                    m.push_sample([lab], t0 + (base + s) / sfreq)
                n_markers += 1
                marker_samples.append(int(base + s))
        rows = data[k - base : b - base]
        # push_chunk of a (n, C) array hands liblsl the numpy buffer: ~3 us a call where
        # push_sample converts each value through ctypes (~10 us), a cost 8 streams at 1 kHz pay
        # 8000 times a second on the cores the engine needs
        if at_push:  # liblsl stamps it now (local_clock), like a device app
            for o in outlets:
                o.push_chunk(rows)
        else:
            stamps = t0 + (b - 1) / sfreq if b - k == 1 else [t0 + i / sfreq for i in range(k, b)]
            for o in outlets:
                o.push_chunk(rows, stamps)
        now = local_clock()
        late.append(now - due)
        pushed_end.append(b - 1)
        pushed_at.append(now)
        k = b
    cpu_fraction = (time.process_time() - cpu0) / max(local_clock() - t0, 1e-9)
    summary = {"t0": t0, "sfreq": sfreq, "n_sent": k, "n_channels": data.shape[1],
               "cpu_fraction_of_one_core": cpu_fraction,
               "marker_samples": marker_samples, "n_markers": n_markers,
               "late_ms": {"p50": 1e3 * float(np.percentile(late, 50)),
                           "p99": 1e3 * float(np.percentile(late, 99)),
                           "max": 1e3 * float(np.max(late))} if late else {}}
    PushRecord(np.asarray(pushed_end, np.int64), np.asarray(pushed_at)).save(pushes_path(spec.out))
    spec.out.write_text(json.dumps(summary))
    stop.wait(30)  # outlets live until the engine, baseline and consumer are done
    del outlets, markers


@dataclass
class NaiveSpec:
    """The pipeline a user would write with mne-lsl, on the first produced stream."""

    bundle_dir: Path
    stream: StreamIds
    result_source_id: str
    poll_s: float = 0.005
    bufsize_s: float = 5.0
    #: its threads' priority (scheduling.Priority): set on the main thread before mne-lsl and
    #: liblsl start theirs, which inherit it
    priority: str = "normal"


def _naive_stream(spec: NaiveSpec, bundle: Any) -> Any:
    """The mne-lsl ``StreamLSL`` on the first stream, picked, referenced and filtered (its own
    ``filter()`` / ``notch_filter()``) as the bundle's preprocessing says."""
    from mne_lsl.stream import StreamLSL

    pre = bundle.manifest.preprocessing
    stream = StreamLSL(spec.bufsize_s, source_id=spec.stream.source_id)
    stream.connect(timeout=20)
    stream.pick(bundle.ch_names)
    if pre.reference == "average":
        stream.set_eeg_reference("average")
    if pre.l_freq or pre.h_freq:
        h = pre.h_freq
        if h is None or h >= pre.resample_sfreq / 2:  # anti-aliasing before taking every q-th
            h = pre.resample_sfreq / 2.5
        stream.filter(pre.l_freq, h)
    for f in pre.notch_freqs:
        stream.notch_filter(f)
    return stream


class _NaiveEpochs:
    """Cuts one epoch per marker out of ``get_data()`` and runs the model on it (batch 1)."""

    def __init__(self, bundle: Any):
        import torch

        self.m = bundle.manifest
        self.model = bundle.build_model().eval()
        self.bank = torch.from_numpy(np.ascontiguousarray(bundle.template_embeddings))
        self.ids = bundle.template_ids
        self.white = self.m.noise_normalization.whitening()
        self.sfreq, self.q, self.outlet = 0.0, 1, None
        ep = self.m.epoch
        self.tstart = min(ep.tmin, ep.baseline[0]) if ep.baseline else ep.tmin
        self.n_pre = int(round((ep.tmin - self.tstart) * self.m.sfreq))
        self.n_ep = 0

    def attach(self, sfreq: float, outlet: Any) -> None:
        """The stream's rate (known once connected) and where results go."""
        self.sfreq, self.outlet = sfreq, outlet
        self.q = int(round(sfreq / self.m.sfreq))

    @property
    def winsize(self) -> float:
        """Seconds of buffer each poll reads (the longest window plus slack)."""
        return 2.0 + self.m.epoch.tmax - self.tstart

    def decode(self, pending: list[tuple[float, str]], data: np.ndarray, ts: np.ndarray,
               t_poll: float) -> list[tuple[float, str]]:
        """Decode and publish every pending marker whose window is in; returns those still
        incomplete (a window no longer in the buffer is lost)."""
        ep, sfreq = self.m.epoch, self.sfreq
        keep = []
        for onset, label in pending:
            if len(ts) == 0 or ts[-1] < onset + (ep.tmax - 1.0 / self.m.sfreq) - 0.5 / sfreq:
                keep.append((onset, label))
                continue
            i = int(np.searchsorted(ts, onset - 0.5 / sfreq))
            i0 = i + int(round(self.tstart * sfreq))
            idx = i0 + self.q * np.arange(self.n_pre + ep.n_times)
            if i0 < 0 or idx[-1] >= len(ts):
                continue  # window not in the buffer: lost
            self._publish(onset, label, data[:, idx], float(ts[idx[-1]]), t_poll)
        return keep

    def _publish(self, onset: float, label: str, x: np.ndarray, last_ts: float,
                 t_poll: float) -> None:
        import pylsl
        import torch

        from neuralign.realtime.decisions import Result

        if self.m.epoch.baseline:
            x = x - x[:, :self.n_pre].mean(axis=1, keepdims=True)
        x = self.white.apply(x[:, self.n_pre:]).astype(np.float32)
        t_cut = pylsl.local_clock()
        z = torch.nn.functional.normalize(
            self.model.encode_brain(torch.from_numpy(x).unsqueeze(0)), dim=-1)
        scores, top = (z @ self.bank.T).topk(min(5, len(self.ids)), dim=1)
        t_inf = pylsl.local_clock()
        r = Result(self.n_ep, label, float(onset), last_ts, 1,
                   [self.ids[j] for j in top[0].tolist()],
                   [round(s, 6) for s in scores[0].tolist()],
                   stages_ms={"detect": 1e3 * (t_poll - last_ts),
                              "cut": 1e3 * (t_cut - t_poll),
                              "inference": 1e3 * (t_inf - t_cut)})
        self.outlet.publish(r)
        self.n_ep += 1


def run_naive(spec: NaiveSpec, ready: Any, stop: Any) -> None:
    """mne-lsl ``StreamLSL`` + its ``filter()`` + a 5 ms polling loop that cuts each epoch with
    ``get_data()`` + the bundle's model (as built, batch 1) per epoch, results published like the
    engine's. Nothing from the engine is reused but the bundle and the result schema."""
    import pylsl
    import torch

    from neuralign.bundle import load_bundle
    from neuralign.realtime.outputs import ResultOutlet

    torch.set_num_threads(1)
    if spec.priority != "normal":
        from neuralign.realtime.scheduling import SchedulingPolicy, apply_to_current_thread

        apply_to_current_thread("critical", SchedulingPolicy(priority=spec.priority))
    bundle = load_bundle(spec.bundle_dir)
    epochs = _NaiveEpochs(bundle)
    stream = _naive_stream(spec, bundle)
    markers_info = pylsl.resolve_byprop("source_id", spec.stream.marker_source_id, 1, 20)
    marker_inlet = pylsl.StreamInlet(markers_info[0])
    marker_inlet.open_stream(timeout=10)
    epochs.attach(stream.info["sfreq"], ResultOutlet("naive-results", spec.result_source_id))
    ready.set()
    pending: list[tuple[float, str]] = []
    with torch.inference_mode():
        while not stop.is_set():
            vals, stamps = marker_inlet.pull_chunk(timeout=0.0)
            pending += [(t, v[0]) for v, t in zip(vals, stamps)]
            if pending:
                t_poll = pylsl.local_clock()
                data, ts = stream.get_data(winsize=min(spec.bufsize_s, epochs.winsize))
                pending = epochs.decode(pending, data, ts, t_poll)
            time.sleep(spec.poll_s)
    stream.disconnect()


@dataclass
class ConsumerSpec:
    """Plain pylsl reader of result streams (label -> source_id) and/or of one data stream (the
    transport floor: receive time - sample stamp with no processing at all). The benchmark runs
    one for the results and one for the floor: a 1 kHz pull in the results' process would hold
    its GIL when a result lands."""

    results: dict[str, str]
    data_source_id: str | None
    out: Path


def run_consumer(spec: ConsumerSpec, ready: Any, stop: Any) -> None:
    """Blocking pulls (they return the moment a sample lands), one thread per stream. Each
    result is kept with its receive time and how long this process's threads waited for a CPU
    since the previous receive (ms; NaN off Linux)."""
    import pylsl

    from neuralign.realtime.threadsched import process_run_delay_ns

    got: dict[str, list] = {k: [] for k in spec.results}
    transport: list[float] = []
    inlets = {}
    for label, sid in spec.results.items():
        info = pylsl.resolve_byprop("source_id", sid, 1, 20)
        if not info:
            raise RuntimeError(f"consumer: result stream {label} ({sid}) not found")
        inlets[label] = pylsl.StreamInlet(info[0], max_buflen=60)
        inlets[label].open_stream(timeout=10)
    data_inlet = None
    if spec.data_source_id:
        info = pylsl.resolve_byprop("source_id", spec.data_source_id, 1, 20)
        data_inlet = pylsl.StreamInlet(info[0], max_buflen=60, max_chunklen=1)
        data_inlet.open_stream(timeout=10)

    # run-queue time of this process's threads (liblsl's receivers included) at the last
    # receive of any stream: its growth up to a result is how long the hand-over of that result
    # waited for a CPU (the threads sleep between results)
    last_runq = process_run_delay_ns()
    runq_lock = threading.Lock()

    def pull_results(label: str) -> None:
        nonlocal last_runq
        inlet, out = inlets[label], got[label]
        while not stop.is_set():
            sample, _ = inlet.pull_sample(timeout=0.2)
            if sample is not None:
                t = pylsl.local_clock()
                with runq_lock:
                    now = process_run_delay_ns()
                    waited_ms, last_runq = 1e-6 * (now - last_runq), now
                out.append((sample[0], t, waited_ms))

    def pull_data() -> None:
        while not stop.is_set():
            sample, ts = data_inlet.pull_sample(timeout=0.2)
            if sample is not None:
                transport.append((pylsl.local_clock() - ts, ts))

    threads = [threading.Thread(target=pull_results, args=(k,), daemon=True) for k in inlets]
    if data_inlet is not None:
        threads.append(threading.Thread(target=pull_data, daemon=True))
    for t in threads:
        t.start()
    ready.set()
    for t in threads:
        t.join()
    spec.out.write_text(json.dumps({"results": got, "transport": transport}))
