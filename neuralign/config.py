"""Typed, validated configuration (pydantic) for datasets, preprocessing, models, training, realtime.

A config is one YAML file with the sections below; unknown keys are errors. Values can be
overridden from the command line with ``--set section.key=value`` (the value is parsed as YAML).
Every validation problem becomes one :class:`~neuralign.errors.ConfigError` naming the file, the
dotted key and what was expected.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from neuralign.errors import ConfigError
from neuralign.generative_config import GenerativeConfig, RetinaSimConfig
from neuralign.signal.guard import SPIKE_LIMIT
from neuralign.units import KNOWN_UNITS, unit_scale

if TYPE_CHECKING:
    from neuralign.models.registry import ModelTraits

# "retina": LNP ganglion-cell spike counts on still images (generative decoding).
Modality = Literal["eeg", "meg", "mua", "retina"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubjectVariabilityConfig(_Section):
    """How the subjects of a multi-subject simulation differ (``SimulationConfig.n_subjects`` > 1).

    Every subject sees the same images, split and repetitions (the paradigm comes from the
    dataset's seed); what is drawn per subject (from the seed and the subject's index only, so
    subject k does not change when ``n_subjects`` grows) is below. With one subject none of it
    applies (the single-subject output is that of earlier versions).
    """

    # Evoked latency: one shift added to every region's latency (a slower / faster subject).
    latency_sd_ms: float = Field(10.0, ge=0, description="SD of the per-subject latency shift, ms")
    latency_max_ms: float = Field(20.0, ge=0, description="the shift is clipped to +-this, ms")
    # Log-normal SDs (of the natural log) of the per-subject factors.
    amplitude_sd: float = Field(0.25, ge=0, description="overall signal gain (evoked and "
                                "background alike: conductivity, skull; not the SNR)")
    snr_sd: float = Field(0.25, ge=0, description="factor on `snr` (evoked vs background)")
    # Channel impedance / contact (EEG/MEG): per-channel gain and extra white noise.
    channel_gain_sd: float = Field(0.1, ge=0, description="log-normal SD of each channel's gain")
    channel_noise: float = Field(1.0, ge=0, description="extra white noise per channel, in units "
                                 "of the modality's sensor noise (log-normal spread 0.5)")
    # Bad channels (EEG/MEG): Poisson count per subject, each either very noisy or nearly flat.
    bad_channels_mean: float = Field(2.0, ge=0, description="Poisson mean of bad channels")
    bad_noise_factor: float = Field(5.0, gt=0, description="a noisy bad channel's added noise "
                                    "RMS, relative to the background (pink) RMS")
    bad_flat_gain: float = Field(0.02, ge=0, description="a flat bad channel's gain")
    # Idiosyncrasy: the fraction of each source's image-tuning variance that is the subject's
    # own; the rest is a random mixture of the dataset's canonical components (shared by all).
    idiosyncrasy: float = Field(0.3, ge=0, le=1)
    n_canonical_components: int = Field(4, ge=1, description="canonical tuning components per "
                                        "region / MUA area (the shared low-dimensional space)")


class SimulationConfig(_Section):
    """The built-in THINGS-like simulator (see ``neuralign.offline.simulator.simulate``)."""

    modality: Modality = "eeg"
    seed: int = 0
    n_train_concepts: int = Field(40, ge=2)
    images_per_train_concept: int = Field(8, ge=1)
    n_test_concepts: int = Field(40, ge=2)
    # Non-stimulus images per test concept: the concept-centre templates for classification.
    template_images_per_test_concept: int = Field(4, ge=1)
    train_repetitions: int = Field(4, ge=1)
    test_repetitions: int = Field(16, ge=1)
    sfreq: float = Field(1000.0, gt=0)
    soa: float = Field(0.2, gt=0, description="stimulus onset asynchrony, s")
    soa_jitter: float = Field(0.0, ge=0, description="uniform jitter added to each SOA, s")
    # Difficulty: RMS of the noise-free evoked response (shared + image-specific; the image-specific
    # part is ~0.6 of it) in 70-300 ms over occipito-parietal channels, divided by the RMS of the
    # background (pink + alpha + sensor noise). Single trials stay hard; averages are decodable.
    snr: float = Field(0.3, gt=0)
    line_freq: float = Field(50.0, ge=0, description="mains frequency; 0 disables line noise")
    alpha_freq: float = Field(10.0, gt=0)
    blink_rate: float = Field(0.1, ge=0, description="blinks per second")
    image_size: int = Field(64, ge=16, le=512)
    montage: str = "easycap-M1"
    n_mua_channels: int = Field(1024, ge=3)
    latent_dim: int = Field(16, ge=2)
    # Several subjects (docs/simulator.md, "Several subjects"): 1 = the single-subject layout.
    n_subjects: int = Field(1, ge=1)
    subjects: SubjectVariabilityConfig = SubjectVariabilityConfig()
    retina: RetinaSimConfig | None = None

    @model_validator(mode="after")
    def _retina_defaults(self) -> SimulationConfig:
        if self.modality == "retina" and self.retina is None:
            self.retina = RetinaSimConfig()
        return self


class RecordingSplitConfig(_Section):
    """Which shown images are test images; the rest train (zero-shot: no test concept trains)."""

    by: Literal["images", "concepts", "block"] = "images"
    # image ids / concept names (an image's folder) / blocks (0-based index or recording name)
    test: list[str] = Field(default_factory=list)
    test_file: Path | None = Field(None, description="text file, one entry of `test` per line")
    n_test_concepts: int | None = Field(
        None, ge=1, description="by concepts without a list: draw this many (training.seed)")


class RecordingConfig(_Section):
    """kind 'recording': a lab's own blocks (FIF/BrainVision/EDF/BDF/EEGLAB, .xdf, or
    'neuralign run --record' dirs) + stimulus events + a folder of images (id = file stem)."""

    recordings: list[Path] = Field(default_factory=list, description="blocks; --data adds one")
    images: Path | None = None
    # one CSV/TSV per recording (onset + image id); empty = annotations / recorded markers
    events: list[Path] = Field(default_factory=list)
    xdf_eeg_stream: str | None = Field(None, description="XDF data stream name or type")
    xdf_marker_stream: str | None = Field(None, description="XDF marker stream name or type")
    # the unit the recordings' values are in, overriding the files' own (as 'neuralign run
    # --units' does live): uV for an XDF whose stream declared no unit; None = the files' units
    units: str | None = Field(None, description="V, mV, uV, nV, T, fT, ...")
    split: RecordingSplitConfig = RecordingSplitConfig()

    @field_validator("units")
    @classmethod
    def _known_unit(cls, v: str | None) -> str | None:
        if v is not None and unit_scale(v) is None:
            raise ValueError(f"unknown unit {v!r} (known: {KNOWN_UNITS})")
        return v


class DatasetConfig(_Section):
    # paired / digits69 / vim1: image-response pairs for the generative decoders.
    # recording: a lab's own continuous recordings (settings in ``recording``).
    kind: Literal["simulated", "things_eeg2", "things_meg", "tvsd", "allen_natural_scenes",
                  "paired", "digits69", "vim1", "recording"]
    modality: Modality = "eeg"
    path: Path | None = None
    subject: int = Field(1, ge=1)
    # Several subjects (pretraining a shared encoder with one input layer per subject): THINGS-EEG2
    # sub-NN, THINGS-MEG P<n>, a multi-subject simulation's sub-NN folders. None: ``subject`` only.
    subjects: list[int] | None = Field(
        None, description="subject numbers to train on together; None = dataset.subject")
    # Which THINGS-EEG2 layout to read when kind == things_eeg2: the preprocessed .npy dicts,
    # or raw sessions re-preprocessed with neuralign's causal chain.
    source: Literal["preprocessed", "raw"] = "preprocessed"
    simulation: SimulationConfig | None = None
    recording: RecordingConfig | None = None

    @model_validator(mode="after")
    def _simulation_only_for_simulated(self) -> DatasetConfig:
        if self.kind == "simulated" and self.simulation is None:
            self.simulation = SimulationConfig(modality=self.modality)
        if self.kind == "recording" and self.recording is None:
            self.recording = RecordingConfig()
        return self


class NoiseNormalizationConfig(_Section):
    """Multivariate noise normalization (Guggenmos et al. 2018), fitted on training rows only."""

    method: Literal["mvnn", "zscore", "none"] = "mvnn"
    mode: Literal["epochs", "time"] = "epochs"
    eigenvalue_floor: float = Field(1e-6, ge=0, description="relative to the largest eigenvalue")
    online_update: bool = False
    online_halflife_s: float = Field(60.0, gt=0)


class PreprocessingConfig(_Section):
    """The causal chain, identical offline and online."""

    l_freq: float | None = Field(0.1, ge=0)
    h_freq: float | None = Field(100.0, gt=0)
    filter_order: int = Field(4, ge=1, le=10)
    notch_freqs: list[float] = Field(default_factory=list)
    notch_q: float = Field(30.0, gt=0)
    reference: Literal["average", "none"] | list[str] = "average"
    picks: list[str] | Literal["all", "visual"] = "all"
    resample_sfreq: float = Field(250.0, gt=0)
    tmin: float = 0.0
    tmax: float = Field(1.0, gt=0)
    baseline: tuple[float, float] | None = (-0.2, 0.0)
    noise_normalization: NoiseNormalizationConfig = NoiseNormalizationConfig()

    @model_validator(mode="after")
    def _check_window(self) -> PreprocessingConfig:
        if self.tmax <= self.tmin:
            raise ValueError(f"tmax ({self.tmax}) must be greater than tmin ({self.tmin})")
        if self.l_freq and self.h_freq and self.l_freq >= self.h_freq:
            raise ValueError(f"l_freq ({self.l_freq}) must be below h_freq ({self.h_freq})")
        if self.baseline is not None and self.baseline[1] <= self.baseline[0]:
            raise ValueError(f"baseline end must follow its start, got {self.baseline}")
        return self


class FeaturesConfig(_Section):
    """Frozen image features: computed by an encoder, or read from a file."""

    encoder: str = Field("builtin", description="'builtin' or 'open_clip:<arch>:<weights file>'")
    # a features file or directory (NPZ, NICE dir, ATM torch file); 'train --features' overrides
    path: Path | None = None


class LossWeights(_Section):
    con: float = Field(1.0, ge=0)
    fea: float = Field(1.0, ge=0)
    recon_b: float = Field(1.0, ge=0)
    recon_i: float = Field(1.0, ge=0)


class ModelConfig(_Section):
    """The model and its options, one flat section for every model.

    ``name`` is any registered model (neuralign.models.registry: brainae, vna, direct_encoding /
    direct_decoding - VNA's baselines, image -> response / response -> pixels with MSE - and the
    generative decoders flig / smr_icg / prior_map, set up by the top-level ``generative``
    section). Options only some models have are validated by that model's options class
    (``ModelTraits.config_class``).
    """

    name: str = Field("brainae", description="a registered model (neuralign.models.registry)")
    backbone: str = Field("tsconv", description="'tsconv' or a braindecode model name")
    k: int = Field(40, ge=1)
    m1: int = Field(26, ge=1)
    m2: int = Field(5, ge=1)
    s: int = Field(5, ge=1)
    embed_dim: int | None = Field(None, ge=2, description="shared space; None = feature dim")
    image_projection: Literal["linear", "identity"] = "linear"
    decoder_activation: Literal["none", "tanh"] = "none"
    dropout: float = Field(0.0, ge=0, lt=1)
    tau: float = Field(0.07, gt=0)
    learn_tau: bool = False
    loss_weights: LossWeights = LossWeights()
    # L_fea on L2-normalised embeddings (2 - 2 cos; scale-free like InfoNCE) or the paper's literal
    # element-wise MSE between zb and zi (which also aligns their magnitudes).
    fea_normalize: bool = True
    hidden: int = Field(512, ge=1, description="VNA MLP width")
    # BrainAE: a learned linear map of the input channels to this many virtual channels in front
    # of the brain encoder (models/spatial_projection.py); what makes a 1024-channel encoder fast
    # (docs/mua_encoder.md). None: the encoder runs on the input channels. At most n_chans.
    spatial_projection: int | None = Field(
        None, ge=1, description="virtual channels the brain encoder sees; None = the input channels")
    # TSConv: temporal filters run on every (virtual) channel, mapped to k by the spatial conv;
    # fewer than k makes the per-channel stages cheaper (docs/mua_encoder.md). None: k.
    temporal_filters: int | None = Field(
        None, ge=1, description="TSConv's per-channel temporal filters; None = k")
    # BrainAE trained on several subjects: one learned (C, C) channel mixing per subject in front
    # of the shared encoder (models/subject_layers.py). Set by the trainer from the data (the
    # number of subjects), kept in the run's config so the run rebuilds; None = one subject.
    subject_layers: int | None = Field(
        None, ge=2, description="a BrainAE option: per-subject input layers (set from the data)")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from neuralign.models.registry import config_names  # see _options_fit_the_model

        known = config_names()
        if name not in known:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _options_fit_the_model(self) -> ModelConfig:
        # imported here: the registry imports the model classes (torch), which import this module
        from neuralign.models.registry import check_model_config

        check_model_config(self)
        return self

    @property
    def traits(self) -> ModelTraits:
        """The declared traits of the named model (loss, pixel input, generative, options)."""
        from neuralign.models.registry import model_traits

        return model_traits(self.name)


class FineTuneConfig(_Section):
    """``train --init RUN``: start from a pretrained run and adapt it to this run's subject.

    The new subject gets its own input layer (a (C, C) channel mixing, started at the mean of the
    pretrained subjects' layers); the first ``layer_epochs`` train only that layer, then
    ``train: all`` trains everything with the shared weights at ``shared_lr_factor`` x the
    learning rate (``train: subject_layer`` keeps them frozen). The defaults (everything, at the
    full rate, from the first epoch) were measured best on simulated held-out subjects with 5
    minutes of data: top-1 0.41 against 0.39 with 2 layer-only epochs first, 0.31 with 3 and
    the shared weights at 0.3 x, and 0.20 training the layer alone (docs/benchmarks/adaptation.md).
    """

    init: Path | None = Field(None, description="a pretrained run directory (train --init)")
    train: Literal["all", "subject_layer"] = "all"
    layer_epochs: int = Field(0, ge=0)
    shared_lr_factor: float = Field(1.0, gt=0, le=1)
    epochs: int | None = Field(None, ge=1, description="the fine-tuning's epochs (None: "
                               "training.epochs); 20 measured best for 5 minutes of data")


class TrainingConfig(_Section):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(800, ge=2)
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(0.0, ge=0, description="L2 on conv/linear weights only; biases, "
                                "BatchNorm, the decoder intercept and the temperature are not decayed")
    # "constant": the paper's fixed Adam lr. "cosine": anneal to 0 over all steps (per batch);
    # on short budgets this lets the weights settle instead of ending mid random walk.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Exponential moving average of the weights (per step; None = off). Validation, the best
    # checkpoint and the exported model then use the averaged weights.
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # After training, fit BrainAE's encoding read-out on training data only (closed-form intercept,
    # least-squares gain on the validation images; see BrainAE.predict_response). False keeps the
    # raw decoder output D_B(P(f)) as the prediction.
    calibrate_encoding: bool = True
    n_val_trials: int = Field(740, ge=1)
    # How the validation images are drawn (fixed seed): "images", any training images;
    # "concepts", every image of whole training concepts held out of training (as many concepts
    # as it takes to reach ~n_val_trials images), so validation is as zero-shot as the test and a
    # temperature fitted there is not too sharp for unseen concepts (docs/calibration.md).
    validation_split: Literal["images", "concepts"] = "images"
    # True: one sample per image, the mean of its repetitions (the paper); False: every single
    # trial; "random": each epoch, each image's sample is the mean of a random non-empty subset of
    # its repetitions (augmentation: as many steps as averaging, the variety of single trials).
    average_train_repetitions: bool | Literal["random"] = True
    seed: int = 2024
    fine_tune: FineTuneConfig = FineTuneConfig()
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision: fp16 autocast + loss scaling on CUDA, bf16 autocast on a CPU with bf16.
    amp: bool = False
    num_threads: int | None = Field(None, ge=1)
    # The batch is lowered to keep at least this many optimiser steps per epoch;
    # 1 keeps batch_size whatever the data size (e.g. the paper's 800 on a small set).
    min_steps_per_epoch: int = Field(20, ge=1)
    # Gradient caching: batches larger than this are computed this many samples at a
    # time with the exact full-batch gradient and BatchNorm statistics (offline/grad_cache.py);
    # memory then scales with this, not with batch_size. None: 64 (CPU) / 400 (CUDA). A value
    # >= batch_size turns gradient caching off (one graph over the whole batch).
    micro_batch_size: int | None = Field(None, ge=2)
    # Training-time folding of TSConv's linear pairs (models/tsconv.py): temporal conv +
    # average pool as one strided conv, nearest up-sampling + transposed conv as one strided
    # transposed conv. Same parameters, values and gradients; False runs the layers as written
    # (the pre-issue computation, for before/after measurements). Inference folding is separate.
    fold: bool = True


class ClockConfig(_Section):
    """How each stream's sample clock is estimated (neuralign.realtime.clock): a gap is a
    sample-count deficit against the fitted line that persists, never one late stamp."""

    window_s: float = Field(30.0, gt=0)  # the line is fitted over this much recent signal
    min_slope_span_s: float = Field(10.0, gt=0)  # the rate is fitted once this much is seen
    max_ppm: float = Field(2000.0, gt=0)  # the fitted rate stays this close to nominal
    tol_samples: float = Field(2.5, gt=0)  # a gap is at least this many samples ...
    tol_jitter_k: float = Field(4.0, gt=0)  # ... and this many times the p99 stamp jitter
    initial_jitter_s: float = Field(0.002, ge=0)
    warmup_s: float = Field(1.0, gt=0)
    envelope_quantile: float = Field(0.05, ge=0, le=0.5)  # lower envelope of late stamps
    confirm_s: float = Field(0.05, gt=0)  # a deficit must persist over this much signal
    max_suspect_s: float = Field(2.0, gt=0)
    drift_warn_ppm: float = Field(50.0, gt=0)
    drift_min_span_s: float = Field(20.0, gt=0)


class SchedulingConfig(_Section):
    """Priorities of the engine's threads (neuralign.realtime.scheduling): 'normal' changes
    nothing; 'high' (nice -10) and 'realtime' (SCHED_FIFO) need CAP_SYS_NICE or an rtprio limit
    and fall back to normal, with one warning, where the OS refuses them; 'auto' takes the
    highest the OS grants, quietly, for one live stream (several, or a replayed file: normal)."""

    priority: Literal["auto", "normal", "high", "realtime"] = "auto"
    rt_priority: int = Field(10, ge=1, le=99)
    cpus: list[int] | None = None  # pin the acquisition/processing/inference threads here
    background_nice: int = Field(10, ge=0, le=19)  # the image generator's thread, always
    # the generator's thread in SCHED_IDLE (Linux): it yields a core at any other wake-up
    background_idle: bool = True


class RealtimeConfig(_Section):
    # defaults of 'neuralign run --source / --markers' (same spellings, e.g. lsl:EEG)
    source: str | None = None
    markers: str | None = None
    chunk_size: int = Field(10, ge=1)
    buffer_seconds: float = Field(30.0, gt=0)
    # Fixed batch shape (zero-padded): inference cost is the same whatever the load. A repeated
    # image needs two slots (single trial + running average). 4 suits RSVP at SOA >= 100 ms on CPU.
    # An engine with several streams uses at least two slots per stream (their epochs often end
    # together: one batch).
    batch_size: int = Field(4, ge=1)
    max_wait_ms: float = Field(20.0, ge=0)
    cadence_ms: float = Field(10.0, gt=0)
    top_k: int = Field(5, ge=1)
    sliding_hop_s: float = Field(0.2, gt=0)
    fill_missing: bool = False
    # compute threads of the engine: torch's, and numpy's BLAS while it runs
    torch_threads: int = Field(1, ge=1)
    result_stream_name: str = "neuralign-results"
    # LSL source_id of the result stream; None = a new random one per engine. 'neuralign view
    # --result-source-id' selects an engine by it when several run on one host.
    result_source_id: str | None = None
    connect_timeout_s: float = Field(10.0, gt=0)
    # Reliability. Which markers are decoded: 'known' = only image ids of the bundle's
    # template bank (others are counted and logged once); 'all' = every marker.
    decode_markers: Literal["known", "all"] = "known"
    # An epoch touching a non-finite or railed sample: 'flag' = decoded, its result carries
    # flags: ["bad_samples"]; 'drop' = not decoded. Counted either way.
    bad_epochs: Literal["flag", "drop"] = "flag"
    # |value| above this (volts: every channel of EEG bundles, volt channels of others) is a
    # railed / saturated sample; None = no check. MEG sensors have fixed ceilings of their own
    rail_volts: float | None = Field(0.5, gt=0)
    # any modality: a finite sample beyond this many times its channel's typical magnitude
    # (learned over the stream's first 2 s) is held and flagged like a railed one; None = off
    spike_limit: float | None = Field(SPIKE_LIMIT, gt=1)
    # a marker this far (s) ahead of the newest sample for this long is dropped (another clock)
    marker_max_wait_s: float = Field(10.0, gt=0)
    # the LSL stream's unit, overriding its metadata ('neuralign run --units uV'); None = read it
    units: str | None = None
    # LSL clock synchronisation (time_correction): 'auto' = only for a stream from another
    # host (on this host both ends read one clock); 'lsl' = always; 'none' = never
    clock_sync: Literal["auto", "lsl", "none"] = "auto"
    # the streams' sample clocks: jitter, drift and what counts as a gap
    clock: ClockConfig = ClockConfig()
    # markers arriving this much later after their stamps than data samples do: the marker
    # stream's clock runs behind the data's (reported and warned)
    marker_max_lag_s: float = Field(0.25, gt=0)
    # thread priorities and CPU pinning of the engine (see SchedulingConfig)
    scheduling: SchedulingConfig = SchedulingConfig()
    # after start-up, move every object alive into the collector's permanent generation
    # (gc.freeze, microseconds): the engine's steady state allocates little, and the
    # collections it still triggers no longer walk the model's, the bundle's and the
    # libraries' objects (a full collection of them took ~130 ms)
    gc_freeze: bool = True
    # run the model once on its last input so that it ends this long before the next epoch's
    # last sample is due, under the inference lock, result discarded (0: never): after ~200 ms
    # of other work its weights and buffers have left the CPU caches, and the real forward
    # pays for it (inference stage p50 3.35 / 3.27 ms without, 2.83 / 3.00 with, two 40 s runs
    # each on a 2-core VM); ~1 ms of CPU per epoch. Not needed (not done) with early_encoding.
    prewarm_ms: float = Field(5.0, ge=0)
    # encode each epoch's first frames while its last samples arrive (TSConv encoders on CPU,
    # fixed noise normaliser, no filled-in channels; else off, logged): at its last sample
    # only a frame or two is left to encode. Same decisions; off only to compare.
    early_encoding: bool = True
    # with one stream, the acquisition thread that receives the sample an epoch waits for
    # processes it (filter, cut, decode, publish) instead of waking the processing thread
    # (several streams: one pass for all on the processing thread); off only to compare
    inline_pass: bool = True
    # A bundle generator's images: "validated" shows them only when the generator beat the mean
    # training image on held-out images (its validation in the bundle; otherwise the viewer shows
    # the retrieved image and says why), "always" shows them regardless, "off" never generates.
    generated_images: Literal["validated", "always", "off"] = "validated"
    # The generator is a display aid next to the decoder: it generates at most this share of
    # the time on its (background) thread, a quarter of one core by default. One stream costs
    # ~0.13 of a core with the demo's generator; with several streams it skips epochs instead
    # of taking the cores the decoder, the device apps and the result consumers need.
    generation_cpu_share: float = Field(0.25, gt=0, le=1)
    # an epoch still waiting for its image after this long is skipped (no longer live)
    generation_max_age_s: float = Field(2.0, gt=0)


class Config(_Section):
    name: str = "unnamed"
    dataset: DatasetConfig
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    features: FeaturesConfig = FeaturesConfig()
    # a factory: validating a ModelConfig imports the model registry, not at this module's import
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = TrainingConfig()
    realtime: RealtimeConfig = RealtimeConfig()
    generative: GenerativeConfig | None = None

    @model_validator(mode="after")
    def _generative_defaults(self) -> Config:
        if self.model.traits.generative and self.generative is None:
            self.generative = GenerativeConfig()
        return self


# ---------------------------------------------------------------------------------------------
# Loading


def shipped_config_path(name: str) -> Path:
    """Path of a config shipped with the package (``demo`` or ``demo.yaml``)."""
    fname = name if name.endswith(".yaml") else f"{name}.yaml"
    return Path(str(resources.files("neuralign.configs") / fname))


def shipped_config_names() -> list[str]:
    root = resources.files("neuralign.configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(spec: str | Path) -> Path:
    """A path on disk, or the name of a shipped config (``demo``, ``things_eeg2``...)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml") and path.parent == Path("."):
        shipped = shipped_config_path(path.name)
        if shipped.is_file():
            return shipped
    if path.exists():
        raise ConfigError(str(path), "<file>", "expected a YAML file, found a directory")
    raise ConfigError(
        str(path), "<file>",
        f"file not found (shipped configs: {', '.join(shipped_config_names())})",
    )


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(source, dotted, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """``["training.epochs=5", ...]`` -> ``[("training.epochs", 5), ...]`` (values as YAML)."""
    parsed = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("--set", item, "expected key=value, e.g. training.epochs=5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-after"))


def _expected(err: dict) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
            break
    return f"expected {msg}" if kind != "value_error" else msg


def config_from_dict(tree: dict, source: str = "<config>") -> Config:
    """Validate a plain dict; the first problem becomes one ConfigError naming ``source``."""
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _format_loc(err["loc"]) or "<top level>"
        got = err.get("input") if err.get("type") not in ("missing", "extra_forbidden") else None
        if isinstance(got, dict):
            got = None
        raise ConfigError(source, key, _expected(err), got) from exc


def load_config(spec: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config; relative dataset paths are resolved to the file."""
    path = resolve_config_path(spec)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "<yaml>"
        raise ConfigError(str(path), where, "invalid YAML: " + str(getattr(exc, "problem", exc))) from exc
    if not isinstance(tree, dict):
        raise ConfigError(str(path), "<top level>", "expected a mapping of sections")
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value, f"{path} (--set {key})")
    source = str(path) + (" with --set overrides" if overrides else "")
    config = config_from_dict(tree, source)
    ds = config.dataset
    if ds.path is not None and not ds.path.is_absolute() and not ds.path.exists():
        candidate = path.parent / ds.path
        if candidate.exists():
            ds.path = candidate
    return config


def config_from_overrides(overrides: list[str] | None = None) -> Config:
    """The schema's defaults (a simulated dataset) with ``--set`` overrides: the config of a
    command run without ``--config`` (``neuralign run``)."""
    tree: dict = {"dataset": {"kind": "simulated"}}
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value, f"--set {key}")
    return config_from_dict(tree, "defaults with --set overrides")


def dump_config(config: Config) -> dict:
    """A YAML-safe dict of the config (what runs and bundles store)."""
    return config.model_dump(mode="json")
