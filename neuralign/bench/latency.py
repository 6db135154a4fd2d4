"""``neuralign bench latency``: the engine vs the naive mne-lsl pipeline vs the machine's floor in
one run; ``--sweep``: how many streams one engine holds; ``--mua``: 1024 channels."""

from __future__ import annotations

import argparse
from pathlib import Path

from neuralign.bench._base import Measurement, add_bundle_and_recording, bundle_and_recording
from neuralign.cli.common import DEFAULT_DATA_DIR
from neuralign.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The stream, engine and report options of the latency run."""
    add_bundle_and_recording(p, "continuous .fif with annotations to replay (default: the demo's "
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
    p.add_argument("--priority", default="auto", choices=["auto", "normal", "high", "realtime"],
                   help="the engine's acquisition, processing and inference threads (and "
                   "liblsl's for its inlets and outlet): 'high' = nice -10, 'realtime' = "
                   "SCHED_FIFO (both need CAP_SYS_NICE or an rtprio limit; refused: normal, "
                   "reported); 'auto' = the highest the OS grants, as 'neuralign run' does "
                   "(default %(default)s)")
    p.add_argument("--naive-priority", default="normal", choices=["normal", "same"],
                   help="the naive pipeline's threads: 'normal' (what one writes), or 'same' as "
                   "the engine's, to compare at equal privilege (default %(default)s)")
    p.add_argument("--cpus", type=lambda v: [int(c) for c in v.split(",")], default=None,
                   help="pin those threads to these CPUs, e.g. 1 or 0,1 (default: any)")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="do not gc.freeze() the engine's start-up objects (to measure its effect)")
    p.add_argument("--no-prewarm", action="store_true",
                   help="do not run the model just before each epoch is due "
                   "(realtime.prewarm_ms 0; to measure its effect)")
    p.add_argument("--no-early-encoding", action="store_true",
                   help="encode each epoch whole at its last sample instead of its first frames "
                   "while it fills (realtime.early_encoding off; to measure its effect)")
    p.add_argument("--no-inline-pass", action="store_true",
                   help="wake the processing thread for an epoch's last sample instead of "
                   "processing it on the acquisition thread (realtime.inline_pass off; to "
                   "measure its effect)")
    p.add_argument("--generated-images", default="validated",
                   choices=["validated", "always", "off"],
                   help="the bundle's image generator, as realtime.generated_images: off measures "
                   "decoding without it (default %(default)s)")
    p.add_argument("--tail-fraction", type=float, default=0.01,
                   help="the slowest share of epochs the tail breakdown explains (GC pauses, "
                   "stage over its median, waiting; default %(default)s)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--plot", help="write latency CDFs (per pipeline, per stage) to this PNG")


def run(args: argparse.Namespace) -> int:
    """One latency run (or a ``--sweep`` of stream counts), printed and optionally written."""
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
        bundle, raw = bundle_and_recording(args)
    rt = RealtimeConfig(batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                        chunk_size=args.chunk_size, torch_threads=args.torch_threads,
                        scheduling={"priority": args.priority, "cpus": args.cpus},
                        gc_freeze=not args.no_gc_freeze,
                        prewarm_ms=0.0 if args.no_prewarm else RealtimeConfig().prewarm_ms,
                        early_encoding=not args.no_early_encoding,
                        inline_pass=not args.no_inline_pass,
                        generated_images=args.generated_images)
    cfg = BenchConfig(bundle, raw, duration_s=args.duration, streams=args.streams,
                      chunk_size=args.chunk_size, warmup_s=args.warmup,
                      baseline=not (args.no_baseline or args.mua), realtime=rt,
                      device=args.device, tail_fraction=args.tail_fraction, stamps=args.stamps,
                      naive_priority=args.naive_priority)
    if not 0 < args.tail_fraction <= 1:
        raise UserError("--tail-fraction must be in (0, 1]")
    if args.sweep:
        res = sweep(cfg, deadline_ms=args.deadline_ms)
        for row in res["rows"]:
            e = row["end_to_end_ms"]
            print(f"{row['streams']:3d} streams: p50 {e.get('p50', float('nan')):7.2f} p99 "
                  f"{e.get('p99', float('nan')):7.2f} ms, {row['n_counted']}/"
                  f"{row['n_expected_after_warmup']} epochs, dropped {row['dropped_samples']}, "
                  f"engine CPU {row['engine_cpu']:.0%}, producer CPU "
                  f"{(row['producer_cpu'] or float('nan')):.0%}  {'ok' if row['ok'] else 'OVER'}")
        print(f"one engine holds {res['max_streams']} streams under {args.deadline_ms:g} ms p99")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return 0
    res = latency_benchmark(cfg, json_out=Path(args.json) if args.json else None,
                            plot_out=Path(args.plot) if args.plot else None)
    print(format_report(res))
    return 0


MEASUREMENT = Measurement(
    name="latency", order=20, help="what the engine adds to latency, stage by stage",
    description="A producer process streams a recording over real LSL at real time; this "
    "process runs the engine; a naive mne-lsl pipeline (StreamLSL + filter() + 5 ms polling "
    "+ get_data() + the model per epoch) decodes the same stream; a consumer process reads "
    "both result streams and the raw data stream (the transport floor). Reports end-to-end "
    "latency (consumer receive time - timestamp of the epoch's last input sample) "
    "p50/p95/p99/max for both pipelines and per engine stage, dropped samples, CPU use.",
    add_arguments=add_arguments, run=run,
)
