"""Retina-like spiking mode: LNP ganglion cells on 64 x 64 natural-looking grey images.

Stands in for FLIG's salamander RGC data (Natural Movie-I: 90 cells, 1800 frames, 64 x 64, 10 %
hold-out, spike counts per 1/30 s frame averaged over trials). Images follow the dead-leaves model
(occluding discs with power-law sizes: the 1/f spectrum and sharp edges of natural scenes) under a
smooth 1/f^2 illumination field. Each cell is centre-surround: a difference-of-Gaussians filter
(surround 2x wider, 0.8 of the centre's weight) on a jittered mosaic, ON or OFF, followed by an
exponential nonlinearity and Poisson spiking. The cells are the textbook LNP model by default
(``cell_model: lnp``), so the LNP baseline is the true model class on that data. Real ganglion
cells integrate natural scenes nonlinearly (rectified bipolar subunits in the centre), which is
why LNP predicts them poorly; ``cell_model: subunit`` simulates that LN-LN cell, so a model can be
judged on both families rather than on the one its baseline was built for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from neuralign._version import __version__
from neuralign.generative_config import RetinaSimConfig

log = logging.getLogger(__name__)

SIZE = 64


@dataclass
class RetinaCells:
    """The simulated mosaic: DoG filters (M, 64, 64), polarity, gain and offset per cell."""

    filters: np.ndarray
    centers: np.ndarray  # (M, 2) pixel coordinates (row, col)
    sigma_center: np.ndarray  # (M,)
    polarity: np.ndarray  # +1 ON, -1 OFF
    offset: np.ndarray  # log baseline rate per bin
    # Subunit model only: (J, 64, 64) subunit filters, (M, J) pooling weights, (M, 64, 64) surrounds.
    subunits: np.ndarray | None = None
    pooling: np.ndarray | None = None
    surrounds: np.ndarray | None = None


def dead_leaves(n: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """(n, size, size) float32 in [0, 1]: occluding discs + smooth illumination."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size), np.float32)
    freqs = np.fft.fftfreq(size)
    f = np.sqrt(freqs[:, None] ** 2 + freqs[None, :] ** 2)
    f[0, 0] = 1.0
    for i in range(n):
        img = np.full((size, size), rng.uniform(0.2, 0.8), np.float32)
        # Radii from a power law r^-3 between 2 and 24 px (scale invariance, Lee et al. 2001);
        # later discs occlude earlier ones.
        n_discs = int(rng.integers(25, 60))
        u = rng.uniform(size=n_discs)
        rmin, rmax = 2.0, 24.0
        radii = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5
        for r in radii:
            cy, cx = rng.uniform(-4, size + 4, 2)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[mask] = rng.beta(2, 2)
        spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / f**2
        illum = np.real(np.fft.ifft2(spectrum))
        illum = 0.25 * illum / (np.abs(illum).max() + 1e-9)
        img = img * (1.0 + illum.astype(np.float32))
        out[i] = img
    out -= out.min(axis=(1, 2), keepdims=True)
    out /= out.max(axis=(1, 2), keepdims=True) + 1e-9
    return (0.05 + 0.9 * out).astype(np.float32)


def make_cells(n_cells: int, mean_rate: float, rng: np.random.Generator, size: int = SIZE) -> RetinaCells:
    """A jittered mosaic of ON/OFF DoG cells covering the central 80 % of the image."""
    side = int(np.ceil(np.sqrt(n_cells)))
    grid = (np.arange(side) + 0.5) / side
    cy, cx = np.meshgrid(grid, grid, indexing="ij")
    centers = np.stack([cy.ravel(), cx.ravel()], 1)[:n_cells]
    centers = size * (0.1 + 0.8 * centers) + rng.normal(0, 1.0, (n_cells, 2))
    sigma_c = rng.uniform(2.0, 4.0, n_cells)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    filters = np.empty((n_cells, size, size), np.float32)
    for k in range(n_cells):
        d2 = (yy - centers[k, 0]) ** 2 + (xx - centers[k, 1]) ** 2
        c = np.exp(-d2 / (2 * sigma_c[k] ** 2))
        s = np.exp(-d2 / (2 * (2 * sigma_c[k]) ** 2))
        dog = c / c.sum() - 0.8 * s / s.sum()
        filters[k] = dog / np.linalg.norm(dog)
    polarity = np.where(rng.uniform(size=n_cells) < 0.5, 1.0, -1.0)
    return RetinaCells(filters=filters, centers=centers, sigma_center=sigma_c, polarity=polarity,
                       offset=np.full(n_cells, np.log(mean_rate)))


