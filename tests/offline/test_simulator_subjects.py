"""The simulator's several subjects: stable per index, one paradigm, and the ways they differ."""

from __future__ import annotations

import csv
import hashlib
import json

import mne
import numpy as np
import pytest

from neuralign.config import PreprocessingConfig, SimulationConfig
from neuralign.offline.simulator import simulate
from neuralign.offline.simulator.core import subject_model
from neuralign.offline.simulator.evoked import noise_free_response

SMALL = dict(
    n_train_concepts=4,
    images_per_train_concept=2,
    n_test_concepts=3,
    template_images_per_test_concept=1,
    train_repetitions=2,
    test_repetitions=3,
    image_size=16,
    sfreq=250.0,
    seed=11,
)
SIGNAL_FILES = ("sim_training_raw.fif", "sim_test_raw.fif", "events_training.csv",
                "events_test.csv", "preprocessed_eeg_training.npy", "preprocessed_eeg_test.npy")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    cfg = SimulationConfig(n_subjects=3, **SMALL)
    out = tmp_path_factory.mktemp("subjects3")
    return cfg, simulate(cfg, out), out


def test_layout_and_manifests(three):
    cfg, result, out = three
    assert (out / "image_set" / "metadata.csv").is_file()
    assert result.subject_dirs == [(out / f"sub-{k:02d}").resolve() for k in (1, 2, 3)]
    assert result.out_dir == result.subject_dirs[0] and len(result.subjects) == 3
    root = json.loads((out / "simulation.json").read_text())
    assert root["n_subjects"] == 3 and [s["dir"] for s in root["subjects"]] == [
        "sub-01", "sub-02", "sub-03"]
    for k, sub_dir in enumerate(result.subject_dirs, 1):
        assert not (sub_dir / "image_set").exists()
        for name in SIGNAL_FILES:
            assert (sub_dir / name).is_file()
        sub = json.loads((sub_dir / "simulation.json").read_text())["subject"]
        assert sub["subject"] == k and abs(sub["latency_shift_ms"]) <= 20.0
        assert sub["idiosyncrasy"] == cfg.subjects.idiosyncrasy
        assert {"amplitude_gain", "snr", "bad_channels"} <= set(sub)
        assert root["subjects"][k - 1]["bad_channels"] == sub["bad_channels"]
    assert "sub-02" in result.summary()


def test_subject_does_not_change_when_subjects_are_added(three, tmp_path):
    cfg, _, out3 = three
    simulate(cfg.model_copy(update={"n_subjects": 2}), tmp_path)
    for sub in ("sub-01", "sub-02"):
        for name in SIGNAL_FILES:
            assert _digest(tmp_path / sub / name) == _digest(out3 / sub / name), (sub, name)
        a, b = (json.loads((d / sub / "simulation.json").read_text()) for d in (tmp_path, out3))
        assert a["subject"] == b["subject"]
    assert _digest(tmp_path / "image_set" / "metadata.csv") == _digest(
        out3 / "image_set" / "metadata.csv")


def test_subjects_share_images_and_split(three):
    _, result, out = three
    with (out / "image_set" / "metadata.csv").open(newline="") as fh:
        meta = list(csv.DictReader(fh))
    train = {r["image_id"] for r in meta if r["split"] == "train"}
    test = {r["image_id"] for r in meta if r["split"] == "test"}
    shapes = set()
    for sub_dir in result.subject_dirs:
        for session, ids in (("training", train), ("test", test)):
            with (sub_dir / f"events_{session}.csv").open(newline="") as fh:
                assert {r["image_id"] for r in csv.DictReader(fh)} == ids
            shapes.add(np.load(sub_dir / f"preprocessed_eeg_{session}.npy",
                               allow_pickle=True).item()["preprocessed_eeg_data"].shape)
    assert len(shapes) == 2  # one training and one test shape for all subjects


def test_bad_channels_have_outlying_variance(three):
    _, result, _ = three
    n_bad = 0
    for sub_dir in result.subject_dirs:
        sub = json.loads((sub_dir / "simulation.json").read_text())["subject"]
        raw = mne.io.read_raw_fif(sub_dir / "sim_training_raw.fif", verbose=False)
        var = dict(zip(raw.ch_names, raw.get_data().var(axis=1)))
        good = np.median([v for c, v in var.items() if c not in sub["bad_channels"]])
        for ch, kind in sub["bad_channel_kinds"].items():
            n_bad += 1
            if kind == "noisy":
                assert var[ch] > 5 * good, (ch, var[ch] / good)
            else:
                assert var[ch] < 0.2 * good, (ch, var[ch] / good)
    assert n_bad > 0


def _occipital_peak_s(model, sfreq: float) -> float:
    resp = noise_free_response(model.sources, None, sfreq)[model.occ].mean(0)
    return int(np.argmax(np.abs(resp))) / sfreq


