"""User-facing errors: one clear message naming what and where; the CLI prints it, exits 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, channel mismatch, ...).

    The CLI prints ``str(err)`` on one line, without a traceback, and exits with code 2.
    """


class ConfigError(UserError):
    """A config file (or a --set override) is invalid."""

    def __init__(self, source: str, key: str, expected: str, got: object = None):
        self.source, self.key, self.expected, self.got = source, key, expected, got
        msg = f"{source}: {key}: {expected}"
        if got is not None:
            msg += f" (got {got!r})"
        super().__init__(msg)


class DataError(UserError):
    """A data, features or bundle file is missing, malformed or inconsistent."""


def require_file(path: str | Path, message: str, error: type[UserError] = DataError,
                 where: str = "") -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a file, else ``error("<path>: <message>")``.

    Why: every reader checks its input before opening it, so a missing file is one line naming
    the file first, then what it should have been (``message``, e.g. ``"events table not
    found"``), instead of a library's traceback. ``where`` prefixes the line with what named the
    path (e.g. ``"--source: "``).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{where}{path}: {message}")
    return path


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON file ``path``; a syntax error is one DataError naming the file and line."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: {what} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
