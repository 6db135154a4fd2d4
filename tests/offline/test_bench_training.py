"""``neuralign bench training`` reports what issue 15 asks: samples/s, seconds per step (per
epoch of that many samples), peak memory and the extrapolated full THINGS-EEG2 epoch."""

import json

import pytest
import torch

from neuralign.offline.benchmarks import format_throughput, training_throughput


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_training_reports_throughput_memory_and_the_full_things_eeg2_epoch(tmp_path):
    res = training_throughput(n_chans=4, n_times=60, batch_size=12, steps=1, feature_dim=8,
                              micro_batch=5, threads=1, out=tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text()) == res
    assert res["micro_batch"] == 5 and res["fold"] is True
    assert res["samples_per_second"] > 0 and res["peak_rss_gb"] > 0
    assert res["things_eeg2_epoch_seconds"] > 0
    text = format_throughput(res)
    for what in ("samples/s", "s per step of 12 samples", "peak RSS", "16540 training images",
                 "15800 fitting + 740 validation", "50 epochs"):
        assert what in text, what
    unfolded = training_throughput(n_chans=4, n_times=60, batch_size=12, steps=1, feature_dim=8,
                                   micro_batch=64, threads=1, fold=False)
    assert unfolded["micro_batch"] is None and "one graph, TSConv unfolded" in format_throughput(unfolded)
