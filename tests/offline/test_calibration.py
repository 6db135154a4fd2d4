"""Temperature scaling, reliability / ECE, dynamic stopping, and the bundle's calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralign.bundle import repetition_temperature
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


def test_repetition_posterior_uses_the_temperature_of_each_count_and_stops_early():
    # 2 sequences x 3 repetitions x 2 candidates of averaged-epoch scores; the truth is 0
    s = np.array([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
                  [[0.0, 0.1], [0.1, 0.0], [0.0, 0.0]]])
    ts = [1.0, 0.5]  # T_1, T_2; beyond, the last
    lp = cal.repetition_log_posterior(s, ts)
    np.testing.assert_allclose(np.exp(lp[0, 1, 0]), 1 / (1 + np.exp(-2.0)))  # softmax([2, 0])
    np.testing.assert_allclose(np.exp(lp[0, 2, 0]), 1 / (1 + np.exp(-2.0)))  # T_3 = T_2
    assert repetition_temperature(ts, 1) == 1.0 and repetition_temperature(ts, 7) == 0.5
    target = np.array([0, 0])
    # sequence 0 reaches p >= 0.85 after 2 presentations; sequence 1 never: it runs to the cap
    # and decides on its last scores [0, 0] (a tie: argmax takes candidate 0)
    st = cal.dynamic_stopping(lp, target, 0.85)
    assert st.mean_presentations == pytest.approx((2 + 3) / 2) and st.accuracy == 1.0
    st2 = cal.dynamic_stopping(lp, target, 0.5, max_reps=2)  # the first reaches 0.73 at once
    assert st2.mean_presentations == pytest.approx((1 + 1) / 2) and st2.accuracy == 0.5
    d = st.to_dict(n_candidates=2, soa=0.5)
    assert d["bits_per_selection"] == 1.0 and d["bits_per_min"] == pytest.approx(60 / 1.25)


def test_repetition_temperatures_are_fitted_per_count():
    s, target = _draw(np.random.default_rng(3), 3000, 10, 0.1)
    # the second count's scores are the first's doubled (sharper): its NLL-optimal T doubles
    avg = np.stack([s, 2 * s], axis=1)
    t1 = cal.fit_temperature(s, target)
    assert t1 == pytest.approx(0.1, rel=0.15)
    assert cal.fit_repetition_temperatures(avg, target) == pytest.approx([t1, 2 * t1], rel=0.01)
    # T_1 is the single-trial fit over every validation trial when given
    assert cal.fit_repetition_temperatures(avg, target, temperature=0.11)[0] == 0.11


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
    # one temperature per repetition count; averages are sharper, so T_r falls
    ts = rep["repetition_temperatures"]
    assert len(ts) == 4 and ts[0] == rep["temperature"] and ts[-1] < ts[0]
    assert [f["temperature"] for f in rep["fixed"]] == ts
    # the temperatures and the recommendation never look at the test trials
    other = cal.closed_loop_report(val, scores(10, 8), soa=0.2)
    assert other["repetition_temperatures"] == ts
    assert other["dynamic_stopping"]["recommended"]["threshold"] == rec["threshold"]
    json.dumps(rep)  # JSON-ready


def test_tiny_bundle_is_calibrated_and_old_bundles_carry_no_probabilities(tiny_bundle, tmp_path):
    import shutil

    from neuralign.bundle import MANIFEST, _content_hash, load_bundle

    bundle_dir, _ = tiny_bundle
    c = load_bundle(bundle_dir).manifest.calibration
    assert c is not None and c.temperature > 0 and c.n_trials > 0 and 0 <= c.ece <= 1
    # T_1 is the single-trial T; T_r of the 2-repetition averages, the last beyond
    assert len(c.repetition_temperatures) == 2 and c.repetition_temperatures[0] == c.temperature
    assert c.temperature_at(1) == c.temperature
    assert c.temperature_at(5) == c.repetition_temperatures[1]
    # chosen on the same validation trials (2 repetitions each in the tiny data)
    assert c.recommended_threshold in cal.THRESHOLDS and c.recommended_max_reps == 2
    old = tmp_path / "old"
    shutil.copytree(bundle_dir, old)
    raw = json.loads((old / MANIFEST).read_text())
    raw["calibration"].pop("repetition_temperatures")  # one temperature: T_r = T
    raw["content_hash"] = _content_hash(old, raw)
    (old / MANIFEST).write_text(json.dumps(raw))
    one = load_bundle(old).manifest.calibration
    assert one.repetition_temperatures is None and one.temperature_at(3) == one.temperature
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
    assert {"accuracy", "bits_per_min", "temperature", "summed_evidence_accuracy"} <= set(fixed[0])
    # one repetition: the summed evidence and the averaged epoch are the same decision
    assert fixed[0]["accuracy"] == fixed[0]["summed_evidence_accuracy"]
    assert len(closed["repetition_temperatures"]) == 2
    paths = write_figures({"closed_loop": closed}, prep, tmp_path)
    assert {p.name for p in paths} == {"reliability.png", "itr_vs_repetitions.png"}


def test_validation_split_by_concept_holds_out_whole_concepts():
    from neuralign.config import config_from_overrides
    from neuralign.errors import UserError
    from neuralign.offline.prepare import validation_index

    concepts = [f"c{i // 8}" for i in range(480)]  # 60 concepts of 8 images, as in the demo
    images = config_from_overrides(["training.n_val_trials=48"])
    assert images.training.validation_split == "images"  # the default draw is unchanged
    by_image = validation_index(images, concepts)
    assert len(by_image) == 48 and len({concepts[i] for i in by_image}) > 6
    config = config_from_overrides(["training.n_val_trials=44",
                                    "training.validation_split=concepts"])
    vi = validation_index(config, concepts)
    held = {concepts[i] for i in vi}
    # whole concepts (every image of each), as many as it takes to reach 44 images
    assert len(held) == 6 and len(vi) == 48
    assert set(vi) == {i for i, c in enumerate(concepts) if c in held}
    np.testing.assert_array_equal(vi, validation_index(config, concepts))  # fixed seed
    with pytest.raises(UserError, match="validation_split=images"):
        validation_index(config, [f"img{i}" for i in range(480)])  # one image per "concept"


def test_live_repetition_posterior_equals_the_offline_one(tiny_bundle):
    """Offline/online parity of the repetition decision's probability: the engine's
    ``avg_topk_probs`` are what evaluate's dynamic stopping reads for the same epochs."""
    from neuralign.bundle import load_bundle
    from neuralign.offline.run_dir import load_run
    from neuralign.realtime.decisions import ResultBuilder
    from neuralign.realtime.epocher import Epoch
    from neuralign.realtime.inference import Decoder

    bundle = load_bundle(tiny_bundle[0])
    c = bundle.manifest.calibration
    _, prep, model = load_run(tiny_bundle[0].parent / "run")
    x = prep.x_test[:, :3]
    r_max = x.shape[1]
    avg, _ = cal.averaged_scores(model, x, prep.f_test, r_max)
    lp = cal.repetition_log_posterior(avg, [c.temperature_at(r) for r in range(1, r_max + 1)])
    builder = ResultBuilder(Decoder(bundle, batch_size=4, top_k=3, device="cpu"))
    eid = 0
    for r in range(r_max):  # presentation r of every image, a batch of all images
        eps = []
        for i, img in enumerate(prep.test_ids):
            eps.append(Epoch(eid, x[i, r].copy(), img, 0, float(eid), 0, float(eid)))
            eid += 1
        results = builder.build(eps)
        if r == 0:
            continue
        for i, res in enumerate(results):
            p = res.avg_topk_probs
            assert p == sorted(p, reverse=True)  # in the order of the ids: [0] is the max
            np.testing.assert_allclose(p[0], np.exp(lp[i, r].max()), atol=2e-3)
