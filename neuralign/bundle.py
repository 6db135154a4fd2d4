"""The model bundle: the one contract between offline training and the realtime engine.

A bundle is a directory with

- ``weights.safetensors``   model state (never pickle),
- ``templates.safetensors`` template bank: ``embeddings`` (n, d) float32, ``thumbnails`` (n, h, w, 3) uint8,
- ``generator.safetensors`` (only with a ``generator`` section) the generative decoder's weights,
- ``manifest.json``         a :class:`Manifest`: everything the engine needs and must not guess
  (channel names and types, model rate, epoch window and baseline, causal filter spec, noise
  normalisation, model config, template image ids/concepts, room for a generator), the neuralign
  version and a SHA-256 content hash over the weight files and the manifest itself (minus the
  hash). Loading checks the hash.

The manifest is written and read here only; everything else uses the typed :class:`Manifest`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neuralign import __version__
from neuralign.config import ModelConfig, PreprocessingConfig
from neuralign.errors import DataError, read_json, require_file
from neuralign.signal.whitening import Whitening

FORMAT = "neuralign-bundle"
# 1: the original dict layout. 2: the same layout, validated by Manifest, with an optional
# ``generator`` section. Version-1 bundles load unchanged (they simply have no generator).
FORMAT_VERSION = 2
WEIGHTS = "weights.safetensors"
TEMPLATES = "templates.safetensors"
MANIFEST = "manifest.json"
GENERATOR = "generator.safetensors"
# Upper bounds on the sizes a manifest may ask for: generous for real use (Neuropixels and Utah
# arrays reach 1024+ channels; 100 s at 1 kHz; image features are <= 4096-d; THINGS has 26k
# images, COCO 118k), small enough that a crafted bundle cannot make the engine allocate
# gigabytes while its model and buffers are built.
MAX_CHANNELS = 4096
MAX_TIMES = 100_000
MAX_FEATURE_DIM = 65_536
MAX_EPOCH_VALUES = 2**24  # n_chans x n_times: one float32 epoch <= 64 MiB
MAX_TEMPLATES = 250_000
MAX_THUMBNAIL_PX = 1024  # thumbnails are (templates, h, w, 3) uint8, h and w at most this


class _Part(BaseModel):
    # Unknown keys are kept, not refused: a bundle written by a newer minor release still loads.
    model_config = ConfigDict(extra="allow")


class ChannelsSection(_Part):
    names: list[str]
    types: list[str]


class EpochSection(_Part):
    tmin: float
    tmax: float
    baseline: tuple[float, float] | None
    n_times: int


class NoiseNormalizationSection(_Part):
    """The frozen whitening, as :meth:`Whitening.to_dict` writes it."""

    method: str
    mode: str = ""
    w: list[list[float]]
    mean: list[float] | None = None
    extra: dict[str, Any] = {}

    def whitening(self) -> Whitening:
        return Whitening.from_dict(self.model_dump())


class ModelSection(_Part):
    """The model's shapes (bounded: see :data:`MAX_CHANNELS` ...; checked against the weights'
    tensor shapes by :func:`load_bundle` before the model is built)."""

    config: ModelConfig
    n_chans: int = Field(ge=1, le=MAX_CHANNELS)
    n_times: int = Field(ge=1, le=MAX_TIMES)
    feature_dim: int = Field(ge=1, le=MAX_FEATURE_DIM)

    @model_validator(mode="after")
    def _epoch_size(self) -> ModelSection:
        if self.n_chans * self.n_times > MAX_EPOCH_VALUES:
            raise ValueError(f"n_chans x n_times = {self.n_chans} x {self.n_times} exceeds the "
                             f"limit of {MAX_EPOCH_VALUES} values per epoch")
        return self


class TemplateBankSection(_Part):
    image_ids: list[str] = Field(max_length=MAX_TEMPLATES)
    concepts: list[str] | None = None
    kind: str = "retrieval (test images)"
    normalised: bool = True


class GeneratorValidation(_Part):
    """How the generator scored on images it was not trained on, against showing the mean
    training image instead: the engine shows generated images only when they beat it."""

    split: str  # which held-out images: "held-out training images" or "test images"
    n_images: int
    ssim: float
    ssim_mean_image: float
    two_way_pixel: float | None = None  # 2-way identification in pixel correlation (0.5 = chance)

    @property
    def beats_mean_image(self) -> bool:
        return self.ssim > self.ssim_mean_image and (self.two_way_pixel is None or self.two_way_pixel > 0.5)

    def reason(self) -> str:
        """Why the engine does not show generated images ("" when it does)."""
        if self.beats_mean_image:
            return ""
        return (f"the generator did not beat the mean training image on {self.n_images} "
                f"{self.split} (SSIM {self.ssim:.3f} vs {self.ssim_mean_image:.3f}"
                + (f", 2-way identification {self.two_way_pixel:.2f}" if self.two_way_pixel is not None else "")
                + "): showing the retrieved image instead")


class GeneratorSection(_Part):
    """A generative decoder carried beside the retrieval model (kind names the model family).

    ``input`` says what it decodes: ``"brain_embedding"`` is the retrieval model's L2-normalised
    ``encode_brain`` output the engine computes anyway, so generation needs no second
    preprocessing path. ``config`` is the ``GenerativeConfig`` it was trained with.
    """

    kind: str
    config: dict[str, Any] = {}
    input: str = "brain_embedding"
    n_inputs: int | None = None  # None: the retrieval model's embedding size
    image_size: int = 64
    channels: int = 1
    # None (older bundles): shown without a check
    validation: GeneratorValidation | None = None


class ScaleSection(_Part):
    """The unit the whitening was fitted in and the training data's amplitude, which the
    engine's scale check (:mod:`neuralign.realtime.scale_check`) compares live data with.

    Written at export; bundles exported before it have no ``scale`` (the engine skips the
    check). ``filtered_std``: per channel type, the median over channels of each channel's
    standard deviation within a training epoch (median over epochs) of the filtered,
    un-whitened signal (:func:`neuralign.units.channel_std`); ``whitened_rms``: the median RMS
    of a whitened training epoch (:func:`neuralign.units.median_epoch_rms`, ~1 for MVNN).
    """

    units: dict[str, str] = {}  # channel type -> unit: "V", "T", "T/m"; "a.u." for MUA / misc
    filtered_std: dict[str, float] = {}
    whitened_rms: float | None = None


def repetition_temperature(temperatures: Sequence[float], r: int) -> float:
    """``T_r`` from a bundle's ``repetition_temperatures``: ``temperatures[r - 1]``, beyond the
    list its last (the one rule for export, evaluate and the engine)."""
    return float(temperatures[min(max(r, 1), len(temperatures)) - 1])


class CalibrationSection(_Part):
    """Temperature scaling of the retrieval scores: ``p(image) = softmax(cosine / T)`` over the
    template bank, fitted at export on validation trials (never the test trials a report
    scores). Absent in bundles exported before it: the engine then publishes no probabilities.

    After ``r`` presentations of an image the engine decides on their averaged epoch, whose
    cosines are sharper than a single trial's: its posterior is ``softmax(cosine / T_r)`` with
    ``T_r = repetition_temperatures[r - 1]`` (beyond the list its last; absent, as in bundles
    exported before it: ``T`` for every ``r``).
    """

    temperature: float = Field(gt=0)
    repetition_temperatures: list[Annotated[float, Field(gt=0)]] | None = None
    method: str = ("temperature scaling: T (single trial) and T_r (the average of r "
                   "presentations) minimising the validation NLL of the true image")
    split: str = "validation images (held out of training)"
    n_trials: int = 0  # single trials the temperature was fitted on
    n_candidates: int = 0  # the validation template bank's size
    nll: float | None = None  # validation NLL at T
    ece: float | None = None  # validation expected calibration error (top-1, 10 bins) at T
    # dynamic stopping chosen on the same validation trials: stop once the accumulated top-1
    # posterior reaches the threshold, or at the maximum repetitions
    recommended_threshold: float | None = None
    recommended_max_reps: int | None = None

    def temperature_at(self, r: int) -> float:
        """``T_r`` of the decision on the average of ``r`` presentations."""
        ts = self.repetition_temperatures
        return repetition_temperature(ts, r) if ts else self.temperature


class PretrainedSection(_Part):
    """What a model adapted to its subject (``train --init``) was pretrained on."""

    run: str
    subjects: list[str]
    dataset: dict[str, Any]
    channels: int = Field(ge=1)


class Manifest(_Part):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    neuralign_version: str = __version__
    content_hash: str | None = None
    channels: ChannelsSection
    sfreq: float
    modality: str | None = None
    epoch: EpochSection
    preprocessing: PreprocessingConfig
    noise_normalization: NoiseNormalizationSection
    model: ModelSection
    template_bank: TemplateBankSection
    generator: GeneratorSection | None = None
    provenance: str | None = None  # where the epochs came from (e.g. "neuralign-causal")
    training_config: dict[str, Any] | None = None
    scale: ScaleSection | None = None  # absent in bundles exported before it
    calibration: CalibrationSection | None = None  # absent in bundles exported before it
    pretrained: PretrainedSection | None = None  # None: trained from scratch on its subject

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _content_hash(directory: Path, manifest: dict) -> str:
    h = hashlib.sha256()
    # the generator's weights only when there is one: bundles without it hash as they always did
    for name in (WEIGHTS, TEMPLATES) + ((GENERATOR,) if manifest.get("generator") else ()):
        h.update((directory / name).read_bytes())
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    state_dict: dict[str, Any]  # torch tensors
    template_embeddings: np.ndarray
    thumbnails: np.ndarray
    generator_state: dict[str, Any] | None = None  # torch tensors, with a generator section

    @property
    def ch_names(self) -> list[str]:
        return list(self.manifest.channels.names)

    @property
    def template_ids(self) -> list[str]:
        return list(self.manifest.template_bank.image_ids)

    def build_model(self):
        """Instantiate the model from the manifest and load the weights (eval mode)."""
        from neuralign.models import build_model

        m = self.manifest.model
        model = build_model(m.config, n_chans=m.n_chans, n_times=m.n_times,
                            feature_dim=m.feature_dim)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def build_generator(self):
        """The generative decoder (eval mode; ``generate(embeddings)`` -> images in [0, 1]), or
        None for a retrieval-only bundle."""
        g = self.manifest.generator
        if g is None or self.generator_state is None:
            return None
        from neuralign.generative_config import GenerativeConfig
        from neuralign.models.generators import build_generator

        n_inputs = g.n_inputs or self.template_embeddings.shape[1]
        return build_generator(g.kind, GenerativeConfig.model_validate(g.config), n_inputs,
                               g.image_size, g.channels, self.generator_state)


def save_bundle(
    directory: Path, manifest: Manifest, state_dict: dict, template_embeddings: np.ndarray,
    thumbnails: np.ndarray, generator_state: dict | None = None,
) -> Path:
    """Write a bundle; the manifest's format, version and content hash are filled in here
    (``generator_state`` is required exactly when the manifest has a generator section)."""
    import torch
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, directory / WEIGHTS)
    save_file(
        {
            "embeddings": torch.as_tensor(np.ascontiguousarray(template_embeddings, np.float32)),
            "thumbnails": torch.as_tensor(np.ascontiguousarray(thumbnails, np.uint8)),
        },
        directory / TEMPLATES,
    )
    if (manifest.generator is None) != (generator_state is None):
        raise ValueError("a generator section needs generator_state and vice versa")
    if generator_state is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in generator_state.items()},
                  directory / GENERATOR)
    elif (directory / GENERATOR).exists():  # an older export's generator must not linger
        (directory / GENERATOR).unlink()
    body = manifest.model_copy(update={"format": FORMAT, "format_version": FORMAT_VERSION,
                                       "neuralign_version": __version__}).to_json_dict()
    body["content_hash"] = _content_hash(directory, body)
    (directory / MANIFEST).write_text(json.dumps(body, indent=1, sort_keys=True))
    return directory


def parse_manifest(raw: dict[str, Any], where: Path | str) -> Manifest:
    """Validate a manifest dict (format, version, every section) into a :class:`Manifest`."""
    if raw.get("format") != FORMAT:
        raise DataError(f"{where}: format: expected {FORMAT!r}, got {raw.get('format')!r}")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{where}: format_version {version!r} is newer than this neuralign "
                        f"({__version__}) reads; upgrade neuralign")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise DataError(f"{where}: manifest key {loc!r}: {err['msg']} "
                        f"({len(exc.errors())} problem(s); is the bundle corrupt?)") from None
    _check_consistent(manifest, where)
    return manifest


def _check_consistent(m: Manifest, where: Path | str) -> None:
    """The sections agree on the sizes (so the bounds on ``model`` bound the others too)."""
    n = m.model.n_chans
    w = m.noise_normalization.w
    for key, got, ref, want in (
        ("channels.names", len(m.channels.names), "model.n_chans", n),
        ("channels.types", len(m.channels.types), "model.n_chans", n),
        ("noise_normalization.w", len(w), "model.n_chans", n),
        ("epoch.n_times", m.epoch.n_times, "model.n_times", m.model.n_times),
    ):
        if got != want:
            raise DataError(f"{where}: manifest key {key!r}: {got}, but {ref} is {want}")
    if any(len(row) != n for row in w):
        raise DataError(f"{where}: manifest key 'noise_normalization.w': expected {n} x {n}")
    concepts = m.template_bank.concepts
    if concepts is not None and len(concepts) != len(m.template_bank.image_ids):
        raise DataError(f"{where}: manifest key 'template_bank.concepts': {len(concepts)} "
                        f"entries for {len(m.template_bank.image_ids)} image_ids")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a safetensors file, from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: unreadable safetensors file ({exc})") from None


def _check_tensor_shapes(directory: Path, m: Manifest) -> None:
    """Before any tensor is read or the model built: the weights' shapes are those of the model
    the manifest describes (built on torch's meta device: shapes only, no memory), and the
    template bank has one embedding and one thumbnail per image id. A crafted manifest (a huge
    ``model.config.k`` ...) is refused here, not while gigabytes are being allocated."""
    import torch

    from neuralign.models import build_model

    tpath = directory / TEMPLATES
    t = _tensor_shapes(tpath)
    n = len(m.template_bank.image_ids)
    emb, thumbs = t.get("embeddings"), t.get("thumbnails")
    if emb is None or len(emb) != 2 or emb[0] != n or not 1 <= emb[1] <= MAX_FEATURE_DIM:
        raise DataError(f"{tpath}: 'embeddings' has shape {emb}, expected ({n} image_ids, d "
                        f"<= {MAX_FEATURE_DIM})")
    if (thumbs is None or len(thumbs) != 4 or thumbs[0] != n or thumbs[3] != 3
            or not all(1 <= px <= MAX_THUMBNAIL_PX for px in thumbs[1:3])):
        raise DataError(f"{tpath}: 'thumbnails' has shape {thumbs}, expected ({n} image_ids, h, "
                        f"w, 3) with h, w <= {MAX_THUMBNAIL_PX}")
    wpath = directory / WEIGHTS
    have = _tensor_shapes(wpath)
    mm = m.model
    try:
        with torch.device("meta"):
            model = build_model(mm.config, n_chans=mm.n_chans, n_times=mm.n_times,
                                feature_dim=mm.feature_dim)
    except ImportError:  # an optional backbone that is not installed: building will say so
        return
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DataError(f"{directory / MANIFEST}: manifest key 'model': cannot build the model it "
                        f"describes ({exc})") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # every parameter must be in the file; a buffer may be absent (older weights: the model's
    # load hooks fill it in)
    params = {k for k, _ in model.named_parameters()}
    for key in sorted(have.keys() | params):
        if want.get(key) != have.get(key):
            raise DataError(
                f"{wpath}: tensor {key!r} has shape {have.get(key)}, but the model "
                f"{directory / MANIFEST} describes (key 'model') needs {want.get(key)}: the "
                "manifest and the weights do not belong together")


def load_bundle(directory: Path, verify: bool = True) -> Bundle:
    """Read a bundle; a missing file, wrong format, bad manifest or hash mismatch is one DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    mpath = directory / MANIFEST
    for name in (MANIFEST, WEIGHTS, TEMPLATES):
        require_file(directory / name, f"bundle file missing (is {directory} a bundle?)")
    raw = read_json(mpath, "bundle manifest")
    manifest = parse_manifest(raw, mpath)
    if manifest.generator is not None:
        require_file(directory / GENERATOR, "bundle file missing (the manifest names a "
                     f"{manifest.generator.kind} generator)")
    if verify:
        expected = raw.get("content_hash")
        actual = _content_hash(directory, raw)
        if expected != actual:
            raise DataError(f"{directory}: content hash mismatch (manifest says {str(expected)[:12]}..., "
                            f"files hash to {actual[:12]}...): the bundle was modified or is corrupt")
    _check_tensor_shapes(directory, manifest)  # from the headers, before any tensor is loaded
    try:
        state = load_file(directory / WEIGHTS)
        templates = load_file(directory / TEMPLATES)
        generator = (load_file(directory / GENERATOR) if manifest.generator is not None
                     else None)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{directory}: unreadable safetensors file ({exc})") from exc
    return Bundle(directory, manifest, state, templates["embeddings"].numpy(),
                  templates["thumbnails"].numpy(), generator)
