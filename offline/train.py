"""The BrainAE training loop (paper Appendix E), on CPU, one GPU or many through ``torchrun``.

Adam(lr, betas); each epoch trains on shuffled batches and scores a held-out validation split of
training images; the checkpoint with the lowest VALIDATION loss is kept (never chosen on test).
Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (gloo on CPU,
nccl on CUDA); every rank draws the same seeded permutation and takes its own slice of each batch.

BrainAE batches larger than ``training.micro_batch_size`` go through gradient caching
(:mod:`neuralign.offline.grad_cache`): the exact full-batch gradient, full-batch BatchNorm
statistics included, with the memory of one micro-batch. Under DDP BrainAE always steps that
way (whatever the batch): the ranks exchange embeddings and BatchNorm moments, so the loss is the
whole batch's (InfoNCE over all pairs, statistics over all samples, not per rank) and the summed
gradient equals the single-process one (tests/offline/test_ddp_grad_cache.py). Other models use
DDP's own per-rank loss and averaged gradients.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from neuralign.config import Config, dump_config
from neuralign.devices import resolve_device
from neuralign.errors import UserError
from neuralign.offline.prepare import Prepared
from neuralign.offline.run_dir import MODEL_FILE

if TYPE_CHECKING:
    from neuralign.offline.finetune import Pretrained

log = logging.getLogger(__name__)

MIN_STEPS_PER_EPOCH = 20  # the default of training.min_steps_per_epoch
# Gradient-caching micro-batch when training.micro_batch_size is None. CPU: 64, measured on a
# quiet 2-core machine with `neuralign train` at batch 800 (640 fitting images, 63 x 250, 1024-d
# features, 3 epochs): 36 s of epochs and 2.4 GB peak RSS at 64 against 40 s and 3.4 GB at 128
# (under heavy load, 256-sample steps had favoured 128 in CPU time: 8.5 s vs 9.7 s). CUDA: an
# unmeasured guess that keeps kernels large (set training.micro_batch_size to tune it).
DEFAULT_MICRO_BATCH = {"cpu": 64, "cuda": 400}


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory instead of returning it to the OS (CPU training on Linux).

    glibc serves blocks above 32 MB with mmap and unmaps them on free, so every micro-batch's
    activations (58 MB at 128 x 40 x 63 x 45) were page-faulted and zeroed anew: measured on this
    2-core machine, a 256-sample step took 21.6 s of CPU in micro-batches of 128 and
    8.5 s with mmap off and trimming off (2.6x, most of it system time). Peak RSS is unchanged
    (the memory is reused, not grown); it is just not handed back between steps. A no-op (False)
    off glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def seed_everything(seed: int) -> None:
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def model_inputs(prep: Prepared, index: np.ndarray, average: bool | str,
                 rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoder inputs, image features and reconstruction targets for the given training images.

    ``average`` True: one sample per image (mean over repetitions, as the paper); False: one
    sample per repetition (target: the trial itself); "random": the input is, per image, the mean
    of a random non-empty subset of its repetitions (drawn anew each call, i.e. each epoch) and
    the reconstruction target is the mean of all of them - the paper's averaged response, so the
    augmentation adds variety to what is encoded, not noise to what is predicted.
    """
    x = prep.x_train[index]
    f = prep.f_train[index]
    if average == "random":
        rng = rng or np.random.default_rng(0)
        mask = rng.random(x.shape[:2]) < rng.random((x.shape[0], 1))
        mask[np.arange(len(mask)), rng.integers(0, x.shape[1], len(mask))] = True
        w = (mask / mask.sum(axis=1, keepdims=True)).astype(np.float32)
        return np.einsum("nr,nrct->nct", w, x, optimize=True), f, x.mean(axis=1)
    if average:
        mean = x.mean(axis=1)
        return mean, f, mean
    n, r = x.shape[:2]
    single = x.reshape(n * r, *x.shape[2:])
    return single, np.repeat(f, r, axis=0), single


