"""What the command modules share: the default data folder and the config flags.

Why a module of its own: the parser imports every command module, so the commands must not import
their shared helpers back from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuralign.config import Config

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
