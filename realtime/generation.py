"""Generated images of decoded epochs, off the latency path.

A bundle with a ``generator`` section decodes each epoch's single-trial brain embedding (the
L2-normalised ``encode_brain`` output the decoder computed anyway) into an image. The engine's
inference thread only hands the batch's embeddings to :meth:`GeneratorWorker.submit` after the
results are published (a queue put, microseconds); the generator runs in this worker's own thread,
so a slow generator never delays a result. Both the pending queue and the output are bounded:
when the generator cannot keep up, the oldest pending epochs are dropped (counted in
``n_dropped``, logged), never buffered without limit.

The generator is a display aid and must not take the cores the decoder needs: it runs at most
``cpu_share`` of a core (after a generation that used d seconds of CPU it rests
d * (1/share - 1)), in its own thread at the lowest priority (``SCHED_IDLE`` on Linux), and an
epoch that waited longer than ``max_age_s`` is skipped (an image of what was seen seconds ago
is no longer live). One stream's images cost ~0.13 of a core with the demo's generator; eight
streams' would cost ~0.8, which on two cores starved the decoder, the device apps and the
consumer of its results.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import Empty

import numpy as np
import torch

from neuralign.bundle import Bundle
from neuralign.devices import resolve_device
from neuralign.realtime.decisions import Generated, Result
from neuralign.realtime.queues import DropOldestQueue
from neuralign.realtime.scheduling import SchedulingPolicy, apply_to_current_thread
from neuralign.realtime.worker import ThreadedWorker

log = logging.getLogger(__name__)

#: longest a generation waits for the engine to finish decoding (s)
MAX_DEFER_S = 0.1
#: a generation starts only if it would end this long before the next epoch completes (s)
GENERATION_MARGIN_S = 0.005
#: how often it looks while waiting (s)
DEFER_POLL_S = 0.001
#: how long stop() waits beyond its timeout for the generation in progress (s)
STOP_GRACE_S = 30.0
#: at most one "falls behind" warning per this many seconds (the count is always exact)
WARN_EVERY_S = 10.0


class GeneratorWorker(ThreadedWorker):
    """Turns submitted (result, embedding) pairs into :class:`Generated` images in its thread.

    ``images`` keeps the newest ``keep`` images (oldest first); ``latest`` is the newest (read by
    the viewer's feed by reference, atomic in CPython). The thread starts on the first submit.
    """

    def __init__(self, model, device: str | torch.device = "cpu", keep: int = 512,
                 max_pending: int = 256, cpu_share: float = 1.0, max_age_s: float = float("inf")):
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {cpu_share}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.images: deque[Generated] = deque(maxlen=keep)
        self.latest: Generated | None = None
        self.n_generated = 0
        self.n_dropped = 0
        self.n_too_old = 0  # of n_dropped: epochs older than max_age_s when their turn came
        self.cpu_share = cpu_share
        self.max_age_s = max_age_s
        self.busy_s = 0.0  # time spent generating (the share is this over the running time)
        self._last_warning = -float("inf")
        self.error: BaseException | None = None
        self._pending: DropOldestQueue[tuple[list[tuple[int, str | None]], np.ndarray, float]] = \
            DropOldestQueue(max_pending, on_drop=self._dropped)
        self._init_threads()
        self._stop_by = float("inf")  # stop(): pending epochs after this time are dropped
        #: the thread's niceness comes from here (background: never ahead of an epoch)
        self.scheduling = SchedulingPolicy()
        #: True while the engine decodes (a batch running or epochs waiting for one): a
        #: generation waits for it to end, at most MAX_DEFER_S (see _wait_until_idle)
        self.busy: Callable[[], bool] | None = None
        #: seconds until the engine's next epoch completes (None: none pending): a generation
        #: that would still run then waits for that epoch too (it would hold the GIL and a core
        #: while the epoch's last sample is filtered, encoded and decoded)
        self.next_epoch_in: Callable[[], float | None] | None = None
        self._last_took = 0.0  # how long the last generation took (s)
        self.n_deferred = 0  # generations that waited for the engine (instrumentation)

    @staticmethod
    def off_reason(bundle: Bundle, policy: str = "validated") -> str:
        """Why the engine shows no generated image for ``bundle`` ("" when it does): no
        generator, or one that did not beat the mean training image on held-out images (an
        image that ignores the brain would then be the better picture of what was seen)."""
        g = bundle.manifest.generator
        if g is None:
            return "no generator"
        if policy == "off":
            return "generated images turned off (realtime.generated_images: off)"
        if policy == "always" or g.validation is None:
            return ""
        return g.validation.reason()

    @classmethod
    def for_bundle(cls, bundle: Bundle, device: str | torch.device = "auto",
                   policy: str = "validated", cpu_share: float = 1.0,
                   max_age_s: float = float("inf")) -> GeneratorWorker | None:
        """The worker of ``bundle``'s generator; None for a retrieval-only bundle or a generator
        that failed its validation or is turned off (:meth:`off_reason`, logged)."""
        reason = cls.off_reason(bundle, policy)
        if reason and reason != "no generator":
            log.warning("generated images off: %s", reason)
        if reason:
            return None
        model = bundle.build_generator()
        if model is None:
            return None
        worker = cls(model, resolve_device(device), cpu_share=cpu_share, max_age_s=max_age_s)
        worker.warmup(bundle.template_embeddings.shape[1])
        return worker

    def warmup(self, n_inputs: int) -> None:
        """One forward at start: the first call allocates, it must not fall on a live epoch."""
        self.model.generate(np.zeros((1, n_inputs), np.float32))

    # -- producer side (the engine's inference thread) ---------------------------------------
    def submit(self, results: Sequence[Result], embeddings: Sequence[np.ndarray]) -> None:
        """Queue one batch for generation; never blocks (drops the oldest batch when full)."""
        if not results:
            return
        if not self._threads:
            self.start()
        item = ([(r.epoch_id, r.marker) for r in results], np.stack(embeddings).astype(np.float32),
                time.monotonic())
        self._pending.push(item)

    def _dropped(self, old: tuple[list[tuple[int, str | None]], np.ndarray, float]) -> None:
        self.n_dropped += len(old[0])
        self._warn_behind()

    def _warn_behind(self) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning("generator falls behind: %d epochs not generated so far (%d too old)",
                        self.n_dropped, self.n_too_old)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._threads_lock:
            if self._threads:
                return
            self._stop.clear()
            self._stop_by = float("inf")
            self._spawn(self._loop, "neuralign-generate")

    def stop(self, timeout: float = 5.0) -> None:
        """Generate what is pending for at most ``timeout`` s, drop the rest (counted in
        ``n_dropped``), then stop the thread. It is joined: a thread left running torch code
        at interpreter exit aborts the process."""
        if self._threads:
            self._stop_by = time.monotonic() + timeout
        # the batch in progress cannot be cut short: joined for its grace period too
        if any(t.is_alive() for t in self._halt(timeout + STOP_GRACE_S)):
            log.error("generator thread still running %.0f s after stop", timeout + STOP_GRACE_S)

    def _loop(self) -> None:
        apply_to_current_thread("background", self.scheduling)
        while True:
            try:
                ids, z, submitted = self._pending.get(timeout=0.05)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            stopping = self._stop.is_set()
            if stopping and time.monotonic() > self._stop_by:
                self.n_dropped += len(ids)  # stopping: what is still pending is not generated
                continue
            if not stopping and time.monotonic() - submitted > self.max_age_s:
                self.n_dropped += len(ids)
                self.n_too_old += len(ids)
                self._warn_behind()
                continue
            waited = self._wait_until_idle()
            t0, cpu0 = time.monotonic(), time.thread_time()
            try:
                images = self.model.generate(z)
            except Exception as exc:  # a generator bug must not take the engine down
                log.exception("generator failed; no more generated images")
                self.error = exc
                return
            for (epoch_id, marker), img in zip(ids, images):
                g = Generated(epoch_id, marker, np.asarray(img, np.float32))
                self.images.append(g)
                self.latest = g
            self.n_generated += len(ids)
            took = time.monotonic() - t0
            self._last_took = took
            self.busy_s += took
            if self.cpu_share < 1.0:  # rest so that generating is at most cpu_share of a core
                # (the wait for the engine before it counts: without it, waiting before every
                # generation and resting after it fell behind the epochs of one stream). The
                # CPU it used, not the wall time: a background thread preempted by every other
                # wake-up takes longer without costing more (wall time: 17-43 of 272 images
                # skipped in 60 s runs)
                used = time.thread_time() - cpu0
                self._stop.wait(max(0.0, used * (1.0 / self.cpu_share - 1.0) - waited))

    def _wait_until_idle(self) -> float:
        """Let the engine finish what it decodes first: with several streams, epochs complete
        at the same instant and run as consecutive batches; a generation started after the
        first one would take CPU and the GIL from the next (a niceness does not help with the
        GIL); the same for an epoch that completes while it would run. Waits at most
        MAX_DEFER_S, so images keep coming under a constant load. Returns the seconds waited."""
        if not self._engine_busy():
            return 0.0
        self.n_deferred += 1
        t0 = time.monotonic()
        deadline = t0 + MAX_DEFER_S
        while self._engine_busy() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(DEFER_POLL_S)
        return time.monotonic() - t0

    def _engine_busy(self) -> bool:
        """Decoding now, or an epoch completes before a generation as long as the last one
        would end (with a margin of GENERATION_MARGIN_S)."""
        if self.busy is not None and self.busy():
            return True
        ahead = self.next_epoch_in() if self.next_epoch_in is not None else None
        return ahead is not None and ahead < self._last_took + GENERATION_MARGIN_S

    def wait_for(self, n: int, timeout: float) -> bool:
        """True once ``n`` images were generated (tests, the demo's final score)."""
        deadline = time.monotonic() + timeout
        while self.n_generated < n and time.monotonic() < deadline and self.error is None:
            time.sleep(0.02)
        return self.n_generated >= n
