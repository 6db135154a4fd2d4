"""FLIG training, Algorithm 1: stage 1 fits the CAE (Eq. 1); stage 2 alternates the flows' update
on L_2-Gen (Eq. 17) with the discriminators' update on L_D (Eq. 9 + gradient penalties).

A validation split of the training pairs (``val_fraction``) picks the checkpoint of each stage
(lowest validation CAE error; lowest validation L_x + L_s for stage 2). Test data is never seen.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from neuralign.generative_config import FligConfig
from neuralign.models.flig import FLIG, gradient_penalty, jacobian_clamp, rsa_loss
from neuralign.offline.generative.schedules import lr_schedule

log = logging.getLogger(__name__)


@dataclass
class FligHistory:
    cae_val_mse: list[float] = field(default_factory=list)
    flow_val: list[dict] = field(default_factory=list)
    best_cae_epoch: int = -1
    best_flow_epoch: int = -1
    seconds_cae: float = 0.0
    seconds_flow: float = 0.0


def _images_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def _n_batches(n: int, batch: int) -> int:
    """How many batches :func:`_batches` yields (the ragged last one dropped when n > batch)."""
    return n // batch if n > batch else min(n, 1)


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(_n_batches(n, batch)):
        yield perm[i * batch:(i + 1) * batch]


def generator_losses(model: FLIG, x: torch.Tensor, xf: torch.Tensor, s: torch.Tensor,
                     cfg: FligConfig) -> dict[str, torch.Tensor]:
    """Every term of Eq. 17 for one batch: images x, their frozen CAE codes xf = Enc(x), scaled
    responses s."""
    nll_x, zx = model.flow_x.nll(xf)
    nll_s, zs = model.flow_s.nll(s)
    xf_hat = model.flow_x(zs)[0]
    s_hat = model.flow_s(zx)[0]
    x_hat = model.dec(xf_hat)
    terms = {
        "mle": (nll_x + nll_s).mean(),
        # Eq. 8 as written: log(1 - D(fake)); log(1 - sigmoid(l)) = -softplus(l).
        "g": -(F.softplus(model.disc_x(xf_hat)).mean() + F.softplus(model.disc_s(s_hat)).mean()),
        "x": F.mse_loss(x_hat, x),
        "xf": F.mse_loss(xf_hat, xf),
        "s": F.mse_loss(s_hat, s),
        "z": F.mse_loss(zx, zs),
        "rsa": rsa_loss(zx, zs),
    }
    if cfg.loss_weights.jc > 0:
        terms["jc"] = jacobian_clamp(model.image_features_to_responses, xf,
                                     cfg.jc_lambda_plus, cfg.jc_lambda_minus, g_xf=s_hat)
    w = cfg.loss_weights
    terms["total"] = sum(getattr(w, k) * v for k, v in terms.items())
    return terms


def discriminator_loss(model: FLIG, xf: torch.Tensor, s: torch.Tensor, gp_weight: float) -> torch.Tensor:
    """Eq. 9: real features / responses labelled 1, generated ones 0, + gradient penalties."""
    with torch.no_grad():
        xf_hat = model.responses_to_image_features(s)
        s_hat = model.image_features_to_responses(xf)
    bce = F.binary_cross_entropy_with_logits
    dx_r, dx_f = model.disc_x(xf), model.disc_x(xf_hat)
    ds_r, ds_f = model.disc_s(s), model.disc_s(s_hat)
    loss = (bce(dx_r, torch.ones_like(dx_r)) + bce(dx_f, torch.zeros_like(dx_f))
            + bce(ds_r, torch.ones_like(ds_r)) + bce(ds_f, torch.zeros_like(ds_f)))
    if gp_weight > 0:
        loss = loss + gp_weight * (gradient_penalty(model.disc_x, xf_hat) + gradient_penalty(model.disc_s, s_hat))
    return loss


def _eval_routes(model: FLIG, x: torch.Tensor, s: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        x_hat = model.dec(model.responses_to_image_features(s))
        s_hat = model.image_features_to_responses(model.enc(x))
    return {"x": float(F.mse_loss(x_hat, x)), "s": float(F.mse_loss(s_hat, s))}


def _state_copy(model: FLIG) -> dict[str, torch.Tensor]:
    return copy.deepcopy({k: t.detach().clone() for k, t in model.state_dict().items()})


def _train_cae(model: FLIG, x_fit: torch.Tensor, x_val: torch.Tensor,
               extra_images: np.ndarray | None, cfg: FligConfig, device: torch.device,
               gen: torch.Generator, quiet: bool | None, hist: FligHistory) -> list:
    """Stage 1: the CAE, L_CAE = ||x - x_rec||^2 (Eq. 1); keeps its best-validation epoch and
    returns its parameters."""
    t0 = time.perf_counter()
    cae_params = list(model.enc.parameters()) + list(model.dec.parameters())
    x_cae = x_fit
    if cfg.cae_use_extra_images and extra_images is not None and len(extra_images):
        x_cae = torch.cat([x_fit, _images_tensor(extra_images).to(device)])
    opt = torch.optim.Adam(cae_params, lr=cfg.cae_lr)
    sched = lr_schedule(opt, cfg.cae_lr_schedule,
                        cfg.cae_epochs * _n_batches(len(x_cae), cfg.cae_batch_size))
    best, best_state = np.inf, None
    bar = tqdm(range(cfg.cae_epochs), desc="FLIG stage 1 (CAE)", unit="epoch", disable=quiet)
    for epoch in bar:
        model.enc.train()
        model.dec.train()
        for idx in _batches(len(x_cae), cfg.cae_batch_size, gen):
            loss = F.mse_loss(model.dec(model.enc(x_cae[idx])), x_cae[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        model.eval()
        with torch.no_grad():
            v = float(F.mse_loss(model.dec(model.enc(x_val)), x_val))
        hist.cae_val_mse.append(v)
        bar.set_postfix(val_mse=f"{v:.4f}")
        if v < best:
            best, hist.best_cae_epoch = v, epoch
            best_state = _state_copy(model)
        log.info("FLIG stage 1 epoch %d: validation MSE %.5f", epoch, v)
    model.load_state_dict(best_state)
    hist.seconds_cae = time.perf_counter() - t0
    return cae_params


@dataclass
class _FlowOptim:
    """Stage 2's optimisers and schedules: the flows' and the discriminators'."""

    flow_params: list
    opt_f: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sched_f: object
    sched_d: object


