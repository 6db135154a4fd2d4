"""``simulate``, ``train``, ``evaluate``, ``export``, ``features``: thin layers over the library
(``neuralign.offline``).

The steps the demo shares with these commands (simulate unless cached, evaluate and print,
export) are plain functions here, so both call the same code with typed arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from neuralign.cli.cache import cache_key, is_cached, mark_cached, stale_reason
from neuralign.cli.common import DEFAULT_DATA_DIR, add_config_args, config_from_args
from neuralign.cli.report import print_report
from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.config import Config


def dataset_key(config: Config) -> str:
    """Cache key of a simulated dataset: what ``simulate`` reads, and the code."""
    return cache_key(simulation=config.dataset.simulation.model_dump(mode="json"),
                     preprocessing=config.preprocessing.model_dump(mode="json"))


def ensure_simulated(config: Config, data_dir: Path, force: bool) -> str:
    """Simulate the config's dataset into ``data_dir`` unless the one there was made from the
    same settings and code (or ``force``); returns the dataset's cache key."""
    from neuralign.offline.simulator import simulate

    key = dataset_key(config)
    if not force and is_cached(data_dir, key, "simulation.json"):
        print(f"Reusing simulated dataset in {data_dir} (--force to redo)")
        return key
    if not force and (reason := stale_reason(data_dir, "simulation.json")):
        print(reason)
    print(f"Simulating the {config.name} dataset into {data_dir} ...")
    t0 = time.perf_counter()
    result = simulate(config.dataset.simulation, data_dir, preprocessing=config.preprocessing)
    mark_cached(data_dir, key, "simulation.json")
    print(f"  written to {data_dir} in {time.perf_counter() - t0:.1f} s")
    print(result.summary())
    return key


def evaluate(run: Path, json_path: str | Path | None = None, masks: bool = True) -> dict:
    """Evaluate a run (report JSON + figures) and print its headline numbers; the report path is
    printed as the user spelled it."""
    from neuralign.offline.runs import evaluate_run

    t0 = time.perf_counter()

    def progress(stage: str) -> None:
        print(f"  [{time.perf_counter() - t0:5.1f} s] {stage} ...", flush=True)

    rep = evaluate_run(run, Path(json_path) if json_path else None, masks=masks,
                       progress=progress)
    print_report(rep, json_path or run / "report.json")
    return rep


def export(run: Path, out: Path, generator: Path | None = None) -> Path:
    """Write the engine's bundle for a run (with a generator run's generator) and say where."""
    from neuralign.offline.runs import export_run

    path = export_run(run, out, generator)
    print(f"Bundle written to {path}" + (f" (with the generator of {generator})" if generator else ""))
    return path


def cmd_simulate(args: argparse.Namespace) -> int:
    """``neuralign simulate``: always simulates (``train`` and the demo reuse a cached dataset)."""
    config = config_from_args(args, {"seed": "dataset.simulation.seed",
                                     "snr": "dataset.simulation.snr",
                                     "modality": "dataset.simulation.modality",
                                     "subjects": "dataset.simulation.n_subjects"})
    if config.dataset.kind != "simulated" or config.dataset.simulation is None:
        raise UserError(
            f"{args.config}: dataset.kind: expected 'simulated' for 'neuralign simulate' "
            f"(got {config.dataset.kind!r})"
        )
    if args.live:
        return simulate_live(config, args)
    if not args.out:
        raise UserError("neuralign simulate: --out is required (or --live to stream)")
    ensure_simulated(config, Path(args.out), force=True)
    return 0


