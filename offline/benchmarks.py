"""Training throughput benchmark (samples/s) - numbers printed and saved, never asserted in tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from neuralign.config import LossWeights, ModelConfig


def training_throughput(n_chans: int = 63, n_times: int = 250, batch_size: int = 256,
                        steps: int = 10, feature_dim: int = 768, out: Path | None = None) -> dict:
    """Time full BrainAE optimisation steps (forward, four losses, backward, Adam) on random data."""
    from neuralign.models import build_model
    from neuralign.models.losses import brainae_loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(ModelConfig(), n_chans=n_chans, n_times=n_times, feature_dim=feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    x = torch.randn(batch_size, n_chans, n_times, device=device)
    f = torch.randn(batch_size, feature_dim, device=device)
    times = []
    for step in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        loss, _ = brainae_loss(model(x, f), x, f, LossWeights(), tau=model.tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    per_step = float(np.median(times))
    res = {"n_chans": n_chans, "n_times": n_times, "batch_size": batch_size, "steps": steps,
           "device": str(device), "threads": torch.get_num_threads(),
           "seconds_per_step": per_step, "samples_per_second": batch_size / per_step,
           "n_parameters": sum(p.numel() for p in model.parameters())}
    if out is not None:
        Path(out).write_text(json.dumps(res, indent=1))
    return res
