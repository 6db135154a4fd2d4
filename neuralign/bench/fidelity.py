"""``neuralign bench fidelity``: BrainAE vs ridge on data families it was not tuned to."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The robustness matrix (families x sizes x SNRs) and the training settings."""
    p.add_argument("--out", default=".neuralign-cache/fidelity", help="data, runs and tables")
    p.add_argument("--families", default="forward,linear,nonlinear",
                   help="comma-separated subset of forward, linear, nonlinear")
    p.add_argument("--sizes", default="800,4000", help="training images per cell")
    p.add_argument("--snrs", default="0.3,1.0")
    p.add_argument("--layout", default="official", choices=["official", "nice"],
                   help="official: 17 ch x 100 Hz (CPU-sized); nice: 63 ch x 250 Hz")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Every cell of the matrix, one table row printed as each finishes, then the table."""
    from neuralign.offline.fidelity import fidelity_bench, format_table, matrix

    specs = matrix([f.strip() for f in args.families.split(",")],
                   [int(s) for s in args.sizes.split(",")],
                   [float(s) for s in args.snrs.split(",")], args.layout, args.seed)
    cells = fidelity_bench(Path(args.out), specs, args.epochs, args.set, args.threads,
                           on_cell=lambda c: print(format_table([c]).splitlines()[2], flush=True))
    print(format_table(cells))
    return 0


MEASUREMENT = Measurement(
    name="fidelity", order=70, help="BrainAE vs ridge on the robustness matrix",
    description="Train BrainAE and ridge on simulated data families (forward model, linear "
    "and nonlinear component models) and compare them with paired bootstrap CIs.",
    add_arguments=add_arguments, run=run,
)
