"""Per-image reconstruction scores and hierarchical bootstrap CIs for an honest comparison.

A set mean (``metrics.decoding_metrics``) hides how consistently one decoder beats another and
says nothing about what generative decoders claim over a blurry linear baseline: sharper,
more diverse, more identifiable reconstructions. This module keeps the scores per image, so a
model and a baseline can be compared image by image (paired differences), and summarises them
over fresh training seeds with a seed-then-image bootstrap.

- SSIM and pixel PCC per image, computed exactly as ``decoding_metrics`` does (its means agree).
- Two-way identification (pixel and feature space): is the reconstruction closer to its own
  image than to another test image? Chance is 0.5 whatever the images, so a decoder that
  returns the mean training image scores 0.5 even when its SSIM / PCC look respectable.
- Sharpness and diversity (set level): a mean-image or regression-to-the-mean decoder scores
  low on both; 1 means as sharp / as varied as the true images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neuralign.offline.generative.correlation import pearson_rows, zscore_rows

FeatureFn = Callable[[np.ndarray], np.ndarray]
TIE_TOL = 1e-12  # correlations this close count as a tie (half a win)


@dataclass
class ImageScores:
    """Per-image scores (each (n,)) and the two set-level ratios of one decoder on one test set."""

    ssim: np.ndarray
    pcc: np.ndarray
    two_way_pixel: np.ndarray
    two_way_feature: np.ndarray
    sharpness: float  # mean gradient magnitude, reconstructions / truth (1 = as sharp; > 1: noise)
    diversity: float  # mean pairwise distance, reconstructions / true images (0 = all identical)

    def mean(self) -> dict[str, float]:
        """Set-level summary (for a report; comparisons should use the per-image arrays)."""
        return {"ssim": float(self.ssim.mean()), "pcc": float(self.pcc.mean()),
                "two_way_pixel": float(self.two_way_pixel.mean()),
                "two_way_feature": float(self.two_way_feature.mean()),
                "sharpness": float(self.sharpness), "diversity": float(self.diversity),
                "n_images": float(len(self.ssim))}


@dataclass
class BootstrapCI:
    """Mean and 95 % percentile CI over ``n_seeds`` seeds and ``n_images`` per-image values."""

    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_images: int  # all per-image values over all seeds

    def excludes_zero(self) -> bool:
        return bool(self.lo > 0 or self.hi < 0)


def _check_pair(decoded: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    decoded, true = np.asarray(decoded, np.float64), np.asarray(true, np.float64)
    if decoded.shape != true.shape:
        raise ValueError(f"decoded {decoded.shape} and true {true.shape} images differ in shape")
    if len(true) < 2:
        raise ValueError("need at least 2 test images")
    return decoded, true


def two_way_identification(decoded: np.ndarray, true: np.ndarray,
                           features: FeatureFn | None = None) -> np.ndarray:
    """Per test image i, the fraction of other test images j with
    corr(decoded_i, true_i) > corr(decoded_i, true_j); ties count half, so chance is 0.5.

    ``features`` maps (n, S, S[, 3]) images to (n, D) vectors; None compares pixels.
    """
    decoded, true = _check_pair(decoded, true)
    n = len(true)
    if features is None:
        d, t = decoded.reshape(n, -1), true.reshape(n, -1)
    else:
        d = np.asarray(features(decoded), np.float64).reshape(n, -1)
        t = np.asarray(features(true), np.float64).reshape(n, -1)
    corr = zscore_rows(d) @ zscore_rows(t).T  # corr[i, j] = corr(decoded_i, true_j)
    own = np.diag(corr)[:, None]
    wins = (own - corr > TIE_TOL).sum(axis=1)
    ties = (np.abs(own - corr) <= TIE_TOL).sum(axis=1) - 1  # the diagonal ties with itself
    return (wins + 0.5 * ties) / (n - 1)


def feature_space() -> FeatureFn:
    """The builtin weight-free encoder of ``offline.image_features`` (Gabor energy on a grid,
    coarse luminance layout, local mean / contrast): fixed, deterministic and needs no fitting,
    so feature-space scores are comparable across runs and machines. Grey images are repeated
    into three channels; images of another size are resized to 64 x 64 by the encoder."""
    from neuralign.offline.image_features import BuiltinImageEncoder

    encoder = BuiltinImageEncoder()

    def encode(images: np.ndarray) -> np.ndarray:
        images = np.clip(np.asarray(images, np.float64), 0.0, 1.0)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        return np.stack([encoder.encode_array(img) for img in images]).astype(np.float64)

    return encode


def _gradient_energy(images: np.ndarray) -> float:
    """Mean gradient magnitude over pixels (and channels) of (n, S, S[, 3]) images."""
    gy, gx = np.gradient(images, axis=(1, 2))
    return float(np.sqrt(gy * gy + gx * gx).mean())


def _mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs; exactly 0 when every image is the same."""
    flat = images.reshape(len(images), -1)
    flat = flat - flat.mean(axis=0)  # centring keeps identical rows at exactly 0
    sq = (flat * flat).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T, 0.0)
    iu = np.triu_indices(len(images), k=1)
    return float(np.sqrt(d2[iu]).mean())


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def score_images(decoded: np.ndarray, true: np.ndarray,
                 features: FeatureFn | None = None) -> ImageScores:
    """All per-image and set-level scores of ``decoded`` against ``true`` (both in [0, 1]);
    ``features`` defaults to :func:`feature_space`."""
    from skimage.metrics import structural_similarity

    decoded, true = _check_pair(decoded, true)
    n = len(true)
    rgb = true.ndim == 4
    # Exactly metrics.decoding_metrics' SSIM and PCC, so the means agree with its numbers.
    ssim = np.array([structural_similarity(t, d, data_range=1.0, channel_axis=-1 if rgb else None)
                     for t, d in zip(true, decoded)])
    pcc = pearson_rows(decoded.reshape(n, -1), true.reshape(n, -1))
    return ImageScores(
        ssim=ssim, pcc=pcc,
        two_way_pixel=two_way_identification(decoded, true),
        two_way_feature=two_way_identification(decoded, true, features or feature_space()),
        sharpness=_ratio(_gradient_energy(decoded), _gradient_energy(true)),
        diversity=_ratio(_mean_pairwise_distance(decoded), _mean_pairwise_distance(true)),
    )


