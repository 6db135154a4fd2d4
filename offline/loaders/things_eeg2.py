"""THINGS-EEG2 (Gifford et al. 2022): preprocessed epochs and raw continuous recordings.

Layouts (as the dataset publishes them): ``preprocessed_eeg_{training,test}.npy`` and
``raw_eeg_{training,test}.npy`` (and ``image_metadata.npy``) are pickled dicts — the published
format, read by :func:`load_published_dict` alone, through a data-only unpickler (a crafted file
cannot run code; see :mod:`neuralign.npy_files`).

Two preprocessed variants share file names and keys:
- official: 17 occipito-parietal channels, 100 Hz, ``times`` = -0.2..0.79 matching the data;
- NICE/ATM/BrainAE: 63 channels, 250 Hz, data start at 0 s but ``times`` keeps the full
  -0.2 s axis (more entries than samples) — the LAST n_times entries belong to the data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuralign.errors import DataError
from neuralign.npy_files import read_pickled_npy
from neuralign.offline.dataset import BrainDataset, SplitData

from ._common import crop_mask, sfreq_from_times

log = logging.getLogger(__name__)

PARTS = ("training", "test")
TARGET_EVENT = 99999
TRAIN_IMAGES_PER_CONCEPT = 10
TEST_IMAGES_PER_CONCEPT = 1


def load_published_dict(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """One of THINGS-EEG2's published dict files (``preprocessed_eeg_*.npy``, ``raw_eeg_*.npy``,
    ``image_metadata.npy``), checked for ``keys``.

    Why this is the one place neuralign unpickles: the dataset publishes these files only as
    pickled dicts. Only files from the published dataset (or written by ``neuralign simulate``
    in its layout) should be loaded here; even so they go through
    :class:`~neuralign.npy_files.DataOnlyUnpickler`, which rebuilds dicts, lists, strings, numbers
    and numpy arrays and refuses any other object, so a crafted file cannot run code.
    """
    obj = read_pickled_npy(path)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}: expected a pickled dict with keys {list(keys)}, got {type(obj).__name__}"
        )
    for key in keys:
        if key not in obj:
            raise DataError(
                f"{path}: missing key {key!r} (expected {list(keys)}, found {sorted(obj)})"
            )
    return obj


def find_preprocessed_dir(root: Path, subject: int | None) -> Path:
    """Directory holding ``preprocessed_eeg_training.npy``: root/sub-XX,
    root/preprocessed_data/sub-XX, else root itself (a folder of one subject). The subject's own
    folder comes first, so a root holding several subjects never answers for all of them."""
    root = Path(root)
    cands = []
    if subject is not None:
        sub = f"sub-{subject:02d}"
        cands += [root / sub, root / "preprocessed_data" / sub]
    cands.append(root)
    for c in cands:
        if (c / "preprocessed_eeg_training.npy").exists():
            return c
    raise DataError(
        f"{root}: preprocessed_eeg_training.npy not found in {', '.join(str(c) for c in cands)}"
        + ("" if subject is not None else " (pass subject=N to look in sub-NN/)")
    )


def find_image_set(root: Path, image_set: Path | None = None, levels: int = 3) -> Path | None:
    """The ``image_set`` directory with ``image_metadata.npy``: explicit, or root and up to 3 parents."""
    if image_set is not None:
        image_set = Path(image_set)
        meta = image_set / "image_metadata.npy" if image_set.is_dir() else image_set
        if not meta.exists():
            raise DataError(f"{image_set}: image_metadata.npy not found")
        return meta.parent
    d = Path(root).resolve()
    for _ in range(levels + 1):
        for cand in (d / "image_set", d):
            if (cand / "image_metadata.npy").exists():
                return cand
        d = d.parent
    return None


def _read_split(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    d = load_published_dict(path, ("preprocessed_eeg_data", "ch_names", "times"))
    data = np.asarray(d["preprocessed_eeg_data"])
    if data.ndim != 4:
        raise DataError(
            f"{path}: preprocessed_eeg_data: expected 4-D (images, repetitions, channels, times), "
            f"got shape {data.shape}"
        )
    ch_names = [str(c) for c in d["ch_names"]]
    if len(ch_names) != data.shape[2]:
        raise DataError(
            f"{path}: ch_names: {len(ch_names)} names for {data.shape[2]} channels in preprocessed_eeg_data"
        )
    times = np.asarray(d["times"], dtype=np.float64).ravel()
    n_t = data.shape[3]
    if len(times) > n_t:
        log.info(
            "%s: times has %d entries for %d samples (NICE/ATM variant): using the last %d (%.3f..%.3f s)",
            path,
            len(times),
            n_t,
            n_t,
            times[-n_t],
            times[-1],
        )
        times = times[-n_t:]
    elif len(times) < n_t:
        raise DataError(
            f"{path}: times: {len(times)} entries but preprocessed_eeg_data has {n_t} samples"
        )
    return data, ch_names, times


def _metadata(
    image_set: Path | None, n_train: int, n_test: int
) -> tuple[list[str], list[str], list[str], list[str], dict[str, Path], dict[str, list[str]]]:
    if image_set is None:
        log.warning(
            "THINGS-EEG2: no image_set/image_metadata.npy found; using ids train_00000/test_00000 and "
            "concepts by index (%d per training concept, %d per test concept)",
            TRAIN_IMAGES_PER_CONCEPT,
            TEST_IMAGES_PER_CONCEPT,
        )
        tr_ids = [f"train_{i:05d}" for i in range(n_train)]
        tr_con = [f"train_concept_{i // TRAIN_IMAGES_PER_CONCEPT:04d}" for i in range(n_train)]
        te_ids = [f"test_{i:05d}" for i in range(n_test)]
        te_con = [f"test_concept_{i // TEST_IMAGES_PER_CONCEPT:04d}" for i in range(n_test)]
        return tr_ids, tr_con, te_ids, te_con, {}, {}
    meta_path = image_set / "image_metadata.npy"
    keys = ("train_img_concepts", "train_img_files", "test_img_concepts", "test_img_files")
    meta = load_published_dict(meta_path, keys)
    out = []
    files: dict[str, Path] = {}
    for part, n, sub in (("train", n_train, "training_images"), ("test", n_test, "test_images")):
        concepts = [str(c) for c in meta[f"{part}_img_concepts"]]
        fnames = [str(f) for f in meta[f"{part}_img_files"]]
        for key, vals in ((f"{part}_img_concepts", concepts), (f"{part}_img_files", fnames)):
            if len(vals) != n:
                raise DataError(
                    f"{meta_path}: {key}: {len(vals)} entries but the EEG {part} split has {n} images"
                )
        ids = [Path(f).stem for f in fnames]
        for i, c, f in zip(ids, concepts, fnames):
            p = image_set / sub / c / f
            if p.exists():
                files[i] = p.resolve()
        out += [ids, concepts]
    templates: dict[str, list[str]] = {}
    tdir = image_set / "template_images"
    if tdir.is_dir():
        for c in sorted(set(out[3])):
            cdir = tdir / c
            if cdir.is_dir():
                paths = sorted(p for p in cdir.iterdir() if p.is_file())
                templates[c] = [p.stem for p in paths]
                for p in paths:
                    files.setdefault(p.stem, p.resolve())
    return out[0], out[1], out[2], out[3], files, templates


def load_things_eeg2_preprocessed(
    root: str | Path,
    subject: int | None = None,
    tmin: float | None = 0.0,
    tmax: float | None = 1.0,
    image_set: str | Path | None = None,
) -> BrainDataset:
    """One subject's preprocessed THINGS-EEG2 epochs cropped to [tmin, tmax), with image ids.

    Image ids are file stems from ``image_metadata.npy`` (the metadata order is the data order).
    """
    d = find_preprocessed_dir(Path(root), subject)
    tr_path, te_path = d / "preprocessed_eeg_training.npy", d / "preprocessed_eeg_test.npy"
    if not te_path.exists():
        raise DataError(f"{te_path}: file not found (expected next to {tr_path.name})")
    tr, ch_names, times = _read_split(tr_path)
    te, ch_te, times_te = _read_split(te_path)
    if ch_te != ch_names:
        raise DataError(
            f"{te_path}: ch_names: differ from {tr_path.name} ({len(ch_te)} vs {len(ch_names)} channels)"
        )
    if len(times_te) != len(times) or not np.allclose(times_te, times, atol=1e-6):
        raise DataError(f"{te_path}: times: differ from {tr_path.name}")
    sfreq = sfreq_from_times(times, tr_path)
    mask = crop_mask(times, tmin, tmax, tr_path)
    times = times[mask]
    tr = np.ascontiguousarray(tr[..., mask], dtype=np.float32)
    te = np.ascontiguousarray(te[..., mask], dtype=np.float32)
    iset = find_image_set(d, Path(image_set) if image_set is not None else None)
    tr_ids, tr_con, te_ids, te_con, files, templates = _metadata(iset, tr.shape[0], te.shape[0])
    log.info(
        "THINGS-EEG2 %s: train %s, test %s, %d channels at %.1f Hz, %.3f..%.3f s",
        d,
        tr.shape,
        te.shape,
        len(ch_names),
        sfreq,
        times[0],
        times[-1],
    )
    try:
        return BrainDataset(
            train=SplitData(tr, tr_ids, tr_con),
            test=SplitData(te, te_ids, te_con),
            ch_names=ch_names,
            ch_types=["eeg"] * len(ch_names),
            sfreq=sfreq,
            times=times,
            modality="eeg",
            image_files=files,
            template_ids=templates,
            provenance="external-preprocessed",
            source=str(d),
        )
    except ValueError as err:
        raise DataError(f"{d}: {err}") from None


# ----------------------------------------------------------------------------- raw


def load_things_eeg2_raw(path: str | Path, drop_targets: bool = True) -> tuple[Any, np.ndarray]:
    """One ``raw_eeg_{training,test}.npy`` as an MNE RawArray (with ``stim``) plus its events.

    Units: stored as written by the dataset's source_to_raw.py, i.e. MNE ``get_data()`` output,
    which is volts — passed to MNE unchanged. Event codes are 1-based image-condition indices into
    the training / test image list; target (catch) trials, code 99999, are dropped.
    """
    import mne

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: raw THINGS-EEG2 file not found")
    keys = ("raw_eeg_data", "ch_names", "ch_types", "sfreq")
    d = load_published_dict(path, keys)
    data = np.asarray(d["raw_eeg_data"], dtype=np.float64)
    ch_names = [str(c) for c in d["ch_names"]]
    ch_types = [str(c) for c in d["ch_types"]]
    if data.ndim != 2:
        raise DataError(
            f"{path}: raw_eeg_data: expected 2-D (channels, samples), got shape {data.shape}"
        )
    if len(ch_names) != data.shape[0] or len(ch_types) != data.shape[0]:
        raise DataError(
            f"{path}: ch_names/ch_types: {len(ch_names)}/{len(ch_types)} entries for "
            f"{data.shape[0]} rows of raw_eeg_data"
        )
    if "stim" not in ch_names:
        raise DataError(f"{path}: ch_names: no 'stim' channel (expected 63 EEG channels + 'stim')")
    eeg = [k for k, t in enumerate(ch_types) if t == "eeg"]
    if eeg:
        med = float(np.median(np.abs(data[eeg[:8], : min(data.shape[1], 10000)])))
        if med > 1e-2:
            log.warning(
                "%s: median |EEG| = %.3g looks like microvolts, not volts; data left unscaled",
                path,
                med,
            )
    info = mne.create_info(ch_names, float(d["sfreq"]), ch_types)
    raw = mne.io.RawArray(data, info, verbose="error")
    lp, hp = d.get("lowpass"), d.get("highpass")
    with raw.info._unlock():
        if hp is not None:
            raw.info["highpass"] = float(hp)
        if lp is not None:
            raw.info["lowpass"] = float(lp)
    events = _events(raw, drop_targets, path)
    return raw, events


def _events(raw: Any, drop_targets: bool, source: Path | str) -> np.ndarray:
    import mne

    events = mne.find_events(
        raw,
        stim_channel="stim",
        shortest_event=1,
        consecutive=True,
        initial_event=True,
        verbose="error",
    )
    if drop_targets:
        n = int(np.sum(events[:, 2] == TARGET_EVENT))
        events = events[events[:, 2] != TARGET_EVENT]
        log.info("%s: %d image events, %d target trials (99999) dropped", source, len(events), n)
    return events


def find_things_eeg2_raw(root: str | Path, subject: int, part: str = "training") -> list[Path]:
    """Session files ``[raw_data/]sub-XX/ses-YY/raw_eeg_<part>.npy`` in session order."""
    if part not in PARTS:
        raise DataError(f"THINGS-EEG2 raw part: expected one of {PARTS}, got {part!r}")
    root = Path(root)
    sub = f"sub-{subject:02d}"
    for base in (root / "raw_data" / sub, root / sub, root):
        found = sorted(base.glob(f"ses-*/raw_eeg_{part}.npy"))
        if found:
            return found
    raise DataError(f"{root}: no {sub}/ses-*/raw_eeg_{part}.npy found")


def merge_things_eeg2_sessions(
    paths: Sequence[str | Path], drop_targets: bool = True
) -> tuple[Any, np.ndarray]:
    """Concatenate sessions into one Raw; events are re-found on the merged stim channel."""
    import mne

    if not paths:
        raise DataError("merge_things_eeg2_sessions: no session files given")
    raws = []
    for p in paths:
        raw, _ = load_things_eeg2_raw(p, drop_targets=drop_targets)
        raws.append(raw)
    first = raws[0]
    for p, r in zip(paths[1:], raws[1:]):
        if r.ch_names != first.ch_names or r.info["sfreq"] != first.info["sfreq"]:
            raise DataError(f"{p}: ch_names/sfreq: differ from {paths[0]}")
    raw = mne.concatenate_raws(raws, verbose="error")
    return raw, _events(raw, drop_targets, f"{len(paths)} sessions")
