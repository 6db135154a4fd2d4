"""Recorder: sample-exact round trip, readable after a crash, FIF export with annotations."""

from __future__ import annotations

import time

import mne
import numpy as np
import pytest

from neuralign.errors import DataError
from neuralign.realtime.recorder import Recorder, read_recording
from neuralign.realtime.sources.base import Marker

CH = ["Fz", "Cz", "Pz", "idx"]
TYPES = ["eeg", "eeg", "eeg", "misc"]
SFREQ = 100.0


def _write(rec, n=500, chunk=37, t0=1234.5):
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1e-5, (4, n)).astype(np.float32)
    data[3] = np.arange(n)
    ts = t0 + np.arange(n) / SFREQ
    for a in range(0, n, chunk):
        rec.write_samples(data[:, a:a + chunk], ts[a:a + chunk])
    return data, ts


def test_round_trip_is_sample_exact_and_fif_has_annotations(tmp_path):
    rec = Recorder(tmp_path / "rec", CH, TYPES, SFREQ)
    data, ts = _write(rec)
    rec.write_event(Marker(timestamp=ts[42], value="img_7", received=ts[42] + 0.01))
    rec.write_event({"timestamp": ts[300] + 0.001, "value": "img_9"})
    rec.write_result({"trial": 0, "top_k": np.array([3, 1]), "score": np.float32(0.5)})
    fif = rec.close()
    got, got_ts, events, results, header = read_recording(tmp_path / "rec")
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(got_ts, ts)
    assert [e["value"] for e in events] == ["img_7", "img_9"]
    assert events[0]["timestamp"] == ts[42]
    assert results == [{"trial": 0, "top_k": [3, 1], "score": 0.5}]
    assert header["complete"] and header["n_samples"] == 500 and header["ch_names"] == CH
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    assert raw.ch_names == CH and raw.info["sfreq"] == SFREQ
    assert raw.get_channel_types() == TYPES
    np.testing.assert_array_equal(raw.get_data().astype(np.float32), data)
    assert list(raw.annotations.description) == ["img_7", "img_9"]
    np.testing.assert_array_equal(raw.time_as_index(raw.annotations.onset, use_rounding=True),
                                  [42, 300])


def test_unclosed_recording_is_readable(tmp_path):
    """A crash: close() never called; the 1 s flusher has made the data durable."""
    rec = Recorder(tmp_path / "crash", CH, TYPES, SFREQ, flush_interval=0.1)
    data, ts = _write(rec, n=300)
    rec.write_event({"timestamp": ts[10], "value": "a"})
    deadline = time.monotonic() + 5.0
    while rec._dirty and time.monotonic() < deadline:
        time.sleep(0.02)
    # simulate a torn write at the moment of the crash
    with open(tmp_path / "crash" / "samples.f32", "ab") as f:
        f.write(b"\x00\x01\x02")
    with open(tmp_path / "crash" / "events.jsonl", "ab") as f:
        f.write(b'{"timestamp": 12')
    got, got_ts, events, _, header = read_recording(tmp_path / "crash")
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(got_ts, ts)
    assert events == [{"timestamp": ts[10], "value": "a"}]
    assert header["complete"] is False
    rec._stop.set()  # stop the flusher thread without closing (the "crash")


def test_bad_input_raises_once_and_keeps_the_recording(tmp_path):
    rec = Recorder(tmp_path / "bad", CH, TYPES, SFREQ)
    data, ts = _write(rec, n=100)
    with pytest.raises(DataError, match=r"expects \(4, n\) samples .* got shape \(3, 5\)"):
        rec.write_samples(np.zeros((3, 5)), np.zeros(5))
    with pytest.raises(DataError, match="5 samples but 4 timestamps"):
        rec.write_samples(np.zeros((4, 5)), np.zeros(4))
    rec.write_samples(data[:, :10], ts[:10] + 1.0)  # still usable
    rec.close()
    got, got_ts, *_ = read_recording(tmp_path / "bad")
    assert got.shape == (4, 110)
    np.testing.assert_array_equal(got[:, :100], data)
    with pytest.raises(DataError, match="already holds a recording"):
        Recorder(tmp_path / "bad", CH, TYPES, SFREQ)
