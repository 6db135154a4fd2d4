"""A latency-only MUA bundle: 1024 channels at 1 kHz, TVSD's window and preprocessing, random
weights. Its decisions mean nothing; it exists so ``bench latency --mua`` measures what a
1024-channel stream costs the engine (acquisition, filtering, epoching, a 1024-channel encoder)
without a trained MUA model on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralign.bundle import Manifest, save_bundle
from neuralign.config import load_config
from neuralign.models import build_model


def synthetic_mua_bundle(out: Path, n_chans: int = 1024, sfreq: float = 1000.0,
                         n_templates: int = 20, seed: int = 0) -> Path:
    """Write the bundle to ``out`` (once; reused when it exists) and return ``out``."""
    out = Path(out)
    if (out / "manifest.json").exists():
        return out
    cfg = load_config("tvsd")
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
