"""The realtime engine: source -> online pipeline -> fixed-latency batcher -> decoder -> outputs.

Three threads, none waiting on another's slow path: the source's acquisition thread fills its
ring buffer; the processing thread filters new samples, turns markers into epochs and queues ready
epochs; the inference thread batches them (full batch, or when the oldest waited ``max_wait_ms``)
and publishes results. The GUI only reads the viewer queue and the processed buffer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from pylsl import local_clock

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.inference import Decoder
from neuralign.realtime.latency import LatencyStats, stage_durations
from neuralign.realtime.online import Epoch, OnlinePipeline
from neuralign.realtime.outputs import ResultOutlet, ViewerQueue
from neuralign.realtime.sources.base import Source

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    end: int  # global input index one past the chunk's last sample
    acquired: float
    filtered: float


class Engine:
    def __init__(self, bundle: Bundle, source: Source, config: RealtimeConfig | None = None,
                 recorder=None, result_source_id: str | None = None, device: str = "auto",
                 publish_lsl: bool = True):
        self.bundle = bundle
        self.source = source
        self.cfg = config or RealtimeConfig()
        self.recorder = recorder
        self.stats = LatencyStats()
        self.viewer = ViewerQueue()
        self.results: deque[dict] = deque(maxlen=100000)
        self.outlet = (ResultOutlet(self.cfg.result_stream_name, result_source_id)
                       if publish_lsl else None)
        self.decoder = Decoder(bundle, self.cfg.batch_size, self.cfg.top_k, device,
                               self.cfg.torch_threads)
        self.pipeline: OnlinePipeline | None = None
        self._ready: queue.Queue[Epoch] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._chunks: deque[_Chunk] = deque(maxlen=4096)
        self._deferred = []
        self._rep_sum: dict[str, np.ndarray] = {}
        self._rep_n: dict[str, int] = {}
        self.n_decoded = 0
        self.n_lost_samples = 0
        self._next_ready_s: float | None = None  # written by the processing thread
        self.masked_channels: list[int] = []
        self.last_reconstruction: dict | None = None
        self.error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        desc = self.source.open() if self.source.description is None else self.source.description
        self.pipeline = OnlinePipeline(
            self.bundle, desc.ch_names, desc.sfreq, fill_missing=self.cfg.fill_missing,
            sliding_hop_s=None if self.source.has_markers else self.cfg.sliding_hop_s,
            buffer_seconds=self.cfg.buffer_seconds, stream_label=f"stream '{desc.name}'")
        self._read_pos = 0
        self.source.start()
        self._stop.clear()
        for target, name in ((self._process_loop, "process"), (self._inference_loop, "infer")):
            t = threading.Thread(target=self._guard(target), name=f"neuralign-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # surfaced by the CLI; never silently lost
                log.exception("engine thread failed")
                self.error = exc
                self._stop.set()
        return run

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        self.source.stop()
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- processing thread -------------------------------------------------------------------
    def _raw_timestamp(self, index: int) -> float | None:
        got = self.source.buffer.read(index, index + 1)
        return None if got is None else float(got[1][0])

    def _process_loop(self) -> None:
        src, pipe = self.source, self.pipeline
        while not self._stop.is_set():
            worked = False
            n = src.buffer.n_written
            if n > self._read_pos:
                start = max(self._read_pos, src.buffer.first_available)
                if start > self._read_pos:
                    self.n_lost_samples += start - self._read_pos
                    log.warning("engine fell behind: %d samples overwritten", start - self._read_pos)
                got = src.buffer.read(start, n)
                if got is not None:
                    data, ts = got
                    t_acq, t_filt = pipe.push(data, ts)
                    self._chunks.append(_Chunk(n, t_acq, t_filt))
                    if self.recorder is not None:
                        self.recorder.write_samples(data, ts)
                    self._read_pos = n
                    worked = True
            for m in src.pop_markers():
                if self.recorder is not None:
                    self.recorder.write_event(m)
                self._deferred.append(m)
            if self._deferred:
                self._deferred = [m for m in self._deferred if not self._add_marker(m)]
            for ep in pipe.ready_epochs(self._raw_timestamp):
                self._stamp_chunk(ep)
                self._ready.put(ep)
                worked = True
            self._next_ready_s = pipe.seconds_until_next_ready()
            if not worked:
                self._stop.wait(0.001)

    def _add_marker(self, m) -> bool:
        """Hand a marker to the pipeline; False if its sample has not arrived yet (retry later)."""
        buf = self.source.buffer
        last = self._raw_timestamp(buf.n_written - 1) if buf.n_written else None
        if last is None or m.timestamp > last + 0.5 / self.source.description.sfreq:
            return False  # markers may arrive before their sample: wait for the data
        idx = buf.index_of_time(m.timestamp)
        if idx is None:
            log.warning("marker %r at %.3f is outside the buffer; dropped", m.value, m.timestamp)
        else:
            self.pipeline.add_marker(m.value, idx, m.timestamp, m.received or local_clock())
        return True

    def _stamp_chunk(self, ep: Epoch) -> None:
        last = self.pipeline.last_input_index(ep.onset_index)
        for c in self._chunks:
            if c.end > last:
                ep.stages["acquired"] = c.acquired
                ep.stages["filtered"] = c.filtered
                break
        ep.stages["sample"] = ep.last_sample_timestamp

    # ---- inference thread --------------------------------------------------------------------
    def _inference_loop(self) -> None:
        pending: list[Epoch] = []
        max_wait = self.cfg.max_wait_ms / 1e3
        while not self._stop.is_set() or pending:
            timeout = self.cfg.cadence_ms / 1e3
            if pending:
                timeout = max(0.0, min(timeout, pending[0].stages["queued"] + max_wait - local_clock()))
            try:
                ep = self._ready.get(timeout=timeout)
                ep.stages["queued"] = local_clock()
                pending.append(ep)
                while len(pending) < self._capacity:
                    try:
                        ep = self._ready.get_nowait()
                    except queue.Empty:
                        break
                    ep.stages["queued"] = local_clock()
                    pending.append(ep)
            except queue.Empty:
                if self._stop.is_set():
                    pending and self._run_batch(pending)
                    return
            if pending and (len(pending) >= self._capacity
                            or local_clock() - pending[0].stages["queued"] >= max_wait
                            or self._nothing_can_join(pending[0], max_wait)):
                self._run_batch(pending)
                pending = []

    def _nothing_can_join(self, first: Epoch, max_wait: float) -> bool:
        """True when no further epoch can be ready before the oldest one's deadline."""
        if not self._ready.empty():
            return False
        nxt = self._next_ready_s
        left = first.stages["queued"] + max_wait - local_clock()
        return nxt is None or nxt > left

    @property
    def _capacity(self) -> int:
        """Epochs that fit one fixed-size batch (a repeated image also needs its average)."""
        return max(1, self.cfg.batch_size // 2)

    def _run_batch(self, batch: list[Epoch]) -> None:
        t_batch = local_clock()
        items, owners = [], []
        missing = self.pipeline.missing
        for ep in batch:
            ep.stages["batch_start"] = t_batch
            if len(missing):  # --fill-missing: the model reconstructs absent channels first
                ep.data[missing] = self.decoder.reconstruct(ep.data, missing.tolist())[missing]
            items.append(ep.data)
            owners.append((ep, "single"))
            if ep.label is not None:
                s = self._rep_sum.get(ep.label)
                self._rep_sum[ep.label] = ep.data.astype(np.float64) if s is None else s + ep.data
                self._rep_n[ep.label] = self._rep_n.get(ep.label, 0) + 1
                if self._rep_n[ep.label] >= 2:
                    items.append((self._rep_sum[ep.label] / self._rep_n[ep.label]).astype(np.float32))
                    owners.append((ep, "avg"))
        decoded = []
        for i in range(0, len(items), self.decoder.batch_size):
            decoded += self.decoder.decode(items[i : i + self.decoder.batch_size])
        t_inf = local_clock()
        by_epoch: dict[int, dict] = {}
        for (ep, kind), dec in zip(owners, decoded):
            r = by_epoch.setdefault(ep.epoch_id, {
                "epoch_id": ep.epoch_id, "marker": ep.label, "marker_timestamp": ep.onset_timestamp,
                "last_sample_timestamp": ep.last_sample_timestamp,
                "n_repetitions": self._rep_n.get(ep.label, 1) if ep.label else 1})
            prefix = "" if kind == "single" else "avg_"
            r[prefix + "topk_ids"] = dec.topk_ids
            r[prefix + "topk_scores"] = [round(s, 6) for s in dec.topk_scores]
        for ep in batch:
            ep.stages["inferred"] = t_inf
            r = by_epoch[ep.epoch_id]
            r["stages_ms"] = {k: round(v, 3) for k, v in stage_durations(ep.stages).items()}
            t_pub = self.outlet.publish(r) if self.outlet else local_clock()
            ep.stages["published"] = t_pub
            r["stages_ms"] = self.stats.add(ep.stages)
            self.results.append(r)
            self.viewer.put(r)
            if self.recorder is not None:
                self.recorder.write_result(r)
            self.n_decoded += 1
        masked = list(self.masked_channels)
        if masked:  # after publishing: the viewer's reconstruction never delays a result
            ep = batch[-1]
            rec = self.decoder.reconstruct(ep.data, masked)
            self.last_reconstruction = {"epoch_id": ep.epoch_id, "channels": masked,
                                        "original": ep.data[masked], "reconstructed": rec[masked]}

    # ---- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        h = self.source.health
        return {"decoded": self.n_decoded, "latency_ms": self.stats.summary(),
                "received": h.n_received, "dropped": h.n_dropped, "gaps": h.n_gaps,
                "reconnects": h.n_reconnects, "connected": h.connected,
                "lost_in_engine": self.n_lost_samples}

    def wait_for(self, n_results: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.n_decoded < n_results and time.monotonic() < deadline and self.error is None:
            time.sleep(0.02)
        return self.n_decoded >= n_results