def compute_loss(model, x: torch.Tensor, f: torch.Tensor, config: Config,
                 target: torch.Tensor | None = None):
    """The configured model's objective; ``target`` (default ``x``) is what reconstructions aim at."""
    from neuralign.models.losses import brainae_loss, clip_loss

    kind = config.model.traits.loss  # the objective the model declares (models/registry.py)
    if kind in ("mse_encoding", "mse_decoding"):  # e.g. VNA's baselines: plain MSE regressions
        # Called through ``model`` (not a bare method) so DDP sees the forward and syncs gradients.
        pred = model(f) if kind == "mse_encoding" else model(x)
        goal = (x if target is None else target) if kind == "mse_encoding" else f
        loss = torch.nn.functional.mse_loss(pred, goal.reshape(pred.shape))
        return loss, {"mse": float(loss.detach()), "total": float(loss.detach())}
    out = model(x, f)
    core = model.module if hasattr(model, "module") else model
    if kind == "brainae":
        return brainae_loss(out, x if target is None else target, f, config.model.loss_weights,
                            tau=core.tau,
                            fea_normalize=config.model.fea_normalize)
    return clip_loss(out, tau=core.tau if hasattr(core, "tau") else config.model.tau)


def autocast_context(device: torch.device, amp: bool):
    """A factory of the autocast context the step runs in: fp16 on CUDA, bf16 on CPU, or none."""
    import contextlib

    if not amp:
        return contextlib.nullcontext
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16)


