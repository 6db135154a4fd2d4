"""A lab's own continuous recordings + stimulus events + a folder of images -> a BrainDataset.

What a lab brings on the day a new subject comes in: one or more blocks recorded while the subject
watched images and markers were sent. A block is any recording MNE reads (FIF, BrainVision
``.vhdr``, EDF/BDF, EEGLAB ``.set``), a ``neuralign run --record`` directory, or a LabRecorder
``.xdf`` file. Stimulus events come from the recording itself (annotations, the recorded markers,
the XDF marker stream) or from an events table (CSV/TSV, BIDS ``events.tsv`` style). Each block is
epoched on its own by neuralign's causal chain from its first sample, as the engine would see it
live (:func:`neuralign.offline.preprocess.epochs_from_continuous`), so a model trained here decodes
the next block with exact parity. Which shown images are test images is the user's choice
(``dataset.recording.split``): by image list, by concept (zero-shot) or by block.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralign.config import Config, RecordingConfig
from neuralign.errors import DataError, UserError, require_file
from neuralign.offline.dataset import BrainDataset, SplitData
from neuralign.offline.preprocess import (
    _modality,
    epochs_from_continuous,
    group_by_image,
    select_channels,
)
from neuralign.recording_format import (
    BOUNDARY,
    is_recording,
    read_clock_log,
    read_recording,
    recorded_clock,
    si_factors,
)
from neuralign.signal.events import annotation_onsets, is_stimulus
from neuralign.units import channel_scales, implausible_unit

log = logging.getLogger(__name__)

MNE_SUFFIXES = (".fif", ".fif.gz", ".vhdr", ".edf", ".bdf", ".set")
XDF_SUFFIXES = (".xdf", ".xdfz", ".xdf.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# events-table columns, first match wins: the image id, and the onset (seconds or samples)
ID_COLUMNS = ("image_id", "stim_file", "value", "trial_type")
ONSET_S_COLUMNS = ("onset", "onset_s")
ONSET_SAMPLE_COLUMNS = ("sample", "onset_sample")
BV_MARKER_TYPES = ("Comment/", "Stimulus/", "Response/")
_NEURAL_TYPES = ("eeg", "mag", "grad", "seeg", "ecog", "misc")


@dataclass
class Continuous:
    """One block: continuous data in volts / teslas (every format) + events."""

    data: np.ndarray  # (channels, samples)
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    events: list[tuple[int, str]]  # (sample index from the first sample, label)
    source: Path
    description: str = ""  # what the block is, for messages ("XDF <path>", ...)
    # samples that do not follow their predecessor (gaps): the chain restarts there, and the
    # epochs across are dropped, as the engine does live
    breaks: list[int] = field(default_factory=list)


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.name.lower().endswith(suffixes)


def _read_mne(path: Path) -> Continuous:
    import mne

    try:
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for a bad or unsupported file
        raise DataError(f"{path}: mne could not read it as a continuous recording ({exc})") from exc
    return continuous_from_raw(raw, path, str(path))


def continuous_from_raw(raw, source: Path, description: str) -> Continuous:
    """An MNE Raw's data channels and its stimulus annotations (BAD/EDGE skipped)."""
    import mne

    picks = [raw.ch_names[i] for i in mne.pick_types(raw.info, eeg=True, meg=True, seeg=True,
                                                      ecog=True, misc=True, exclude=[])]
    onsets, labels = annotation_onsets(raw)
    if _has_suffix(Path(source), (".vhdr",)):  # MNE names BrainVision markers '<type>/<desc>'
        labels = [lab.split("/", 1)[1] if lab.startswith(BV_MARKER_TYPES) else lab
                  for lab in labels]
    events = [(int(s), lab) for s, lab in zip(onsets, labels) if is_stimulus(lab)]
    # MNE marks a discontinuity 'EDGE boundary' (concatenate_raws; neuralign's FIF export of a
    # recording with gaps): the chain restarts there
    breaks = sorted({int(s) for s, lab in zip(onsets, labels) if lab == BOUNDARY[1]})
    return Continuous(raw.get_data(picks=picks), float(raw.info["sfreq"]), picks,
                      raw.get_channel_types(picks=picks), events, Path(source), description,
                      breaks=breaks)


