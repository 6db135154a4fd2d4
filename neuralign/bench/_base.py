"""The contract of a bench measurement and what several of them share.

Kept apart from the package's ``__init__`` (which discovers the measurement modules) so a
measurement module imports its contract without importing its own discoverer.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuralign.cli.common import DEFAULT_DATA_DIR
from neuralign.errors import UserError


@dataclass(frozen=True)
class Measurement:
    """One ``neuralign bench <name>`` subcommand.

    Parameters
    ----------
    name
        The subcommand, e.g. ``"latency"``.
    help
        Its line in ``neuralign bench --help``.
    description
        The text above its options in ``neuralign bench <name> --help``.
    add_arguments
        Adds its options to its parser (import nothing heavy here: every ``neuralign`` call
        builds the parser).
    run
        Runs it from the parsed options; returns the exit code.
    order
        Its place in ``neuralign bench --help`` (ties: by name).
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    order: int = 100


def add_bundle_and_recording(p: argparse.ArgumentParser, raw_help: str) -> None:
    """``--bundle`` and ``--raw``, the options of every measurement that replays a recording into
    a bundle (read back by :func:`bundle_and_recording`)."""
    p.add_argument("--bundle", help="bundle (default: the demo's)")
    p.add_argument("--raw", help=raw_help)


def bundle_and_recording(args: argparse.Namespace) -> tuple[Path, Path]:
    """``--bundle`` / ``--raw``, by default the demo's cached bundle and simulated test session."""
    bundle = Path(args.bundle or DEFAULT_DATA_DIR / "demo-bundle")
    raw = Path(args.raw or DEFAULT_DATA_DIR / "demo-data" / "sim_test_raw.fif")
    for p, what in ((bundle, "--bundle"), (raw, "--raw")):
        if not p.exists():
            raise UserError(f"{what}: {p} not found (run 'neuralign demo --headless' first, "
                            "or pass it)")
    return bundle, raw
