"""The causal chain: chunking-invariant, causal, and doing what its spec says."""

import numpy as np
import pytest
from scipy import signal

from neuralign.errors import UserError
from neuralign.signal.chain import CausalChain, ChainSpec, cut_epoch, epoch_times

CH = [f"EEG{i:02d}" for i in range(8)]


def _spec(**kw):
    base = dict(sfreq_in=1000.0, sfreq_out=250.0, ch_names=CH, notch_freqs=[50.0])
    base.update(kw)
    return ChainSpec(**base)


def _noise(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(CH), n)) * 1e-5 + 2e-3  # with a DC offset, like real EEG


@pytest.mark.parametrize("chunk", [1, 7, 10, 64, 1001])
def test_chunked_equals_whole(chunk):
    x = _noise()
    whole = CausalChain(_spec()).process(x)
    chain = CausalChain(_spec())
    parts = [chain.process(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-10, atol=1e-15)
    assert whole.shape == (len(CH), x.shape[1] // 4)


def test_causal_future_samples_change_nothing_before():
    x = _noise()
    y = x.copy()
    t = 3001
    y[:, t:] += np.random.default_rng(1).standard_normal((len(CH), x.shape[1] - t))
    a = CausalChain(_spec()).process(x)
    b = CausalChain(_spec()).process(y)
    n_before = t // 4 + (1 if t % 4 else 0)  # outputs whose input index < t
    np.testing.assert_array_equal(a[:, :n_before], b[:, :n_before])
    assert not np.allclose(a[:, n_before:], b[:, n_before:])


def test_average_reference_and_filtering_effects():
    fs = 1000.0
    t = np.arange(20000) / fs
    common = np.sin(2 * np.pi * 50 * t)  # line noise on all channels: removed by notch + reference
    alpha = np.sin(2 * np.pi * 10 * t)
    x = np.tile(common, (len(CH), 1))
    x[0] += alpha
    y = CausalChain(_spec()).process(x)
    f, p = signal.welch(y[:, 1000:], fs=250.0, nperseg=500)
    i10, i50 = np.argmin(abs(f - 10)), np.argmin(abs(f - 50))
    assert p[0, i10] > 100 * p[0, i50]
    # average reference: channels sum to ~zero at every sample
    np.testing.assert_allclose(y.sum(axis=0), 0, atol=1e-9)


def test_non_integer_ratio_is_a_user_error():
    with pytest.raises(UserError, match="integer multiple"):
        CausalChain(_spec(sfreq_in=1024.0))


def test_cut_epoch_window_and_baseline():
    y = np.zeros((2, 1000))
    y[:, 300:] = 5.0  # step at output index 300
    ep = cut_epoch(y, onset_input_sample=1200, q=4, sfreq_out=250.0, tmin=0.0, tmax=1.0,
                   baseline=(-0.2, 0.0))
    assert ep.shape == (2, 250)
    np.testing.assert_allclose(ep, 5.0)  # window starts at the step; baseline before it is 0
    assert len(epoch_times(250.0, 0.0, 1.0)) == 250
    assert cut_epoch(y, 3900, 4, 250.0, 0.0, 1.0, None) is None  # runs past the end
