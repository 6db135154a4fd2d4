"""Does the live signal have the training data's scale? One check at start, one message.

A unit mistake (a microvolt stream declared as volts, a bundle trained on microvolts kept as
volts) does not crash anything: the whitening is off by a power of ten and decoding is at chance,
silently. The bundle records its training data's amplitude (``Manifest.scale``); this module
compares the live signal with it twice:

* **filtered samples** (:meth:`ScaleCheck.feed_input`): the first :data:`START_SECONDS` of the
  stream's samples, run through a private copy of the bundle's causal chain, give each channel's
  standard deviation (within epoch-long windows, as :func:`neuralign.units.channel_std` computes
  it offline), divided by the bundle's for that channel type. It is fed the samples before the
  pipeline's rail guard: a microvolt stream read as volts trips the rail on every sample, so the
  guarded signal would hide the very mistake;
* **whitened epochs** (:meth:`ScaleCheck.feed_epochs`): the median RMS of the first
  :data:`N_EPOCHS` unflagged epochs over the bundle's ``whitened_rms`` (~1 for MVNN).

A ratio outside ``[1/10, 10]`` gives ONE message naming the likely unit mistake from its power of
ten and the fix; it is logged once (per engine: the first check that finds it) and kept in
:attr:`Health.unit_warning`, hence in ``engine.status()``, every result's ``health`` and the
``neuralign run`` status line. Bundles exported before ``scale`` existed are not checked.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from neuralign.realtime.health import Health
from neuralign.signal.chain import CausalChain, ChainSpec
from neuralign.signal.guard import SampleGuard
from neuralign.units import NAMED_UNITS, channel_std, median_epoch_rms, si_unit

if TYPE_CHECKING:
    from neuralign.bundle import Manifest
    from neuralign.realtime.epocher import Epoch

log = logging.getLogger(__name__)

#: seconds of filtered signal the start check looks at (at least two epoch windows)
START_SECONDS = 2.0
#: unflagged epochs the whitened check looks at
N_EPOCHS = 8
#: ratios beyond this factor (either way) are a unit mistake, not a noisier session
THRESHOLD = 10.0

_report_lock = threading.Lock()  # the filtered and the epoch check may find it at once


def unit_mistake(ratio: float, si: str, what: str) -> str:
    """The message for a live/training amplitude ``ratio`` of ``what`` on ``si`` channels:
    the likely mistake named from the ratio's power of ten, and how to fix it."""
    k = round(math.log10(ratio))
    units = NAMED_UNITS.get(si, {})
    base_name, base = units.get(0, ("SI units", si or "V"))
    # the named unit whose power of ten is nearest the factor (both ways it is a smaller unit:
    # read as SI on the too-large side, trained on unconverted on the too-small side)
    near = min(units, key=lambda p: abs(p + abs(k))) if units else 0
    name, spelling = units.get(near, ("", ""))
    head = f"the {what} is {ratio:.2g} x the training data's"
    if near == 0 or abs(near + abs(k)) > 1:  # no unit that far from SI: say the factor only
        return (f"{head} (~1e{k}, not a unit step of the known units); check the stream's "
                "unit (--units), the training recordings' (dataset.recording.units) and the "
                "amplifier's gain")
    if k > 0:
        return (f"{head}: the stream looks like {name} declared as {base_name} (fix: --units "
                f"{spelling}), or the bundle was trained on data 1e{k} x too small (the "
                f"training recordings' unit wrongly declared {spelling}: fix "
                "dataset.recording.units, re-train and export)")
    return (f"{head}: the bundle looks trained on {name} kept as {base_name} (fix: "
            f"dataset.recording.units: {spelling}, re-train and export), or the stream is "
            f"{base_name} declared as {name} (fix: --units {base})")


