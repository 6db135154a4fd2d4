"""What to show and when: images of a folder, a sequence file, or a balanced random order.

Why its own module: a sequence is checked before any window opens, and a wrong file must fail
with the file and line that are wrong, not halfway through a session.

A sequence file is a CSV with a header. Columns (names case-insensitive):

* ``image`` (or ``image_id``, ``id``): a file name stem of ``--images`` (``cat_01``), or a
  path (absolute, or relative to the CSV's folder);
* ``duration``: how long the image stays on; ``isi`` (blank after it) or ``soa`` (onset to next
  onset), not both; ``jitter``: a uniform random extra SOA in ``[0, jitter]`` (seeded).

Times are milliseconds; a ``_s`` suffix (``soa_s``) says seconds, ``_ms`` milliseconds. Missing
timing columns or empty cells take the command-line defaults.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from neuralign.errors import UserError, require_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_ID_COLUMNS = ("image", "image_id", "id")
_TIME_COLUMNS = ("duration", "isi", "soa", "jitter")


@dataclass(frozen=True)
class Timing:
    """One image's timing, seconds. ``soa`` is onset to next onset (duration + ISI)."""

    duration: float = 0.1
    soa: float = 0.25
    jitter: float = 0.0

    def check(self, where: str) -> Timing:
        if self.duration <= 0:
            raise UserError(f"{where}: duration must be > 0 ms, got {self.duration * 1e3:g}")
        if self.soa < self.duration:
            raise UserError(f"{where}: SOA {self.soa * 1e3:g} ms is shorter than the duration "
                            f"{self.duration * 1e3:g} ms")
        if self.jitter < 0:
            raise UserError(f"{where}: jitter must be >= 0 ms, got {self.jitter * 1e3:g}")
        return self


@dataclass(frozen=True)
class Trial:
    """One presentation: the image id (its marker string), its file and its timing."""

    image_id: str
    path: Path
    timing: Timing


def find_images(folder: Path) -> dict[str, Path]:
    """``stem -> file`` of the images in ``folder`` and its subfolders (sorted by path; the
    simulator's ``image_set/test_images`` has one folder per concept); UserError when there are
    none or two files share a stem (the stem is the marker, so it must name one image)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images: {folder}: not a folder")
    out: dict[str, Path] = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            if f.stem in out:
                raise UserError(f"--images: {out[f.stem]} and {f} have the same "
                                "image id (file name stem)")
            out[f.stem] = f
    if not out:
        raise UserError(f"--images: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return out


def folder_sequence(images: Mapping[str, Path], timing: Timing) -> list[Trial]:
    """Every image once, in file name order."""
    return [Trial(i, p, timing) for i, p in images.items()]


def balanced_order(ids: Sequence[str], repetitions: int, seed: int = 0) -> list[str]:
    """Each id ``repetitions`` times, shuffled block by block (every image once per block, so
    repetitions are spread over the session) with no image following itself."""
    ids = list(ids)
    if repetitions < 1:
        raise UserError(f"--repetitions must be >= 1, got {repetitions}")
    if len(set(ids)) != len(ids):
        raise UserError("balanced_order: image ids must be unique")
    if len(ids) < 2 and repetitions > 1:
        raise UserError("--repetitions: one image cannot be repeated without following itself")
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for _ in range(repetitions):
        block = [ids[i] for i in rng.permutation(len(ids))]
        if order and block[0] == order[-1]:  # the only place a repeat can happen
            j = int(rng.integers(1, len(block)))
            block[0], block[j] = block[j], block[0]
        order += block
    return order


def repeated_sequence(images: Mapping[str, Path], timing: Timing, repetitions: int,
                      seed: int = 0) -> list[Trial]:
    """The folder's images in a seeded balanced random order (``--repetitions N``)."""
    return [Trial(i, images[i], timing) for i in balanced_order(list(images), repetitions, seed)]


def _seconds(cell: str, column: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"{where}: column {column!r}: not a number: {cell!r}") from None
    return value if column.endswith("_s") else value / 1e3


def _timing_columns(header: list[str], where: str) -> dict[str, str]:
    """``kind -> column`` for duration/isi/soa/jitter (with or without a unit suffix)."""
    found: dict[str, str] = {}
    for col in header:
        kind = col.removesuffix("_ms").removesuffix("_s")
        if kind in _TIME_COLUMNS:
            if kind in found:
                raise UserError(f"{where}: columns {found[kind]!r} and {col!r} both give {kind}")
            found[kind] = col
    if "isi" in found and "soa" in found:
        raise UserError(f"{where}: give ISI or SOA, not both ({found['isi']!r}, "
                        f"{found['soa']!r})")
    return found


def read_sequence(path: Path, images: Mapping[str, Path] | None, default: Timing) -> list[Trial]:
    """Trials of a sequence CSV (see the module doc); every error names the file and line."""
    path = require_file(path, "no such file", error=UserError, where="--sequence: ")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{path}: empty sequence file")
    header = [c.strip().lower() for c in rows[0]]
    id_col = next((c for c in _ID_COLUMNS if c in header), None)
    if id_col is None:
        raise UserError(f"{path}:1: no image column (one of {', '.join(_ID_COLUMNS)}) in the "
                        f"header {rows[0]}")
    cols = _timing_columns(header, f"{path}:1")
    trials: list[Trial] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if line_no == 1 or not any(c.strip() for c in row):
                continue
            where = f"{path}:{line_no}"
            if len(row) != len(header):
                raise UserError(f"{where}: {len(row)} fields, the header has {len(header)}")
            cells = {h: c.strip() for h, c in zip(header, row)}
            trials.append(Trial(*_locate(cells[id_col], images, path, where),
                                _row_timing(cells, cols, default, where)))
    if not trials:
        raise UserError(f"{path}: no trials after the header")
    return trials


def _row_timing(cells: dict[str, str], cols: dict[str, str], default: Timing,
                where: str) -> Timing:
    got = {k: _seconds(cells[c], c, where) for k, c in cols.items() if cells[c]}
    duration = got.get("duration", default.duration)
    if "soa" in got:
        soa = got["soa"]
    elif "isi" in got:
        soa = duration + got["isi"]
    else:  # the default ISI, kept when only the duration changes
        soa = duration + (default.soa - default.duration)
    return replace(default, duration=duration, soa=soa,
                   jitter=got.get("jitter", default.jitter)).check(where)


def _locate(cell: str, images: Mapping[str, Path] | None, csv_path: Path,
            where: str) -> tuple[str, Path]:
    """(image id, file) of an image cell: a stem of ``--images`` first, else a path."""
    if not cell:
        raise UserError(f"{where}: empty image cell")
    if images is not None and cell in images:
        return cell, images[cell]
    p = Path(cell)
    if not p.is_absolute():
        p = csv_path.parent / p
    if p.is_file():
        return p.stem, p
    known = "" if images is None else f" nor an image id of --images ({len(images)} images)"
    raise UserError(f"{where}: image {cell!r}: no such file{known}")

