"""Suite-wide setup: keep LSL discovery on this host and Qt offscreen BEFORE any import uses them."""

import os
from pathlib import Path

_LSL_CFG = Path(__file__).resolve().parents[1] / "neuralign" / "lsl_api.cfg"
os.environ["LSLAPICFG"] = str(_LSL_CFG)  # the suite never uses a user's LSL config
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MNE_DONTWRITE_HOME", "true")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

TINY_SIM = {
    "n_train_concepts": 10, "images_per_train_concept": 3, "train_repetitions": 2,
    "n_test_concepts": 6, "test_repetitions": 4, "template_images_per_test_concept": 2,
    "sfreq": 500.0, "soa": 0.2, "soa_jitter": 0.02, "snr": 1.0, "seed": 7,
}
# Overrides that make a training run take seconds (the shapes stay the paper's).
FAST_TRAIN = ["training.epochs=2", "training.batch_size=16", "training.n_val_trials=4",
              "model.k=8"]


def tiny_config(tmp_root: Path, overrides: list[str] | None = None):
    """The demo config with the tiny simulator settings, written next to the data."""
    import yaml

    from neuralign.config import dump_config, load_config

    sets = [f"dataset.simulation.{k}={v}" for k, v in TINY_SIM.items()] + (overrides or [])
    cfg = load_config("demo", sets)
    path = tmp_root / "tiny.yaml"
    path.write_text(yaml.safe_dump(dump_config(cfg)))
    return cfg, path


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory):
    """A small simulated dataset shared by the offline tests: (config, config path, data dir)."""
    from neuralign.offline.simulator import simulate

    root = tmp_path_factory.mktemp("tiny_sim")
    cfg, path = tiny_config(root)
    simulate(cfg.dataset.simulation, root / "data", preprocessing=cfg.preprocessing)
    return cfg, path, root / "data"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_sim, tmp_path_factory):
    """A tiny BrainAE trained on ``tiny_sim`` and exported: (bundle dir, data dir)."""
    from neuralign.config import load_config
    from neuralign.offline.runs import export_run
    from neuralign.offline.train import run_training

    _, cfg_path, data = tiny_sim
    root = tmp_path_factory.mktemp("tiny_bundle")
    cfg = load_config(cfg_path, FAST_TRAIN)
    run_training(cfg, root / "run", data, None, progress=False)
    export_run(root / "run", root / "bundle")
    return root / "bundle", data


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """A tiny BrainAE pretrained on two simulated subjects (another paradigm than ``tiny_sim``,
    as a lab's own images differ from the pretraining's): (run dir, data dir, config)."""
    from neuralign.offline.simulator import simulate
    from neuralign.offline.train import run_training

    root = tmp_path_factory.mktemp("tiny_pretrained")
    cfg, _ = tiny_config(root, ["dataset.simulation.seed=11",
                                "dataset.simulation.n_subjects=2", "dataset.subjects=[1, 2]",
                                *FAST_TRAIN])
    simulate(cfg.dataset.simulation, root / "data", preprocessing=cfg.preprocessing)
    run_training(cfg, root / "run", root / "data", None, progress=False)
    return root / "run", root / "data", cfg


# A generator small enough to train in seconds (FLIG, issue 14); its shapes are the real ones.
TINY_FLIG = ["generative.flig.cae_epochs=1", "generative.flig.flow_epochs=1",
             "generative.flig.cae_width=0.125", "generative.flig.n_units_x=2",
             "generative.flig.coupling_hidden=32", "training.device=cpu"]


@pytest.fixture(scope="session")
def tiny_generator_bundle(tiny_bundle, tmp_path_factory):
    """``tiny_bundle``'s BrainAE run exported with a tiny FLIG trained on its brain embeddings:
    (bundle dir, data dir, BrainAE run dir, generator run dir)."""
    from neuralign.config import load_config
    from neuralign.offline.generative.from_run import paired_from_run
    from neuralign.offline.generative.runs import train_generative
    from neuralign.offline.runs import export_run

    bundle_dir, data = tiny_bundle
    brain_run = bundle_dir.parent / "run"
    root = tmp_path_factory.mktemp("tiny_generator")
    paired = paired_from_run(brain_run, root / "paired.npz")
    train_generative(load_config("flig", TINY_FLIG), paired, root / "gen_run")
    export_run(brain_run, root / "bundle", root / "gen_run")
    return root / "bundle", data, brain_run, root / "gen_run"
