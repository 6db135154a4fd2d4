"""Cache stamps: a cached dataset, run or report is reused only if it was made from the same
resolved config and the same code.

Why: checking that a file exists reused a run trained with other settings after ``--set`` and
printed its old numbers. Each cached step writes ``neuralign-cache.json`` with a key: a hash of
the config sections the step depends on, the neuralign version and the content of the code that
computes it (``neuralign.signal``, the schema, the bundle format, ``offline``, ``models``), so an
edit of training code retrains but an edit of the viewer does not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from neuralign import __version__

STAMP = "neuralign-cache.json"
#: the code a cached dataset, run or report depends on (not the CLI, realtime or the viewer)
CODE_PACKAGES = ("neuralign.signal", "neuralign.offline", "neuralign.models")
CODE_MODULES = ("neuralign.config", "neuralign.generative_config", "neuralign.bundle")


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<version>+<hash of the sources>`` of the code that makes cached artefacts."""
    files: list[Path] = []
    for name in CODE_PACKAGES:
        spec = importlib.util.find_spec(name)  # no import: finding the folder is enough
        for root in (spec.submodule_search_locations or []) if spec else []:
            files += sorted(Path(root).rglob("*.py"))
    for name in CODE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec and spec.origin:
            files.append(Path(spec.origin))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def cache_key(**parts: object) -> str:
    """A stable hash of JSON-able ``parts`` plus :func:`code_version`."""
    blob = json.dumps({"code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_cached(directory: Path, key: str, marker: str) -> bool:
    """Whether ``directory`` holds ``marker`` (the step's output) made under ``key``."""
    stamp = directory / STAMP
    if not (directory / marker).is_file() or not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()).get(marker) == key
    except (OSError, ValueError):
        return False


def stale_reason(directory: Path, marker: str) -> str:
    """Why a present ``marker`` is not reused (printed before redoing it)."""
    return (f"  {directory / marker} was made with another config or code version: redoing it"
            if (directory / marker).is_file() else "")


def mark_cached(directory: Path, key: str, marker: str) -> None:
    """Record that ``marker`` in ``directory`` was made under ``key``."""
    stamp = directory / STAMP
    try:
        keys = json.loads(stamp.read_text()) if stamp.is_file() else {}
    except ValueError:
        keys = {}
    keys[marker] = key
    stamp.write_text(json.dumps(keys, indent=1))
