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
from collections.abc import Callable
from pathlib import Path

from neuralign import __version__
from neuralign.errors import NotYetAvailable, UserError

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


def _not_yet(issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise NotYetAvailable(
            f"'neuralign {args.command}' is not available yet: it lands with the {issue} issue."
        )

    return run


# ------------------------------------------------------------------------------------------------
# Subcommand implementations


def cmd_simulate(args: argparse.Namespace) -> int:
    from neuralign.config import load_config

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"dataset.simulation.seed={args.seed}")
    if args.snr is not None:
        overrides.append(f"dataset.simulation.snr={args.snr}")
    if args.modality is not None:
        overrides.append(f"dataset.simulation.modality={args.modality}")
    config = load_config(args.config, overrides)
    if config.dataset.kind != "simulated" or config.dataset.simulation is None:
        raise UserError(
            f"{args.config}: dataset.kind: expected 'simulated' for 'neuralign simulate' "
            f"(got {config.dataset.kind!r})"
        )
    from neuralign.offline.simulator import simulate

    out = Path(args.out)
    t0 = time.perf_counter()
    result = simulate(config.dataset.simulation, out, preprocessing=config.preprocessing)
    print(f"Simulated dataset written to {out} in {time.perf_counter() - t0:.1f} s")
    print(result.summary())
    return 0


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
    p.set_defaults(func=_not_yet("offline training (BrainAE/VNA)"))

    p = sub.add_parser(
        "evaluate", help="evaluate a trained run with the papers' protocols",
        description="Zero-shot retrieval / classification top-1/top-5, encoding Pearson r, "
        "accuracy vs averaged repetitions, masked-channel reconstruction; writes JSON + figures.",
    )
    p.add_argument("--run", required=True, help="run directory written by 'neuralign train'")
    p.add_argument("--json", help="where to write the report JSON")
    p.set_defaults(func=_not_yet("offline training (BrainAE/VNA)"))

    p = sub.add_parser(
        "export", help="export a trained run as a model bundle for the realtime engine",
        description="Write safetensors weights + a JSON manifest (channels, rates, window, "
        "filters, whitening, template bank, hash): the one contract with the engine.",
    )
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.set_defaults(func=_not_yet("offline training (BrainAE/VNA)"))

    p = sub.add_parser(
        "replay", help="replay a recording or dataset as LSL streams (data + Markers)",
        description="Stream a .fif/.edf/.bdf/.vhdr/.set recording, a THINGS-EEG2 file or a "
        "neuralign recording over LSL (local host by default), with a marker stream.",
    )
    p.add_argument("path", nargs="?", help="file to replay")
    p.set_defaults(func=_not_yet("replay and viewer"))

    p = sub.add_parser(
        "run", help="decode a live stream with a model bundle",
        description="Read LSL / BrainFlow / file sources, filter causally, decode in "
        "fixed-latency batches, publish results on LSL.",
    )
    p.add_argument("--bundle", help="model bundle directory")
    p.add_argument("--source", help="lsl:NAME | brainflow:synthetic | brainflow:ID[:params] | file:PATH")
    p.set_defaults(func=_not_yet("realtime engine"))

    p = sub.add_parser(
        "view", help="open the Qt viewer of a running engine",
        description="PyQt6 + pyqtgraph viewer: traces, top-k images, reconstructions, latency.",
    )
    p.set_defaults(func=_not_yet("replay and viewer"))

    p = sub.add_parser(
        "bench", help="measure what the engine adds to latency, stage by stage",
        description="Latency benchmark (p50/p95/p99/max per stage) and training throughput.",
    )
    p.set_defaults(func=_not_yet("realtime engine"))

    p = sub.add_parser(
        "demo", help="run the whole product on the built-in simulator",
        description="Simulate (or reuse) the demo dataset, then - as later stages land - train, "
        "export, replay over LSL, decode live and show the viewer.",
    )
    _add_config_args(p)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR / "demo-data"),
                   help="where the simulated dataset is cached (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="re-simulate even if cached")
    p.add_argument("--headless", action="store_true", help="no viewer; print progress")
    p.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from neuralign.config import load_config

    config = load_config(args.config, args.overrides)
    if config.dataset.simulation is None:
        raise UserError(f"{args.config}: dataset.kind: expected 'simulated' for the demo")
    from neuralign.offline.simulator import simulate

    data_dir = Path(args.data_dir)
    marker = data_dir / "simulation.json"
    if marker.is_file() and not args.force:
        print(f"[1/1] Reusing simulated dataset in {data_dir} (--force to redo)")
    else:
        print(f"[1/1] Simulating the demo dataset into {data_dir} ...")
        t0 = time.perf_counter()
        result = simulate(config.dataset.simulation, data_dir, preprocessing=config.preprocessing)
        print(f"      done in {time.perf_counter() - t0:.1f} s")
        print(result.summary())
    print("Training, live decoding and the viewer join the demo as their issues land.")
    return 0


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