def _hierarchical_bootstrap(values_per_seed: list[np.ndarray], n_boot: int,
                            seed: int) -> BootstrapCI:
    """Resample seeds with replacement, then images within each drawn seed (each draw of a seed
    gets its own image resample); the statistic is the mean over seeds of the per-seed mean, so
    every training seed weighs the same whatever its test-set size."""
    values = [np.asarray(v, np.float64).ravel() for v in values_per_seed]
    if not values or any(len(v) == 0 for v in values):
        raise ValueError("need at least one seed with at least one image")
    if any(not np.isfinite(v).all() for v in values):
        raise ValueError("per-image values contain NaN or inf")
    rng = np.random.default_rng(seed)
    n_seeds = len(values)
    picks = rng.integers(0, n_seeds, (n_boot, n_seeds))  # seed drawn into each slot of each draw
    slot_means = np.empty((n_boot, n_seeds))
    for s, v in enumerate(values):
        where = np.nonzero(picks == s)
        count = len(where[0])
        means = np.empty(count)
        block = max(1, 2_000_000 // len(v))  # bound the index array's memory
        for start in range(0, count, block):
            stop = min(count, start + block)
            idx = rng.integers(0, len(v), (stop - start, len(v)))
            means[start:stop] = v[idx].mean(axis=1)
        slot_means[where] = means
    draws = slot_means.mean(axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return BootstrapCI(mean=float(np.mean([v.mean() for v in values])), lo=float(lo),
                       hi=float(hi), n_seeds=n_seeds, n_images=int(sum(len(v) for v in values)))


def paired_bootstrap(diffs_per_seed: list[np.ndarray], n_boot: int = 10000,
                     seed: int = 0) -> BootstrapCI:
    """95 % CI of the mean paired per-image difference (model minus baseline, same test images)
    over training seeds; with one seed it is the plain image bootstrap. Pairing removes the
    image-difficulty variance both decoders share, which a comparison of two CIs would keep."""
    return _hierarchical_bootstrap(diffs_per_seed, n_boot, seed)


def mean_ci(values_per_seed: list[np.ndarray], n_boot: int = 10000,
            seed: int = 0) -> BootstrapCI:
    """A single decoder's mean score and 95 % CI, bootstrapped like :func:`paired_bootstrap`."""
    return _hierarchical_bootstrap(values_per_seed, n_boot, seed)