@torch.no_grad()
def _evaluate_brainae(model, x: np.ndarray, f: np.ndarray, config: Config, device,
                      batch: int) -> dict:
    """BrainAE's validation loss in chunks of ``batch``: embeddings and reconstructions per chunk
    (eval mode: no sample couples another), InfoNCE and the feature loss over the whole split,
    so the value does not depend on the chunk size."""
    from neuralign.offline.grad_cache import brainae_losses

    core = model.module if hasattr(model, "module") else model
    target = torch.from_numpy(x).to(device)
    emb_loss, sample_loss = brainae_losses(config.model.loss_weights, core.tau, len(x), target,
                                           config.model.fea_normalize)
    zb, zi, total = [], [], 0.0
    sums: dict[str, float] = {}
    for i in range(0, len(x), batch):
        out = core(target[i : i + batch], torch.from_numpy(f[i : i + batch]).to(device))
        loss, parts = sample_loss(out, slice(i, i + batch))
        total += float(loss)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        zb.append(out["zb"].float())
        zi.append(out["zi"].float())
    zb_all, zi_all = torch.cat(zb), torch.cat(zi)
    loss, parts = emb_loss(zb_all, zi_all)
    res = {**{k: float(v) for k, v in parts.items()}, **sums, "total": total + float(loss)}
    sim = F.normalize(zb_all, dim=-1) @ F.normalize(zi_all, dim=-1).T
    res["top1"] = float((sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean())
    return res


@torch.no_grad()
def evaluate_loss(model, x: np.ndarray, f: np.ndarray, config: Config, device, batch: int) -> dict:
    """Mean loss components over a split, and top-1 retrieval among that split's images."""
    model.eval()
    if config.model.traits.loss == "brainae":
        return _evaluate_brainae(model, x, f, config, device, batch)
    sums: dict[str, float] = {}
    n = 0
    zb_all, zi_all = [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).to(device)
        fb = torch.from_numpy(f[i : i + batch]).to(device)
        _, parts = compute_loss(model, xb, fb, config)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v * len(xb)
        n += len(xb)
        core = model.module if hasattr(model, "module") else model
        if hasattr(core, "encode_brain"):
            zb_all.append(torch.nn.functional.normalize(core.encode_brain(xb), dim=-1))
            zi_all.append(torch.nn.functional.normalize(core.encode_image(fb), dim=-1))
    res = {k: v / n for k, v in sums.items()}
    if zb_all:
        sim = torch.cat(zb_all) @ torch.cat(zi_all).T
    else:  # the direct baselines score every (response, image) pair themselves
        sim = core.scores(torch.from_numpy(x).to(device), torch.from_numpy(f).to(device))
    res["top1"] = float((sim.argmax(1) == torch.arange(len(sim), device=sim.device)).float().mean())
    return res


def _to_device(a: np.ndarray, device: torch.device, pin: bool) -> torch.Tensor:
    """A batch on the device; through pinned memory on CUDA, so the copy is asynchronous."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t.pin_memory() if pin else t).to(device, non_blocking=pin)


def _broadcast_buffers(model) -> None:
    """Give every rank rank 0's BatchNorm running statistics.

    DDP broadcasts buffers at the START of each forward, so after the last step each rank holds
    its own update; without this, validation (hence the best checkpoint) and the final weights
    would differ between ranks.
    """
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def _sum_gradients(model) -> None:
    """The gradient-cached step under DDP: each rank holds its share of the whole batch's
    gradient (grad_cache.cached_backward(distributed=True)); their sum is the gradient."""
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


@torch.no_grad()
def calibrate_encoding(model, prep: Prepared, device, batch: int) -> dict:
    """Fit BrainAE's encoding read-out ``mean + L(zi - zi_center) + gain * (D_B(zi) - center)``.

    ``mean``: the mean training response (ridge's intercept); ``L``: a ridge map from the shared
    space zi = P(f) to the response, penalty by leave-one-out CV on the fitting images (what the
    ridge baseline does with the raw features); ``center``: the decoder's mean output over the
    fitting images; ``gain``: least squares, on the VALIDATION images, of what ``mean + L`` leaves
    unexplained on the decoder's deviations (floored at 0), so the decoder adds only what carries
    over to new images. Why: the decoder alone, trained on a few hundred noisy averages, under-fits
    the image-specific part a linear map gets in closed form: on a noise-free linear
    component model it explained ~99 % of the variance where ridge explained all) and over-fits the
    rest; ridge gets its intercept and shrinkage from CV. Never sees test data. Returns the
    fitted values and validation MSEs.
    """
    from sklearn.linear_model import RidgeCV

    from neuralign.offline.evaluate import RIDGE_ALPHAS

    model.eval()

    def embed_and_decode(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        zs, outs = [], []
        for i in range(0, len(f), batch):
            z = model.encode_image(torch.from_numpy(f[i : i + batch]).to(device))
            zs.append(z.cpu().numpy())
            outs.append(model.decode(z).cpu().numpy())
        return np.concatenate(zs), np.concatenate(outs)

    mean = prep.mean_response
    shape = mean.shape
    z_fit, raw_fit = embed_and_decode(prep.f_train[prep.fit_index])
    z_val, raw_val = embed_and_decode(prep.f_train[prep.val_index])
    z_center, center = z_fit.mean(axis=0), raw_fit.mean(axis=0)
    y_fit = (prep.x_train[prep.fit_index].mean(axis=1) - mean).reshape(len(z_fit), -1)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=False).fit(z_fit - z_center, y_fit)
    linear = ridge.coef_.T.reshape(-1, *shape).astype(np.float32)  # (embed_dim, C, T)
    true_val = prep.x_train[prep.val_index].mean(axis=1) - mean
    lin_val = np.einsum("bd,dct->bct", z_val - z_center, linear)
    pred_val = raw_val - center
    resid = true_val - lin_val
    gain = max(float((pred_val * resid).sum() / max(float((pred_val**2).sum()), 1e-12)), 0.0)
    model.encoding_mean.copy_(torch.from_numpy(mean))
    model.encoding_center.copy_(torch.from_numpy(center))
    model.encoding_gain.fill_(gain)
    model.encoding_linear.copy_(torch.from_numpy(linear))
    model.encoding_zi_center.copy_(torch.from_numpy(z_center))
    return {"gain": gain, "linear_alpha": float(ridge.alpha_),
            "val_mse_raw": float(((pred_val + center - mean - true_val) ** 2).mean()),
            "val_mse_linear": float((resid**2).mean()),
            "val_mse_calibrated": float(((lin_val + gain * pred_val - true_val) ** 2).mean()),
            "val_mse_mean_response": float((true_val**2).mean())}


def effective_batch_size(batch_size: int, n_samples: int,
                         min_steps: int = MIN_STEPS_PER_EPOCH) -> int:
    """The configured batch, made small enough for ``min_steps`` optimiser steps per epoch.

    The paper's batch of 800 is ~20 steps per epoch on THINGS-EEG2's 15,800 fitting images; on
    800 images it is ONE step per epoch, so 12 epochs were 12 Adam steps and nothing was learnt
   . Keeping the paper's steps per epoch instead of its batch size leaves the paper's
    own setting unchanged. Never below 16 (InfoNCE needs negatives, BatchNorm statistics).
    ``min_steps=1`` (``training.min_steps_per_epoch: 1``) keeps the configured batch.
    """
    cap = max(16, -(-n_samples // min_steps))
    return max(2, min(batch_size, n_samples, cap))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv/linear weights only (ndim >= 2); biases, BatchNorm, the decoder's (C, T)
    intercept and the temperature get none.

    The intercept's MSE gradient is ~residual / (C * T) per element, so even a weight decay of
    1e-4 pulled it off the mean response it is initialised to.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name.split(".")[-1] == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached, contiguous CPU copy of the state dict: what safetensors writes."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def state_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class _Data:
    """The fitting rows (inputs, features, reconstruction targets: redrawn each epoch with
    ``average_train_repetitions: random``), the validation rows and the generator drawing both
    the redraws and the batch order."""

    x_fit: np.ndarray
    f_fit: np.ndarray
    t_fit: np.ndarray
    x_val: np.ndarray
    f_val: np.ndarray
    gen: np.random.Generator
    s_fit: np.ndarray | None = None  # each fitting row's subject (several subjects only)
    s_val: np.ndarray | None = None


@dataclass
class _Run:
    """What every epoch shares: the model as trained (DDP-wrapped under torchrun) and itself,
    optimiser, precision, weight averaging and batching, set up once by :func:`_set_up`."""

    config: Config
    device: torch.device
    dist: DistInfo
    model: torch.nn.Module
    core: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    autocast: Callable[[], AbstractContextManager]
    pin: bool
    ema: torch.optim.swa_utils.AveragedModel | None
    scored: torch.nn.Module  # what validation sees and the checkpoint holds
    batch: int
    micro: int
    cached: bool  # gradient caching for batches above ``micro``
    eval_batch: int
    starts: list[int]
    schedule: torch.optim.lr_scheduler.LRScheduler | None


def _init_process(config: Config, device: torch.device | None) -> tuple[torch.device, DistInfo]:
    """The device, the torchrun rank (if any), threads and allocator; torch seeded."""
    tr = config.training
    device = device or resolve_device(tr.device, "training.device")
    dist_info = init_distributed(device)
    if dist_info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if tr.num_threads:
        torch.set_num_threads(tr.num_threads)
    if device.type == "cpu":
        retain_freed_memory()
    seed_everything(tr.seed)
    return device, dist_info


def _model_for_subjects(config: Config, prep: Prepared) -> tuple[Config, Pretrained | None]:
    """(config, pretrained run or None): several subjects get one input layer each
    (``model.subject_layers``); ``training.fine_tune.init`` takes the pretrained run's model
    with a layer for this subject (:mod:`neuralign.offline.finetune`)."""
    init = config.training.fine_tune.init
    if init is not None:
        from neuralign.offline.finetune import adapted_config, load_pretrained

        if prep.n_subjects > 1:
            raise UserError("training.fine_tune.init adapts a pretrained run to ONE subject; "
                            f"this data has {prep.n_subjects} (dataset.subjects)")
        pretrained = load_pretrained(init)
        adapted = adapted_config(config, pretrained, prep.ch_names, int(prep.x_train.shape[3]),
                                 int(prep.f_train.shape[1]))
        epochs = config.training.fine_tune.epochs
        if epochs is not None:
            adapted = adapted.model_copy(update={
                "training": adapted.training.model_copy(update={"epochs": epochs})})
        return adapted, pretrained
    if prep.n_subjects > 1:
        if config.model.traits.loss != "brainae" or config.model.spatial_projection is not None:
            raise UserError(f"training on {prep.n_subjects} subjects needs per-subject input "
                            "layers, built for BrainAE without model.spatial_projection; got "
                            f"model.name={config.model.name}")
        model = config.model.model_copy(update={"subject_layers": prep.n_subjects})
        return config.model_copy(update={"model": model}), None
    return config, None


def _build(config: Config, prep: Prepared, device: torch.device,
           dist_info: DistInfo) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the module the steps call, the model itself): the same object unless under DDP."""
    from neuralign.models import build_model

    n_chans, n_times = prep.x_train.shape[2], prep.x_train.shape[3]
    model = build_model(config.model, n_chans=n_chans, n_times=n_times,
                        feature_dim=prep.f_train.shape[1]).to(device)
    if not config.training.fold:
        from neuralign.models.tsconv import unfold_for_training

        unfold_for_training(model)
    core = model
    if dist_info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, core


def _training_data(config: Config, prep: Prepared, core: torch.nn.Module) -> _Data:
    """Fitting and validation rows; a brain decoder's intercept starts at the mean response."""
    tr = config.training
    gen = np.random.default_rng(tr.seed)
    x_fit, f_fit, t_fit = model_inputs(prep, prep.fit_index, tr.average_train_repetitions, gen)
    x_val, f_val, _ = model_inputs(prep, prep.val_index, True)
    decoder = getattr(core, "brain_decoder", None)
    if decoder is not None and hasattr(decoder, "output_bias"):
        with torch.no_grad():  # the intercept starts at the mean training epoch (fit rows only)
            decoder.output_bias.copy_(torch.from_numpy(prep.mean_response))
    if prep.n_subjects > 1:
        return _Data(x_fit, f_fit, t_fit, x_val, f_val, gen, prep.row_subject[prep.fit_index],
                     prep.row_subject[prep.val_index])
    return _Data(x_fit, f_fit, t_fit, x_val, f_val, gen)


def _set_up(config: Config, device: torch.device, dist_info: DistInfo, model: torch.nn.Module,
            core: torch.nn.Module, n_fit: int) -> _Run:
    """Optimiser, mixed precision, EMA, the effective batch and its start offsets."""
    tr = config.training
    groups = parameter_groups(core, tr.weight_decay)
    if tr.fine_tune.init is not None:
        from neuralign.offline.finetune import fine_tune_groups

        groups = fine_tune_groups(core, groups, tr.lr * tr.fine_tune.shared_lr_factor)
    opt = torch.optim.Adam(groups, lr=tr.lr, betas=tuple(tr.betas))
    use_amp = tr.amp and device.type == "cuda"
    swa = torch.optim.swa_utils
    ema = (swa.AveragedModel(core, multi_avg_fn=swa.get_ema_multi_avg_fn(tr.ema_decay),
                             use_buffers=True) if tr.ema_decay else None)
    batch = effective_batch_size(tr.batch_size, n_fit, tr.min_steps_per_epoch)
    if batch < min(tr.batch_size, n_fit):
        log.warning("training.batch_size=%d gives fewer than %d steps per epoch on %d images; "
                    "using %d (training.min_steps_per_epoch=1 keeps %d)", tr.batch_size,
                    tr.min_steps_per_epoch, n_fit, batch, tr.batch_size)
    micro = tr.micro_batch_size or DEFAULT_MICRO_BATCH.get(device.type, 128)
    # Batch start offsets, the same every epoch (the number of images does not change). InfoNCE and
    # BatchNorm need at least two samples, so a last batch of one is skipped (under DDP, one with
    # fewer samples than ranks: every rank must hold at least one).
    least = max(2, dist_info.world)
    starts = [i for i in range(0, n_fit - 1, batch) if min(batch, n_fit - i) >= least]
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tr.epochs * len(starts))
                if tr.lr_schedule == "cosine" else None)
    return _Run(config=config, device=device, dist=dist_info, model=model, core=core, opt=opt,
                scaler=torch.amp.GradScaler("cuda", enabled=use_amp), use_amp=use_amp,
                autocast=autocast_context(device, tr.amp), pin=device.type == "cuda", ema=ema,
                scored=ema.module if ema is not None else core, batch=batch, micro=micro,
                cached=config.model.traits.loss == "brainae", eval_batch=min(batch, micro),
                starts=starts, schedule=schedule)


