"""THINGS-EEG2 raw sessions re-preprocessed with neuralign's own causal chain."""

import numpy as np

from neuralign.config import load_config
from neuralign.offline.prepare import load_dataset
from tests.offline.fixtures import write_image_metadata, write_raw


def test_raw_sessions_become_a_zero_shot_dataset(tmp_path):
    root = tmp_path / "things"
    write_image_metadata(root / "image_set", n_train_concepts=2, per_train=2, n_test=2,
                         templates_per_test=1)
    n = 12000
    for ses in (1, 2):
        d = root / "raw_data" / "sub-01" / f"ses-{ses:02d}"
        train_ev = [(1500 + 1000 * k, 1 + k % 4) for k in range(8)] + [(9800, 99999)]
        test_ev = [(1500 + 1000 * k, 1 + k % 2) for k in range(8)]
        write_raw(d / "raw_eeg_training.npy", n_samples=n, events=train_ev, seed=ses)
        write_raw(d / "raw_eeg_test.npy", n_samples=n, events=test_ev, seed=10 + ses)
    cfg = load_config("things_eeg2", ["dataset.source=raw", f"dataset.path={root}"])
    ds = load_dataset(cfg, None)
    assert ds.provenance == "neuralign-causal"
    assert ds.train.data.shape == (4, 4, 63, 250)  # 4 images x (2 per session x 2 sessions)
    assert ds.test.data.shape == (2, 8, 63, 250)
    assert ds.train.image_ids[0].endswith("00s") and set(ds.train.concepts).isdisjoint(ds.test.concepts)
    assert np.isfinite(ds.train.data).all() and ds.train.data.std() > 0
