"""Visual-Neural Alignment (VNA) and its two baselines, direct encoding and direct decoding.

VNA (vna.txt Section 3.1): a conv image encoder (5 x [Conv k4 s2 p1 -> BN -> LeakyReLU], channels
16-32-64-128-256, flatten, Linear -> latent) on pixels and an MLP spike encoder (n -> 512 -> BN ->
LeakyReLU -> latent), trained with a CLIP-style symmetric contrastive loss on cosine similarity.
Baselines (Section 4.2): direct encoding predicts the neural response from the image (MSE on
responses); direct decoding predicts the image pixels from the response (MSE on images).
All three expose ``scores(x, images) -> (n_responses, n_images)`` (higher = better match) for the
discriminative encoding/decoding ROC-AUC evaluation.

Neural input is (b, n_chans, n_times) (flattened to n_chans * n_times, e.g. units x time bins) or
already flat (b, n_chans * n_times). Images are (b, 3, image_size, image_size), image_size a
multiple of 32 (64 in the paper -> a 256 x 2 x 2 = 1024-d flattened map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralign.config import ModelConfig

from .brainae import Temperature
from .registry import ModelTraits

CONV_CHANNELS = (16, 32, 64, 128, 256)
LEAKY_SLOPE = 0.2


def _check_image_size(image_size: int) -> int:
    factor = 2 ** len(CONV_CHANNELS)
    if image_size < factor or image_size % factor:
        raise ValueError(f"image_size must be a positive multiple of {factor}, got {image_size}")
    return image_size // factor


class ConvImageEncoder(nn.Module):
    """VNA visual encoder: (b, in_channels, S, S) pixels -> (b, out_dim)."""

    def __init__(self, out_dim: int, image_size: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        side = _check_image_size(image_size)
        self.image_size, self.in_channels = image_size, in_channels
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in CONV_CHANNELS:
            layers += [nn.Conv2d(prev, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.LeakyReLU(LEAKY_SLOPE)]
            prev = ch
        self.convs = nn.Sequential(*layers)
        self.n_features = prev * side * side
        self.head = nn.Linear(self.n_features, out_dim)

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images (batch, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        return self.head(self.convs(images).flatten(1))


class MLPNeuralEncoder(nn.Module):
    """VNA spike encoder: (b, n_inputs) or (b, n_chans, n_times) -> Linear-BN-LeakyReLU-Linear."""

    def __init__(self, n_inputs: int, out_dim: int, hidden: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.net = nn.Sequential(
            nn.Linear(n_inputs, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.n_inputs:
            raise ValueError(f"expected {self.n_inputs} neural inputs per sample, got {x.shape[1]}")
        return self.net(x)


class ConvImageDecoder(nn.Module):
    """Mirror of :class:`ConvImageEncoder`: (b, in_dim) -> (b, out_channels, S, S), linear output."""

    def __init__(self, in_dim: int, image_size: int = 64, out_channels: int = 3) -> None:
        super().__init__()
        side = _check_image_size(image_size)
        chans = CONV_CHANNELS[::-1]
        self.head = nn.Linear(in_dim, chans[0] * side * side)
        self.unflatten = nn.Unflatten(1, (chans[0], side, side))
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(LEAKY_SLOPE)]
        layers.append(nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconvs(self.unflatten(self.head(z)))


def _image_size_from(feature_dim: int | None, kwargs: dict) -> dict:
    """Infer ``image_size`` when the "features" are flattened RGB pixels (3 * size * size)."""
    if feature_dim and "image_size" not in kwargs:
        side = int(round((feature_dim / 3) ** 0.5))
        if 3 * side * side == feature_dim:
            kwargs = {**kwargs, "image_size": side}
    return kwargs


def _as_images(images: Tensor, image_size: int) -> Tensor:
    """(b, 3, S, S) pixels, or the same flattened to (b, 3 * S * S), as (b, 3, S, S)."""
    return images.reshape(len(images), -1, image_size, image_size) if images.ndim == 2 else images


def _neg_mse_matrix(pred: Tensor, target: Tensor) -> Tensor:
    """-(mean squared difference) between every row of ``pred`` and every row of ``target``."""
    p, t = pred.flatten(1), target.flatten(1)
    return -torch.cdist(p, t).pow(2) / p.shape[1]


class VNA(nn.Module):
    """Visual-Neural Alignment: conv image encoder + MLP neural encoder in a shared latent space."""

    registry_name = "vna"
    kind = "model"
    traits = ModelTraits(loss="clip", pixel_input=True)

    def __init__(
        self,
        n_chans: int,
        n_times: int = 1,
        embed_dim: int = 128,
        hidden: int = 512,
        image_size: int = 64,
        in_channels: int = 3,
        dropout: float = 0.0,
        tau: float = 0.07,
        learn_tau: bool = False,
    ) -> None:
        super().__init__()
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        self.image_size = image_size
        self.image_encoder = ConvImageEncoder(embed_dim, image_size, in_channels)
        self.neural_encoder = MLPNeuralEncoder(n_chans * n_times, embed_dim, hidden, dropout)
        self.temperature = Temperature(tau, learn=learn_tau)

    @classmethod
    def from_config(
        cls, model_cfg: ModelConfig, n_chans: int, n_times: int, feature_dim: int | None = None,
        **kwargs,
    ) -> VNA:
        """Build from the ``model`` section; VNA encodes pixels, so ``feature_dim`` is unused.

        ``embed_dim`` None falls back to 128; ``image_size`` may come in ``kwargs``, or follows
        from ``feature_dim`` when the "features" are flattened RGB pixels (3 * size * size).
        """
        kwargs = _image_size_from(feature_dim, kwargs)
        return cls(
            n_chans=n_chans, n_times=n_times, embed_dim=model_cfg.embed_dim or 128,
            hidden=model_cfg.hidden, dropout=model_cfg.dropout, tau=model_cfg.tau,
            learn_tau=model_cfg.learn_tau, **kwargs,
        )

    @property
    def tau(self) -> Tensor:
        return self.temperature()

    def encode_brain(self, x: Tensor) -> Tensor:
        return self.neural_encoder(x)

    def encode_image(self, images: Tensor) -> Tensor:
        """(b, 3, S, S) pixels in [0, 1], or the same flattened to (b, 3 * S * S)."""
        return self.image_encoder(_as_images(images, self.image_size))

    def forward(self, x: Tensor, images: Tensor) -> dict[str, Tensor]:
        return {"zb": self.encode_brain(x), "zi": self.encode_image(images)}

    def scores(self, x: Tensor, images: Tensor) -> Tensor:
        """Cosine similarity of every response with every image, (n_responses, n_images)."""
        zb, zi = self.encode_brain(x), self.encode_image(images)
        return F.normalize(zb, dim=-1) @ F.normalize(zi, dim=-1).T


class DirectEncoding(nn.Module):
    """Baseline: image -> VNA conv encoder -> predicted neural response, trained with MSE."""

    registry_name = "direct_encoding"
    kind = "model"
    traits = ModelTraits(loss="mse_encoding", pixel_input=True)  # image -> response, MSE

    def __init__(
        self, n_chans: int, n_times: int = 1, image_size: int = 64, in_channels: int = 3,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        self.n_chans, self.n_times, self.image_size = n_chans, n_times, image_size
        self.image_encoder = ConvImageEncoder(hidden, image_size, in_channels)
        self.readout = nn.Sequential(nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, n_chans * n_times))

    @classmethod
    def from_config(
        cls, model_cfg: ModelConfig, n_chans: int, n_times: int, feature_dim: int | None = None,
        **kwargs,
    ) -> DirectEncoding:
        kwargs = _image_size_from(feature_dim, kwargs)
        return cls(n_chans=n_chans, n_times=n_times, hidden=model_cfg.hidden, **kwargs)

    def forward(self, images: Tensor) -> Tensor:
        """Predicted responses (b, n_chans, n_times) for pixels (b, 3, S, S) or (b, 3 * S * S)."""
        out = self.readout(self.image_encoder(_as_images(images, self.image_size)))
        return out.view(-1, self.n_chans, self.n_times)

    def loss(self, images: Tensor, x: Tensor) -> Tensor:
        return F.mse_loss(self(images), x.reshape(-1, self.n_chans, self.n_times))

    def scores(self, x: Tensor, images: Tensor) -> Tensor:
        """-MSE between each recorded response and each image's predicted response."""
        return _neg_mse_matrix(x, self(images))


