"""Adapting a run pretrained on several subjects to a new subject (``neuralign train --init``).

The adapted model is the pretrained one with a subject layer of its own: a BrainAE with
``spatial_projection = C`` whose (C, C) projection is the new subject's input layer, started at
the mean of the pretrained subjects' layers (:func:`neuralign.models.subject_layers.
subject_layer_for_new_subject`). Everything behind it (the shared encoder, the decoder, the image
projection, the temperature) starts from the pretrained weights. So an adapted run is an ordinary
single-subject run: evaluate, export, the bundle and the engine need nothing new.

Channels are matched by name: the new subject may list them in another order, and may have
channels the pretraining did not (their columns of the layer, and the decoder's rows for them,
start at zero); it must have every channel the pretraining had.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from neuralign.config import Config, config_from_dict, dump_config
from neuralign.errors import UserError, require_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pretrained:
    """What a fine-tuning run takes from its pretrained run."""

    run_dir: Path
    config: Config
    state: dict[str, torch.Tensor]
    ch_names: list[str]
    subjects: list[str]
    feature_dim: int
    n_times: int


def load_pretrained(run_dir: Path) -> Pretrained:
    """The pretrained run's config, weights and channels (one error naming what is missing)."""
    from safetensors.torch import load_file

    from neuralign.offline.prepare import Prepared
    from neuralign.offline.run_dir import MODEL_FILE

    run_dir = Path(run_dir)
    cfg_path = require_file(run_dir / "config.yaml",
                            f"not found - is {run_dir} a run written by 'neuralign train'?")
    config = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    if config.model.traits.loss != "brainae":
        raise UserError(f"training.fine_tune.init: {run_dir} is a {config.model.name} run; "
                        "adapting to a new subject is built for BrainAE runs")
    prep = Prepared.load(run_dir / "prepared.npz")
    state = load_file(require_file(run_dir / MODEL_FILE, "no checkpoint - training did not finish"))
    return Pretrained(run_dir, config, state, list(prep.ch_names), list(prep.subjects) or ["1"],
                      int(prep.f_train.shape[1]), int(prep.x_train.shape[3]))


def adapted_config(config: Config, pre: Pretrained, ch_names: list[str], n_times: int,
                   feature_dim: int) -> Config:
    """This run's config with the pretrained model's architecture and a subject layer of its own
    (``spatial_projection`` = the channels the shared encoder was pretrained on). Refuses what cannot carry over."""
    if n_times != pre.n_times or feature_dim != pre.feature_dim:
        raise UserError(
            f"training.fine_tune.init: {pre.run_dir} was trained on epochs of {pre.n_times} "
            f"samples and {pre.feature_dim}-d image features; this data has {n_times} and "
            f"{feature_dim} (use the pretrained run's preprocessing and features sections)")
    missing = [c for c in pre.ch_names if c not in ch_names]
    if missing:
        raise UserError(
            f"training.fine_tune.init: this subject lacks {len(missing)} of the pretrained "
            f"channels ({', '.join(missing[:10])}); pretrain on the channels every subject has "
            "(preprocessing.picks) or record them")
    width = pre.config.model.spatial_projection or len(pre.ch_names)
    model = pre.config.model.model_copy(update={"subject_layers": None,
                                                "spatial_projection": width})
    if config.model.model_dump() != model.model_dump():
        log.info("fine-tuning keeps the pretrained model's architecture (%s, k=%d) with a "
                 "subject layer of %d channels", model.name, model.k, len(pre.ch_names))
    return config.model_copy(update={"model": model})