def _train_step(run: _Run, data: _Data, idx: np.ndarray, n_batch: int) -> dict[str, float]:
    """One optimiser step on the rows ``idx`` (this rank's share of a batch of ``n_batch``); its
    loss parts. Several subjects: every batch is one subject's, routed through its layer."""
    config, dist_info = run.config, run.dist
    if data.s_fit is not None:
        from neuralign.models.subject_layers import select_subject

        select_subject(run.core, int(data.s_fit[idx[0]]))
    xb, fb, tb = (_to_device(a[idx], run.device, run.pin)
                  for a in (data.x_fit, data.f_fit, data.t_fit))
    run.opt.zero_grad(set_to_none=True)
    if run.cached and (len(idx) > run.micro or dist_info.world > 1):
        from neuralign.offline.grad_cache import brainae_losses, cached_backward

        # Under DDP every rank holds a slice; the loss is the WHOLE batch's (InfoNCE over
        # all pairs, BatchNorm statistics over all samples) and the ranks' shares add up.
        losses = brainae_losses(config.model.loss_weights, run.core.tau, n_batch, tb,
                                config.model.fea_normalize)
        parts = cached_backward(run.core, (xb, fb), run.micro, *losses, autocast=run.autocast,
                                scale=run.scaler.get_scale() if run.use_amp else 1.0,
                                distributed=dist_info.world > 1)
        if dist_info.world > 1:
            _sum_gradients(run.core)
    else:
        with run.autocast():
            loss, parts = compute_loss(run.model, xb, fb, config, tb)
        run.scaler.scale(loss).backward()
    run.scaler.step(run.opt)
    run.scaler.update()
    if run.schedule is not None:
        run.schedule.step()
    if run.ema is not None:
        run.ema.update_parameters(run.core)
    return parts