def simulate_live(config: Config, args: argparse.Namespace) -> int:
    """``neuralign simulate --live``: a virtual subject watching ``--markers`` on LSL."""
    from neuralign.offline.simulator.live import VirtualSubject
    from neuralign.realtime.replay.timing import PROFILES

    sim = config.dataset.simulation
    if sim.modality not in ("eeg", "meg", "mua"):
        raise UserError(f"--live streams eeg, meg or mua, not {sim.modality!r}")
    if args.timing and args.timing not in PROFILES:
        raise UserError(f"--timing: unknown profile {args.timing!r}; known: {', '.join(PROFILES)}")
    if args.subject is not None and not 1 <= args.subject <= sim.n_subjects:
        raise UserError(f"--subject {args.subject}: the config simulates subjects "
                        f"1..{sim.n_subjects} (--subjects N sets how many)")
    subject = VirtualSubject(sim, markers=args.markers, name=args.name,
                             latency_s=args.latency_ms / 1e3, timing=args.timing,
                             timing_seed=args.timing_seed, chunk_size=args.chunk_size,
                             seed=args.live_seed, source_id=args.source_id,
                             subject=args.subject)
    subject.start()
    sig = subject.signal
    which = f", subject {args.subject or 1} of {sim.n_subjects}" if sim.n_subjects > 1 else ""
    print(f"Virtual subject {args.name!r}: {sim.modality.upper()} {len(sig.ch_names)} ch @ "
          f"{sig.sfreq:g} Hz (seed {sim.seed}{which}, snr {sig.snr:g}, "
          f"{len(sig.image_ids)} images), "
          f"responses {args.latency_ms:g} ms after each marker of {args.markers!r}, timing "
          f"{subject.timing.name}. Ctrl-C stops.")
    t_end = time.monotonic() + args.duration if args.duration else None
    next_status = time.monotonic() + args.status_every
    try:
        while subject.running and (t_end is None or time.monotonic() < t_end):
            time.sleep(0.1)
            if args.status_every > 0 and time.monotonic() >= next_status:
                next_status += args.status_every
                print(f"  {subject.n_sent / sig.sfreq:7.1f} s streamed, markers "
                      f"{'connected' if subject.marker_connected else 'not connected'}: "
                      f"{subject.n_markers} shown, {subject.n_unknown} unknown ids, "
                      f"{subject.n_late} late, {subject.n_dropped} samples lost by the "
                      "timing profile", flush=True)
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        subject.stop()
    if subject.error is not None:
        raise UserError(f"virtual subject stopped: {subject.error}")
    return 0


LAB_DAY = """\
a lab's own subject, same day (configs/lab.yaml; docs/tutorials/lab_day.md):
  1. record a training block while the subject watches images and markers name them:
       neuralign run --bundle B --source lsl:EEG --markers lsl:Markers --record block1/ --headless
     (or LabRecorder: block1.xdf; or any FIF / BrainVision / EDF / BDF / EEGLAB file + events)
  2. train on it (test images = those block 2 will show; or split by concepts / block):
       neuralign train --config lab --data block1/ --images stimuli/ \\
           --set dataset.recording.split.test_file=test_images.txt --out run1
       neuralign evaluate --run run1 && neuralign export --run run1 --out bundle1
  3. decode block 2 live:
       neuralign run --bundle bundle1 --source lsl:EEG --markers lsl:Markers
"""


def _data_arg(config: Config, data: list[str] | None, images: str | None) -> Path | None:
    """``--data`` (repeatable for kind 'recording': one block each; the earlier ones join
    ``dataset.recording.recordings``, the last stands in for ``dataset.path``) and ``--images``."""
    paths = [Path(d) for d in data or []]
    if (len(paths) > 1 or images) and config.dataset.kind != "recording":
        raise UserError(f"--data given {len(paths)} times / --images: only for dataset.kind "
                        f"'recording' (config {config.name!r} has {config.dataset.kind!r})")
    if len(paths) > 1:
        rec = config.dataset.recording
        rec.recordings = [*rec.recordings, *paths[:-1]]
    return paths[-1] if paths else None


