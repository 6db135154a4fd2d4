"""``demo``: the whole product on the built-in simulator, one step after the other.

Each offline step calls the same functions as its own command (``neuralign.cli.offline``), then
the live part replays the simulated test session over LSL, decodes it and checks it against the
offline decoding of the same recording.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from neuralign.cli.cache import cache_key, is_cached, mark_cached, stale_reason
from neuralign.cli.common import DEFAULT_DATA_DIR, add_config_args, config_from_args
from neuralign.cli.offline import ensure_simulated, evaluate, export
from neuralign.cli.online import show_in_viewer
from neuralign.cli.report import print_live_accuracy, print_report
from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.bundle import Bundle
    from neuralign.config import Config
    from neuralign.realtime.decisions import Result


def cmd_demo(args: argparse.Namespace) -> int:
    """``neuralign demo``: simulate, train, evaluate, export (each cached), then live."""
    from neuralign.config import dump_config

    config = config_from_args(args)
    if config.dataset.simulation is None:
        raise UserError(f"{args.config}: dataset.kind: expected 'simulated' for the demo")
    headless = args.headless
    if not headless:  # before minutes of training, not after (a missing X library aborts Qt)
        from neuralign.ui.display import headless_reason

        reason = headless_reason()
        if reason:
            print(f"{reason}. Running headless.")
            headless = True
    cache = Path(args.cache_dir)
    data_dir, run_dir, bundle_dir = cache / "demo-data", cache / "demo-run", cache / "demo-bundle"
    print(f"[1/5] Dataset ({data_dir})")
    data_key = ensure_simulated(config, data_dir, force=args.force)
    # training reads everything but the realtime section; the report depends on the run alone
    train_part = dump_config(config)
    train_part.pop("realtime", None)
    run_key = cache_key(data=data_key, config=train_part)
    print(f"[2/5] Training {config.model.name} ({run_dir})")
    if is_cached(run_dir, run_key, "model.safetensors") and not args.force:
        print("  reusing the trained run (--force to retrain)")
    else:
        from neuralign.offline.train import run_training

        if not args.force and (reason := stale_reason(run_dir, "model.safetensors")):
            print(reason)
        summary = run_training(config, run_dir, data_dir, None, progress=not args.headless)
        mark_cached(run_dir, run_key, "model.safetensors")
        print(f"  best epoch {summary['best_epoch']} of {summary['epochs']} (by validation loss), "
              f"{summary['seconds']:.0f} s")
    print("[3/5] Offline evaluation on held-out zero-shot concepts (all test trials)")
    if is_cached(run_dir, run_key, "report.json") and not args.force:
        print_report(json.loads((run_dir / "report.json").read_text()), run_dir / "report.json")
    else:
        evaluate(run_dir)
        mark_cached(run_dir, run_key, "report.json")
    print(f"[4/5] Model bundle ({bundle_dir}) with a generator of images from brain embeddings")
    gen_dir = ensure_generator(run_dir, run_key, cache / "demo-generator", args.force)
    export(run_dir, bundle_dir, gen_dir)
    print("[5/5] Live: replaying the test session over LSL and decoding it")
    return run_live(config, bundle_dir, data_dir / "sim_test_raw.fif", headless=headless,
                    speed=args.speed, n_trials=args.n_trials, print_every=args.print_every,
                    json_path=Path(args.json) if args.json else None, truth_run=run_dir)


def ensure_generator(run_dir: Path, run_key: str, gen_dir: Path, force: bool) -> Path:
    """Train the demo's small generator (configs/demo_generator.yaml) on the BrainAE run's brain
    embeddings unless one made from the same run, config and code is cached; returns its run."""
    from neuralign.config import dump_config, load_config

    gen_config = load_config("demo_generator")
    key = cache_key(run=run_key, generator=dump_config(gen_config))
    if is_cached(gen_dir, key, "model.safetensors") and not force:
        print(f"  reusing the trained generator in {gen_dir} (--force to retrain)")
        return gen_dir
    from neuralign.offline.generative.from_run import train_run_generator

    if not force and (reason := stale_reason(gen_dir, "model.safetensors")):
        print(reason)
    h = train_run_generator(run_dir, gen_config, gen_dir)
    mark_cached(gen_dir, key, "model.safetensors")
    v = h["validation"]
    print(f"  generator: {gen_config.model.name} trained on {h['n_train']} single-trial brain "
          f"embeddings in {h['seconds_total']:.0f} s; on {v['n_images']} held-out single trials: "
          f"SSIM {v['ssim']:.3f} (mean training image {v['ssim_mean_image']:.3f}), 2-way "
          f"identification {v['two_way_pixel']:.2f} ({gen_dir})")
    return gen_dir


def run_live(config: Config, bundle_dir: Path, raw_path: Path, headless: bool, speed: float,
             n_trials: int, print_every: int, json_path: Path | None,
             truth_run: Path | None = None) -> int:
    """Replay ``raw_path`` over LSL and decode it live: in the viewer, or headless with running
    accuracy lines, then the live/offline parity check (and its numbers in ``json_path``).
    ``truth_run``: the BrainAE run, whose stimuli score a generator's images (SSIM) headless."""
    from neuralign.bundle import load_bundle
    from neuralign.realtime.replay.session import replay_session

    bundle = load_bundle(bundle_dir)
    session = replay_session(bundle, raw_path, config.realtime, speed=speed,
                             n_trials=n_trials or None)
    print(f"  decoding {session.n_trials} test trials live (--n-trials; 0 = all): the accuracy "
          "below is over these trials, the offline report above over all test trials")
    session.start()
    if not headless:
        show_in_viewer(session.engine, bundle, session.stop)
        return 0
    ssim = _generated_ssim(bundle, truth_run) if session.engine.generation is not None else None
    if bundle.manifest.generator is not None and session.engine.generation is None:
        print(f"  generated images off: {session.engine.generation_off}")
    t0 = time.monotonic()
    shown = 0
    try:
        while session.engine.n_decoded < session.n_trials and session.engine.error is None:
            time.sleep(0.2)
            if session.engine.n_decoded - shown >= print_every:
                shown = session.engine.n_decoded
                print_live_accuracy(session)
                if ssim is not None:
                    ssim.update(session.engine.generation.images, session.results())
                    print(ssim.line())
            if time.monotonic() - t0 > session.n_trials * 0.5 / speed + 60:
                print("  timed out waiting for results")
                break
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        session.stop()
    print_live_accuracy(session, final=True)
    if ssim is not None:  # stop() generated what was pending
        ssim.update(session.engine.generation.images, session.results())
        print(ssim.line())
    online = session.results_in_stimulus_order()
    parity = live_offline_parity(bundle, raw_path, online, session.n_trials)
    print(f"  parity: {parity['parity_same_top1']}/{parity['parity_n']} trials have the same "
          "top-1 live as offline")
    if json_path:
        json_path.write_text(json.dumps({
            "n_trials": session.n_trials, "decoded": session.engine.n_decoded,
            "accuracy": session.accuracy(), "latency_ms": session.engine.stats.summary(),
            **({"generated": ssim.summary()} if ssim is not None else {}),
            **parity}, indent=1))
    if session.engine.error is not None:
        raise UserError(f"engine stopped: {session.engine.error}")
    return 0


