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
    SNR_WINDOW_S,
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
) -> tuple[np.ndarray, dict]:
    """Continuous data (channels, samples) float64 + numbers for the summary."""
    n = timeline.n_samples
    if cfg.modality == "mua":
        data = synthesize_mua(
            paradigm, n_channels, timeline.image_index, timeline.onset_sample, n, cfg.sfreq,
            cfg.snr, rng, tuning=sources,
        )
        return data, {"signal_rms": float("nan"), "noise_rms": float("nan"), "snr": cfg.snr,
                      "snr_image_specific": float("nan"), "n_blinks": 0, "trials": None}
    evoked = synthesize_evoked(
        sources, timeline.image_index, timeline.onset_sample, n, cfg.sfreq, occ, rng
    )
    data = noise_mod.background(model, cfg.modality, n, cfg.sfreq, cfg.alpha_freq, rng)
    noise_rms = _rms(data[occ])
    scale = cfg.snr * noise_rms / evoked.signal_rms
    data += scale * evoked.data
    sc = noise_mod.SCALES[cfg.modality]
    data += noise_mod.line_noise(n_channels, n, cfg.sfreq, cfg.line_freq, sc["line"], rng)
    blink_data, blink_onsets = noise_mod.blinks(model, n, cfg.sfreq, cfg.blink_rate, sc["blink"], rng)
    data += blink_data
    info = {
        "signal_rms": scale * evoked.signal_rms, "noise_rms": noise_rms,
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


def subject_model(cfg: SimulationConfig) -> SubjectModel:
    """The paradigm, sensors and sources :func:`simulate` draws for ``cfg`` (nothing written)."""
    if cfg.modality == "retina":
        raise ValueError("the retina simulator has no continuous signal (modality 'retina')")
    rng_par, rng_src = _stage_rngs(cfg.seed)[:2]
    return _subject(cfg, rng_par, rng_src)


def _experiment(cfg: SimulationConfig, pre: PreprocessingConfig, out_dir: Path,
                rng_par: np.random.Generator, rng_src: np.random.Generator) -> _Experiment:
    """The paradigm and its image set (written), the sensors and the recorded units."""
    subject = _subject(cfg, rng_par, rng_src)
    paradigm = subject.paradigm
    image_dir = out_dir / "image_set"
    write_image_set(paradigm, image_dir, cfg.image_size)
    logger.info("wrote %d images to %s", len(paradigm.image_ids), image_dir)
    info = subject.info
    train_idx, test_idx = paradigm.indices("train"), paradigm.indices("test")
    row_of = np.full(len(paradigm.image_ids), -1)
    row_of[train_idx] = np.arange(len(train_idx))
    row_of[test_idx] = np.arange(len(test_idx))

    with info._unlock():
        info["line_freq"] = cfg.line_freq if cfg.line_freq > 0 else None
        info["description"] = f"neuralign {__version__} simulator, seed {cfg.seed}"
    return _Experiment(**vars(subject), cfg=cfg, pre=pre, out_dir=out_dir, row_of=row_of)


def _write_session(ex: _Experiment, name: str, images: np.ndarray, reps: int,
                   rng_t: np.random.Generator, rng_s: np.random.Generator
                   ) -> tuple[Path, SessionSummary]:
    """One session: its continuous .fif, events table and THINGS-layout epochs."""
    cfg, paradigm, pre, out_dir = ex.cfg, ex.paradigm, ex.pre, ex.out_dir
    timeline = make_timeline(images, reps, cfg, rng_t)
    data, numbers = _simulate_session(
        cfg, paradigm, timeline, ex.model, ex.sources, ex.occ, len(ex.ch_names), rng_s
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
    """``simulation.json``: settings, channels, SNR definition, files and per-session numbers."""
    cfg, ch_names = ex.cfg, ex.ch_names
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
            "image_metadata": "image_set/image_metadata.npy",
            "image_table": "image_set/metadata.csv",
            **{f"raw_{k}": v.raw_file for k, v in sessions.items()},
            **{f"events_{k}": v.events_file for k, v in sessions.items()},
            **{f"epochs_{k}": v.epochs_file for k, v in sessions.items()},
        },
        "sessions": {k: asdict(v) for k, v in sessions.items()},
    }


def simulate(
    cfg: SimulationConfig, out_dir: Path, preprocessing: PreprocessingConfig | None = None
) -> SimulationResult:
    """Simulate a THINGS-like RSVP experiment into ``out_dir``; deterministic for ``cfg.seed``.

    Writes ``image_set/`` (PNGs, ``image_metadata.npy``, ``metadata.csv``), per session
    ``sim_{training,test}_raw.fif`` (one annotation per stimulus onset, description = image id),
    ``events_{training,test}.csv``, ``preprocessed_eeg_{training,test}.npy`` (THINGS-EEG2 layout,
    not noise-normalized; the same file names for MEG/MUA) and ``simulation.json``.
    """
    if cfg.modality == "retina":  # still images -> spike counts, paired.npz
        from neuralign.offline.simulator.retina import simulate_retina

        return simulate_retina(cfg.retina, out_dir, seed=cfg.seed)
    t_start = time.perf_counter()
    pre = preprocessing if preprocessing is not None else PreprocessingConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_par, rng_src, rng_tr, rng_te, rng_sig_tr, rng_sig_te = _stage_rngs(cfg.seed)
    ex = _experiment(cfg, pre, out_dir, rng_par, rng_src)
    train_idx, test_idx = ex.paradigm.indices("train"), ex.paradigm.indices("test")

    sessions: dict[str, SessionSummary] = {}
    paths: dict[str, Path] = {}
    plan = (
        ("training", train_idx, cfg.train_repetitions, rng_tr, rng_sig_tr),
        ("test", test_idx, cfg.test_repetitions, rng_te, rng_sig_te),
    )
    for name, images, reps, rng_t, rng_s in plan:
        paths[name], sessions[name] = _write_session(ex, name, images, reps, rng_t, rng_s)

    image_dir = out_dir / "image_set"
    result = SimulationResult(
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
        epochs_sfreq=pre.resample_sfreq, n_train_images=len(train_idx),
        n_test_images=len(test_idx), n_template_images=len(ex.paradigm.indices("template")),
        sessions=sessions,
    )
    manifest = _manifest(ex, sessions)
    result.elapsed_s = time.perf_counter() - t_start
    manifest["elapsed_s"] = round(result.elapsed_s, 3)
    result.json_file.write_text(json.dumps(manifest, indent=2))
    logger.info("simulation written to %s in %.1f s", out_dir, result.elapsed_s)
    return result
