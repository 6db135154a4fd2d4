"""The decoder the engine runs: folded model and shape buckets give the unfolded, fixed-shape
decoder's decisions (no timing here; ``neuralign bench latency`` measures speed)."""

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.models.folding import FoldedTSConvEncoder
from neuralign.realtime.inference import Decoder


def _epochs(bundle, n, seed=0):
    m = bundle.manifest.model
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((m.n_chans, m.n_times)).astype(np.float32) for _ in range(n)]


def test_folded_bucketed_decoder_equals_the_unfolded_fixed_shape_one(tiny_bundle):
    bundle = load_bundle(tiny_bundle[0])
    fast = Decoder(bundle, batch_size=4, top_k=3, device="cpu")
    ref = Decoder(bundle, batch_size=4, top_k=3, device="cpu", fold=False, buckets=[4])
    assert isinstance(fast.model.brain_encoder, FoldedTSConvEncoder)
    assert fast.buckets == [1, 2, 4]
    eps = _epochs(bundle, 7)
    for n in (1, 2, 3, 4, 7):
        a, b = fast.decode_all(eps[:n]), ref.decode_all(eps[:n])
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-5)
            np.testing.assert_allclose(x.topk_scores, y.topk_scores, atol=1e-5)
            gaps = np.diff(y.topk_scores)
            if np.all(np.abs(gaps) > 1e-5):  # no tie: the same ranking
                assert x.topk_ids == y.topk_ids
    # a 1-epoch batch ran on the 1-row shape, a 3-epoch batch on the 4-row one
    assert fast.bucket_counts[1] >= 1 and fast.bucket_counts[4] >= 1


def test_accelerator_path_keeps_one_fixed_shape(tiny_bundle):
    bundle = load_bundle(tiny_bundle[0])
    dec = Decoder(bundle, batch_size=4, device="cpu", buckets=[4])
    dec.decode(_epochs(bundle, 1))
    assert dec.bucket_counts == {4: 1}


def test_partly_encoded_epochs_decode_as_whole_ones(tiny_bundle):
    """Early encoding: an epoch's first frames encoded before, the rest at decode time, gives
    the whole epoch's embedding, scores and ranking, alone or next to a whole epoch."""
    bundle = load_bundle(tiny_bundle[0])
    dec = Decoder(bundle, batch_size=4, top_k=3, device="cpu")
    assert dec.early_encoder is not None
    n = dec.early_encoder.n_frames
    eps = _epochs(bundle, 3, seed=4)
    whole = dec.decode(eps)
    for j in (1, n // 2, n - 1, n):
        part = dec.encode_part(np.stack(eps[:2]), 0, j)
        got = dec.decode(eps, [(j, part[0]), (j, part[1]), None])
        for x, y in zip(got, whole):
            np.testing.assert_allclose(x.embedding, y.embedding, atol=1e-5)
            np.testing.assert_allclose(x.topk_scores, y.topk_scores, atol=1e-5)
            np.testing.assert_allclose(x.scores, y.scores, atol=1e-5)
            if np.all(np.abs(np.diff(y.topk_scores)) > 1e-5):
                assert x.topk_ids == y.topk_ids
    # only the first frames' samples: a truncated epoch encodes them the same
    m = bundle.manifest.model
    j = dec.frames_ready(m.n_times // 2)
    np.testing.assert_allclose(dec.encode_part(eps[0][None, :, :m.n_times // 2], 0, j),
                               dec.encode_part(eps[0][None], 0, j), atol=1e-5)
