"""The parser and the dispatch.

Every subcommand imports its heavy modules lazily so ``neuralign --help`` is instant. A
:class:`~neuralign.errors.UserError` becomes one line on stderr and exit code 2 (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

from neuralign import __version__, bench
from neuralign.cli import demo, offline, online, present
from neuralign.errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each command module registers its own subcommands."""
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
    for module in (offline, online, present, bench, demo):  # the order of 'neuralign --help'
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
