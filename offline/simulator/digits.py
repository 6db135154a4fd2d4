"""Small-n '69'-digits fMRI mode: synthetic handwritten 6s and 9s seen by the voxel model.

Stands in for the handwritten-digits fMRI set of van Gerven et al. (100 sixes and nines, ~3000
voxels; DGMM's and FLIG's small-sample benchmark): far fewer images than voxels and two classes
of simple shapes, where a decoder's prior on images matters more than its response model. Glyphs
are drawn with PIL as pen strokes (a loop and a tail; a 9 is a 6 turned half round with a
straighter tail), bright on dark as in ``digit69_28x28.mat``, with random pen width, slant, scale,
rotation, position and a smooth elastic displacement, at 64 x 64. Responses come from the same
voxel model as the ``voxels`` regime (:mod:`neuralign.offline.simulator.voxels`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from neuralign.generative_config import DigitsSimConfig
from neuralign.offline.simulator.voxels import (
    SIZE,
    VoxelSimulation,
    make_voxels,
    paired_arrays,
    simulate_session,
    to_u8,
    write_simulation,
)

SUPERSAMPLE = 4  # strokes are drawn at 4x and box-filtered down: anti-aliased edges


def _six_outline(rng: np.random.Generator, tail_curl: float) -> np.ndarray:
    """(P, 2) points (x, y; y down; unit square) of one pen stroke tracing a 6."""
    cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.66 + rng.uniform(-0.03, 0.03)
    rx, ry = rng.uniform(0.16, 0.24), rng.uniform(0.14, 0.2)
    # Tail: a quadratic Bezier from the top down to the loop's left side, bowed out to the left.
    p0 = np.array([cx + rng.uniform(0.0, 0.18), 0.1 + rng.uniform(0.0, 0.06)])
    p2 = np.array([cx - rx, cy])
    p1 = np.array([cx - rx - tail_curl * rng.uniform(0.05, 0.15), cy - rng.uniform(0.25, 0.4)])
    s = np.linspace(0, 1, 24)[:, None]
    tail = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s ** 2 * p2
    # Loop: from the left point down, round the bottom, up the right, over the top, (nearly) closed.
    theta = np.linspace(np.pi, np.pi - 2 * np.pi * rng.uniform(0.85, 1.02), 48)
    loop = np.stack([cx + rx * np.cos(theta), cy + ry * np.sin(theta)], 1)
    return np.concatenate([tail, loop[1:]])


def draw_digit(digit: int, rng: np.random.Generator, cfg: DigitsSimConfig, size: int = SIZE) -> np.ndarray:
    """(size, size) float32 in [0, 1]: one handwritten-looking 6 or 9, bright on dark."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import gaussian_filter, map_coordinates

    if digit not in (6, 9):
        raise ValueError(f"only 6 and 9 are drawn, not {digit}")
    pts = _six_outline(rng, tail_curl=1.0 if digit == 6 else rng.uniform(-0.3, 0.4))
    if digit == 9:
        pts = 1.0 - pts  # a 9 is a 6 turned half round
    pts = pts - 0.5
    height = 44.0 * rng.uniform(*cfg.scale) / 0.8  # the stroke spans ~0.8 of the unit height
    pts = pts * height * np.array([rng.uniform(0.85, 1.1), 1.0])
    pts[:, 0] -= rng.uniform(-cfg.max_slant, cfg.max_slant) * pts[:, 1]  # slant: shear x by y
    a = np.deg2rad(rng.uniform(-8, 8))
    pts = pts @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    pts = pts + size / 2 + rng.uniform(-cfg.max_shift, cfg.max_shift, 2)
    width = rng.uniform(*cfg.stroke_width) * SUPERSAMPLE
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    xy = [tuple(p) for p in pts * SUPERSAMPLE]
    draw.line(xy, fill=255, width=max(1, int(round(width))), joint="curve")
    for x, y in (xy[0], xy[-1]):  # round pen ends
        draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    img = np.asarray(big.resize((size, size), Image.Resampling.BOX), np.float32) / 255.0
    if cfg.elastic_px > 0:
        # A smooth random displacement (Simard et al. 2003): wobbly, uneven handwriting.
        field = gaussian_filter(rng.normal(size=(2, size, size)), (0, 6.0, 6.0), mode="wrap")
        field *= cfg.elastic_px / (field.std(axis=(1, 2), keepdims=True) + 1e-9)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        img = map_coordinates(img, [yy + field[0], xx + field[1]], order=1, mode="constant")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def draw_digits(n: int, rng: np.random.Generator, cfg: DigitsSimConfig) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits, half 6s and half 9s in a random order: (images (n, 64, 64), labels (n,))."""
    labels = rng.permutation(np.where(np.arange(n) % 2 == 0, 6, 9))
    images = np.stack([draw_digit(int(d), rng, cfg) for d in labels]) if n else np.zeros((0, SIZE, SIZE))
    return images.astype(np.float32), labels.astype(np.int64)


def simulate_digits(cfg: DigitsSimConfig, out_dir: Path, seed: int = 0) -> VoxelSimulation:
    """Write ``paired.npz`` (uint8 digits, z-scored voxel betas, labels) + ``simulation.json``."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_img, rng_vox, rng_order, rng_noise, rng_extra = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    images, labels = draw_digits(cfg.n_train + cfg.n_test, rng_img, cfg)
    train_images, test_images = images[: cfg.n_train], images[cfg.n_train:]
    model = make_voxels(cfg.n_voxels, cfg.response, rng_vox)
    resp = simulate_session(model, train_images, test_images, cfg.train_repetitions,
                            cfg.test_repetitions, cfg.response, rng_order, rng_noise)
    arrays = paired_arrays(train_images, test_images, model, resp)
    arrays["train_labels"], arrays["test_labels"] = labels[: cfg.n_train], labels[cfg.n_train:]
    if cfg.n_extra_images:
        extra, extra_labels = draw_digits(cfg.n_extra_images, rng_extra, cfg)
        arrays["extra_images"], arrays["extra_labels"] = to_u8(extra), extra_labels
    result = VoxelSimulation(out_dir=out_dir.resolve(), paired_file=(out_dir / "paired.npz").resolve(),
                             n_voxels=cfg.n_voxels, n_train=cfg.n_train, n_test=cfg.n_test,
                             n_extra=cfg.n_extra_images, seed=seed, regime="digits")
    write_simulation(out_dir, arrays, result, cfg.model_dump(mode="json"), cfg.response,
                     "synthetic handwritten 6 and 9 glyphs (PIL strokes, slant, elastic distortion)", t0)
    return result
