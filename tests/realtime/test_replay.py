"""LSLReplayer: exact timestamps, markers on their onset sample, pacing, looping, from_raw."""

from __future__ import annotations

import time
import uuid

import mne
import numpy as np
import pylsl
import pytest

from neuralign.realtime.replay import LSLReplayer

SFREQ = 250.0


def _data(n, n_ch=3):
    """Channel 0 is the sample index (so every sample is checkable), the rest a sine."""
    t = np.arange(n) / SFREQ
    return np.vstack([np.arange(n)] + [np.sin(2 * np.pi * (k + 3) * t) for k in range(n_ch - 1)])


def _inlet(source_id, **kw):
    infos = pylsl.resolve_byprop("source_id", source_id, 1, 5.0)
    assert infos, f"stream {source_id} not found"
    inlet = pylsl.StreamInlet(infos[0], max_chunklen=32, recover=False, **kw)
    inlet.open_stream(5.0)
    return inlet


def _drain(inlet, n, timeout=15.0):
    data, stamps = [], []
    deadline = time.monotonic() + timeout
    while sum(len(s) for s in stamps) < n and time.monotonic() < deadline:
        d, ts = inlet.pull_chunk(timeout=0.05, max_samples=1024, as_numpy=True)
        if len(ts):
            data.append(np.array(d))
            stamps.append(np.array(ts))
    return (np.concatenate(data) if data else np.zeros((0, 0)),
            np.concatenate(stamps) if stamps else np.zeros(0))


def _drain_markers(inlet, n, timeout=10.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        s, t = inlet.pull_sample(timeout=0.05)
        if s is not None:
            out.append((t, s[0]))
    return out


def test_pylsl_and_mne_lsl_consumers_get_every_sample_and_exact_marker_stamps():
    from mne_lsl.stream import StreamLSL

    n = 250  # 1 s at speed 1
    events = [(0, "first"), (37, "img_a"), (130, "img_b"), (249, "last")]
    sid = uuid.uuid4().hex
    rep = LSLReplayer(_data(n), SFREQ, ["idx", "s1", "s2"], ["misc", "eeg", "eeg"], events,
                      name=f"test-rep-{sid[:6]}", source_id=sid, chunk_size=10,
                      wait_for_consumers=15.0)
    rep.start()
    stream = StreamLSL(bufsize=5.0, source_id=sid).connect(processing_flags=None, timeout=5.0)
    inlet = _inlet(sid)
    markers = _inlet(sid + "-markers")  # the last consumer: sending starts now
    try:
        assert rep.wait_done(10.0)
        data, ts = _drain(inlet, n)
        np.testing.assert_array_equal(data[:, 0], np.arange(n))
        expected_ts = rep.t0 + np.arange(n) / SFREQ
        np.testing.assert_array_equal(ts, expected_ts)
        got = _drain_markers(markers, len(events))
        assert [v for _, v in got] == [v for _, v in events]
        for (t, _), (onset, _) in zip(got, events):
            assert abs(t - expected_ts[onset]) < 1e-6
        # mne-lsl reads the same stream (its buffer is zero-filled before the first sample)
        assert pytest.approx(stream.info["sfreq"]) == SFREQ and stream.ch_names[0] == "idx"
        deadline = time.monotonic() + 5.0
        while stream.n_new_samples < n and time.monotonic() < deadline:
            time.sleep(0.02)
        win, wts = stream.get_data(winsize=n / SFREQ)
        np.testing.assert_array_equal(win[0], np.arange(n))
        np.testing.assert_allclose(wts, expected_ts, rtol=0, atol=1e-9)
    finally:
        stream.disconnect()
        del inlet, markers
        rep.stop()


def _timed_run(speed):
    sid = uuid.uuid4().hex
    rep = LSLReplayer(_data(250), SFREQ, ["idx", "s1", "s2"], source_id=sid, speed=speed,
                      wait_for_consumers=0)
    rep.start()
    assert rep.wait_done(10.0)
    elapsed = pylsl.local_clock() - rep.t0
    rep.stop()
    return elapsed, rep.n_sent


def test_speed_factor_paces_the_replay():
    slow, n1 = _timed_run(1.0)
    fast, n4 = _timed_run(4.0)
    assert n1 == n4 == 250
    assert 2.0 < slow / fast < 8.0  # tolerant: only the order of magnitude is asserted
    assert slow >= (250 - 1) / SFREQ * 0.99  # never ahead of the wall clock


def test_loop_sends_twice_with_increasing_timestamps_and_repeated_markers():
    n = 100
    sid = uuid.uuid4().hex
    rep = LSLReplayer(_data(n), SFREQ, ["idx", "s1", "s2"], events=[(5, "a"), (60, "b")],
                      source_id=sid, speed=0, loop=True, n_loops=2, chunk_size=7)
    rep.start()
    inlet = _inlet(sid)
    markers = _inlet(sid + "-markers")
    try:
        assert rep.wait_done(10.0)
        data, ts = _drain(inlet, 2 * n)
        np.testing.assert_array_equal(data[:, 0], np.r_[np.arange(n), np.arange(n)])
        np.testing.assert_array_equal(ts, rep.t0 + np.arange(2 * n) / SFREQ)
        got = _drain_markers(markers, 4)
        assert [v for _, v in got] == ["a", "b", "a", "b"]
        np.testing.assert_array_equal([t for t, _ in got], ts[[5, 60, n + 5, n + 60]])
    finally:
        del inlet, markers
        rep.stop()


def test_from_raw_uses_annotations_and_data_channels():
    info = mne.create_info(["Fz", "Cz", "STI"], 100.0, ["eeg", "eeg", "stim"])
    raw = mne.io.RawArray(np.zeros((3, 500)), info, verbose="error")
    raw.set_meas_date(1_700_000_000)  # annotations relative to meas_date: origin handling
    raw.set_annotations(mne.Annotations([0.5, 1.234, 2.0], 0.0, ["x", "BAD_blink", "y"],
                                        orig_time=raw.info["meas_date"]))
    rep = LSLReplayer.from_raw(raw, wait_for_consumers=0)
    assert rep.ch_names == ["Fz", "Cz"] and rep.ch_types == ["eeg", "eeg"]
    assert list(zip(rep._ev_idx.tolist(), rep._ev_val)) == [(50, "x"), (200, "y")]
    assert rep.stype == "EEG" and rep.sfreq == 100.0
