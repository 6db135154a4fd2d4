"""SMR + ICG (Du et al., AAAI 2020): the feature CNN, the introspective conditional generator, and
the decoder object the engine calls.

ICG (Eq. 8-9, after IntroVAE, Huang et al. 2018): a conditional VAE whose encoder q(z | y, h)
doubles as the discriminator. With KL(.) = KL(q(z|., h) || N(0, I)) (Eq. 11, sign corrected):

- generator/decoder: L_AE + alpha * KL(fake)                               (Eq. 8)
- encoder:           L_AE + beta * KL(real) + alpha * [m - KL(fake)]^+     (Eq. 9 with IntroVAE's
  hinge; the paper's unbounded -alpha KL(fake) diverges)

alpha = 0, beta = 1 is the CVAE (Eq. 7); alpha = 1, beta = 0 the regularised CGAN. Fakes are the
reconstructions and the prior samples, averaged. L_AE is Eq. 12 (half the summed squared error).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .generators import GeneratorKind
from .registry import ModelTraits


class FeatureCNN(nn.Module):
    """The default frozen CNN: a small conv auto-encoder neuralign trains on the training (+ extra)
    images, so nothing is downloaded. Features: every encoder layer, average-pooled to pool x pool."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64), pool: int = 3):
        super().__init__()
        self.pool = pool
        enc, dec, c = [], [], in_channels
        for ch in channels:
            enc.append(nn.Sequential(nn.Conv2d(c, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU()))
            c = ch
        outs = list(reversed(channels[:-1])) + [in_channels]
        for i, ch in enumerate(outs):
            last = i == len(outs) - 1
            dec += [nn.ConvTranspose2d(c, ch, 4, 2, 1)] + ([nn.Sigmoid()] if last else [nn.BatchNorm2d(ch), nn.ReLU()])
            c = ch
        self.layers = nn.ModuleList(enc)
        self.decoder = nn.Sequential(*dec)
        self.n_features = sum(channels) * pool * pool
        self.layer_sizes = [ch * pool * pool for ch in channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.decoder(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, K) multilayer features, layer after layer (conv1, conv2, conv3)."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(F.adaptive_avg_pool2d(x, self.pool).flatten(1))
        return torch.cat(feats, 1)


def images_to_numpy(y: torch.Tensor) -> np.ndarray:
    """(n, C, S, S) generator output -> (n, S, S) or (n, S, S, C) numpy images."""
    y = y.permute(0, 2, 3, 1).cpu().numpy()
    return y[..., 0] if y.shape[-1] == 1 else y


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mu, diag exp(logvar)) || N(0, I)) (Eq. 11 with the sign of a divergence)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


