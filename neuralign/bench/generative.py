"""``neuralign bench generative``: generative decoders vs tuned baselines on fresh seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Families, seeds and decoders to score, and where the cache and tables go."""
    from neuralign.offline.generative.bench import (
        ABLATIONS,
        DEFAULT_DECODERS,
        DEFAULT_OUT,
        FAMILIES,
        REPORT_SEEDS,
    )

    p.add_argument("--families", default="lnp,subunit",
                   help=f"comma-separated, of {', '.join(FAMILIES)} (default %(default)s)")
    p.add_argument("--seeds", default=",".join(map(str, REPORT_SEEDS)),
                   help="simulator seeds (default: the report seeds %(default)s)")
    p.add_argument("--decoders", default=",".join(DEFAULT_DECODERS),
                   help="comma-separated (default %(default)s; flig adds ridge_cae_codes; "
                   f"ablations of prior_map: {', '.join(ABLATIONS)})")
    p.add_argument("--no-train", action="store_true",
                   help="score FLIG / SMR+ICG runs that exist in the cache, train none")
    p.add_argument("--dev", action="store_true", help="allow development seeds (marked as such)")
    p.add_argument("--report-only", action="store_true",
                   help="decode nothing: tabulate the scores already in OUT/scores.jsonl")
    p.add_argument("--out", default=str(DEFAULT_OUT),
                   help="data, runs, scores and bench_generative.json/.md (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run the bench as the parsed options say and print the tables."""
    from neuralign.offline.generative.bench import run_bench

    rep = run_bench(_csv(args.families), [int(s) for s in _csv(args.seeds)], _csv(args.decoders),
                    Path(args.out), train_slow=not args.no_train, dev=args.dev,
                    report_only=args.report_only)
    print(rep["table"])
    print(f"\nwritten: {Path(args.out) / 'bench_generative.json'} and .md")
    return 0


MEASUREMENT = Measurement(
    name="generative", order=60,
    help="generative decoders vs equally tuned baselines, fresh seeds, CIs",
    description="FLIG, SMR+ICG and the MAP decoder with a learned denoiser prior against "
    "tuned ridge decoders and the floors (mean training image, retrieved training image) on "
    "fresh simulator seeds (development seeds are refused): SSIM, pixel correlation, 2-way "
    "identification in pixels and features, sharpness, diversity; means over seeds with "
    "95 % CIs and paired bootstrap differences. Writes OUT/bench_generative.json and .md.",
    add_arguments=add_arguments, run=run,
)
