"""The realtime engine: threads and fan-out around the pipeline, epocher, batcher and results.

Threads, none waiting on another's slow path: each source's acquisition thread fills its ring
buffer and sets the engine's wake-up event when markers arrive and when the sample the next epoch
waits for is in (once for that sample); the processing thread sleeps on that event (and wakes
every :data:`PROCESS_PERIOD_S` for all streams at once), then feeds each stream's new samples to
its :class:`Pipeline`, markers to its :class:`Epocher` and hands the epochs they cut to
inference; the inference thread groups the epochs of every stream by the :class:`BatchPolicy`
(one batch may mix streams), has the :class:`ResultBuilder` turn a batch into :class:`Result`
objects and fans them out (LSL outlet, its result subscriptions, recorder). When the policy
would dispatch at once anyway (the inference thread idle, nothing waiting, no other epoch due
before the deadline: the usual case at an SOA of 100 ms or more), the processing thread runs the
batch itself: a thread hand-off is one more wake-up for the scheduler to delay, and on a loaded
machine that costs milliseconds.
With several sources every result names its stream (``Result.stream``). Readers (CLI, GUI,
benchmarks) take results through :meth:`Engine.subscribe` (:mod:`.subscriptions`); the GUI also
reads the processed buffer, and asks for reconstructions through
:meth:`Engine.request_reconstruction`.
"""

from __future__ import annotations

import gc
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from threadpoolctl import threadpool_limits

from neuralign.bundle import Bundle
from neuralign.config import RealtimeConfig
from neuralign.errors import UserError
from neuralign.realtime import early_encoding, scheduling
from neuralign.realtime.batcher import BatchPolicy, batch_size
from neuralign.realtime.decisions import Reconstruction, Result, ResultBuilder, repetition_key
from neuralign.realtime.early_encoding import EarlyEncoder
from neuralign.realtime.epocher import Epoch, Epocher, EpochWindow
from neuralign.realtime.generation import GeneratorWorker
from neuralign.realtime.health import Health
from neuralign.realtime.inference import Decoder
from neuralign.realtime.latency import LatencyStats, stage_durations
from neuralign.realtime.lsl_io import local_clock
from neuralign.realtime.outputs import ResultOutlet
from neuralign.realtime.pipeline import Pipeline, SignalSnapshot
from neuralign.realtime.queues import DropOldestQueue
from neuralign.realtime.scale_check import ScaleCheck
from neuralign.realtime.scheduling import (
    SchedulingPolicy,
    apply_to_current_thread,
    native_threads_as,
)
from neuralign.realtime.sources.base import Source
from neuralign.realtime.subscriptions import MAX_RESULTS, ResultHub, Subscription
from neuralign.realtime.threadsched import EpochSched, SchedSplit, thread_times
from neuralign.realtime.worker import ThreadedWorker