def add_subunits(cells: RetinaCells, size: int = SIZE) -> RetinaCells:
    """Give each cell a centre of rectified subunits (bipolar-cell inputs, Gaussian sigma 1 px on a
    1.5 px lattice within 2 centre sigmas, weighted by the centre Gaussian) and a linear surround of
    the same DoG shape as the LNP cell's."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    sub_filters, rows, cols, weights, surrounds = [], [], [], [], []
    for k, ((cy, cx), sc) in enumerate(zip(cells.centers, cells.sigma_center)):
        offs = np.arange(-2 * sc, 2 * sc + 1e-9, 1.5)
        for dy in offs:
            for dx in offs:
                if dy * dy + dx * dx > (2 * sc) ** 2:
                    continue
                g = np.exp(-((yy - cy - dy) ** 2 + (xx - cx - dx) ** 2) / 2.0)
                sub_filters.append(g / g.sum())
                rows.append(k)
                cols.append(len(sub_filters) - 1)
                weights.append(np.exp(-(dy * dy + dx * dx) / (2 * sc * sc)))
        s = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (2 * sc) ** 2))
        surrounds.append(s / s.sum())
    pooling = np.zeros((len(cells.centers), len(sub_filters)), np.float32)
    pooling[rows, cols] = weights
    pooling /= pooling.sum(axis=1, keepdims=True)
    cells.subunits = np.asarray(sub_filters, np.float32)
    cells.pooling = pooling
    cells.surrounds = np.asarray(surrounds, np.float32)
    return cells


def rates(cells: RetinaCells, images: np.ndarray, gain: float) -> np.ndarray:
    """Expected spike count per bin (N, M): exp(offset + gain * polarity * <DoG, image>)."""
    flat = images.reshape(len(images), -1)
    if cells.subunits is None:
        drive = cells.polarity * (flat @ cells.filters.reshape(len(cells.filters), -1).T)
    else:
        # Subunit contrast against the mean grey level, rectified per cell polarity, pooled;
        # minus 0.8 x the cell's linear surround (the LNP cell's DoG balance).
        u = (flat - 0.5) @ cells.subunits.reshape(len(cells.subunits), -1).T  # (N, J)
        on, off = np.maximum(u, 0.0) @ cells.pooling.T, np.maximum(-u, 0.0) @ cells.pooling.T
        surround = (flat - 0.5) @ cells.surrounds.reshape(len(cells.surrounds), -1).T
        drive = np.where(cells.polarity > 0, on, off) - 0.8 * cells.polarity * surround
        drive = drive - drive.mean(axis=0)  # rectified drive is positive: keep the LNP mean rate
    z = np.minimum(drive / (drive.std(axis=0, keepdims=True) + 1e-9), 4.0)  # firing saturates
    return np.exp(cells.offset + gain * z).astype(np.float32)


@dataclass
class RetinaSimulation:
    out_dir: Path
    paired_file: Path
    n_cells: int
    n_train: int
    n_test: int
    n_extra: int
    seed: int
    cell_model: str = "lnp"
    elapsed_s: float = 0.0

    def summary(self) -> str:
        return (f"  retina: {self.n_cells} {self.cell_model} cells, {self.n_train} training / {self.n_test} test "
                f"images (+{self.n_extra} unpaired), seed {self.seed}\n  paired data: {self.paired_file}")


def simulate_retina(cfg: RetinaSimConfig, out_dir: Path, seed: int = 0) -> RetinaSimulation:
    """Write ``paired.npz`` (uint8 images, spike counts with repetitions) + ``simulation.json``."""
    import time

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_img, rng_cells, rng_split, rng_spk, rng_extra = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    images = dead_leaves(cfg.n_images, rng_img)
    cells = make_cells(cfg.n_cells, cfg.mean_rate, rng_cells)
    if cfg.cell_model == "subunit":
        cells = add_subunits(cells)
    # gain 0.7: a 1-SD drive moves the rate by a factor of 2 - spiking, not saturating.
    lam = rates(cells, images, gain=0.7)
    n_test = max(1, int(round(cfg.test_fraction * cfg.n_images)))
    order = rng_split.permutation(cfg.n_images)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    train_counts = rng_spk.poisson(lam[train, None, :], (len(train), cfg.train_repetitions, cfg.n_cells))
    test_counts = rng_spk.poisson(lam[test, None, :], (len(test), cfg.test_repetitions, cfg.n_cells))
    extra = dead_leaves(cfg.n_extra_images, rng_extra) if cfg.n_extra_images else None
    to_u8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    arrays = {
        "train_images": to_u8(images[train]), "test_images": to_u8(images[test]),
        # Spike counts per 1/30 s frame averaged over trials, as the RGC data FLIG uses.
        "train_responses": train_counts.mean(axis=1).astype(np.float32),
        "test_responses": test_counts.astype(np.float32),
        "unit_names": np.array([f"rgc{k:03d}{'on' if p > 0 else 'off'}"
                                for k, p in enumerate(cells.polarity)]),
        "true_rates_test": lam[test],
    }
    if extra is not None:
        arrays["extra_images"] = to_u8(extra)
    paired = out_dir / "paired.npz"
    np.savez_compressed(paired, **arrays)
    result = RetinaSimulation(out_dir=out_dir.resolve(), paired_file=paired.resolve(),
                              n_cells=cfg.n_cells, n_train=len(train), n_test=len(test),
                              n_extra=0 if extra is None else len(extra), seed=seed,
                              cell_model=cfg.cell_model)
    result.elapsed_s = time.perf_counter() - t0
    manifest = {"neuralign_version": __version__, "modality": "retina", "seed": seed,
                "retina": cfg.model_dump(mode="json"), "files": {"paired": paired.name},
                "model": f"dead-leaves images; {cfg.cell_model} centre-surround ON/OFF cells; exp "
                         "nonlinearity; Poisson counts", **{k: v for k, v in asdict(result).items()
                                              if k not in ("out_dir", "paired_file")}}
    (out_dir / "simulation.json").write_text(json.dumps(manifest, indent=2))
    log.info("retina simulation written to %s in %.1f s", out_dir, result.elapsed_s)
    return result
