"""Offline single-trial decoding of a continuous recording with a bundle: the parity reference.

This is what the realtime engine must reproduce trial by trial: the bundle's causal chain over the
whole recording from its first sample, epochs cut at the annotation onsets, the frozen noise
normaliser, the encoder, and cosine top-k over the bundle's template bank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralign.bundle import Bundle
from neuralign.offline.preprocess import epochs_from_continuous
from neuralign.signal.events import annotation_onsets


def decode_recording(bundle: Bundle, raw_path: Path, top_k: int = 5) -> list[dict]:
    """One dict per annotated stimulus: ``marker``, ``onset_sample``, ``topk_ids``, ``topk_scores``."""
    import mne

    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    raw.pick(bundle.ch_names)
    onsets, labels = annotation_onsets(raw)
    return decode_continuous(bundle, raw.get_data(), raw.info["sfreq"], onsets, labels,
                             top_k=top_k)


def decode_continuous(bundle: Bundle, data: np.ndarray, sfreq: float, onsets, labels,
                      breaks: list[int] | tuple[int, ...] = (), top_k: int = 5) -> list[dict]:
    """Offline decoding of continuous ``data`` (the bundle's channels, volts/teslas) at
    ``onsets`` (sample indices): what the engine must reproduce trial by trial. ``breaks``: the
    samples that do not follow their predecessor (gaps): the chain restarts there and the epochs
    across are not decoded, as live."""
    pre = bundle.manifest.preprocessing
    epochs, _, _, kept = epochs_from_continuous(data, sfreq, bundle.ch_names,
                                                np.asarray(onsets, dtype=np.int64), pre,
                                                breaks=breaks)
    if not len(epochs):
        return []
    x = bundle.manifest.noise_normalization.whitening().apply(epochs)
    model = bundle.build_model()
    bank = torch.from_numpy(bundle.template_embeddings)
    with torch.inference_mode():
        z = torch.nn.functional.normalize(model.encode_brain(torch.from_numpy(
            np.ascontiguousarray(x, np.float32))), dim=-1)
        scores, idx = (z @ bank.T).topk(min(top_k, len(bank)), dim=1)
    kept_onsets = np.asarray(onsets)[kept]
    kept_labels = [lab for lab, k in zip(labels, kept) if k]
    ids = bundle.template_ids
    return [{"marker": lab, "onset_sample": int(o), "topk_ids": [ids[j] for j in row],
             "topk_scores": sc} for lab, o, row, sc in
            zip(kept_labels, kept_onsets, idx.tolist(), scores.tolist())]
