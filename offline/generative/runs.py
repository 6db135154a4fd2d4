"""Run directories of the generative decoders: ``train_generative``, ``evaluate_generative``,
``load_generative``.

A run holds ``config.yaml``, ``paired.npz`` (the exact arrays trained and tested on),
``model.safetensors``, ``history.json``; ``evaluate`` adds ``report.json``, ``decoded_test.npy``
(N_test, S, S[, 3] float in [0, 1], test order) and ``figures/decoded_grid.png``.

The engine's contract is :func:`load_generative` -> an object with
``generate(responses (n, M) float, training units) -> (n, S, S) or (n, S, S, 3) float32 in [0, 1]``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from neuralign.config import Config, config_from_dict, dump_config
from neuralign.errors import DataError

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
GENERATIVE_MODELS = ("flig", "smr_icg", "prior_map")


def is_generative_run(run_dir: Path) -> bool:
    """True when ``run_dir/config.yaml`` names a generative model (the CLI's dispatch test)."""
    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        return False
    tree = yaml.safe_load(cfg.read_text()) or {}
    return (tree.get("model") or {}).get("name") in GENERATIVE_MODELS


def _device(config: Config) -> torch.device:
    from neuralign.offline.train import resolve_device

    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    return resolve_device(config.training.device)


def _load_data(config: Config, data: Path | None):
    from neuralign.offline.generative.paired import load_paired_dataset

    gen = config.generative
    path = Path(data) if data is not None else config.dataset.path
    return load_paired_dataset(config.dataset.kind, path, gen.image_size, gen.grayscale,
                               config.dataset.subject)


def train_generative(config: Config, data: Path | None, out: Path) -> dict:
    """Train ``config.model.name`` (flig | smr_icg) on paired data; write the run directory."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paired = _load_data(config, data)
    device = _device(config)
    t0 = time.perf_counter()
    if config.model.name == "flig":
        from neuralign.offline.generative.flig_train import train_flig

        model, hist = train_flig(paired.train_images, paired.train_responses, config.generative.flig,
                                 device, seed=config.training.seed, extra_images=paired.extra_images)
        history = {"cae_val_mse": hist.cae_val_mse, "flow": hist.flow_val,
                   "best_cae_epoch": hist.best_cae_epoch, "best_flow_epoch": hist.best_flow_epoch,
                   "seconds_stage1": hist.seconds_cae, "seconds_stage2": hist.seconds_flow}
    elif config.model.name == "smr_icg":
        from neuralign.offline.generative.smr_icg_train import train_smr_icg

        model, history = train_smr_icg(paired, config.generative, device, seed=config.training.seed)
    elif config.model.name == "prior_map":
        from neuralign.offline.generative.prior_map_train import train_prior_map

        model, hist = train_prior_map(paired.train_images, paired.train_responses,
                                      config.generative.prior_map, device, seed=config.training.seed,
                                      extra_images=paired.extra_images)
        history = hist.to_dict()
    else:
        raise DataError(f"model.name {config.model.name!r} is not a generative model")
    history["seconds"] = time.perf_counter() - t0
    history["device"] = str(device)
    history["n_train"], history["n_test"], history["n_units"] = (
        len(paired.train_images), len(paired.test_images), paired.n_units)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / MODEL_FILE))
    (out / "config.yaml").write_text(yaml.safe_dump(dump_config(config), sort_keys=False))
    paired.save(out / "paired.npz")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    log.info("%s run written to %s in %.0f s", config.model.name, out, history["seconds"])
    return history


def build_generative(config: Config, n_units: int, image_shape: tuple[int, ...], state: dict | None = None):
    """The model object of a config and data shape (weights from ``state`` when given)."""
    from neuralign.models.generators import build_generator  # the bundle builds with it too

    gen = config.generative
    channels = 1 if len(image_shape) == 2 else image_shape[2]
    model = build_generator(config.model.name, gen, n_units, image_shape[0], channels, state)
    if config.model.name == "smr_icg":
        model._gen_config, model._smr_config = gen, gen.smr
    return model


def load_generative(run_dir: Path):
    """(config, paired data, model) of a finished generative run; ``model.generate`` decodes."""
    from safetensors.torch import load_file

    from neuralign.offline.generative.paired import PairedData

    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / "config.yaml", run_dir / MODEL_FILE
    if not cfg_path.is_file():
        raise DataError(f"{cfg_path}: not found - is {run_dir} a run written by 'neuralign train'?")
    if not weights.is_file():
        raise DataError(f"{weights}: no weights - training did not finish")
    config = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    paired = PairedData.load(run_dir / "paired.npz")
    model = build_generative(config, paired.n_units, paired.image_shape, load_file(weights))
    return config, paired, model


def evaluate_generative(run_dir: Path, json_path: Path | None = None) -> dict:
    """Decoding (and encoding) metrics of the run and its baselines; writes the report files."""
    from neuralign.offline.generative import metrics as M

    run_dir = Path(run_dir)
    config, paired, model = load_generative(run_dir)
    t0 = time.perf_counter()
    decoded = model.generate(paired.test_responses)
    np.save(run_dir / "decoded_test.npy", decoded.astype(np.float32))
    report: dict = {"run": str(run_dir), "model": config.model.name,
                    "n_train": len(paired.train_images), "n_test": len(paired.test_images),
                    "n_units": paired.n_units,
                    "decoding": M.decoding_metrics(decoded, paired.test_images), "baselines": {}}
    ridge = M.ridge_pixel_decoder(paired.train_responses, paired.train_images, paired.test_responses)
    report["baselines"]["ridge_pixel"] = M.decoding_metrics(ridge, paired.test_images)
    counts = bool((paired.train_responses >= 0).all())
    rows, labels = [paired.test_images, decoded, ridge], ["true", config.model.name, "ridge"]
    if config.model.name == "flig":
        lo, hi = paired.train_responses.min(0), paired.train_responses.max(0)
        scale = np.maximum((hi - lo) / 2, 1e-6)
        enc = model.encode(paired.test_images)
        report["encoding"] = M.encoding_metrics(enc, paired.test_responses, (hi + lo) / 2, scale, counts)
        if counts:
            lnp = M.lnp_encoder(paired.train_images, paired.train_responses, paired.test_images)
            report["baselines"]["lnp"] = M.encoding_metrics(lnp, paired.test_responses, (hi + lo) / 2,
                                                            scale, counts)
    elif config.model.name == "prior_map":  # the same decoder without its prior: the ablation
        linear = model.linear(paired.test_responses)
        report["baselines"]["prior_map_linear_start"] = M.decoding_metrics(linear, paired.test_images)
    else:
        from neuralign.offline.generative.smr_icg_train import evaluate_smr_icg

        extra = evaluate_smr_icg(model, paired)  # SMR's own numbers, CVAE / CGAN baselines
        report.update(extra["report"])
        for name, imgs in extra.get("baseline_images", {}).items():
            report["baselines"][name] = M.decoding_metrics(imgs, paired.test_images)
            rows.append(imgs)
            labels.append(name)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    M.image_grid(rows, labels, fig_dir / "decoded_grid.png")
    report["figures"] = [str(fig_dir / "decoded_grid.png")]
    report["decoded_test"] = str(run_dir / "decoded_test.npy")
    history = run_dir / "history.json"
    if history.is_file():
        report["training_seconds"] = json.loads(history.read_text()).get("seconds")
    report["evaluation_seconds"] = time.perf_counter() - t0
    out = Path(json_path) if json_path else run_dir / "report.json"
    out.write_text(json.dumps(report, indent=1))
    return report
