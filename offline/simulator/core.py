"""``simulate()``: write a complete THINGS-like dataset (images, continuous + epoched signals).

SNR definition (what ``SimulationConfig.snr`` sets, EEG/MEG): the ratio of two RMS amplitudes
over the occipito-parietal channels (THINGS-EEG2's 17 ``O*``/``P*`` channels for EEG). The signal
is each trial's own noise-free evoked response (shared + image-specific part, with its trial-to-
trial variability) in the 70-300 ms window after its onset, pooled over all trials of a session;
the noise is the background (spatially correlated pink noise + alpha + white sensor noise) over the
whole session. Line noise and blinks come on top. For MUA, ``snr`` scales the mean stimulus-driven
rate relative to ``MUA_PEAK_RATE`` (spikes/s).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mne
import numpy as np

from neuralign._version import __version__
from neuralign.config import PreprocessingConfig, SimulationConfig
from neuralign.offline.simulator import noise as noise_mod
from neuralign.offline.simulator.epoching import epoch_things_layout
from neuralign.offline.simulator.evoked import (
    MUA_AREAS,
    REGIONS,
    SNR_WINDOW_S,
    TUNING_STRENGTH,
    canonical_components,
    make_visual_sources,
    mua_channel_names,
    mua_tuning,
    synthesize_evoked,
    synthesize_mua,
)
from neuralign.offline.simulator.forward import sensor_model
from neuralign.offline.simulator.images import write_image_set
from neuralign.offline.simulator.paradigm import Paradigm, Timeline, make_paradigm, make_timeline

logger = logging.getLogger(__name__)

SESSIONS = ("training", "test")
STIMULUS_DURATION_S = 0.1
SNR_DEFINITION = (
    "snr = RMS(evoked) / RMS(background) over the occipito-parietal channels: the evoked part is "
    "each trial's own noise-free response (shared + image-specific) in 70-300 ms after its onset, "
    "pooled over the session's trials; the background is pink + alpha + white sensor noise over "
    "the whole session (line noise and blinks excluded)."
)


@dataclass
class SessionSummary:
    n_trials: int
    duration_s: float
    raw_file: str
    events_file: str
    epochs_file: str
    signal_rms: float  # volts / tesla / spikes/s (MUA)
    noise_rms: float
    snr: float
    snr_image_specific: float
    n_blinks: int


@dataclass
class SimulationResult:
    """What ``simulate`` wrote (absolute paths) and a few numbers describing the data."""

    out_dir: Path
    image_dir: Path
    image_metadata: Path
    metadata_csv: Path
    json_file: Path
    train_epochs: Path
    test_epochs: Path
    train_raw: Path
    test_raw: Path
    train_events: Path
    test_events: Path
    modality: str
    seed: int
    ch_names: list[str]
    sfreq: float
    epochs_sfreq: float
    n_train_images: int
    n_test_images: int
    n_template_images: int
    sessions: dict[str, SessionSummary] = field(default_factory=dict)
    elapsed_s: float = 0.0
    #: every subject's directory: ``[out_dir]`` for one subject (the flat layout), else
    #: ``out_dir/sub-01``, ``sub-02``, ... (the other fields then describe subject 1)
    subject_dirs: list[Path] = field(default_factory=list)
    #: one subject: empty; several: per subject its drawn parameters and sessions' SNR
    subjects: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines (the CLI prints them)."""
        lines = [
            f"  modality {self.modality}, {len(self.ch_names)} channels at {self.sfreq:g} Hz, seed {self.seed}",
            f"  images: {self.n_train_images} training, {self.n_test_images} test, "
            f"{self.n_template_images} templates ({self.image_dir})",
        ]
        for name, s in self.sessions.items():
            lines.append(
                f"  {name}: {s.n_trials} trials, {s.duration_s:.0f} s, snr {s.snr:.2f} "
                f"(image-specific {s.snr_image_specific:.2f}), {s.n_blinks} blinks -> {s.epochs_file}"
            )
        if self.subjects:
            lines[0] += f", {len(self.subjects)} subjects (above: subject 1)"
        for sub in self.subjects:
            snrs = ", ".join(f"{k} {v:.2f}" for k, v in sub["session_snr"].items())
            bads = ", ".join(sub["bad_channels"]) or "none"
            lines.append(
                f"  {sub['dir']}: latency {sub['latency_shift_ms']:+.1f} ms, gain "
                f"{sub['amplitude_gain']:.2f}, snr {sub['snr']:.2f} ({snrs}), bad channels {bads}"
            )
        lines.append(f"  written in {self.elapsed_s:.1f} s")
        return "\n".join(lines)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _sensor_setup(cfg: SimulationConfig):
    """(info, model or None, visual bool mask, occipito-parietal bool mask)."""
    if cfg.modality == "mua":
        names, _ = mua_channel_names(cfg.n_mua_channels)
        info = mne.create_info(names, cfg.sfreq, "misc")
        allmask = np.ones(len(names), dtype=bool)
        return info, None, allmask, allmask
    model = sensor_model(cfg.modality, cfg.montage, cfg.sfreq)
    info = model.info
    if cfg.modality == "eeg":
        info.set_montage(mne.channels.make_standard_montage(cfg.montage))
    return info, model, model.visual, model.occipital_parietal