def _batches(run: _Run, data: _Data) -> list[np.ndarray]:
    """This epoch's batches of fitting rows, in order. One subject: a shuffled permutation cut at
    the run's start offsets. Several: each subject's rows shuffled and cut alike, and the batches
    of all subjects shuffled together, so a batch never mixes subjects (each goes through its own
    input layer) and InfoNCE's negatives come from the same subject."""
    perm = data.gen.permutation(len(data.x_fit))
    if data.s_fit is None:
        return [perm[i : i + run.batch] for i in run.starts]
    least = max(2, run.dist.world)
    out = []
    for s in np.unique(data.s_fit):
        rows = perm[data.s_fit[perm] == s]
        out += [rows[i : i + run.batch] for i in range(0, len(rows), run.batch)
                if len(rows[i : i + run.batch]) >= least]
    return [out[i] for i in data.gen.permutation(len(out))]


def validation_loss(run: _Run, data: _Data) -> dict:
    """The validation loss and top-1: over all validation rows, or per subject (each through
    its own layer, among its own images) averaged with weights by row count."""
    config, device = run.config, run.device
    if data.s_val is None:
        return evaluate_loss(run.scored, data.x_val, data.f_val, config, device, run.eval_batch)
    from neuralign.models.subject_layers import select_subject

    sums: dict[str, float] = {}
    for s in np.unique(data.s_val):
        rows = np.flatnonzero(data.s_val == s)
        select_subject(run.scored, int(s))
        part = evaluate_loss(run.scored, data.x_val[rows], data.f_val[rows], config, device,
                             run.eval_batch)
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v * len(rows) / len(data.s_val)
    return sums


