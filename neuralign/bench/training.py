"""``neuralign bench training``: BrainAE training throughput for one input shape."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The input shape, batch and step options of the throughput run."""
    p.add_argument("--n-chans", type=int, default=63, help="channels (default %(default)s)")
    p.add_argument("--n-times", type=int, default=250, help="samples per epoch (default %(default)s)")
    p.add_argument("--batch", type=int, default=800, help="batch size (default %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (default %(default)s)")
    p.add_argument("--micro-batch", type=int, default=None, help="gradient-caching micro-batch "
                   "(default: the trainer's); >= --batch runs one graph")
    p.add_argument("--amp", action="store_true", help="bf16 (CPU) / fp16 (CUDA) autocast")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-fold", action="store_true", help="run TSConv's foldable linear pairs as "
                   "written (training.fold: false; with --micro-batch >= --batch: the pre-issue-15 "
                   "step)")
    p.add_argument("--json", help="also write the numbers to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Time the training steps and print samples/s, seconds per step and peak memory."""
    from neuralign.offline.benchmarks import format_throughput, training_throughput

    res = training_throughput(n_chans=args.n_chans, n_times=args.n_times, batch_size=args.batch,
                              steps=args.steps, micro_batch=args.micro_batch, amp=args.amp,
                              threads=args.threads, out=Path(args.json) if args.json else None,
                              fold=not args.no_fold)
    print(format_throughput(res))
    return 0


MEASUREMENT = Measurement(
    name="training", order=10, help="BrainAE training throughput (samples/s)",
    description="BrainAE training throughput (samples/s), seconds per step, peak memory and "
    "the extrapolated full THINGS-EEG2 epoch, for a given input shape (default the "
    "THINGS-EEG2 shape 63 x 250 at the paper's batch 800).",
    add_arguments=add_arguments, run=run,
)