def test_latency_shift_shows_in_the_evoked_peak(tmp_path):
    base = dict(SMALL, sfreq=1000.0, n_subjects=4, snr=5.0)
    shifted = SimulationConfig(**base, subjects={"latency_sd_ms": 15.0})
    unshifted = SimulationConfig(**base, subjects={"latency_sd_ms": 0.0})
    k = max(range(1, 5), key=lambda i: abs(subject_model(shifted, i).traits.latency_shift_s))
    a, b = subject_model(shifted, k), subject_model(unshifted, k)
    shift = a.traits.latency_shift_s
    assert abs(shift) > 0.005 and b.traits.latency_shift_s == 0.0
    # the same subject (dipoles, tuning, noise) with and without its shift: the noise-free
    # occipital response peaks ``shift`` later
    assert _occipital_peak_s(a, 1000.0) - _occipital_peak_s(b, 1000.0) == pytest.approx(
        shift, abs=0.0015)
    # ... and so does the average of its written epochs (the same noise in both)
    pre = PreprocessingConfig(reference="none")
    erps = []
    for cfg, out in ((shifted, tmp_path / "a"), (unshifted, tmp_path / "b")):
        simulate(cfg.model_copy(update={"n_subjects": max(k, 2)}), out, pre)
        ep = np.load(out / f"sub-{k:02d}" / "preprocessed_eeg_test.npy", allow_pickle=True).item()
        occ = [i for i, c in enumerate(ep["ch_names"]) if c.startswith(("O", "PO"))]
        erps.append(ep["preprocessed_eeg_data"][:, :, occ].mean((0, 1, 2)))
        times = ep["times"]
    dt = times[1] - times[0]
    lags = np.arange(-8, 9)
    win = (times > 0.0) & (times < 0.5)
    idx = np.flatnonzero(win)
    score = [np.dot(erps[1][idx], erps[0][idx + lag]) for lag in lags]
    assert lags[int(np.argmax(score))] * dt == pytest.approx(shift, abs=dt)


def _image_responses(model, sfreq: float) -> np.ndarray:
    """Each image's noise-free response minus the mean over images: (images, features)."""
    if model.model is None:  # MUA: each unit's driven rate per image
        resp = model.sources.drive.T
    else:
        resp = np.stack([noise_free_response(model.sources, i, sfreq)
                         for i in range(len(model.paradigm.image_ids))])
    resp = resp.reshape(len(resp), -1)
    return resp - resp.mean(0)


def _rsa(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the two subjects' representational dissimilarity matrices."""
    tri = np.triu_indices(len(a), 1)
    return float(np.corrcoef(np.corrcoef(a)[tri], np.corrcoef(b)[tri])[0, 1])


def _shared_subspace(a: np.ndarray, b: np.ndarray, k: int = 6) -> float:
    """How much of b's image-specific variance a's top-k image-space components explain (what
    a per-subject linear layer on a shared representation can reach)."""
    u = np.linalg.svd(a, full_matrices=False)[0][:, :k]
    return float(np.sum((u.T @ b) ** 2) / np.sum(b**2))


@pytest.mark.parametrize("modality", ["eeg", "mua"])
def test_idiosyncrasy_sets_how_alike_subjects_represent_images(modality):
    base = dict(SMALL, n_train_concepts=15, n_subjects=3, modality=modality, n_mua_channels=30)
    pairs = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1))
    rsa, shared = {}, {}
    for idio in (0.0, 1.0):
        cfg = SimulationConfig(**base, subjects={"idiosyncrasy": idio})
        resp = [_image_responses(subject_model(cfg, k), cfg.sfreq) for k in (1, 2, 3)]
        rsa[idio] = np.mean([_rsa(resp[i], resp[j]) for i, j in pairs])
        shared[idio] = np.mean([_shared_subspace(resp[i], resp[j]) for i, j in pairs])
    assert shared[0.0] > shared[1.0] + 0.1, shared
    if modality == "eeg":  # MUA's many units' RDMs all approach the image features' RDM
        assert rsa[0.0] > rsa[1.0] + 0.15, rsa


def test_load_simulated_continuous_reads_a_subject_dir(three):
    from neuralign.offline.preprocess import load_simulated_continuous

    _, result, out = three
    sub = result.subject_dirs[1]
    ds = load_simulated_continuous(sub, PreprocessingConfig())
    assert ds.source == str(sub)
    assert len(ds.train.image_ids) == 8 and len(ds.test.image_ids) == 3
    image_set = (out / "image_set").resolve()
    assert all(p.is_file() and image_set in p.resolve().parents for p in ds.image_files.values())


def test_live_signal_streams_a_chosen_subject():
    from neuralign.offline.simulator.live import LiveSignal

    cfg = SimulationConfig(n_subjects=3, **SMALL)
    sig = LiveSignal(cfg, block_s=2.0, subject_index=2)
    traits = subject_model(cfg, 2).traits
    assert sig.traits.index == 2 and sig.snr == pytest.approx(traits.snr)
    assert sig.render(100).shape == (len(sig.ch_names), 100)
    with pytest.raises(ValueError, match="subjects 1..3"):
        subject_model(cfg, 4)
