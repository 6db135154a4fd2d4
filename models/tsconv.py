"""BrainAE's temporal-spatial convolution (TSConv) brain encoder and its mirrored decoder.

Shapes follow BrainAE Appendix D.1, Tables 6-7 exactly. With ``T' = (T - m1 - m2 + 1) // s + 1``:

encoder (b, C, T)
    -> temporal  Conv2d(1, k, (1, m1))                 (b, k, C, T - m1 + 1)
    -> pool      AvgPool2d((1, m2), (1, s)) + BN + ELU (b, k, C, T')
    -> spatial   Conv2d(k, k, (C, 1)) + BN + ELU       (b, k, 1, T')
    -> dropout, flatten (k * T') -> Linear             (b, embed_dim)

decoder (b, embed_dim)
    -> Linear -> unflatten                             (b, k, 1, T')
    -> spatial   ConvTranspose2d(k, k, (C, 1)) + BN + ELU  (b, k, C, T')
    -> upsample  (nearest) to an explicit (C, T - m1 + 1) (b, k, C, T - m1 + 1)
    -> temporal  ConvTranspose2d(k, 1, (1, m1))        (b, 1, C, T) -> (b, C, T)
    -> + output_bias (C, T), the intercept; optional tanh (off by default)

BN/ELU placement: the paper says "convolutional layers are followed by batch normalization and
ELU" without fixing where the pooling sits; we pool right after the temporal conv and then apply
BN + ELU, as NICE/ATM's TSConv (BrainAE's ancestor) does. Pooling first runs BN and ELU on a
tensor s times smaller: on a 2-core CPU that cut a training step by about a third, and the
layer shapes are those of Table 6 either way. The decoder mirrors this: BN+ELU follow the
transposed spatial conv, the up-sampling is nearest-neighbour along time (bilinear's backward
pass alone cost a quarter of a CPU training step), and the last transposed temporal conv is
linear so the
output can take any value. Whitened EEG has std ~1 and peaks near 8, so a final tanh (the public
release's choice) would cap reconstructions; it is available as ``activation="tanh"`` only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

DecoderActivation = Literal["none", "tanh"]


def tsconv_n_pooled_times(n_times: int, m1: int, m2: int, s: int) -> int:
    """T' of Table 6: samples left after the temporal conv and the average pooling."""
    after_conv = n_times - m1 + 1
    if after_conv < m2:
        raise ValueError(
            f"TSConv needs n_times >= m1 + m2 - 1 = {m1 + m2 - 1} samples, got n_times={n_times} "
            f"(m1={m1}, m2={m2})"
        )
    return (after_conv - m2) // s + 1


def unfold_for_training(model: nn.Module) -> None:
    """Run every TSConv foldable linear pair of ``model`` as written (``training.fold: false``):
    the pre-issue-15 computation, for before/after measurements."""
    for m in model.modules():
        if isinstance(getattr(m, "fold", None), bool):
            m.fold = False