class ICG(nn.Module):
    """Encoder q(z | y, h) (also the discriminator) and generator p(y | z, h)."""

    def __init__(self, cond_dim: int, latent_dim: int = 512, image_size: int = 64, channels: int = 1,
                 widths: tuple[int, ...] = (32, 64, 128, 128), linear_skip: int = 0):
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.side = image_size // 2 ** len(widths)
        enc, c = [], channels
        for w in widths:
            enc += [nn.Conv2d(c, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c = w
        self.enc_conv = nn.Sequential(*enc)
        flat = widths[-1] * self.side ** 2
        self.enc_fc = nn.Linear(flat + cond_dim, 2 * latent_dim)
        self.dec_fc = nn.Sequential(nn.Linear(latent_dim + cond_dim, flat), nn.ReLU())
        dec = []
        for i, w in enumerate(reversed(widths)):
            out = list(reversed(widths))[i + 1] if i + 1 < len(widths) else channels
            dec.append(nn.ConvTranspose2d(w, out, 4, 2, 1))
            dec += [nn.BatchNorm2d(out), nn.ReLU()] if i + 1 < len(widths) else [nn.Sigmoid()]
        self.dec_conv = nn.Sequential(*dec[:-1])  # the Sigmoid is applied in decode
        self.top = widths[-1]
        # Optional linear read-out of the condition, linear_skip x linear_skip pixels upsampled and
        # added to the generator's logits: the generator then contains the two-stage linear decoder
        # (features -> pixels) and its convolutions learn what that misses.
        self.linear_skip = linear_skip
        self.skip = nn.Linear(cond_dim, channels * linear_skip ** 2) if linear_skip else None

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.enc_conv.parameters()) + list(self.enc_fc.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        skip = list(self.skip.parameters()) if self.skip is not None else []
        return list(self.dec_fc.parameters()) + list(self.dec_conv.parameters()) + skip

    def encode(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.enc_fc(torch.cat([self.enc_conv(y).flatten(1), h], 1))
        mu, logvar = out.chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = self.dec_fc(torch.cat([z, h], 1)).view(len(z), self.top, self.side, self.side)
        logits = self.dec_conv(x)
        if self.skip is not None:
            lin = self.skip(h).view(len(h), self.channels, self.linear_skip, self.linear_skip)
            logits = logits + F.interpolate(lin, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)

    def decode_expected(self, h: torch.Tensor, n_samples: int = 0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The image for condition h: at z = 0 (the prior mean) when ``n_samples`` is 0, else the
        average over that many prior draws, E_z[G(z, h)] (the MSE-optimal point estimate once the
        generator makes z matter, as the introspective terms do)."""
        if n_samples <= 0:
            return self.decode(torch.zeros(len(h), self.latent_dim, device=h.device), h)
        total = torch.zeros(())
        for _ in range(n_samples):
            z = torch.randn(len(h), self.latent_dim, generator=generator).to(h.device)
            total = total + self.decode(z, h)
        return total / n_samples


def icg_losses(model: ICG, y: torch.Tensor, h: torch.Tensor, alpha: float, beta: float,
               margin: float, calibrated: bool = False) -> dict[str, torch.Tensor]:
    """``enc``: the encoder's objective (Eq. 9), ``gen``: the generator's (Eq. 8), for one batch.

    Take the encoder's gradient from ``enc`` w.r.t. the encoder's parameters and the generator's
    from ``gen`` w.r.t. the generator's only (``train_icg`` does). The reconstruction is a fake
    that depends on the encoder through z, so the encoder sees it detached (IntroVAE) and the
    generator's term encodes it again; the prior sample depends on no encoder parameter, so its
    one encoder pass serves both terms (the same gradients, one pass fewer).

    ``calibrated``: L_AE is the Gaussian negative log-likelihood with the pixel variance set to the
    batch's mean squared error (sigma-VAE, Rybkin et al. 2021) instead of Eq. 12's unit variance,
    under which any image reconstruction is worth less than a nat of KL on [0, 1] pixels.
    """
    mu, logvar = model.encode(y, h)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    y_rec = model.decode(z, h)
    sse = (y_rec - y).pow(2).flatten(1).sum(1)
    if calibrated:
        var = (sse.detach().mean() / y[0].numel()).clamp_min(1e-4)
        l_ae = (0.5 * sse / var).mean() + 0.5 * y[0].numel() * torch.log(var)
    else:
        l_ae = 0.5 * sse.mean()  # Eq. 12
    kl_real = kl_normal(mu, logvar).mean()
    terms = {"l_ae": l_ae, "kl_real": kl_real}
    enc = l_ae + beta * kl_real
    gen = l_ae
    if alpha > 0:
        y_p = model.decode(torch.randn_like(mu), h)
        kl_p = kl_normal(*model.encode(y_p, h))
        kl_fake_enc = (kl_normal(*model.encode(y_rec.detach(), h)), kl_p)
        kl_fake_gen = (kl_normal(*model.encode(y_rec, h)), kl_p)
        hinge = sum(F.relu(margin - k).mean() for k in kl_fake_enc) / 2
        fool = sum(k.mean() for k in kl_fake_gen) / 2
        enc = enc + alpha * hinge
        gen = gen + alpha * fool
        terms.update(kl_fake=fool.detach(), hinge=hinge.detach())
    terms.update(enc=enc, gen=gen)
    return terms


class SmrIcgDecoder(nn.Module):
    """The trained SMR + ICG pipeline in one module: responses -> standardized input X -> SMR
    (X W + b) -> top-k decodable units -> ICG generator at z = 0 (or sampled) -> image.

    Buffers hold the SMR solution and every standardization, so ``model.safetensors`` is complete.
    """

    registry_name = "smr_icg"
    kind = "generator"
    traits = ModelTraits(loss="own", generative=True)
    generator = GeneratorKind(trainer="neuralign.offline.generative.runs:train_smr_icg_run", ablation="neuralign.offline.generative.runs:smr_icg_ablation")

    @classmethod
    def from_generative(cls, gen, n_units: int, image_size: int, channels: int,
                        state: dict | None = None) -> SmrIcgDecoder:
        """:meth:`from_state`, keeping the configs SMR's evaluation reads (the builder)."""
        model = cls.from_state(gen, n_units, image_size, channels, state)
        model._gen_config, model._smr_config = gen, gen.smr
        return model

    def __init__(self, n_units: int, n_features: int, top_k: int, image_size: int, channels: int,
                 latent_dim: int, widths: tuple[int, ...], cnn: FeatureCNN | None,
                 baselines: bool = False, sample_z: bool = False, layer_sizes: list[int] | None = None,
                 decode_samples: int = 0, linear_skip: int = 0):
        super().__init__()
        self.n_units, self.image_size, self.channels, self.sample_z = n_units, image_size, channels, sample_z
        self.decode_samples = decode_samples
        self.layer_sizes = layer_sizes or [n_features]
        for name, shape in (("x_mean", (n_units,)), ("x_std", (n_units,)), ("W", (n_units, n_features)),
                            ("b", (n_features,)), ("h_mean", (n_features,)), ("h_std", (n_features,))):
            self.register_buffer(name, torch.zeros(shape))
        self.register_buffer("top_idx", torch.arange(top_k))
        self.register_buffer("smr_lam1", torch.tensor(1.0))  # the CV-chosen lam1 (for SMR-O refits)
        self.cnn = cnn
        self.icg = ICG(top_k, latent_dim, image_size, channels, widths, linear_skip)
        self.baselines = nn.ModuleDict(
            {k: ICG(top_k, latent_dim, image_size, channels, widths, linear_skip) for k in ("cvae", "cgan")}
        ) if baselines else nn.ModuleDict()

    @classmethod
    def from_state(cls, gen, n_units: int, image_size: int, channels: int, state: dict | None):
        """Rebuild from a GenerativeConfig (+ saved tensors for the shapes that depend on data)."""
        fc = gen.feature_cnn
        cnn = FeatureCNN(channels, tuple(fc.channels), fc.pool) if fc.encoder == "builtin" else None
        n_feat = state["W"].shape[1] if state is not None else cnn.n_features
        top_k = state["top_idx"].shape[0] if state is not None else min(gen.icg.top_k, n_feat)
        baselines = state is not None and any(k.startswith("baselines.") for k in state)
        return cls(n_units, n_feat, top_k, image_size, channels, gen.icg.latent_dim,
                   tuple(gen.icg.channels), cnn, baselines, gen.icg.sample_z,
                   cnn.layer_sizes if cnn is not None else None, gen.icg.decode_samples, gen.icg.linear_skip)

    def _images(self, x: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x, np.float32))
        return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)

    @torch.no_grad()
    def predict_features(self, responses: np.ndarray) -> np.ndarray:
        """SMR: (n, M) responses -> (n, K) standardized CNN features."""
        s = torch.as_tensor(np.asarray(responses, np.float32), device=self.W.device)
        if s.ndim != 2 or s.shape[1] != self.n_units:
            raise ValueError(f"expected responses of shape (n, {self.n_units}), got {tuple(s.shape)}")
        return (((s - self.x_mean) / self.x_std) @ self.W + self.b).cpu().numpy()

    @torch.no_grad()
    def images_from_features(self, h: np.ndarray, which: str = "icg", seed: int = 0) -> np.ndarray:
        """ICG generator on standardized features (all K; the top-k are picked here)."""
        net = self.icg if which == "icg" else self.baselines[which]
        net.eval()
        hk = torch.as_tensor(np.asarray(h, np.float32), device=self.W.device)[:, self.top_idx]
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if self.decode_samples > 0:
            return images_to_numpy(torch.cat([net.decode_expected(hk[i:i + 256], self.decode_samples, gen)
                                                    for i in range(0, len(hk), 256)]))
        z = (torch.randn(len(hk), net.latent_dim, generator=gen).to(hk.device) if self.sample_z
             else torch.zeros(len(hk), net.latent_dim, device=hk.device))
        return images_to_numpy(torch.cat([net.decode(z[i:i + 256], hk[i:i + 256])
                                                for i in range(0, len(hk), 256)]))

    def generate(self, responses: np.ndarray) -> np.ndarray:
        """Decoding: (n, M) responses in the training units -> (n, S, S) or (n, S, S, C) float32
        images in [0, 1] (SMR, then the ICG generator)."""
        self.eval()
        return self.images_from_features(self.predict_features(responses))
