"""Temperature scaling, reliability / ECE, dynamic stopping, and the bundle's calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralign.offline import calibration as cal


def _draw(rng, n, k, t_true, spread=0.1):
    """Scores and targets drawn from softmax(score / t_true): a perfectly calibrated model."""
    s = rng.normal(0, spread, (n, k))
    p = np.exp(cal.log_posterior(s, t_true))
    target = np.array([rng.choice(k, p=row) for row in p])
    return s, target


def test_fit_temperature_recovers_the_generating_temperature():
    s, target = _draw(np.random.default_rng(0), 4000, 10, 0.05)
    t = cal.fit_temperature(s, target)
    assert t == pytest.approx(0.05, rel=0.15)
    assert cal.nll(s, target, t) <= min(cal.nll(s, target, 0.5 * t), cal.nll(s, target, 2 * t))
    assert cal.calibration_report(s, target, t)["ece"] < 0.05


def test_reliability_bins_and_ece_worked_by_hand():
    conf, hit = np.array([0.95, 0.95, 0.15, 0.15]), np.array([1, 0, 0, 0])
    bins = cal.reliability_bins(conf, hit)
    assert [(b["n"], b["accuracy"]) for b in bins] == [(2, 0.0), (2, 0.5)]
    assert bins[0]["lo"] == pytest.approx(0.1) and bins[1]["confidence"] == pytest.approx(0.95)
    assert cal.ece(conf, hit) == pytest.approx((2 * 0.15 + 2 * 0.45) / 4)


def test_accumulated_posterior_sums_evidence_and_dynamic_stopping_stops_early():
    # 2 sequences x 3 repetitions x 2 candidates; the truth is candidate 0 for both
    s = np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
                  [[0.0, 0.1], [0.1, 0.0], [0.0, 0.0]]])
    lp = cal.accumulated_log_posterior(s, 1.0)
    np.testing.assert_allclose(np.exp(lp[0, 1, 0]), 1 / (1 + np.exp(-2.0)))  # softmax([2, 0])
    target = np.array([0, 0])
    # sequence 0 reaches p >= 0.85 after 2 presentations; sequence 1 never: it runs to the cap
    # and decides on the sum [0.1, 0.1] (a tie: argmax takes candidate 0)
    st = cal.dynamic_stopping(lp, target, 0.85)
    assert st.mean_presentations == pytest.approx((2 + 3) / 2) and st.accuracy == 1.0
    st2 = cal.dynamic_stopping(lp, target, 0.5, max_reps=2)  # the first reaches 0.73 at once
    assert st2.mean_presentations == pytest.approx((1 + 1) / 2) and st2.accuracy == 0.5
    d = st.to_dict(n_candidates=2, soa=0.5)
    assert d["bits_per_selection"] == 1.0 and d["bits_per_min"] == pytest.approx(60 / 1.25)


def test_closed_loop_report_chooses_on_validation_and_reports_test():
    rng = np.random.default_rng(1)

    def scores(n_img, reps):  # the true image scores higher in every repetition
        s = rng.normal(0, 0.1, (n_img, reps, n_img))
        s[np.arange(n_img), :, np.arange(n_img)] += 0.12
        return s

    val, test = scores(12, 4), scores(10, 8)
    rep = cal.closed_loop_report(val, test, soa=0.2)
    assert rep["max_reps"] == 4 and rep["n_candidates"] == 10
    assert [f["n_repetitions"] for f in rep["fixed"]] == [1, 2, 3, 4]
    assert rep["dynamic_stopping"]["sequences"] == {"validation": 12, "test": 20}
    rec = rep["dynamic_stopping"]["recommended"]
    assert rec["threshold"] in cal.THRESHOLDS and 1 <= rec["mean_presentations"] <= 4
    assert rec["validation_accuracy"] >= rec["validation_fixed_accuracy"]
    # the temperature and the recommendation never look at the test trials
    other = cal.closed_loop_report(val, scores(10, 8), soa=0.2)
    assert other["temperature"] == rep["temperature"]
    assert other["dynamic_stopping"]["recommended"]["threshold"] == rec["threshold"]
    json.dumps(rep)  # JSON-ready


def test_tiny_bundle_is_calibrated_and_old_bundles_carry_no_probabilities(tiny_bundle, tmp_path):
    import shutil

    from neuralign.bundle import MANIFEST, _content_hash, load_bundle

    bundle_dir, _ = tiny_bundle
    c = load_bundle(bundle_dir).manifest.calibration
    assert c is not None and c.temperature > 0 and c.n_trials > 0 and 0 <= c.ece <= 1
    # chosen on the same validation trials (2 repetitions each in the tiny data)
    assert c.recommended_threshold in cal.THRESHOLDS and c.recommended_max_reps == 2
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    raw = json.loads((old / MANIFEST).read_text())
    raw.pop("calibration")  # as exported before calibration existed
    raw["content_hash"] = _content_hash(old, raw)
    (old / MANIFEST).write_text(json.dumps(raw))
    assert load_bundle(old).manifest.calibration is None


def test_evaluator_closed_loop_on_the_tiny_run(tiny_bundle, tmp_path):
    from neuralign.offline.evaluate import Evaluator, write_figures
    from neuralign.offline.run_dir import load_run

    _, prep, model = load_run(tiny_bundle[0].parent / "run")
    closed = Evaluator(model, prep).closed_loop(soa=0.2)
    assert closed["max_reps"] == 2  # the tiny validation images have 2 repetitions
    assert {"validation_single_trial", "test_single_trial", "test_accumulated"} <= set(
        closed["calibration"])
    fixed = closed["fixed"]
    assert {"accuracy", "bits_per_min", "accuracy_averaged_epochs"} <= set(fixed[0])
    # one repetition: the summed evidence and the averaged epoch are the same decision
    assert fixed[0]["accuracy"] == fixed[0]["accuracy_averaged_epochs"]
    paths = write_figures({"closed_loop": closed}, prep, tmp_path)
    assert {p.name for p in paths} == {"reliability.png", "itr_vs_repetitions.png"}
