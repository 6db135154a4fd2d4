"""FLIG (Zhou et al., IEEE TCDS 2023): flow-based invertible encoding and decoding.

Stage 1: the convolutional auto-encoder of Table V (latent dimension = neural dimension M, Tanh
on the code, Sigmoid on the image). Stage 2: Real-NVP flows F_x (images, 15 units) and F_s
(responses, 1 unit) on one N(0, I) base, discriminators D_x, D_s (M -> M/2 -> 1, Sigmoid).

- encoding: s_hat = F_s(F_x^-1(Enc(x)))
- decoding: x_hat = Dec(F_x(F_s^-1(s)))

:meth:`FLIG.generate` (responses in the user's units -> images in [0, 1]) and :meth:`FLIG.encode`
(images -> responses in the user's units) are the inference API; the response scaling to
[-1, 1] (Sec. IV-A) lives in buffers, so the saved weights carry it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from neuralign.generative_config import GenerativeConfig

from .generators import GeneratorKind
from .realnvp import RealNVP
from .registry import ModelTraits


def _conv_block(c_in: int, c_out: int, k: int, stride: int, pad: int, dropout: float | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, pad), nn.BatchNorm2d(c_out), nn.ReLU()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    return layers


class UpsampleConv2d(nn.Module):
    """Nearest x2 up-sampling followed by a stride-1 'same' convolution (Table V's decoder stage),
    computed exactly without the up-sampled tensor.

    Output pixel 2i + a (a in {0, 1}) of conv(up(x)) reads up(x)[2i + a + d] = x[i + floor((a + d)
    / 2)] for taps d in [-p, p], so each of the 4 output phases is a convolution of the low-res
    ``x`` whose kernel sums the taps that land on the same low-res pixel (zero padding agrees:
    2i + a + d < 0 exactly when i + floor((a + d) / 2) < 0). One convolution with 4 x C_out
    outputs and a pixel shuffle gives the same function with the same parameters (``self.conv``)
    at 2-2.8x fewer multiply-adds for 5x5 / 7x7 kernels and no up-sampled copy in memory.
    """

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        if k % 2 == 0:
            raise ValueError("UpsampleConv2d needs an odd kernel ('same' padding k // 2)")
        self.conv = nn.Conv2d(c_in, c_out, k, 1, k // 2)
        p = k // 2
        lo, hi = -((p + 1) // 2), (p + 1) // 2  # floor(-p / 2), floor((1 + p) / 2)
        self.pad, n_low = -lo, hi - lo + 1
        # fold[a, e, t] = 1 when tap t (d = t - p) of phase a lands on low-res offset e + lo.
        fold = torch.zeros(2, n_low, k)
        for a in (0, 1):
            for t in range(k):
                fold[a, (a + t - p) // 2 - lo, t] = 1.0
        self.register_buffer("fold", fold, persistent=False)

    def phase_kernels(self) -> torch.Tensor:
        """(4 C_out, C_in, L, L) kernels, output channel (c, a, b) in pixel-shuffle order."""
        w = torch.einsum("aet,bfu,oitu->oabief", self.fold, self.fold, self.conv.weight)
        c_out, c_in = self.conv.weight.shape[:2]
        return w.reshape(4 * c_out, c_in, *w.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.conv.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, self.phase_kernels(), bias, padding=self.pad), 2)


class CAEEncoder(nn.Module):
    """Table V, left column: four strided convs, FC to M, Tanh (codes in [-1, 1])."""

    def __init__(self, latent_dim: int, in_channels: int = 1, image_size: int = 64, dropout: float = 0.1,
                 width: float = 1.0):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (Table V halves it 4 times), got {image_size}")
        c1, c2, c3 = (max(1, round(c * width)) for c in (64, 128, 256))
        self.convs = nn.Sequential(
            *_conv_block(in_channels, c1, 7, 2, 3, None),
            *_conv_block(c1, c2, 5, 2, 2, dropout),
            *_conv_block(c2, c3, 3, 2, 1, dropout),
            *_conv_block(c3, c3, 3, 2, 1, dropout),
        )
        self.fc = nn.Linear(c3 * (image_size // 16) ** 2, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.convs(x).flatten(1)))


class CAEDecoder(nn.Module):
    """Table V, right column: FC to 4 x 4 x 256, four (x2 upsample, conv) stages, Sigmoid."""

    def __init__(self, latent_dim: int, out_channels: int = 1, image_size: int = 64, dropout: float = 0.1,
                 width: float = 1.0):
        super().__init__()
        self.side = image_size // 16
        c1, c2, self.c3 = (max(1, round(c * width)) for c in (64, 128, 256))
        self.fc = nn.Linear(latent_dim, self.c3 * self.side ** 2)

        def block(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            return [UpsampleConv2d(c_in, c_out, k), nn.BatchNorm2d(c_out), nn.ReLU(), nn.Dropout(dropout)]

        # (x2 nearest up-sampling, conv) pairs as one exact UpsampleConv2d each.
        self.convs = nn.Sequential(
            *block(self.c3, self.c3, 3), *block(self.c3, c2, 3), *block(c2, c1, 5),
            UpsampleConv2d(c1, out_channels, 7), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.convs(self.fc(z).view(len(z), self.c3, self.side, self.side))


class Discriminator(nn.Module):
    """Appendix B: M -> M/2 -> 1. Returns the logit; D(.) = sigmoid(logit)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, max(dim // 2, 1)), nn.LeakyReLU(0.2),
                                 nn.Linear(max(dim // 2, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def rdm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """M[i, j] = (1 - cos(a_i, b_j)) / 2 (Sec. III-E)."""
    a = F.normalize(a, dim=1, eps=1e-8)
    b = F.normalize(b, dim=1, eps=1e-8)
    return (1.0 - a @ b.T) / 2.0


def rsa_loss(zx: torch.Tensor, zs: torch.Tensor) -> torch.Tensor:
    """Eq. 11: ||M_xx - M_xs||_F, second-order RSA between intra- and inter-modal RDMs."""
    return torch.linalg.norm(rdm(zx, zx) - rdm(zx, zs), ord="fro")


def jacobian_clamp(g, xf: torch.Tensor, lam_plus: float, lam_minus: float,
                   g_xf: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 16: keep Q = ||G(x_f) - G(x_f')|| / ||x_f - x_f'|| within [lam_minus, lam_plus]
    (``g_xf``: G(x_f) when the caller has it already)."""
    delta = torch.randn_like(xf)
    xp = xf + delta / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    q = ((g(xf) if g_xf is None else g_xf) - g(xp)).norm(dim=1) / (xf - xp).norm(dim=1)
    return ((q.clamp(min=lam_plus) - lam_plus) ** 2 + (q.clamp(max=lam_minus) - lam_minus) ** 2).mean()


def gradient_penalty(d: Discriminator, fake: torch.Tensor) -> torch.Tensor:
    """Appendix B: E[(||grad D(fake)||_2 - 1)^2] on the generated samples, D after the Sigmoid."""
    fake = fake.detach().requires_grad_(True)
    out = torch.sigmoid(d(fake))
    (grad,) = torch.autograd.grad(out.sum(), fake, create_graph=True)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


class FLIG(nn.Module):
    """The whole model: frozen-after-stage-1 CAE, two flows on one base, two discriminators."""

    registry_name = "flig"
    kind = "generator"
    traits = ModelTraits(loss="own", generative=True)
    generator = GeneratorKind(trainer="neuralign.offline.generative.runs:train_flig_run", ablation="neuralign.offline.generative.runs:flig_ablation")

    @classmethod
    def from_generative(cls, gen: GenerativeConfig, n_units: int, image_size: int, channels: int,
                        state: dict | None = None) -> FLIG:
        """The untrained model of ``gen.flig`` for this data shape (the builder)."""
        f = gen.flig
        return cls(n_units, image_size, channels, f.n_units_x, f.n_units_s, f.coupling_hidden,
                   f.coupling_layers, f.cae_dropout, f.cae_width, f.coupling_permute)

    def __init__(self, n_units: int, image_size: int = 64, channels: int = 1, n_units_x: int = 15,
                 n_units_s: int = 1, hidden: int = 128, n_hidden: int = 3, dropout: float = 0.1,
                 cae_width: float = 1.0, permute: bool = False):
        super().__init__()
        self.n_units, self.image_size, self.channels = n_units, image_size, channels
        self.enc = CAEEncoder(n_units, channels, image_size, dropout, cae_width)
        self.dec = CAEDecoder(n_units, channels, image_size, dropout, cae_width)
        self.flow_x = RealNVP(n_units, n_units_x, hidden, n_hidden, permute)
        self.flow_s = RealNVP(n_units, n_units_s, hidden, n_hidden, permute)
        self.disc_x = Discriminator(n_units)
        self.disc_s = Discriminator(n_units)
        # Response scaling to [-1, 1]: s_scaled = (s - offset) / scale.
        self.register_buffer("resp_offset", torch.zeros(n_units))
        self.register_buffer("resp_scale", torch.ones(n_units))

    # -- scaling --------------------------------------------------------------------------------
    def set_response_scaling(self, responses: np.ndarray, mode: str = "minmax") -> None:
        """Fit the response scaling on training responses only (Sec. IV-A: neural signals in [-1, 1])."""
        r = torch.as_tensor(np.asarray(responses), dtype=torch.float32)
        if mode == "minmax":
            lo, hi = r.min(0).values, r.max(0).values
            self.resp_offset.copy_((hi + lo) / 2)
            self.resp_scale.copy_(((hi - lo) / 2).clamp_min(1e-6))
        else:
            self.resp_offset.copy_(r.mean(0))
            self.resp_scale.copy_(r.std(0).clamp_min(1e-6))

    def scale_responses(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.resp_offset) / self.resp_scale

    def unscale_responses(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.resp_scale + self.resp_offset

    # -- the two routes -------------------------------------------------------------------------
    def image_features_to_responses(self, xf: torch.Tensor) -> torch.Tensor:
        """G_{x->s} = F_s o F_x^-1 on scaled responses."""
        return self.flow_s(self.flow_x.inverse(xf)[0])[0]

    def responses_to_image_features(self, s: torch.Tensor) -> torch.Tensor:
        return self.flow_x(self.flow_s.inverse(s)[0])[0]

    def _device(self) -> torch.device:
        return self.resp_offset.device

    @torch.no_grad()
    def generate(self, responses: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Decoding, x_hat = Dec(F_x(F_s^-1(s))): (n, M) responses in the training units ->
        (n, S, S) (grey) or (n, S, S, C) float32 images in [0, 1]."""
        was_training = self.training
        self.eval()
        s = torch.as_tensor(np.asarray(responses, dtype=np.float32))
        if s.ndim != 2 or s.shape[1] != self.n_units:
            raise ValueError(f"expected responses of shape (n, {self.n_units}), got {tuple(s.shape)}")
        out = []
        for i in range(0, len(s), batch_size):
            sb = self.scale_responses(s[i:i + batch_size].to(self._device()))
            out.append(self.dec(self.responses_to_image_features(sb)).cpu())
        self.train(was_training)
        imgs = torch.cat(out).permute(0, 2, 3, 1).numpy() if out else np.zeros((0, self.image_size, self.image_size, self.channels), np.float32)
        return imgs[..., 0] if self.channels == 1 else imgs

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Encoding, s_hat = F_s(F_x^-1(Enc(x))): (n, S, S[, C]) images in [0, 1] -> (n, M)."""
        was_training = self.training
        self.eval()
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        out = []
        for i in range(0, len(x), batch_size):
            xf = self.enc(x[i:i + batch_size].to(self._device()))
            out.append(self.unscale_responses(self.image_features_to_responses(xf)).cpu())
        self.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, self.n_units), np.float32)
