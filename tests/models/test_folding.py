"""Folding TSConv's conv + pool (+ BatchNorm) is exact: same outputs, same gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralign.models.folding import FoldedTSConvEncoder, fold_for_inference, fold_pool_into_kernel
from neuralign.models.tsconv import TSConvEncoder


def _trained_like(enc: TSConvEncoder) -> TSConvEncoder:
    """Non-trivial BatchNorm statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(0)
    for bn in (enc.pool[1], enc.spatial[1]):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.data.copy_(torch.randn(bn.num_features, generator=g))
    return enc.eval()


@pytest.mark.parametrize("n_chans, n_times, m1, m2, s", [(63, 250, 26, 5, 5), (7, 64, 9, 4, 3),
                                                          (5, 40, 3, 1, 1)])
def test_folded_encoder_equals_original(n_chans, n_times, m1, m2, s):
    torch.manual_seed(1)
    enc = _trained_like(TSConvEncoder(n_chans, n_times, 16, k=8, m1=m1, m2=m2, s=s))
    folded = FoldedTSConvEncoder(enc)
    x = torch.randn(4, n_chans, n_times)
    with torch.no_grad():
        ref, out = enc(x), folded(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_folded_kernel_gives_conv_then_pool_with_equal_gradients():
    torch.manual_seed(2)
    w = torch.randn(6, 1, 1, 11, requires_grad=True)
    x = torch.randn(3, 1, 4, 100)
    ref = F.avg_pool2d(F.conv2d(x, w), (1, 5), stride=(1, 5))
    out = F.conv2d(x, fold_pool_into_kernel(w, 5), stride=(1, 5))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g_ref, = torch.autograd.grad(ref.square().sum(), w)
    g_out, = torch.autograd.grad(out.square().sum(), w)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-5)


def test_fold_for_inference_swaps_only_tsconv_and_refuses_training_mode():
    from neuralign.config import ModelConfig
    from neuralign.models import build_model

    model = build_model(ModelConfig(k=8), n_chans=5, n_times=60, feature_dim=12)
    with pytest.raises(ValueError, match="eval mode"):
        FoldedTSConvEncoder(model.brain_encoder)
    model.eval()
    x = torch.randn(2, 5, 60)
    with torch.no_grad():
        ref = model.encode_brain(x)
        folded = fold_for_inference(copy.deepcopy(model))
        assert isinstance(folded.brain_encoder, FoldedTSConvEncoder)
        torch.testing.assert_close(folded.encode_brain(x), ref, rtol=1e-5, atol=1e-5)


def _set_fold(model, fold: bool) -> None:
    model.brain_encoder.fold = fold
    model.brain_decoder.fold = fold and model.brain_decoder.up_factor > 0


@pytest.mark.parametrize("n_chans, n_times, m1, m2, s", [(63, 250, 26, 5, 5), (7, 64, 9, 4, 3),
                                                          (5, 40, 3, 1, 1)])
def test_folded_training_step_equals_unfolded(n_chans, n_times, m1, m2, s):
    """Training mode (batch-statistics BatchNorm): the folded encoder conv+pool and decoder
    up-sample+transposed conv give the unfolded model's outputs and parameter gradients."""
    from neuralign.config import LossWeights, ModelConfig
    from neuralign.models import build_model
    from neuralign.models.losses import brainae_loss

    torch.manual_seed(3)
    model = build_model(ModelConfig(k=8, m1=m1, m2=m2, s=s), n_chans=n_chans, n_times=n_times,
                        feature_dim=12).train()
    assert model.brain_encoder.fold
    x, f = torch.randn(6, n_chans, n_times), torch.randn(6, 12)
    grads, outs = [], []
    for fold in (True, False):
        _set_fold(model, fold)
        model.zero_grad()
        out = model(x, f)
        loss, _ = brainae_loss(out, x, f, LossWeights(), tau=model.tau)
        loss.backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for key in outs[0]:
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_decoder_folds_only_when_upsampling_is_an_integer_factor():
    from neuralign.models.tsconv import TSConvDecoder

    assert TSConvDecoder(63, 250, 16, k=8).up_factor == 5  # the paper's 225 = 5 x 45
    assert not TSConvDecoder(7, 64, 16, k=8, m1=9, m2=4, s=3).fold  # 56 from 18: not integer


@pytest.mark.parametrize("n_chans, n_times, m1, m2, s", [(63, 250, 26, 5, 5), (7, 64, 9, 4, 3)])
def test_head_parts_over_any_split_of_the_frames_add_up_to_the_forward(n_chans, n_times, m1, m2,
                                                                       s):
    torch.manual_seed(3)
    folded = FoldedTSConvEncoder(_trained_like(TSConvEncoder(n_chans, n_times, 16, k=8, m1=m1,
                                                             m2=m2, s=s)))
    x = torch.randn(3, n_chans, n_times)
    with torch.no_grad():
        ref = folded(x).numpy()
    n = folded.n_frames
    assert folded.frames_ready(n_times) == n
    assert folded.frames_ready(0) == 0 and folded.frames_ready(n_times - 1) <= n
    bias = folded.head.bias.detach().numpy()
    xn = x.numpy()
    for cuts in ([0, n], [0, 1, n], [0, n - 2, n - 1, n], [0, n // 3, n // 2, n]):
        total = bias + sum(folded.head_part(xn, a, b) for a, b in zip(cuts, cuts[1:]))
        np.testing.assert_allclose(total, ref, rtol=1e-4, atol=1e-4)
    # a part reads only its frames' samples: the first frames from a truncated epoch
    j = folded.frames_ready(n_times // 2)
    np.testing.assert_allclose(folded.head_part(xn[..., :n_times // 2], 0, j),
                               folded.head_part(xn, 0, j), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        folded.head_part(xn, 2, 2)
