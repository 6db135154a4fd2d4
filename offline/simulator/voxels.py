"""Voxel-like fMRI mode: pRF voxels on a retinotopic map, HRF carry-over, correlated noise.

Stands in for Vim-1 (Kay et al. 2008; SMR + ICG's natural-image data), the regime where the
generative papers claim that modelling structure matters: more voxels than training images, each
voxel mixing features of a patch of the visual field with its neighbours, and noise shared across
voxels. A voxel is a Gaussian population receptive field (Dumoulin & Wandell 2008) on a jittered
retinotopic grid (denser near the centre, pRFs growing with eccentricity). It pools, compressively
(Kay et al. 2013), the local energy of quadrature Gabor channels (4 orientations x 2 wavelengths)
and a local-contrast channel, mixed by weights that vary smoothly over the map, plus a small signed
luminance term. Trials follow each other every ``trial_interval_s`` in a random order and a trial's
beta is read at the HRF peak, so it carries the previous trials' drive through the canonical
double-gamma HRF (see :func:`hrf_kernel`). Noise is spatially smooth over the map, low rank and
independent; betas are z-scored per voxel over the session, so responses are signed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neuralign._version import __version__
from neuralign.generative_config import VoxelResponseConfig, VoxelSimConfig
from neuralign.offline.simulator.retina import dead_leaves

log = logging.getLogger(__name__)

SIZE = 64
GRID = 32  # feature maps are pooled on a 2x-downsampled grid: pRFs are wider than 1.5 px
WAVELENGTHS = (8.0, 16.0)  # Gabor wavelengths in px of the 64 x 64 image
ORIENTATIONS = (0.0, 45.0, 90.0, 135.0)
HRF_PEAK_S = 5.0  # where SPM's double gamma peaks


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def hrf(t: np.ndarray) -> np.ndarray:
    """SPM's canonical double-gamma HRF (response gamma shape 6, undershoot shape 16, ratio 1/6)."""
    from scipy.stats import gamma

    t = np.asarray(t, np.float64)
    return gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0


def hrf_kernel(trial_interval_s: float, n_lags: int) -> np.ndarray:
    """Weight of the drive of the trial ``k`` back in a trial's beta: h(5 + k * ITI) / h(5).

    The beta is the BOLD sampled at the HRF peak after the trial's onset (no deconvolution), so the
    earlier trials' responses, still rising or in their undershoot, add to it with these weights.
    """
    return hrf(HRF_PEAK_S + trial_interval_s * np.arange(n_lags)) / hrf(np.array(HRF_PEAK_S))


@dataclass
class VoxelModel:
    """The simulated voxels on the retinotopic map and their channel weights."""

    centers: np.ndarray  # (M, 2) pRF centres in px of the 64 x 64 image (row, col)
    sigma: np.ndarray  # (M,) pRF SD in px
    prfs: np.ndarray  # (M, GRID * GRID) pooling weights on the downsampled grid, rows sum to 1
    channel_weights: np.ndarray  # (M, C) energy / contrast channel mix, rows sum to 1
    luminance_weight: np.ndarray  # (M,) signed
    gain: np.ndarray  # (M,) signal SD relative to a single trial's noise budget
    noise_smooth: np.ndarray  # (M, GRID * GRID) unit-norm maps: smooth noise = white @ this.T
    noise_loadings: np.ndarray  # (M, K) unit-norm rows: the low-rank shared noise


def _grid_coords() -> np.ndarray:
    """(GRID * GRID, 2) centres of the downsampled pixels in 64-px coordinates."""
    g = (np.arange(GRID) + 0.5) * (SIZE / GRID) - 0.5
    gy, gx = np.meshgrid(g, g, indexing="ij")
    return np.stack([gy.ravel(), gx.ravel()], 1)


