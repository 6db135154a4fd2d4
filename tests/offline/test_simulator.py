"""The THINGS-like simulator: file layouts, realistic EEG structure, content dependence, knobs."""

from __future__ import annotations

import csv
import json

import mne
import numpy as np
import pytest
from PIL import Image
from scipy import signal

from neuralign.config import PreprocessingConfig, SimulationConfig
from neuralign.offline.simulator import image_paths, simulate

SMALL = dict(
    n_train_concepts=6,
    images_per_train_concept=2,
    n_test_concepts=5,
    template_images_per_test_concept=2,
    train_repetitions=2,
    test_repetitions=10,
    image_size=32,
)
OCCIPITAL = ("O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8")


def _load(path):
    return np.load(path, allow_pickle=True).item()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    # Jittered SOA so that, as in any jittered RSVP, the average is locked to its own stimulus and
    # the neighbouring trials' responses smear out (with a fixed SOA the average is periodic).
    cfg = SimulationConfig(seed=3, **dict(SMALL, test_repetitions=20, soa_jitter=0.1))
    out = tmp_path_factory.mktemp("sim")
    return cfg, simulate(cfg, out), out


def _split_half(epochs: np.ndarray, times: np.ndarray, ch_names: list[str]) -> tuple[float, float]:
    """Mean correlation of per-image averages of odd vs even repetitions: same image vs others.

    The grand mean over images is removed first, so only image-specific structure counts.
    """
    picks = [i for i, c in enumerate(ch_names) if c.startswith(("O", "P"))]
    window = (times >= 0.05) & (times < 0.4)
    x = epochs[:, :, picks][..., window].astype(np.float64)
    a, b = x[:, 0::2].mean(1), x[:, 1::2].mean(1)
    a = (a - a.mean(0)).reshape(len(a), -1)
    b = (b - b.mean(0)).reshape(len(b), -1)
    corr = np.corrcoef(a, b)[: len(a), len(a) :]
    off = ~np.eye(len(corr), dtype=bool)
    return float(np.diag(corr).mean()), float(corr[off].mean())


