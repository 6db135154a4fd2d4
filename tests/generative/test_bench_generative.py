"""``neuralign bench generative`` on a small simulated dataset: it refuses development seeds,
scores every decoder on the same test images, and its paired statistics say what they should."""

import json

import pytest

from neuralign.errors import UserError
from neuralign.generative_config import PriorMapConfig, RetinaSimConfig
from neuralign.offline.generative.bench import DEV_SEEDS, run_bench
from neuralign.offline.simulator.retina import simulate_retina

SMALL_PRIOR = PriorMapConfig(denoiser_width=16, denoiser_depth=4, denoiser_steps=150, n_outer=4,
                             n_inner=8, mu_grid=[0.01])


def test_development_seeds_are_refused(tmp_path):
    with pytest.raises(UserError, match="development seeds"):
        run_bench(["lnp"], [DEV_SEEDS[1], 201], ["ridge"], tmp_path)


def test_small_bench_scores_and_compares(tmp_path):
    # the bench simulates a family's default dataset when missing; a small one is put in its place
    simulate_retina(RetinaSimConfig(n_cells=50, n_images=400, n_extra_images=200),
                    tmp_path / "data" / "lnp-s201", seed=201)
    decoders = ["mean_image", "retrieved", "ridge", "prior_map"]
    rep = run_bench(["lnp"], [201], decoders, tmp_path, prior_config=SMALL_PRIOR)
    rows = {r["decoder"]: r for r in rep["families"]["lnp"]["rows"]}
    assert set(rows) == set(decoders)
    assert rows["mean_image"]["mean"]["two_way_pixel"] == pytest.approx(0.5)
    assert rows["mean_image"]["diversity"] == pytest.approx(0.0)
    diff, lo, hi, n = rows["ridge"]["two_way_vs"]["mean_image"]
    assert n == 1 and lo <= diff <= hi and lo > 0  # ridge identifies images: CI excludes 0
    d_same, lo_same, hi_same, _ = rows["ridge"]["ssim_vs"]["mean_image"]
    assert lo_same <= d_same <= hi_same
    assert rows["ridge"]["mean"]["two_way_pixel"] > 0.8
    lo_r, hi_r = rows["ridge"]["ci"]["ssim"]
    assert lo_r <= rows["ridge"]["mean"]["ssim"] <= hi_r
    assert "SSIM - ridge" in rep["table"] and "DEVELOPMENT" not in rep["table"]
    written = json.loads((tmp_path / "bench_generative.json").read_text())
    assert written["families"]["lnp"]["rows"] == json.loads(json.dumps(rep["families"]["lnp"]["rows"]))
    # resumable: a second call scores nothing again
    n_lines = len((tmp_path / "scores.jsonl").read_text().splitlines())
    run_bench(["lnp"], [201], decoders, tmp_path, prior_config=SMALL_PRIOR)
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == n_lines == len(decoders)