if TYPE_CHECKING:
    from neuralign.realtime.recorder import Recorder

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The processing thread brings every stream up to date this often (the viewer's display and
#: the filters' state stay this fresh), besides waking at once for markers and for the sample an
#: epoch waits for. One periodic wake-up for all streams: with each source waking it on its own
#: period, 8 streams woke it 400 times a second.
PROCESS_PERIOD_S = 0.02
#: Epochs waiting for inference, at most: beyond, the oldest is dropped (counted in health).
MAX_READY = 1024


@dataclass
class _Chunk:
    end: int  # global input index one past the chunk's last sample
    acquired: float
    filtered: float


def _holding(entries: deque[T], index: int, end: Callable[[T], int]) -> T | None:
    """The entry whose span holds sample ``index``, of entries with increasing ``end`` (one past
    their last sample): searched from the newest back, as the epoch was just cut (from the
    oldest, 4096 one-sample chunks took ~0.4 ms per epoch). By index, not by iterating: a
    source's acquisition thread appends to its arrivals meanwhile (deque indexing is atomic
    under the GIL, iterating a deque that grows raises)."""
    found = None
    for k in range(1, len(entries) + 1):
        try:
            entry = entries[-k]
        except IndexError:  # the deque dropped its oldest meanwhile
            break
        if end(entry) <= index:
            break
        found = entry
    return found


@dataclass
class _Lane:
    """One input stream: its source, pipeline and epocher, and how far the engine has read."""

    source: Source
    stream: str | None  # the name results carry (None when the engine has one source)
    pipeline: Pipeline
    epocher: Epocher
    read_pos: int = 0
    n_lost: int = 0
    chunks: deque[_Chunk] = field(default_factory=lambda: deque(maxlen=4096))

    @property
    def early_lead(self) -> int:
        """Processed samples before its end from which an epoch is encoded early."""
        return int(round(early_encoding.LEAD_S * self.pipeline.sfreq_out))

    def repetition_key(self, label: str | None) -> str | None:
        return repetition_key(label, self.stream)


class Engine(ThreadedWorker):
    """Decodes ``source`` (one :class:`Source` or several) with ``bundle`` from :meth:`start` to
    :meth:`stop`. ``source``/``pipeline``/``epocher`` are the first stream's; ``lanes`` all.

    Readers take the decoded :class:`Result` objects through :meth:`subscribe`; the engine keeps
    the newest ``results_maxlen`` for readers that ask for the history (``replay=True``).
    ``last_reconstruction`` is the latest masked-channel reconstruction asked for with
    :meth:`request_reconstruction`.
    """

    def __init__(self, bundle: Bundle, source: Source | Sequence[Source], config: RealtimeConfig | None = None,
                 recorder: Recorder | None = None, result_source_id: str | None = None,
                 device: str = "auto", publish_lsl: bool = True,
                 results_maxlen: int = MAX_RESULTS):
        self.bundle = bundle
        self.sources: list[Source] = [source] if isinstance(source, Source) else list(source)
        if not self.sources:
            raise ValueError("an engine needs at least one source")
        self.source = self.sources[0]
        self.lanes: list[_Lane] = []
        self.cfg = config or RealtimeConfig()
        self.recorder = recorder
        self.stats = LatencyStats()
        self._hub = ResultHub(keep=results_maxlen)  # every reader's subscription
        #: what every engine thread (and each source's, the generator's) asks of the OS
        self._scheduling = SchedulingPolicy.from_config(self.cfg.scheduling).for_sources(
            len(self.sources), all(s.live for s in self.sources))
        for src in self.sources:  # before they open: liblsl's threads inherit it
            src.scheduling = self._scheduling
        # liblsl's thread that sends each result to a consumer is on every epoch's path
        with native_threads_as("critical", self._scheduling):
            self.outlet = (ResultOutlet(self.cfg.result_stream_name,
                                        result_source_id or self.cfg.result_source_id)
                           if publish_lsl else None)
        n_slots = batch_size(self.cfg, len(self.sources))
        if n_slots != self.cfg.batch_size:
            log.info("batch size %d: two slots for each of the %d streams (realtime.batch_size "
                     "is %d)", n_slots, len(self.sources), self.cfg.batch_size)
        self.decoder = Decoder(bundle, n_slots, self.cfg.top_k, device, self.cfg.torch_threads)
        self.policy = BatchPolicy.from_config(self.cfg, len(self.sources))
        self.pipeline: Pipeline | None = None
        self.epocher: Epocher | None = None
        self.result_builder: ResultBuilder | None = None
        #: encodes epochs' first frames before they complete (None: off, see _early_encoder)
        self.early: EarlyEncoder | None = None
        self._ready: DropOldestQueue[Epoch] = DropOldestQueue(MAX_READY,
                                                              on_drop=self._ready_dropped)
        self.health = Health()  # every lane's bad input, counted in one place
        self.scale_check = ScaleCheck(bundle.manifest, self.health)  # whitened epochs' scale
        self._init_threads()
        self._wake = threading.Event()  # set by every source when data or markers arrive
        self._infer_lock = threading.Lock()  # one batch at a time, whichever thread runs it
        #: one pass over the streams at a time: the processing thread's, or an acquisition
        #: thread's for the sample an epoch waited for (realtime.inline_pass)
        self._pass_lock = threading.Lock()
        self.n_inline_passes = 0  # passes an acquisition thread ran (instrumentation)
        self._infer_pending = 0  # epochs the inference thread holds back for its batch
        # epoch order: the processing thread runs a batch inline only when every epoch cut
        # before it was run (under _infer_lock) or dropped from the ready queue
        self._n_cut = 0  # epochs dispatched (processing thread)
        self._n_run = 0  # epochs through _run_batch (under _infer_lock)
        self._n_ready_dropped = 0  # epochs dropped from the full ready queue (processing thread)
        self.n_inline_batches = 0  # batches the processing thread ran itself (instrumentation)
        self.n_prewarms = 0  # model touches before an epoch was due (realtime.prewarm_ms)
        self.n_early_epochs = 0  # epochs decoded from an early encoding (realtime.early_encoding)
        self._touched_for = -math.inf  # the due time (local clock) of the last one
        self._touch_s = 0.0  # how long the last touch took (it starts that much earlier)
        for src in self.sources:
            src.add_listener(self._wake)
            src.notify_period_s = None  # the processing thread's own period covers it
        self.n_decoded = 0
        self._next_ready_s: float | None = None  # written by the processing thread
        self._masked: list[int] = []  # replaced (never mutated) by request_reconstruction
        self.last_reconstruction: Reconstruction | None = None
        self.error: BaseException | None = None
        self._froze = False  # start() moved the live objects into gc's permanent generation
        self._blas_limits: threadpool_limits | None = None  # numpy's BLAS threads while running
        # the bundle's generator (None without one): images of decoded epochs, in its own thread
        self.generation = GeneratorWorker.for_bundle(
            bundle, device, self.cfg.generated_images, cpu_share=self.cfg.generation_cpu_share,
            max_age_s=self.cfg.generation_max_age_s)
        #: why there is no generation ("" when there is): no generator, or it failed validation
        self.generation_off = GeneratorWorker.off_reason(bundle, self.cfg.generated_images)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.recorder is not None and len(self.sources) > 1:
            raise UserError("--record records one stream; this engine reads "
                            f"{len(self.sources)}")
        for src in self.sources:  # all open first: a lane's name depends on the others'
            if src.description is None:
                src.open()
        self.lanes = [self._lane(src, i) for i, src in enumerate(self.sources)]
        if self.recorder is not None:  # where markers were cut, for offline parity
            lane0, rec = self.lanes[0], self.recorder
            lane0.epocher.on_placed = lambda m, idx: rec.write_placement(
                m.timestamp, m.value, idx - lane0.n_lost)
        self.pipeline, self.epocher = self.lanes[0].pipeline, self.lanes[0].epocher
        missing = {tuple(lane.pipeline.missing.tolist()) for lane in self.lanes}
        if len(missing) > 1:
            raise UserError("--fill-missing: the streams lack different channels; one engine "
                            "fills the same channels in every stream")
        self.result_builder = ResultBuilder(self.decoder, self.pipeline.missing)
        self.early = self._early_encoder()
        policy = self._scheduling
        # one stream: its acquisition thread runs the pass for its epochs' last samples; with
        # several, one thread's pass for all (8 streams, 30 s: p99 35 ms with the processing
        # thread's passes, 54-62 ms with the acquisition threads' - each blocked its stream)
        inline = self.cfg.inline_pass and len(self.sources) == 1
        for src in self.sources:
            src.on_awaited = self._pass_inline if inline else None
            src.start()
        if self.generation is not None:
            self.generation.scheduling = policy
            self.generation.busy = self._decoding
            self.generation.next_epoch_in = self._seconds_to_due
        # numpy's BLAS (the whitening, early encoding) on as many threads as torch: by default
        # OpenBLAS wakes a second thread for each product, which then spins for a while; at
        # one stream that took the engine from 22 % to 58 % of a core (30 s runs)
        self._blas_limits = threadpool_limits(self.cfg.torch_threads, user_api="blas")
        if self.cfg.gc_freeze:  # everything alive now (model, bundle, libraries) is permanent
            # no gc.collect() first: a full collection here takes ~130 ms with torch and mne
            # loaded and holds the GIL, stalling every thread of the process (a replayer in it
            # too) just as the stream starts; freezing alone takes microseconds
            gc.freeze()
            self._froze = True
        self._stop.clear()
        for target, name in ((self._process_loop, "process"), (self._inference_loop, "infer")):
            self._spawn(self._guard(target), f"neuralign-{name}")

    def _lane(self, src: Source, i: int) -> _Lane:
        """Build the pipeline and epocher of the opened source ``src``."""
        desc = src.description
        pipe = Pipeline(
            self.bundle, desc.ch_names, desc.sfreq, fill_missing=self.cfg.fill_missing,
            buffer_seconds=self.cfg.buffer_seconds, stream_label=f"stream '{desc.name}'",
            rail=self.cfg.rail_volts, spike_limit=self.cfg.spike_limit,
            health=self.health, stream_ch_types=desc.ch_types)
        epocher = Epocher(
            pipe.output, EpochWindow.for_signal(self.bundle.manifest.epoch, pipe.output),
            inputs=src.timeline,
            sliding_hop_s=None if src.has_markers else self.cfg.sliding_hop_s,
            health=self.health, bad_epochs=self.cfg.bad_epochs,
            known_labels=self.bundle.template_ids if self.cfg.decode_markers == "known" else None,
            marker_max_wait_s=self.cfg.marker_max_wait_s)
        names = [s.description.name for s in self.sources]
        stream = None
        if len(self.sources) > 1:
            stream = desc.name if names.count(desc.name) == 1 else f"{desc.name}#{i}"
        return _Lane(src, stream, pipe, epocher)

    @property
    def scheduling(self) -> SchedulingPolicy:
        """What this engine's threads ask of the OS (``auto`` resolved for its sources)."""
        return self._scheduling

    @property
    def n_lost_samples(self) -> int:
        """Input samples overwritten in a source's ring buffer before the engine read them."""
        return sum(lane.n_lost for lane in self.lanes)

    def _guard(self, fn):
        def run():
            apply_to_current_thread("critical", self._scheduling)
            try:
                fn()
            except BaseException as exc:  # surfaced by the CLI; never silently lost
                self._fail(exc)
        return run

    def _fail(self, exc: BaseException) -> None:
        """An engine thread's (or an inline pass's) failure: logged, kept, the engine stops."""
        log.exception("engine thread failed")
        self.error = exc
        self.health.last_error = repr(exc)
        self._stop.set()
        self._wake_threads()

    def _wake_threads(self) -> None:
        self._wake.set()  # the processing thread sleeps on it, not on the stop event

    def stop(self) -> None:
        threads = self._halt(timeout=5)
        for src in self.sources:
            src.stop()
        if threads and self.error is None and not any(t.is_alive() for t in threads):
            self._flush()
        if self.generation is not None:
            self.generation.stop()
        if self.recorder is not None:
            self.recorder.close()
        if self._froze:  # this engine's objects may be collected again once unreferenced
            gc.unfreeze()
            self._froze = False
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None

    def _flush(self) -> None:
        """After the threads and sources stopped: process what arrived since the last pass
        (the sources wake the engine every few milliseconds, not per sample), so the recording
        and the results hold every sample and every complete epoch received."""
        cut: list[Epoch] = []
        for lane in self.lanes:
            self._process_lane(lane, cut)
        cap = self.policy.capacity
        with self._infer_lock:
            for i in range(0, len(cut), cap):
                self._run_batch(cut[i:i + cap])

    # ---- what the GUI asks -------------------------------------------------------------------
    def request_reconstruction(self, channels: Sequence[int]) -> None:
        """Reconstruct these bundle channels of the last epoch of every batch, after publishing
        (so it never delays a result); an empty list stops it. Safe from any thread."""
        self._masked = sorted(int(c) for c in channels)

    def processed_snapshot(self, seconds: float, lane: int = 0) -> SignalSnapshot | None:
        """A copy of the last ``seconds`` of stream ``lane``'s processed signal (what the
        viewer plots); None before :meth:`start`, or with fewer than 2 samples yet. Safe from any
        thread."""
        lanes = self.lanes
        if lane >= len(lanes):
            return None
        return lanes[lane].pipeline.snapshot(seconds, lanes[lane].stream)

    @property
    def masked_channels(self) -> list[int]:
        """The channels reconstructed after each batch."""
        return list(self._masked)

    def _early_encoder(self) -> EarlyEncoder | None:
        """Early encoding when the config asks for it and every stream allows it (its model
        can be encoded frame by frame, its normaliser is fixed, no channel is filled in)."""
        why = ("realtime.early_encoding is off" if not self.cfg.early_encoding
               else "the model cannot be encoded frame by frame" if
               self.decoder.early_encoder is None
               else "online noise normalisation re-whitens during an epoch" if
               any(lane.pipeline.online_update for lane in self.lanes)
               else "missing channels are reconstructed from the whole epoch" if
               len(self.pipeline.missing) else None)
        if why is not None:
            log.info("early encoding off: %s", why)
            return None
        return EarlyEncoder(self.decoder, self.result_builder.repetitions)

    # ---- processing thread -------------------------------------------------------------------
    def _process_loop(self) -> None:
        """Sleep until a source delivers, then bring every stream up to date."""
        wake = self._wake
        while not self._stop.is_set():
            wake.clear()  # before reading: data arriving meanwhile sets it again
            with self._pass_lock:
                sleep_s = self._pass()
            wake.wait(sleep_s)

    def _pass(self) -> float:
        """Bring every stream up to date, dispatch the complete epochs, encode the filling ones
        (under ``_pass_lock``). Returns how long the processing thread may sleep."""
        next_ready = None
        cut: list[Epoch] = []
        for lane in self.lanes:
            t = self._process_lane(lane, cut)
            if t is not None and (next_ready is None or t < next_ready):
                next_ready = t
        self._next_ready_s = next_ready
        if cut:
            self._dispatch(cut)
        if self.early is not None:  # after the complete epochs left: what is still filling
            for lane in self.lanes:
                self.early.advance(lane.epocher.filling(lane.early_lead), lane.repetition_key)
        return self._prewarm(bool(cut))

    def _pass_inline(self) -> bool:
        """The pass for an awaited sample, on the acquisition thread that just wrote it: no
        thread wake-up between the sample and its epoch (the processing thread's took ~0.2 ms
        at the median, several under load). False, and the processing thread is woken, while
        that thread is in a pass itself or the engine stops."""
        if self._stop.is_set() or not self._pass_lock.acquire(blocking=False):
            return False
        try:
            self._pass()
            self.n_inline_passes += 1
        except BaseException as exc:  # the engine's failure, not the source's
            self._fail(exc)
        finally:
            self._pass_lock.release()
        return True

    def _due(self) -> float | None:
        """When the sample the next epoch waits for is stamped (local clock), on the streams'
        clock model: the buffer may be a sleep behind the stream, the model's line is not."""
        due = None
        for lane in self.lanes:
            w, timeline = lane.source.wake_at, lane.source.timeline
            t = None if w is None or timeline is None else timeline.timestamp_at(w - 1)
            if t is not None and (due is None or t < due):
                due = t
        return due

    def _seconds_to_due(self) -> float | None:
        """Seconds until the next epoch's last sample is due (None: no epoch pending)."""
        due = self._due()
        return None if due is None else due - local_clock()

    def _prewarm(self, dispatched: bool) -> float:
        """Touch the model so that it ends ``realtime.prewarm_ms`` before the next epoch's last
        sample is due (it starts earlier by what the last touch took: a 1024-channel model's
        ~4 ms must not be running when the sample arrives, the processing thread does both);
        once per epoch, not when a batch just ran, nor while one runs. Returns how long the
        processing thread may sleep: its period, cut short to wake for the next touch."""
        lead = self.cfg.prewarm_ms / 1e3
        if self.early is not None:  # what is left at the last sample is a frame or two
            lead = 0.0
        due = None if not lead or dispatched else self._due()
        if due is None:
            return PROCESS_PERIOD_S
        start_in = due - local_clock() - lead - self._touch_s
        if start_in > 0:
            return min(PROCESS_PERIOD_S, start_in)
        # once per awaited sample (its modelled time moves by far less than a sample)
        if abs(due - self._touched_for) > 1e-3 and self._infer_lock.acquire(blocking=False):
            try:
                t0 = time.perf_counter()
                self.decoder.touch()
                self._touch_s = time.perf_counter() - t0
                self.n_prewarms += 1
            finally:
                self._infer_lock.release()
            self._touched_for = due
        return PROCESS_PERIOD_S

    def _dispatch(self, eps: list[Epoch]) -> None:
        """Run ``eps`` here when the batch policy would run them at once and the inference
        thread is idle; otherwise queue them for it (it may batch them with later epochs).

        Results leave in epoch order: inline only when every epoch cut before ``eps`` has been
        run or dropped. An epoch the inference thread has taken from the queue but not yet
        counted in ``_infer_pending`` is neither, so ``eps`` then queue up behind it (no wait
        on the common path: one integer comparison under the lock taken anyway)."""
        now = local_clock()
        for ep in eps:
            ep.stages["queued"] = now
        first = self._n_cut
        self._n_cut += len(eps)
        if (len(eps) <= self.policy.capacity and self._infer_pending == 0
                and self._ready.empty()
                and self.policy.should_dispatch(len(eps), now, now, self._next_ready_s, True)
                and self._infer_lock.acquire(blocking=False)):
            try:
                inline = self._n_run + self._n_ready_dropped == first
                if inline:
                    self.n_inline_batches += 1
                    self._run_batch(eps)
            finally:
                self._infer_lock.release()
            if inline:
                return
        for ep in eps:
            self._put_ready(ep)

    def _process_lane(self, lane: _Lane, cut: list[Epoch]) -> float | None:
        """Filter one stream's new samples, place its markers, append its complete epochs to
        ``cut``. Returns the stream time until its next epoch completes (None: none pending)."""
        src, pipe, epocher = lane.source, lane.pipeline, lane.epocher
        # samples whose gap status the stream's clock has not decided yet wait (a moment, and
        # only after a suspicious stamp): the filters must restart exactly at a gap
        n = src.timeline.settled if src.timeline is not None else src.buffer.n_written
        if n > lane.read_pos:
            start = max(lane.read_pos, src.buffer.first_available)
            if start > lane.read_pos:
                lane.n_lost += start - lane.read_pos
                log.warning("engine fell behind: %d samples overwritten", start - lane.read_pos)
            got = src.buffer.read(start, n)
            if got is not None:
                data, ts = got
                # the gaps the source's clock confirmed, looked up once: not continuous with what
                # came before, the filters restart there and the processed grid carries the mark
                # on to the epocher
                edges = {g for g in src.buffer.gaps_in(start, n) if g > 0}
                if self.recorder is not None:
                    for g in sorted(edges):
                        self.recorder.write_gap(g - lane.n_lost)
                t_acq, t_filt = pipe.push(data, ts, start=start, restarts=edges)  # source indices
                lane.chunks.append(_Chunk(n, t_acq, t_filt))
                if self.recorder is not None:
                    self.recorder.write_samples(data, ts)
                lane.read_pos = n
        markers = src.pop_markers()
        if self.recorder is not None:
            for m in markers:
                self.recorder.write_event(m)
        epocher.add_markers(markers)
        for ep in epocher.ready_epochs():
            ep.stream = lane.stream
            self._stamp_chunk(lane, ep)
            cut.append(ep)
        src.wake_at = epocher.samples_needed()  # the source wakes us when these are in
        return epocher.seconds_until_next_ready()

    def _put_ready(self, ep: Epoch) -> None:
        """Queue an epoch for inference; when inference is far behind (the queue is full) the
        oldest waiting epoch is dropped and counted (:meth:`_ready_dropped`), so memory stays
        bounded."""
        self._ready.push(ep)

    def _ready_dropped(self, _old: Epoch) -> None:
        self._n_ready_dropped += 1
        self.health.ready_dropped += 1
        log.warning("inference is behind: dropped the oldest waiting epoch (%d so far)",
                    self.health.ready_dropped)

    def health_snapshot(self) -> dict[str, int | str]:
        """The engine's and its sources' health counters (what each result carries)."""
        hs = [src.health for src in self.sources]
        errors = [h.last_error for h in hs if h.last_error]
        snap = self.health.merged(
            dropped_samples=sum(h.n_dropped for h in hs), gaps=sum(h.n_gaps for h in hs),
            reconnects=sum(h.n_reconnects for h in hs),
            bad_markers=sum(h.n_bad_markers for h in hs),
            markers_dropped=sum(h.n_markers_dropped for h in hs),
            ignored_marker_values=sum(h.n_ignored_marker_values for h in hs),
            marker_reconnects=sum(h.n_marker_reconnects for h in hs),
            viewer_dropped=self._hub.n_dropped,  # results slow readers lost
            recorder_write_errors=0 if self.recorder is None else self.recorder.n_write_errors,
            acquisition_errors=sum(h.n_errors for h in hs))
        if not snap["last_error"] and errors:
            snap["last_error"] = errors[-1]
        snap["connected"] = all(h.healthy for h in hs)
        # False while a source's marker stream is lost (marker-locked decoding has stopped)
        snap["markers_connected"] = all(h.markers_connected is not False for h in hs)
        snap.update(self._clock_health())
        return snap

    def _clock_health(self) -> dict[str, float | int | str | None]:
        """The streams' clocks: worst stamp jitter, rate against nominal, drift, late chunks,
        the marker-vs-data offset and every clock warning (one line each)."""
        reps = [(src, src.clock_report()) for src in self.sources]
        reps = [(src, r) for src, r in reps if r is not None]
        if not reps:
            return {}
        worst = max(reps, key=lambda sr: sr[1].jitter_p99_ms)[1]
        drift = [r.arrival_drift_ppm for _, r in reps if r.arrival_drift_ppm is not None]
        offsets = [src.marker_clock.offset_ms for src, _ in reps
                   if src.marker_clock.offset_ms is not None]
        warnings = [w for src, r in reps for w in (*r.warnings, *src.marker_clock.warnings)]
        return {"jitter_p99_ms": worst.jitter_p99_ms, "rate_ppm": worst.rate_ppm,
                "arrival_drift_ppm": max(drift, key=abs) if drift else None,
                "late_deliveries": sum(r.late_deliveries for _, r in reps),
                "marker_offset_ms": max(offsets, key=abs) if offsets else None,
                "clock_warning": " | ".join(warnings)}

    @staticmethod
    def _stamp_chunk(lane: _Lane, ep: Epoch) -> None:
        """When the epoch's last sample was pulled (the source's arrivals), and the acquisition
        and filter times of the engine's chunk that held it."""
        found = _holding(lane.chunks, ep.last_input_index, lambda c: c.end)
        if found is not None:
            ep.stages["acquired"] = found.acquired
            ep.stages["filtered"] = found.filtered
        pulled = _holding(lane.source.arrivals, ep.last_input_index, lambda a: a[0])
        if pulled is not None:
            ep.stages["pulled"] = pulled[1]
        if lane.source.sched_probe:
            pull = _holding(lane.source.awaited_pulls, ep.last_input_index, lambda a: a.end)
            if pull is not None and pull.start <= ep.last_input_index:
                ep.pull_times = (pull.before, pull.after)
        ep.stages["sample"] = ep.last_sample_timestamp

    # ---- inference thread --------------------------------------------------------------------
    def _inference_loop(self) -> None:
        pending: list[Epoch] = []
        policy = self.policy
        while not self._stop.is_set() or pending:
            self._infer_pending = len(pending)
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
                        with self._infer_lock:
                            self._run_batch(pending)
                    return
            self._infer_pending = len(pending)
            if pending and policy.should_dispatch(len(pending), pending[0].stages["queued"],
                                                  local_clock(), self._next_ready_s,
                                                  self._ready.empty()):
                with self._infer_lock:
                    self._run_batch(pending)
                pending = []

    def _decoding(self) -> bool:
        """A batch is running or epochs wait for one (the generator lets these go first)."""
        return self._infer_lock.locked() or self._infer_pending > 0 or not self._ready.empty()

    @staticmethod
    def _queued(ep: Epoch) -> Epoch:
        ep.stages.setdefault("queued", local_clock())
        return ep

    def _run_batch(self, batch: list[Epoch]) -> None:
        self._n_run += len(batch)  # under _infer_lock (see _dispatch: epoch order)
        self.n_early_epochs += sum(ep.early is not None for ep in batch)
        t_batch = local_clock()
        for ep in batch:
            ep.stages["batch_start"] = t_batch
        self.scale_check.feed_epochs(batch)  # the first epochs vs the bundle's amplitude
        results = self.result_builder.build(batch)
        t_inf = local_clock()
        for ep, r in zip(batch, results):
            ep.stages["inferred"] = t_inf
            # on the wire: the stages up to inference; in process: all of them
            r.stages_ms = {k: round(v, 3) for k, v in stage_durations(ep.stages).items()}
            r.health = self.health_snapshot()
            ep.stages["published"] = self.outlet.publish(r) if self.outlet else local_clock()
            r.stages_ms = self.stats.add(ep.stages, ep.last_input_index, self._epoch_sched(ep))
            self._fan_out(r)
        if self.generation is not None:  # after publishing; generated in the worker's thread
            self.generation.submit(results, self.result_builder.last_embeddings)
        masked = self._masked
        if masked:  # after publishing: the viewer's reconstruction never delays a result
            self.last_reconstruction = self.result_builder.reconstruct(batch[-1], masked)

    def probe_scheduling(self) -> None:
        """Record, per epoch, where the acquisition thread's time went from the start of the
        pull that brought its last sample to its publication: on a CPU, waiting for one, or
        blocked (:mod:`~neuralign.realtime.threadsched`; kept with the stats' stamps). Four
        clock reads per epoch, for ``bench latency``'s tail breakdown."""
        for src in self.sources:
            src.sched_probe = True

    @staticmethod
    def _epoch_sched(ep: Epoch) -> EpochSched | None:
        """Its pull's and its pass's splits, up to now (None: its source was not probed)."""
        if ep.pull_times is None:
            return None
        before, after = ep.pull_times
        return EpochSched(SchedSplit.between(before, after),
                          SchedSplit.between(after, thread_times()))

    def _fan_out(self, r: Result) -> None:
        self._hub.publish(r)  # O(subscribers), never waits on a reader
        if self.recorder is not None:
            self.recorder.write_result(r.to_dict())
        self.n_decoded += 1

    # ---- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        """Counts summed over the streams (``streams``: each one's, with several sources)."""
        hs = [src.health for src in self.sources]
        out = {"decoded": self.n_decoded, "latency_ms": self.stats.summary(),
               "received": sum(h.n_received for h in hs),
               "dropped": sum(h.n_dropped for h in hs), "gaps": sum(h.n_gaps for h in hs),
               "reconnects": sum(h.n_reconnects for h in hs),
               "connected": all(h.healthy for h in hs),
               "data_connected": all(h.connected and not h.failing for h in hs),
               "lost_in_engine": self.n_lost_samples, "health": self.health_snapshot(),
               "threads": scheduling.applied(),
               "generation": ({"generated": self.generation.n_generated,
                               "dropped": self.generation.n_dropped,
                               "too_old": self.generation.n_too_old}
                              if self.generation is not None else {"off": self.generation_off}),
               "error": None if self.error is None else repr(self.error)}
        out["markers_connected"] = out["health"]["markers_connected"]
        if len(self.lanes) > 1:
            out["streams"] = [{"stream": lane.stream, "received": lane.source.health.n_received,
                               "dropped": lane.source.health.n_dropped,
                               "lost_in_engine": lane.n_lost} for lane in self.lanes]
        return out

    def subscribe(self, maxlen: int | None = None, replay: bool = False) -> Subscription:
        """A reader's queue of results, oldest first (:mod:`.subscriptions`): what is published
        from now on (subscribe before :meth:`start` for every result) or, with ``replay``, the
        kept history first. ``maxlen`` (default ``results_maxlen``) bounds how far the reader
        may fall behind before its oldest are dropped (``Subscription.dropped``); the engine
        never waits on it. Safe from any thread."""
        return self._hub.subscribe(maxlen, replay)

    def wait_for(self, n_results: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.n_decoded < n_results and time.monotonic() < deadline and self.error is None:
            time.sleep(0.02)
        return self.n_decoded >= n_results
