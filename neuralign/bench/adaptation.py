"""``neuralign bench adaptation``: accuracy against minutes of a new subject's data, from scratch
and fine-tuned from a run pretrained on other subjects."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Subjects, minutes, epochs and where to write."""
    p.add_argument("--out", default=".neuralign-cache/bench-adaptation",
                   help="work directory: simulated subjects, runs, report.json (default %(default)s)")
    p.add_argument("--subjects", type=int, default=10, help="simulated subjects (default %(default)s)")
    p.add_argument("--pretrain", type=int, default=6,
                   help="the first N subjects pretrain; the rest are held out (default %(default)s)")
    p.add_argument("--minutes", type=_floats, default=(2.0, 5.0, 10.0),
                   help="minutes of a held-out subject fine-tuned on (default 2,5,10)")
    p.add_argument("--scratch-minutes", type=_floats, default=(2.0, 5.0, 10.0, 20.0),
                   help="minutes trained on from scratch (default 2,5,10,20)")
    p.add_argument("--pretrain-minutes", type=float, default=15.0,
                   help="minutes of each pretraining subject (default %(default)s)")
    p.add_argument("--scratch-epochs", type=int, default=30, help="(default %(default)s)")
    p.add_argument("--fine-tune-epochs", type=int, default=20, help="(default %(default)s)")
    p.add_argument("--pretrain-epochs", type=int, default=15, help="(default %(default)s)")
    p.add_argument("--snr", type=float, default=0.5, help="simulated SNR (default %(default)s)")
    p.add_argument("--seed", type=int, default=2, help="simulation seed (default %(default)s; "
                   "seed 0 chose the epochs and the fine-tuning schedule)")
    p.add_argument("--jobs", type=int, default=2,
                   help="trainings run at once, one torch thread each (default %(default)s)")
    p.add_argument("--json", help="also copy report.json here")


def run(args: argparse.Namespace) -> int:
    """Run the plan and print the table (minutes x scratch / pretrained, CIs over subjects)."""
    import shutil

    from neuralign.offline.adaptation_bench import (
        AdaptationPlan,
        format_report,
        run_adaptation_bench,
    )

    plan = AdaptationPlan(
        n_subjects=args.subjects, n_pretrain=args.pretrain, minutes=args.minutes,
        scratch_minutes=args.scratch_minutes, pretrain_minutes=args.pretrain_minutes,
        scratch_epochs=args.scratch_epochs, fine_tune_epochs=args.fine_tune_epochs,
        pretrain_epochs=args.pretrain_epochs, snr=args.snr, seed=args.seed, jobs=args.jobs)
    report = run_adaptation_bench(plan, Path(args.out))
    print(format_report(report))
    if args.json:
        shutil.copyfile(Path(args.out) / "report.json", args.json)
    return 0


MEASUREMENT = Measurement(
    name="adaptation", order=80, help="accuracy vs minutes of a new subject's data, scratch vs "
    "pretrained",
    description="Simulates several subjects, pretrains a shared encoder on the first ones, then "
    "for every held-out subject trains from scratch and fine-tunes the pretrained run on 2, 5, "
    "10... minutes of its data; prints retrieval top-1 / top-5 with 95 % intervals over the "
    "held-out subjects and whether 5 pretrained minutes match twice the scratch data.",
    add_arguments=add_arguments, run=run,
)
