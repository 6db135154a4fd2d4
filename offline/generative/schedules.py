"""Learning-rate schedules the generative trainers share (FLIG's two stages, ICG)."""

from __future__ import annotations

import torch


def lr_schedule(opt: torch.optim.Optimizer, kind: str, n_steps: int):
    """None for "constant" (the papers' fixed rate); "cosine": anneal to 0 over ``n_steps``;
    "one_cycle": warm up to the configured rate over the first 30 % of the steps, then anneal
    (Smith & Topin 2019). Step it once per optimizer step."""
    if kind == "one_cycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(n_steps, 1),
                                                   pct_start=0.3)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(n_steps, 1))
    return None
