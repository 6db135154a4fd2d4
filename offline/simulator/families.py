"""Data families for the fidelity bench, written in the THINGS-EEG2 layout.

Each family goes through the exact user path (``neuralign train --config things_eeg2 --data D
--features F.npz``), so a model is judged on data it was not tuned to:

- ``forward``: neuralign's MNE forward-model simulator (shared ERP + content-dependent sources),
  features from the built-in image encoder;
- ``linear``: a low-rank linear-Gaussian component model -- K spatio-temporal components whose
  gains are linear in the 64-d image features; no response shared by all images;
- ``nonlinear``: the same components with saturating gains (tanh) and feature-dependent latency
  shifts; also no shared response.

The synthetic families add spatially mixed pink noise, occipital alpha and white sensor noise;
``snr`` is the RMS of the noise-free responses (all images, visual channels, 0-1 s) over the RMS
of that background. Two layouts: ``nice`` (63 ch, 250 Hz, 250 samples from 0 s with the -0.2 s
``times`` axis) and ``official`` (17 occipito-parietal channels, 100 Hz, -0.2..0.79 s; ten times
cheaper to train on a CPU).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from neuralign.offline.simulator.forward import THINGS_EEG2_CHANNELS

log = logging.getLogger(__name__)

Family = Literal["forward", "linear", "nonlinear"]
Layout = Literal["nice", "official"]
FAMILIES: tuple[str, ...] = ("forward", "linear", "nonlinear")
OFFICIAL_CHANNELS = tuple(c for c in THINGS_EEG2_CHANNELS if c.startswith(("O", "P")))
# (latency s, width s, sign, centre electrode) of the K components: P1/N1/P2/P3-like.
COMPONENTS = ((0.10, 0.020, 1.0, "Oz"), (0.17, 0.030, -1.0, "PO7"), (0.17, 0.030, -1.0, "PO8"),
              (0.25, 0.040, 1.0, "POz"), (0.40, 0.070, 1.0, "Pz"))


@dataclass(frozen=True)
class FamilySpec:
    """One cell of the robustness matrix."""

    family: Family = "nonlinear"
    n_train_images: int = 800
    snr: float = 0.3
    layout: Layout = "official"
    seed: int = 0
    images_per_concept: int = 4
    train_repetitions: int = 4
    n_test_concepts: int = 50
    test_repetitions: int = 10
    feature_dim: int = 64

    @property
    def name(self) -> str:
        return f"{self.family}-n{self.n_train_images}-snr{self.snr:g}-{self.layout}"


def layout_axes(layout: Layout) -> tuple[list[str], float, np.ndarray, np.ndarray]:
    """(channels, sfreq, ``times`` written to the file, times of the data samples)."""
    if layout == "nice":
        times = np.round(np.arange(300) / 250.0 - 0.2, 6)
        return list(THINGS_EEG2_CHANNELS), 250.0, times, times[-250:]
    times = np.round(np.arange(100) / 100.0 - 0.2, 6)
    return list(OFFICIAL_CHANNELS), 100.0, times, times


def _positions(ch_names: list[str]) -> np.ndarray:
    import mne

    pos = mne.channels.make_standard_montage("easycap-M1").get_positions()["ch_pos"]
    return np.stack([pos[c] for c in ch_names])


def _pink(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance 1/f noise along the last axis."""
    spec = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    f = np.arange(spec.shape[-1], dtype=float)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n=shape[-1], axis=-1)
    return x / x.std()


