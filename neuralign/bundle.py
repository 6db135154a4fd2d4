"""The model bundle: the one contract between offline training and the realtime engine.

A bundle is a directory with
- ``weights.safetensors``   model state (never pickle),
- ``templates.safetensors`` template bank: ``embeddings`` (n, d) float32, ``thumbnails`` (n, h, w, 3) uint8,
- ``manifest.json``         everything the engine needs and must not guess: channel names and types,
  input and model rates, epoch window and baseline, causal filter spec, noise normalization,
  model config, template image ids/concepts, neuralign version, and a SHA-256 content hash over
  the two weight files and the manifest itself (minus the hash). Loading checks the hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuralign import __version__
from neuralign.errors import DataError, read_json

FORMAT = "neuralign-bundle"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
TEMPLATES = "templates.safetensors"
MANIFEST = "manifest.json"


def _content_hash(directory: Path, manifest: dict) -> str:
    h = hashlib.sha256()
    for name in (WEIGHTS, TEMPLATES):
        h.update((directory / name).read_bytes())
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    state_dict: dict[str, Any]  # torch tensors
    template_embeddings: np.ndarray
    thumbnails: np.ndarray

    @property
    def ch_names(self) -> list[str]:
        return list(self.manifest["channels"]["names"])

    @property
    def template_ids(self) -> list[str]:
        return list(self.manifest["template_bank"]["image_ids"])

    def build_model(self):
        """Instantiate the model from the manifest and load the weights (eval mode)."""
        from neuralign.config import ModelConfig
        from neuralign.models import build_model

        m = self.manifest["model"]
        model = build_model(ModelConfig(**m["config"]), n_chans=m["n_chans"],
                            n_times=m["n_times"], feature_dim=m["feature_dim"])
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_bundle(
    directory: Path, manifest: dict[str, Any], state_dict: dict, template_embeddings: np.ndarray,
    thumbnails: np.ndarray,
) -> Path:
    """Write a bundle; ``manifest`` gets format, version and content hash filled in."""
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
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION,
                "neuralign_version": __version__}
    manifest["content_hash"] = _content_hash(directory, manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return directory


def load_bundle(directory: Path, verify: bool = True) -> Bundle:
    """Read a bundle; a missing file, wrong format or hash mismatch is one DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    mpath = directory / MANIFEST
    for name in (MANIFEST, WEIGHTS, TEMPLATES):
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: bundle file missing (is {directory} a bundle?)")
    manifest = read_json(mpath, "bundle manifest")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{mpath}: format: expected {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(f"{mpath}: format_version {manifest['format_version']} is newer than "
                        f"this neuralign ({__version__}) reads; upgrade neuralign")
    if verify:
        expected = manifest.get("content_hash")
        actual = _content_hash(directory, manifest)
        if expected != actual:
            raise DataError(f"{directory}: content hash mismatch (manifest says {str(expected)[:12]}..., "
                            f"files hash to {actual[:12]}...): the bundle was modified or is corrupt")
    try:
        state = load_file(directory / WEIGHTS)
        templates = load_file(directory / TEMPLATES)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{directory}: unreadable safetensors file ({exc})") from exc
    return Bundle(directory, manifest, state, templates["embeddings"].numpy(),
                  templates["thumbnails"].numpy())
