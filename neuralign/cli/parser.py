"""The parser, the config flags every config-reading command shares, and the dispatch.

Every subcommand imports its heavy modules lazily so ``neuralign --help`` is instant. A
:class:`~neuralign.errors.UserError` becomes one line on stderr and exit code 2 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from neuralign import __version__
from neuralign.errors import UserError

if TYPE_CHECKING:
    from neuralign.config import Config

EXIT_USER_ERROR = 2

DEFAULT_DATA_DIR = Path(".neuralign-cache")


def add_config_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    """``--config`` and ``--set``: one spelling for every command that reads a config."""
    p.add_argument(
        "--config", default=default,
        help="YAML config: a path, or the name of a shipped one "
        "(demo, things_eeg2, things_meg, tvsd, allen_natural_scenes). Default: "
        + ("%(default)s." if default else "the schema's defaults."),
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=5 (repeatable; value is YAML)",
    )


def config_from_args(args: argparse.Namespace, flags: dict[str, str] | None = None) -> Config:
    """The config of ``--config`` + ``--set`` overrides + dedicated flags (``{attr: dotted key}``),
    so a dedicated flag and its ``--set`` spelling are validated by the same schema. Without
    ``--config`` (commands whose config is optional) the schema's defaults are the base."""
    from neuralign.config import config_from_overrides, load_config

    def spelled(value: object) -> str:
        # a flag's string stays a string ('--result-source-id 0012' is not the number 12)
        return json.dumps(value) if isinstance(value, str) else str(value)

    overrides = list(args.overrides) + [f"{key}={spelled(getattr(args, attr))}"
                                        for attr, key in (flags or {}).items()
                                        if getattr(args, attr) is not None]
    if args.config is None:
        return config_from_overrides(overrides)
    return load_config(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each command module registers its own subcommands."""
    # The command modules use the helpers above, so they are imported here, not at the top.
    from neuralign.cli import bench, demo, offline, online

    parser = argparse.ArgumentParser(
        prog="neuralign",
        description="Real-time visual neural decoding: train brain-image alignment models "
        "offline (BrainAE, VNA), decode live LSL / BrainFlow streams online.",
        epilog="Run 'neuralign <command> --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"neuralign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for module in (offline, online, bench, demo):  # the order of 'neuralign --help'
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error is one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare 'neuralign': the help is what the user needs, not an error
        parser.print_help()
        return 0
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
