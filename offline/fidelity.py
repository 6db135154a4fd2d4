"""Fidelity bench: BrainAE against its own ridge baselines on data it was not tuned to.

For every cell of a robustness matrix (data family x training size x SNR, see
:mod:`neuralign.offline.simulator.families`) it writes the data in THINGS-EEG2 layout, runs the
user path (``things_eeg2`` config -> prepare -> train -> evaluate) and scores BrainAE and ridge
with bootstrap confidence intervals over test images: retrieval top-1 / top-5, decoding AUC,
encoding r per image and across images. ``neuralign bench fidelity --help``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay inside the functions
    from neuralign.offline.simulator.families import FamilySpec

log = logging.getLogger(__name__)

def ridge_quantities(prep) -> tuple[dict, dict]:
    """Ridge's per-image quantities (same fits as :func:`evaluate.ridge_baselines`) and its report."""
    from neuralign.offline.evaluate import ridge_baselines, scored_quantities
    from neuralign.offline.preprocess import visual_channel_mask

    rep = ridge_baselines(prep, return_predictions=True)
    visual = visual_channel_mask(prep.ch_names)
    q = scored_quantities(rep.pop("_similarity"), rep.pop("_encoding_prediction"),
                          prep.x_test.mean(axis=1), visual)
    return q, rep


def run_cell(spec: FamilySpec, root: Path, epochs: int | None = None,
             overrides: Sequence[str] = (), threads: int = 1) -> dict:
    """Write the cell's data, train BrainAE with the ``things_eeg2`` config, compare with ridge."""
    import torch

    from neuralign.config import load_config
    from neuralign.offline.evaluate import bootstrap_compare
    from neuralign.offline.prepare import prepare
    from neuralign.offline.simulator.families import write_family
    from neuralign.offline.train import train_model

    torch.set_num_threads(threads)
    data, features = write_family(spec, root / "data" / spec.name)
    sets = [*overrides, "training.device=cpu", f"training.num_threads={threads}"]
    if epochs:
        sets.append(f"training.epochs={epochs}")
    config = load_config("things_eeg2", sets)
    t0 = time.perf_counter()
    prep = prepare(config, data, features)
    run_dir = root / "runs" / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    prep.save(run_dir / "prepared.npz")  # load_run reads it, and the run can be evaluated later
    summary = train_model(config, prep, run_dir, progress=False)
    from neuralign.offline.run_dir import load_run

    _, _, model = load_run(run_dir)
    from neuralign.offline.evaluate import Evaluator

    mq = Evaluator(model, prep).per_image_quantities()
    rq, _ = ridge_quantities(prep)
    cell = {"cell": spec.name, "spec": asdict(spec), "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"], "train_seconds": summary["seconds"],
            "encoding_gain": summary.get("encoding_calibration", {}).get("gain"),
            "metrics": bootstrap_compare(mq, rq), "seconds": time.perf_counter() - t0}
    log.info("%s done in %.0f s", spec.name, cell["seconds"])
    return cell


def matrix(families: Sequence[str] = ("forward", "linear", "nonlinear"), sizes: Sequence[int] = (800, 4000),
           snrs: Sequence[float] = (0.3, 1.0), layout: str = "official", seed: int = 0
           ) -> list[FamilySpec]:
    """The robustness matrix: every family x training size x SNR."""
    from neuralign.offline.simulator.families import FamilySpec

    return [FamilySpec(family=f, n_train_images=n, snr=s, layout=layout, seed=seed)
            for f in families for n in sizes for s in snrs]


def format_table(cells: list[dict]) -> str:
    """Markdown table: BrainAE / ridge per metric with 95 % CIs; (+)/(-) mark significant differences."""
    from neuralign.offline.evaluate import METRICS

    head = ("| cell | best ep | " + " | ".join(
        f"{m} BrainAE / ridge" for m in METRICS) + " |")
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    for c in cells:
        row = [c["cell"], f"{c['best_epoch'] + 1}/{c['epochs']}"]
        for m in METRICS:
            v = c["metrics"].get(m)
            if v is None:
                row.append("-")
                continue
            mark = {"worse": " (-)", "better": " (+)", "no": ""}[v["significant"]]
            row.append(f"{v['model']:.3f} [{v['model_ci'][0]:.2f}, {v['model_ci'][1]:.2f}] / "
                       f"{v['ridge']:.3f} [{v['ridge_ci'][0]:.2f}, {v['ridge_ci'][1]:.2f}]{mark}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("\n(+)/(-): BrainAE significantly better/worse than ridge (paired bootstrap over "
                 "test images, 95 % CI of the difference excludes 0).")
    return "\n".join(lines)


def fidelity_bench(out: Path, specs: Sequence[FamilySpec], epochs: int | None = None,
                   overrides: Sequence[str] = (), threads: int = 1,
                   on_cell: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every cell (serially), writing ``fidelity.json`` and ``fidelity.md`` after each."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for spec in specs:
        cells.append(run_cell(spec, out, epochs, overrides, threads))
        (out / "fidelity.json").write_text(json.dumps(cells, indent=1))
        (out / "fidelity.md").write_text(format_table(cells) + "\n")
        if on_cell is not None:
            on_cell(cells[-1])
    return cells
