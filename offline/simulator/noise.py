"""Background activity: spatially correlated pink noise, bursty alpha, blinks, mains, sensor noise.

All of it goes through the same forward model as the evoked response (except blinks, whose frontal
topography is modelled as a potential decaying with distance from the eyes, and sensor noise),
so the spatial structure of signal and noise is that of a real head.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from neuralign.offline.simulator.forward import SensorModel

# Target amplitudes per modality (EEG volts, MEG tesla): RMS over the occipito-parietal channels.
SCALES = {
    "eeg": {"pink": 12e-6, "alpha": 6e-6, "white": 1.0e-6, "line": 4e-6, "blink": 100e-6},
    "meg": {"pink": 400e-15, "alpha": 200e-15, "white": 20e-15, "line": 100e-15, "blink": 1.5e-12},
}
PINK_KNEE_HZ = 1.0  # flat spectrum below: no unbounded drift in the stored data
N_ALPHA_SOURCES = 6


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def pink_series(n_series: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Independent unit-RMS 1/f (power) series, flat below ``PINK_KNEE_HZ``."""
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sfreq)
    shape = 1.0 / np.sqrt(np.maximum(freqs, PINK_KNEE_HZ))
    shape[0] = 0.0
    out = np.empty((n_series, n_samples), dtype=np.float64)
    for k in range(n_series):
        spec = np.fft.rfft(rng.standard_normal(n_samples)) * shape
        row = np.fft.irfft(spec, n=n_samples)
        out[k] = row / (row.std() + 1e-30)
    return out


def spatial_pink_noise(
    model: SensorModel, n_samples: int, sfreq: float, rng: np.random.Generator
) -> np.ndarray:
    """Pink activity of every source (random orientations) seen through the gain matrix.

    Summing independent pink series over all ~650 source dipoles is equivalent in distribution to
    mixing one pink series per channel by the symmetric square root of ``G G^T`` (same spatial
    covariance and spectrum), which is what is done here to stay fast.
    """
    n_src = model.source_rr.shape[0]
    ori = rng.standard_normal((n_src, 3))
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    g = model.oriented_gain(np.arange(n_src), ori)
    cov = g @ g.T
    evals, evecs = np.linalg.eigh(cov)
    mixer = (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T
    return mixer @ pink_series(len(cov), n_samples, sfreq, rng)


def alpha_activity(
    model: SensorModel, n_samples: int, sfreq: float, alpha_freq: float, rng: np.random.Generator
) -> np.ndarray:
    """Waxing and waning alpha from occipito-parietal dipoles: narrow-band noise x burst envelope."""
    rel = model.source_rr - model.r0
    cand = np.flatnonzero((rel[:, 1] < -0.03) & (rel[:, 2] > 0.0))
    if len(cand) < N_ALPHA_SOURCES:
        cand = np.argsort(rel[:, 1])[: 4 * N_ALPHA_SOURCES]
    idx = rng.choice(cand, N_ALPHA_SOURCES, replace=False)
    ori = rel[idx] / np.linalg.norm(rel[idx], axis=1, keepdims=True)
    ori += 0.3 * rng.standard_normal(ori.shape)
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    nyq = sfreq / 2.0
    env_sos = signal.butter(2, min(0.4, 0.9 * nyq) / nyq, output="sos")
    shared = signal.sosfiltfilt(env_sos, rng.standard_normal(n_samples))
    shared /= shared.std() + 1e-30
    waves = np.empty((N_ALPHA_SOURCES, n_samples))
    for k in range(N_ALPHA_SOURCES):
        f = alpha_freq + 0.3 * rng.standard_normal()
        band = [max(f - 1.0, 0.5) / nyq, min(f + 1.0, 0.95 * nyq) / nyq]
        sos = signal.butter(2, band, btype="bandpass", output="sos")
        carrier = signal.sosfiltfilt(sos, rng.standard_normal(n_samples))
        own = signal.sosfiltfilt(env_sos, rng.standard_normal(n_samples))
        drive = 0.75 * shared + 0.66 * own / (own.std() + 1e-30)
        envelope = 1.0 / (1.0 + np.exp(-3.0 * (drive - 0.3)))  # bursts ~40 % of the time
        waves[k] = carrier / (carrier.std() + 1e-30) * envelope
    return model.oriented_gain(idx, ori) @ waves


def blink_topography(model: SensorModel) -> np.ndarray:
    """Frontal topography of a blink: decays with distance from a point in front of the eyes."""
    eye = model.r0 + np.array([0.0, 0.10, -0.04])
    dist = np.linalg.norm(model.ch_pos - eye, axis=1)
    topo = np.exp(-(dist - dist.min()) / 0.035)
    return topo


def blink_waves(
    n_samples: int, sfreq: float, rate: float, amplitude: float, rng: np.random.Generator,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The blink process over ``n_samples``: sorted Poisson onsets and each blink's 200-400 ms
    raised-cosine wave (which may run past ``n_samples``: a streaming caller carries it over).
    One draw order, so the offline sessions and the live subject blink alike."""
    if rate <= 0:
        return np.zeros(0, dtype=np.int64), []
    n = rng.poisson(rate * n_samples / sfreq)
    onsets = np.sort(rng.integers(0, n_samples, n))
    waves = []
    for _ in onsets:
        length = int(rng.uniform(0.2, 0.4) * sfreq)
        waves.append(np.sin(np.pi * np.arange(length) / length) ** 2 * amplitude
                     * rng.uniform(0.7, 1.3))
    return onsets, waves


def blinks(
    model: SensorModel, n_samples: int, sfreq: float, rate: float, amplitude: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Blink artefacts (Poisson onsets, 200-400 ms raised-cosine) and their onset samples."""
    out = np.zeros((len(model.ch_pos), n_samples))
    onsets, waves = blink_waves(n_samples, sfreq, rate, amplitude, rng)
    if not len(onsets):
        return out, onsets
    topo = blink_topography(model)
    for onset, wave in zip(onsets, waves):
        stop = min(n_samples, onset + len(wave))
        out[:, onset:stop] += topo[:, None] * wave[None, : stop - onset]
    return out, onsets


def line_noise(
    n_channels: int, n_samples: int, sfreq: float, line_freq: float, amplitude: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mains at ``line_freq`` (+ a weak 3rd harmonic) with per-channel amplitude and phase."""
    if line_freq <= 0:
        return np.zeros((n_channels, n_samples))
    t = np.arange(n_samples) / sfreq
    amp = amplitude * rng.uniform(0.3, 1.7, n_channels)
    phase = rng.uniform(-0.3, 0.3, n_channels)
    out = amp[:, None] * np.sin(2 * np.pi * line_freq * t[None, :] + phase[:, None])
    if 3 * line_freq < sfreq / 2:
        out += 0.2 * amp[:, None] * np.sin(2 * np.pi * 3 * line_freq * t[None, :] + 2 * phase[:, None])
    return out


def background(
    model: SensorModel, modality: str, n_samples: int, sfreq: float, alpha_freq: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pink + alpha + white sensor noise, scaled to the modality's amplitudes (what SNR refers to)."""
    sc = SCALES[modality]
    occ = model.occipital_parietal
    pink = spatial_pink_noise(model, n_samples, sfreq, rng)
    pink *= sc["pink"] / _rms(pink[occ])
    alpha = alpha_activity(model, n_samples, sfreq, alpha_freq, rng)
    alpha *= sc["alpha"] / _rms(alpha[occ])
    pink += alpha
    del alpha
    pink += sc["white"] * rng.standard_normal(pink.shape)
    return pink
