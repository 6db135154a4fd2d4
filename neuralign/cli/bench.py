"""``bench``: what training throughput and the engine's latency are on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.cli.parser import DEFAULT_DATA_DIR
from neuralign.errors import UserError


def cmd_fidelity(args: argparse.Namespace) -> int:
    """``neuralign bench fidelity``: BrainAE vs ridge on data families it was not
    tuned to."""
    from neuralign.offline.fidelity import format_table, run_from_args

    print(format_table(run_from_args(args)))
    return 0


def _bundle_and_recording(args: argparse.Namespace) -> tuple[Path, Path]:
    """``--bundle`` / ``--raw``, by default the demo's cached bundle and simulated test session."""
    bundle = Path(args.bundle or DEFAULT_DATA_DIR / "demo-bundle")
    raw = Path(args.raw or DEFAULT_DATA_DIR / "demo-data" / "sim_test_raw.fif")
    for p, what in ((bundle, "--bundle"), (raw, "--raw")):
        if not p.exists():
            raise UserError(f"{what}: {p} not found (run 'neuralign demo --headless' first, "
                            "or pass it)")
    return bundle, raw


def cmd_latency(args: argparse.Namespace) -> int:
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
        bundle, raw = _bundle_and_recording(args)
    rt = RealtimeConfig(batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                        chunk_size=args.chunk_size, torch_threads=args.torch_threads,
                        scheduling={"priority": args.priority, "cpus": args.cpus},
                        gc_freeze=not args.no_gc_freeze)
    cfg = BenchConfig(bundle, raw, duration_s=args.duration, streams=args.streams,
                      chunk_size=args.chunk_size, warmup_s=args.warmup,
                      baseline=not (args.no_baseline or args.mua), realtime=rt,
                      device=args.device, tail_fraction=args.tail_fraction, stamps=args.stamps)
    if not 0 < args.tail_fraction <= 1:
        raise UserError("--tail-fraction must be in (0, 1]")
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
    """``neuralign bench soak``: replay + engine + recorder for hours of stream time at
    ``--speed`` x; dropped samples, memory start/end, p99 latency first vs last 10 %."""
    import logging

    from neuralign.realtime.soak import run_soak

    bundle, raw = _bundle_and_recording(args)
    if args.hours <= 0 or args.speed <= 0:
        raise UserError("--hours and --speed must be > 0")
    logging.getLogger("neuralign.realtime.soak").setLevel(logging.INFO)
    rep = run_soak(bundle, raw, equivalent_s=args.hours * 3600, speed=args.speed,
                   record_dir=Path(args.record) if args.record else None,
                   keep_recording=bool(args.record), out=Path(args.json) if args.json else None)
    print("\n".join(rep.lines()))
    return 0 if rep.dropped_samples == 0 else 1


def cmd_field(args: argparse.Namespace) -> int:
    """``neuralign bench field``: device timing profiles x faults, live against offline."""
    import mne

    from neuralign.bundle import load_bundle
    from neuralign.offline.field import DEFAULT_FAULTS, DEFAULT_PROFILES, run_field_bench
    from neuralign.realtime.replay import PROFILES

    bundle_dir, raw_path = _bundle_and_recording(args)
    profiles = args.profiles.split(",") if args.profiles else list(DEFAULT_PROFILES)
    faults = args.faults.split(",") if args.faults else list(DEFAULT_FAULTS)
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise UserError(f"--profiles: unknown {unknown} (known: {', '.join(PROFILES)})")
    bad = [f for f in faults if f not in ("none", "gap", "uV", "gap+uV", "nan")]
    if bad:
        raise UserError(f"--faults: unknown {bad} (known: none, gap, uV, gap+uV, nan)")
    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    if args.duration:
        raw.crop(0, min(args.duration, raw.times[-1]))
    outcomes = run_field_bench(load_bundle(bundle_dir), raw, profiles, faults,
                               json_out=Path(args.json) if args.json else None, seed=args.seed)
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_mua_encoder(args: argparse.Namespace) -> int:
    """``neuralign bench mua-encoder``: the 1024-channel encoder with and without its spatial
    projection, forward time and retrieval on TVSD-like simulated data."""
    from neuralign.offline.mua_encoder_bench import run_from_args

    run_from_args(args)
    return 0


