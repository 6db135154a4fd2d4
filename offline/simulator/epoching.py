"""Cut the simulator's continuous sessions into THINGS-EEG2-layout epochs with the causal chain.

The epochs the simulator writes go through neuralign's one :class:`~neuralign.signal.chain.
CausalChain` (re-reference, notches, band-pass, anti-aliased decimation, state from the first
sample) and :func:`~neuralign.signal.chain.cut_epoch`, via
:func:`neuralign.offline.preprocess.epochs_from_continuous`: the same code that re-epochs the FIF
sessions for training and that the engine runs live. The arrays are NOT noise-normalised (MVNN is
fitted later, on training rows only).
"""

from __future__ import annotations

import numpy as np

from neuralign.config import PreprocessingConfig


def epoch_things_layout(
    data: np.ndarray, sfreq: float, ch_names: list[str], onset_samples: np.ndarray,
    image_rows: np.ndarray, repetitions: np.ndarray, n_images: int,
    preprocessing: PreprocessingConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(images, repetitions, channels, times) float32 epochs and their ``times`` axis (s).

    ``data`` (channels, samples) at ``sfreq``, already restricted to the picked channels; trial k
    starts at ``onset_samples[k]`` and is stored at ``[image_rows[k], repetitions[k]]``. Epochs
    span ``min(tmin, baseline start)`` to ``tmax`` (THINGS-EEG2 keeps the pre-stimulus part),
    baseline mean subtracted.
    """
    from neuralign.offline.preprocess import epochs_from_continuous

    pre = preprocessing
    t0 = min(pre.tmin, pre.baseline[0]) if pre.baseline is not None else pre.tmin
    epochs, times, _, kept = epochs_from_continuous(data, sfreq, ch_names, onset_samples,
                                                    pre.model_copy(update={"tmin": t0}))
    if not kept.all():
        raise ValueError("an epoch extends beyond the recording; lengthen the lead-in / tail")
    out = np.zeros((n_images, int(repetitions.max()) + 1, *epochs.shape[1:]), dtype=np.float32)
    out[image_rows, repetitions] = epochs
    return out, times