def _shared_rows(pre: Pretrained, ch_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in this subject's channels, positions in the pretrained channels) of the
    channels both have."""
    here = [i for i, c in enumerate(ch_names) if c in pre.ch_names]
    there = [pre.ch_names.index(ch_names[i]) for i in here]
    return np.asarray(here), np.asarray(there)


def initialise_from_pretrained(model: torch.nn.Module, pre: Pretrained,
                               ch_names: list[str]) -> dict:
    """Load the pretrained weights into ``model`` (built from :func:`adapted_config`).

    The subject layer starts at the mean pretrained layer with its columns put in this subject's
    channel order; the decoder's per-channel weights (its spatial kernel, intercept and encoding
    read-out) are taken for the channels both have and start at zero for new ones.
    """
    from neuralign.models.subject_layers import subject_layer_for_new_subject

    here, there = _shared_rows(pre, ch_names)
    own = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    start = torch.eye(len(pre.ch_names))  # a pretrained run of one subject has no layer
    for name, value in pre.state.items():
        if name == "brain_encoder.layers":  # several subjects' layers (S, C_pre, C_pre)
            start = subject_layer_for_new_subject(value)
            continue
        if name == "brain_encoder.projection.weight":  # itself an adapted run: its layer
            start = value.detach().squeeze(-1)
            continue
        key = name
        if name.startswith("brain_encoder.") and not name.startswith("brain_encoder.backbone."):
            key = "brain_encoder.backbone." + name[len("brain_encoder."):]
        if key in own:
            new[key] = _per_channel(name, value, own[key], here, there)
    layer = torch.zeros(start.shape[0], len(ch_names))
    layer[:, torch.as_tensor(here)] = start[:, torch.as_tensor(there)]
    new["brain_encoder.projection.weight"] = layer.unsqueeze(-1)
    missing = sorted(set(own) - set(new))
    model.load_state_dict({**own, **new})
    log.info("initialised from %s (%d tensors; started fresh: %s)", pre.run_dir, len(new),
             ", ".join(missing) or "none")
    return {"run": str(pre.run_dir), "subjects": pre.subjects, "n_chans": len(pre.ch_names),
            "fresh": missing}


def _per_channel(name: str, value: torch.Tensor, target: torch.Tensor, here: np.ndarray,
                 there: np.ndarray) -> torch.Tensor:
    """A pretrained tensor for this subject's channels: unchanged when the shapes agree and the
    channels are the same; else its channel axis re-indexed (new channels at zero)."""
    if value.shape == target.shape and np.array_equal(here, there):
        return value
    axis = _channel_axis(name)
    if axis is None:
        if value.shape != target.shape:
            raise UserError(f"training.fine_tune.init: {name} is {tuple(value.shape)} in the "
                            f"pretrained run but {tuple(target.shape)} here")
        return value
    out = torch.zeros_like(target)
    index_out = [slice(None)] * target.ndim
    index_in = [slice(None)] * value.ndim
    index_out[axis], index_in[axis] = torch.as_tensor(here), torch.as_tensor(there)
    out[tuple(index_out)] = value[tuple(index_in)]
    return out


def _channel_axis(name: str) -> int | None:
    """Which axis of a BrainAE tensor runs over the input channels (None: none does)."""
    if name in ("brain_decoder.output_bias", "encoding_mean", "encoding_center"):
        return 0
    if name == "encoding_linear":
        return 1
    if name == "brain_decoder.spatial.0.weight":  # ConvTranspose2d(k, k, (C, 1))
        return 2
    return None


def fine_tune_groups(model: torch.nn.Module, groups: list[dict], shared_lr: float) -> list[dict]:
    """Split optimiser groups into the subject layer's parameters (the configured rate) and the
    shared ones (``shared_lr``), keeping each group's weight decay. Tagged ``shared``."""
    layer_ids = {id(p) for n, p in model.named_parameters() if n.startswith("brain_encoder.projection.")}
    out = []
    for g in groups:
        mine = [p for p in g["params"] if id(p) in layer_ids]
        rest = [p for p in g["params"] if id(p) not in layer_ids]
        if mine:
            out.append({**g, "params": mine, "shared": False})
        if rest:
            out.append({**g, "params": rest, "shared": True, "lr": shared_lr})
    return out


def set_shared_frozen(opt: torch.optim.Optimizer, frozen: bool, shared_lr: float) -> None:
    """Train only the subject layer (shared groups at learning rate 0) or everything."""
    for g in opt.param_groups:
        if g.get("shared"):
            g["lr"] = 0.0 if frozen else shared_lr


def provenance(pre: Pretrained) -> dict:
    """What a bundle records of its pretraining (written into the run's config and manifest)."""
    return {"run": str(pre.run_dir.resolve()), "subjects": pre.subjects,
            "dataset": dump_config(pre.config)["dataset"], "channels": len(pre.ch_names)}