def _generated_ssim(bundle: Bundle, truth_run: Path | None):
    """The running SSIM of the engine's generated images (None without a generator or run)."""
    if truth_run is None or bundle.manifest.generator is None:
        return None
    from neuralign.offline.generative.from_run import (
        LiveSSIM,
        mean_training_image,
        stimulus_truth_for_bundle,
    )

    return LiveSSIM(stimulus_truth_for_bundle(truth_run, bundle), mean_training_image(truth_run, bundle))


def live_offline_parity(bundle: Bundle, raw_path: Path, online: list[Result], n_trials: int) -> dict:
    """Compare live results (in stimulus order) with the offline decoding of the same recording:
    the demo's proof that the engine decodes exactly the epochs the model was trained on."""
    from neuralign.offline.single_trial import decode_recording

    offline = decode_recording(bundle, raw_path)[:n_trials]
    same = sum(a.topk_ids[0] == b["topk_ids"][0] for a, b in zip(online, offline))
    return {"parity_same_top1": same, "parity_n": len(offline),
            "online_top1": [r.topk_ids[0] for r in online],
            "offline_top1": [o["topk_ids"][0] for o in offline]}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = sub.add_parser(
        "demo", help="run the whole product on the built-in simulator",
        description="Simulate (or reuse) the demo dataset, train BrainAE on it (or reuse the run), "
        "evaluate it against the ridge baselines, export a bundle, then replay the test session "
        "over LSL, decode it live and show the viewer (or, --headless, print running accuracy and "
        "latency and check live/offline parity).",
    )
    add_config_args(p)
    p.add_argument("--cache-dir", default=str(DEFAULT_DATA_DIR),
                   help="where the dataset, run and bundle are cached (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="re-simulate and retrain even if cached")
    p.add_argument("--headless", action="store_true",
                   help="no viewer: print running accuracy and latency, then exit")
    p.add_argument("--n-trials", type=int, default=200,
                   help="live part: decode the first N test trials, 0 = all of them "
                   "(default %(default)s)")
    p.add_argument("--speed", type=float, default=1.0, help="live part: replay speed factor")
    p.add_argument("--print-every", type=int, default=25, help="headless: status every N trials")
    p.add_argument("--json", help="headless: write live accuracy, latency and parity here")
    p.set_defaults(func=cmd_demo)
