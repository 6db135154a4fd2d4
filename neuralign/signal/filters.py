"""Causal IIR filters that keep their state across chunks.

``CausalFilter(sos).process(chunk)`` gives exactly what ``sosfilt`` gives on the whole signal at
once, however the signal is cut into chunks: the offline chain and the realtime engine call this
same object, which is what makes their outputs identical.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

try:  # the compiled kernel scipy's sosfilt runs after reshaping its arguments
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - a scipy that moved it: the public function then
    _sosfilt_kernel = None

from neuralign.errors import UserError


def check_stable(sos: np.ndarray, what: str) -> np.ndarray:
    """``sos`` itself, or one UserError when a pole is on or outside the unit circle (the filter
    would blow up: e.g. a very low cut-off at a high rate with a high order)."""
    for section in np.atleast_2d(sos):
        poles = np.roots(section[3:])
        if len(poles) and float(np.max(np.abs(poles))) >= 1.0 - 1e-12:
            raise UserError(f"{what}: the filter is unstable at this sampling rate (a pole at "
                            f"|z| = {float(np.max(np.abs(poles))):.12f}); lower "
                            "preprocessing.filter_order or raise the cut-off")
    return sos


class CausalFilter:
    """A second-order-sections filter with per-channel state (``zi``) kept between calls.

    The state is initialised from the first sample seen (the steady-state response to a step of
    that value), so a DC offset of tens of millivolts does not ring through a 0.1 Hz high-pass.
    """

    def __init__(self, sos: np.ndarray):
        self.sos = np.atleast_2d(np.asarray(sos, dtype=np.float64))
        self._zi_unit = signal.sosfilt_zi(self.sos)  # (n_sections, 2)
        self._zi: np.ndarray | None = None

    def reset(self) -> None:
        self._zi = None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` (channels, samples) causally; returns float64 of the same shape."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] == 0:
            return x.copy()
        if self._zi is None:
            # (n_sections, channels, 2): the step response state scaled by each channel's first value.
            self._zi = self._zi_unit[:, None, :] * x[:, :1][None, :, :]
            self._zi_rows = np.ascontiguousarray(self._zi.transpose(1, 0, 2))
        if _sosfilt_kernel is not None and x.ndim == 2:
            # Same kernel, same numbers as signal.sosfilt (bitwise), without its per-call
            # validation, moveaxis and copies: at 1-sample chunks those were ~90 % of the time.
            # The state lives as (channels, n_sections, 2), the layout the kernel updates in place.
            y = np.array(x, dtype=np.float64, order="C")
            _sosfilt_kernel(self.sos, y, self._zi_rows)
            return y
        y, self._zi = signal.sosfilt(self.sos, x, axis=-1, zi=self._zi)
        self._zi_rows = np.ascontiguousarray(self._zi.transpose(1, 0, 2))
        return y


def bandpass_sos(
    sfreq: float, l_freq: float | None, h_freq: float | None, order: int = 4
) -> np.ndarray | None:
    """Butterworth high/low/band-pass as SOS, or None when both edges are off."""
    nyq = sfreq / 2.0
    if l_freq is not None and l_freq >= nyq:
        raise UserError(f"preprocessing.l_freq: a {l_freq:g} Hz high-pass cut-off is at or above "
                        f"the Nyquist frequency ({nyq:g} Hz) of a {sfreq:g} Hz stream")
    if h_freq is not None and h_freq >= nyq:
        h_freq = None  # nothing to remove above Nyquist; the anti-alias stage handles resampling
    if l_freq is not None and l_freq <= 0:
        l_freq = None
    if l_freq is None and h_freq is None:
        return None
    what = (f"preprocessing (l_freq {l_freq}, h_freq {h_freq}, filter_order {order} at "
            f"{sfreq:g} Hz)")
    if l_freq is not None and h_freq is not None:
        return check_stable(signal.butter(order, [l_freq, h_freq], btype="bandpass", fs=sfreq,
                                          output="sos"), what)
    if l_freq is not None:
        return check_stable(signal.butter(order, l_freq, btype="highpass", fs=sfreq,
                                          output="sos"), what)
    return check_stable(signal.butter(order, h_freq, btype="lowpass", fs=sfreq, output="sos"),
                        what)


def notch_sos(sfreq: float, freqs: list[float], q: float = 30.0) -> np.ndarray | None:
    """Cascade of IIR notches (``scipy.signal.iirnotch``) as SOS; frequencies >= Nyquist skipped."""
    sections = []
    for f0 in freqs:
        if 0 < f0 < sfreq / 2.0:
            b, a = signal.iirnotch(f0, q, fs=sfreq)
            sections.append(signal.tf2sos(b, a))
    return np.vstack(sections) if sections else None


def antialias_sos(factor: int) -> np.ndarray:
    """The anti-alias low-pass ``scipy.signal.decimate`` uses (Chebyshev I, order 8, 0.8 x new Nyquist)."""
    return signal.cheby1(8, 0.05, 0.8 / factor, output="sos")
