"""Loaders against small files written in the exact published layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from neuralign.errors import DataError
from neuralign.offline.loaders.things_eeg2 import (
    find_things_eeg2_raw,
    load_things_eeg2_preprocessed,
    load_things_eeg2_raw,
    merge_things_eeg2_sessions,
)
from neuralign.offline.loaders.things_meg import load_things_meg
from neuralign.offline.loaders.tvsd import load_tvsd_mua

from .fixtures import (
    EEG63,
    OCC17,
    write_image_metadata,
    write_meg,
    write_preprocessed,
    write_raw,
    write_tvsd,
)

# ---------------------------------------------------------------- THINGS-EEG2 preprocessed


def test_nice_variant_times_longer_than_data_and_metadata_three_levels_up(
    tmp_path: Path, caplog
) -> None:
    meta = write_image_metadata(
        tmp_path / "image_set", n_train_concepts=4, per_train=2, n_test=4, templates_per_test=2
    )
    sub = tmp_path / "eeg" / "preprocessed_data" / "sub-01"
    written = write_preprocessed(sub, "nice", n_train=8, n_test=4)
    with caplog.at_level(logging.INFO):
        ds = load_things_eeg2_preprocessed(tmp_path / "eeg", subject=1)
    assert "last 250" in caplog.text
    assert ds.train.data.shape == (8, 2, 63, 250) and ds.test.data.shape == (4, 3, 63, 250)
    assert ds.train.data.dtype == np.float32
    assert ds.ch_names == EEG63 and ds.ch_types == ["eeg"] * 63
    assert ds.sfreq == pytest.approx(250.0)
    assert ds.times[0] == pytest.approx(0.0) and ds.times[-1] == pytest.approx(0.996)
    # data start at 0 s: channel 0 holds the sample index, so nothing was cut
    np.testing.assert_array_equal(ds.train.data[3, 1, 0], np.arange(250))
    np.testing.assert_allclose(
        ds.test.data, written["test"]["preprocessed_eeg_data"].astype(np.float32)
    )
    assert ds.train.image_ids[:3] == ["thing1_00s", "thing1_01s", "thing2_00s"]
    assert ds.train.concepts[2] == "00002_thing2"
    assert ds.test.concepts == meta["test_img_concepts"]
    assert (
        ds.image_files["thing1_01s"]
        == (tmp_path / "image_set/training_images/00001_thing1/thing1_01s.jpg").resolve()
    )
    assert ds.image_files["thing6_01b"].name == "thing6_01b.jpg"
    assert ds.template_ids["00005_thing5"] == ["thing5_t0", "thing5_t1"]
    assert ds.provenance == "external-preprocessed" and ds.modality == "eeg"


def test_official_variant_crop(tmp_path: Path) -> None:
    write_image_metadata(
        tmp_path / "image_set", n_train_concepts=4, per_train=2, n_test=4, write_images=False
    )
    write_preprocessed(tmp_path / "sub-03", "official", n_train=8, n_test=4)
    ds = load_things_eeg2_preprocessed(tmp_path, subject=3, tmin=0.0, tmax=0.5)
    assert ds.ch_names == OCC17 and len(OCC17) == 17
    assert ds.sfreq == pytest.approx(100.0)
    assert ds.train.data.shape == (8, 2, 17, 50)
    assert ds.times[0] == pytest.approx(0.0) and ds.times[-1] == pytest.approx(0.49)
    # full axis is -0.2..0.79: sample index 20 is t = 0
    np.testing.assert_array_equal(ds.train.data[0, 0, 0], np.arange(20, 70))
    np.testing.assert_array_equal(ds.train.data[:, 0, 1, 0], np.arange(8))
    assert ds.image_files == {}
    full = load_things_eeg2_preprocessed(tmp_path, subject=3, tmin=None, tmax=None)
    assert full.n_times == 100 and full.times[0] == pytest.approx(-0.2)


def test_without_metadata_ids_by_index_with_warning(tmp_path: Path, caplog) -> None:
    write_preprocessed(tmp_path, "official", n_train=20, n_test=3)
    with caplog.at_level(logging.WARNING):
        ds = load_things_eeg2_preprocessed(tmp_path, image_set=None)
    assert "image_metadata.npy" in caplog.text
    assert ds.train.image_ids[0] == "train_00000" and ds.test.image_ids[2] == "test_00002"
    assert ds.train.concepts[9] == ds.train.concepts[0] != ds.train.concepts[10]
    assert len(set(ds.test.concepts)) == 3


def test_explicit_image_set(tmp_path: Path) -> None:
    write_image_metadata(tmp_path / "elsewhere" / "imgs", 4, 2, 4, write_images=False)
    write_preprocessed(tmp_path / "d", "official")
    ds = load_things_eeg2_preprocessed(tmp_path / "d", image_set=tmp_path / "elsewhere" / "imgs")
    assert ds.test.image_ids[0] == "thing5_01b"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (
            {"training": {"preprocessed_eeg_data": np.zeros((8, 63, 250))}},
            "preprocessed_eeg_data: expected 4-D",
        ),
        ({"test": {"ch_names": EEG63[:10]}}, "ch_names"),
        ({"training": {"times": np.arange(100) / 250.0}}, "times: 100 entries"),
    ],
)
def test_preprocessed_malformed(tmp_path: Path, override: dict, match: str) -> None:
    write_preprocessed(tmp_path, "nice", **override)
    with pytest.raises(DataError, match=match) as err:
        load_things_eeg2_preprocessed(tmp_path)
    assert "preprocessed_eeg_" in str(err.value)


def test_preprocessed_missing_key(tmp_path: Path) -> None:
    write_preprocessed(tmp_path, "nice")
    d = np.load(tmp_path / "preprocessed_eeg_test.npy", allow_pickle=True).item()
    del d["times"]
    np.save(tmp_path / "preprocessed_eeg_test.npy", d)
    with pytest.raises(DataError, match=r"preprocessed_eeg_test\.npy: missing key 'times'"):
        load_things_eeg2_preprocessed(tmp_path)


def test_metadata_count_mismatch(tmp_path: Path) -> None:
    write_image_metadata(
        tmp_path / "image_set", n_train_concepts=3, per_train=2, n_test=4, write_images=False
    )
    write_preprocessed(tmp_path, "nice", n_train=8)
    with pytest.raises(
        DataError, match=r"image_metadata\.npy: train_img_concepts: 6 entries .* 8 images"
    ):
        load_things_eeg2_preprocessed(tmp_path)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="preprocessed_eeg_training.npy not found"):
        load_things_eeg2_preprocessed(tmp_path, subject=2)


# ---------------------------------------------------------------- THINGS-EEG2 raw


def test_raw_events_drop_targets_and_units(tmp_path: Path) -> None:
    path = tmp_path / "raw_data/sub-01/ses-01/raw_eeg_training.npy"
    d = write_raw(path)
    raw, events = load_things_eeg2_raw(path)
    assert raw.ch_names[-1] == "stim" and raw.get_channel_types()[-1] == "stim"
    assert (
        raw.info["sfreq"] == 1000.0
        and raw.info["lowpass"] == 100.0
        and raw.info["highpass"] == 0.01
    )
    np.testing.assert_array_equal(events[:, 0], [200, 400, 800, 1000])
    np.testing.assert_array_equal(events[:, 2], [1, 5, 2, 16540])
    # stored values are volts (MNE get_data output in source_to_raw.py): unchanged
    np.testing.assert_allclose(raw.get_data(picks="eeg"), d["raw_eeg_data"][:63])
    _, with_targets = load_things_eeg2_raw(path, drop_targets=False)
    assert (with_targets[:, 2] == 99999).sum() == 2


def test_raw_merge_sessions(tmp_path: Path) -> None:
    for ses in (1, 2):
        write_raw(
            tmp_path / f"raw_data/sub-02/ses-0{ses}/raw_eeg_test.npy",
            n_samples=1500,
            seed=ses,
            events=[(100, 3), (300, 99999), (700, 7 + ses)],
        )
    paths = find_things_eeg2_raw(tmp_path, 2, "test")
    assert [p.parent.name for p in paths] == ["ses-01", "ses-02"]
    raw, events = merge_things_eeg2_sessions(paths)
    assert raw.n_times == 3000
    np.testing.assert_array_equal(events[:, 0], [100, 700, 1600, 2200])
    np.testing.assert_array_equal(events[:, 2], [3, 8, 3, 9])


def test_raw_malformed(tmp_path: Path) -> None:
    p = tmp_path / "raw_eeg_test.npy"
    write_raw(p, raw_eeg_data=np.zeros(10))
    with pytest.raises(DataError, match=r"raw_eeg_test\.npy: raw_eeg_data: expected 2-D"):
        load_things_eeg2_raw(p)
    d = np.load(p, allow_pickle=True).item()
    del d["sfreq"]
    np.save(p, d)
    with pytest.raises(DataError, match="missing key 'sfreq'"):
        load_things_eeg2_raw(p)


# ---------------------------------------------------------------- TVSD


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)


@pytest.mark.parametrize("matlab_order", [True, False])
def test_tvsd_layout_mapping_and_zero_shot(tmp_path: Path, matlab_order: bool) -> None:
    path = tmp_path / "THINGS_MUA_trials.mat"
    fx = write_tvsd(path, matlab_order=matlab_order)
    ds = load_tvsd_mua(
        path,
        n_channels=16,
        train_image_paths=fx["train_paths"],
        test_image_paths=fx["test_paths"],
        areas={"V1": (0, 8), "IT": (8, 16)},
    )
    # 5 concepts x 3 images; concepts c0, c1 are test concepts -> 9 training images remain
    assert ds.train.data.shape == (9, 1, 16, 200)
    assert ds.test.data.shape == (2, 3, 16, 200)
    assert not {"c0", "c1"} & set(ds.train.concepts)
    assert ds.test.image_ids == ["c0_test", "c1_test"]
    assert ds.train.image_ids[:3] == ["c2_00", "c2_01", "c2_02"]
    assert ds.modality == "mua" and ds.sfreq == 1000.0
    assert ds.times[0] == 0.0 and ds.times[-1] == pytest.approx(0.199)
    assert ds.ch_names[0].startswith("V1-") and ds.ch_names[15].startswith("IT-")
    allmat, mua = fx["allmat"], fx["mua"]
    # training image "c3_01" is train id 3*3+1+1 = 11 (1-based)
    k = ds.train.image_ids.index("c3_01")
    trial = int(np.flatnonzero(allmat[1] == 11)[0])
    np.testing.assert_allclose(
        ds.train.data[k, 0], _zscore(mua[100:300, trial, :].T), rtol=1e-4, atol=1e-4
    )
    # test image c1_test = test id 2: its three trials, in trial order
    k = ds.test.image_ids.index("c1_test")
    trials = np.flatnonzero(allmat[2] == 2)
    for r, t in enumerate(trials):
        np.testing.assert_allclose(
            ds.test.data[k, r], _zscore(mua[100:300, t, :].T), rtol=1e-4, atol=1e-4
        )


def test_tvsd_without_paths_warns(tmp_path: Path, caplog) -> None:
    path = tmp_path / "THINGS_MUA_trials.mat"
    write_tvsd(path)
    with caplog.at_level(logging.WARNING):
        ds = load_tvsd_mua(path, n_channels=16)
    assert "zero-shot exclusion NOT applied" in caplog.text
    assert ds.train.n_images == 15 and ds.train.image_ids[0] == "train_00000"


def test_tvsd_malformed(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "THINGS_MUA_trials.mat"
    write_tvsd(path)
    with pytest.raises(DataError, match=r"ALLMUA: shape .* 1024 channels"):
        load_tvsd_mua(path)  # default 1024 channels, the fixture has 16
    with h5py.File(path, "a") as f:
        del f["ALLMAT"]
    with pytest.raises(DataError, match=r"THINGS_MUA_trials\.mat: missing key 'ALLMAT'"):
        load_tvsd_mua(path, n_channels=16)


# ---------------------------------------------------------------- THINGS-MEG


def test_meg_epochs_zero_shot(tmp_path: Path, caplog) -> None:
    fif, rows = write_meg(tmp_path)
    with caplog.at_level(logging.INFO):
        ds = load_things_meg(fif, tmin=0.0, tmax=0.2)
    assert "zero-shot split: 4 training images" in caplog.text
    assert ds.modality == "meg" and ds.ch_types == ["mag"] * 4 and ds.sfreq == 200.0
    assert ds.train.data.shape == (8, 1, 4, 40) and ds.test.data.shape == (2, 3, 4, 40)
    assert not {"c0", "c1"} & set(ds.train.concepts)
    assert ds.test.image_ids == ["c0_test", "c1_test"]
    # channel 0 holds the trial number: test image c1_test is trials 13, 15, 17 (after 12 'exp')
    np.testing.assert_allclose(ds.test.data[1, :, 0, 0], np.array([13, 15, 17]) * 1e-12, rtol=1e-5)
    k = ds.train.image_ids.index("c2_01s")
    assert ds.train.data[k, 0, 0, 0] == pytest.approx(5e-12, rel=1e-5)


def test_meg_missing_attributes(tmp_path: Path) -> None:
    fif, _ = write_meg(tmp_path, sidecar=False)
    with pytest.raises(DataError, match="sample_attributes_P1.csv"):
        load_things_meg(fif)
    bad = tmp_path / "attrs.csv"
    bad.write_text("image_path\n" + "\n".join(["a/b.jpg"] * 20) + "\n")
    with pytest.raises(DataError, match=r"attrs\.csv: missing column 'trial_type'"):
        load_things_meg(fif, attributes=bad)


# ---------------------------------------------------------------- Allen natural scenes


def test_allen_needs_pynwb_message(tmp_path: Path, monkeypatch) -> None:
    """Without pynwb (hidden here: CI installs it for the real loader test) one clear message."""
    import sys

    monkeypatch.setitem(sys.modules, "pynwb", None)  # 'import pynwb' now raises ImportError
    from neuralign.offline.loaders.allen import load_allen_natural_scenes

    with pytest.raises(DataError, match=r"pip install neuralign\[nwb\]"):
        load_allen_natural_scenes(tmp_path / "session.nwb")


def test_allen_spike_counts(tmp_path: Path) -> None:
    pytest.importorskip("pynwb")
    from neuralign.offline.loaders.allen import load_allen_natural_scenes

    from .fixtures import write_allen_nwb

    path = tmp_path / "session_1.nwb"
    write_allen_nwb(path, n_frames=6, reps=3, n_units=3)
    ds = load_allen_natural_scenes(path, bin_size=0.025, n_test=2, areas=["VISp", "VISl"])
    assert ds.ch_names == ["VISp-0", "VISl-1"]
    assert ds.train.data.shape == (4, 3, 2, 10) and ds.test.data.shape == (2, 3, 2, 10)
    assert not set(ds.train.image_ids) & set(ds.test.image_ids)
    for split in (ds.train, ds.test):
        for k, img in enumerate(split.image_ids):
            frame = int(img.rsplit("_", 1)[1])
            # unit u: frame+1+u spikes in the first 25 ms bin, 1 in the second, none after
            np.testing.assert_array_equal(split.data[k, :, 0, 0], frame + 1)
            np.testing.assert_array_equal(split.data[k, :, 1, 0], frame + 2)
            np.testing.assert_array_equal(split.data[k, :, :, 1], 1)
            assert split.data[k, :, :, 2:].sum() == 0
    with pytest.raises(DataError, match="no unit in areas"):
        load_allen_natural_scenes(path, areas=["LGd"])
