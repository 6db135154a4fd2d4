"""Early encoding: epochs encoded frame by frame while they fill decide exactly like epochs
encoded whole at their last sample, repetition averages included, also when another
presentation of the same image is folded in between."""

from __future__ import annotations

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.realtime.decisions import ResultBuilder
from neuralign.realtime.early_encoding import EarlyEncoder
from neuralign.realtime.epocher import Epoch, Filling, QueuedEpoch
from neuralign.realtime.inference import Decoder


def _same(a, b) -> None:
    np.testing.assert_allclose(a.topk_scores, b.topk_scores, atol=1e-5)
    if np.all(np.abs(np.diff(b.topk_scores)) > 1e-5):
        assert a.topk_ids == b.topk_ids
    assert a.n_repetitions == b.n_repetitions
    assert (a.avg_topk_ids is None) == (b.avg_topk_ids is None)
    if b.avg_topk_scores is not None:
        np.testing.assert_allclose(a.avg_topk_scores, b.avg_topk_scores, atol=1e-5)


def test_early_encoded_epochs_and_their_averages_decide_like_whole_ones(tiny_bundle):
    bundle = load_bundle(tiny_bundle[0])
    dec = Decoder(bundle, batch_size=4, top_k=3, device="cpu")
    early_rb, whole_rb = ResultBuilder(dec), ResultBuilder(dec)
    early = EarlyEncoder(dec, early_rb.repetitions)
    m = bundle.manifest.model
    rng = np.random.default_rng(7)
    n_frames = dec.early_encoder.n_frames

    def queued(label):
        return QueuedEpoch(label, 0, 0.0, 0.0), rng.standard_normal(
            (m.n_chans, m.n_times)).astype(np.float32)

    def fill(q, x, cols):
        early.advance([Filling(q, cols, lambda c0, c1: x[:, c0:min(c1, cols)])],
                      key=lambda label: label)

    def decide(i, q, x):
        got = early_rb.build([Epoch(i, x.copy(), q.label, 0, 0.0, 0, 0.0, early=q.early)])[0]
        ref = whole_rb.build([Epoch(i, x.copy(), q.label, 0, 0.0, 0, 0.0)])[0]
        _same(got, ref)
        return got

    # in three steps, as the processing thread does: the bulk, then a frame at a time
    for i, label in enumerate(["a", "a", "b", "a"]):
        q, x = queued(label)
        for cols in (m.n_times // 2, m.n_times - 9, m.n_times - 3):
            fill(q, x, cols)
        assert q.early is not None and q.early.n_frames == dec.frames_ready(m.n_times - 3)
        assert (q.early.n_before is None) == (i in (0, 2))
        assert decide(i, q, x).n_repetitions == [1, 2, 1, 3][i]
    # an "a" filling when another "a" is folded in: its early average is stale, then redone
    q, x = queued("a")
    fill(q, x, m.n_times - 5)
    stale = q.early.n_before
    q2, x2 = queued("a")
    decide(10, q2, x2)  # the 4th presentation
    assert q.early.n_before == stale == 3
    decide(11, q, x)  # the early single trial is used, the average row encoded whole
    q3, x3 = queued("a")
    fill(q3, x3, m.n_times - 5)
    fill(q3, x3, m.n_times - 5)  # nothing new: unchanged
    assert q3.early.n_before == 5 and q3.early.n_frames < n_frames
    decide(12, q3, x3)
    assert early.n_frames > 0
