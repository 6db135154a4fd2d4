"""Per-image reconstruction scores (two-way identification, SSIM, sharpness, diversity) and the
hierarchical bootstrap CIs."""

import numpy as np
import pytest

from neuralign.offline.generative import metrics as M
from neuralign.offline.generative.baselines import mean_image
from neuralign.offline.generative.scores import (
    feature_space,
    mean_ci,
    paired_bootstrap,
    score_images,
    two_way_identification,
)
from neuralign.offline.simulator.retina import dead_leaves


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return dead_leaves(40, np.random.default_rng(0), size=32)


def test_two_way_of_truth_is_one(images):
    assert np.all(two_way_identification(images, images) == 1.0)
    assert np.all(two_way_identification(images, images, feature_space()) == 1.0)


def test_two_way_of_a_constant_image_is_chance(images):
    grey = np.full_like(images, 0.5)  # correlation undefined: every comparison is a tie
    np.testing.assert_array_equal(two_way_identification(grey, images), 0.5)
    # The mean training image: the same image for every response ranks the test images once,
    # so per-image scores vary but their mean is exactly chance.
    mean = mean_image(dead_leaves(30, np.random.default_rng(1), size=32), len(images))
    for feats in (None, feature_space()):
        scores = two_way_identification(mean, images, feats)
        assert scores.min() < 0.5 < scores.max()
        assert scores.mean() == pytest.approx(0.5, abs=1e-12)


def test_two_way_of_shuffled_truth_is_near_chance(images):
    rng = np.random.default_rng(2)
    means = [two_way_identification(images[rng.permutation(len(images))], images).mean()
             for _ in range(20)]
    assert abs(np.mean(means) - 0.5) < 0.05
    noisy = np.clip(images + np.random.default_rng(3).normal(0, 0.1, images.shape), 0, 1)
    assert two_way_identification(noisy, images).mean() > 0.95


def test_ssim_and_pcc_agree_with_decoding_metrics(images):
    decoded = np.clip(images[::-1] * 0.5 + images * 0.5
                      + np.random.default_rng(4).normal(0, 0.05, images.shape), 0, 1)
    scores = score_images(decoded, images)
    ref = M.decoding_metrics(decoded, images)
    assert scores.ssim.shape == scores.pcc.shape == scores.two_way_feature.shape == (len(images),)
    assert scores.ssim.mean() == pytest.approx(ref["ssim"], abs=1e-12)
    assert scores.pcc.mean() == pytest.approx(ref["pcc"], abs=1e-12)
    summary = scores.mean()
    assert summary["ssim"] == pytest.approx(ref["ssim"], abs=1e-12)
    assert 0.5 < summary["two_way_pixel"] <= 1.0


def test_ssim_agrees_for_rgb_images():
    rng = np.random.default_rng(5)
    true = rng.uniform(size=(6, 16, 16, 3))
    decoded = np.clip(true + rng.normal(0, 0.2, true.shape), 0, 1)
    assert score_images(decoded, true).ssim.mean() == pytest.approx(
        M.decoding_metrics(decoded, true)["ssim"], abs=1e-12)


def test_sharpness_and_diversity(images):
    truth = score_images(images, images)
    assert truth.sharpness == pytest.approx(1.0) and truth.diversity == pytest.approx(1.0)
    mean = mean_image(images, len(images))
    flat = score_images(mean, images)
    assert flat.diversity == 0.0
    assert flat.sharpness < 0.7
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(images, sigma=(0, 2, 2))
    blur = score_images(blurred, images)
    assert blur.sharpness < 0.6 and 0 < blur.diversity < 1


def test_feature_space_is_deterministic(images):
    a, b = feature_space()(images[:5]), feature_space()(images[:5])
    assert a.shape[0] == 5 and a.ndim == 2
    np.testing.assert_array_equal(a, b)


def test_bootstrap_single_seed_covers_known_mean_and_excludes_zero():
    rng = np.random.default_rng(6)
    diffs = rng.normal(0.3, 1.0, 400)
    ci = paired_bootstrap([diffs], n_boot=4000, seed=1)
    assert ci.n_seeds == 1 and ci.n_images == 400
    assert ci.mean == pytest.approx(diffs.mean())
    assert ci.lo < 0.3 < ci.hi and ci.lo > 0 and ci.excludes_zero()
    # the plain image bootstrap: width ~ 2 * 1.96 * sd / sqrt(n)
    assert ci.hi - ci.lo == pytest.approx(2 * 1.96 * diffs.std() / 20, rel=0.1)


def test_bootstrap_zero_mean_includes_zero_and_coverage():
    rng = np.random.default_rng(7)
    diffs = [rng.normal(0.0, 1.0, 200) for _ in range(4)]
    ci = paired_bootstrap([d - d.mean() for d in diffs], n_boot=2000)  # sample mean exactly 0
    assert ci.lo < 0 < ci.hi and not ci.excludes_zero()
    covered = sum(_covers(mean_ci([rng.normal(1.0, 1.0, 60) for _ in range(3)],
                                  n_boot=1000, seed=k), 1.0) for k in range(60))
    assert covered >= 51  # nominal 95 % of 60 = 57; a binomial lower tail allows some misses


def _covers(ci, value: float) -> bool:
    return ci.lo < value < ci.hi


def test_bootstrap_seed_level_variance_widens_the_ci():
    rng = np.random.default_rng(8)
    offsets = np.array([-0.5, 0.0, 0.5, 1.0])
    # Same image noise, but training seeds disagree: the CI must reflect the seed spread.
    spread = [rng.normal(o, 0.2, 300) for o in offsets]
    tight = [rng.normal(offsets.mean(), 0.2, 300) for _ in offsets]
    wide_ci, tight_ci = mean_ci(spread, n_boot=3000), mean_ci(tight, n_boot=3000)
    assert wide_ci.hi - wide_ci.lo > 5 * (tight_ci.hi - tight_ci.lo)
    assert wide_ci.lo < offsets.mean() < wide_ci.hi


def test_bootstrap_is_reproducible_and_rejects_nan():
    rng = np.random.default_rng(9)
    vals = [rng.normal(size=50), rng.normal(size=70)]
    assert paired_bootstrap(vals, n_boot=500, seed=3) == paired_bootstrap(vals, n_boot=500, seed=3)
    with pytest.raises(ValueError):
        mean_ci([np.array([1.0, np.nan])])