def _subject_list(text: str) -> list[int]:
    """``--subjects``: "1,2,5" or a range "1-8" (THINGS-EEG2 sub-01..sub-08)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise UserError(f"--subjects {text!r}: expected numbers like 1,2,5 or a range 1-8") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """``neuralign train``: a run directory (or the ablation table); simulates data if none given."""
    if args.subjects is not None:  # "1,2,3" or "1-8": a list the --set spelling would need as [..]
        args.subjects = _subject_list(args.subjects)
    config = config_from_args(args, {"epochs": "training.epochs", "device": "training.device",
                                     "images": "dataset.recording.images",
                                     "init": "training.fine_tune.init",
                                     "subjects": "dataset.subjects"})
    data = _data_arg(config, args.data, args.images)
    if data is None and config.dataset.kind == "simulated" and config.dataset.path is None:
        data = DEFAULT_DATA_DIR / f"{config.name}-data"
        ensure_simulated(config, data, force=False)
    features = Path(args.features) if args.features else config.features.path
    out = Path(args.out) if args.out else DEFAULT_DATA_DIR / "runs" / config.name
    if config.model.traits.generative:  # generative decoders: their own trainer and run
        from neuralign.offline.generative.runs import train_generative

        summary = train_generative(config, data, out)
        print(f"Run written to {out}: {summary['seconds']:.0f} s on {summary['device']}")
        return 0
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
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"Run written to {out}: best epoch {summary['best_epoch']} "
              f"(validation loss {summary['best_val_loss']:.4f}), {summary['seconds']:.0f} s, "
              f"{summary['samples_per_second']:.0f} samples/s on {summary['device']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``neuralign evaluate``: the papers' protocols on a run, headline numbers printed."""
    from neuralign.offline.generative.runs import evaluate_generative, is_generative_run

    if is_generative_run(Path(args.run)):  # FLIG / SMR+ICG: decoding report
        rep = evaluate_generative(Path(args.run), Path(args.json) if args.json else None)
        print(json.dumps({k: rep[k] for k in ("decoding", "encoding", "smr", "baselines") if k in rep}, indent=1))
        return 0
    evaluate(Path(args.run), args.json, masks=not args.no_masks)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``neuralign export``: the bundle, the engine's one contract with training."""
    from neuralign.offline.generative.runs import is_generative_run

    if is_generative_run(Path(args.run)):  # a generator decodes a retrieval model's embeddings
        raise UserError(f"--run {args.run}: a generator run is exported beside the retrieval run "
                        f"it was trained on: neuralign export --run BRAINAE_RUN --generator "
                        f"{args.run} --out BUNDLE")
    export(Path(args.run), Path(args.out), Path(args.generator) if args.generator else None)
    return 0


