"""DDP + gradient caching: two gloo processes on CPU give the single-process full-batch gradient.

Each rank holds a strided slice of the batch (what the trainer gives it under ``torchrun``), runs
``cached_backward(distributed=True)`` and the shares are summed with an all-reduce, as
``offline/train.py`` does. The sum must equal one training-mode backward over the whole batch:
InfoNCE over all pairs (not per rank), BatchNorm statistics over all samples (not per rank),
a learned temperature counted once, running statistics updated from the whole batch.
"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuralign.config import LossWeights, ModelConfig
from neuralign.models import build_model
from neuralign.models.losses import brainae_loss
from neuralign.offline.grad_cache import brainae_losses, cached_backward

N = 23  # uneven split over 2 ranks (12 + 11 rows): the all-gather pads
MICRO = 5


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(k=6, m1=5, m2=3, s=3, embed_dim=16, learn_tau=True),
                       n_chans=5, n_times=40, feature_dim=12).double().train()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 5, 40, generator=g, dtype=torch.float64)
    f = torch.randn(N, 12, generator=g, dtype=torch.float64)
    return x, f, x + 0.1 * torch.randn(N, 5, 40, generator=g, dtype=torch.float64)


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        model, (x, f, target) = _model(), _data()
        rows = torch.arange(rank, N, world)  # the trainer's perm[i:i+batch][rank::world]
        emb, sample = brainae_losses(LossWeights(), model.tau, N, target[rows])
        parts = cached_backward(model, (x[rows], f[rows]), MICRO, emb, sample, distributed=True)
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
        if rank == 0:
            torch.save({"grads": {n: p.grad for n, p in model.named_parameters()
                                  if p.grad is not None},
                        "buffers": dict(model.named_buffers()), "parts": parts}, out_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gradient_equals_single_process_full_batch_gradient(tmp_path):
    out_path = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out_path)), nprocs=2, join=True)
    got = torch.load(out_path, weights_only=True)

    ref = _model()
    x, f, target = _data()
    loss, parts = brainae_loss(ref(x, f), target, f, LossWeights(), tau=ref.tau)
    loss.backward()
    want = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}

    assert got["grads"].keys() == want.keys()
    assert "temperature.log_inv_tau" in want
    floor = 1e-12 * max(float(g.abs().max()) for g in want.values())
    for name, g in want.items():
        torch.testing.assert_close(got["grads"][name], g, rtol=1e-9, atol=floor,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for name, b in ref.named_buffers():
        torch.testing.assert_close(got["buffers"][name], b, rtol=1e-9, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for k in ("total", "con", "fea", "recon_b", "recon_i"):
        assert got["parts"][k] == pytest.approx(float(parts[k]), rel=1e-9), k


def test_per_rank_losses_would_not_be_the_full_batch_gradient():
    """Guard that the test above can fail: two independent half-batch losses, summed, differ."""
    ref = _model()
    x, f, target = _data()
    loss, _ = brainae_loss(ref(x, f), target, f, LossWeights(), tau=ref.tau)
    loss.backward()
    halves = copy.deepcopy(_model())
    for r in range(2):
        rows = torch.arange(r, N, 2)
        part, _ = brainae_loss(halves(x[rows], f[rows]), target[rows], f[rows], LossWeights(),
                               tau=halves.tau)
        (part * len(rows) / N).backward()
    g_ref = ref.brain_encoder.head.weight.grad
    g_half = halves.brain_encoder.head.weight.grad
    assert not torch.allclose(g_half, g_ref, rtol=1e-6, atol=0)
