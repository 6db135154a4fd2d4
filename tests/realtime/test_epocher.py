"""Epocher: markers and sliding windows -> epochs at the right samples, late windows dropped.

A hand-made bundle with no filter, no re-reference and no decimation makes the processed stream
equal to the input, so every index below can be checked by eye: channel 0 carries the sample
index, channel 1 a constant.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from neuralign.bundle import (
    Bundle,
    ChannelsSection,
    EpochSection,
    Manifest,
    ModelSection,
    NoiseNormalizationSection,
    TemplateBankSection,
)
from neuralign.config import ModelConfig, PreprocessingConfig
from neuralign.realtime.epocher import Epocher, EpochWindow
from neuralign.realtime.inference import PartialEncoding
from neuralign.realtime.pipeline import Pipeline
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.realtime.sources.base import Marker

SFREQ = 100.0
T0 = 50.0  # LSL time of input sample 0
N_TIMES = 50  # 0 .. 0.5 s


def _bundle(baseline: tuple[float, float] | None, gain: float = 1.0) -> Bundle:
    names = ["Oz", "Pz"]
    pre = PreprocessingConfig(l_freq=None, h_freq=None, reference="none", resample_sfreq=SFREQ,
                              tmin=0.0, tmax=0.5, baseline=baseline)
    manifest = Manifest(
        channels=ChannelsSection(names=names, types=["eeg", "eeg"]), sfreq=SFREQ,
        epoch=EpochSection(tmin=0.0, tmax=0.5, baseline=baseline, n_times=N_TIMES),
        preprocessing=pre,
        noise_normalization=NoiseNormalizationSection(method="mvnn",
                                                      w=(gain * np.eye(2)).tolist()),
        model=ModelSection(config=ModelConfig(), n_chans=2, n_times=N_TIMES, feature_dim=4),
        template_bank=TemplateBankSection(image_ids=["a", "b"]))
    return Bundle(Path("unused"), manifest, {}, np.zeros((2, 4), np.float32),
                  np.zeros((2, 2, 2, 3), np.uint8))


class Stream:
    """A source's buffer and the pipeline fed from it, advanced sample-exactly."""

    def __init__(self, baseline=None, gain=1.0, buffer_seconds=30.0, sliding_hop_s=None):
        bundle = _bundle(baseline, gain)
        self.inputs = RingBuffer(2, 3000)
        self.pipe = Pipeline(bundle, bundle.ch_names, SFREQ, buffer_seconds=buffer_seconds)
        self.epocher = Epocher(self.pipe.output, EpochWindow.for_signal(bundle.manifest.epoch,
                                                                        self.pipe.output),
                               inputs=self.inputs, sliding_hop_s=sliding_hop_s)

    def advance_to(self, n: int, chunk: int = 7) -> None:
        for a in range(self.inputs.n_written, n, chunk):
            b = min(a + chunk, n)
            idx = np.arange(a, b, dtype=np.float64)
            data = np.vstack([idx, np.full_like(idx, 3.0)])
            ts = ts_of(idx)
            self.inputs.write(data.astype(np.float32), ts)
            self.pipe.push(data, ts)


def ts_of(i):
    return T0 + np.asarray(i) / SFREQ


def test_window_arithmetic_on_a_decimated_grid():
    w = EpochWindow(q=2, sfreq_out=100.0, tmin=0.0, tmax=0.5, baseline=(-0.1, 0.0), n_times=50)
    assert w.bounds(400) == (190, 250)  # input 400 -> processed 200; 10 baseline samples before
    assert w.last_input_index(400) == 498
    assert w.first_window_onset() == 20  # a sliding window's baseline starts at input 0


