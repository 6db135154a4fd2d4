"""MAP image reconstruction with a learned denoiser prior (plug-and-play), the reference
generative decoder.

Why: a linear decoder returns the posterior mean under a Gaussian image model, which blurs the
sharp occluding edges natural images have. The strongest published non-linear retina decoders
(linear decoding refined by a learned natural-image prior; MAP with a deep denoiser prior,
Kim et al. / Wu et al., primate retina) keep a likelihood of the responses and replace the
Gaussian image model by a denoiser trained on images alone, so unpaired images teach the prior
and only the likelihood needs paired data.

Decoding solves ``argmin_x  NLL(y | x) + R(x)`` by half-quadratic splitting: starting from the
linear (ridge) reconstruction, each outer step takes a few Adam steps on
``NLL(y | x) + mu / (2 sigma^2) ||x - z||^2`` and then sets ``z = D(x, sigma)``, with the noise
level sigma annealed from ``sigma_start`` to ``sigma_end``. The likelihood is the fitted
encoding model: Poisson GLM (exp nonlinearity) for spike counts, Gaussian linear for anything
signed (embeddings, z-scored voxels).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuralign.generative_config import GenerativeConfig, PriorMapConfig

from .generators import GeneratorKind
from .registry import ModelTraits


class Denoiser(nn.Module):
    """Residual CNN denoiser told its noise level (a constant sigma map as an extra input
    channel, as FFDNet), so one network serves every step of the annealing."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels + 1, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``x`` (n, C, S, S) noisy images, ``sigma`` (n,) their noise SD -> denoised images."""
        level = sigma.view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return x - self.net(torch.cat([x, level], dim=1))


