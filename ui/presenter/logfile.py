"""The presentation log: one row per shown image, written as it is final (flushed each row, so
an abort or a crash loses nothing shown before it).

``.jsonl`` paths get one JSON object per line, anything else CSV with a header. In closed loop a
row is final when its decision is, so rows come in decision order (sort by ``index``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path
from typing import IO

from neuralign.ui.presenter.session import LogRow

COLUMNS = [f.name for f in fields(LogRow)]
_TEXT = {"image_id", "mode", "decision", "reason"}  # never parsed as numbers ("007" stays)


class LogWriter:
    """Appends :class:`LogRow` objects to ``path`` (CSV or JSONL by the suffix)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self._f: IO[str] | None = self.path.open("w", newline="", encoding="utf-8")
        self._csv = None if self.jsonl else csv.DictWriter(self._f, COLUMNS)
        if self._csv is not None:
            self._csv.writeheader()
        self.n_rows = 0

    def write(self, row: LogRow) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: log already closed")
        d = row.to_dict()
        if self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in d.items()})
        else:
            self._f.write(json.dumps(d) + "\n")
        self._f.flush()
        self.n_rows += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_log(path: Path) -> list[dict[str, object]]:
    """The rows of a log written by :class:`LogWriter`, sorted by ``index`` (numbers parsed)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [{k: v if k in _TEXT else _num(v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: int(r["index"]))


def _num(v: str) -> object:
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v
