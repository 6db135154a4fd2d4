"""Fitting the MAP decoder with a learned denoiser prior (:mod:`neuralign.models.prior_map`).

Three independent fits, each on what it needs:

- the **denoiser** on images alone (the paired training images of the fit rows, plus the
  unpaired ``extra_images`` when ``use_extra_images``), Gaussian noise of SD U(0, sigma_max) on
  random crops with horizontal flips;
- the **ridge start** (standardised responses -> pixels, alpha by efficient leave-one-out over a
  quarter-decade grid, as the tuned ridge baseline);
- the **encoding model** (pixels -> responses on PCA-whitened pixels: a Poisson GLM per unit for
  counts, ridge with per-unit residual variance for signed responses).

The prior weight ``mu`` is chosen by SSIM on held-out training rows (``val_fraction``): the
linear parts are fitted without them, ``mu`` picked, then the linear parts are refitted on every
training row. The denoiser never sees the held-out images. Test data is never read here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from neuralign.generative_config import PriorMapConfig
from neuralign.models.prior_map import Denoiser, PriorMapDecoder
from neuralign.offline.generative.baselines import RIDGE_ALPHAS_FINE

log = logging.getLogger(__name__)



@dataclass
class PriorMapHistory:
    likelihood: str = ""
    denoiser_loss: list[float] = field(default_factory=list)  # mean MSE per 100 steps
    ridge_alpha: float = 0.0
    val_ssim_linear: float = 0.0
    val_ssim_mean_image: float = 0.0
    val_ssim_by_mu: dict[str, float] = field(default_factory=dict)  # best blend of each mu
    mu: float = 0.0
    blend: float = 1.0
    n_val: int = 0  # held-out rows
    n_val_images: int = 0  # distinct images among them (repeated images are held out together)
    seconds_denoiser: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _nchw(images: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, np.float32))
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)


def train_denoiser(images: np.ndarray, cfg: PriorMapConfig, device: torch.device, seed: int = 0,
                   progress: bool | None = None) -> tuple[Denoiser, list[float]]:
    """The image prior: a noise-level-aware CNN denoiser on (N, S, S[, C]) images in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_all = _nchw(images).to(device)
    n, c, s = x_all.shape[0], x_all.shape[1], x_all.shape[2]
    crop = min(cfg.denoiser_crop, s)
    net = Denoiser(c, cfg.denoiser_width, cfg.denoiser_depth).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.denoiser_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.denoiser_steps)
    losses, running = [], 0.0
    quiet = None if progress is None else not progress
    for step in tqdm(range(cfg.denoiser_steps), desc="prior: denoiser", unit="step", disable=quiet):
        idx = torch.randint(0, n, (cfg.denoiser_batch_size,), generator=gen)
        r, q = (int(v) for v in torch.randint(0, s - crop + 1, (2,), generator=gen))
        x = x_all[idx, :, r:r + crop, q:q + crop]
        if bool(torch.rand(1, generator=gen) < 0.5):
            x = x.flip(-1)
        sigma = (torch.rand(len(x), generator=gen) * cfg.denoiser_sigma_max).to(device)
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen).to(device)
        loss = F.mse_loss(net(noisy, sigma), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (step + 1) % 100 == 0 or step + 1 == cfg.denoiser_steps:
            losses.append(running / (step % 100 + 1))
            running = 0.0
    return net.eval(), losses


def _pixels(images: np.ndarray) -> np.ndarray:
    """(N, P) channel-first flattened pixels, the decoder's layout."""
    images = np.asarray(images, np.float32)
    if images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    return images.reshape(len(images), -1)


def _resolve_likelihood(cfg: PriorMapConfig, responses: np.ndarray) -> str:
    if cfg.likelihood != "auto":
        return cfg.likelihood
    return "poisson" if bool((responses >= 0).all()) else "gaussian"


def fit_linear_parts(model: PriorMapDecoder, images: np.ndarray, responses: np.ndarray,
                     cfg: PriorMapConfig, likelihood: str) -> float:
    """Ridge start and encoding model on these rows, written into ``model``'s buffers; returns
    the ridge alpha chosen by leave-one-out."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import PoissonRegressor, RidgeCV
    from sklearn.preprocessing import StandardScaler

    n = len(images)
    flat = _pixels(images).astype(np.float64)
    y = np.asarray(responses, np.float64)
    scaler = StandardScaler().fit(y)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS_FINE).fit(scaler.transform(y), flat)
    pca = PCA(n_components=min(cfg.encoder_components, n - 1, flat.shape[1]), whiten=True,
              random_state=0).fit(flat)
    a = pca.transform(flat)
    # whitened PC score = components @ (x - mean) / sqrt(var): fold it into pixel weights
    to_pix = pca.components_ / np.sqrt(pca.explained_variance_)[:, None]  # (K, P)
    m = y.shape[1]
    w, b, prec = np.zeros((m, flat.shape[1])), np.zeros(m), np.ones(m)
    if likelihood == "poisson":
        for j in range(m):
            if y[:, j].max() <= 0:
                b[j] = -10.0  # a silent unit: rate ~0 whatever the image
                continue
            glm = PoissonRegressor(alpha=cfg.encoder_alpha, max_iter=300).fit(a, y[:, j])
            w[j] = glm.coef_ @ to_pix
            b[j] = glm.intercept_ - w[j] @ pca.mean_
    else:
        enc = RidgeCV(alphas=RIDGE_ALPHAS_FINE).fit(a, y)
        w = enc.coef_ @ to_pix
        b = enc.intercept_ - w @ pca.mean_
        resid = y - enc.predict(a)
        prec = 1.0 / np.maximum(resid.var(axis=0), 1e-6)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    as_t = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=model._device())  # noqa: E731
    model.in_mean.copy_(as_t(scaler.mean_))
    model.in_scale.copy_(as_t(scale))
    model.ridge_w.copy_(as_t(ridge.coef_))
    model.ridge_b.copy_(as_t(ridge.intercept_))
    model.enc_w.copy_(as_t(w))
    model.enc_b.copy_(as_t(b))
    model.enc_precision.copy_(as_t(prec))
    model.poisson.fill_(1.0 if likelihood == "poisson" else 0.0)
    return float(ridge.alpha_)


def image_groups(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique image keys, group index per row): rows showing the same image share a group."""
    import hashlib

    keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
    return np.unique(np.array(keys), return_inverse=True)


def held_out_rows(images: np.ndarray, fraction: float, seed: int,
                  max_rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, fit rows), split by image: single-trial rows repeat their image, and a
    validation image seen in training would make the validation score optimistic. At most
    ``max_rows`` held-out rows (they are decoded once per grid point)."""
    _, group = image_groups(images)
    n_groups = int(group.max()) + 1
    order = np.random.default_rng(seed).permutation(n_groups)
    rows_per_group = len(images) / n_groups
    n_val_groups = max(1, min(int(round(fraction * n_groups)), int(max_rows // rows_per_group) or 1))
    is_val = np.isin(group, order[:n_val_groups])
    return np.flatnonzero(is_val), np.flatnonzero(~is_val)


#: the settings a trained denoiser depends on (its cache key)
DENOISER_KEYS = ("denoiser_width", "denoiser_depth", "denoiser_steps", "denoiser_batch_size",
                 "denoiser_crop", "denoiser_lr", "denoiser_sigma_max")
MU_EXTENSIONS = 3
BLEND_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)


def train_prior_map(images: np.ndarray, responses: np.ndarray, cfg: PriorMapConfig,
                    device: torch.device, seed: int = 0, extra_images: np.ndarray | None = None,
                    progress: bool | None = None,
                    denoiser_cache: Path | None = None) -> tuple[PriorMapDecoder, PriorMapHistory]:
    """Fit the decoder on (N, S, S[, C]) training images and their (N, M) responses.

    ``denoiser_cache``: a directory where denoisers are kept by a hash of their training images,
    settings and seed (the bench trains one prior per image set, not one per cell family)."""
    from neuralign.offline.generative.metrics import decoding_metrics

    t0 = time.perf_counter()
    hist = PriorMapHistory()
    channels = 1 if images.ndim == 3 else images.shape[3]
    model = PriorMapDecoder(responses.shape[1], images.shape[1], channels, cfg).to(device)
    val, fit = held_out_rows(images, cfg.val_fraction, seed)
    hist.n_val, hist.n_val_images = len(val), len(image_groups(images[val])[0])
    hist.likelihood = _resolve_likelihood(cfg, responses)

    prior_images = images[fit]
    if cfg.use_extra_images and extra_images is not None and len(extra_images):
        prior_images = np.concatenate([prior_images, extra_images])
    td = time.perf_counter()
    cached = None
    if denoiser_cache is not None:
        import hashlib
        import json

        from safetensors.torch import load_file, save_file

        h = hashlib.sha1(np.ascontiguousarray(prior_images, np.float32).tobytes())
        h.update(json.dumps([cfg.model_dump(mode="json", include=set(DENOISER_KEYS)), seed]).encode())
        cached = Path(denoiser_cache) / f"denoiser-{h.hexdigest()[:16]}.safetensors"
    if cached is not None and cached.is_file():
        model.denoiser.load_state_dict(load_file(cached))
        log.info("prior MAP: denoiser from %s", cached)
    else:
        denoiser, hist.denoiser_loss = train_denoiser(prior_images, cfg, device, seed, progress)
        model.denoiser.load_state_dict(denoiser.state_dict())
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in denoiser.state_dict().items()},
                      str(cached))
    hist.seconds_denoiser = time.perf_counter() - td

    fit_linear_parts(model, images[fit], responses[fit], cfg, hist.likelihood)
    model.mean_image.copy_(torch.as_tensor(_pixels(images[fit]).mean(0), dtype=torch.float32))
    y_val = torch.as_tensor(responses[val], dtype=torch.float32, device=device)
    truth = images[val]
    hist.val_ssim_linear = decoding_metrics(model.linear(responses[val]), truth)["ssim"]
    mean_img = model.mean_image.expand(len(val), -1)
    hist.val_ssim_mean_image = decoding_metrics(model.as_images(mean_img), truth)["ssim"]
    best, best_mu, best_blend = -np.inf, cfg.mu, 1.0

    def score(mu: float) -> float:
        nonlocal best, best_mu, best_blend
        with torch.no_grad():
            x = model.refine(y_val, model.start(y_val), mu)
        by_blend = {g: decoding_metrics(model.as_images(model.shrink(x, g)), truth)["ssim"]
                    for g in BLEND_GRID}
        g = max(by_blend, key=by_blend.get)
        hist.val_ssim_by_mu[f"{mu:g}"] = by_blend[g]
        log.info("prior MAP: mu %g -> validation SSIM %.4f at blend %g (linear %.4f, mean image "
                 "%.4f)", mu, by_blend[g], g, hist.val_ssim_linear, hist.val_ssim_mean_image)
        if by_blend[g] > best:
            best, best_mu, best_blend = by_blend[g], mu, g
        return by_blend[g]

    grid = sorted(cfg.mu_grid or [cfg.mu])
    for mu in grid:
        score(mu)
    # the likelihood's scale depends on the data (rates, units, repetitions): a best mu at the
    # grid's edge extends the grid a decade at a time (at most MU_EXTENSIONS times) that way
    for _ in range(MU_EXTENSIONS if len(grid) > 1 else 0):
        if best_mu == min(grid):
            grid.insert(0, best_mu / 10)
            score(grid[0])
        elif best_mu == max(grid):
            grid.append(best_mu * 10)
            score(grid[-1])
        else:
            break
    hist.mu, hist.blend = float(best_mu), float(best_blend)
    model.mu.fill_(hist.mu)
    model.blend.fill_(hist.blend)
    hist.ridge_alpha = fit_linear_parts(model, images, responses, cfg, hist.likelihood)
    model.mean_image.copy_(torch.as_tensor(_pixels(images).mean(0), dtype=torch.float32))
    hist.seconds = time.perf_counter() - t0
    return model.eval(), hist
