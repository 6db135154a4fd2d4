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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from neuralign import __version__
from neuralign.config import ModelConfig, PreprocessingConfig
from neuralign.errors import DataError, read_json
from neuralign.signal.whitening import Whitening

FORMAT = "neuralign-bundle"
# 1: the original dict layout. 2: the same layout, validated by Manifest, with an optional
# ``generator`` section. Version-1 bundles load unchanged (they simply have no generator).
FORMAT_VERSION = 2
WEIGHTS = "weights.safetensors"
TEMPLATES = "templates.safetensors"
MANIFEST = "manifest.json"
GENERATOR = "generator.safetensors"


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
    config: ModelConfig
    n_chans: int
    n_times: int
    feature_dim: int


class TemplateBankSection(_Part):
    image_ids: list[str]
    concepts: list[str] | None = None
    kind: str = "retrieval (test images)"
    normalised: bool = True


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
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise DataError(f"{where}: manifest key {loc!r}: {err['msg']} "
                        f"({len(exc.errors())} problem(s); is the bundle corrupt?)") from None


def load_bundle(directory: Path, verify: bool = True) -> Bundle:
    """Read a bundle; a missing file, wrong format, bad manifest or hash mismatch is one DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    mpath = directory / MANIFEST
    for name in (MANIFEST, WEIGHTS, TEMPLATES):
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: bundle file missing (is {directory} a bundle?)")
    raw = read_json(mpath, "bundle manifest")
    manifest = parse_manifest(raw, mpath)
    if manifest.generator is not None and not (directory / GENERATOR).is_file():
        raise DataError(f"{directory / GENERATOR}: bundle file missing (the manifest names a "
                        f"{manifest.generator.kind} generator)")
    if verify:
        expected = raw.get("content_hash")
        actual = _content_hash(directory, raw)
        if expected != actual:
            raise DataError(f"{directory}: content hash mismatch (manifest says {str(expected)[:12]}..., "
                            f"files hash to {actual[:12]}...): the bundle was modified or is corrupt")
    try:
        state = load_file(directory / WEIGHTS)
        templates = load_file(directory / TEMPLATES)
        generator = (load_file(directory / GENERATOR) if manifest.generator is not None
                     else None)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{directory}: unreadable safetensors file ({exc})") from exc
    return Bundle(directory, manifest, state, templates["embeddings"].numpy(),
                  templates["thumbnails"].numpy(), generator)