def test_a_marker_becomes_an_epoch_once_its_window_is_filtered():
    s = Stream(gain=2.0)  # W = 2 I: the epoch is normalised
    s.epocher.add_markers([Marker(timestamp=float(ts_of(200)), value="a", received=1.0)])
    s.advance_to(150)
    assert s.epocher.ready_epochs() == []  # its sample has not arrived: not placed yet
    assert s.epocher.seconds_until_next_ready() is None
    s.advance_to(240)
    assert s.epocher.ready_epochs() == []  # placed, window [200, 250) incomplete
    assert s.epocher.seconds_until_next_ready() == pytest.approx(0.10)
    s.advance_to(250)
    (ep,) = s.epocher.ready_epochs()
    assert (ep.label, ep.onset_index, ep.last_input_index) == ("a", 200, 249)
    assert ep.onset_timestamp == ts_of(200) and ep.last_sample_timestamp == ts_of(249)
    np.testing.assert_array_equal(ep.data[0], 2 * np.arange(200, 250))
    np.testing.assert_array_equal(ep.data[1], np.full(N_TIMES, 6.0))
    assert ep.stages["marker_received"] == 1.0
    assert ep.stages["ready"] <= ep.stages["epoched"] <= ep.stages["normalized"]
    assert s.epocher.ready_epochs() == []  # each epoch once


def test_samples_needed_names_the_count_that_completes_the_next_epoch():
    s = Stream()
    assert s.epocher.samples_needed() is None  # nothing queued: the source wakes us anyway
    s.epocher.add_markers([Marker(timestamp=float(ts_of(230)), value="late"),
                           Marker(timestamp=float(ts_of(200)), value="early")])
    s.advance_to(240)
    assert s.epocher.ready_epochs() == []  # both placed, neither window complete
    assert s.epocher.samples_needed() == 250  # the earlier onset's last sample is input 249
    s.advance_to(260)
    assert [e.label for e in s.epocher.ready_epochs()] == ["early"]
    assert s.epocher.samples_needed() == 280


def test_samples_needed_of_sliding_windows_is_the_next_window_end():
    s = Stream(sliding_hop_s=0.2)
    s.advance_to(100)
    s.epocher.ready_epochs()
    # windows start every 20 inputs (0, 20, ...) and end 50 later; 60's window needs 0..109
    assert s.epocher.samples_needed() == 110


def test_baseline_is_removed():
    s = Stream(baseline=(-0.1, 0.0))
    s.epocher.add_markers([Marker(timestamp=float(ts_of(100)), value="b")])
    s.advance_to(160)
    (ep,) = s.epocher.ready_epochs()
    # ramp minus the mean of samples 90..99 (94.5); the constant channel becomes 0
    np.testing.assert_allclose(ep.data[0], np.arange(100, 150) - 94.5)
    np.testing.assert_allclose(ep.data[1], 0.0)


def test_sliding_windows_every_hop_from_the_first_complete_one():
    s = Stream(baseline=(-0.1, 0.0), sliding_hop_s=0.2)
    s.advance_to(100)
    eps = s.epocher.ready_epochs()
    # first onset 10 (its baseline starts at input 0), then every 20 samples; windows end at
    # onset + 50, so 10, 30 and 50 are complete after 100 samples
    assert [e.onset_index for e in eps] == [10, 30, 50]
    assert all(e.label is None for e in eps)
    np.testing.assert_allclose([e.onset_timestamp for e in eps], ts_of([10, 30, 50]))
    assert [e.epoch_id for e in eps] == [0, 1, 2]
    s.advance_to(120)
    assert [e.onset_index for e in s.epocher.ready_epochs()] == [70]


def test_an_epoch_whose_window_left_the_buffer_is_dropped(caplog):
    s = Stream(buffer_seconds=1.0)  # the processed buffer keeps 100 samples
    s.advance_to(20)
    s.epocher.add_markers([Marker(timestamp=float(ts_of(10)), value="late")])
    s.advance_to(300)  # the engine fell behind: samples 0..199 are gone
    with caplog.at_level(logging.WARNING, logger="neuralign.realtime.epocher"):
        assert s.epocher.ready_epochs() == []
    assert "late" in caplog.text and "left the buffer" in caplog.text
    assert s.epocher.seconds_until_next_ready() is None  # not retried