def _simulate_session(
    cfg: SimulationConfig, paradigm: Paradigm, timeline: Timeline, model, sources,
    occ: np.ndarray, n_channels: int, rng: np.random.Generator,
    traits: SubjectTraits | None = None,
) -> tuple[np.ndarray, dict]:
    """Continuous data (channels, samples) float64 + numbers for the summary."""
    n = timeline.n_samples
    snr = cfg.snr if traits is None else traits.snr
    if cfg.modality == "mua":
        data = synthesize_mua(
            paradigm, n_channels, timeline.image_index, timeline.onset_sample, n, cfg.sfreq,
            snr, rng, tuning=sources,
        )
        return data, {"signal_rms": float("nan"), "noise_rms": float("nan"), "snr": snr,
                      "snr_image_specific": float("nan"), "n_blinks": 0, "trials": None}
    evoked = synthesize_evoked(
        sources, timeline.image_index, timeline.onset_sample, n, cfg.sfreq, occ, rng
    )
    data = noise_mod.background(model, cfg.modality, n, cfg.sfreq, cfg.alpha_freq, rng)
    noise_rms = _rms(data[occ])
    scale = snr * noise_rms / evoked.signal_rms
    data += scale * evoked.data
    del evoked.data
    gain = 1.0
    if traits is not None:  # the subject's overall signal amplitude (not its SNR)
        gain = traits.amplitude_gain
        data *= gain
    sc = noise_mod.SCALES[cfg.modality]
    data += noise_mod.line_noise(n_channels, n, cfg.sfreq, cfg.line_freq, sc["line"], rng)
    blink_data, blink_onsets = noise_mod.blinks(model, n, cfg.sfreq, cfg.blink_rate, sc["blink"], rng)
    data += blink_data
    del blink_data
    if traits is not None:
        traits.apply_channel_effects(data, rng)
    info = {
        "signal_rms": gain * scale * evoked.signal_rms, "noise_rms": gain * noise_rms,
        "snr": scale * evoked.signal_rms / noise_rms,
        "snr_image_specific": scale * evoked.specific_rms / noise_rms,
        "n_blinks": len(blink_onsets),
        "trials": (evoked.latency_shift_s, evoked.gain),
    }
    return data, info


def _write_events(path: Path, paradigm: Paradigm, timeline: Timeline, sfreq: float, trials) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["trial", "onset_sample", "onset_s", "image_id", "concept", "repetition"]
        if trials is not None:
            header += ["latency_shift_ms", "amplitude_gain"]
        writer.writerow(header)
        for k, (img, onset, rep) in enumerate(
            zip(timeline.image_index, timeline.onset_sample, timeline.repetition)
        ):
            row = [k, int(onset), repr(float(onset / sfreq)), paradigm.image_ids[img],
                   paradigm.concepts[img], int(rep)]
            if trials is not None:
                row += [f"{1e3 * trials[0][k]:.3f}", f"{trials[1][k]:.4f}"]
            writer.writerow(row)