def test_things_layout_files(small):
    cfg, result, out = small
    train, test = (
        _load(out / "preprocessed_eeg_training.npy"),
        _load(out / "preprocessed_eeg_test.npy"),
    )
    for d in (train, test):
        assert set(d) == {"preprocessed_eeg_data", "ch_names", "times"}
        assert d["preprocessed_eeg_data"].dtype == np.float32
        assert d["preprocessed_eeg_data"].shape[2:] == (63, 300)
        assert len(d["ch_names"]) == 63 and all(isinstance(c, str) for c in d["ch_names"])
        assert d["times"].shape == (300,)
        assert np.isclose(d["times"][0], -0.2) and np.isclose(d["times"][-1], 0.996)
        assert np.isfinite(d["preprocessed_eeg_data"]).all()
    n_train = cfg.n_train_concepts * cfg.images_per_train_concept
    assert train["preprocessed_eeg_data"].shape[:2] == (n_train, cfg.train_repetitions)
    assert test["preprocessed_eeg_data"].shape[:2] == (cfg.n_test_concepts, cfg.test_repetitions)
    # Realistic scale: tens of microvolts, stored in volts.
    sd = float(test["preprocessed_eeg_data"].std())
    assert 1e-6 < sd < 1e-4

    meta = _load(out / "image_set" / "image_metadata.npy")
    assert set(meta) == {
        "train_img_concepts",
        "train_img_files",
        "test_img_concepts",
        "test_img_files",
    }
    assert (
        len(meta["train_img_files"]) == n_train
        and len(meta["test_img_files"]) == cfg.n_test_concepts
    )
    assert not set(meta["train_img_concepts"]) & set(meta["test_img_concepts"])  # zero-shot
    for concept, fname in zip(meta["train_img_concepts"], meta["train_img_files"]):
        path = out / "image_set" / "training_images" / concept / fname
        with Image.open(path) as img:
            assert img.size == (cfg.image_size, cfg.image_size)

    with open(out / "image_set" / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    n_templates = cfg.n_test_concepts * cfg.template_images_per_test_concept
    assert len(rows) == n_train + cfg.n_test_concepts + n_templates
    assert len({r["image_id"] for r in rows}) == len(rows)
    templates = [r for r in rows if r["split"] == "template"]
    assert {r["concept"] for r in templates} == set(meta["test_img_concepts"])
    shown = {f[:-4] for f in meta["test_img_files"]} | {f[:-4] for f in meta["train_img_files"]}
    assert not {r["image_id"] for r in templates} & shown
    paths = image_paths(out)
    assert len(paths) == len(rows) and all(p.is_file() for p in paths.values())

    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["seed"] == cfg.seed and manifest["ch_names"] == result.ch_names
    assert set(manifest["visual_channels"]) >= set(OCCIPITAL)


def test_raw_annotations_match_events(small):
    cfg, result, out = small
    for session in ("training", "test"):
        raw = mne.io.read_raw_fif(out / f"sim_{session}_raw.fif", verbose=False)
        assert raw.info["sfreq"] == cfg.sfreq and raw.info["line_freq"] == cfg.line_freq
        assert raw.get_montage() is not None
        with open(out / f"events_{session}.csv", newline="") as fh:
            events = list(csv.DictReader(fh))
        ann = raw.annotations
        assert len(ann) == len(events)
        samples = np.array([int(e["onset_sample"]) for e in events])
        np.testing.assert_array_equal(np.round(ann.onset * cfg.sfreq).astype(int), samples)
        np.testing.assert_allclose(ann.onset, samples / cfg.sfreq, atol=1e-9)
        assert list(ann.description) == [e["image_id"] for e in events]
        np.testing.assert_allclose(ann.duration, 0.1, atol=1e-5)
        gaps = np.diff(samples) / cfg.sfreq
        assert gaps.min() >= cfg.soa - 1e-3 and gaps.max() <= cfg.soa + cfg.soa_jitter + 1e-3


def test_evoked_is_occipital_and_peaks_in_window(small):
    _, _, out = small
    test = _load(out / "preprocessed_eeg_test.npy")
    evoked = test["preprocessed_eeg_data"].mean(axis=(0, 1))
    times, names = test["times"], test["ch_names"]
    window = (times >= 0.07) & (times <= 0.3)
    amp = np.sqrt((evoked[:, window] ** 2).mean(1))
    occ = [names.index(c) for c in OCCIPITAL]
    frontal = [
        i for i, c in enumerate(names) if c.startswith(("Fp", "AF", "F")) and not c.startswith("FT")
    ]
    assert amp[occ].mean() > 1.5 * amp[frontal].mean()
    gfp = evoked.std(axis=0)
    assert 0.07 <= times[np.argmax(gfp)] <= 0.3


def test_responses_depend_on_image_content(small):
    _, _, out = small
    test = _load(out / "preprocessed_eeg_test.npy")
    same, different = _split_half(test["preprocessed_eeg_data"], test["times"], test["ch_names"])
    assert same > 0.1
    assert same > different + 0.1


def _peak_ratio(freqs, psd, f0, exclude=1.0, span=4.0):
    peak = psd[np.abs(freqs - f0) <= 0.5].max()
    near = (np.abs(freqs - f0) > exclude + 1.0) & (np.abs(freqs - f0) <= span + exclude)
    return peak / np.median(psd[near])


@pytest.mark.parametrize("line_freq, alpha_freq", [(50.0, 10.0), (60.0, 8.0)])
def test_line_and_alpha_peaks(tmp_path, line_freq, alpha_freq):
    cfg = SimulationConfig(
        seed=1, line_freq=line_freq, alpha_freq=alpha_freq, blink_rate=0.5, **SMALL
    )
    simulate(cfg, tmp_path)
    raw = mne.io.read_raw_fif(tmp_path / "sim_test_raw.fif", preload=True, verbose=False)
    data = raw.get_data(picks=list(OCCIPITAL))
    freqs, psd = signal.welch(data, fs=cfg.sfreq, nperseg=int(2 * cfg.sfreq))
    psd = psd.mean(0)
    assert _peak_ratio(freqs, psd, line_freq) > 3
    assert _peak_ratio(freqs, psd, alpha_freq) > 3
    other = 60.0 if line_freq == 50.0 else 50.0
    assert _peak_ratio(freqs, psd, other) < 3
    # Blinks: large, slow, frontal deflections.
    sos = signal.butter(2, [0.5, 5.0], "bandpass", fs=cfg.sfreq, output="sos")
    frontal = signal.sosfiltfilt(sos, raw.get_data(picks=["Fp1", "Fp2"]))
    occipital = signal.sosfiltfilt(sos, raw.get_data(picks=["O1", "O2"]))
    assert np.abs(frontal).max() > 2 * np.abs(occipital).max()


def test_deterministic_for_a_seed(tmp_path):
    tiny = dict(SMALL, n_train_concepts=2, n_test_concepts=2, test_repetitions=2)
    arrays = []
    for k, seed in enumerate((7, 7, 8)):
        simulate(SimulationConfig(seed=seed, **tiny), tmp_path / str(k))
        arrays.append(
            _load(tmp_path / str(k) / "preprocessed_eeg_test.npy")["preprocessed_eeg_data"]
        )
    np.testing.assert_array_equal(arrays[0], arrays[1])
    assert not np.allclose(arrays[0], arrays[2])
    png = sorted((tmp_path / "0" / "image_set" / "test_images").rglob("*.png"))[0]
    twin = tmp_path / "1" / png.relative_to(tmp_path / "0")
    assert png.read_bytes() == twin.read_bytes()


def test_higher_snr_is_more_reliable(tmp_path):
    reliability = []
    for snr in (0.15, 0.6):
        cfg = SimulationConfig(
            seed=5, snr=snr, **dict(SMALL, n_test_concepts=8, test_repetitions=12)
        )
        simulate(cfg, tmp_path / str(snr), PreprocessingConfig(notch_freqs=[50.0]))
        test = _load(tmp_path / str(snr) / "preprocessed_eeg_test.npy")
        same, different = _split_half(
            test["preprocessed_eeg_data"], test["times"], test["ch_names"]
        )
        reliability.append(same - different)
    assert reliability[1] > reliability[0] + 0.1


def test_things_layout_epochs_are_the_causal_chain_epochs_of_the_fif(small):
    """One chain for every epoch the project writes: the simulator's THINGS-layout epochs equal
    what neuralign's own causal chain cuts from the same session's FIF (first epoch included)."""
    from neuralign.config import PreprocessingConfig
    from neuralign.offline.preprocess import _read_annotated_raw, epochs_from_continuous

    cfg, result, out = small
    pre = PreprocessingConfig()
    layout = _load(out / "preprocessed_eeg_test.npy")
    data, sfreq, names, _, onsets, ids = _read_annotated_raw(out / "sim_test_raw.fif")
    assert names == list(layout["ch_names"])
    live, times, _, kept = epochs_from_continuous(data, sfreq, names, onsets, pre)
    assert kept.all()
    with open(out / "events_test.csv", newline="") as fh:
        events = list(csv.DictReader(fh))
    sl = np.flatnonzero(np.isin(np.round(layout["times"], 6), np.round(times, 6)))
    assert len(sl) == len(times)
    with open(out / "image_set" / "metadata.csv", newline="") as fh:
        order = [r["image_id"] for r in csv.DictReader(fh) if r["split"] == "test"]
    scale = np.abs(live).max()
    for k in (0, 1, len(events) // 2, len(events) - 1):
        row, rep = order.index(events[k]["image_id"]), int(events[k]["repetition"])
        assert events[k]["image_id"] == ids[k]
        # the layout keeps -0.2..0 s; its baseline is the same window, so the 0..1 s part is equal
        np.testing.assert_allclose(layout["preprocessed_eeg_data"][row, rep][:, sl], live[k],
                                   atol=1e-4 * scale)


def test_mua_sessions_record_the_same_units(tmp_path):
    """An MUA dataset's training and test sessions share each unit's tuning and baseline rate
    (units drawn anew per session left nothing a model learned to carry to the test session)."""
    cfg = SimulationConfig(modality="mua", n_mua_channels=48, seed=4,
                           **dict(SMALL, test_repetitions=4))
    simulate(cfg, tmp_path)
    rates = [mne.io.read_raw_fif(tmp_path / f"sim_{s}_raw.fif", verbose="error").get_data().mean(1)
             for s in ("training", "test")]
    assert np.corrcoef(*rates)[0, 1] > 0.7