def test_an_epoch_across_a_gap_the_pipeline_restarted_at_is_dropped():
    """The gap rule is applied once, upstream: the chunk's gaps restart the filters and mark the
    processed grid, which is all the epocher reads."""
    s = Stream()
    s.epocher.add_onset("across", 200, float(ts_of(200)))
    s.epocher.add_onset("after", 400, float(ts_of(400)))
    s.advance_to(220)
    idx = np.arange(220, 460, dtype=np.float64)  # input 220 does not follow 219
    data = np.vstack([idx, np.full_like(idx, 3.0)])
    s.inputs.write(data.astype(np.float32), ts_of(idx))
    s.pipe.push(data, ts_of(idx), restarts={220})
    (ep,) = s.epocher.ready_epochs()
    assert ep.label == "after" and s.epocher.health.gap_epochs_dropped == 1
    assert s.pipe.health.filter_restarts == 1


def test_a_filling_epoch_shows_its_first_samples_as_the_complete_epoch_will_have_them():
    """Early encoding reads these: baseline-corrected and normalised column for column like the
    cut epoch, only once the baseline is in and within the lead; what was encoded from them
    travels with the cut epoch."""
    s = Stream(baseline=(-0.1, 0.0), gain=2.0)
    s.epocher.add_markers([Marker(timestamp=float(ts_of(100)), value="b")])
    s.advance_to(95)  # baseline 90..99 not in yet
    s.epocher.ready_epochs()
    assert s.epocher.filling(within=100) == []
    s.advance_to(125)
    assert s.epocher.ready_epochs() == []
    assert s.epocher.filling(within=20) == []  # the window ends 25 samples on
    (f,) = s.epocher.filling(within=30)
    assert f.n_cols == 25
    data = f.read(0, 25)
    assert data.dtype == np.float32 and data.shape == (2, 25)
    np.testing.assert_allclose(data[0], 2.0 * (np.arange(100, 125) - 94.5))
    np.testing.assert_array_equal(f.read(7, 19), data[:, 7:19])  # any columns, the same
    sentinel = PartialEncoding(3, np.ones((1, 4), np.float32))
    f.epoch.early = sentinel
    s.advance_to(160)
    (ep,) = s.epocher.ready_epochs()
    np.testing.assert_array_equal(ep.data[:, :25], data)
    assert ep.early is sentinel
    assert s.epocher.filling(within=100) == []


def test_columns_read_while_filling_are_normalised_once_and_the_cut_completes_them():
    """Early encoding reads overlapping frames; each column is baseline-corrected and
    normalised once, into the epoch's buffer, and the cut epoch only normalises the columns
    after them - the same numbers as an epoch cut whole (another stream, no early reads)."""
    early, whole = Stream(baseline=(-0.1, 0.0), gain=2.0), Stream(baseline=(-0.1, 0.0), gain=2.0)
    columns: list[int] = []
    real = early.pipe.normalize
    early.pipe.normalize = lambda x: (columns.append(x.shape[-1]), real(x))[1]
    for s in (early, whole):
        s.epocher.add_markers([Marker(timestamp=float(ts_of(100)), value="b")])
    for n in (125, 131, 140):
        for s in (early, whole):
            s.advance_to(n)
            assert s.epocher.ready_epochs() == []
        (f,) = early.epocher.filling(within=50)
        for c0 in range(0, f.n_cols - 10, 3):  # overlapping windows, like frames
            f.read(c0, c0 + 10)
            covered = c0 + 10
    assert covered == 37 and sum(columns) == covered  # the columns the reads covered, once each
    for s in (early, whole):
        s.advance_to(160)
    (a,), (b,) = early.epocher.ready_epochs(), whole.epocher.ready_epochs()
    assert sum(columns) == N_TIMES  # then only the last 13
    assert a.data.dtype == np.float32 and a.data.shape == b.data.shape
    np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-6)
    assert a.stages["ready"] <= a.stages["epoched"] <= a.stages["normalized"]