def _flow_epoch(model: FLIG, x_fit: torch.Tensor, xf_fit: torch.Tensor, s_fit: torch.Tensor,
                cfg: FligConfig, gen: torch.Generator, o: _FlowOptim) -> dict[str, float]:
    """One epoch of stage 2; the mean of each loss term over its steps."""
    sums: dict[str, float] = {}
    n_steps = 0
    for idx in _batches(len(x_fit), cfg.flow_batch_size, gen):
        model.eval()  # the CAE's BatchNorm / dropout stay frozen; flows have neither
        xb, xfb, sb = x_fit[idx], xf_fit[idx], s_fit[idx]
        terms = generator_losses(model, xb, xfb, sb, cfg)
        o.opt_f.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(o.flow_params, 100.0)
        o.opt_f.step()
        if o.sched_f is not None:
            o.sched_f.step()
        if cfg.loss_weights.g > 0:
            d_loss = discriminator_loss(model, xfb, sb, cfg.gp_weight)
            o.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            o.opt_d.step()
            terms["d"] = d_loss
            if o.sched_d is not None:
                o.sched_d.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_steps += 1
    return {k: v / max(n_steps, 1) for k, v in sums.items()}


def _train_flows(model: FLIG, x_fit: torch.Tensor, s_fit: torch.Tensor, x_val: torch.Tensor,
                 s_val: torch.Tensor, cae_params: list, cfg: FligConfig, gen: torch.Generator,
                 quiet: bool | None, hist: FligHistory) -> None:
    """Stage 2: the flows and discriminators with the CAE fixed (eval mode: no dropout, frozen
    BatchNorm statistics), so the codes x_f = Enc(x) are computed once; keeps the best epoch."""
    t0 = time.perf_counter()
    for p in cae_params:
        p.requires_grad_(False)
    model.eval()
    with torch.no_grad():
        xf_fit = torch.cat([model.enc(x_fit[i:i + 256]) for i in range(0, len(x_fit), 256)])
    flow_params = list(model.flow_x.parameters()) + list(model.flow_s.parameters())
    disc_params = list(model.disc_x.parameters()) + list(model.disc_s.parameters())
    opt_f = torch.optim.Adam(flow_params, lr=cfg.flow_lr)
    opt_d = torch.optim.Adam(disc_params, lr=cfg.disc_lr)
    total_steps = cfg.flow_epochs * _n_batches(len(x_fit), cfg.flow_batch_size)
    optim = _FlowOptim(flow_params, opt_f, opt_d,
                       lr_schedule(opt_f, cfg.flow_lr_schedule, total_steps),
                       lr_schedule(opt_d, cfg.flow_lr_schedule, total_steps))
    best, best_state = np.inf, None
    bar = tqdm(range(cfg.flow_epochs), desc="FLIG stage 2 (flows)", unit="epoch", disable=quiet)
    for epoch in bar:
        train_terms = _flow_epoch(model, x_fit, xf_fit, s_fit, cfg, gen, optim)
        val_terms = _eval_routes(model, x_val, s_val)
        score = val_terms["x"] * cfg.loss_weights.x + val_terms["s"] * cfg.loss_weights.s
        bar.set_postfix(val_x=f"{val_terms['x']:.4f}", val_s=f"{val_terms['s']:.4f}")
        hist.flow_val.append({"val_x": val_terms["x"], "val_s": val_terms["s"],
                              **{f"train_{k}": v for k, v in train_terms.items()}})
        if score < best:
            best, hist.best_flow_epoch = score, epoch
            best_state = _state_copy(model)
        log.info("FLIG stage 2 epoch %d: validation L_x %.5f L_s %.5f", epoch, val_terms["x"], val_terms["s"])
    model.load_state_dict(best_state)
    hist.seconds_flow = time.perf_counter() - t0