class DirectDecoding(nn.Module):
    """Baseline: neural response -> MLP -> conv decoder -> predicted image pixels, trained with MSE."""

    registry_name = "direct_decoding"
    kind = "model"
    traits = ModelTraits(loss="mse_decoding", pixel_input=True)  # response -> pixels, MSE

    def __init__(
        self, n_chans: int, n_times: int = 1, image_size: int = 64, out_channels: int = 3,
        hidden: int = 512, latent: int = 128, dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_chans, self.n_times, self.image_size = n_chans, n_times, image_size
        self.neural_encoder = MLPNeuralEncoder(n_chans * n_times, latent, hidden, dropout)
        self.image_decoder = ConvImageDecoder(latent, image_size, out_channels)

    @classmethod
    def from_config(
        cls, model_cfg: ModelConfig, n_chans: int, n_times: int, feature_dim: int | None = None,
        **kwargs,
    ) -> DirectDecoding:
        kwargs = _image_size_from(feature_dim, kwargs)
        return cls(
            n_chans=n_chans, n_times=n_times, hidden=model_cfg.hidden,
            latent=model_cfg.embed_dim or 128, dropout=model_cfg.dropout, **kwargs,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Predicted images (b, out_channels, S, S)."""
        return self.image_decoder(self.neural_encoder(x))

    def loss(self, x: Tensor, images: Tensor) -> Tensor:
        pred = self(x)
        return F.mse_loss(pred, _as_images(images, self.image_size))

    def scores(self, x: Tensor, images: Tensor) -> Tensor:
        """-MSE between each response's predicted image and each candidate image."""
        return _neg_mse_matrix(self(x), images)


__all__ = [
    "VNA", "DirectEncoding", "DirectDecoding", "ConvImageEncoder", "ConvImageDecoder",
    "MLPNeuralEncoder",
]
