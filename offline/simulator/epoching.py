"""Cut continuous data into THINGS-EEG2-layout epochs with a causal chain.

This is the simulator's own small helper; the plan is to route it through the shared causal chain
(``neuralign.signal``) so that offline epochs and the realtime engine use identical code. The
arrays it returns are NOT noise-normalized (MVNN is fitted later, on training rows only).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import signal

from neuralign.config import PreprocessingConfig

logger = logging.getLogger(__name__)


def causal_filter(data: np.ndarray, sfreq: float, pre: PreprocessingConfig) -> np.ndarray:
    """Notches then a Butterworth band-pass, applied forward only (sosfilt, zero initial state)."""
    nyq = sfreq / 2.0
    sections = []
    for f0 in pre.notch_freqs:
        if 0 < f0 < nyq:
            b, a = signal.iirnotch(f0, pre.notch_q, fs=sfreq)
            sections.append(signal.tf2sos(b, a))
    low = pre.l_freq if pre.l_freq else None
    high = pre.h_freq if pre.h_freq and pre.h_freq < nyq else None
    if low and high:
        sections.append(signal.butter(pre.filter_order, [low, high], "bandpass", fs=sfreq, output="sos"))
    elif low:
        sections.append(signal.butter(pre.filter_order, low, "highpass", fs=sfreq, output="sos"))
    elif high:
        sections.append(signal.butter(pre.filter_order, high, "lowpass", fs=sfreq, output="sos"))
    if not sections:
        return data.astype(np.float64, copy=True)
    return signal.sosfilt(np.concatenate(sections), data, axis=-1)


def causal_downsample(data: np.ndarray, sfreq: float, new_sfreq: float) -> tuple[np.ndarray, float]:
    """Anti-alias with a causal 8th-order Butterworth at 0.4 x new rate, keep every q-th sample.

    Non-integer ratios fall back to ``resample_poly`` on the (causally filtered) data, whose short
    symmetric FIR is not strictly causal; a warning says so.
    """
    if abs(new_sfreq - sfreq) < 1e-9:
        return data, sfreq
    if new_sfreq > sfreq:
        raise ValueError(f"resample_sfreq {new_sfreq} Hz is above the data rate {sfreq} Hz")
    ratio = sfreq / new_sfreq
    sos = signal.butter(8, 0.4 * new_sfreq, "lowpass", fs=sfreq, output="sos")
    smooth = signal.sosfilt(sos, data, axis=-1)
    if abs(ratio - round(ratio)) < 1e-9:
        return smooth[..., :: int(round(ratio))], new_sfreq
    from fractions import Fraction

    frac = Fraction(new_sfreq / sfreq).limit_denominator(1000)
    logger.warning("non-integer resampling %g -> %g Hz uses resample_poly (not strictly causal)", sfreq, new_sfreq)
    return signal.resample_poly(smooth, frac.numerator, frac.denominator, axis=-1), new_sfreq


def epoch_things_layout(
    data: np.ndarray, sfreq: float, onset_samples: np.ndarray, image_rows: np.ndarray,
    repetitions: np.ndarray, n_images: int, preprocessing: PreprocessingConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, repetitions, channels, times) float32 epochs and their ``times`` axis (s).

    ``data`` (channels, samples) at ``sfreq``; each trial k starts at ``onset_samples[k]`` and is
    stored at ``[image_rows[k], repetitions[k]]``. Chain: causal band-pass (+ notches) -> causal
    anti-aliasing + decimation to ``resample_sfreq`` -> epochs from ``min(tmin, baseline start)``
    to ``tmax`` (end excluded; onsets rounded to the nearest output sample) -> baseline mean
    subtracted. Spatial steps (reference, picks) are applied by the caller. Not noise-normalized.
    """
    pre = preprocessing
    filtered = causal_filter(data, sfreq, pre)
    low, new_sfreq = causal_downsample(filtered, sfreq, pre.resample_sfreq)
    del filtered
    t0 = min(pre.tmin, pre.baseline[0]) if pre.baseline is not None else pre.tmin
    first = int(round(t0 * new_sfreq))
    n_times = int(round((pre.tmax - t0) * new_sfreq))
    times = (first + np.arange(n_times)) / new_sfreq
    n_reps = int(repetitions.max()) + 1
    out = np.zeros((n_images, n_reps, low.shape[0], n_times), dtype=np.float32)
    starts = np.round(onset_samples * (new_sfreq / sfreq)).astype(np.int64) + first
    if starts.min() < 0 or starts.max() + n_times > low.shape[1]:
        raise ValueError("an epoch extends beyond the recording; lengthen the lead-in / tail")
    for start, row, rep in zip(starts, image_rows, repetitions):
        out[row, rep] = low[:, start : start + n_times]
    if pre.baseline is not None:
        base = (times >= pre.baseline[0] - 1e-9) & (times <= pre.baseline[1] + 1e-9)
        out -= out[..., base].mean(axis=-1, keepdims=True)
    return out, times