def _gauss_maps(centers: np.ndarray, sigma: np.ndarray | float, coords: np.ndarray) -> np.ndarray:
    d2 = ((centers[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(centers),))
    return np.exp(-d2 / (2 * sigma[:, None] ** 2))


def make_voxels(n_voxels: int, cfg: VoxelResponseConfig, rng: np.random.Generator) -> VoxelModel:
    """A jittered retinotopic grid of pRF voxels with smoothly varying channel mixes."""
    side = int(np.ceil(np.sqrt(n_voxels)))
    u = (np.arange(side) + 0.5) / side
    uy, ux = np.meshgrid(u, u, indexing="ij")
    pos = np.stack([uy.ravel(), ux.ravel()], 1)[:n_voxels] * 2 - 1  # [-1, 1]^2
    pos = pos + rng.normal(0, 0.3 / side, pos.shape)
    # Cortical magnification: a radial warp r -> r ** p (p > 1) packs more voxels near the centre.
    r = np.linalg.norm(pos, axis=1, keepdims=True)
    pos = pos * np.where(r > 0, r ** (cfg.cortical_magnification - 1), 0.0)
    c = (SIZE - 1) / 2
    centers = c + 0.45 * SIZE * pos
    ecc = np.linalg.norm(centers - c, axis=1)
    sigma = (cfg.prf_sigma_fovea + cfg.prf_sigma_slope * ecc) * np.exp(rng.normal(0, 0.1, n_voxels))
    coords = _grid_coords()
    prfs = _gauss_maps(centers, sigma, coords)
    prfs /= prfs.sum(1, keepdims=True)
    # Channel mix and luminance weight: Gaussian random fields over the visual field, sampled at
    # each pRF centre, so neighbouring voxels mix the channels alike.
    n_ch = len(WAVELENGTHS) * len(ORIENTATIONS) + 1
    smooth = _gauss_maps(centers, cfg.map_smoothness_px, coords)
    smooth /= np.linalg.norm(smooth, axis=1, keepdims=True)
    fields = smooth @ rng.normal(size=(len(coords), n_ch + 1))  # unit variance per voxel
    logits = cfg.channel_selectivity * fields[:, :n_ch]
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    lum = cfg.luminance_weight * fields[:, n_ch]
    gain = rng.uniform(cfg.gain_min, 1.0, n_voxels)
    noise_smooth = _gauss_maps(centers, cfg.noise_length_px, coords)
    noise_smooth /= np.linalg.norm(noise_smooth, axis=1, keepdims=True)
    loadings = rng.normal(size=(n_voxels, cfg.noise_factors))
    loadings /= np.linalg.norm(loadings, axis=1, keepdims=True)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return VoxelModel(centers=centers, sigma=sigma, prfs=f32(prfs), channel_weights=f32(weights),
                      luminance_weight=f32(lum), gain=gain, noise_smooth=f32(noise_smooth),
                      noise_loadings=loadings)


def _gabor_bank(size: int = SIZE) -> np.ndarray:
    """(C, size, size) Fourier transforms of complex (quadrature) Gabors, ~1 octave bandwidth."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - size // 2
    bank = []
    for lam in WAVELENGTHS:
        s = 0.56 * lam  # 1-octave bandwidth
        env = np.exp(-(xx ** 2 + yy ** 2) / (2 * s * s))
        for theta in np.deg2rad(ORIENTATIONS):
            carrier = np.exp(2j * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / lam)
            g = env * carrier
            g -= env * (g.sum() / env.sum())  # no response to uniform luminance
            g /= np.abs(g).sum()
            bank.append(np.fft.fft2(np.fft.ifftshift(g)))
    return np.asarray(bank)


def channel_maps(images: np.ndarray) -> np.ndarray:
    """(N, C + 1, GRID * GRID): Gabor energies, local RMS contrast, then luminance (last).

    Energies are phase-invariant amplitudes of quadrature pairs; luminance is the image minus mid
    grey. Everything is 2x2-averaged to the pooling grid.
    """
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, np.float32)
    n = len(images)
    spec = np.fft.fft2(images)
    bank = _gabor_bank(images.shape[1])
    energy = np.abs(np.fft.ifft2(spec[:, None] * bank[None]))  # (N, C, H, W)
    local = images - gaussian_filter(images, (0, 2.0, 2.0), mode="reflect")
    contrast = np.sqrt(gaussian_filter(local ** 2, (0, 2.0, 2.0), mode="reflect"))
    maps = np.concatenate([energy, contrast[:, None], (images - 0.5)[:, None]], 1)
    f = images.shape[1] // GRID
    maps = maps.reshape(n, maps.shape[1], GRID, f, GRID, f).mean((3, 5))
    return maps.reshape(n, maps.shape[1], GRID * GRID).astype(np.float32)


def voxel_drive(model: VoxelModel, images: np.ndarray, cfg: VoxelResponseConfig) -> np.ndarray:
    """(N, M) noise-free drive: unit SD over all voxels and images, zero mean per voxel.

    Channels are standardised over images and voxels (not per voxel), so a voxel whose patch of the
    visual field rarely changes (the digits' empty border) has a weak signal, as in real data.
    """
    maps = channel_maps(images)
    pooled = np.einsum("ncp,mp->ncm", maps, model.prfs)  # (N, C + 1, M)
    energy = np.maximum(pooled[:, :-1], 0.0) ** cfg.compressive_exponent
    lum = pooled[:, -1]

    energy = energy - energy.mean(axis=0, keepdims=True)
    energy /= energy.std(axis=(0, 2), keepdims=True) + 1e-9  # per channel
    lum = lum - lum.mean(axis=0, keepdims=True)
    lum /= lum.std() + 1e-9
    drive = (energy * model.channel_weights.T[None]).sum(1) + model.luminance_weight * lum
    drive -= drive.mean(axis=0, keepdims=True)
    return (drive / (drive.std() + 1e-9)).astype(np.float32)


@dataclass
class VoxelResponses:
    """Betas of a session: repetition-averaged training, per-repetition test, and the design."""

    train: np.ndarray  # (N_train, M), averaged over repetitions
    test: np.ndarray  # (N_test, R_test, M)
    drive: np.ndarray  # (N_train + N_test, M) noise-free drive, training images first
    trial_image: np.ndarray  # (T,) image presented at each trial, indexing ``drive``'s rows
    test_trial_pos: np.ndarray  # (N_test, R_test) position of each test repetition in the session
    kernel: np.ndarray  # the HRF kernel over trial lags


def simulate_session(model: VoxelModel, train_images: np.ndarray, test_images: np.ndarray,
                     train_reps: int, test_reps: int, cfg: VoxelResponseConfig,
                     rng_order: np.random.Generator, rng_noise: np.random.Generator) -> VoxelResponses:
    """Present every repetition in one random order, blur by the HRF, add noise, z-score."""
    n_tr, n_te = len(train_images), len(test_images)
    drive = voxel_drive(model, np.concatenate([train_images, test_images]), cfg)
    signal = drive * model.gain.astype(np.float32)
    trials = np.concatenate([np.repeat(np.arange(n_tr), train_reps),
                             np.repeat(np.arange(n_tr, n_tr + n_te), test_reps)])
    trial_image = trials[rng_order.permutation(len(trials))]
    n_trials = len(trial_image)
    kernel = hrf_kernel(cfg.trial_interval_s, cfg.hrf_lags)
    per_trial = signal[trial_image]
    bold = np.zeros((n_trials, signal.shape[1]), np.float64)
    for k, h in enumerate(kernel):  # trials before the first one are grey screen (drive 0)
        bold[k:] += h * per_trial[: n_trials - k]
    frac_s, frac_g = cfg.noise_smooth_fraction, cfg.noise_shared_fraction
    white = rng_noise.normal(size=(n_trials, model.noise_smooth.shape[1])).astype(np.float32)
    scores = rng_noise.normal(size=(n_trials, model.noise_loadings.shape[1]))
    indep = rng_noise.normal(size=(n_trials, signal.shape[1]))
    noise = (np.sqrt(frac_s) * (white @ model.noise_smooth.T) + np.sqrt(frac_g) * (scores @ model.noise_loadings.T)
             + np.sqrt(max(0.0, 1 - frac_s - frac_g)) * indep)
    beta = bold + cfg.noise_sd * noise
    beta = (beta - beta.mean(0)) / (beta.std(0) + 1e-9)  # z-scored per voxel over the session
    pos = {}
    for t, img in enumerate(trial_image):
        pos.setdefault(int(img), []).append(t)
    train = np.stack([beta[pos[i]].mean(0) for i in range(n_tr)])
    test_pos = np.array([pos[n_tr + i] for i in range(n_te)])
    return VoxelResponses(train=train.astype(np.float32), test=beta[test_pos].astype(np.float32),
                          drive=drive, trial_image=trial_image, test_trial_pos=test_pos, kernel=kernel)


def paired_arrays(train_images: np.ndarray, test_images: np.ndarray, model: VoxelModel,
                  resp: VoxelResponses) -> dict[str, np.ndarray]:
    """The ``paired.npz`` arrays plus the ground truth an analysis may check against."""
    return {
        "train_images": to_u8(train_images), "test_images": to_u8(test_images),
        "train_responses": resp.train, "test_responses": resp.test,
        "unit_names": np.array([f"vox{k:04d}" for k in range(len(model.gain))]),
        # Ground truth (ignored by the loaders): noise-free drive of the training then test
        # images, the session's presentation order (rows of ``true_drive``), where each test
        # repetition sat in it, and the voxels' pRFs.
        "true_drive": resp.drive, "trial_image": resp.trial_image,
        "test_trial_pos": resp.test_trial_pos, "hrf_kernel": resp.kernel,
        "voxel_centers": model.centers.astype(np.float32), "voxel_sigma": model.sigma.astype(np.float32),
    }


def model_description(cfg: VoxelResponseConfig) -> str:
    k = ", ".join(f"{v:.2f}" for v in hrf_kernel(cfg.trial_interval_s, cfg.hrf_lags))
    return ("Gaussian pRF voxels on a retinotopic map pooling compressive Gabor energy (4 orientations x "
            f"{len(WAVELENGTHS)} wavelengths) + local contrast with smoothly mixed weights + signed "
            f"luminance; HRF carry-over over trial lags [{k}] (beta at the double-gamma peak, trials "
            f"every {cfg.trial_interval_s:g} s, random order); noise smooth over the map + rank-"
            f"{cfg.noise_factors} + independent; betas z-scored per voxel")


@dataclass
class VoxelSimulation:
    out_dir: Path
    paired_file: Path
    n_voxels: int
    n_train: int
    n_test: int
    n_extra: int
    seed: int
    regime: str = "voxels"
    elapsed_s: float = 0.0

    def summary(self) -> str:
        return (f"  {self.regime}: {self.n_voxels} voxels, {self.n_train} training / {self.n_test} test "
                f"images (+{self.n_extra} unpaired), seed {self.seed}\n  paired data: {self.paired_file}")


def write_simulation(out_dir: Path, arrays: dict[str, np.ndarray], result: VoxelSimulation,
                     cfg_dump: dict, response: VoxelResponseConfig, images: str, t0: float) -> None:
    """``paired.npz`` + ``simulation.json`` (shared by the voxel and digits regimes)."""
    np.savez_compressed(result.paired_file, **arrays)
    result.elapsed_s = time.perf_counter() - t0
    manifest = {"neuralign_version": __version__, "modality": result.regime, "seed": result.seed,
                result.regime: cfg_dump, "files": {"paired": result.paired_file.name},
                "model": f"{images}; {model_description(response)}",
                "hrf_kernel": [round(float(v), 4) for v in hrf_kernel(response.trial_interval_s,
                                                                      response.hrf_lags)],
                **{k: v for k, v in asdict(result).items() if k not in ("out_dir", "paired_file")}}
    (out_dir / "simulation.json").write_text(json.dumps(manifest, indent=2))
    log.info("%s simulation written to %s in %.1f s", result.regime, out_dir, result.elapsed_s)


def simulate_voxels(cfg: VoxelSimConfig, out_dir: Path, seed: int = 0) -> VoxelSimulation:
    """Write ``paired.npz`` (uint8 dead-leaves images, z-scored betas) + ``simulation.json``."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_img, rng_vox, rng_order, rng_noise, rng_extra = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    images = dead_leaves(cfg.n_train + cfg.n_test, rng_img)
    train_images, test_images = images[: cfg.n_train], images[cfg.n_train:]
    model = make_voxels(cfg.n_voxels, cfg.response, rng_vox)
    resp = simulate_session(model, train_images, test_images, cfg.train_repetitions,
                            cfg.test_repetitions, cfg.response, rng_order, rng_noise)
    arrays = paired_arrays(train_images, test_images, model, resp)
    if cfg.n_extra_images:
        arrays["extra_images"] = to_u8(dead_leaves(cfg.n_extra_images, rng_extra))
    result = VoxelSimulation(out_dir=out_dir.resolve(), paired_file=(out_dir / "paired.npz").resolve(),
                             n_voxels=cfg.n_voxels, n_train=cfg.n_train, n_test=cfg.n_test,
                             n_extra=cfg.n_extra_images, seed=seed, regime="voxels")
    write_simulation(out_dir, arrays, result, cfg.model_dump(mode="json"), cfg.response,
                     "dead-leaves images", t0)
    return result