class PriorMapDecoder(nn.Module):
    """Responses (n, M) -> images: ridge start, then MAP refinement under the denoiser prior.

    Every fitted array is a buffer, so the whole decoder round-trips through a state dict
    (safetensors in a run directory or a bundle's generator section).
    """

    registry_name = "prior_map"
    kind = "generator"
    traits = ModelTraits(loss="own", generative=True)
    generator = GeneratorKind(trainer="neuralign.offline.generative.runs:train_prior_map_run",
                              ablation="neuralign.offline.generative.runs:prior_map_ablation")

    @classmethod
    def from_generative(cls, gen: GenerativeConfig, n_units: int, image_size: int,
                        channels: int, state: dict | None = None) -> PriorMapDecoder:
        """The untrained decoder of ``gen.prior_map`` for this data shape (the builder)."""
        return cls(n_units, image_size, channels, gen.prior_map)

    def __init__(self, n_units: int, image_size: int, channels: int, cfg: PriorMapConfig):
        super().__init__()
        self.n_units, self.image_size, self.channels, self.cfg = n_units, image_size, channels, cfg
        p = channels * image_size * image_size
        self.denoiser = Denoiser(channels, cfg.denoiser_width, cfg.denoiser_depth)
        # ridge start: x0 = ridge_w @ ((y - in_mean) / in_scale) + ridge_b
        self.register_buffer("in_mean", torch.zeros(n_units))
        self.register_buffer("in_scale", torch.ones(n_units))
        self.register_buffer("ridge_w", torch.zeros(p, n_units))
        self.register_buffer("ridge_b", torch.full((p,), 0.5))
        # encoding model: eta = enc_w @ x + enc_b; Poisson rate exp(eta) or Gaussian mean eta
        self.register_buffer("enc_w", torch.zeros(n_units, p))
        self.register_buffer("enc_b", torch.zeros(n_units))
        self.register_buffer("enc_precision", torch.ones(n_units))  # Gaussian only: 1 / noise var
        self.register_buffer("poisson", torch.tensor(1.0))  # 1: Poisson GLM, 0: Gaussian linear
        self.register_buffer("mu", torch.tensor(float(cfg.mu)))
        # out = mean_image + blend * (map - mean_image): with weak single-trial information the
        # image that scores best is close to the mean image, carrying the decoded deviation
        # scaled down (blend chosen on held-out rows; 1 = the MAP estimate itself)
        self.register_buffer("mean_image", torch.full((p,), 0.5))
        self.register_buffer("blend", torch.tensor(1.0))

    def _device(self) -> torch.device:
        return self.ridge_w.device

    def start(self, y: torch.Tensor) -> torch.Tensor:
        """The linear reconstruction (n, P) the refinement starts from, clipped to [0, 1]."""
        return (((y - self.in_mean) / self.in_scale) @ self.ridge_w.T + self.ridge_b).clamp(0, 1)

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of responses ``y`` (n, M) given images ``x`` (n, P), summed."""
        eta = x @ self.enc_w.T + self.enc_b
        if bool(self.poisson):
            eta = eta.clamp(max=10.0)  # a runaway iterate must not overflow exp
            return (eta.exp() - y * eta).sum()
        return 0.5 * (((y - eta) ** 2) * self.enc_precision).sum()

    def shrink(self, x: torch.Tensor, blend: float | None = None) -> torch.Tensor:
        """The output toward the mean training image by ``blend`` (default: the fitted one)."""
        g = float(self.blend) if blend is None else blend
        return (self.mean_image + g * (x - self.mean_image)).clamp(0, 1)

    def refine(self, y: torch.Tensor, x0: torch.Tensor, mu: float | None = None) -> torch.Tensor:
        """Half-quadratic splitting from ``x0`` (n, P): returns the MAP estimate (n, P) in [0, 1]."""
        cfg = self.cfg
        mu = float(self.mu) if mu is None else mu
        n, s, c = len(y), self.image_size, self.channels
        x = x0.clone()
        for sigma in np.geomspace(cfg.sigma_start, cfg.sigma_end, cfg.n_outer):
            z = x.detach()
            weight = mu / (2.0 * float(sigma) ** 2)
            xv = z.clone().requires_grad_(True)
            opt = torch.optim.Adam([xv], lr=cfg.inner_lr)
            with torch.enable_grad():
                for _ in range(cfg.n_inner):
                    loss = self.nll(xv, y) + weight * ((xv - z) ** 2).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                img = xv.detach().clamp(0, 1).view(n, c, s, s)
                x = self.denoiser(img, torch.full((n,), float(sigma), device=img.device)).reshape(n, -1)
        return x.clamp(0, 1)

    @torch.no_grad()
    def generate(self, responses: np.ndarray | torch.Tensor, batch_size: int = 256,
                 mu: float | None = None) -> np.ndarray:
        """(n, M) responses in the training units -> (n, S, S) (grey) or (n, S, S, C) float32
        images in [0, 1] (the engine's generator contract)."""
        self.eval()
        y_all = torch.as_tensor(np.asarray(responses, dtype=np.float32))
        if y_all.ndim != 2 or y_all.shape[1] != self.n_units:
            raise ValueError(f"expected responses of shape (n, {self.n_units}), got {tuple(y_all.shape)}")
        out = []
        for i in range(0, len(y_all), batch_size):
            y = y_all[i:i + batch_size].to(self._device())
            out.append(self.shrink(self.refine(y, self.start(y), mu)).cpu())
        return self.as_images(torch.cat(out) if out else self.ridge_b.new_zeros(0, len(self.ridge_b)))

    def as_images(self, x: torch.Tensor) -> np.ndarray:
        """(n, P) decoder pixels -> (n, S, S) or (n, S, S, C) float32 numpy images."""
        s, c = self.image_size, self.channels
        imgs = x.detach().reshape(-1, c, s, s).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        return imgs[..., 0] if c == 1 else imgs

    @torch.no_grad()
    def linear(self, responses: np.ndarray) -> np.ndarray:
        """The ridge start alone, same shape as :meth:`generate` (the ablation without prior)."""
        y = torch.as_tensor(np.asarray(responses, dtype=np.float32), device=self._device())
        return self.as_images(self.start(y))
