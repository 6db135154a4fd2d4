"""A latency-only MUA bundle: 1024 channels at 1 kHz, TVSD's window and preprocessing, random
weights. Its decisions mean nothing; it exists so ``bench latency --mua`` measures what a
1024-channel stream costs the engine (acquisition, filtering, epoching, a 1024-channel encoder)
without a trained MUA model on disk. The model is the ``tvsd`` config's (its encoder front end
included), unless one is passed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from neuralign.bundle import Manifest, save_bundle
from neuralign.config import ModelConfig, load_config
from neuralign.models import build_model


def _same_model(out: Path, model: ModelConfig, n_chans: int) -> bool:
    """Whether the bundle in ``out`` holds this model (a cached bundle of an older tvsd model,
    e.g. one with another encoder front end, must not be measured in its place)."""
    try:
        m = json.loads((out / "manifest.json").read_text())["model"]
        return m["n_chans"] == n_chans and ModelConfig.model_validate(m["config"]) == model
    except (OSError, ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
        return False


def synthetic_mua_bundle(out: Path, n_chans: int = 1024, sfreq: float = 1000.0,
                         n_templates: int = 20, seed: int = 0,
                         model_config: ModelConfig | None = None) -> Path:
    """Write the bundle to ``out`` (reused when it holds the same model) and return ``out``.

    ``model_config``: the model section to build (default: the ``tvsd`` config's).
    """
    out = Path(out)
    cfg = load_config("tvsd")
    if model_config is not None:
        cfg.model = model_config
    if (out / "manifest.json").exists() and _same_model(out, cfg.model, n_chans):
        return out
    pre = cfg.preprocessing.model_copy(update={"resample_sfreq": sfreq})
    n_times = int(round((pre.tmax - pre.tmin) * sfreq))
    torch.manual_seed(seed)
    feature_dim = 64
    model = build_model(cfg.model, n_chans=n_chans, n_times=n_times,
                        feature_dim=feature_dim).eval()
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n_templates, model.encode_brain(
        torch.zeros(1, n_chans, n_times)).shape[1])).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    names = [f"mua{i:04d}" for i in range(n_chans)]
    manifest = Manifest(
        channels={"names": names, "types": ["misc"] * n_chans}, sfreq=sfreq, modality="mua",
        epoch={"tmin": pre.tmin, "tmax": pre.tmax, "baseline": pre.baseline, "n_times": n_times},
        preprocessing=pre,
        noise_normalization={"method": "zscore", "mode": "channels",
                             "w": np.eye(n_chans).tolist(), "mean": [0.0] * n_chans},
        model={"config": cfg.model, "n_chans": n_chans, "n_times": n_times,
               "feature_dim": feature_dim},
        template_bank={"image_ids": [f"img{i:03d}" for i in range(n_templates)]})
    return save_bundle(out, manifest, model.state_dict(), bank,
                       np.zeros((n_templates, 8, 8, 3), np.uint8))
