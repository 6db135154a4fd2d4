"""Cut training epochs from continuous recordings with the SAME causal chain the engine runs.

What a model is trained on is then exactly what it will see live: the chain (re-reference, notch,
band-pass, anti-aliased decimation) runs causally over the whole continuous session from its first
sample, and epochs are cut on the decimated grid by :func:`neuralign.signal.chain.cut_epoch`.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from neuralign.config import PreprocessingConfig
from neuralign.errors import DataError, require_file
from neuralign.offline.dataset import BrainDataset, SplitData
from neuralign.signal.chain import CausalChain, ChainSpec, cut_epoch, epoch_start, epoch_times

log = logging.getLogger(__name__)

VISUAL_PREFIXES = ("O", "PO", "P", "TP", "T", "CP", "I")


def visual_channel_mask(ch_names: list[str], ch_types: list[str] | None = None) -> np.ndarray:
    """Occipital, parietal and temporal EEG channels (the papers' 'visual' channels).

    MEG: occipital/parietal/temporal sensors by CTF naming (``MLO``/``MRO``/``MLP``/``MLT``...).
    MUA: the IT group when channels are named ``IT...``; otherwise all channels.
    """
    names = [c.upper() for c in ch_names]
    if any(n.startswith("IT") for n in names):
        return np.array([n.startswith("IT") for n in names])
    meg = np.array([len(n) > 3 and n[0] == "M" and n[2] in "OPT" for n in names])
    if meg.any():
        return meg
    eeg = np.array([n.startswith(VISUAL_PREFIXES) and not n.startswith("FT") for n in names])
    return eeg if eeg.any() else np.ones(len(names), dtype=bool)



def epochs_from_continuous(
    data: np.ndarray,
    sfreq: float,
    ch_names: list[str],
    onsets: np.ndarray,
    pre: PreprocessingConfig,
    breaks: list[int] | tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray, ChainSpec, np.ndarray]:
    """Run the causal chain over ``data`` (channels, samples) and cut one epoch per onset.

    ``breaks``: sample indices that do not follow their predecessor (gaps in a recording, as
    the engine's clock model found them): the chain restarts there, as it does live, and the
    epochs whose window spans one are dropped, as live.

    Returns ``(epochs (n_kept, C, T) float32, times, spec, kept_mask)``; onsets whose window
    runs off either end of the recording or spans a break are dropped (``kept_mask``).
    """
    spec = ChainSpec.from_preprocessing(pre, sfreq, ch_names)
    chain = CausalChain(spec)
    cuts = sorted({int(b) for b in breaks if 0 < int(b) < data.shape[1]})
    parts = []
    for a, b in zip([0, *cuts], [*cuts, data.shape[1]]):
        if a:
            chain.restart(a)
        parts.append(chain.process(data[:, a:b]))
    y = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    times = epoch_times(spec.sfreq_out, pre.tmin, pre.tmax)
    out = np.empty((len(onsets), len(ch_names), len(times)), dtype=np.float32)
    kept = np.zeros(len(onsets), dtype=bool)
    t_lo = min(pre.tmin, pre.baseline[0]) if pre.baseline else pre.tmin
    n_across = 0
    for i, onset in enumerate(np.asarray(onsets, dtype=np.int64)):
        if cuts:
            first = epoch_start(int(onset), chain.q, spec.sfreq_out, t_lo) * chain.q
            n_read = (int(round((pre.tmin - t_lo) * spec.sfreq_out))
                      + int(round((pre.tmax - pre.tmin) * spec.sfreq_out)))
            last = first + (n_read - 1) * chain.q  # the engine's rule (EpochWindow.bounds)
            if any(first < c <= last for c in cuts):
                n_across += 1
                continue
        ep = cut_epoch(y, int(onset), chain.q, spec.sfreq_out, pre.tmin, pre.tmax, pre.baseline)
        if ep is not None:
            out[i] = ep
            kept[i] = True
    if n_across:
        log.warning("dropped %d epochs whose window spans a gap in the recording", n_across)
    if (~kept).sum() > n_across:
        log.warning("dropped %d epochs whose window runs off the recording",
                    (~kept).sum() - n_across)
    return out[kept], times, spec, kept


def group_by_image(
    epochs: np.ndarray, image_ids: list[str], order: list[str]
) -> np.ndarray:
    """(n_trials, C, T) + per-trial ids -> (n_images, n_reps, C, T) in ``order``.

    Images with fewer repetitions than the most common count are trimmed to the minimum so the
    array stays rectangular (logged).
    """
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, img in enumerate(image_ids):
        by_id[img].append(i)
    missing = [img for img in order if img not in by_id]
    if missing:
        raise DataError(
            f"{len(missing)} images have no epochs (e.g. {missing[:3]}); the events do not match "
            "the image list"
        )
    n_rep = min(len(by_id[img]) for img in order)
    if max(len(by_id[img]) for img in order) != n_rep:
        log.warning("unequal repetitions per image; keeping the first %d of each", n_rep)
    idx = np.array([by_id[img][:n_rep] for img in order])
    return epochs[idx]


def select_channels(ch_names: list[str], picks) -> list[str]:
    """``preprocessing.picks``: 'all', 'visual' (occipital/parietal/temporal) or a name list.

    Picks are applied BEFORE the causal chain, so an average reference is taken over exactly the
    channels the model (and the live engine) uses.
    """
    if picks == "all":
        return list(ch_names)
    if picks == "visual":
        return [c for c, keep in zip(ch_names, visual_channel_mask(ch_names)) if keep]
    lower = {c.lower(): c for c in ch_names}
    missing = [c for c in picks if c.lower() not in lower]
    if missing:
        raise DataError(f"preprocessing.picks: channels {missing} are not in the recording")
    return [lower[c.lower()] for c in picks]


def _read_annotated_raw(path: Path, picks="all") -> tuple[np.ndarray, float, list[str], list[str], np.ndarray, list[str]]:
    import mne

    from neuralign.signal.events import annotation_onsets

    require_file(path, "continuous recording not found")
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    onsets, descriptions = annotation_onsets(raw)
    idx = mne.pick_types(raw.info, eeg=True, meg=True, seeg=True, misc=True, exclude=[])
    names = select_channels([raw.ch_names[i] for i in idx], picks)
    types = raw.get_channel_types(picks=names)
    return raw.get_data(picks=names), raw.info["sfreq"], names, types, onsets, descriptions


def load_simulated_continuous(sim_dir: Path, pre: PreprocessingConfig) -> BrainDataset:
    """Epoch the simulator's continuous sessions with neuralign's causal chain (exact live parity).

    ``sim_dir``: a single-subject output, or one subject's directory (``sub-02``) of a
    multi-subject output (its ``image_set`` is the parent's).
    """
    sim_dir = Path(sim_dir)
    image_set = sim_dir / "image_set"
    if not image_set.is_dir() and (sim_dir.parent / "image_set").is_dir():
        image_set = sim_dir.parent / "image_set"
    meta_path = require_file(image_set / "metadata.csv",
                             f"not found - is {sim_dir} a 'neuralign simulate' output?")
    with meta_path.open(newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    rows = {split: [r for r in meta if r["split"] == split] for split in ("train", "test", "template")}
    splits = {}
    ch_names: list[str] = []
    ch_types: list[str] = []
    times = np.array([])
    for split, fname in (("train", "sim_training_raw.fif"), ("test", "sim_test_raw.fif")):
        data, sfreq, names, ch_types, onsets, ids = _read_annotated_raw(sim_dir / fname, pre.picks)
        epochs, times, _, kept = epochs_from_continuous(data, sfreq, names, onsets, pre)
        kept_ids = [img for img, k in zip(ids, kept) if k]
        order = [str(r["image_id"]) for r in rows[split]]
        splits[split] = SplitData(
            group_by_image(epochs, kept_ids, order), order, [str(r["concept"]) for r in rows[split]]
        )
        ch_names = names
    image_files = {str(r["image_id"]): image_set / str(r["file"]) for r in meta}
    templates: dict[str, list[str]] = defaultdict(list)
    for r in rows["template"]:
        templates[str(r["concept"])].append(str(r["image_id"]))
    return BrainDataset(
        train=splits["train"], test=splits["test"], ch_names=ch_names,
        ch_types=ch_types, sfreq=float(1.0 / (times[1] - times[0])), times=times,
        modality=_modality(ch_types), image_files=image_files, template_ids=dict(templates),
        provenance="neuralign-causal", source=str(sim_dir),
    )


def _modality(ch_types: list[str]) -> str:
    if any(t in ("mag", "grad") for t in ch_types):
        return "meg"
    return "eeg" if "eeg" in ch_types else "mua"


def load_things_eeg2_raw_dataset(root: Path, subject: int, pre: PreprocessingConfig) -> BrainDataset:
    """Re-preprocess THINGS-EEG2 raw sessions with neuralign's causal chain (exact live parity).

    Each session is filtered on its own from its first sample (as a live session would be), epochs
    are cut at the stim-channel events (target trials 99999 already dropped by the loader; the
    event code is the 1-based image condition), then repetitions are grouped per image.
    """
    import mne

    from neuralign.offline.loaders.things_eeg2 import (
        _metadata,
        find_image_set,
        find_things_eeg2_raw,
        load_things_eeg2_raw,
    )

    root = Path(root)
    parts = {}
    ch_names: list[str] = []
    times = np.array([])
    for part in ("training", "test"):
        epochs_all, codes = [], []
        for path in find_things_eeg2_raw(root, subject, part):
            raw, events = load_things_eeg2_raw(path)
            raw.pick(mne.pick_types(raw.info, eeg=True, exclude=[]))
            ch_names = select_channels(raw.ch_names, pre.picks)
            ep, times, _, kept = epochs_from_continuous(
                raw.get_data(picks=ch_names), raw.info["sfreq"], ch_names,
                events[:, 0] - raw.first_samp, pre)
            epochs_all.append(ep)
            codes += [int(c) for c, k in zip(events[:, 2], kept) if k]
        parts[part] = (np.concatenate(epochs_all), codes)
    n_train = max(parts["training"][1])
    n_test = max(parts["test"][1])
    tr_ids, tr_con, te_ids, te_con, files, templates = _metadata(
        find_image_set(root), n_train, n_test)
    splits = {}
    for part, ids, con in (("training", tr_ids, tr_con), ("test", te_ids, te_con)):
        ep, codes = parts[part]
        labels = [ids[c - 1] for c in codes]
        splits[part] = SplitData(group_by_image(ep, labels, ids), ids, con)
    return BrainDataset(
        train=splits["training"], test=splits["test"], ch_names=ch_names,
        ch_types=["eeg"] * len(ch_names), sfreq=float(1.0 / (times[1] - times[0])), times=times,
        modality="eeg", image_files=files, template_ids=templates,
        provenance="neuralign-causal", source=str(root),
    )