def _picks(data: np.ndarray, ch_names: list[str], visual: np.ndarray,
           pre: PreprocessingConfig) -> tuple[np.ndarray, list[str]]:
    """Channel picks, as configured (before the chain, as the engine does)."""
    if pre.picks == "all":
        return data, list(ch_names)
    if pre.picks == "visual":
        keep = np.flatnonzero(visual)
    else:
        missing = [c for c in pre.picks if c not in ch_names]
        if missing:
            raise ValueError(f"picked channels not simulated: {missing}")
        keep = np.array([ch_names.index(c) for c in pre.picks])
    return data[keep], [ch_names[i] for i in keep]


@dataclass
class SubjectTraits:
    """What makes one subject of a multi-subject dataset differ from the others (drawn from the
    dataset's seed and the subject's index only; :class:`SubjectVariabilityConfig`).

    The dipoles, their orientations and tuning mixtures are in the subject's sources; the
    per-channel gain is in its sensor model's gain matrix (so the background and the evoked
    response see it). What is applied to the recorded signal is here.
    """

    index: int  # 1-based
    latency_shift_s: float
    amplitude_gain: float  # scales the subject's signal (evoked + background) in volts / teslas
    snr_factor: float
    snr: float  # cfg.snr * snr_factor: this subject's SNR (the dataset's definition)
    idiosyncrasy: float
    ch_gain: np.ndarray | None  # (channels,) or None (MUA)
    ch_noise_sd: np.ndarray | None  # (channels,) extra white noise, V / T
    bad_channels: list[int]
    bad_kinds: list[str]  # 'noisy' or 'flat', per bad channel
    bad_noise_sd: float  # RMS of a noisy bad channel's added noise
    bad_flat_gain: float

    def apply_channel_effects(self, data: np.ndarray, rng: np.random.Generator) -> None:
        """In place, on a (channels, samples) block: flat bad channels, each channel's extra
        white noise, the noisy bad channels' noise (row by row: bounded memory)."""
        if self.ch_noise_sd is None:
            return
        for c, kind in zip(self.bad_channels, self.bad_kinds):
            if kind == "flat":
                data[c] *= self.bad_flat_gain
        for c in range(data.shape[0]):
            data[c] += self.ch_noise_sd[c] * rng.standard_normal(data.shape[1])
        for c, kind in zip(self.bad_channels, self.bad_kinds):
            if kind == "noisy":
                data[c] += self.bad_noise_sd * rng.standard_normal(data.shape[1])

    def response_scale(self, n_channels: int) -> np.ndarray:
        """Per-channel factor on an evoked response added after the background (flat bad
        channels record almost nothing)."""
        out = np.ones(n_channels)
        for c, kind in zip(self.bad_channels, self.bad_kinds):
            if kind == "flat":
                out[c] = self.bad_flat_gain
        return out

    def describe(self, ch_names: list[str]) -> dict:
        """The subject's drawn parameters, for its ``simulation.json``."""
        return {
            "subject": self.index,
            "latency_shift_ms": round(1e3 * self.latency_shift_s, 4),
            "amplitude_gain": round(self.amplitude_gain, 6),
            "snr_factor": round(self.snr_factor, 6),
            "snr": round(self.snr, 6),
            "idiosyncrasy": self.idiosyncrasy,
            "bad_channels": [ch_names[c] for c in self.bad_channels],
            "bad_channel_kinds": {ch_names[c]: k for c, k in zip(self.bad_channels, self.bad_kinds)},
            "channel_gain": (None if self.ch_gain is None
                             else {c: round(float(g), 5) for c, g in zip(ch_names, self.ch_gain)}),
            "channel_extra_noise_rms": (None if self.ch_noise_sd is None else
                                        {c: float(f"{v:.4g}") for c, v in zip(ch_names, self.ch_noise_sd)}),
        }


