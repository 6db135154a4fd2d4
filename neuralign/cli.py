"""The ``neuralign`` command line: the only place that prints for the user.

Every subcommand imports its heavy modules lazily so ``neuralign --help`` is instant. A
:class:`~neuralign.errors.UserError` becomes one line on stderr and exit code 2 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from neuralign import __version__
from neuralign.errors import UserError

log = logging.getLogger("neuralign")

EXIT_USER_ERROR = 2

DEFAULT_DATA_DIR = Path(".neuralign-cache")


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    p.add_argument(
        "--config", default=default,
        help="YAML config: a path, or the name of a shipped one "
        "(demo, things_eeg2, things_meg, tvsd, allen_natural_scenes). Default: %(default)s.",
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=5 (repeatable; value is YAML)",
    )


# ------------------------------------------------------------------------------------------------
# Subcommand implementations


def _load_config_with_flags(args: argparse.Namespace, flags: dict[str, str]):
    """The config of ``--config`` + ``--set`` overrides + dedicated flags (``{attr: dotted key}``)."""
    from neuralign.config import load_config

    overrides = list(args.overrides) + [f"{key}={getattr(args, attr)}" for attr, key in flags.items()
                                        if getattr(args, attr) is not None]
    return load_config(args.config, overrides)


def cmd_simulate(args: argparse.Namespace) -> int:
    config = _load_config_with_flags(args, {"seed": "dataset.simulation.seed",
                                            "snr": "dataset.simulation.snr",
                                            "modality": "dataset.simulation.modality"})
    if config.dataset.kind != "simulated" or config.dataset.simulation is None:
        raise UserError(
            f"{args.config}: dataset.kind: expected 'simulated' for 'neuralign simulate' "
            f"(got {config.dataset.kind!r})"
        )
    _ensure_simulated(config, Path(args.out), force=True)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = _load_config_with_flags(args, {"epochs": "training.epochs",
                                            "device": "training.device"})
    data = Path(args.data) if args.data else None
    if data is None and config.dataset.kind == "simulated" and config.dataset.path is None:
        data = DEFAULT_DATA_DIR / f"{config.name}-data"
        _ensure_simulated(config, data, force=False)
    features = Path(args.features) if args.features else None
    out = Path(args.out) if args.out else DEFAULT_DATA_DIR / "runs" / config.name
    if args.ablation:
        from neuralign.offline.runs import run_ablation

        variants = [v.strip() for v in args.ablation_variants.split(";")] if args.ablation_variants else None
        results = run_ablation(config, out, data, features, variants)
        print(f"Ablation (BrainAE Table 4) written to {out / 'ablation.json'}")
        for name, r in results.items():
            print(f"  {name:14s} retrieval top-1 {r['retrieval_top1']:.3f}  "
                  f"encoding r (all, decoder output) {r['encoding_r_all']:.3f}")
        return 0
    from neuralign.offline.train import run_training

    summary = run_training(config, out, data, features)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(f"Run written to {out}: best epoch {summary['best_epoch']} "
              f"(validation loss {summary['best_val_loss']:.4f}), {summary['seconds']:.0f} s, "
              f"{summary['samples_per_second']:.0f} samples/s on {summary['device']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from neuralign.offline.runs import evaluate_run

    rep = evaluate_run(Path(args.run), Path(args.json) if args.json else None,
                       masks=not args.no_masks)
    _print_report(rep, args.json or Path(args.run) / "report.json")
    return 0


def _print_report(rep: dict, path) -> None:
    r, ridge = rep["retrieval"], rep.get("ridge", {})
    print(f"{rep['n_test_images']}-way zero-shot retrieval: top-1 {r['top1']:.3f}, top-5 "
          f"{r['top5']:.3f} (chance {r['chance_top1']:.3f})")
    if "classification" in rep:
        c = rep["classification"]
        print(f"{c['n_way']}-way classification: top-1 {c['top1']:.3f}, top-5 {c['top5']:.3f}")
    if ridge:
        print(f"ridge decoding retrieval: top-1 {ridge['retrieval']['top1']:.3f}, top-5 "
              f"{ridge['retrieval']['top5']:.3f}")
    if "encoding" in rep:
        e = rep["encoding"]
        print(f"encoding Pearson r: all {e['pearson_r_all']:.3f}, visual {e['pearson_r_visual']:.3f}"
              + (f" (ridge: {ridge['encoding']['pearson_r_all']:.3f} / "
                 f"{ridge['encoding']['pearson_r_visual']:.3f}; mean training response: "
                 f"{ridge['mean_response']['encoding']['pearson_r_all']:.3f} / "
                 f"{ridge['mean_response']['encoding']['pearson_r_visual']:.3f})" if ridge else ""))
        if "encoding_raw_decoder" in rep:
            raw = rep["encoding_raw_decoder"]
            print(f"  decoder output before calibration: all {raw['pearson_r_all']:.3f}, "
                  f"visual {raw['pearson_r_visual']:.3f}")
        if "encoding_vs_ridge" in rep:
            v = rep["encoding_vs_ridge"]["visual"]
            print(f"  vs ridge, visual, per image: mean difference {v['mean_difference']:+.3f}, better on "
                  f"{v['images_better']:.0%} of images, Wilcoxon p {v['wilcoxon_p']:.2g}")
        if "pearson_r_across_images_visual" in e:
            print(f"encoding r across images (image-specific part), visual: "
                  f"{e['pearson_r_across_images_visual']:.3f}"
                  + (f" (ridge: {ridge['encoding']['pearson_r_across_images_visual']:.3f})"
                     if ridge else ""))
    print(f"report: {path}")


def cmd_export(args: argparse.Namespace) -> int:
    from neuralign.offline.runs import export_run

    path = export_run(Path(args.run), Path(args.out))
    print(f"Bundle written to {path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from neuralign.offline.feature_files import save_features_npz
    from neuralign.offline.image_features import compute_features

    root = Path(args.images)
    if not root.is_dir():
        raise UserError(f"{root}: image directory not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise UserError(f"{root}: no .png/.jpg images found")
    ids = [p.stem for p in files]
    feats = compute_features(dict(zip(ids, files)), ids, args.encoder, args.device)
    save_features_npz(Path(args.out), feats, ids)
    print(f"{len(ids)} x {feats.shape[1]} features ({args.encoder}) written to {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
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


def make_source(spec: str, markers: str | None, rt, speed: float = 1.0):
    """``lsl:NAME`` | ``lsl:source_id=ID`` | ``lsl:type=EEG`` | ``brainflow:synthetic`` |
    ``brainflow:BOARD[:key=value,...]`` | ``file:PATH``; markers ``lsl:NAME`` (same forms)."""
    kind, _, rest = spec.partition(":")
    if kind == "lsl":
        from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource

        marker_inlet = None
        if markers:
            mkind, _, mrest = markers.partition(":")
            if mkind != "lsl":
                raise UserError(f"--markers: expected lsl:NAME, got {markers!r}")
            marker_inlet = LSLMarkerInlet(**_lsl_selector(mrest, "--markers"))
        return LSLSource(**_lsl_selector(rest, "--source"), markers=marker_inlet,
                         timeout=rt.connect_timeout_s, buffer_seconds=rt.buffer_seconds)
    if kind == "brainflow":
        from neuralign.realtime.sources.brainflow import BrainFlowSource

        board, _, params = rest.partition(":")
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if markers not in (None, "board"):
            raise UserError(f"--markers: a BrainFlow source takes its markers from the board's "
                            f"marker row: use --markers board (got {markers!r})")
        return BrainFlowSource(board or "synthetic", kv, buffer_seconds=rt.buffer_seconds,
                               markers=markers == "board")
    if kind == "file":
        from neuralign.realtime.sources.file import FileSource

        if not Path(rest).is_file():
            raise UserError(f"--source: {rest}: file not found")
        return FileSource(Path(rest), speed=speed, chunk_size=rt.chunk_size,
                          buffer_seconds=rt.buffer_seconds)
    raise UserError(f"--source: expected lsl:NAME, brainflow:BOARD or file:PATH, got {spec!r}")


def _lsl_selector(rest: str, flag: str) -> dict:
    if not rest:
        raise UserError(f"{flag}: expected lsl:NAME (or lsl:source_id=ID / lsl:type=TYPE)")
    if "=" in rest:
        key, value = rest.split("=", 1)
        keys = {"name": "name", "type": "stype", "source_id": "source_id"}
        if key not in keys:
            raise UserError(f"{flag}: expected name=, type= or source_id=, got {key!r}")
        return {keys[key]: value}
    return {"name": rest}


def cmd_run(args: argparse.Namespace) -> int:
    from neuralign.bundle import load_bundle
    from neuralign.config import RealtimeConfig

    bundle = load_bundle(Path(args.bundle))
    rt = RealtimeConfig(batch_size=args.batch_size, top_k=args.top_k,
                        max_wait_ms=args.max_wait_ms, fill_missing=args.fill_missing)
    source = make_source(args.source, args.markers, rt, speed=args.speed)
    recorder = None
    from neuralign.realtime.engine import Engine

    engine = Engine(bundle, source, rt, device=args.device)
    desc = source.open()
    if args.record:
        from neuralign.realtime.recorder import Recorder

        recorder = Recorder(Path(args.record), desc.ch_names, desc.ch_types, desc.sfreq)
        engine.recorder = recorder
    engine.start()
    print(f"Decoding '{desc.name}' ({len(desc.ch_names)} ch @ {desc.sfreq:g} Hz) with "
          f"{args.bundle}; results on LSL stream '{rt.result_stream_name}'. Ctrl-C to stop.")
    if not args.headless:
        from neuralign.ui.app import run_viewer
        from neuralign.ui.feeds import EngineFeed

        try:
            run_viewer(EngineFeed(engine, bundle))
        finally:
            engine.stop()
        _print_status(engine, final=True)
        return 0
    t0 = time.monotonic()
    next_status = t0 + args.status_every
    shown = 0
    try:
        while engine.error is None:
            time.sleep(0.1)
            if args.verbose_results:
                for r in list(engine.results)[shown:]:
                    print(f"  epoch {r['epoch_id']} {r['marker']}: top-3 {r['topk_ids'][:3]}")
                shown = len(engine.results)
            now = time.monotonic()
            if now >= next_status:
                _print_status(engine)
                next_status += args.status_every
            if (args.n_epochs and engine.n_decoded >= args.n_epochs) or (
                    args.duration and now - t0 >= args.duration):
                break
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        engine.stop()
    _print_status(engine, final=True)
    if engine.error is not None:
        raise UserError(f"engine stopped: {engine.error}")
    return 0


def _print_status(engine, final: bool = False) -> None:
    st = engine.status()
    lat = st["latency_ms"].get("engine_total", {})
    lat_txt = (f"engine latency p50 {lat['p50']:.1f} ms / p99 {lat['p99']:.1f} ms"
               if lat else "no epochs yet")
    print(f"{'final: ' if final else ''}decoded {st['decoded']}, {lat_txt}, received "
          f"{st['received']} samples, dropped {st['dropped']}, gaps {st['gaps']}, "
          f"reconnects {st['reconnects']}")


def cmd_view(args: argparse.Namespace) -> int:
    from neuralign.ui.app import view_lsl

    bundle = Path(args.bundle)
    if not bundle.is_dir():
        raise UserError(f"--bundle: {bundle}: not a bundle directory")
    return int(view_lsl(args.stream, bundle) or 0)


def cmd_replay(args: argparse.Namespace) -> int:
    import uuid

    from neuralign.realtime.replay import LSLReplayer
    from neuralign.realtime.replay_sources import load_timeline

    tl = load_timeline(Path(args.path), soa=args.soa, split=args.split)
    data, names, types = tl.data, tl.ch_names, tl.ch_types
    if args.picks:
        wanted = [c.strip() for c in args.picks.split(",") if c.strip()]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise UserError(f"--picks: channels {missing} are not in {args.path}")
        idx = [names.index(c) for c in wanted]
        data, names, types = data[idx], wanted, [types[i] for i in idx]
    start = int(round(args.start * tl.sfreq))
    if start >= data.shape[1]:
        raise UserError(f"--start: {args.start} s is past the end ({data.shape[1] / tl.sfreq:.1f} s)")
    data = data[:, start:]
    events = [(o - start, lab) for o, lab in tl.events if o >= start]
    sid = args.source_id or uuid.uuid4().hex
    speed = float("inf") if args.speed <= 0 else args.speed
    rep = LSLReplayer(data, tl.sfreq, names, types, events=events, name=args.name,
                      stype=args.type, source_id=sid, marker_name=args.marker_name,
                      chunk_size=args.chunk_size, speed=speed, loop=args.loop,
                      wait_for_consumers=args.wait)
    rep.start()
    print(f"Replaying {tl.description}: {len(names)} ch @ {tl.sfreq:g} Hz, {len(events)} events, "
          f"{data.shape[1] / tl.sfreq:.1f} s at speed {args.speed:g}{' (looping)' if args.loop else ''}")
    print(f"  data stream '{args.name}' (type {args.type}, source_id {sid}); markers "
          f"'{rep.marker_name}' (type Markers). Ctrl-C to stop.")
    try:
        while not rep.wait_done(0.5):
            pass
        if rep.error is not None:
            raise UserError(f"replay failed: {rep.error}")
        print(f"done: {rep.n_sent} samples sent")
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        rep.stop()
    return 0


def _ensure_simulated(config, data_dir: Path, force: bool) -> None:
    from neuralign.offline.simulator import simulate

    if (data_dir / "simulation.json").is_file() and not force:
        print(f"Reusing simulated dataset in {data_dir} (--force to redo)")
        return
    print(f"Simulating the {config.name} dataset into {data_dir} ...")
    t0 = time.perf_counter()
    result = simulate(config.dataset.simulation, data_dir, preprocessing=config.preprocessing)
    print(f"  written to {data_dir} in {time.perf_counter() - t0:.1f} s")
    print(result.summary())


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralign",
        description="Real-time visual neural decoding: train brain-image alignment models "
        "offline (BrainAE, VNA), decode live LSL / BrainFlow streams online.",
        epilog="Run 'neuralign <command> --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"neuralign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    p = sub.add_parser(
        "simulate", help="write the built-in THINGS-like dataset (images, EEG/MEG/MUA)",
        description="Simulate a THINGS-like RSVP experiment: PNG images of concepts, EEG through "
        "an MNE forward model (or MEG / multi-unit activity), a zero-shot train/test split. "
        "Writes THINGS-EEG2-layout epoched .npy files and continuous .fif files with one "
        "annotation per stimulus onset (for replay). Deterministic for a seed.",
    )
    _add_config_args(p)
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--seed", type=int, help="override dataset.simulation.seed")
    p.add_argument("--snr", type=float, help="override the difficulty (dataset.simulation.snr)")
    p.add_argument("--modality", choices=["eeg", "meg", "mua"], help="override the modality")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "train", help="train a model (BrainAE, VNA) and the ridge baselines",
        description="Train an alignment model on a THINGS-EEG2-layout directory or the simulator, "
        "with the paper's loop: validation split, best checkpoint by validation loss.",
    )
    _add_config_args(p)
    p.add_argument("--data", help="dataset directory (THINGS-EEG2 layout or a simulated one)")
    p.add_argument("--features", help="image features file or directory")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override training.device")
    p.add_argument("--ablation", action="store_true",
                   help="train the BrainAE Table 4 variants (loss terms removed) and compare")
    p.add_argument("--ablation-variants", help="';'-separated subset of: full; w/o L_con; "
                   "w/o L_fea; w/o L_recon; w/o L_reconB; w/o L_reconI")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", help="evaluate a trained run with the papers' protocols",
        description="Zero-shot retrieval / classification top-1/top-5, encoding Pearson r, "
        "accuracy vs averaged repetitions, masked-channel reconstruction; writes JSON + figures.",
    )
    p.add_argument("--run", required=True, help="run directory written by 'neuralign train'")
    p.add_argument("--json", help="where to write the report JSON (default RUN/report.json)")
    p.add_argument("--no-masks", action="store_true", help="skip masked-channel reconstruction")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "export", help="export a trained run as a model bundle for the realtime engine",
        description="Write safetensors weights + a JSON manifest (channels, rates, window, "
        "filters, whitening, template bank, hash): the one contract with the engine.",
    )
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "features", help="compute frozen image features for a folder of images",
        description="Encode every .png/.jpg under a folder with a frozen encoder ('builtin', or "
        "open_clip:<arch>:<local weights file> with the [clip] extra) and write an NPZ "
        "{features, image_ids} (image id = file name without extension).",
    )
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="NPZ file to write")
    p.add_argument("--encoder", default="builtin", help="builtin | open_clip:ARCH:WEIGHTS")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser(
        "replay", help="replay a recording or dataset as LSL streams (data + Markers)",
        description="Stream a .fif/.edf/.bdf/.vhdr/.set recording, a THINGS-EEG2 file or a "
        "neuralign recording over LSL (local host by default), with a marker stream.",
    )
    p.add_argument("path", help="recording (.fif/.edf/.bdf/.vhdr/.set), THINGS-EEG2 "
                   "raw_eeg_*.npy / preprocessed_eeg_*.npy, TVSD .mat, or a neuralign recording dir")
    p.add_argument("--name", default="neuralign-replay", help="LSL data stream name")
    p.add_argument("--type", default="EEG", help="LSL stream type (EEG, MEG, ...)")
    p.add_argument("--source-id", help="LSL source_id (default: a new uuid)")
    p.add_argument("--marker-name", help="marker stream name (default: NAME-markers)")
    p.add_argument("--chunk-size", type=int, default=10, help="samples per pushed chunk")
    p.add_argument("--speed", type=float, default=1.0,
                   help="1 = real time, 4 = four times faster, 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="start again at the end (timestamps go on)")
    p.add_argument("--start", type=float, default=0.0, help="start offset in seconds")
    p.add_argument("--picks", help="comma-separated channel subset")
    p.add_argument("--soa", type=float, help="epoched datasets: seconds between stitched trials")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="TVSD: which split to stitch")
    p.add_argument("--wait", type=float, default=0.0,
                   help="wait up to this many seconds for a consumer before sending")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "run", help="decode a live stream with a model bundle",
        description="Read LSL / BrainFlow / file sources, filter causally, decode in "
        "fixed-latency batches, publish results on LSL.",
    )
    p.add_argument("--bundle", required=True, help="model bundle directory ('neuralign export')")
    p.add_argument("--source", required=True,
                   help="lsl:NAME | lsl:source_id=ID | brainflow:synthetic | "
                   "brainflow:BOARD[:serial_port=...,ip_address=...] | file:PATH")
    p.add_argument("--markers", help="stimulus markers: lsl:NAME (a Markers stream, image id per "
                   "marker; mne-lsl player annotation streams work too) or 'board' (BrainFlow's "
                   "marker row); without markers the engine decodes a sliding window")
    p.add_argument("--record", help="record raw input, events and results to this directory")
    p.add_argument("--headless", action="store_true",
                   help="no viewer (default: open the Qt viewer in this process); print status lines")
    p.add_argument("--fill-missing", action="store_true",
                   help="reconstruct a few missing channels with the model instead of refusing")
    p.add_argument("--batch-size", type=int, default=4, help="fixed inference batch shape")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="deadline: the longest an epoch waits for its batch")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--speed", type=float, default=1.0, help="file: sources: replay speed factor")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--n-epochs", type=int, help="stop after this many decoded epochs")
    p.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines")
    p.add_argument("--verbose-results", action="store_true", help="print every decoded epoch")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "view", help="open the Qt viewer of a running engine",
        description="PyQt6 + pyqtgraph viewer of an engine's LSL result stream (top-k images, "
        "running accuracy, latency). For live traces and masked-channel reconstruction, start "
        "the engine with the viewer in one process: 'neuralign run ... ' without --headless.",
    )
    p.add_argument("--bundle", required=True, help="the bundle the engine runs (for thumbnails)")
    p.add_argument("--stream", default="neuralign-results", help="result stream name")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser(
        "bench", help="measure what the engine adds to latency, stage by stage",
        description="'training': BrainAE training throughput (samples/s) for a given input shape "
        "(default the THINGS-EEG2 shape 63 x 250). 'latency': replay a recording over LSL, "
        "decode it live, and report end-to-end latency (consumer receive time - timestamp of "
        "the epoch's last input sample) with p50/p95/p99/max per engine stage.",
    )
    p.add_argument("what", choices=["training", "latency"], help="what to measure")
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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "demo", help="run the whole product on the built-in simulator",
        description="Simulate (or reuse) the demo dataset, train BrainAE on it (or reuse the run), "
        "evaluate it against the ridge baselines, export a bundle, then replay the test session "
        "over LSL, decode it live and show the viewer (or, --headless, print running accuracy and "
        "latency and check live/offline parity).",
    )
    _add_config_args(p)
    p.add_argument("--cache-dir", default=str(DEFAULT_DATA_DIR),
                   help="where the dataset, run and bundle are cached (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="re-simulate and retrain even if cached")
    p.add_argument("--headless", action="store_true",
                   help="no viewer: print running accuracy and latency, then exit")
    p.add_argument("--n-trials", type=int, default=200,
                   help="live part: decode this many test trials (default %(default)s)")
    p.add_argument("--speed", type=float, default=1.0, help="live part: replay speed factor")
    p.add_argument("--print-every", type=int, default=25, help="headless: status every N trials")
    p.add_argument("--json", help="headless: write live accuracy, latency and parity here")
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    import json
    import os

    from neuralign.config import load_config

    config = load_config(args.config, args.overrides)
    if config.dataset.simulation is None:
        raise UserError(f"{args.config}: dataset.kind: expected 'simulated' for the demo")
    headless = args.headless
    if not headless and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                             or os.environ.get("QT_QPA_PLATFORM")):
        print("No display found: running headless (set DISPLAY or pass --headless to silence this)")
        headless = True
    cache = Path(args.cache_dir)
    data_dir, run_dir, bundle_dir = cache / "demo-data", cache / "demo-run", cache / "demo-bundle"
    print(f"[1/5] Dataset ({data_dir})")
    _ensure_simulated(config, data_dir, force=args.force)
    print(f"[2/5] Training {config.model.name} ({run_dir})")
    if (run_dir / "model.safetensors").is_file() and not args.force:
        print("  reusing the trained run (--force to retrain)")
    else:
        from neuralign.offline.train import run_training

        summary = run_training(config, run_dir, data_dir, None, progress=not args.headless)
        print(f"  best epoch {summary['best_epoch']} of {summary['epochs']} (by validation loss), "
              f"{summary['seconds']:.0f} s")
    print("[3/5] Offline evaluation on held-out zero-shot concepts")
    if (run_dir / "report.json").is_file() and not args.force:
        _print_report(json.loads((run_dir / "report.json").read_text()), run_dir / "report.json")
    else:
        cmd_evaluate(argparse.Namespace(run=str(run_dir), json=None, no_masks=False))
    print(f"[4/5] Model bundle ({bundle_dir})")
    cmd_export(argparse.Namespace(run=str(run_dir), out=str(bundle_dir)))
    print("[5/5] Live: replaying the test session over LSL and decoding it")
    return _demo_live(config, bundle_dir, data_dir / "sim_test_raw.fif", args, headless)


def _demo_live(config, bundle_dir: Path, raw_path: Path, args, headless: bool) -> int:
    import json

    from neuralign.bundle import load_bundle
    from neuralign.realtime.session import replay_session

    bundle = load_bundle(bundle_dir)
    rt = config.realtime
    session = replay_session(bundle, raw_path, rt, speed=args.speed, n_trials=args.n_trials)
    session.start()
    if not headless:
        from neuralign.ui.app import run_viewer
        from neuralign.ui.feeds import EngineFeed

        try:
            run_viewer(EngineFeed(session.engine, bundle))
        finally:
            session.stop()
        return 0
    t0 = time.monotonic()
    shown = 0
    try:
        while session.engine.n_decoded < session.n_trials and session.engine.error is None:
            time.sleep(0.2)
            if session.engine.n_decoded - shown >= args.print_every:
                shown = session.engine.n_decoded
                _print_live(session)
            if time.monotonic() - t0 > session.n_trials * 0.5 / args.speed + 60:
                print("  timed out waiting for results")
                break
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        session.stop()
    _print_live(session, final=True)
    from neuralign.offline.single_trial import decode_recording

    offline = decode_recording(bundle, raw_path)[: session.n_trials]
    online = sorted(session.engine.results, key=lambda r: r["marker_timestamp"])
    same = sum(a["topk_ids"][0] == b["topk_ids"][0] for a, b in zip(online, offline))
    print(f"  parity: {same}/{len(offline)} trials have the same top-1 live as offline")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "n_trials": session.n_trials, "decoded": session.engine.n_decoded,
            "accuracy": session.accuracy(), "latency_ms": session.engine.stats.summary(),
            "parity_same_top1": same, "parity_n": len(offline),
            "online_top1": [r["topk_ids"][0] for r in online],
            "offline_top1": [o["topk_ids"][0] for o in offline]}, indent=1))
    if session.engine.error is not None:
        raise UserError(f"engine stopped: {session.engine.error}")
    return 0


def _print_live(session, final: bool = False) -> None:
    acc = session.accuracy()
    lat = session.engine.stats.summary().get("engine_total", {})
    txt = f"  {'final: ' if final else ''}decoded {session.engine.n_decoded}/{session.n_trials}"
    if acc.get("n"):
        txt += (f", single-trial top-1 {acc['top1']:.2f} top-5 {acc['top5']:.2f} "
                f"(chance {acc['chance_top1']:.2f})")
        if "avg_top1" in acc:
            txt += f", averaged ({acc['avg_n_repetitions']} reps) top-1 {acc['avg_top1']:.2f}"
    if lat:
        txt += f", engine latency p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms"
    print(txt)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        print(f"neuralign {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