def _read_neuralign_recording(directory: Path, units: str | None = None) -> Continuous:
    """``neuralign run --record`` layout (realtime/recorder.py): header.json, samples.f32
    (sample-major), timestamps.f64 (LSL clock), events.jsonl. Closed or crashed (a torn last
    sample is ignored); each marker goes to the sample with the nearest timestamp. Volts /
    teslas by the header's ``units`` (old headers without it: volts); ``units`` replaces it."""
    data, ts, rec, _, header = read_recording(directory)
    if units is not None:  # the stored numbers are in ``units``, whatever the header says
        scales = channel_scales(list(header["ch_names"]), list(header["ch_types"]), [], units,
                                str(directory), "dataset.recording.units", DataError)
        data = data / si_factors(header, directory)[:, None] * scales[:, None]
    if data.shape[1] < 2:
        raise DataError(f"{directory}: the recording holds {data.shape[1]} samples")
    names, types = list(header["ch_names"]), list(header["ch_types"])
    events, breaks = recorded_clock(ts, rec, float(header["sfreq"]), read_clock_log(directory))
    data = data.astype(np.float64)
    return Continuous(data, float(header["sfreq"]), names, types, events, directory,
                      breaks=breaks)


def read_events_table(path: Path, sfreq: float) -> list[tuple[int, str]]:
    """(sample, image id) from a CSV/TSV: onset in seconds from the first sample (BIDS ``onset``)
    or a sample index (``sample`` / ``onset_sample``); the image id from ``image_id``,
    ``stim_file`` (its file stem), ``value`` or ``trial_type``."""
    path = require_file(path, "events table not found")
    text = path.read_text(encoding="utf-8-sig")
    delim = "\t" if path.suffix.lower() == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
    cols = rows[0].keys() if rows else []
    id_col = next((c for c in ID_COLUMNS if c in cols), None)
    s_col = next((c for c in ONSET_SAMPLE_COLUMNS if c in cols), None)
    t_col = next((c for c in ONSET_S_COLUMNS if c in cols), None)
    if id_col is None or (s_col is None and t_col is None):
        raise DataError(f"{path}: expected an onset column ({'/'.join(ONSET_S_COLUMNS)} in s, or "
                        f"{'/'.join(ONSET_SAMPLE_COLUMNS)}) and an image id column "
                        f"({'/'.join(ID_COLUMNS)}); found {list(cols)}")
    events = []
    for k, r in enumerate(rows, start=2):
        label = (r[id_col] or "").strip()
        if not label or label.lower() == "n/a":
            continue
        if id_col == "stim_file":
            label = Path(label.replace("\\", "/")).stem
        try:
            sample = int(r[s_col]) if s_col else int(round(float(r[t_col]) * sfreq))
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {k}: onset {r[s_col or t_col]!r} is not a number") from None
        events.append((sample, label))
    return events


def read_continuous(path: Path, events: Path | None = None, eeg_stream: str | None = None,
                    marker_stream: str | None = None, units: str | None = None) -> Continuous:
    """Load one block in any supported format, in volts / teslas; ``events`` (a table) replaces
    its own events. ``units`` (``dataset.recording.units``) is the unit the file's values are
    really in, whatever it declares: it replaces an XDF stream's or a recording's units, and
    rescales what MNE returns (volts by the file's own header) for a file mislabelled in it."""
    path = Path(path)
    if is_recording(path):
        block = _read_neuralign_recording(path, units)
        block.description = f"neuralign recording {path}"
    elif path.is_file() and _has_suffix(path, XDF_SUFFIXES):
        from neuralign.offline.loaders.xdf import read_xdf

        x = read_xdf(path, eeg_stream, marker_stream, units)
        block = Continuous(x.data, x.sfreq, x.ch_names, x.ch_types, x.events, source=path,
                           description=f"XDF {path}", breaks=x.breaks)
    elif path.is_file() and _has_suffix(path, MNE_SUFFIXES):
        block = _read_mne(path)
        if units is not None:
            block.data *= channel_scales(block.ch_names, block.ch_types, [], units, str(path),
                                         "dataset.recording.units", DataError)[:, None]
    elif not path.exists():
        raise DataError(f"{path}: recording not found")
    else:
        raise DataError(f"{path}: expected a recording (.fif/.vhdr/.edf/.bdf/.set/.xdf) or a "
                        "'neuralign run --record' directory")
    keep = [i for i, t in enumerate(block.ch_types) if t in _NEURAL_TYPES]
    if len(keep) < len(block.ch_types):
        block.data = block.data[keep]
        block.ch_names = [block.ch_names[i] for i in keep]
        block.ch_types = [block.ch_types[i] for i in keep]
    if events is not None:
        block.events = read_events_table(events, block.sfreq)
    hint = implausible_unit(block.data, block.ch_types)
    if hint:
        log.warning("%s: %s; a model trained on it would not decode the live stream, which "
                    "the engine converts to volts", block.description or path, hint)
    return block


