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
from dataclasses import dataclass, field
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
                  ("x_train", "x_test", "f_train", "f_test", "f_templates", "times", "val_index")}
        meta = {k: getattr(self, k) for k in
                ("train_ids", "test_ids", "template_ids", "train_concepts", "test_concepts",
                 "template_concepts", "ch_names", "ch_types", "sfreq", "normalizer", "meta")}
        np.savez(path, **arrays, meta_json=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> Prepared:
        require_file(path, "prepared data missing - was this run written by 'neuralign train'?")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta_json"}
            meta = json.loads(str(z["meta_json"]))
        return cls(**arrays, **meta)


def load_dataset(config: Config, data_dir: Path | None) -> BrainDataset:
    """Dispatch to the loader of ``dataset.kind``; the simulator is epoched by the causal chain."""
    ds = config.dataset
    root = Path(data_dir) if data_dir is not None else ds.path
    if ds.kind == "simulated":
        from neuralign.offline.preprocess import load_simulated_continuous

        if root is None:
            raise UserError("dataset.path: expected the directory written by 'neuralign simulate' "
                            "(or pass --data DIR)")
        return load_simulated_continuous(Path(root), config.preprocessing)
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
    """Load, split off validation images, fit the normaliser, attach image features."""
    dataset = load_dataset(config, data_dir)
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