def fold_pool_into_kernel(weight: Tensor, m2: int) -> Tensor:
    """(..., m1) kernels -> (..., m1 + m2 - 1) kernels of conv-then-average-over-m2.

    Differentiable: training keeps the original parameters and convolves with the folded kernel
    (same forward values, same gradients w.r.t. ``weight``), so checkpoints do not change.
    """
    return sum(F.pad(weight, (j, m2 - 1 - j)) for j in range(m2)) / m2


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _trace_shapes(module: nn.Module, names: list[str], x: Tensor) -> OrderedDict[str, tuple]:
    """Run ``module`` once in eval mode and record the output shape of each named child."""
    shapes: OrderedDict[str, tuple] = OrderedDict()
    hooks = [
        getattr(module, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name in names
    ]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    shapes["output"] = tuple(out.shape)
    return shapes


class TSConvEncoder(nn.Module):
    """TSConv brain encoder E_B (BrainAE Table 6): (b, n_chans, n_times) -> (b, embed_dim).

    The spatial kernel spans all ``n_chans`` channels; that is the only thing that changes between
    EEG (63 x 250), MEG (271 x 200) and MUA (1024 x 200).

    ``temporal_filters`` (default ``k``): how many temporal filters run on every channel; the
    spatial conv maps them to ``k`` feature maps. Fewer than ``k`` makes the stages that touch
    every channel (temporal conv, its BatchNorm + ELU, the spatial conv) that much cheaper, which
    is what a 1024-channel input needs (docs/mua_encoder.md).
    """

    registry_name = "tsconv"
    kind = "backbone"

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        embed_dim: int,
        k: int = 40,
        m1: int = 26,
        m2: int = 5,
        s: int = 5,
        dropout: float = 0.0,
        temporal_filters: int | None = None,
    ) -> None:
        super().__init__()
        kt = k if temporal_filters is None else temporal_filters
        _check_positive(n_chans=n_chans, n_times=n_times, embed_dim=embed_dim, k=k, m1=m1, m2=m2, s=s,
                        temporal_filters=kt)
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        self.k, self.m1, self.m2, self.s = k, m1, m2, s
        self.k_temporal = kt
        self.n_pooled_times = tsconv_n_pooled_times(n_times, m1, m2, s)
        self.temporal = nn.Conv2d(1, kt, (1, m1), stride=(1, 1))
        self.pool = nn.Sequential(nn.AvgPool2d((1, m2), stride=(1, s)), nn.BatchNorm2d(kt), nn.ELU())
        self.spatial = nn.Sequential(
            nn.Conv2d(kt, k, (n_chans, 1), stride=(1, 1)), nn.BatchNorm2d(k), nn.ELU()
        )
        self.dropout = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(self.n_features, embed_dim)
        # Exact algebraic folding of the temporal conv and the average pool (no nonlinearity
        # between them), in training and inference; False runs the two layers as written.
        self.fold = True

    @property
    def n_features(self) -> int:
        """Size of the flattened feature map fed to the linear head: k * T'."""
        return self.k * self.n_pooled_times

    def features(self, x: Tensor) -> Tensor:
        """Flattened conv features (b, k * T'), before the linear head."""
        if x.ndim != 3 or x.shape[1] != self.n_chans or x.shape[2] != self.n_times:
            raise ValueError(
                f"expected input (batch, {self.n_chans}, {self.n_times}), got {tuple(x.shape)}"
            )
        x = x.unsqueeze(1)
        if self.fold:  # conv -> average pool as one strided conv: s times fewer outputs
            conv = self.temporal
            h = F.conv2d(x, fold_pool_into_kernel(conv.weight, self.m2), conv.bias, stride=(1, self.s))
            h = self.pool[2](self.pool[1](h))  # BatchNorm + ELU, as after the pool
        else:
            h = self.pool(self.temporal(x))
        return self.flatten(self.dropout(self.spatial(h)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def layer_shapes(self, batch_size: int = 1) -> OrderedDict[str, tuple]:
        """Output shape of each stage for a zero input (documents Table 6; used by tests)."""
        x = torch.zeros(batch_size, self.n_chans, self.n_times)
        fold, self.fold = self.fold, False  # the hooks need every layer to run
        try:
            return _trace_shapes(self, ["temporal", "pool", "spatial", "flatten", "head"], x)
        finally:
            self.fold = fold


class TSConvDecoder(nn.Module):
    """Mirrored brain decoder D_B (BrainAE Table 7): (b, embed_dim) -> (b, n_chans, n_times)."""

    def __init__(
        self,
        n_chans: int,
        n_times: int,
        embed_dim: int,
        k: int = 40,
        m1: int = 26,
        m2: int = 5,
        s: int = 5,
        activation: DecoderActivation = "none",
    ) -> None:
        super().__init__()
        _check_positive(n_chans=n_chans, n_times=n_times, embed_dim=embed_dim, k=k, m1=m1, m2=m2, s=s)
        if activation not in ("none", "tanh"):
            raise ValueError(f"decoder activation must be 'none' or 'tanh', got {activation!r}")
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        self.k, self.m1 = k, m1
        self.n_pooled_times = tsconv_n_pooled_times(n_times, m1, m2, s)
        self.head = nn.Linear(embed_dim, k * self.n_pooled_times)
        self.unflatten = nn.Unflatten(1, (k, 1, self.n_pooled_times))
        self.spatial = nn.Sequential(
            nn.ConvTranspose2d(k, k, (n_chans, 1), stride=(1, 1)), nn.BatchNorm2d(k), nn.ELU()
        )
        # Explicit output size: (T - m1 + 1) is not recoverable from T' by a scale factor.
        self.upsample = nn.Upsample(
            size=(n_chans, n_times - m1 + 1), mode="nearest"
        )
        self.temporal = nn.ConvTranspose2d(k, 1, (1, m1), stride=(1, 1))
        # Nearest up-sampling by an integer factor r followed by the stride-1 transposed conv is
        # one transposed conv with stride r and the kernel summed over r shifts (both linear, no
        # nonlinearity between). Exact only when (T - m1 + 1) == r * T' (the paper's 225 = 5 x 45).
        after_conv = n_times - m1 + 1
        self.up_factor = (after_conv // self.n_pooled_times
                          if after_conv % self.n_pooled_times == 0 else 0)
        self.fold = self.up_factor > 0
        self.activation = nn.Tanh() if activation == "tanh" else nn.Identity()
        # A (C, T) intercept: the response common to all images. The trainer initialises it to
        # the mean training epoch, so the conv path only has to learn what depends on the image
        # (a ridge encoder has the same intercept). Without it the decoder spent most of a CPU
        # training budget re-learning the average ERP and stayed below it.
        self.output_bias = nn.Parameter(torch.zeros(n_chans, n_times))

    def forward(self, z: Tensor) -> Tensor:
        h = self.spatial(self.unflatten(self.head(z)))
        if self.fold:
            r, conv = self.up_factor, self.temporal
            out = F.conv_transpose2d(h, fold_pool_into_kernel(conv.weight, r) * r, conv.bias,
                                     stride=(1, r))
        else:
            out = self.temporal(self.upsample(h))
        return self.activation(out.squeeze(1) + self.output_bias)

    def layer_shapes(self, batch_size: int = 1) -> OrderedDict[str, tuple]:
        """Output shape of each stage for a zero input (documents Table 7; used by tests)."""
        z = torch.zeros(batch_size, self.embed_dim)
        fold, self.fold = self.fold, False
        try:
            return _trace_shapes(self, ["unflatten", "spatial", "upsample", "temporal"], z)
        finally:
            self.fold = fold