def _train_epoch(run: _Run, data: _Data, prep: Prepared, epoch: int) -> tuple[dict, int]:
    """One pass over the fitting rows in shuffled batches: (mean train loss parts, rows seen)."""
    dist_info = run.dist
    run.model.train()
    if run.config.training.average_train_repetitions == "random" and epoch > 0:
        data.x_fit, data.f_fit, data.t_fit = model_inputs(prep, prep.fit_index, "random",
                                                          data.gen)
    ft = run.config.training.fine_tune
    if ft.init is not None:
        from neuralign.offline.finetune import set_shared_frozen

        set_shared_frozen(run.opt, ft.train == "subject_layer" or epoch < ft.layer_epochs,
                          run.config.training.lr * ft.shared_lr_factor)
    sums: dict[str, float] = {}
    n_seen = 0
    for batch in _batches(run, data):
        idx = batch[dist_info.rank :: dist_info.world]
        for k, v in _train_step(run, data, idx, len(batch)).items():
            sums[k] = sums.get(k, 0.0) + v * len(idx)
        n_seen += len(idx)
    if dist_info.world > 1:
        _broadcast_buffers(run.core)
        if run.ema is not None:  # each rank averaged its own BatchNorm statistics
            _broadcast_buffers(run.ema.module)
    return {f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()}, n_seen


