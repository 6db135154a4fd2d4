"""Gradient caching gives the full-batch gradient, BatchNorm statistic terms included."""

from __future__ import annotations

import copy

import pytest
import torch

from neuralign.config import LossWeights, ModelConfig
from neuralign.models import build_model
from neuralign.models.losses import brainae_loss
from neuralign.offline.grad_cache import brainae_losses, cached_backward


def _model(learn_tau: bool = False):
    torch.manual_seed(0)
    return build_model(ModelConfig(k=6, m1=5, m2=3, s=3, embed_dim=16, learn_tau=learn_tau),
                       n_chans=5, n_times=40, feature_dim=12).double().train()


def _data(n: int = 22):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, 40, generator=g, dtype=torch.float64)
    f = torch.randn(n, 12, generator=g, dtype=torch.float64)
    return x, f, x + 0.1 * torch.randn(n, 5, 40, generator=g, dtype=torch.float64)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(out: dict, ref: dict) -> None:
    """Equal to float64 tolerance. The absolute floor is relative to the largest gradient: a bias
    right before a training-mode BatchNorm has an exactly zero gradient, i.e. rounding noise."""
    assert ref.keys() == out.keys()
    floor = 1e-12 * max(float(g.abs().max()) for g in ref.values())
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=1e-9, atol=floor,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("micro_batch", [5, 8, 22])
@pytest.mark.parametrize("weights", [LossWeights(), LossWeights(recon_b=0.0, recon_i=0.0)])
def test_cached_gradient_equals_full_batch_gradient_in_training_mode(micro_batch, weights):
    ref_model, (xb, f, target) = _model(learn_tau=True), _data()
    model = copy.deepcopy(ref_model)
    loss, parts = brainae_loss(ref_model(xb, f), target, f, weights, tau=ref_model.tau)
    loss.backward()
    emb, sample = brainae_losses(weights, model.tau, len(xb), target)
    got = cached_backward(model, (xb, f), micro_batch, emb, sample)
    assert got["total"] == pytest.approx(parts["total"], rel=1e-9)
    out = _grads(model)
    assert "temperature.log_inv_tau" in out
    _assert_same_grads(out, _grads(ref_model))
    # running statistics: exactly what one full-batch training forward leaves
    for (name, b_ref), (_, b_out) in zip(ref_model.named_buffers(), model.named_buffers()):
        torch.testing.assert_close(b_out, b_ref, rtol=1e-9, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_cached_gradient_with_batchnorm_in_eval_mode():
    ref_model, (xb, f, target) = _model(), _data()
    ref_model.eval()
    model = copy.deepcopy(ref_model)
    loss, _ = brainae_loss(ref_model(xb, f), target, f, LossWeights(), tau=ref_model.tau)
    loss.backward()
    emb, sample = brainae_losses(LossWeights(), model.tau, len(xb), target)
    cached_backward(model, (xb, f), 7, emb, sample)
    _assert_same_grads(_grads(model), _grads(ref_model))