def image_folder(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Image id (file stem) -> file, and -> concept (its parent folder, or the id itself for
    images directly in ``root``). Ids must be unique in the folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset.recording.images: image folder not found")
    files: dict[str, Path] = {}
    concepts: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.stem in files:
            raise DataError(f"{root}: image id {p.stem!r} is used by two files ({files[p.stem]}, "
                            f"{p}); ids are file names without extension")
        files[p.stem] = p.resolve()
        concepts[p.stem] = p.parent.name if p.parent != root else p.stem
    if not files:
        raise DataError(f"{root}: dataset.recording.images: no image files found")
    return files, concepts


def _split_list(rec: RecordingConfig) -> list[str]:
    items = [str(t) for t in rec.split.test]
    if rec.split.test_file is not None:
        f = require_file(rec.split.test_file, "dataset.recording.split.test_file not found")
        items += [ln.strip() for ln in f.read_text().splitlines()
                  if ln.strip() and not ln.startswith("#")]
    return items


def _test_images(rec: RecordingConfig, blocks: list[Continuous], concept: dict[str, str],
                 shown: list[str], seed: int) -> set[str]:
    """The test image ids under ``dataset.recording.split`` (by images, concepts or block)."""
    wanted = _split_list(rec)
    by = rec.split.by
    if not wanted and not (by == "concepts" and rec.split.n_test_concepts):
        raise UserError(f"dataset.recording.split.test: by {by}: list the test "
                        f"{'block' if by == 'block' else by[:-1]}s, or name a text file with one "
                        "per line (--set dataset.recording.split.test_file=FILE)")
    if by == "block":
        chosen = set()
        for w in wanted:
            hits = [k for k, b in enumerate(blocks)
                    if w == str(k) or w in (b.source.name, b.source.stem, str(b.source))]
            if not hits:
                raise UserError(f"dataset.recording.split.test: block {w!r} is neither an index "
                                f"(0..{len(blocks) - 1}) nor a recording name")
            chosen.update(hits)
        if not chosen or len(chosen) == len(blocks):
            raise UserError("dataset.recording.split: by block needs test blocks, and at least "
                            f"one training block ({len(blocks)} recordings given)")
        return {lab for k in chosen for _, lab in blocks[k].events if lab in concept}
    if by == "concepts":
        concepts = sorted({concept[i] for i in shown})
        if not wanted and rec.split.n_test_concepts:
            n = rec.split.n_test_concepts
            if n >= len(concepts):
                raise UserError(f"dataset.recording.split.n_test_concepts: {n}, but only "
                                f"{len(concepts)} concepts were shown")
            rng = np.random.default_rng(seed)
            wanted = [concepts[i] for i in sorted(rng.choice(len(concepts), n, replace=False))]
        unknown = sorted(set(wanted) - set(concepts))
        if unknown:
            raise UserError(f"dataset.recording.split.test: concepts {unknown[:3]} were never shown")
        return {i for i in shown if concept[i] in set(wanted)}
    unknown = sorted(set(wanted) - set(shown))
    if unknown:
        raise UserError(f"dataset.recording.split.test: {len(unknown)} test images were never "
                        f"shown (e.g. {unknown[:3]})")
    return set(wanted)


def _check_recording_inputs(rec: RecordingConfig, paths: list[Path]) -> None:
    """One user error for missing recordings, unmatched events tables or no image folder."""
    if not paths:
        raise UserError("dataset.recording.recordings: expected at least one recording "
                        "(or pass --data PATH)")
    if rec.events and len(rec.events) != len(paths):
        raise UserError(f"dataset.recording.events: {len(rec.events)} events tables for "
                        f"{len(paths)} recordings (give one per recording, in the same order)")
    if rec.images is None:
        raise UserError("dataset.recording.images: expected the folder of stimulus images "
                        "(or pass --images DIR)")


@dataclass
class _EpochedBlocks:
    """Every block epoched: channels (the first block's; all must match), epochs, their labels."""

    blocks: list[Continuous] = field(default_factory=list)
    epochs: list[np.ndarray] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    ch_names: list[str] = field(default_factory=list)
    ch_types: list[str] = field(default_factory=list)
    times: np.ndarray = field(default_factory=lambda: np.array([]))


def _stimulus_events(path: Path, block: Continuous, concept: dict[str, str],
                     images: Path) -> list[tuple[int, str]]:
    """The block's events that name an image of the folder (others logged and ignored)."""
    stim = [(s, lab) for s, lab in block.events if lab in concept]
    if len(stim) < len(block.events):
        other = sorted({lab for _, lab in block.events if lab not in concept})
        log.info("%s: %d events name no image in %s (ignored, e.g. %s)", path,
                 len(block.events) - len(stim), images, other[:3])
    if not stim:
        raise DataError(f"{path}: no event names an image of {images} (events: "
                        f"{sorted({lab for _, lab in block.events})[:5]}); check the marker "
                        "values or dataset.recording.events")
    return stim


def _epoch_blocks(config: Config, paths: list[Path], concept: dict[str, str]) -> _EpochedBlocks:
    """Read each block, pick its channels, cut its stimulus epochs with the causal chain."""
    rec = config.dataset.recording or RecordingConfig()
    pre = config.preprocessing
    out = _EpochedBlocks()
    for k, path in enumerate(paths):
        block = read_continuous(path, rec.events[k] if rec.events else None,
                                rec.xdf_eeg_stream, rec.xdf_marker_stream, rec.units)
        names = select_channels(block.ch_names, pre.picks)
        if out.ch_names and [n.lower() for n in names] != [n.lower() for n in out.ch_names]:
            raise DataError(f"{path}: channels {names[:4]}... differ from {paths[0]}'s "
                            f"{out.ch_names[:4]}...; every block needs the same channels")
        out.ch_names = out.ch_names or names
        out.ch_types = out.ch_types or [block.ch_types[block.ch_names.index(n)] for n in names]
        stim = _stimulus_events(path, block, concept, rec.images)
        block.events = stim
        rows = [block.ch_names.index(n) for n in names]
        ep, out.times, _, kept = epochs_from_continuous(
            block.data[rows], block.sfreq, names, np.array([s for s, _ in stim]), pre,
            breaks=block.breaks)
        out.blocks.append(block)
        out.epochs.append(ep)
        out.labels.append([lab for (_, lab), ok in zip(stim, kept) if ok])
        log.info("%s: %d epochs of %d images", path, len(ep), len(set(out.labels[-1])))
    return out


def _image_splits(eb: _EpochedBlocks, train: list[str], test: set[str],
                  concept: dict[str, str]) -> dict[str, SplitData]:
    """Train and test epochs grouped per image (image x repetition x channel x time)."""
    all_ep = np.concatenate(eb.epochs)
    all_lab = [lab for labs in eb.labels for lab in labs]
    splits = {}
    for name, ids in (("train", train), ("test", sorted(test))):
        wanted = set(ids)
        rows = np.array([j for j, lab in enumerate(all_lab) if lab in wanted])
        splits[name] = SplitData(group_by_image(all_ep[rows], [all_lab[j] for j in rows], ids),
                                 ids, [concept[i] for i in ids])
    return splits


def load_recording_dataset(config: Config, paths: list[Path]) -> BrainDataset:
    """Epoch every block with the causal chain, group repetitions per image, split train/test."""
    rec = config.dataset.recording or RecordingConfig()
    _check_recording_inputs(rec, paths)
    files, concept = image_folder(rec.images)
    eb = _epoch_blocks(config, paths, concept)
    shown = sorted({lab for labs in eb.labels for lab in labs})
    test = _test_images(rec, eb.blocks, concept, shown, config.training.seed)
    test_concepts = {concept[i] for i in test}
    train = [i for i in shown if i not in test and concept[i] not in test_concepts]
    dropped = len(shown) - len(test) - len(train)
    if dropped:
        log.info("zero-shot split: %d training images of test concepts left out", dropped)
    if not test or not train:
        raise UserError(f"dataset.recording.split: {len(train)} training and {len(test)} test "
                        "images; both must be non-empty")
    splits = _image_splits(eb, train, test, concept)
    # images never shown whose concept is a test concept: classification templates
    templates: dict[str, list[str]] = defaultdict(list)
    seen = set(shown)
    for img in sorted(files):
        if img not in seen and concept[img] in test_concepts:
            templates[concept[img]].append(img)
    times, ch_types = eb.times, eb.ch_types
    return BrainDataset(
        train=splits["train"], test=splits["test"], ch_names=eb.ch_names, ch_types=ch_types,
        sfreq=float(1.0 / (times[1] - times[0])), times=times, modality=_modality(ch_types),
        image_files=files, template_ids=dict(templates), provenance="neuralign-causal",
        source=";".join(str(p) for p in paths),
    )
