"""``neuralign bench mua-encoder``: the 1024-channel encoder with and without its spatial
projection, forward time and retrieval on TVSD-like simulated data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from neuralign.bench._base import Measurement
from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.offline.mua_encoder_bench import MuaBenchSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench's options, their defaults those of
    :class:`~neuralign.offline.mua_encoder_bench.MuaBenchSettings`."""
    from neuralign.offline.mua_encoder_bench import DEFAULT_OUT, MuaBenchSettings

    d = MuaBenchSettings()
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="data, runs and mua_encoder_bench.json (default %(default)s)")
    p.add_argument("--json", help="also copy the JSON result here")
    p.add_argument("--timing-only", action="store_true", help="forward time only (seconds)")
    p.add_argument("--candidates", default=";".join(d.candidates),
                   help="';'-separated candidates, each ','-separated model settings on top of "
                   "today's encoder (default %(default)s)")
    p.add_argument("--candidate", help="skip the selection, compare this candidate")
    p.add_argument("--select-seed", type=int, default=d.select_seed,
                   help="simulator seed the size is chosen on (default %(default)s)")
    p.add_argument("--test-seed", type=int, default=d.test_seed,
                   help="simulator seed of the reported comparison (default %(default)s)")
    p.add_argument("--train-concepts", type=int, default=d.n_train_concepts,
                   help="training concepts (default %(default)s)")
    p.add_argument("--images-per-concept", type=int, default=d.images_per_train_concept,
                   help="training images per concept (default %(default)s)")
    p.add_argument("--test-concepts", type=int, default=d.n_test_concepts,
                   help="test images, one per concept (default %(default)s)")
    p.add_argument("--test-repetitions", type=int, default=d.test_repetitions,
                   help="repetitions per test image (default %(default)s)")
    p.add_argument("--snr", type=float, default=d.snr, help="simulator snr (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="training epochs, both models (default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads for timing and training (default %(default)s)")
    p.add_argument("--timing-calls", type=int, default=d.timing_calls,
                   help="timed calls per model and batch size (default %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override for both models' training (repeatable)")


def settings_from_args(args: argparse.Namespace) -> MuaBenchSettings:
    """The parsed options as bench settings; a bad candidate or count is one user error."""
    from neuralign.config import load_config
    from neuralign.offline.mua_encoder_bench import MuaBenchSettings, candidate_overrides

    candidates = tuple(c.strip() for c in args.candidates.split(";") if c.strip())
    if not candidates:
        raise UserError("--candidates: expected at least one, e.g. spatial_projection=64")
    for c in (*candidates, *([args.candidate] if args.candidate else [])):
        load_config("tvsd", candidate_overrides(c))  # a bad key or value: one ConfigError
    for name, value in (("--epochs", args.epochs), ("--threads", args.threads),
                        ("--timing-calls", args.timing_calls)):
        if value < 1:
            raise UserError(f"{name}: expected >= 1, got {value}")
    return MuaBenchSettings(
        candidates=candidates, candidate=args.candidate, select_seed=args.select_seed,
        test_seed=args.test_seed, n_train_concepts=args.train_concepts,
        images_per_train_concept=args.images_per_concept, n_test_concepts=args.test_concepts,
        test_repetitions=args.test_repetitions, snr=args.snr, epochs=args.epochs,
        threads=args.threads, timing_calls=args.timing_calls, timing_only=args.timing_only,
        overrides=list(args.overrides))


def run(args: argparse.Namespace) -> int:
    """Run the bench as the parsed options say; print the summary; copy the JSON if asked."""
    from neuralign.offline.mua_encoder_bench import format_summary, run_bench

    res = run_bench(settings_from_args(args), Path(args.out))
    print(format_summary(res))
    if args.json:
        Path(args.json).write_text((Path(args.out) / "mua_encoder_bench.json").read_text())
    return 0


MEASUREMENT = Measurement(
    name="mua-encoder", order=50,
    help="1024-channel MUA encoder: spatial projection vs none, time and retrieval",
    description="BrainAE's brain encoder on 1024-channel MUA with and without the learned "
    "spatial projection (model.spatial_projection): the engine's forward time at batch 1 "
    "and 4 on one thread (both models interleaved in one run) and per encoder stage; the "
    "projection size chosen on one simulator seed's zero-shot test concepts; today's model "
    "and the chosen one trained alike and scored (retrieval top-1 / top-5, paired "
    "bootstrap) on another seed's. Prints a summary; writes OUT/mua_encoder_bench.json.",
    add_arguments=add_arguments, run=run,
)