def _draw_traits(cfg: SimulationConfig, index: int, n_channels: int,
                 rng: np.random.Generator) -> SubjectTraits:
    """One subject's parameters; the draws come in a fixed order whatever the settings (a
    setting changes its own parameter only)."""
    v = cfg.subjects
    z = rng.standard_normal(3)
    shift = float(np.clip(v.latency_sd_ms * z[0], -v.latency_max_ms, v.latency_max_ms)) / 1e3
    amp, snr_factor = float(np.exp(v.amplitude_sd * z[1])), float(np.exp(v.snr_sd * z[2]))
    g = np.exp(v.channel_gain_sd * rng.standard_normal(n_channels))
    noise_z = rng.standard_normal(n_channels)
    n_bad = int(min(rng.poisson(v.bad_channels_mean), n_channels // 4))
    bad = np.sort(rng.choice(n_channels, n_bad, replace=False)) if n_bad else np.zeros(0, int)
    kinds = ["flat" if u < 0.5 else "noisy" for u in rng.random(n_bad)]
    traits = SubjectTraits(
        index=index, latency_shift_s=shift, amplitude_gain=amp, snr_factor=snr_factor,
        snr=cfg.snr * snr_factor, idiosyncrasy=v.idiosyncrasy, ch_gain=None, ch_noise_sd=None,
        bad_channels=[], bad_kinds=[], bad_noise_sd=0.0, bad_flat_gain=v.bad_flat_gain,
    )
    if cfg.modality in ("eeg", "meg"):  # MUA: tuning, latency, gain and SNR only
        sc = noise_mod.SCALES[cfg.modality]
        traits.ch_gain = g
        traits.ch_noise_sd = v.channel_noise * sc["white"] * np.exp(0.5 * noise_z)
        traits.bad_channels = [int(c) for c in bad]
        traits.bad_kinds = kinds
        traits.bad_noise_sd = v.bad_noise_factor * sc["pink"] * amp
    return traits


@dataclass
class SubjectModel:
    """What a simulated dataset's signals are made of, drawn from its seed: the paradigm (every
    image), the sensors and the recorded units (visual dipoles for EEG/MEG, tuned units for MUA).

    :func:`simulate` and the live virtual subject (``live.py``) both get it from
    :func:`subject_model`, so a live stream evokes exactly the image responses a model trained
    on the dataset learned.
    """

    paradigm: Paradigm
    info: mne.Info
    model: object  # the sensor model (None for MUA)
    visual: np.ndarray
    occ: np.ndarray
    ch_names: list[str]
    sources: object  # VisualSources (EEG/MEG) or MuaTuning (MUA)
    #: a multi-subject dataset's subject: what was drawn for it (None: the single subject)
    traits: SubjectTraits | None = None


@dataclass(kw_only=True)
class _Experiment(SubjectModel):
    """What both sessions of one simulation share: the subject, plus where and how it is written."""

    cfg: SimulationConfig
    pre: PreprocessingConfig
    out_dir: Path
    row_of: np.ndarray  # image index -> its row in its split's epochs


def _stage_rngs(seed: int) -> list[np.random.Generator]:
    """Independent streams per stage: changing e.g. the image size never changes the signals."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]


def _subject(cfg: SimulationConfig, rng_par: np.random.Generator,
             rng_src: np.random.Generator) -> SubjectModel:
    paradigm = make_paradigm(cfg, rng_par)
    info, model, visual, occ = _sensor_setup(cfg)
    ch_names = list(info["ch_names"])
    # What the recorded units are (dipoles for EEG/MEG, tuned units for MUA): drawn once, shared
    # by the training and the test session.
    sources = (make_visual_sources(model, paradigm, rng_src) if model is not None
               else mua_tuning(paradigm, len(ch_names), cfg.sfreq, rng_src))
    return SubjectModel(paradigm, info, model, visual, occ, ch_names, sources)


#: SeedSequence spawn keys under the dataset's seed: 0-5 the single subject's stages (paradigm,
#: sources, timelines, signals), 6 its live draws, 7 the canonical tuning, (8, i) subject i+1
_CANONICAL_KEY = 7
_SUBJECTS_KEY = 8


def _subject_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """A multi-subject dataset's subject ``index`` (1-based): its sources, training / test
    timelines, training / test signals, traits and live streams, from the seed and the index
    only (adding subjects never changes one)."""
    ss = np.random.SeedSequence(seed, spawn_key=(_SUBJECTS_KEY, index - 1))
    return [np.random.default_rng(c) for c in ss.spawn(7)]


def subject_live_seed(cfg: SimulationConfig, subject: int | None = None) -> np.random.SeedSequence:
    """The seed of a subject's live draws (:class:`~.live.LiveSignal`), independent of its
    offline sessions."""
    if _is_multi(cfg, subject):
        ss = np.random.SeedSequence(cfg.seed, spawn_key=(_SUBJECTS_KEY, (subject or 1) - 1))
        return ss.spawn(7)[6]
    return np.random.SeedSequence(cfg.seed).spawn(7)[6]


def _is_multi(cfg: SimulationConfig, subject: int | None) -> bool:
    if subject is not None and not 1 <= subject <= cfg.n_subjects:
        raise ValueError(f"subject {subject}: the config simulates subjects 1..{cfg.n_subjects}")
    return cfg.n_subjects > 1


def _canonical(cfg: SimulationConfig, paradigm: Paradigm) -> list[np.ndarray]:
    """The dataset's canonical tuning components, per region (EEG/MEG) or area (MUA)."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_CANONICAL_KEY,)))
    m = cfg.subjects.n_canonical_components
    if cfg.modality == "mua":
        return canonical_components([a[4] for a in MUA_AREAS], paradigm, m, rng, 1.5)
    return canonical_components([r.features for r in REGIONS], paradigm, m, rng, TUNING_STRENGTH)


def _multi_subject(cfg: SimulationConfig, paradigm: Paradigm, index: int) -> SubjectModel:
    """Subject ``index`` (1-based) of a multi-subject dataset: the shared paradigm, its own
    dipoles / units, tuning mixture, latency, gains and bad channels."""
    rng_src, *_, rng_traits, _ = _subject_rngs(cfg.seed, index)
    info, model, visual, occ = _sensor_setup(cfg)
    ch_names = list(info["ch_names"])
    traits = _draw_traits(cfg, index, len(ch_names), rng_traits)
    canonical = _canonical(cfg, paradigm)
    idio = cfg.subjects.idiosyncrasy
    if model is None:
        sources = mua_tuning(paradigm, len(ch_names), cfg.sfreq, rng_src, canonical=canonical,
                             idiosyncrasy=idio, latency_shift_s=traits.latency_shift_s)
        sources.drive *= traits.amplitude_gain
    else:
        # the channel gains (impedance, contact) act on everything the head produces
        model = dataclasses.replace(model, gain=model.gain * traits.ch_gain[:, None])
        sources = make_visual_sources(model, paradigm, rng_src, canonical=canonical,
                                      idiosyncrasy=idio)
        sources.latency = sources.latency + traits.latency_shift_s
    return SubjectModel(paradigm, info, model, visual, occ, ch_names, sources, traits)


def subject_model(cfg: SimulationConfig, subject: int | None = None) -> SubjectModel:
    """The paradigm, sensors and sources :func:`simulate` draws for ``cfg`` (nothing written).

    ``subject`` (1-based, at most ``cfg.n_subjects``): which subject of a multi-subject config
    (None: the first). With ``n_subjects == 1`` the single subject.
    """
    if cfg.modality == "retina":
        raise ValueError("the retina simulator has no continuous signal (modality 'retina')")
    rng_par, rng_src = _stage_rngs(cfg.seed)[:2]
    if _is_multi(cfg, subject):
        return _multi_subject(cfg, make_paradigm(cfg, rng_par), subject or 1)
    return _subject(cfg, rng_par, rng_src)


def _experiment(cfg: SimulationConfig, pre: PreprocessingConfig, out_dir: Path,
                subject: SubjectModel, image_dir: Path | None) -> _Experiment:
    """A subject's experiment: the paradigm's image set (written to ``image_dir`` unless None:
    already written), the sensors and the recorded units."""
    paradigm = subject.paradigm
    if image_dir is not None:
        write_image_set(paradigm, image_dir, cfg.image_size)
        logger.info("wrote %d images to %s", len(paradigm.image_ids), image_dir)
    info = subject.info
    train_idx, test_idx = paradigm.indices("train"), paradigm.indices("test")
    row_of = np.full(len(paradigm.image_ids), -1)
    row_of[train_idx] = np.arange(len(train_idx))
    row_of[test_idx] = np.arange(len(test_idx))

    with info._unlock():
        info["line_freq"] = cfg.line_freq if cfg.line_freq > 0 else None
        info["description"] = f"neuralign {__version__} simulator, seed {cfg.seed}" + (
            f", subject {subject.traits.index}" if subject.traits else "")
    return _Experiment(**vars(subject), cfg=cfg, pre=pre, out_dir=out_dir, row_of=row_of)


def _write_session(ex: _Experiment, name: str, images: np.ndarray, reps: int,
                   rng_t: np.random.Generator, rng_s: np.random.Generator
                   ) -> tuple[Path, SessionSummary]:
    """One session: its continuous .fif, events table and THINGS-layout epochs."""
    cfg, paradigm, pre, out_dir = ex.cfg, ex.paradigm, ex.pre, ex.out_dir
    timeline = make_timeline(images, reps, cfg, rng_t)
    data, numbers = _simulate_session(
        cfg, paradigm, timeline, ex.model, ex.sources, ex.occ, len(ex.ch_names), rng_s,
        traits=ex.traits,
    )
    raw = mne.io.RawArray(data.astype(np.float32, copy=False), ex.info.copy(), verbose=False)
    onsets_s = timeline.onset_sample / cfg.sfreq
    raw.set_annotations(mne.Annotations(
        onset=onsets_s, duration=np.full(len(onsets_s), STIMULUS_DURATION_S),
        description=[paradigm.image_ids[i] for i in timeline.image_index],
    ))
    raw_path = out_dir / f"sim_{name}_raw.fif"
    raw.save(raw_path, fmt="single", overwrite=True, verbose=False)
    del raw
    events_path = out_dir / f"events_{name}.csv"
    _write_events(events_path, paradigm, timeline, cfg.sfreq, numbers["trials"])

    spatial, epoch_names = _picks(data, ex.ch_names, ex.visual, pre)
    del data
    epochs, times = epoch_things_layout(
        spatial, cfg.sfreq, epoch_names, timeline.onset_sample, ex.row_of[timeline.image_index],
        timeline.repetition, len(images),
        # re-referencing is an EEG operation; MEG and MUA channels keep their own reference
        pre if cfg.modality == "eeg" else pre.model_copy(update={"reference": "none"}),
    )
    del spatial
    npy_path = out_dir / f"preprocessed_eeg_{name}.npy"
    np.save(npy_path, {"preprocessed_eeg_data": epochs, "ch_names": epoch_names, "times": times},
            allow_pickle=True)
    summary = SessionSummary(
        n_trials=len(timeline.onset_sample), duration_s=timeline.n_samples / cfg.sfreq,
        raw_file=raw_path.name, events_file=events_path.name, epochs_file=npy_path.name,
        signal_rms=numbers["signal_rms"], noise_rms=numbers["noise_rms"], snr=numbers["snr"],
        snr_image_specific=numbers["snr_image_specific"], n_blinks=numbers["n_blinks"],
    )
    logger.info("%s session: %d trials, %.0f s", name, summary.n_trials, summary.duration_s)
    return npy_path, summary


def _manifest(ex: _Experiment, sessions: dict[str, SessionSummary]) -> dict:
    """``simulation.json``: settings, channels, SNR definition, files and per-session numbers
    (a multi-subject dataset's subject: also its drawn parameters, under ``subject``)."""
    cfg, ch_names = ex.cfg, ex.ch_names
    images = "image_set" if ex.traits is None else "../image_set"
    extra = {} if ex.traits is None else {"subject": ex.traits.describe(ch_names)}
    return {
        "neuralign_version": __version__,
        "seed": cfg.seed,
        "modality": cfg.modality,
        "simulation": cfg.model_dump(mode="json"),
        "preprocessing": ex.pre.model_dump(mode="json"),
        "ch_names": ch_names,
        "ch_types": ex.info.get_channel_types(),
        "mua_channel_type": "misc (spikes/s)" if cfg.modality == "mua" else None,
        "visual_channels": [c for c, v in zip(ch_names, ex.visual) if v],
        "occipital_parietal_channels": [c for c, v in zip(ch_names, ex.occ) if v],
        "snr_definition": SNR_DEFINITION,
        "snr_window_s": list(SNR_WINDOW_S),
        "sfreq": cfg.sfreq,
        "epochs": {"sfreq": ex.pre.resample_sfreq, "noise_normalized": False,
                   "layout": "images x repetitions x channels x times (THINGS-EEG2)"},
        "stimulus_duration_s": STIMULUS_DURATION_S,
        "files": {
            "image_metadata": f"{images}/image_metadata.npy",
            "image_table": f"{images}/metadata.csv",
            **{f"raw_{k}": v.raw_file for k, v in sessions.items()},
            **{f"events_{k}": v.events_file for k, v in sessions.items()},
            **{f"epochs_{k}": v.epochs_file for k, v in sessions.items()},
        },
        "sessions": {k: asdict(v) for k, v in sessions.items()},
        **extra,
    }


def _result(ex: _Experiment, paths: dict[str, Path], sessions: dict[str, SessionSummary],
            image_dir: Path) -> SimulationResult:
    cfg, pre, out_dir, paradigm = ex.cfg, ex.pre, ex.out_dir, ex.paradigm
    return SimulationResult(
        out_dir=out_dir.resolve(), image_dir=image_dir.resolve(),
        image_metadata=(image_dir / "image_metadata.npy").resolve(),
        metadata_csv=(image_dir / "metadata.csv").resolve(),
        json_file=(out_dir / "simulation.json").resolve(),
        train_epochs=paths["training"].resolve(), test_epochs=paths["test"].resolve(),
        train_raw=(out_dir / "sim_training_raw.fif").resolve(),
        test_raw=(out_dir / "sim_test_raw.fif").resolve(),
        train_events=(out_dir / "events_training.csv").resolve(),
        test_events=(out_dir / "events_test.csv").resolve(),
        modality=cfg.modality, seed=cfg.seed, ch_names=ex.ch_names, sfreq=cfg.sfreq,
        epochs_sfreq=pre.resample_sfreq, n_train_images=len(paradigm.indices("train")),
        n_test_images=len(paradigm.indices("test")),
        n_template_images=len(paradigm.indices("template")), sessions=sessions,
    )


def _write_sessions(ex: _Experiment, rngs: list[np.random.Generator]
                    ) -> tuple[dict[str, Path], dict[str, SessionSummary]]:
    """Both sessions of a subject; ``rngs``: training / test timelines, training / test signals."""
    cfg = ex.cfg
    rng_tr, rng_te, rng_sig_tr, rng_sig_te = rngs
    sessions: dict[str, SessionSummary] = {}
    paths: dict[str, Path] = {}
    plan = (
        ("training", ex.paradigm.indices("train"), cfg.train_repetitions, rng_tr, rng_sig_tr),
        ("test", ex.paradigm.indices("test"), cfg.test_repetitions, rng_te, rng_sig_te),
    )
    for name, images, reps, rng_t, rng_s in plan:
        paths[name], sessions[name] = _write_session(ex, name, images, reps, rng_t, rng_s)
    return paths, sessions


def simulate(
    cfg: SimulationConfig, out_dir: Path, preprocessing: PreprocessingConfig | None = None
) -> SimulationResult:
    """Simulate a THINGS-like RSVP experiment into ``out_dir``; deterministic for ``cfg.seed``.

    Writes ``image_set/`` (PNGs, ``image_metadata.npy``, ``metadata.csv``), per session
    ``sim_{training,test}_raw.fif`` (one annotation per stimulus onset, description = image id),
    ``events_{training,test}.csv``, ``preprocessed_eeg_{training,test}.npy`` (THINGS-EEG2 layout,
    not noise-normalized; the same file names for MEG/MUA) and ``simulation.json``.

    ``cfg.n_subjects > 1``: ``image_set/`` once (every subject sees the same images and split),
    the sessions and ``simulation.json`` of subject k in ``sub-{k:02d}/`` (with its drawn
    parameters), and a root ``simulation.json`` listing the subjects. The result's fields then
    describe subject 1; ``subject_dirs`` lists every subject's directory (``[out_dir]`` for one).
    """
    if cfg.modality == "retina":  # still images -> spike counts, paired.npz
        from neuralign.offline.simulator.retina import simulate_retina

        return simulate_retina(cfg.retina, out_dir, seed=cfg.seed)
    t_start = time.perf_counter()
    pre = preprocessing if preprocessing is not None else PreprocessingConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.n_subjects > 1:
        return _simulate_subjects(cfg, out_dir, pre, t_start)
    rng_par, rng_src, *rngs = _stage_rngs(cfg.seed)
    image_dir = out_dir / "image_set"
    ex = _experiment(cfg, pre, out_dir, _subject(cfg, rng_par, rng_src), image_dir)
    paths, sessions = _write_sessions(ex, rngs)
    result = _result(ex, paths, sessions, image_dir)
    result.subject_dirs = [result.out_dir]
    manifest = _manifest(ex, sessions)
    result.elapsed_s = time.perf_counter() - t_start
    manifest["elapsed_s"] = round(result.elapsed_s, 3)
    result.json_file.write_text(json.dumps(manifest, indent=2))
    logger.info("simulation written to %s in %.1f s", out_dir, result.elapsed_s)
    return result


def _simulate_subjects(cfg: SimulationConfig, out_dir: Path, pre: PreprocessingConfig,
                       t_start: float) -> SimulationResult:
    """``n_subjects > 1``: the shared image set, then one directory per subject."""
    paradigm = make_paradigm(cfg, _stage_rngs(cfg.seed)[0])  # the single subject's paradigm
    image_dir = out_dir / "image_set"
    write_image_set(paradigm, image_dir, cfg.image_size)
    logger.info("wrote %d images to %s", len(paradigm.image_ids), image_dir)
    first: SimulationResult | None = None
    dirs: list[Path] = []
    listed: list[dict] = []
    for k in range(1, cfg.n_subjects + 1):
        t_sub = time.perf_counter()
        sub_dir = out_dir / f"sub-{k:02d}"
        sub_dir.mkdir(parents=True, exist_ok=True)
        subject = _multi_subject(cfg, paradigm, k)
        ex = _experiment(cfg, pre, sub_dir, subject, None)
        paths, sessions = _write_sessions(ex, _subject_rngs(cfg.seed, k)[1:5])
        manifest = _manifest(ex, sessions)
        manifest["elapsed_s"] = round(time.perf_counter() - t_sub, 3)
        (sub_dir / "simulation.json").write_text(json.dumps(manifest, indent=2))
        dirs.append(sub_dir.resolve())
        listed.append({"dir": sub_dir.name, "json": f"{sub_dir.name}/simulation.json",
                       **manifest["subject"],
                       "session_snr": {n: v.snr for n, v in sessions.items()}})
        if first is None:
            first = _result(ex, paths, sessions, image_dir)
        logger.info("subject %d/%d written to %s in %.1f s", k, cfg.n_subjects, sub_dir,
                    time.perf_counter() - t_sub)
    assert first is not None
    first.subject_dirs = dirs
    first.subjects = [{key: sub[key] for key in ("dir", "subject", "latency_shift_ms",
                                                 "amplitude_gain", "snr", "bad_channels",
                                                 "session_snr")} for sub in listed]
    first.elapsed_s = time.perf_counter() - t_start
    root = {
        "neuralign_version": __version__,
        "seed": cfg.seed,
        "modality": cfg.modality,
        "n_subjects": cfg.n_subjects,
        "simulation": cfg.model_dump(mode="json"),
        "preprocessing": pre.model_dump(mode="json"),
        "files": {"image_metadata": "image_set/image_metadata.npy",
                  "image_table": "image_set/metadata.csv"},
        "subjects": [{key: sub[key] for key in ("subject", "dir", "json", "latency_shift_ms",
                                                "amplitude_gain", "snr_factor", "snr",
                                                "idiosyncrasy", "bad_channels", "session_snr")}
                     for sub in listed],
        "elapsed_s": round(first.elapsed_s, 3),
    }
    (out_dir / "simulation.json").write_text(json.dumps(root, indent=2))
    logger.info("%d subjects written to %s in %.1f s", cfg.n_subjects, out_dir, first.elapsed_s)
    return first
