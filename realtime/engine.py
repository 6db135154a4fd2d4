"""The realtime engine: threads and fan-out around the pipeline, epocher, batcher and decider.

Three threads, none waiting on another's slow path: the source's acquisition thread fills its
ring buffer; the processing thread feeds new samples to the :class:`Pipeline`, markers to the
:class:`Epocher` and queues the epochs it cuts; the inference thread groups them by the
:class:`BatchPolicy`, has the :class:`Decider` turn a batch into :class:`Result` objects and fans
them out (LSL outlet, ``results``, viewer queue, recorder). The GUI only reads the viewer queue and
the processed buffer, and asks for reconstructions through :meth:`Engine.request_reconstruction`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.batcher import BatchPolicy
from neuralign.realtime.decisions import Decider, Reconstruction, Result
from neuralign.realtime.epocher import Epoch, Epocher, EpochWindow
from neuralign.realtime.generation import GeneratorWorker
from neuralign.realtime.inference import Decoder
from neuralign.realtime.latency import LatencyStats, stage_durations
from neuralign.realtime.lsl_io import local_clock
from neuralign.realtime.outputs import ResultOutlet, ViewerQueue
from neuralign.realtime.pipeline import Pipeline
from neuralign.realtime.sources.base import Source

if TYPE_CHECKING:
    from neuralign.realtime.recorder import Recorder

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    end: int  # global input index one past the chunk's last sample
    acquired: float
    filtered: float


class Engine:
    """Decodes ``source`` with ``bundle`` from :meth:`start` to :meth:`stop`.

    ``results`` holds every :class:`Result` (newest last); ``last_reconstruction`` the latest
    masked-channel reconstruction asked for with :meth:`request_reconstruction`.
    """

    def __init__(self, bundle: Bundle, source: Source, config: RealtimeConfig | None = None,
                 recorder: Recorder | None = None, result_source_id: str | None = None,
                 device: str = "auto", publish_lsl: bool = True):
        self.bundle = bundle
        self.source = source
        self.cfg = config or RealtimeConfig()
        self.recorder = recorder
        self.stats = LatencyStats()
        self.viewer = ViewerQueue()
        self.results: deque[Result] = deque(maxlen=100000)
        self.outlet = (ResultOutlet(self.cfg.result_stream_name, result_source_id)
                       if publish_lsl else None)
        self.decoder = Decoder(bundle, self.cfg.batch_size, self.cfg.top_k, device,
                               self.cfg.torch_threads)
        self.policy = BatchPolicy.from_config(self.cfg)
        self.pipeline: Pipeline | None = None
        self.epocher: Epocher | None = None
        self.decider: Decider | None = None
        self._ready: queue.Queue[Epoch] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._chunks: deque[_Chunk] = deque(maxlen=4096)
        self.n_decoded = 0
        self.n_lost_samples = 0
        self._next_ready_s: float | None = None  # written by the processing thread
        self._masked: list[int] = []  # replaced (never mutated) by request_reconstruction
        self.last_reconstruction: Reconstruction | None = None
        self.error: BaseException | None = None
        # the bundle's generator (None without one): images of decoded epochs, in its own thread
        self.generation = GeneratorWorker.for_bundle(bundle, device)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        desc = self.source.open() if self.source.description is None else self.source.description
        self.pipeline = Pipeline(
            self.bundle, desc.ch_names, desc.sfreq, fill_missing=self.cfg.fill_missing,
            buffer_seconds=self.cfg.buffer_seconds, stream_label=f"stream '{desc.name}'")
        self.epocher = Epocher(
            self.pipeline, EpochWindow.for_pipeline(self.bundle.manifest.epoch, self.pipeline),
            inputs=self.source.buffer,
            sliding_hop_s=None if self.source.has_markers else self.cfg.sliding_hop_s)
        self.decider = Decider(self.decoder, self.pipeline.missing)
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
        if self.generation is not None:
            self.generation.stop()
        self.source.stop()
        if self.recorder is not None:
            self.recorder.close()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what the GUI asks -------------------------------------------------------------------
    def request_reconstruction(self, channels: Sequence[int]) -> None:
        """Reconstruct these bundle channels of the last epoch of every batch, after publishing
        (so it never delays a result); an empty list stops it. Safe from any thread."""
        self._masked = sorted(int(c) for c in channels)

    @property
    def masked_channels(self) -> list[int]:
        """The channels reconstructed after each batch."""
        return list(self._masked)

    # ---- processing thread -------------------------------------------------------------------
    def _process_loop(self) -> None:
        src, pipe, epocher = self.source, self.pipeline, self.epocher
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
            markers = src.pop_markers()
            if self.recorder is not None:
                for m in markers:
                    self.recorder.write_event(m)
            epocher.add_markers(markers)
            for ep in epocher.ready_epochs():
                self._stamp_chunk(ep)
                self._ready.put(ep)
                worked = True
            self._next_ready_s = epocher.seconds_until_next_ready()
            if not worked:
                self._stop.wait(0.001)

    def _stamp_chunk(self, ep: Epoch) -> None:
        """Acquisition and filter times of the chunk that held the epoch's last sample."""
        for c in self._chunks:
            if c.end > ep.last_input_index:
                ep.stages["acquired"] = c.acquired
                ep.stages["filtered"] = c.filtered
                break
        ep.stages["sample"] = ep.last_sample_timestamp

    # ---- inference thread --------------------------------------------------------------------
    def _inference_loop(self) -> None:
        pending: list[Epoch] = []
        policy = self.policy
        while not self._stop.is_set() or pending:
            oldest = pending[0].stages["queued"] if pending else None
            try:
                pending.append(self._queued(self._ready.get(timeout=policy.timeout(
                    oldest, local_clock()))))
                while len(pending) < policy.capacity:
                    try:
                        pending.append(self._queued(self._ready.get_nowait()))
                    except queue.Empty:
                        break
            except queue.Empty:
                if self._stop.is_set():
                    if pending:
                        self._run_batch(pending)
                    return
            if pending and policy.should_dispatch(len(pending), pending[0].stages["queued"],
                                                  local_clock(), self._next_ready_s,
                                                  self._ready.empty()):
                self._run_batch(pending)
                pending = []

    @staticmethod
    def _queued(ep: Epoch) -> Epoch:
        ep.stages["queued"] = local_clock()
        return ep

    def _run_batch(self, batch: list[Epoch]) -> None:
        t_batch = local_clock()
        for ep in batch:
            ep.stages["batch_start"] = t_batch
        results = self.decider.decide(batch)
        t_inf = local_clock()
        for ep, r in zip(batch, results):
            ep.stages["inferred"] = t_inf
            # on the wire: the stages up to inference; in process: all of them
            r.stages_ms = {k: round(v, 3) for k, v in stage_durations(ep.stages).items()}
            ep.stages["published"] = self.outlet.publish(r) if self.outlet else local_clock()
            r.stages_ms = self.stats.add(ep.stages)
            self._fan_out(r)
        if self.generation is not None:  # after publishing; generated in the worker's thread
            self.generation.submit(results, self.decider.last_embeddings)
        masked = self._masked
        if masked:  # after publishing: the viewer's reconstruction never delays a result
            self.last_reconstruction = self.decider.reconstruct(batch[-1], masked)

    def _fan_out(self, r: Result) -> None:
        self.results.append(r)
        self.viewer.put(r)
        if self.recorder is not None:
            self.recorder.write_result(r.to_dict())
        self.n_decoded += 1

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
