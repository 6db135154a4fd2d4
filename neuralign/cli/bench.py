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
        return _bench_latency(args)
    from neuralign.offline.benchmarks import training_throughput

    res = training_throughput(n_chans=args.n_chans, n_times=args.n_times, batch_size=args.batch,
                              steps=args.steps, out=Path(args.json) if args.json else None)
    print(f"BrainAE training throughput ({res['n_chans']} x {res['n_times']}, batch "
          f"{res['batch_size']}, {res['device']}, {res['threads']} threads): "
          f"{res['samples_per_second']:.1f} samples/s ({res['seconds_per_step'] * 1e3:.0f} ms/step)")
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    """``neuralign bench latency``: the engine vs the naive mne-lsl pipeline vs the machine's
    floor in one run; ``--sweep``: how many streams one engine holds; ``--mua``: 1024 channels."""
    import json

    from neuralign.config import RealtimeConfig
    from neuralign.realtime.bench import BenchConfig, format_report, latency_benchmark, sweep

    raw: Path | None
    if args.mua:
        from neuralign.realtime.bench.mua import synthetic_mua_bundle

        bundle = synthetic_mua_bundle(Path(args.bundle or DEFAULT_DATA_DIR / "bench-mua-bundle"),
                                      n_chans=args.mua_channels)
        raw = None
    else:
        bundle = Path(args.bundle or DEFAULT_DATA_DIR / "demo-bundle")
        raw = Path(args.raw or DEFAULT_DATA_DIR / "demo-data" / "sim_test_raw.fif")
        for p, what in ((bundle, "--bundle"), (raw, "--raw")):
            if not p.exists():
                raise UserError(f"{what}: {p} not found (run 'neuralign demo --headless' first, "
                                "or pass it)")
    rt = RealtimeConfig(batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                        chunk_size=args.chunk_size, torch_threads=args.torch_threads)
    cfg = BenchConfig(bundle, raw, duration_s=args.duration, streams=args.streams,
                      chunk_size=args.chunk_size, warmup_s=args.warmup,
                      baseline=not (args.no_baseline or args.mua), realtime=rt,
                      device=args.device)
    if args.sweep:
        res = sweep(cfg, deadline_ms=args.deadline_ms)
        for row in res["rows"]:
            e = row["end_to_end_ms"]
            print(f"{row['streams']:3d} streams: p50 {e.get('p50', float('nan')):7.2f} p99 "
                  f"{e.get('p99', float('nan')):7.2f} ms, {row['n_counted']}/"
                  f"{row['n_expected_after_warmup']} epochs, dropped {row['dropped_samples']}, "
                  f"engine CPU {row['engine_cpu']:.0%}  {'ok' if row['ok'] else 'OVER'}")
        print(f"one engine holds {res['max_streams']} streams under {args.deadline_ms:g} ms p99")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    res = latency_benchmark(cfg, json_out=Path(args.json) if args.json else None,
                            plot_out=Path(args.plot) if args.plot else None)
    print(format_report(res))
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    """``neuralign bench soak`` (issue 11): replay + engine + recorder for hours of stream time at
    ``--speed`` x; dropped samples, memory start/end, p99 latency first vs last 10 %."""
    import logging

    from neuralign.realtime.soak import run_soak

    bundle = Path(args.bundle or DEFAULT_DATA_DIR / "demo-bundle")
    raw = Path(args.raw or DEFAULT_DATA_DIR / "demo-data" / "sim_test_raw.fif")
    for p, what in ((bundle, "--bundle"), (raw, "--raw")):
        if not p.exists():
            raise UserError(f"{what}: {p} not found (run 'neuralign demo --headless' first, "
                            "or pass it)")
    if args.hours <= 0 or args.speed <= 0:
        raise UserError("--hours and --speed must be > 0")
    logging.getLogger("neuralign.realtime.soak").setLevel(logging.INFO)
    rep = run_soak(bundle, raw, equivalent_s=args.hours * 3600, speed=args.speed,
                   record_dir=Path(args.record) if args.record else None,
                   keep_recording=bool(args.record), out=Path(args.json) if args.json else None)
    print("\n".join(rep.lines()))
    return 0 if rep.dropped_samples == 0 else 1


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
    p.add_argument("--duration", type=float, default=60.0, help="latency: seconds to stream "
                   "(a recording shorter than this is looped)")
    p.add_argument("--chunk-size", type=int, default=1, help="latency: samples per pushed chunk")
    p.add_argument("--streams", type=int, default=1,
                   help="latency: concurrent streams decoded by one engine")
    p.add_argument("--warmup", type=float, default=3.0, help="latency: seconds not counted")
    p.add_argument("--plot", help="latency: write the latency CDFs to this PNG")
    p.add_argument("--no-baseline", action="store_true",
                   help="latency: skip the naive mne-lsl pipeline")
    p.add_argument("--sweep", action="store_true", help="latency: add streams until the p99 "
                   "end to end passes --deadline-ms (no baseline)")
    p.add_argument("--deadline-ms", type=float, default=50.0, help="latency: --sweep's p99 limit")
    p.add_argument("--mua", action="store_true", help="latency: a 1024-channel 1 kHz MUA stream "
                   "(synthetic signal, random-weight MUA bundle; latency and drops only)")
    p.add_argument("--mua-channels", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=4, help="latency: engine batch size")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="latency: batch deadline")
    p.add_argument("--torch-threads", type=int, default=1, help="latency: engine torch threads")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="latency: engine device")
    from neuralign.offline.fidelity import add_arguments

    add_arguments(p.add_argument_group("fidelity (BrainAE vs ridge on the robustness matrix)"))
    p.set_defaults(func=cmd_bench)