class ScaleCheck:
    """Compares the live signal's amplitude with the bundle's training data, once.

    ``spec`` (the pipeline's chain spec) enables :meth:`feed_input`; ``missing`` are bundle
    channels the stream lacks (zeros, left out). Writes the finding to ``health``.
    """

    def __init__(self, manifest: Manifest, health: Health, spec: ChainSpec | None = None,
                 missing: Sequence[int] = (), label: str = "the stream",
                 seconds: float = START_SECONDS, n_epochs: int = N_EPOCHS,
                 threshold: float = THRESHOLD):
        self.health, self.label, self.threshold = health, label, threshold
        scale = manifest.scale
        types = list(manifest.channels.types)
        self._si = Counter(si_unit(t) for t in types).most_common(1)[0][0] if types else ""
        ref = (scale.filtered_std or {}) if scale is not None else {}
        self._ref = np.array([ref.get(t, np.nan) for t in types], dtype=np.float64)
        self._ref[list(missing)] = np.nan
        self._ref[~(self._ref > 0)] = np.nan
        rms = scale.whitened_rms if scale is not None else None
        self._whitened = rms if rms is not None and rms > 0 else None
        self._win = int(manifest.epoch.n_times)
        self._chain: CausalChain | None = None
        self._guard: SampleGuard | None = None
        if spec is not None and np.isfinite(self._ref).any() and self._win > 1:
            self._chain = CausalChain(spec)
            self._guard = SampleGuard(len(types))  # NaN/Inf held, never in the private chain
            self._need = max(int(round(seconds * spec.sfreq_out)), 2 * self._win)
        self._filtered: list[np.ndarray] = []
        self._n_filtered = 0
        self._rms: list[float] = []
        self._n_epochs = n_epochs
        self.filtered_ratio: float | None = None  # the start check's result (None: not yet)
        self.epoch_ratio: float | None = None  # the epoch check's result

    # ---- filtered samples ---------------------------------------------------------------------
    def feed_input(self, x: np.ndarray) -> None:
        """Raw samples (bundle channel order, before the rail guard). A no-op once decided."""
        if self._chain is None:
            return
        y = self._chain.process(self._guard.apply(np.asarray(x, dtype=np.float64))[0])
        if y.shape[1]:
            self._filtered.append(y)
            self._n_filtered += y.shape[1]
        if self._n_filtered >= self._need:
            y = np.concatenate(self._filtered, axis=1)
            self._filtered, self._n_filtered = [], 0
            n = y.shape[1] // self._win
            windows = y[:, : n * self._win].reshape(y.shape[0], n, self._win).transpose(1, 0, 2)
            ratios = channel_std(windows) / self._ref
            ratios = ratios[np.isfinite(ratios)]
            ratio = float(np.median(ratios)) if len(ratios) else None
            if ratio == 0.0:
                return  # a flat start (amplifier not streaming yet): look at the next seconds
            self._chain, self._guard, self.filtered_ratio = None, None, ratio
            self._judge(ratio, "filtered signal's amplitude")

    # ---- whitened epochs -----------------------------------------------------------------------
    def feed_epochs(self, epochs: Iterable[Epoch]) -> None:
        """Decoded epochs (normalised data); flagged ones (bad samples) are left out."""
        if self._whitened is None or self.epoch_ratio is not None:
            return
        for ep in epochs:
            if not ep.flags and len(self._rms) < self._n_epochs:
                self._rms.append(median_epoch_rms(ep.data[None]))
        if len(self._rms) >= self._n_epochs:
            self.epoch_ratio = float(np.median(self._rms)) / self._whitened
            self._judge(self.epoch_ratio, "whitened epochs' RMS")

    # ---- the verdict ---------------------------------------------------------------------------
    def _judge(self, ratio: float | None, what: str) -> None:
        if ratio is None or not np.isfinite(ratio) or ratio <= 0:
            return  # a flat or missing signal is not a unit question
        if 1.0 / self.threshold <= ratio <= self.threshold:
            log.debug("%s: %s is %.3g x the training data's: units agree", self.label, what,
                      ratio)
            return
        msg = f"{self.label}: {unit_mistake(ratio, self._si, what)}"
        with _report_lock:
            if self.health.unit_warning:
                return
            self.health.unit_warning = msg
        log.warning("units: %s", msg)

