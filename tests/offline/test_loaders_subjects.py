"""Several subjects from the published layouts: THINGS-EEG2 ``sub-NN`` folders and THINGS-MEG's
``preprocessed_P<n>-epo.fif`` files, prepared together with each row's subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.offline.fixtures import write_image_metadata, write_meg, write_preprocessed


def _config(kind: str, root: Path, features: Path, subjects: list[int], extra=()):
    from neuralign.config import config_from_overrides

    return config_from_overrides([
        f"dataset.kind={kind}", f"dataset.path={root}", f"dataset.subjects={subjects}",
        f"features.path={features}", "preprocessing.noise_normalization.method=none",
        "preprocessing.tmin=0.0", "preprocessing.tmax=0.2", "training.n_val_trials=2", *extra])


def _features_for(ids: list[str], path: Path) -> Path:
    from neuralign.offline.feature_files import save_features_npz

    save_features_npz(path, np.random.default_rng(0).standard_normal((len(ids), 8)), ids)
    return path


def test_things_eeg2_subjects_in_their_folders(tmp_path: Path) -> None:
    from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed
    from neuralign.offline.prepare import prepare

    write_image_metadata(tmp_path / "image_set", n_train_concepts=4, per_train=2, n_test=4)
    eeg = tmp_path / "eeg"
    written = {s: write_preprocessed(eeg / "preprocessed_data" / f"sub-{s:02d}", "nice",
                                     n_train=8, n_test=4, seed=s) for s in (1, 2, 10)}
    one = load_things_eeg2_preprocessed(eeg, subject=1)
    features = _features_for(one.train.image_ids + one.test.image_ids, tmp_path / "f.npz")
    prep = prepare(_config("things_eeg2", eeg, features, [2, 10]), features=features)
    assert prep.subjects == ["2", "10"]
    np.testing.assert_array_equal(prep.row_subject, np.repeat([0, 1], 8))
    np.testing.assert_array_equal(prep.test_subject, np.repeat([0, 1], 4))
    # each subject's rows are that subject's own file (channel 2 is noise drawn per subject)
    for k, s in enumerate((2, 10)):
        rows = prep.x_train[prep.row_subject == k]
        np.testing.assert_allclose(
            rows[:, :, 2], written[s]["training"]["preprocessed_eeg_data"][:, :, 2, :50],
            rtol=1e-5, atol=1e-5)
    assert prep.train_ids[:8] == prep.train_ids[8:] == one.train.image_ids


def test_things_eeg2_a_missing_subject_names_the_folders_tried(tmp_path: Path) -> None:
    from neuralign.errors import DataError
    from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed
    from neuralign.offline.prepare import prepare

    write_image_metadata(tmp_path / "image_set", n_train_concepts=4, per_train=2, n_test=4)
    write_preprocessed(tmp_path / "eeg" / "sub-01", "nice", n_train=8, n_test=4)
    one = load_things_eeg2_preprocessed(tmp_path / "eeg", subject=1)
    features = _features_for(one.train.image_ids + one.test.image_ids, tmp_path / "f.npz")
    with pytest.raises(DataError, match=r"sub-03"):
        prepare(_config("things_eeg2", tmp_path / "eeg", features, [1, 3]), features=features)


def test_things_meg_subjects_from_one_folder(tmp_path: Path) -> None:
    from neuralign.offline.loaders.things_meg import load_things_meg
    from neuralign.offline.prepare import prepare

    for s in (1, 3):
        write_meg(tmp_path, subject=s)
    one = load_things_meg(tmp_path / "preprocessed_P1-epo.fif", tmin=0.0, tmax=0.2)
    features = _features_for(one.train.image_ids + one.test.image_ids, tmp_path / "f.npz")
    prep = prepare(_config("things_meg", tmp_path, features, [1, 3],
                           ["preprocessing.reference=none"]), features=features)
    assert prep.subjects == ["1", "3"] and prep.n_subjects == 2
    n = len(one.train.image_ids)
    assert len(prep.x_train) == 2 * n and prep.train_ids[:n] == prep.train_ids[n:]
    # the two files differ (their noise is drawn per subject), so the rows do too
    assert not np.allclose(prep.x_train[:n, :, 1:], prep.x_train[n:, :, 1:], atol=0)
