"""``bench``: what training throughput and the engine's latency are on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.cli.parser import DEFAULT_DATA_DIR
from neuralign.errors import UserError


def cmd_bench(args: argparse.Namespace) -> int:
    """``neuralign bench``: training throughput, or the engine's latency stage by stage."""
    if args.what == "fidelity":  # issue 13: BrainAE vs ridge on data families it was not tuned to
        from neuralign.offline.fidelity import format_table, run_from_args

        print(format_table(run_from_args(args)))
        return 0
    if args.what == "latency":
        from neuralign.realtime.bench import format_report, latency_benchmark

        bundle = Path(args.bundle or DEFAULT_DATA_DIR / "demo-bundle")
        raw = Path(args.raw or DEFAULT_DATA_DIR / "demo-data" / "sim_test_raw.fif")
        for p, what in ((bundle, "--bundle"), (raw, "--raw")):
            if not p.exists():
                raise UserError(f"{what}: {p} not found (run 'neuralign demo --headless' first, "
                                "or pass it)")
        res = latency_benchmark(bundle, raw, duration_s=args.duration, chunk_size=args.chunk_size,
                                batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                                out=Path(args.json) if args.json else None)
        print(format_report(res))
        return 0
    from neuralign.offline.benchmarks import training_throughput

    res = training_throughput(n_chans=args.n_chans, n_times=args.n_times, batch_size=args.batch,
                              steps=args.steps, out=Path(args.json) if args.json else None)
    print(f"BrainAE training throughput ({res['n_chans']} x {res['n_times']}, batch "
          f"{res['batch_size']}, {res['device']}, {res['threads']} threads): "
          f"{res['samples_per_second']:.1f} samples/s ({res['seconds_per_step'] * 1e3:.0f} ms/step)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench``."""
    p = sub.add_parser(
        "bench", help="measure what the engine adds to latency, stage by stage",
        description="'training': BrainAE training throughput (samples/s) for a given input shape "
        "(default the THINGS-EEG2 shape 63 x 250). 'latency': replay a recording over LSL, "
        "decode it live, and report end-to-end latency (consumer receive time - timestamp of "
        "the epoch's last input sample) with p50/p95/p99/max per engine stage.",
    )
    p.add_argument("what", choices=["training", "latency", "fidelity"], help="what to measure")
    p.add_argument("--n-chans", type=int, default=63)
    p.add_argument("--n-times", type=int, default=250)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--bundle", help="latency: bundle (default: the demo's)")
    p.add_argument("--raw", help="latency: continuous .fif with annotations to replay "
                   "(default: the demo's simulated test session, 63 ch @ 1000 Hz, SOA 200 ms)")
    p.add_argument("--duration", type=float, default=60.0, help="latency: seconds to replay")
    p.add_argument("--chunk-size", type=int, default=10, help="latency: replay chunk size")
    p.add_argument("--batch-size", type=int, default=4, help="latency: engine batch size")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="latency: batch deadline")
    from neuralign.offline.fidelity import add_arguments

    add_arguments(p.add_argument_group("fidelity (BrainAE vs ridge on the robustness matrix)"))
    p.set_defaults(func=cmd_bench)
