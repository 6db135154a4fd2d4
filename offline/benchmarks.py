"""Training throughput benchmark (samples/s) - numbers printed and saved, never asserted in tests.

It times the step ``neuralign train`` runs (gradient caching above the micro-batch, folded TSConv,
Adam) on random data of the paper's shape, and extrapolates one THINGS-EEG2 epoch: 16,540
training images, 740 held out for validation, so 15,800 fitting images in batches of 800.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from neuralign.config import LossWeights, ModelConfig
from neuralign.devices import resolve_device

log = logging.getLogger(__name__)

THINGS_EEG2_TRAIN_IMAGES = 16540
THINGS_EEG2_VAL_IMAGES = 740


def _peak_rss_bytes() -> int:
    """This process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def training_throughput(n_chans: int = 63, n_times: int = 250, batch_size: int = 800,
                        steps: int = 3, feature_dim: int = 1024, micro_batch: int | None = None,
                        amp: bool = False, threads: int | None = None,
                        out: Path | None = None, fold: bool = True) -> dict:
    """Time full BrainAE optimisation steps (forward, four losses, backward, Adam) on random data.

    ``micro_batch`` None: the trainer's default (``DEFAULT_MICRO_BATCH``); a value >= the batch runs
    one graph (the pre-issue-15 step, whose memory grows with the batch). ``fold`` False runs
    TSConv's foldable linear pairs as written (``training.fold: false``).
    """
    from neuralign.models import build_model
    from neuralign.models.losses import brainae_loss
    from neuralign.offline.grad_cache import brainae_losses, cached_backward
    from neuralign.offline.train import DEFAULT_MICRO_BATCH, autocast_context, retain_freed_memory

    device = resolve_device("auto")
    if device.type == "cpu":
        retain_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    micro = micro_batch or DEFAULT_MICRO_BATCH.get(device.type, 128)
    autocast = autocast_context(device, amp)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), n_chans=n_chans, n_times=n_times,
                        feature_dim=feature_dim).to(device).train()
    if not fold:
        from neuralign.models.tsconv import unfold_for_training

        unfold_for_training(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    x = torch.randn(batch_size, n_chans, n_times, device=device)
    f = torch.randn(batch_size, feature_dim, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 1):  # one warm-up step
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if batch_size > micro:
            cached_backward(model, (x, f), micro,
                            *brainae_losses(LossWeights(), model.tau, batch_size, x), autocast=autocast)
        else:
            with autocast():
                loss, _ = brainae_loss(model(x, f), x, f, LossWeights(), tau=model.tau)
            loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 1:
            times.append(time.perf_counter() - t0)
    per_step = float(np.median(times))
    # validation: a no-grad eval-mode forward of the held-out images
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(0, batch_size, micro):
            model(x[i : i + micro], f[i : i + micro])
        eval_per_sample = (time.perf_counter() - t0) / batch_size
    n_fit = THINGS_EEG2_TRAIN_IMAGES - THINGS_EEG2_VAL_IMAGES
    sps = batch_size / per_step
    res = {"n_chans": n_chans, "n_times": n_times, "batch_size": batch_size,
           "micro_batch": micro if batch_size > micro else None, "amp": amp, "steps": steps,
           "fold": fold,
           "device": str(device), "threads": torch.get_num_threads(),
           "seconds_per_step": per_step, "samples_per_second": sps,
           "peak_rss_gb": _peak_rss_bytes() / 1e9,
           "peak_cuda_gb": (torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None),
           "n_parameters": sum(p.numel() for p in model.parameters()),
           "things_eeg2_epoch_seconds": n_fit / sps + THINGS_EEG2_VAL_IMAGES * eval_per_sample}
    if out is not None:
        Path(out).write_text(json.dumps(res, indent=1))
    return res


def format_throughput(res: dict) -> str:
    """The bench's report: samples/s, seconds per step (at batch 800: per 800-sample epoch),
    peak memory and the extrapolated full THINGS-EEG2 epoch (16,540 training images)."""
    how = (f"micro-batches of {res['micro_batch']}" if res["micro_batch"] else "one graph")
    mem = (f"peak CUDA memory {res['peak_cuda_gb']:.2f} GB, " if res["peak_cuda_gb"] else "")
    b = res["batch_size"]
    full = res["things_eeg2_epoch_seconds"]
    return (f"BrainAE training throughput ({res['n_chans']} x {res['n_times']}, batch {b} in "
            f"{how}{', bf16/fp16 autocast' if res['amp'] else ''}"
            f"{'' if res.get('fold', True) else ', TSConv unfolded'}, {res['device']}, "
            f"{res['threads']} threads):\n"
            f"  {res['samples_per_second']:.1f} samples/s; {res['seconds_per_step']:.2f} s per "
            f"step of {b} samples (= seconds per epoch of {b} training samples at batch {b}, "
            f"validation excluded)\n"
            f"  {mem}peak RSS {res['peak_rss_gb']:.2f} GB\n"
            f"  full THINGS-EEG2 epoch ({THINGS_EEG2_TRAIN_IMAGES} training images: "
            f"{THINGS_EEG2_TRAIN_IMAGES - THINGS_EEG2_VAL_IMAGES} fitting + "
            f"{THINGS_EEG2_VAL_IMAGES} validation, data preparation excluded) ~ {full:.0f} s "
            f"({full / 60:.1f} min); 50 epochs ~ {50 * full / 3600:.1f} h")
