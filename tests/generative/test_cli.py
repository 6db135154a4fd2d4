"""End to end through the CLI: simulate tiny retina data -> train (tiny budget) -> evaluate, for
FLIG and SMR + ICG; and ``neuralign paired`` from a BrainAE run (embeddings and epochs)."""

import json

import numpy as np
import pytest

from neuralign.cli import main

TINY_RETINA = ["dataset.simulation.retina.n_cells=8", "dataset.simulation.retina.n_images=60",
               "dataset.simulation.retina.n_extra_images=20", "dataset.simulation.retina.test_fraction=0.2",
               "generative.image_size=32", "training.device=cpu", "training.num_threads=1"]
TINY = {
    "flig": ["generative.flig.cae_epochs=1", "generative.flig.flow_epochs=1",
             "generative.flig.cae_width=0.125", "generative.flig.n_units_x=2",
             "generative.flig.coupling_hidden=16", "generative.flig.flow_batch_size=16",
             "generative.flig.cae_batch_size=16"],
    "smr_icg": ["generative.feature_cnn.epochs=1", "generative.feature_cnn.channels=[4,8]",
                "generative.feature_cnn.pool=2", "generative.smr.n_iter=1", "generative.smr.cv_iter=1",
                "generative.smr.lam1_grid=[1.0,10.0]", "generative.icg.epochs=1",
                "generative.icg.latent_dim=8", "generative.icg.channels=[4,8]",
                "generative.icg.batch_size=16"],
}


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def tiny_retina(tmp_path_factory):
    out = tmp_path_factory.mktemp("retina")
    assert main(["simulate", "--config", "flig", "--out", str(out), *_sets(TINY_RETINA)]) == 0
    return out / "paired.npz"


@pytest.mark.parametrize("name", ["flig", "smr_icg"])
def test_train_then_evaluate_through_the_cli(tiny_retina, tmp_path, name, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", name, "--data", str(tiny_retina), "--out", str(run),
                 *_sets(TINY_RETINA + TINY[name])]) == 0
    assert main(["evaluate", "--run", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after 'Run written to ...'
    report = json.loads((run / "report.json").read_text())
    assert {"decoding", "baselines", "figures", "decoded_test", "training_seconds"} <= set(report)
    assert set(report["decoding"]) == {"mse", "pcc", "ssim", "n_images"}
    assert "ridge_pixel" in report["baselines"] and printed["decoding"] == report["decoding"]
    if name == "flig":
        assert {"encoding"} <= set(report) and "lnp" in report["baselines"]
    else:
        assert {"smr", "feature_baselines"} <= set(report)
        assert {"smr_o", "ridge"} <= set(report["feature_baselines"])
        assert {"cvae", "cgan", "icg_true_features"} <= set(report["baselines"])
    decoded = np.load(run / "decoded_test.npy")
    assert decoded.shape == (12, 32, 32) and decoded.dtype == np.float32
    assert 0.0 <= decoded.min() and decoded.max() <= 1.0
    grid = run / "figures" / "decoded_grid.png"
    assert grid.is_file() and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("responses", ["embedding", "epochs"])
def test_paired_from_a_brainae_run(tiny_bundle, tmp_path, responses):
    """``neuralign paired``: the run's stimulus images with its embeddings or flattened epochs,
    readable by the paired loader, templates as unpaired extra images."""
    from neuralign.offline.generative.paired import load_paired_npz
    from neuralign.offline.prepare import Prepared

    run = tiny_bundle[0].parent / "run"
    prep = Prepared.load(run / "prepared.npz")
    out = tmp_path / "paired.npz"
    assert main(["paired", "--run", str(run), "--out", str(out), "--responses", responses,
                 "--trials", "average"]) == 0
    d = load_paired_npz(out, 32, grayscale=True)
    n, reps, c, t = prep.x_train.shape
    assert d.train_images.shape == (n, 32, 32) and len(d.test_images) == len(prep.test_ids)
    if responses == "epochs":
        assert d.n_units == c * t and d.unit_names[0].startswith(prep.ch_names[0] + "@")
        np.testing.assert_allclose(d.train_responses, prep.x_train.mean(1).reshape(n, -1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.test_responses_reps, prep.x_test.reshape(len(prep.x_test), -1, c * t))
    else:
        assert d.unit_names[0] == "zb0" and d.n_units < c * t
        assert np.isfinite(d.train_responses).all()
    assert d.extra_images is not None and len(d.extra_images) == len(prep.template_ids)