def _background(rng: np.random.Generator, n: int, pos: np.ndarray, sfreq: float, n_t: int,
                chunk: int = 2000) -> np.ndarray:
    """(n, C, T) pink noise from 20 mixed sources + occipital alpha + white noise, RMS ~1."""
    c = len(pos)
    mix = rng.standard_normal((c, 20)) / np.sqrt(20)
    occ = np.exp(-np.sum((pos - pos[np.argmin(pos[:, 1])]) ** 2, 1) / (2 * 0.04**2))
    t = np.arange(n_t) / sfreq
    out = np.empty((n, c, n_t), np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        pink = np.einsum("cs,nst->nct", mix, _pink(rng, (m, 20, n_t)))
        phase = rng.uniform(0, 2 * np.pi, (m, 1, 1))
        amp = rng.gamma(2.0, 0.5, (m, 1, 1))
        alpha = amp * occ[None, :, None] * np.sin(2 * np.pi * rng.normal(10, 0.5, (m, 1, 1)) * t + phase)
        out[i:i + m] = pink + alpha + 0.3 * rng.standard_normal((m, c, n_t))
    return out / out.std()


def component_responses(f: np.ndarray, family: Family, pos: np.ndarray, ch_names: list[str],
                        times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise-free (n_images, C, T) responses of the component model to centred features ``f``."""
    d = f.shape[1]
    out = np.zeros((len(f), len(ch_names), len(times)), np.float64)
    for lat, width, sign, centre in COMPONENTS:
        spatial = np.exp(-np.sum((pos - pos[ch_names.index(centre)]) ** 2, 1) / (2 * 0.035**2))
        w = rng.standard_normal(d) / np.sqrt(d)
        v = rng.standard_normal(d) / np.sqrt(d)
        drive = f @ w
        if family == "linear":
            gain, shift = drive, np.zeros(len(f))
        else:  # saturating gain, latency shifted by up to +-30 ms by another feature direction
            gain, shift = np.tanh(2.0 * drive), 0.03 * np.tanh(2.0 * (f @ v))
        wave = np.exp(-0.5 * ((times[None] - lat - shift[:, None]) / width) ** 2)
        out += sign * gain[:, None, None] * spatial[None, :, None] * wave[:, None, :]
    return out


def _features(spec: FamilySpec, n_concepts: int, per_concept: int, rng: np.random.Generator,
              offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centred features (concept latent + within-concept variation) and what is written (+offset)."""
    concept = rng.standard_normal((n_concepts, spec.feature_dim))
    f = np.repeat(concept, per_concept, 0) * 0.8 + 0.6 * rng.standard_normal(
        (n_concepts * per_concept, spec.feature_dim))
    return f, (f + offset).astype(np.float32)


def _write_metadata(out: Path, train_concepts: list[str], train_files: list[str],
                    test_concepts: list[str], test_files: list[str]) -> None:
    (out / "image_set").mkdir(parents=True, exist_ok=True)
    np.save(out / "image_set" / "image_metadata.npy",
            {"train_img_concepts": train_concepts, "train_img_files": train_files,
             "test_img_concepts": test_concepts, "test_img_files": test_files}, allow_pickle=True)


def _write_eeg(out: Path, part: str, data: np.ndarray, ch_names: list[str], times: np.ndarray) -> None:
    np.save(out / f"preprocessed_eeg_{part}.npy",
            {"preprocessed_eeg_data": data.astype(np.float32), "ch_names": list(ch_names),
             "times": times}, allow_pickle=True)


def _write_synthetic(spec: FamilySpec, out: Path) -> Path:
    rng = np.random.default_rng(spec.seed)
    ch_names, sfreq, file_times, data_times = layout_axes(spec.layout)
    pos = _positions(ch_names)
    n_con = max(2, spec.n_train_images // spec.images_per_concept)
    offset = rng.standard_normal(spec.feature_dim)
    f_tr, w_tr = _features(spec, n_con, spec.images_per_concept, rng, offset)
    f_te, w_te = _features(spec, spec.n_test_concepts, 1, rng, offset)
    model_rng = np.random.default_rng(spec.seed + 1)  # the same components for both splits
    sig_tr = component_responses(f_tr, spec.family, pos, ch_names, data_times, model_rng)
    sig_te = component_responses(f_te, spec.family, pos, ch_names, data_times,
                                 np.random.default_rng(spec.seed + 1))
    visual = np.array([c.startswith(("O", "P")) for c in ch_names])
    scale = spec.snr / np.sqrt(np.mean(sig_tr[:, visual] ** 2))
    for part, sig, reps in (("training", sig_tr, spec.train_repetitions),
                            ("test", sig_te, spec.test_repetitions)):
        n = len(sig)
        noise = _background(rng, n * reps, pos, sfreq, len(data_times)).reshape(
            n, reps, len(ch_names), len(data_times))
        _write_eeg(out, part, noise + (scale * sig)[:, None].astype(np.float32), ch_names, file_times)
        del noise
    tr_con = [f"{i + 1:05d}_train{i + 1}" for i in range(n_con) for _ in range(spec.images_per_concept)]
    tr_files = [f"{c.split('_')[1]}_{k:02d}s.jpg" for c in dict.fromkeys(tr_con)
                for k in range(spec.images_per_concept)]
    te_con = [f"{n_con + i + 1:05d}_test{i + 1}" for i in range(spec.n_test_concepts)]
    te_files = [f"{c.split('_')[1]}_01b.jpg" for c in te_con]
    _write_metadata(out, tr_con, tr_files, te_con, te_files)
    from neuralign.offline.feature_files import save_features_npz

    ids = [Path(f).stem for f in tr_files + te_files]
    return save_features_npz(out / "features.npz", np.concatenate([w_tr, w_te]), ids)


def _write_forward(spec: FamilySpec, out: Path) -> Path:
    """Run the MNE forward-model simulator, then (official layout) keep 17 channels at 100 Hz."""
    from neuralign.config import SimulationConfig
    from neuralign.offline.feature_files import save_features_npz
    from neuralign.offline.image_features import compute_features
    from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed
    from neuralign.offline.simulator import simulate

    cfg = SimulationConfig(
        seed=spec.seed, n_train_concepts=max(2, spec.n_train_images // spec.images_per_concept),
        images_per_train_concept=spec.images_per_concept, n_test_concepts=spec.n_test_concepts,
        template_images_per_test_concept=1, train_repetitions=spec.train_repetitions,
        test_repetitions=spec.test_repetitions, snr=spec.snr)
    simulate(cfg, out)
    ds = load_things_eeg2_preprocessed(out, tmin=None, tmax=None)
    ids = list(ds.train.image_ids) + list(ds.test.image_ids)
    feats = compute_features(ds.image_files, ids, "builtin")
    if spec.layout == "official":
        from scipy.signal import resample_poly

        ch_names, _, file_times, _ = layout_axes("official")
        pick = [list(ds.ch_names).index(c) for c in ch_names]
        for part, split in (("training", ds.train), ("test", ds.test)):
            x = resample_poly(split.data[:, :, pick], 2, 5, axis=-1)[..., : len(file_times)]
            _write_eeg(out, part, x, ch_names, file_times)
    return save_features_npz(out / "features.npz", feats, ids)


def write_family(spec: FamilySpec, out_dir: Path) -> tuple[Path, Path]:
    """Write one family cell into ``out_dir``; returns (data directory, features NPZ).

    Cached: a directory whose ``family.json`` matches ``spec`` is reused as is.
    """
    out = Path(out_dir)
    stamp = out / "family.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return out, out / "features.npz"
    out.mkdir(parents=True, exist_ok=True)
    features = _write_forward(spec, out) if spec.family == "forward" else _write_synthetic(spec, out)
    stamp.write_text(json.dumps(asdict(spec)))
    log.info("wrote %s to %s", spec.name, out)
    return out, features


def noise_free_fit_data(spec: FamilySpec, n_images: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(features, noise-free responses) of a synthetic family: for checking what a decoder can fit."""
    rng = np.random.default_rng(spec.seed)
    ch_names, _, _, data_times = layout_axes(spec.layout)
    f, written = _features(spec, n_images, 1, rng, rng.standard_normal(spec.feature_dim))
    sig = component_responses(f, spec.family, _positions(ch_names), ch_names, data_times,
                              np.random.default_rng(spec.seed + 1))
    return written, sig.astype(np.float32)
