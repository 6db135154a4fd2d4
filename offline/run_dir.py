"""A finished run directory read back: its config, prepared arrays and trained model.

Why a module of its own: both the run commands (:mod:`neuralign.offline.runs`: evaluate, export)
and the generators trained on a run's embeddings (:mod:`neuralign.offline.generative.from_run`)
read runs, and the export also embeds such a generator; neither imports the other to read a run.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from neuralign.config import config_from_dict
from neuralign.errors import require_file

#: the best-validation checkpoint of a run (written by :mod:`neuralign.offline.train`)
MODEL_FILE = "model.safetensors"


def load_run(run_dir: Path):
    """(config, prepared, model) of a finished run; missing pieces are one DataError."""
    import torch
    from safetensors.torch import load_file

    from neuralign.models import build_model
    from neuralign.offline.prepare import Prepared

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    require_file(cfg_path, f"not found - is {run_dir} a run written by 'neuralign train'?")
    config = config_from_dict(yaml.safe_load(cfg_path.read_text()), str(cfg_path))
    prep = Prepared.load(run_dir / "prepared.npz")
    weights = run_dir / MODEL_FILE
    require_file(weights, "no checkpoint - training did not finish")
    model = build_model(config.model, n_chans=prep.x_train.shape[2], n_times=prep.x_train.shape[3],
                        feature_dim=prep.f_train.shape[1])
    model.load_state_dict(load_file(weights))
    torch.set_grad_enabled(True)
    return config, prep, model.eval()
