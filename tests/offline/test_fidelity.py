"""Issue 13: data families in THINGS-EEG2 layout, the steps-per-epoch batch rule, the paired
comparison with ridge and its flag in the printed report."""

import numpy as np
import pytest

from neuralign.offline.evaluate import bootstrap_compare, scored_quantities
from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed
from neuralign.offline.simulator.families import FamilySpec, noise_free_fit_data, write_family
from neuralign.offline.train import effective_batch_size


@pytest.mark.parametrize("layout,n_chans,n_times", [("official", 17, 80), ("nice", 63, 250)])
def test_family_is_read_by_the_things_eeg2_loader(tmp_path, layout, n_chans, n_times) -> None:
    from neuralign.offline.feature_files import load_features

    spec = FamilySpec(family="nonlinear", n_train_images=16, layout=layout, n_test_concepts=5,
                      test_repetitions=2)
    data, feats = write_family(spec, tmp_path / "d")
    ds = load_things_eeg2_preprocessed(data, tmin=0.0, tmax=1.0)
    assert ds.train.data.shape == (16, 4, n_chans, n_times)
    assert ds.test.data.shape == (5, 2, n_chans, n_times)
    table = load_features(feats, list(ds.train.image_ids) + list(ds.test.image_ids))
    assert table.features.shape == (21, 64)
    assert len(set(ds.train.concepts)) == 4 and not set(ds.train.concepts) & set(ds.test.concepts)
    assert write_family(spec, tmp_path / "d") == (data, feats)  # cached


@pytest.mark.parametrize("family", ["linear", "nonlinear"])
def test_component_families_have_no_shared_response(family) -> None:
    _, sig = noise_free_fit_data(FamilySpec(family=family), 300)
    shared = np.abs(sig.mean(axis=0)).max()
    assert sig.std(axis=0).max() > 5 * shared  # image-specific variation dwarfs the mean


def test_batch_keeps_twenty_steps_per_epoch() -> None:
    assert effective_batch_size(800, 640) == 32  # was one step per epoch (issue 13)
    assert effective_batch_size(800, 15800) == 790  # the paper's setting: ~ its own 800
    assert effective_batch_size(16, 384) == 16  # the demo: unchanged
    assert effective_batch_size(800, 100) == 16  # never below 16
    assert effective_batch_size(800, 10) == 10


def _quantities(sim, pred, true):
    return scored_quantities(sim, pred, true, np.ones(true.shape[1], dtype=bool))


def test_paired_bootstrap_flags_only_real_differences() -> None:
    rng = np.random.default_rng(0)
    n = 40
    true = rng.standard_normal((n, 3, 20))
    perfect = _quantities(np.eye(n) + 0.01 * rng.random((n, n)), true, true)
    noise = rng.standard_normal((n, n))
    bad = _quantities(noise, rng.standard_normal(true.shape), true)
    res = bootstrap_compare(bad, perfect, n_boot=200)
    assert {v["significant"] for v in res.values()} == {"worse"}
    assert res["encoding_r_across_visual"]["ridge"] == pytest.approx(1.0)
    same = bootstrap_compare(bad, bad, n_boot=200)
    assert {v["significant"] for v in same.values()} == {"no"}
    assert bootstrap_compare(perfect, bad, n_boot=200)["retrieval_top1"]["significant"] == "better"


def test_report_prints_the_metrics_worse_than_ridge(capsys) -> None:
    from neuralign.cli.report import print_report

    rep = {"n_test_images": 50, "retrieval": {"top1": 0.2, "top5": 0.5, "chance_top1": 0.02},
           "vs_ridge": {"worse": ["retrieval_top1"], "metrics": {"retrieval_top1": {
               "model": 0.2, "ridge": 0.3, "difference_ci": [-0.18, -0.02]}}}}
    print_report(rep, "r.json")
    assert "WARNING: retrieval_top1 significantly below ridge: 0.200 vs 0.300" in capsys.readouterr().out
