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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml

from neuralign.config import Config, config_from_dict, dump_config
from neuralign.errors import DataError, require_file

if TYPE_CHECKING:
    from neuralign.offline.generative.paired import PairedData

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


@dataclass
class GenerativeReport:
    """What a generator kind's ablation adds to ``neuralign evaluate``'s output: ``report`` (the
    JSON report: its ``encoding`` / ``baselines`` entries) and the decoded-grid rows and labels."""

    report: dict
    rows: list[np.ndarray]
    labels: list[str]


def is_generative_run(run_dir: Path) -> bool:
    """True when ``run_dir/config.yaml`` names a generative model (the CLI's dispatch test)."""
    from neuralign.models.generators import generator_names

    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        return False
    tree = yaml.safe_load(cfg.read_text()) or {}
    return (tree.get("model") or {}).get("name") in generator_names()


def _device(config: Config) -> torch.device:
    from neuralign.devices import resolve_device

    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    return resolve_device(config.training.device, "training.device")


def _load_data(config: Config, data: Path | None):
    from neuralign.offline.generative.paired import load_paired_dataset

    gen = config.generative
    path = Path(data) if data is not None else config.dataset.path
    return load_paired_dataset(config.dataset.kind, path, gen.image_size, gen.grayscale,
                               config.dataset.subject)


def train_generative(config: Config, data: Path | None, out: Path) -> dict:
    """Train ``config.model.name`` (a generator kind: its declared trainer) on paired data; write
    the run directory."""
    from safetensors.torch import save_file

    from neuralign.models.generators import generator_kind

    try:
        trainer = generator_kind(config.model.name).entry("trainer")
    except ValueError:
        raise DataError(f"model.name {config.model.name!r} is not a generative model") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paired = _load_data(config, data)
    device = _device(config)
    t0 = time.perf_counter()
    model, history = trainer(config, paired, device)
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
    return build_generator(config.model.name, gen, n_units, image_shape[0], channels, state)


def load_generative(run_dir: Path):
    """(config, paired data, model) of a finished generative run; ``model.generate`` decodes."""
    from safetensors.torch import load_file

    from neuralign.offline.generative.paired import PairedData

    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / "config.yaml", run_dir / MODEL_FILE
    require_file(cfg_path, f"not found - is {run_dir} a run written by 'neuralign train'?")
    require_file(weights, "no weights - training did not finish")
    config = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    paired = PairedData.load(run_dir / "paired.npz")
    model = build_generative(config, paired.n_units, paired.image_shape, load_file(weights))
    return config, paired, model


def evaluate_generative(run_dir: Path, json_path: Path | None = None) -> dict:
    """Decoding (and encoding) metrics of the run and its baselines; writes the report files."""
    from neuralign.models.generators import generator_kind
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
    out_rep = GenerativeReport(report, [paired.test_images, decoded, ridge],
                               ["true", config.model.name, "ridge"])
    ablation = generator_kind(config.model.name).entry("ablation")
    if ablation is not None:  # the kind's own numbers, ablations and baselines
        ablation(model, paired, out_rep)
    rows, labels = out_rep.rows, out_rep.labels
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


# ---------------------------------------------------------------------------------------------
# Trainers and ablations of the shipped generator kinds: the entry points their classes declare
# (``generator = GeneratorKind(...)`` in models/flig.py, models/icg.py, models/prior_map.py).


def train_flig_run(config: Config, paired: PairedData,
                   device: torch.device) -> tuple[torch.nn.Module, dict]:
    """FLIG's two stages (auto-encoder, then flows) on the paired data; (model, history)."""
    from neuralign.offline.generative.flig_train import train_flig

    model, hist = train_flig(paired.train_images, paired.train_responses, config.generative.flig,
                             device, seed=config.training.seed, extra_images=paired.extra_images)
    return model, {"cae_val_mse": hist.cae_val_mse, "flow": hist.flow_val,
                   "best_cae_epoch": hist.best_cae_epoch, "best_flow_epoch": hist.best_flow_epoch,
                   "seconds_stage1": hist.seconds_cae, "seconds_stage2": hist.seconds_flow}


def train_smr_icg_run(config: Config, paired: PairedData,
                      device: torch.device) -> tuple[torch.nn.Module, dict]:
    """SMR (sparse multi-output regression to CNN features) then the ICG generator."""
    from neuralign.offline.generative.smr_icg_train import train_smr_icg

    return train_smr_icg(paired, config.generative, device, seed=config.training.seed)


def train_prior_map_run(config: Config, paired: PairedData,
                        device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The denoiser prior, the encoding model and the MAP settings; (model, history)."""
    from neuralign.offline.generative.prior_map_train import train_prior_map

    model, hist = train_prior_map(paired.train_images, paired.train_responses,
                                  config.generative.prior_map, device, seed=config.training.seed,
                                  extra_images=paired.extra_images)
    return model, hist.to_dict()


def flig_ablation(model: torch.nn.Module, paired: PairedData,
                  out: GenerativeReport) -> None:
    """FLIG also encodes (images -> responses): its encoding metrics against an LNP baseline."""
    from neuralign.offline.generative import metrics as M

    counts = bool((paired.train_responses >= 0).all())
    lo, hi = paired.train_responses.min(0), paired.train_responses.max(0)
    scale = np.maximum((hi - lo) / 2, 1e-6)
    enc = model.encode(paired.test_images)
    out.report["encoding"] = M.encoding_metrics(enc, paired.test_responses, (hi + lo) / 2, scale,
                                                counts)
    if counts:
        lnp = M.lnp_encoder(paired.train_images, paired.train_responses, paired.test_images)
        out.report["baselines"]["lnp"] = M.encoding_metrics(lnp, paired.test_responses,
                                                            (hi + lo) / 2, scale, counts)


def prior_map_ablation(model: torch.nn.Module, paired: PairedData,
                       out: GenerativeReport) -> None:
    """The same decoder without its prior (its linear start): the ablation."""
    from neuralign.offline.generative import metrics as M

    linear = model.linear(paired.test_responses)
    out.report["baselines"]["prior_map_linear_start"] = M.decoding_metrics(linear,
                                                                           paired.test_images)


def smr_icg_ablation(model: torch.nn.Module, paired: PairedData,
                     out: GenerativeReport) -> None:
    """SMR's own numbers and the CVAE / CGAN baselines trained with it (grid rows too)."""
    from neuralign.offline.generative import metrics as M
    from neuralign.offline.generative.smr_icg_train import evaluate_smr_icg

    extra = evaluate_smr_icg(model, paired)
    out.report.update(extra["report"])
    for name, imgs in extra.get("baseline_images", {}).items():
        out.report["baselines"][name] = M.decoding_metrics(imgs, paired.test_images)
        out.rows.append(imgs)
        out.labels.append(name)
