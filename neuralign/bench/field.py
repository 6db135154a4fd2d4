"""``neuralign bench field``: device timing profiles x faults, live against offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement, add_bundle_and_recording, bundle_and_recording
from neuralign.errors import UserError

#: the faults ``--faults`` accepts
FAULTS = ("none", "gap", "uV", "gap+uV", "nan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The recording, the profiles and faults to cross, and the seed."""
    add_bundle_and_recording(p, "continuous .fif with annotations (default: the demo's "
                   "simulated test session)")
    p.add_argument("--profiles", help="comma-separated timing profiles (default: wired-1khz, "
                   "cyton-dongle, consumer-256, brainflow)")
    p.add_argument("--faults", help="comma-separated faults of none, gap, uV, gap+uV, nan "
                   "(default: all)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of the recording to replay per case (default %(default)s; 0: "
                   "all)")
    p.add_argument("--seed", type=int, default=0, help="timing profiles' seed")
    p.add_argument("--json", help="also write the outcomes to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Every profile x fault case; exit code 1 unless every case holds."""
    import mne

    from neuralign.bundle import load_bundle
    from neuralign.offline.field import DEFAULT_FAULTS, DEFAULT_PROFILES, run_field_bench
    from neuralign.realtime.replay import PROFILES

    bundle_dir, raw_path = bundle_and_recording(args)
    profiles = args.profiles.split(",") if args.profiles else list(DEFAULT_PROFILES)
    faults = args.faults.split(",") if args.faults else list(DEFAULT_FAULTS)
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise UserError(f"--profiles: unknown {unknown} (known: {', '.join(PROFILES)})")
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise UserError(f"--faults: unknown {bad} (known: {', '.join(FAULTS)})")
    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    if args.duration:
        raw.crop(0, min(args.duration, raw.times[-1]))
    outcomes = run_field_bench(load_bundle(bundle_dir), raw, profiles, faults,
                               json_out=Path(args.json) if args.json else None, seed=args.seed)
    return 0 if all(o.ok for o in outcomes) else 1


MEASUREMENT = Measurement(
    name="field", order=40,
    help="device timing profiles x faults: decoded / expected, parity, gaps",
    description="Replay a recording over LSL as real devices deliver it (neuralign replay "
    "--timing profiles: stamps taken at the push or on arrival, jitter, drift, stalls), "
    "with one real gap, in microvolts or with one NaN; the engine decodes and records it. "
    "Reports, per profile and fault: epochs decoded / expected (those whose samples all "
    "arrived), parity with offline decoding of the recording, gap epochs dropped / spanning, "
    "gaps and lost samples reported / injected, the worst marker placement against the "
    "true onset, the stamp jitter and the latency. Exit code 1 unless every case holds.",
    add_arguments=add_arguments, run=run,
)