def _finish(run: _Run, prep: Prepared, run_dir: Path, summary: dict,
            best_state: dict[str, torch.Tensor] | None) -> dict:
    """Calibrate the encoding read-out on the best weights; write the run's files; leave DDP."""
    from safetensors.torch import save_file

    config, dist_info, scored = run.config, run.dist, run.scored
    # The encoding read-out lives in one subject's sensor space: none for several subjects.
    if (config.training.calibrate_encoding and hasattr(scored, "predict_response")
            and summary["best_epoch"] >= 0 and prep.n_subjects == 1):
        scored.load_state_dict(best_state)  # every rank holds the same best weights
        summary["encoding_calibration"] = calibrate_encoding(scored, prep, run.device,
                                                             run.eval_batch)
        if dist_info.is_main:
            save_file(cpu_state(scored), run_dir / MODEL_FILE)
    # Each rank records a digest of its final weights: DDP must leave them identical.
    (run_dir / f"weights_rank{dist_info.rank}.sha256").write_text(state_digest(scored))
    if dist_info.is_main:
        (run_dir / "history.json").write_text(json.dumps(summary, indent=1))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(config), sort_keys=False))
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


def train_model(config: Config, prep: Prepared, run_dir: Path, device: torch.device | None = None,
                progress: bool = True) -> dict:
    """Train, keep the best-validation checkpoint in ``run_dir/model.safetensors``; return history."""
    from safetensors.torch import save_file

    device, dist_info = _init_process(config, device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config, pretrained = _model_for_subjects(config, prep)
    model, core = _build(config, prep, device, dist_info)
    init = None
    if pretrained is not None:
        from neuralign.offline.finetune import initialise_from_pretrained, provenance

        init = {**initialise_from_pretrained(core, pretrained, prep.ch_names),
                **provenance(pretrained)}
    data = _training_data(config, prep, core)
    run = _set_up(config, device, dist_info, model, core, len(data.x_fit))
    history: list[dict] = []
    best = {"val_total": float("inf"), "epoch": -1}
    best_state = None
    t_start = time.perf_counter()
    n_samples = 0
    bar = tqdm(range(config.training.epochs), desc="train", unit="epoch",
               disable=not (progress and dist_info.is_main))
    for epoch in bar:
        train_parts, n_seen = _train_epoch(run, data, prep, epoch)
        n_samples += n_seen
        val = validation_loss(run, data)
        history.append({"epoch": epoch, "lr": run.opt.param_groups[0]["lr"], **train_parts,
                        **{f"val_{k}": v for k, v in val.items()}})
        if val["total"] < best["val_total"]:
            best = {"val_total": val["total"], "epoch": epoch, "val_top1": val["top1"]}
            best_state = cpu_state(run.scored)
            if dist_info.is_main:  # on disk at once: an interrupted run keeps its best epoch
                save_file(best_state, run_dir / MODEL_FILE)
        bar.set_postfix(loss=f"{train_parts.get('train_total', 0):.3f}",
                        val=f"{val['total']:.3f}", val_top1=f"{val['top1']:.2f}")
    elapsed = time.perf_counter() - t_start
    summary = {
        "best_epoch": best["epoch"], "best_val_loss": best["val_total"],
        "best_val_top1": best.get("val_top1"), "epochs": config.training.epochs,
        "seconds": elapsed,
        "samples_per_second": n_samples * dist_info.world / max(elapsed, 1e-9),
        "world_size": dist_info.world, "device": str(device), "history": history,
        "batch_size": run.batch,
        "micro_batch_size": run.micro if run.cached and run.batch > run.micro else None,
        "subjects": prep.subjects or None, "pretrained": init,
    }
    return _finish(run, prep, run_dir, summary, best_state)


def run_training(config: Config, run_dir: Path, data_dir: Path | None = None,
                 features: Path | None = None, progress: bool = True) -> dict:
    """prepare -> save prepared.npz -> train. What ``neuralign train`` does."""
    from neuralign.offline.prepare import prepare

    device = resolve_device(config.training.device, "training.device")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Every rank prepares (deterministic, so identical); only rank 0 writes the file.
    prep = prepare(config, data_dir, features, device="cpu")
    if int(os.environ.get("RANK", "0")) == 0:
        prep.save(run_dir / "prepared.npz")
    return train_model(config, prep, run_dir, device, progress=progress)
