"""train -> evaluate -> export as a user runs them (real subprocesses), and what they write."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from neuralign.bundle import load_bundle
from neuralign.errors import DataError
from tests.conftest import FAST_TRAIN


def cli(*args, env=None, timeout=600):
    out = subprocess.run([sys.executable, "-m", "neuralign", *args], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def trained_run(tiny_sim, tmp_path_factory):
    _, cfg_path, data = tiny_sim
    run = tmp_path_factory.mktemp("run") / "run"
    sets = [a for s in FAST_TRAIN for a in ("--set", s)]
    cli("train", "--config", str(cfg_path), "--data", str(data), "--out", str(run), *sets)
    return run


def test_train_writes_run_and_keeps_best_validation_checkpoint(trained_run):
    for name in ("config.yaml", "prepared.npz", "model.safetensors", "history.json"):
        assert (trained_run / name).is_file(), name
    hist = json.loads((trained_run / "history.json").read_text())
    assert len(hist["history"]) == 2
    vals = [h["val_total"] for h in hist["history"]]
    assert hist["best_epoch"] == int(np.argmin(vals))
    assert hist["best_val_loss"] == pytest.approx(min(vals))


def test_prepared_data_is_whitened_on_training_rows_only(trained_run):
    from neuralign.offline.prepare import Prepared

    prep = Prepared.load(trained_run / "prepared.npz")
    assert prep.meta["provenance"] == "neuralign-causal"
    assert set(prep.train_concepts).isdisjoint(prep.test_concepts)  # zero-shot split
    assert len(prep.val_index) == 4 and len(prep.fit_index) == len(prep.train_ids) - 4
    # MVNN brings the data to unit scale (volts in, ~1 out)
    assert 0.1 < prep.x_train[prep.fit_index].std() < 10


def test_evaluate_report_has_the_protocols(trained_run, tmp_path):
    report_path = tmp_path / "report.json"
    out = cli("evaluate", "--run", str(trained_run), "--json", str(report_path))
    assert "retrieval" in out.stdout
    rep = json.loads(report_path.read_text())
    for task in ("retrieval", "classification"):
        assert set(rep[task]) >= {"top1", "top5", "n_way", "chance_top1"}
        assert set(rep["ridge"][task]) >= {"top1", "top5"}
    assert rep["retrieval"]["n_way"] == 6
    assert {"pearson_r_all", "pearson_r_visual", "mse_all", "encoding_auc"} <= set(rep["encoding"])
    assert {"pearson_r_all", "pearson_r_visual"} <= set(rep["ridge"]["encoding"])
    # the calibrated read-out, the raw decoder (the paper's quantity), the floor and a paired test
    assert {"pearson_r_visual", "pearson_r_across_images_visual"} <= set(rep["encoding_raw_decoder"])
    assert rep["encoding"]["pearson_r_visual"] != rep["encoding_raw_decoder"]["pearson_r_visual"]
    assert rep["ridge"]["mean_response"]["encoding"]["pearson_r_across_images_visual"] == pytest.approx(0.0, abs=1e-6)
    pair = rep["encoding_vs_ridge"]["visual"]
    assert 0.0 <= pair["images_better"] <= 1.0 and 0.0 <= pair["wilcoxon_p"] <= 1.0
    per_image = np.subtract(rep["encoding"]["pearson_r_per_image_visual"],
                            rep["ridge"]["encoding"]["pearson_r_per_image_visual"])
    assert pair["mean_difference"] == pytest.approx(per_image.mean())
    hist = json.loads((trained_run / "history.json").read_text())
    assert hist["encoding_calibration"]["gain"] >= 0
    assert "mean training response" in out.stdout and "Wilcoxon" in out.stdout
    reps = [r["n_repetitions"] for r in rep["accuracy_vs_repetitions"]]
    assert reps == [1, 2, 4]
    kinds = {r["mask"] for r in rep["masked_reconstruction"]}
    assert kinds == {"random", "spatial", "temporal", "forecast"}
    assert 0.0 <= rep["decoding_auc"] <= 1.0
    for fig in rep["figures"]:
        assert os.path.getsize(fig) > 1000


def test_export_bundle_round_trip_and_tamper_detection(trained_run, tmp_path):
    bundle_dir = tmp_path / "bundle"
    cli("export", "--run", str(trained_run), "--out", str(bundle_dir))
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert m.format == "neuralign-bundle" and len(m.content_hash) == 64
    assert m.sfreq == 250.0 and m.epoch.tmin == 0.0 and m.epoch.n_times == 250
    assert len(m.noise_normalization.w) == len(b.ch_names) == 63
    assert m.preprocessing.l_freq == 0.1 and m.preprocessing.notch_freqs == [50.0]
    assert b.template_embeddings.shape[0] == len(b.template_ids) == b.thumbnails.shape[0] == 6
    assert b.thumbnails.max() > 0  # real images, not blanks
    # the bundle's model reproduces the run's embeddings
    from neuralign.offline.prepare import Prepared
    from neuralign.offline.runs import load_run

    _, prep, model = load_run(trained_run)
    x = torch.from_numpy(Prepared.load(trained_run / "prepared.npz").x_test.mean(1))
    with torch.no_grad():
        np.testing.assert_allclose(b.build_model().encode_brain(x).numpy(),
                                   model.encode_brain(x).numpy(), rtol=1e-5, atol=1e-6)
    # any change to the files is detected
    tampered = tmp_path / "tampered"
    shutil.copytree(bundle_dir, tampered)
    man = json.loads((tampered / "manifest.json").read_text())
    man["sfreq"] = 500.0
    (tampered / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match="content hash mismatch"):
        load_bundle(tampered)
    (bundle_dir / "weights.safetensors").unlink()
    with pytest.raises(DataError, match="weights.safetensors"):
        load_bundle(bundle_dir)


def test_evaluate_missing_run_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "neuralign", "evaluate", "--run", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "config.yaml" in out.stderr and "Traceback" not in out.stderr


def test_torchrun_two_processes_end_with_identical_weights(tiny_sim, tmp_path):
    _, cfg_path, data = tiny_sim
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "neuralign", "train", "--config", str(cfg_path),
           "--data", str(data), "--out", str(run), "--set", "training.epochs=1",
           "--set", "training.batch_size=8", "--set", "training.n_val_trials=4",
           "--set", "model.k=8", "--set", "training.num_threads=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    h0 = (run / "weights_rank0.sha256").read_text()
    h1 = (run / "weights_rank1.sha256").read_text()
    assert h0 == h1
    hist = json.loads((run / "history.json").read_text())
    assert hist["world_size"] == 2


@pytest.mark.parametrize("name", ["vna", "direct_encoding", "direct_decoding"])
def test_vna_and_its_baselines_train_from_pixels_and_are_scored_by_auc(tiny_sim, tmp_path, name):
    from neuralign.config import load_config
    from neuralign.offline.runs import evaluate_run, export_run
    from neuralign.offline.train import run_training

    _, cfg_path, data = tiny_sim
    cfg = load_config(cfg_path, [f"model.name={name}", "model.embed_dim=32", "model.hidden=64",
                                 "training.epochs=2", "training.batch_size=16",
                                 "training.n_val_trials=4"])
    hist = run_training(cfg, tmp_path / name, data, None, progress=False)
    assert all(np.isfinite(h["val_total"]) for h in hist["history"])
    rep = evaluate_run(tmp_path / name, masks=False)
    assert rep["model"] == name
    assert 0.0 <= rep["decoding_auc"] <= 1.0 and rep["retrieval"]["n_way"] == 6
    disc = rep["discriminative"]
    assert 0.0 <= disc["encoding_auc"] <= 1.0 and 0.0 <= disc["decoding_auc"] <= 1.0
    assert disc["pair_score"] == ("cosine in the shared space" if name == "vna" else "-MSE (model.scores)")
    assert "encoding" not in rep  # no brain decoder; the encoding side is the discriminative AUC
    if name != "vna":
        with pytest.raises(DataError, match="offline baseline"):
            export_run(tmp_path / name, tmp_path / "bundle")


def test_per_query_auc_ranks_candidates_per_row():
    from neuralign.offline.evaluate import per_query_auc

    assert per_query_auc(np.eye(5)) == 1.0
    assert per_query_auc(-np.eye(5)) == 0.0
    assert per_query_auc(np.ones((4, 4))) == 0.5  # ties count half
    sim = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.1], [0.0, 0.3, 0.6]])
    # row 0: beats both; row 1: beats one of two; row 2: beats both -> mean (1 + 0.5 + 1) / 3
    assert per_query_auc(sim) == pytest.approx(2.5 / 3)
    # columns: image 0 vs responses 1, 2: 0.9 > 0.8, 0.0 -> 1; image 1: 0.2 > 0.1, < 0.3 -> 0.5
    assert per_query_auc(sim.T) == pytest.approx((1 + 0.5 + 1) / 3)