def cmd_generative(args: argparse.Namespace) -> int:
    """``neuralign bench generative``: generative decoders vs tuned baselines on fresh seeds."""
    from neuralign.offline.generative.bench import run_from_args

    run_from_args(args)
    return 0


def cmd_training(args: argparse.Namespace) -> int:
    """``neuralign bench training``: BrainAE training throughput for one input shape."""
    from neuralign.offline.benchmarks import format_throughput, training_throughput

    res = training_throughput(n_chans=args.n_chans, n_times=args.n_times, batch_size=args.batch,
                              steps=args.steps, micro_batch=args.micro_batch, amp=args.amp,
                              threads=args.threads, out=Path(args.json) if args.json else None,
                              fold=not args.no_fold)
    print(format_throughput(res))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its subcommands, each with its own options."""
    bench = sub.add_parser(
        "bench", help="measure training throughput, the engine's latency, or fidelity",
        description="One subcommand per measurement; 'neuralign bench <what> --help' lists its "
        "options.",
    )
    bench.set_defaults(func=lambda _args: (bench.print_help(), 0)[1])
    what = bench.add_subparsers(dest="what", metavar="<what>")

    p = what.add_parser(
        "training", help="BrainAE training throughput (samples/s)",
        description="BrainAE training throughput (samples/s), seconds per step, peak memory and "
        "the extrapolated full THINGS-EEG2 epoch, for a given input shape (default the "
        "THINGS-EEG2 shape 63 x 250 at the paper's batch 800).",
    )
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
    p.set_defaults(func=cmd_training)

    p = what.add_parser(
        "latency", help="what the engine adds to latency, stage by stage",
        description="A producer process streams a recording over real LSL at real time; this "
        "process runs the engine; a naive mne-lsl pipeline (StreamLSL + filter() + 5 ms polling "
        "+ get_data() + the model per epoch) decodes the same stream; a consumer process reads "
        "both result streams and the raw data stream (the transport floor). Reports end-to-end "
        "latency (consumer receive time - timestamp of the epoch's last input sample) "
        "p50/p95/p99/max for both pipelines and per engine stage, dropped samples, CPU use.",
    )
    p.add_argument("--bundle", help="bundle (default: the demo's)")
    p.add_argument("--raw", help="continuous .fif with annotations to replay (default: the demo's "
                   "simulated test session, 63 ch @ 1000 Hz, SOA 200 ms)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds to stream; a shorter recording loops (default %(default)s)")
    p.add_argument("--chunk-size", type=int, default=1,
                   help="samples per pushed chunk (default %(default)s)")
    p.add_argument("--stamps", choices=["nominal", "push"], default="nominal",
                   help="the producer's stamps: sample k at t0 + k/sfreq (a hardware-clocked "
                   "sender), or 'push': stamped by liblsl when each chunk is pushed, as device "
                   "apps do (default %(default)s)")
    p.add_argument("--streams", type=int, default=1,
                   help="concurrent streams decoded by one engine (default %(default)s)")
    p.add_argument("--warmup", type=float, default=3.0,
                   help="first seconds not counted (default %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive mne-lsl pipeline")
    p.add_argument("--sweep", action="store_true", help="add streams until the p99 end to end "
                   "passes --deadline-ms (no baseline)")
    p.add_argument("--deadline-ms", type=float, default=50.0,
                   help="--sweep's p99 limit (default %(default)s)")
    p.add_argument("--mua", action="store_true", help="one 1024-channel 1 kHz MUA stream "
                   "(synthetic signal, random-weight MUA bundle: latency and drops only)")
    p.add_argument("--mua-channels", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=4,
                   help="engine batch size (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="batch deadline in ms (default %(default)s)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="engine torch threads (default %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="engine device (default %(default)s)")
    p.add_argument("--priority", default="normal", choices=["normal", "high", "realtime"],
                   help="the engine's acquisition, processing and inference threads: 'high' = "
                   "nice -10, 'realtime' = SCHED_FIFO (both need CAP_SYS_NICE or an rtprio limit; "
                   "refused: normal, reported; default %(default)s)")
    p.add_argument("--cpus", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="pin those threads to these CPUs, e.g. 1 or 0,1 (default: any)")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="do not gc.freeze() the engine's start-up objects (to measure its effect)")
    p.add_argument("--tail-fraction", type=float, default=0.01,
                   help="the slowest share of epochs the tail breakdown explains (GC pauses, "
                   "stage over its median, waiting; default %(default)s)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--plot", help="write latency CDFs (per pipeline, per stage) to this PNG")
    p.set_defaults(func=cmd_latency)

    p = what.add_parser(
        "soak", help="hours of replay + engine + recorder, faster than real time",
        description="Loop a recording over LSL at --speed x real time for --hours of stream "
        "time, decode it and record it; report decoded trials, dropped samples (exit code 1 "
        "unless 0), resident memory after warm-up and at the end, and the p99 engine latency "
        "of the first vs the last 10 %% of trials.",
    )
    p.add_argument("--bundle", help="bundle (default: the demo's)")
    p.add_argument("--raw", help="continuous .fif with annotations to loop (default: the demo's "
                   "simulated test session)")
    p.add_argument("--hours", type=float, default=2.0,
                   help="stream time to replay, hours (default %(default)s)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="replay speed, x real time (default %(default)s)")
    p.add_argument("--record", help="keep the recording in this directory (default: a "
                   "temporary one, deleted)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_soak)

    p = what.add_parser(
        "field", help="device timing profiles x faults: decoded / expected, parity, gaps",
        description="Replay a recording over LSL as real devices deliver it (neuralign replay "
        "--timing profiles: stamps taken at the push or on arrival, jitter, drift, stalls), "
        "with one real gap, in microvolts or with one NaN; the engine decodes and records it. "
        "Reports, per profile and fault: epochs decoded / expected (those whose samples all "
        "arrived), parity with offline decoding of the recording, gap epochs dropped / spanning, "
        "gaps and lost samples reported / injected, the worst marker placement against the "
        "true onset, the stamp jitter and the latency. Exit code 1 unless every case holds.",
    )
    p.add_argument("--bundle", help="bundle (default: the demo's)")
    p.add_argument("--raw", help="continuous .fif with annotations (default: the demo's "
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
    p.set_defaults(func=cmd_field)

    p = what.add_parser(
        "mua-encoder", help="1024-channel MUA encoder: spatial projection vs none, time and "
        "retrieval",
        description="BrainAE's brain encoder on 1024-channel MUA with and without the learned "
        "spatial projection (model.spatial_projection): the engine's forward time at batch 1 "
        "and 4 on one thread (both models interleaved in one run) and per encoder stage; the "
        "projection size chosen on one simulator seed's zero-shot test concepts; today's model "
        "and the chosen one trained alike and scored (retrieval top-1 / top-5, paired "
        "bootstrap) on another seed's. Prints a summary; writes OUT/mua_encoder_bench.json.",
    )
    from neuralign.offline.mua_encoder_bench import add_arguments as add_mua_arguments

    add_mua_arguments(p)
    p.set_defaults(func=cmd_mua_encoder)

    p = what.add_parser(
        "generative", help="generative decoders vs equally tuned baselines, fresh seeds, CIs",
        description="FLIG, SMR+ICG and the MAP decoder with a learned denoiser prior against "
        "tuned ridge decoders and the floors (mean training image, retrieved training image) on "
        "fresh simulator seeds (development seeds are refused): SSIM, pixel correlation, 2-way "
        "identification in pixels and features, sharpness, diversity; means over seeds with "
        "95 %% CIs and paired bootstrap differences. Writes OUT/bench_generative.json and .md.",
    )
    from neuralign.offline.generative.bench import add_arguments as add_generative_arguments

    add_generative_arguments(p)
    p.set_defaults(func=cmd_generative)

    p = what.add_parser(
        "fidelity", help="BrainAE vs ridge on the robustness matrix",
        description="Train BrainAE and ridge on simulated data families (forward model, linear "
        "and nonlinear component models) and compare them with paired bootstrap CIs.",
    )
    from neuralign.offline.fidelity import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_fidelity)
