"""Exact algebraic folding of TSConv's linear stages, for inference and for training.

TSConv's temporal convolution (1, m1) is followed by an average pool (1, m2) with stride s and,
in eval mode, an affine BatchNorm, with no nonlinearity in between. All three are linear, so
they are one strided convolution with a kernel of length m1 + m2 - 1:

    pool(conv(x))[t] = 1/m2 * sum_j sum_i w[i] x[t*s + j + i] = sum_u w'[u] x[t*s + u],
    w'[u] = 1/m2 * sum_{j + i = u} w[i]

and BatchNorm (eval) scales each filter and shifts its bias. The folded encoder computes the
same function with s times fewer temporal-convolution outputs and no pooling pass. The spatial
convolution's BatchNorm folds into it the same way. Folding is a change of parametrisation, not
an approximation: tests check the folded model against the original to float tolerance.

A learned spatial projection in front of TSConv (:class:`ProjectedEncoder`, ``model.
spatial_projection``) mixes channels before any of this: channel mixing and temporal filtering
are both linear and act on different axes, so they commute, and the backbone behind the
projection folds exactly as it does on its own. The projection itself stays one (P, C) matrix
product, run first: the cheap order, since P < C. Fewer temporal filters than ``k``
(``model.temporal_filters``) change only the folded temporal conv's number of output maps.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign.models.spatial_projection import ProjectedEncoder
from neuralign.models.tsconv import TSConvEncoder, fold_pool_into_kernel

__all__ = ["FoldedTSConvEncoder", "fold_for_inference", "fold_pool_into_kernel"]


def _fold_bn(weight: Tensor, bias: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm that follows a conv into the conv's weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
    b = (bias - bn.running_mean) * scale + bn.bias
    return w, b


class FoldedTSConvEncoder(nn.Module):
    """Inference-only TSConv encoder: strided temporal conv (+BN) -> ELU -> spatial conv (+BN)
    -> ELU -> flatten -> linear head. Same input/output contract as :class:`TSConvEncoder`."""

    def __init__(self, enc: TSConvEncoder):
        super().__init__()
        if enc.training:
            raise ValueError("fold an encoder in eval mode (BatchNorm must use its running stats)")
        self.n_chans, self.n_times, self.embed_dim = enc.n_chans, enc.n_times, enc.embed_dim
        k, kt, m1, m2, s = enc.k, enc.k_temporal, enc.m1, enc.m2, enc.s
        with torch.no_grad():
            w = fold_pool_into_kernel(enc.temporal.weight, m2)
            w, b = _fold_bn(w, enc.temporal.bias, enc.pool[1])
            self.temporal = nn.Conv2d(1, kt, (1, m1 + m2 - 1), stride=(1, s))
            self.temporal.weight.copy_(w)
            self.temporal.bias.copy_(b)
            conv, bn = enc.spatial[0], enc.spatial[1]
            w, b = _fold_bn(conv.weight, conv.bias, bn)
            self.spatial = nn.Conv2d(kt, k, (enc.n_chans, 1))
            self.spatial.weight.copy_(w)
            self.spatial.bias.copy_(b)
            # the same two convolutions as matrix products (see features): (K, kt) and
            # (C * kt, k), rows of the latter in (channel, temporal filter) order
            self.register_buffer("w_temporal", self.temporal.weight.reshape(kt, -1).t()
                                 .contiguous(), persistent=False)
            self.register_buffer("w_spatial", self.spatial.weight[..., 0].permute(2, 1, 0)
                                 .reshape(-1, k).contiguous(), persistent=False)
        self.head = copy.deepcopy(enc.head)
        n_out = self.n_frames
        with torch.no_grad():  # the head's columns in (frame, filter) order (see head_part)
            self.register_buffer("w_head", self.head.weight.reshape(-1, k, n_out)
                                 .permute(2, 1, 0).reshape(n_out * k, -1).contiguous(),
                                 persistent=False)
        self.eval()

    @property
    def n_frames(self) -> int:
        """Output time steps of the temporal convolution (T')."""
        kern, stride = self.temporal.kernel_size[1], self.temporal.stride[1]
        return (self.n_times - kern) // stride + 1

    def frames_ready(self, n_cols: int) -> int:
        """How many of the first frames the first ``n_cols`` input samples determine."""
        kern, stride = self.temporal.kernel_size[1], self.temporal.stride[1]
        return 0 if n_cols < kern else min(self.n_frames, (n_cols - kern) // stride + 1)

    def frame_columns(self, j0: int, j1: int) -> tuple[int, int]:
        """The input columns ``[start, stop)`` that frames ``[j0, j1)`` read."""
        kern, stride = self.temporal.kernel_size[1], self.temporal.stride[1]
        return j0 * stride, (j1 - 1) * stride + kern

    def head_part(self, x: np.ndarray, j0: int, j1: int, start: int = 0) -> np.ndarray:
        """The head's output, without its bias, from frames ``[j0, j1)`` of ``x`` (B, C, >= the
        columns those frames read) alone: the head is linear in the features and each frame
        reads only its own window of samples, so the sum of the parts over a split of all
        frames, plus the bias, is :meth:`forward` (float tolerance). Lets a caller encode an
        epoch's first frames while its last samples are still arriving. ``start``: the input
        column ``x[..., 0]`` is (e.g. :meth:`frame_columns`' start: only what the frames read).

        In numpy (CPU): called for a frame or two at a time, after pauses in which the caches
        went cold, where torch's per-call dispatch cost more than the arithmetic (the finishing
        step of a 2-row epoch: 1.09 vs 0.68 ms after 20 ms of other work, before trimming)."""
        if not 0 <= j0 < j1 <= self.n_frames:
            raise ValueError(f"frames [{j0}, {j1}) outside [0, {self.n_frames})")
        kern, stride = self.temporal.kernel_size[1], self.temporal.stride[1]
        wt, bt, ws, bs, wh = self._numpy_weights()
        n = x.shape[0]
        if start > j0 * stride:
            raise ValueError(f"frame {j0} reads column {j0 * stride}, before start {start}")
        frames = np.stack([x[..., j * stride - start:j * stride - start + kern]
                           for j in range(j0, j1)], axis=1)
        h = frames.reshape(-1, kern) @ wt  # (B * frames * C, kt)
        h += bt
        _elu_np(h)
        out = h.reshape(n * (j1 - j0), -1) @ ws  # (B * frames, k), rows in (channel, filter)
        out += bs
        _elu_np(out)
        k = ws.shape[1]
        return out.reshape(n, -1) @ wh[j0 * k:j1 * k]

    def _numpy_weights(self) -> tuple[np.ndarray, ...]:
        """The weights as numpy views (no copies), made once."""
        w = self.__dict__.get("_np_weights")
        if w is None:
            w = tuple(t.detach().cpu().numpy() for t in (
                self.w_temporal, self.temporal.bias, self.w_spatial, self.spatial.bias,
                self.w_head))
            self.__dict__["_np_weights"] = w
        return w

    def _frame_features(self, x: Tensor) -> Tensor:
        """(B, C, n) -> (B, frames, k): temporal conv, ELU, spatial conv, ELU."""
        kern, stride = self.temporal.kernel_size[1], self.temporal.stride[1]
        frames = x.unfold(2, kern, stride).transpose(1, 2)  # (B, T', C, K)
        h = torch.matmul(frames, self.w_temporal)  # (B, T', C, kt)
        h += self.temporal.bias
        _elu_(h)
        n, n_out = h.shape[0], h.shape[1]
        out = torch.addmm(self.spatial.bias, h.reshape(n * n_out, -1), self.w_spatial)
        _elu_(out)  # (B * T', k)
        return out.reshape(n, n_out, -1)

    def features(self, x: Tensor) -> Tensor:
        """The two convolutions as two matrix products: the temporal one over the strided
        frames of every channel (a view of ``x``), the spatial one over (channel, filter) at each
        output time. Same function as the Conv2d pair (float tolerance; tests compare them), but
        1.3-1.6x faster on a CPU thread for this small model, where each convolution call costs
        more in its setup than in arithmetic, and the ELUs run in place."""
        out = self._frame_features(x)
        return out.transpose(1, 2).reshape(out.shape[0], -1)  # conv's flatten order

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _elu_np(a: np.ndarray) -> None:
    """ELU (alpha 1) of a numpy array in place."""
    neg = np.minimum(a, 0.0)
    np.expm1(neg, out=neg)
    np.maximum(a, 0.0, out=a)
    a += neg


def _elu_(h: Tensor) -> Tensor:
    """ELU (alpha 1) in place. Without autograd on a CPU tensor, as relu(h) + expm1(min(h, 0))
    with numpy's vectorised expm1 on the negative part: the same values, 2x faster than
    torch's ELU on the development machine (0.14 vs 0.30 ms for the demo model's 2-row
    batch); elsewhere torch's."""
    if h.device.type != "cpu" or h.requires_grad:
        return F.elu_(h)
    _elu_np(h.numpy())  # shares h's memory
    return h


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Replace a TSConv ``brain_encoder`` by its folded equivalent (other backbones unchanged);
    behind a spatial projection, the TSConv backbone is folded and the projection kept.

    The model must be in eval mode; the returned model shares every other submodule.
    """
    enc = getattr(model, "brain_encoder", None)
    if isinstance(enc, TSConvEncoder):
        model.brain_encoder = FoldedTSConvEncoder(enc)
    elif isinstance(enc, ProjectedEncoder) and isinstance(enc.backbone, TSConvEncoder):
        model.brain_encoder = enc.with_backbone(FoldedTSConvEncoder(enc.backbone))
    return model