def train_flig(images: np.ndarray, responses: np.ndarray, cfg: FligConfig, device: torch.device,
               seed: int = 0, val_fraction: float = 0.1,
               extra_images: np.ndarray | None = None, progress: bool | None = None) -> tuple[FLIG, FligHistory]:
    """Both stages of Algorithm 1 on (N, S, S[, C]) images in [0, 1] and (N, M) responses
    (``extra_images``: unpaired images for stage 1 when ``cfg.cae_use_extra_images``; progress
    bars by default only on a terminal)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n = len(images)
    channels = 1 if images.ndim == 3 else images.shape[3]
    model = FLIG(responses.shape[1], images.shape[1], channels, cfg.n_units_x, cfg.n_units_s,
                 cfg.coupling_hidden, cfg.coupling_layers, cfg.cae_dropout, cfg.cae_width,
                 cfg.coupling_permute)
    n_val = max(2, int(round(val_fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    model.set_response_scaling(responses[fit], cfg.response_scaling)
    model.to(device)
    x_all = _images_tensor(images).to(device)
    s_all = model.scale_responses(torch.as_tensor(responses, dtype=torch.float32, device=device))
    x_fit, s_fit, x_val, s_val = x_all[fit], s_all[fit], x_all[val], s_all[val]
    hist = FligHistory()
    quiet = None if progress is None else not progress  # None: tqdm shows bars on a terminal only
    cae_params = _train_cae(model, x_fit, x_val, extra_images, cfg, device, gen, quiet, hist)
    _train_flows(model, x_fit, s_fit, x_val, s_val, cae_params, cfg, gen, quiet, hist)
    return model.eval(), hist
