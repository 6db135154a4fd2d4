"""The MAP decoder with a learned denoiser prior, on the retina simulator: its denoiser denoises,
it beats its own linear start, it falls back to the mean image when the responses carry nothing,
it round-trips through a run directory, and held-out rows keep repeated images together."""

from pathlib import Path

import numpy as np
import pytest
import torch

from neuralign.config import load_config
from neuralign.generative_config import PriorMapConfig, RetinaSimConfig
from neuralign.offline.generative.metrics import decoding_metrics
from neuralign.offline.generative.paired import load_paired_npz
from neuralign.offline.generative.prior_map_train import (
    held_out_rows,
    train_denoiser,
    train_prior_map,
)
from neuralign.offline.simulator.retina import dead_leaves, simulate_retina

SMALL = {"denoiser_width": 16, "denoiser_depth": 4, "denoiser_steps": 250, "n_outer": 6,
         "n_inner": 10, "mu_grid": [0.003, 0.03]}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_retina(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retina_small")
    simulate_retina(RetinaSimConfig(n_cells=60, n_images=500, n_extra_images=400), out, seed=7)
    return out / "paired.npz"


def test_denoiser_removes_noise():
    rng = np.random.default_rng(0)
    cfg = PriorMapConfig(**{k: v for k, v in SMALL.items() if k.startswith("denoiser")})
    net, losses = train_denoiser(dead_leaves(300, rng), cfg, CPU, seed=0)
    assert losses[-1] < losses[0]
    clean = torch.as_tensor(dead_leaves(40, np.random.default_rng(1)))[:, None]
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = net(noisy, torch.full((40,), 0.1))
    assert float(((out - clean) ** 2).mean()) < 0.6 * float(((noisy - clean) ** 2).mean())


def test_prior_beats_its_linear_start_and_round_trips(small_retina, tmp_path):
    from neuralign.offline.generative.runs import (
        evaluate_generative,
        load_generative,
        train_generative,
    )

    cfg = load_config("prior_map", [f"generative.prior_map.{k}={v}" for k, v in SMALL.items()
                                    if k != "mu_grid"] + ["generative.prior_map.mu_grid=[0.003, 0.03]"])
    hist = train_generative(cfg, small_retina, tmp_path / "run")
    assert hist["likelihood"] == "poisson" and hist["mu"] in (0.003, 0.03)
    report = evaluate_generative(tmp_path / "run")
    ssim, linear = report["decoding"]["ssim"], report["baselines"]["prior_map_linear_start"]["ssim"]
    assert ssim > linear + 0.01, (ssim, linear)  # the prior adds what the ridge start lacks
    _, paired, model = load_generative(tmp_path / "run")
    again = model.generate(paired.test_responses)
    assert np.allclose(again, np.load(tmp_path / "run" / "decoded_test.npy"), atol=1e-5)
    assert again.shape == paired.test_images.shape and 0 <= again.min() and again.max() <= 1


def test_uninformative_responses_give_about_the_mean_image(small_retina):
    p = load_paired_npz(small_retina)
    rng = np.random.default_rng(3)
    noise = rng.poisson(1.0, p.train_responses.shape).astype(np.float32)  # nothing about the images
    model, hist = train_prior_map(p.train_images, noise, PriorMapConfig(**SMALL), CPU, seed=0)
    assert hist.blend <= 0.3, hist.blend
    out = model.generate(rng.poisson(1.0, (20, noise.shape[1])).astype(np.float32))
    mean = np.repeat(p.train_images.mean(0)[None], 20, 0)
    assert decoding_metrics(out, mean)["ssim"] > 0.8


def test_held_out_rows_keep_repeated_images_together():
    rng = np.random.default_rng(0)
    unique = rng.random((30, 8, 8)).astype(np.float32)
    images = np.repeat(unique, 4, axis=0)  # single-trial rows: 4 rows per image
    val, fit = held_out_rows(images, 0.2, seed=0)
    assert len(val) == 24 and len(set(val) | set(fit)) == 120 and not set(val) & set(fit)
    val_keys = {images[i].tobytes() for i in val}
    assert not val_keys & {images[i].tobytes() for i in fit}


def test_a_best_mu_at_the_grid_edge_extends_the_grid(small_retina):
    """The likelihood's scale depends on the data: a grid far too low for these counts (the
    prior barely weighs) is extended upward a decade at a time instead of returning its edge."""
    p = load_paired_npz(small_retina)
    cfg = PriorMapConfig(**{**SMALL, "denoiser_steps": 60, "mu_grid": [1e-7, 3e-7],
                            "encoder_components": 30})
    _, hist = train_prior_map(p.train_images[:200], p.train_responses[:200], cfg, CPU, seed=0)
    tried = sorted(float(k) for k in hist.val_ssim_by_mu)
    assert tried[-1] > 3e-7 and hist.mu > 3e-7, hist.val_ssim_by_mu
