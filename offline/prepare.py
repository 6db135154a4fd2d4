"""Turn a config (+ optional --data / --features) into arrays ready to train on.

Order matters for honest evaluation: the validation images are drawn first (fixed seed), then the
noise normaliser is fitted on the remaining training rows only - never on validation or test.
The result is saved in the run directory as ``prepared.npz`` (plain arrays, no pickle) so
``evaluate`` and ``export`` see exactly what training saw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from neuralign.config import Config
from neuralign.errors import UserError, require_file
from neuralign.offline.dataset import BrainDataset
from neuralign.offline.preprocess import visual_channel_mask as visual_channel_mask  # re-export

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Normalised arrays + metadata; everything training, evaluation and export need."""

    x_train: np.ndarray  # (n_train_images, reps, C, T) float32, noise-normalised
    x_test: np.ndarray  # (n_test_images, reps, C, T)
    f_train: np.ndarray  # (n_train_images, D) image features
    f_test: np.ndarray  # (n_test_images, D)
    f_templates: np.ndarray  # (n_template_images, D) non-stimulus images of test concepts
    train_ids: list[str]
    test_ids: list[str]
    template_ids: list[str]
    train_concepts: list[str]
    test_concepts: list[str]
    template_concepts: list[str]
    ch_names: list[str]
    ch_types: list[str]
    sfreq: float
    times: np.ndarray
    val_index: np.ndarray  # indices into train images held out for validation
    normalizer: dict  # JSON-safe (method, mode, matrix / mean / std)
    meta: dict = field(default_factory=dict)  # provenance, modality, sources, raw sfreq
    # Several subjects: each row's subject (index into ``subjects``), training and test rows.
    # One subject: empty arrays (every row is subject 0).
    row_subject: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test_subject: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    subjects: list[str] = field(default_factory=list)

    @property
    def n_subjects(self) -> int:
        return max(1, len(self.subjects))

    def subject_rows(self, subject: int, split: str = "train") -> np.ndarray:
        """Row indices of ``subject`` (0-based) in the training or test arrays."""
        labels = self.row_subject if split == "train" else self.test_subject
        n = len(self.x_train if split == "train" else self.x_test)
        if len(labels) == 0:
            return np.arange(n) if subject == 0 else np.zeros(0, np.int64)
        return np.flatnonzero(labels == subject)

    def subject_view(self, subject: int) -> Prepared:
        """One subject's rows as a single-subject Prepared (its own normaliser), for scoring it
        with the usual evaluation."""
        tr, te = self.subject_rows(subject, "train"), self.subject_rows(subject, "test")
        pos = np.full(len(self.x_train), -1)
        pos[tr] = np.arange(len(tr))
        val = pos[self.val_index]
        norms = self.meta.get("subject_normalizers") or [self.normalizer]
        return Prepared(
            x_train=self.x_train[tr], x_test=self.x_test[te], f_train=self.f_train[tr],
            f_test=self.f_test[te], f_templates=self.f_templates,
            train_ids=[self.train_ids[i] for i in tr], test_ids=[self.test_ids[i] for i in te],
            template_ids=self.template_ids, train_concepts=[self.train_concepts[i] for i in tr],
            test_concepts=[self.test_concepts[i] for i in te],
            template_concepts=self.template_concepts, ch_names=self.ch_names,
            ch_types=self.ch_types, sfreq=self.sfreq, times=self.times,
            val_index=np.sort(val[val >= 0]), normalizer=norms[min(subject, len(norms) - 1)],
            meta={**self.meta, "subject": (self.subjects or ["1"])[subject]},
        )

    @property
    def fit_index(self) -> np.ndarray:
        mask = np.ones(len(self.train_ids), dtype=bool)
        mask[self.val_index] = False
        return np.flatnonzero(mask)

    @cached_property
    def mean_response(self) -> np.ndarray:
        """(C, T) mean of the fitting rows over images and repetitions: the response every image
        shares. The decoder intercept starts here; encoders are scored against it as a floor."""
        return self.x_train[self.fit_index].mean(axis=(0, 1))

    def save(self, path: Path) -> None:
        arrays = {k: getattr(self, k) for k in
                  ("x_train", "x_test", "f_train", "f_test", "f_templates", "times", "val_index",
                   "row_subject", "test_subject")}
        meta = {k: getattr(self, k) for k in
                ("train_ids", "test_ids", "template_ids", "train_concepts", "test_concepts",
                 "template_concepts", "ch_names", "ch_types", "sfreq", "normalizer", "meta",
                 "subjects")}
        np.savez(path, **arrays, meta_json=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> Prepared:
        require_file(path, "prepared data missing - was this run written by 'neuralign train'?")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta_json"}
            meta = json.loads(str(z["meta_json"]))
        return cls(**arrays, **meta)


def simulated_subject_dir(root: Path, subject: int) -> Path:
    """A multi-subject simulation's ``sub-NN`` folder for ``subject``; ``root`` itself when it is
    a one-subject simulation (subject 1)."""
    sub = root / f"sub-{subject:02d}"
    if sub.is_dir():
        return sub
    found = sorted(p.name for p in root.glob("sub-*") if p.is_dir()) if root.is_dir() else []
    if found or subject != 1:
        raise UserError(f"{sub}: no such subject in the simulation at {root} (it has "
                        f"{', '.join(found) if found else 'one subject, no sub-NN folders'})")
    return root


def load_dataset(config: Config, data_dir: Path | None) -> BrainDataset:
    """Dispatch to the loader of ``dataset.kind``; the simulator is epoched by the causal chain."""
    ds = config.dataset
    root = Path(data_dir) if data_dir is not None else ds.path
    if ds.kind == "simulated":
        from neuralign.offline.preprocess import load_simulated_continuous

        if root is None:
            raise UserError("dataset.path: expected the directory written by 'neuralign simulate' "
                            "(or pass --data DIR)")
        return load_simulated_continuous(simulated_subject_dir(Path(root), ds.subject),
                                         config.preprocessing)
    if ds.kind == "recording":  # a lab's own blocks: dataset.path / --data + recording.recordings
        from neuralign.offline.loaders.recording import load_recording_dataset

        return load_recording_dataset(config, list(ds.recording.recordings)
                                      + ([Path(root)] if root is not None else []))
    if root is None:
        raise UserError(f"dataset.path: expected the {ds.kind} data directory (or pass --data DIR)")
    if ds.kind == "things_eeg2" and ds.source == "raw":
        from neuralign.offline.preprocess import load_things_eeg2_raw_dataset

        return load_things_eeg2_raw_dataset(Path(root), ds.subject, config.preprocessing)
    if ds.kind == "things_eeg2":
        from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed

        log.warning("training on externally preprocessed epochs: live parity with the engine's "
                    "causal chain is approximate (use dataset.source=raw for exact parity)")

        return load_things_eeg2_preprocessed(
            Path(root), subject=ds.subject, tmin=config.preprocessing.tmin,
            tmax=config.preprocessing.tmax,
        )
    if ds.kind == "things_meg":
        from neuralign.offline.loaders.things_meg import load_things_meg

        fif = Path(root)
        if fif.is_dir():  # a folder: the subject's preprocessed_P{n}-epo.fif inside it
            fif = fif / f"preprocessed_P{ds.subject}-epo.fif"
        pre = config.preprocessing
        return load_things_meg(fif, tmin=pre.tmin, tmax=pre.tmax)
    if ds.kind == "tvsd":
        from neuralign.offline.loaders.tvsd import load_tvsd_mua

        mat = Path(root)
        return load_tvsd_mua(mat / "THINGS_MUA_trials.mat" if mat.is_dir() else mat)
    from neuralign.offline.loaders.allen import load_allen_natural_scenes

    return load_allen_natural_scenes(Path(root))


def _features_for(config: Config, dataset: BrainDataset, ids: list[str], features: Path | None,
                  device: str, optional: bool = False) -> np.ndarray | None:
    """Frozen image features for ``ids``; with ``optional``, None when a feature file lacks them."""
    if config.model.traits.pixel_input:  # the model learns its image side from pixels
        from neuralign.offline.image_features import pixel_features

        return pixel_features(dataset.image_files, ids)  # VNA learns its image encoder from pixels
    if features is not None:
        from neuralign.offline.feature_files import load_features, reorder

        # Id-less files (NICE .npy directories, ATM torch files) store rows in the dataset's own
        # order: training images then test images, as THINGS-EEG2's image_metadata.npy lists them.
        table = load_features(Path(features),
                              ordered_ids=dataset.train.image_ids + dataset.test.image_ids)
        have = set(table.image_ids)
        if optional and not have.issuperset(ids):
            return None
        return reorder(table.image_ids, table.features, ids, features).astype(np.float32)
    from neuralign.offline.image_features import compute_features

    return compute_features(dataset.image_files, ids, config.features.encoder, device)


def fit_normalizer(config: Config, x_fit: np.ndarray) -> dict:
    """Fit the configured noise normalisation on training rows only; JSON-safe result."""
    from neuralign.offline.mvnn import NoiseNormalizer

    nn_cfg = config.preprocessing.noise_normalization
    return NoiseNormalizer.fit(x_fit, nn_cfg.method, nn_cfg.mode, nn_cfg.eigenvalue_floor).to_dict()


def apply_normalizer(norm: dict, x: np.ndarray) -> np.ndarray:
    """Purely spatial (per-sample) transform on (..., C, T): causal, identical online."""
    from neuralign.offline.mvnn import NoiseNormalizer

    return NoiseNormalizer.from_dict(norm).apply(x).astype(np.float32)


def validation_index(config: Config, concepts: Sequence[str]) -> np.ndarray:
    """Sorted indices of the validation images among the training images (``concepts``: each
    image's concept), drawn with ``training.seed`` as ``training.validation_split`` says."""
    tr = config.training
    n_train = len(concepts)
    n_val = min(tr.n_val_trials, max(1, n_train // 5))
    if n_val < tr.n_val_trials:
        log.warning("training.n_val_trials=%d > 20%% of %d training images; using %d",
                    tr.n_val_trials, n_train, n_val)
    rng = np.random.default_rng(tr.seed)
    if tr.validation_split == "images":
        return np.sort(rng.choice(n_train, size=n_val, replace=False))
    labels = np.asarray([str(c) if c is not None else "" for c in concepts])
    names = np.unique(labels)
    if "" in names or len(names) < 2 or len(names) == n_train:
        raise UserError(
            "training.validation_split=concepts needs a concept label on every training image "
            f"and several images per concept ({len(names)} distinct labels over {n_train} "
            "images); use training.validation_split=images for this dataset")
    held: list[np.ndarray] = []
    n = 0
    for c in rng.permutation(names):  # whole concepts until ~n_val images are held out
        if n >= n_val or len(held) == len(names) - 1:
            break
        idx = np.flatnonzero(labels == c)
        held.append(idx)
        n += len(idx)
    return np.sort(np.concatenate(held))


def prepare(config: Config, data_dir: Path | None = None, features: Path | None = None,
            device: str = "cpu") -> Prepared:
    """Load, split off validation images, fit the normaliser, attach image features.

    With ``dataset.subjects`` (several), each subject is prepared on its own (its own validation
    images drawn alike, its own noise normaliser) and the rows are stacked, each labelled with
    its subject (:func:`prepare_subjects`).
    """
    subjects = config.dataset.subjects
    if subjects is not None and len(subjects) > 1:
        return prepare_subjects(config, data_dir, features, device)
    if subjects is not None:
        config = config.model_copy(update={"dataset": config.dataset.model_copy(
            update={"subject": subjects[0], "subjects": None})})
    return prepare_dataset(config, load_dataset(config, data_dir), features, device)


def prepare_subjects(config: Config, data_dir: Path | None = None, features: Path | None = None,
                     device: str = "cpu") -> Prepared:
    """Several subjects' Prepared, stacked row-wise with each row's subject.

    Every subject must have the same channels (in any order: they are put in the first subject's)
    and the same epoch; repetitions are cut to the fewest any subject has.
    """
    parts: list[Prepared] = []
    names: list[str] = []
    for number in config.dataset.subjects or []:
        one = config.model_copy(update={"dataset": config.dataset.model_copy(
            update={"subject": number, "subjects": None})})
        dataset = replace(load_dataset(one, data_dir), subject=str(number))
        if parts:
            dataset = _in_channel_order(dataset, parts[0].ch_names, f"subject {number}")
        parts.append(prepare_dataset(one, dataset, features, device))
        names.append(dataset.subject)
        log.info("subject %s: %d training and %d test images", number, len(parts[-1].train_ids),
                 len(parts[-1].test_ids))
    return stack_subjects(parts, names)


def _in_channel_order(dataset: BrainDataset, names: list[str], who: str) -> BrainDataset:
    """``dataset`` with its channels in the order ``names``; one error naming what is missing."""
    if list(dataset.ch_names) == list(names):
        return dataset
    missing = [c for c in names if c not in dataset.ch_names]
    if missing or len(dataset.ch_names) != len(names):
        extra = [c for c in dataset.ch_names if c not in names]
        raise UserError(f"{who} ({dataset.source}): its channels differ from the first subject's "
                        f"(missing {missing[:8]}, extra {extra[:8]}); every subject trained "
                        "together needs the same channels")
    order = [list(dataset.ch_names).index(c) for c in names]
    return replace(dataset, train=replace(dataset.train, data=dataset.train.data[:, :, order]),
                   test=replace(dataset.test, data=dataset.test.data[:, :, order]),
                   ch_names=list(names), ch_types=[dataset.ch_types[i] for i in order])


def stack_subjects(parts: Sequence[Prepared], names: Sequence[str]) -> Prepared:
    """One Prepared of several subjects' rows (see :func:`prepare_subjects`)."""
    first = parts[0]
    for name, p in zip(names, parts):
        if p.x_train.shape[2:] != first.x_train.shape[2:] or not np.allclose(p.times, first.times):
            raise UserError(f"subject {name}: epochs of {p.x_train.shape[2:]} (channels, times) "
                            f"but the first subject's are {first.x_train.shape[2:]}; subjects "
                            "trained together need the same epoch")
    reps_tr = min(p.x_train.shape[1] for p in parts)
    reps_te = min(p.x_test.shape[1] for p in parts)
    if any(p.x_train.shape[1] != reps_tr or p.x_test.shape[1] != reps_te for p in parts):
        log.warning("subjects have different repetition counts: using the first %d training and "
                    "%d test repetitions of each", reps_tr, reps_te)
    n_tr = [len(p.x_train) for p in parts]
    offsets = np.concatenate([[0], np.cumsum(n_tr)[:-1]])

    def cat(attr: str) -> list:
        return [v for p in parts for v in getattr(p, attr)]

    return Prepared(
        x_train=np.concatenate([p.x_train[:, :reps_tr] for p in parts]),
        x_test=np.concatenate([p.x_test[:, :reps_te] for p in parts]),
        f_train=np.concatenate([p.f_train for p in parts]),
        f_test=np.concatenate([p.f_test for p in parts]),
        f_templates=first.f_templates, train_ids=cat("train_ids"), test_ids=cat("test_ids"),
        template_ids=first.template_ids, train_concepts=cat("train_concepts"),
        test_concepts=cat("test_concepts"), template_concepts=first.template_concepts,
        ch_names=first.ch_names, ch_types=first.ch_types, sfreq=first.sfreq, times=first.times,
        val_index=np.concatenate([p.val_index + o for p, o in zip(parts, offsets)]),
        normalizer=first.normalizer,
        meta={**first.meta, "subject_normalizers": [p.normalizer for p in parts],
              "subject_sources": [p.meta.get("source") for p in parts]},
        row_subject=np.repeat(np.arange(len(parts)), n_tr),
        test_subject=np.repeat(np.arange(len(parts)), [len(p.x_test) for p in parts]),
        subjects=list(names),
    )


def prepare_dataset(config: Config, dataset: BrainDataset, features: Path | None = None,
                    device: str = "cpu") -> Prepared:
    """One subject's loaded dataset -> Prepared (validation split, normaliser, features)."""
    val_index = validation_index(config, dataset.train.concepts)
    n_train = dataset.train.n_images
    fit_mask = np.ones(n_train, dtype=bool)
    fit_mask[val_index] = False
    norm = fit_normalizer(config, dataset.train.data[fit_mask])
    template_ids = [i for c in dataset.test.concepts for i in dataset.template_ids.get(c, [])]
    template_concepts = [c for c in dataset.test.concepts for _ in dataset.template_ids.get(c, [])]
    f_train = _features_for(config, dataset, dataset.train.image_ids, features, device)
    f_test = _features_for(config, dataset, dataset.test.image_ids, features, device)
    f_templates = (_features_for(config, dataset, template_ids, features, device, optional=True)
                   if template_ids else None)
    if f_templates is None:
        if template_ids:
            log.warning("%s has no features for the %d classification template images: "
                        "classification is skipped (retrieval is unaffected)", features,
                        len(template_ids))
        template_ids, template_concepts = [], []
        f_templates = np.zeros((0, f_train.shape[1]), np.float32)
    return Prepared(
        x_train=apply_normalizer(norm, dataset.train.data),
        x_test=apply_normalizer(norm, dataset.test.data),
        f_train=f_train, f_test=f_test, f_templates=f_templates,
        train_ids=list(dataset.train.image_ids), test_ids=list(dataset.test.image_ids),
        template_ids=template_ids, train_concepts=list(dataset.train.concepts),
        test_concepts=list(dataset.test.concepts), template_concepts=template_concepts,
        ch_names=list(dataset.ch_names), ch_types=list(dataset.ch_types),
        sfreq=float(dataset.sfreq), times=np.asarray(dataset.times, dtype=np.float64),
        val_index=val_index, normalizer=norm,
        meta={"provenance": dataset.provenance, "modality": dataset.modality,
              "source": dataset.source, "kind": config.dataset.kind,
              "image_files": {k: str(v) for k, v in dataset.image_files.items()}},
    )