def cmd_paired(args: argparse.Namespace) -> int:
    """``neuralign paired``: paired.npz (images + embeddings or epochs) from a BrainAE run."""
    from neuralign.offline.generative.from_run import paired_from_run

    out = paired_from_run(Path(args.run), Path(args.out), args.image_size, args.trials, args.responses)
    print(f"Paired data ({args.responses}, {args.trials} trials) written to {out}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """``neuralign features``: frozen features of a folder of images, ids from the file names."""
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the offline subcommands (in the order ``neuralign --help`` lists them)."""
    p = sub.add_parser(
        "simulate", help="write the built-in THINGS-like dataset (images, EEG/MEG/MUA)",
        description="Simulate a THINGS-like RSVP experiment: PNG images of concepts, EEG through "
        "an MNE forward model (or MEG / multi-unit activity), a zero-shot train/test split. "
        "Writes THINGS-EEG2-layout epoched .npy files and continuous .fif files with one "
        "annotation per stimulus onset (for replay). Deterministic for a seed.",
    )
    add_config_args(p)
    p.add_argument("--out", help="output directory (created); not with --live")
    p.add_argument("--seed", type=int, help="override dataset.simulation.seed")
    p.add_argument("--snr", type=float, help="override the difficulty (dataset.simulation.snr)")
    p.add_argument("--modality", choices=["eeg", "meg", "mua", "retina"], help="override the modality")
    p.add_argument("--subjects", type=int, metavar="N",
                   help="simulate N subjects (dataset.simulation.n_subjects): image_set/ once, "
                   "sub-01/ .. sub-NN/ (docs/simulator.md, 'Several subjects')")
    live = p.add_argument_group(
        "live (a virtual subject; docs/virtual_subject.md)",
        "--live streams the simulated subject on LSL in real time: each marker (an image id) of "
        "--markers evokes that image's simulated response --latency-ms after its stamp. Use the "
        "config and seed the bundle was trained on (the demo's by default).")
    live.add_argument("--live", action="store_true", help="stream instead of writing a dataset")
    live.add_argument("--markers", default="neuralign-markers", metavar="NAME",
                      help="marker stream to watch: NAME or key=value[,...] of name, type, "
                      "source_id (default %(default)s, what neuralign present sends)")
    live.add_argument("--name", default="VirtualEEG", help="LSL data stream name (default "
                      "%(default)s)")
    live.add_argument("--source-id", help="LSL source_id (default: a new uuid)")
    live.add_argument("--latency-ms", type=float, default=0.0,
                      help="display delay added to each marker's stamp; the visual pathway's "
                      "is in the simulated responses, and a bundle trained on simulated data "
                      "expects none (default %(default)s)")
    live.add_argument("--timing", metavar="PROFILE",
                      help="deliver like a real device: ideal (default), wired-1khz, "
                      "cyton-dongle, consumer-256 or brainflow (docs/timing_profiles.md)")
    live.add_argument("--timing-seed", type=int, default=0, help="seed of the --timing draws")
    live.add_argument("--chunk-size", type=int, default=10,
                      help="samples per push when the profile does not set it (default "
                      "%(default)s)")
    live.add_argument("--live-seed", type=int,
                      help="seed of the live background and trial variability (default: from "
                      "--seed, independent of the dataset's sessions)")
    live.add_argument("--subject", type=int, metavar="K",
                      help="stream subject K (1-based) of a multi-subject config (--subjects N; "
                      "default 1)")
    live.add_argument("--duration", type=float, help="stop after this many seconds")
    live.add_argument("--status-every", type=float, default=10.0,
                      help="seconds between status lines, 0 = none (default %(default)s)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "train", help="train a model (BrainAE, VNA, FLIG, SMR+ICG) and its baselines",
        description="Train an alignment model on a THINGS-EEG2-layout directory, the simulator, "
        "or a lab's own recordings (--config lab), with the paper's loop: validation split, "
        "best checkpoint by validation loss.",
        epilog=LAB_DAY, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--data", action="append",
                   help="dataset directory (THINGS-EEG2 layout or a simulated one); for --config "
                   "lab a recording (.fif/.vhdr/.edf/.bdf/.set/.xdf or a 'neuralign run --record' "
                   "dir), repeat for several blocks")
    p.add_argument("--images", help="--config lab: folder of the shown images (id = file name "
                   "without extension, concept = sub-folder)")
    p.add_argument("--features", help="image features file or directory (default: "
                   "features.path of the config; without either, computed by features.encoder)")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override training.device")
    p.add_argument("--subjects", help="train on several subjects together (pretraining: a shared "
                   "encoder, one input layer per subject), e.g. 1-8 or 1,2,5 (dataset.subjects)")
    p.add_argument("--init", metavar="RUN", help="fine-tune the pretrained run RUN on this "
                   "subject's data instead of training from scratch (training.fine_tune.init; "
                   "docs/tutorials/new_subject.md)")
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
    p.add_argument("--generator", help="a flig / smr_icg run trained on --run's brain embeddings "
                   "(paired_from_run): carried in the bundle, the engine generates an image per epoch")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "paired", help="write paired.npz from a BrainAE run (for flig / smr_icg training)",
        description="Pair a run's stimulus images (64 x 64) with its brain embeddings zb or its "
        "flattened noise-normalised epochs; train a generator on it with neuralign train "
        "--config flig|smr_icg --data paired.npz.",
    )
    p.add_argument("--run", required=True, help="BrainAE / VNA run directory")
    p.add_argument("--out", required=True, help="paired.npz to write")
    p.add_argument("--responses", choices=["embedding", "epochs"], default="embedding",
                   help="brain embedding zb (default; what a bundle's generator takes) or epochs")
    p.add_argument("--trials", choices=["single", "average"], default="single",
                   help="one row per presentation (default) or per image (repetitions averaged)")
    p.add_argument("--image-size", type=int, default=64)
    p.set_defaults(func=cmd_paired)

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
