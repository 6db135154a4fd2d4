"""``neuralign bench soak``: replay + engine + recorder for hours of stream time at ``--speed`` x;
dropped samples, memory start/end, p99 latency first vs last 10 %."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement, add_bundle_and_recording, bundle_and_recording
from neuralign.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The recording, duration and speed of the soak."""
    add_bundle_and_recording(p, "continuous .fif with annotations to loop (default: the demo's "
                   "simulated test session)")
    p.add_argument("--hours", type=float, default=2.0,
                   help="stream time to replay, hours (default %(default)s)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="replay speed, x real time (default %(default)s)")
    p.add_argument("--record", help="keep the recording in this directory (default: a "
                   "temporary one, deleted)")
    p.add_argument("--json", help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Soak, print the report; exit code 1 unless no sample was dropped."""
    import logging

    from neuralign.realtime.soak import run_soak

    bundle, raw = bundle_and_recording(args)
    if args.hours <= 0 or args.speed <= 0:
        raise UserError("--hours and --speed must be > 0")
    logging.getLogger("neuralign.realtime.soak").setLevel(logging.INFO)
    rep = run_soak(bundle, raw, equivalent_s=args.hours * 3600, speed=args.speed,
                   record_dir=Path(args.record) if args.record else None,
                   keep_recording=bool(args.record), out=Path(args.json) if args.json else None)
    print("\n".join(rep.lines()))
    return 0 if rep.dropped_samples == 0 else 1


MEASUREMENT = Measurement(
    name="soak", order=30, help="hours of replay + engine + recorder, faster than real time",
    description="Loop a recording over LSL at --speed x real time for --hours of stream "
    "time, decode it and record it; report decoded trials, dropped samples (exit code 1 "
    "unless 0), resident memory after warm-up and at the end, and the p99 engine latency "
    "of the first vs the last 10 % of trials.",
    add_arguments=add_arguments, run=run,
)
