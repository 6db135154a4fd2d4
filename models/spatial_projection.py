"""A learned spatial projection in front of a brain encoder: C input channels -> P virtual ones.

Why: TSConv filters every input channel in time and its spatial kernel spans all of them, so its
cost grows with the channel count. On 1024-channel MUA that made the folded encoder take ~14 ms
per forward at batch 1 on one CPU thread, almost all of it in the two convolutions over 1024
channels (docs/mua_encoder.md). One (P, C) matrix applied first (a 1 x 1 convolution, no bias)
leaves the encoder P channels to work on. Only the encoder is projected: BrainAE's decoder still
reconstructs every input channel.

The projection is linear and comes before everything TSConv folds, so
:func:`neuralign.models.folding.fold_for_inference` folds the backbone behind it exactly as
without it (channel mixing and temporal filtering commute; nothing needs re-deriving).
"""

from __future__ import annotations

from torch import Tensor, nn


def check_n_virtual(n_chans: int, n_virtual: int) -> None:
    """A projection reduces the channels: 1 <= P <= C, else one clear ValueError."""
    if not 1 <= n_virtual <= n_chans:
        raise ValueError(
            f"spatial_projection must be between 1 and the {n_chans} input channels, got "
            f"{n_virtual} (the encoder sees that many learned mixtures of the channels)"
        )


class ProjectedEncoder(nn.Module):
    """(b, n_chans, n_times) -> learned (P, n_chans) channel mixing -> ``backbone`` on P channels.

    ``backbone`` must take (b, n_virtual, n_times); the contract seen from outside is the one of
    any brain encoder: (b, n_chans, n_times) -> (b, embed_dim).
    """

    def __init__(self, n_chans: int, n_virtual: int, backbone: nn.Module) -> None:
        super().__init__()
        check_n_virtual(n_chans, n_virtual)
        self.n_chans, self.n_virtual = n_chans, n_virtual
        self.n_times = getattr(backbone, "n_times", None)
        self.embed_dim = getattr(backbone, "embed_dim", None)
        self.projection = nn.Conv1d(n_chans, n_virtual, kernel_size=1, bias=False)
        self.backbone = backbone

    def with_backbone(self, backbone: nn.Module) -> ProjectedEncoder:
        """A new encoder with the same projection (shared, not copied) in front of ``backbone``
        (folding swaps the backbone without touching the model it came from)."""
        out = ProjectedEncoder(self.n_chans, self.n_virtual, backbone)
        out.projection = self.projection
        return out.train(self.training)

    def project(self, x: Tensor) -> Tensor:
        """(b, n_chans, T) -> (b, n_virtual, T)."""
        if x.ndim != 3 or x.shape[1] != self.n_chans:
            raise ValueError(f"expected input (batch, {self.n_chans}, n_times), got {tuple(x.shape)}")
        return self.projection(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.project(x))
