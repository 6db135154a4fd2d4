"""A virtual subject: the simulator's brain, live on LSL, watching a presenter's images.

Why: a stimulus presenter, a closed loop or a lab's whole pipeline (presenter -> amplifier ->
``neuralign run``) can be rehearsed without a person, against a subject whose answer is known: a
bundle trained on the simulator's data (the demo's) decodes this stream, because every shown image
evokes the very response the offline simulator gives it. :class:`VirtualSubject` resolves a
marker stream (string markers = image ids), and streams EEG / MEG / MUA on its own outlet in real
time. The model (``docs/virtual_subject.md``):

* **the subject** is the dataset's (:func:`~neuralign.offline.simulator.core.subject_model`, from
  the config's seed): the same paradigm, forward model and visual sources (EEG/MEG) or tuned units
  (MUA), so image ``c0007_i00`` evokes the response it evoked in ``sim_test_raw.fif``, with the
  same trial-to-trial variability (:func:`~neuralign.offline.simulator.evoked.synthesize_evoked`
  for one trial, :func:`~neuralign.offline.simulator.evoked.synthesize_mua` without baseline); of
  a multi-subject config, subject ``subject`` (1-based), with its latency, gains, SNR, channel
  noise and bad channels as offline;
* **the onset** of a marker stamped ``t`` is the sample produced at ``t + latency_s`` (a
  display's delay; the visual pathway's is in the responses, as offline); overlapping
  responses (fast SOA) add up; an id that is not an image of the paradigm evokes the shared
  visual response only (warned once per id);
* **the background** is the offline one (:func:`~neuralign.offline.simulator.noise.background`)
  drawn in blocks of ``block_s`` joined by an equal-power crossfade (independent draws: variance
  is kept), mains from :func:`~neuralign.offline.simulator.noise.line_noise` (periodic, so it is
  continuous across blocks) and blinks with the offline shape and rate overlapping block edges;
  MUA's background is ``synthesize_mua`` without stimuli per block (its excitability state is
  pinned at block edges, so blocks join continuously); the SNR is the dataset's definition;
* **the clock**: sample ``k`` is produced at ``t0 + k / sfreq`` (drift-free, paced on absolute
  times) and delivered as a replay :class:`~neuralign.realtime.replay.timing.TimingProfile` plans
  it (chunks, push times, stamps, lost samples), planned block by block like the replay player's
  loop passes; the default profile ``ideal`` stamps ``t0 + k / sfreq`` exactly.

Memory is bounded: a few background blocks and the responses still being streamed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from neuralign.config import Config, SimulationConfig
from neuralign.offline.simulator import noise as noise_mod
from neuralign.offline.simulator.core import SubjectModel, subject_live_seed, subject_model
from neuralign.offline.simulator.evoked import (
    MUA_SMOOTH_S,
    RESPONSE_WINDOW_S,
    noise_free_response,
    synthesize_evoked,
    synthesize_mua,
)
from neuralign.realtime.lsl_io import local_clock, make_outlet
from neuralign.realtime.replay.timing import TimingProfile, get_profile, plan_schedule
from neuralign.realtime.worker import ThreadedWorker

log = logging.getLogger(__name__)

#: seconds of equal-power crossfade between consecutive background blocks (EEG/MEG)
CROSSFADE_S = 0.5
#: a marker whose onset lies further ahead than this is ignored (a clock or stamp error)
MAX_AHEAD_S = 30.0
#: stimuli kept in :attr:`VirtualSubject.stimuli` (the most recent)
MAX_STIMULI = 100_000
_STYPES = {"eeg": "EEG", "meg": "MEG", "mua": "EEG"}  # as the replay types a Raw's stream


def _line_period(sfreq: float, line_freq: float) -> int:
    """Samples after which mains (and its 3rd harmonic) repeat at ``sfreq``: exactly for
    rational ratios of up to 10 s, else to within a rounding of the frequency."""
    ratio = Fraction(line_freq / sfreq).limit_denominator(max(1, int(10 * sfreq)))
    return int(ratio.denominator)


@dataclass(frozen=True)
class Stimulus:
    """One marker as the virtual subject used it: its id, stamp and the sample its response
    starts at (``onset_time`` = that sample's production time on the host clock)."""

    image_id: str
    marker_time: float
    onset_sample: int
    onset_time: float
    known: bool
    late_samples: int  #: response samples lost because the marker came after they were sent


class LiveSignal:
    """The virtual subject's signal, rendered strictly in sample order (pure numpy: no LSL).

    Background blocks come from a generator (in a producer thread after :meth:`start_producer`,
    else on demand); :meth:`add_stimulus` queues a response at an onset sample; :meth:`render`
    returns the next samples with every queued response that overlaps them added.
    ``seed``: the live draws (background, trial variability); None = derived from the dataset's
    seed but independent of its training and test sessions. ``subject_index`` (1-based): which
    subject of a multi-subject config (None: the first; its drawn latency, gains, SNR, channel
    noise and bad channels apply as offline).
    """

    def __init__(self, cfg: SimulationConfig, snr: float | None = None, seed: int | None = None,
                 block_s: float = 5.0, subject: SubjectModel | None = None,
                 subject_index: int | None = None):
        if cfg.modality not in ("eeg", "meg", "mua"):
            raise ValueError(f"a virtual subject streams eeg, meg or mua, not {cfg.modality!r}")
        if block_s < 4 * CROSSFADE_S:
            raise ValueError(f"block_s must be >= {4 * CROSSFADE_S:g} s")
        self.cfg = cfg
        self.subject = subject if subject is not None else subject_model(cfg, subject_index)
        self.traits = traits = self.subject.traits
        self.modality, self.sfreq = cfg.modality, float(cfg.sfreq)
        self.snr = float((cfg.snr if traits is None else traits.snr) if snr is None else snr)
        self.ch_names = list(self.subject.ch_names)
        self.ch_types = list(self.subject.info.get_channel_types())
        paradigm = self.subject.paradigm
        self.image_ids = list(paradigm.image_ids)
        self._index = {i: k for k, i in enumerate(self.image_ids)}
        self._shared = len(self.image_ids)  # row of the shared (non-specific) response
        base = (np.random.SeedSequence(seed) if seed is not None
                else subject_live_seed(cfg, traits.index if traits is not None else None))
        ss_bg, ss_trial, ss_ref = base.spawn(3)
        self._rng_trial = np.random.default_rng(ss_trial)
        self.block = int(round(block_s * self.sfreq))
        self.n_win = int(round(RESPONSE_WINDOW_S * self.sfreq))
        src = self.subject.sources
        if self.modality == "mua":
            self._sources = dataclasses.replace(
                src, drive=np.column_stack([src.drive, src.drive.mean(1)]))
            # the response alone: added spikes are Poisson too (superposition), so a stimulus's
            # spikes are synthesize_mua's with no baseline rate, smoothed by the same boxcar
            self._resp_tuning = dataclasses.replace(self._sources, base=np.zeros_like(src.base))
            self._smooth = max(1, int(round(MUA_SMOOTH_S * self.sfreq)))
            self.scale = 1.0
        else:
            self._sources = dataclasses.replace(
                src, amplitude=np.vstack([src.amplitude, src.amplitude.mean(0)]))
        self._gen = self._blocks(np.random.default_rng(ss_bg))
        first = next(self._gen)  # drawn now: the SNR's noise RMS, and no stall at start
        if self.modality != "mua":
            occ = self.subject.occ
            self.noise_rms = float(np.sqrt(np.mean(np.square(self._first_background[occ]))))
            self.scale = self.snr * self.noise_rms / self._signal_rms(np.random.default_rng(ss_ref))
            del self._first_background
            if traits is not None:  # the subject's overall amplitude, as offline
                self.scale *= traits.amplitude_gain
        self._ch_scale = (traits.response_scale(len(self.ch_names))[:, None]
                          if traits is not None and self.modality != "mua" else 1.0)
        self._ready: deque[np.ndarray] = deque([first])
        self._queue: queue.Queue | None = None
        self._producer: threading.Thread | None = None
        self._stop = threading.Event()
        self.producer_error: BaseException | None = None
        self._cur: np.ndarray | None = None
        self._cur_start = 0
        self._pending: list[tuple[int, np.ndarray]] = []
        self.next_sample = 0  #: first sample not rendered yet
        self.n_stimuli = self.n_unknown = self.n_late = 0
        self._unknown_warned: set[str] = set()

    # --- the subject's responses ----------------------------------------------------------------
    def _signal_rms(self, rng: np.random.Generator) -> float:
        """The SNR's signal RMS (the dataset's definition): one trial per test image."""
        images = self.subject.paradigm.indices("test")
        if len(images) == 0:
            images = np.arange(len(self.image_ids))
        onsets = np.arange(len(images)) * self.n_win
        ev = synthesize_evoked(self._sources, images, onsets, len(images) * self.n_win,
                               self.sfreq, self.subject.occ, rng)
        return ev.signal_rms

    def image_index(self, image_id: str) -> int | None:
        """The paradigm index of an image id, None when the paradigm has no such image."""
        return self._index.get(image_id)

    def template(self, image_id: str | None) -> np.ndarray:
        """An image's response without trial variability, as streamed (channels, window);
        ``None`` or an unknown id: the shared response. EEG/MEG volts/teslas, MUA spikes/s."""
        k = self._index.get(image_id, self._shared) if image_id is not None else self._shared
        if self.modality == "mua":
            return self.snr * self._sources.drive[:, k, None] * self._sources.kernels
        return self.scale * self._ch_scale * noise_free_response(self._sources, k, self.sfreq)

    def _response(self, k: int) -> np.ndarray:
        """One trial's response to paradigm image ``k`` (or the shared row)."""
        idx, at = np.array([k]), np.array([0])
        if self.modality == "mua":
            n = self.n_win + self._smooth - 1
            return synthesize_mua(self.subject.paradigm, len(self.ch_names), idx, at, n,
                                  self.sfreq, self.snr, self._rng_trial, tuning=self._resp_tuning)
        ev = synthesize_evoked(self._sources, idx, at, self.n_win, self.sfreq, self.subject.occ,
                               self._rng_trial)
        return self.scale * self._ch_scale * ev.data

    def add_stimulus(self, image_id: str, onset_sample: int) -> tuple[bool, int]:
        """Queue ``image_id``'s response from ``onset_sample`` on; returns (known id, response
        samples lost because they were already rendered)."""
        k = self._index.get(image_id)
        known = k is not None
        if not known:
            self.n_unknown += 1
            if image_id not in self._unknown_warned:
                self._unknown_warned.add(image_id)
                log.warning("marker %r is not an image of the simulated paradigm (seed %d, %d "
                            "images, e.g. %r): it evokes the shared visual response only "
                            "(warned once per id)", image_id, self.cfg.seed, len(self.image_ids),
                            self.image_ids[0])
            k = self._shared
        self.n_stimuli += 1
        resp = self._response(k)
        lost = max(0, self.next_sample - int(onset_sample))
        if lost:
            self.n_late += 1
            resp = resp[:, lost:]
        if resp.shape[1]:
            self._pending.append((int(onset_sample) + lost, resp))
        return known, min(lost, self.n_win)

    # --- the background -------------------------------------------------------------------------
    def _blocks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Endless background blocks of ``self.block`` samples, continuous across edges."""
        if self.modality == "mua":
            yield from self._mua_blocks(rng)
            return
        cfg, model, n = self.cfg, self.subject.model, self.block
        fade = int(round(CROSSFADE_S * self.sfreq))
        w = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade)
        sc = noise_mod.SCALES[self.modality]
        n_ch = len(self.ch_names)
        period = _line_period(self.sfreq, cfg.line_freq) if cfg.line_freq > 0 else 0
        if period:  # the offline mains over one exact period, indexed by the global sample
            line = noise_mod.line_noise(n_ch, period, self.sfreq, cfg.line_freq, sc["line"], rng)
        topo = noise_mod.blink_topography(model)
        blink_len = int(0.4 * self.sfreq) + 1
        carry = np.zeros((n_ch, blink_len))  # blinks running past a block's end
        tail = None
        start = 0
        while True:
            raw = noise_mod.background(model, self.modality, n + fade, self.sfreq,
                                       cfg.alpha_freq, rng)
            if tail is not None:  # equal power: cos^2 + sin^2 = 1 for independent draws
                raw[:, :fade] = raw[:, :fade] * w + tail * np.sqrt(1.0 - w**2)
            else:
                self._first_background = raw[:, :n].copy()
            tail = raw[:, n:].copy()
            block = raw[:, :n]
            if self.traits is not None:
                block *= self.traits.amplitude_gain
            if period:
                block += line[:, (start + np.arange(n)) % period]
            block[:, :blink_len] += carry
            carry = np.zeros((n_ch, blink_len))
            # the offline blink process, continued across block edges
            onsets, waves = noise_mod.blink_waves(n, self.sfreq, cfg.blink_rate, sc["blink"], rng)
            for onset, wave in zip(onsets, waves):
                inside = min(len(wave), n - onset)
                block[:, onset:onset + inside] += topo[:, None] * wave[None, :inside]
                carry[:, : len(wave) - inside] += topo[:, None] * wave[None, inside:]
            if self.traits is not None:  # flat / noisy bad channels, each channel's own noise
                self.traits.apply_channel_effects(block, rng)
            start += n
            yield np.ascontiguousarray(block)

    def _mua_blocks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        extra = self._smooth - 1  # dropped: the causal boxcar is warm at each block's start
        none = np.zeros(0, dtype=np.int64)
        while True:
            out = synthesize_mua(self.subject.paradigm, len(self.ch_names), none, none,
                                 self.block + extra, self.sfreq, self.snr, rng,
                                 tuning=self._sources)
            yield np.ascontiguousarray(out[:, extra:])

    def start_producer(self, depth: int = 2) -> None:
        """Draw the next blocks in a thread (``depth`` ahead), so rendering never waits."""
        if self._producer is not None:
            return
        self._queue = queue.Queue(maxsize=depth)
        for _ in range(depth):  # drawn now: a burst of draws at start would delay the first pushes
            self._queue.put(next(self._gen))
        self._producer = threading.Thread(target=self._produce, name="virtual-subject-blocks",
                                          daemon=True)
        self._producer.start()

    def stop_producer(self) -> None:
        self._stop.set()
        if self._producer is not None:
            self._producer.join(timeout=5)

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                block = next(self._gen)
                while not self._stop.is_set():
                    try:
                        self._queue.put(block, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - reported via producer_error
            self.producer_error = exc
            log.exception("virtual subject: drawing the background failed")

    def _next_block(self) -> np.ndarray:
        if self._ready:
            return self._ready.popleft()
        if self._queue is None:
            return next(self._gen)
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if self.producer_error is not None or self._stop.is_set():
                    raise RuntimeError("the background producer stopped") from self.producer_error

    # --- rendering ------------------------------------------------------------------------------
    def render(self, stop: int) -> np.ndarray:
        """Samples ``next_sample .. stop - 1`` (channels, n), float64; advances ``next_sample``."""
        start = self.next_sample
        n = int(stop) - start
        if n <= 0:
            return np.zeros((len(self.ch_names), 0))
        out = np.empty((len(self.ch_names), n))
        pos = 0
        while pos < n:
            if self._cur is None or self.next_sample >= self._cur_start + self._cur.shape[1]:
                if self._cur is not None:
                    self._cur_start += self._cur.shape[1]
                self._cur = self._next_block()
            a = self.next_sample - self._cur_start
            take = min(n - pos, self._cur.shape[1] - a)
            out[:, pos:pos + take] = self._cur[:, a:a + take]
            pos += take
            self.next_sample += take
        keep = []
        for onset, resp in self._pending:
            lo, hi = max(onset, start), min(onset + resp.shape[1], stop)
            if hi > lo:
                out[:, lo - start:hi - start] += resp[:, lo - onset:hi - onset]
            if onset + resp.shape[1] > stop:
                keep.append((onset, resp))
        self._pending = keep
        return out


class VirtualSubject(ThreadedWorker):
    """Watch a marker stream and stream the simulated subject's signal on LSL in real time.

    ``config``: the dataset's simulation, or a config holding it (its seed fixes the images'
    responses: use the one the bundle was trained on). ``markers``: the marker stream's name (or ``key=value[,...]`` of
    name / type / source_id, as ``--markers lsl:...``), resolved and re-resolved in the
    background: the subject streams before the presenter starts and after it stops.
    ``latency_s``: display delay added to each marker's stamp (the responses' own latencies,
    P1 ~100 ms, are the simulator's; a bundle trained on the simulator's data, where responses
    start at the annotation, decodes only without it: 0 by default). ``timing``: a
    replay timing profile (name or object; None = ``ideal`` with ``chunk_size`` chunks).
    ``snr`` overrides the config's; ``seed`` sets the live draws; ``subject`` (1-based) picks
    a subject of a multi-subject config (``n_subjects`` > 1; None: the first).

    Use as a context manager, or :meth:`start` / :meth:`stop`. :attr:`stimuli` lists what was
    shown; :meth:`onset_time` gives a sample's production time on the host clock.
    """

    def __init__(self, config: SimulationConfig | Config, markers: str = "neuralign-markers",
                 name: str = "VirtualEEG", latency_s: float = 0.0, snr: float | None = None,
                 timing: str | TimingProfile | None = None, timing_seed: int = 0,
                 chunk_size: int = 10, seed: int | None = None, source_id: str | None = None,
                 stype: str | None = None, block_s: float = 5.0, marker_timeout_s: float = 2.0,
                 subject: int | None = None):
        if isinstance(config, Config):
            if config.dataset.simulation is None:
                raise ValueError(f"config {config.name!r} has no dataset.simulation")
            config = config.dataset.simulation
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.config = config
        self.markers = markers[4:] if markers.startswith("lsl:") else markers
        self.name, self.latency_s = name, float(latency_s)
        self.timing = (get_profile(timing) if isinstance(timing, str)
                       else timing if timing is not None else get_profile("ideal"))
        self.timing_seed, self.chunk_size = int(timing_seed), int(chunk_size)
        self.snr, self.seed, self.block_s = snr, seed, block_s
        self.subject_index = subject
        self.source_id = source_id or uuid.uuid4().hex
        self.stype = stype or _STYPES.get(config.modality, "EEG")
        self.marker_timeout_s = marker_timeout_s
        self.signal: LiveSignal | None = None
        self.t0: float | None = None
        self.rate_true = float(config.sfreq) * (1.0 + self.timing.drift_ppm * 1e-6)
        self.stimuli: deque[Stimulus] = deque(maxlen=MAX_STIMULI)
        self.n_sent = self.n_dropped = self.n_markers = self.n_ignored = 0
        #: how late each of the last pushes went out after its planned time (s): the pacing
        self.push_delays: deque[float] = deque(maxlen=10_000)
        self.error: BaseException | None = None
        self._outlet = None
        self._inlet = None
        self._init_threads()

    # --- control ----------------------------------------------------------------------------
    def start(self) -> VirtualSubject:
        """Build the subject, open the outlet (visible on return) and start streaming."""
        if self._threads or self._stop.is_set():
            raise RuntimeError("virtual subject already started")
        from neuralign.realtime.sources.kind_lsl import lsl_selector
        from neuralign.realtime.sources.lsl import LSLMarkerInlet

        self.signal = LiveSignal(self.config, self.snr, self.seed, self.block_s,
                                 subject_index=self.subject_index)
        self._inlet = LSLMarkerInlet(**lsl_selector(self.markers, "markers"),
                                     timeout=self.marker_timeout_s)
        try:
            self._inlet.open()
        except Exception as exc:  # noqa: BLE001 - not there yet: pull() keeps resolving
            log.warning("%s; streaming anyway, the marker stream is connected when it appears",
                        exc)
        self._outlet = make_outlet(self.name, self.stype, self.signal.ch_names,
                                   self.signal.sfreq, self.source_id, self.signal.ch_types,
                                   chunk_size=0, dtype="float32")
        self.signal.start_producer()
        self.t0 = local_clock()
        self._spawn(self._run, f"virtual-{self.name}")
        log.info("%s: virtual %s subject streaming %d ch @ %g Hz (snr %g, latency %g ms, "
                 "timing %s), markers from %s", self.name, self.config.modality,
                 len(self.signal.ch_names), self.signal.sfreq, self.signal.snr,
                 1e3 * self.latency_s, self.timing.name, self.markers)
        return self

    def stop(self) -> None:
        """Stop streaming, close the marker inlet and destroy the outlet."""
        self._halt(timeout=5)
        if self.signal is not None:
            self.signal.stop_producer()
        if self._inlet is not None:
            self._inlet.close()
        self._outlet = None

    @property
    def running(self) -> bool:
        """The streaming thread is alive (False after :meth:`stop` or a failure)."""
        return any(t.is_alive() for t in self._threads)

    @property
    def marker_connected(self) -> bool:
        return self._inlet is not None and self._inlet.connected

    @property
    def n_late(self) -> int:
        """Markers that came after their response's onset was streamed (its start is lost)."""
        return self.signal.n_late if self.signal is not None else 0

    @property
    def n_unknown(self) -> int:
        """Markers that name no image of the paradigm (shared response only)."""
        return self.signal.n_unknown if self.signal is not None else 0

    def onset_time(self, k: int) -> float:
        """Host time sample ``k`` is produced (a response's onset, for ``k = onset_sample``)."""
        return self.t0 + k / self.rate_true

    # --- streaming --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._stream()
        except BaseException as exc:  # noqa: BLE001 - reported to the owner via .error
            self.error = exc
            log.exception("%s: virtual subject failed", self.name)

    def _poll_markers(self) -> None:
        sig = self.signal
        for m in self._inlet.pull():
            self.n_markers += 1
            value = m.value.strip()
            onset = int(round((m.timestamp + self.latency_s - self.t0) * self.rate_true))
            if onset - sig.next_sample > MAX_AHEAD_S * sig.sfreq:
                self.n_ignored += 1
                log.warning("%s: marker %r stamped %.1f s ahead of the stream; ignored",
                            self.name, value, (onset - sig.next_sample) / sig.sfreq)
                continue
            known, late = sig.add_stimulus(value, onset)
            if late:  # once: at latency 0 a marker often trails its onset chunk by a sample
                log.log(logging.DEBUG if sig.n_late > 1 else logging.WARNING,
                        "%s: marker %r arrived after its response's onset was streamed: its "
                        "first %d samples (%.1f ms) are lost (counted in n_late; a latency of "
                        "a chunk or more avoids it)", self.name, value, late,
                        1e3 * late / sig.sfreq)
            self.stimuli.append(Stimulus(value, float(m.timestamp), onset,
                                         self.onset_time(onset), known, late))

    def _stream(self) -> None:
        sig, profile = self.signal, self.timing
        n = sig.block
        at_push = profile.stamping == "chunk_push"
        last_due = -math.inf
        seg, seg_start = np.zeros((len(sig.ch_names), 0)), 0
        j = 0
        while not self._stop.is_set():
            # planned block by block, as the replay player plans its loop passes
            sched = plan_schedule(n, sig.sfreq, profile, seed=self.timing_seed, t0=self.t0,
                                  first_index=j * n, chunk_size=self.chunk_size)
            self.n_dropped += sched.n_dropped
            for c in range(sched.n_chunks):
                lo, hi = int(sched.bounds[c]), int(sched.bounds[c + 1])
                idx = sched.index[lo:hi]
                due = max(float(sched.push_time[c]), last_due)
                last_due = due
                delay = due - local_clock()
                if delay > 0 and self._stop.wait(delay):
                    return
                if self._stop.is_set():
                    return
                self._poll_markers()
                last = int(idx[-1])
                if last >= sig.next_sample:
                    seg_start = sig.next_sample
                    seg = sig.render(last + 1)
                rel = idx - seg_start
                data = seg[:, rel[0]:rel[-1] + 1] if rel[-1] - rel[0] == hi - lo - 1 else seg[:, rel]
                stamps = sched.stamps[lo:hi]
                now = local_clock()
                self.push_delays.append(now - due)
                if at_push:  # as liblsl stamps a push_chunk without stamps (see the player)
                    stamps = stamps + (now - due)
                self._outlet.push_chunk(np.ascontiguousarray(data.T, dtype=np.float32),
                                        stamps.tolist())
                self.n_sent += hi - lo
            if sig.next_sample < (j + 1) * n:  # a lost tail: the next block starts in place
                sig.render((j + 1) * n)
            j += 1
