"""Sources against real transports: pylsl outlets on loopback and BrainFlow's synthetic board."""

from __future__ import annotations

import time
import uuid
import warnings

import mne
import numpy as np
import pylsl
import pytest

from neuralign.errors import UserError
from neuralign.realtime.lsl_io import channel_names, make_outlet, resolve_stream
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource

SFREQ = 500.0


def _wait(cond, timeout=10.0, step=0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _outlet(sid, n_ch=3, sfreq=SFREQ, name="test-idx"):
    return make_outlet(f"{name}-{sid[:6]}", "EEG", [f"C{i}" for i in range(n_ch)], sfreq, sid)


def _push(outlet, start, stop, t0, sfreq=SFREQ, chunk=20, n_ch=3):
    """Push samples [start, stop): channel 0 is the sample index, stamped t0 + i / sfreq."""
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        idx = np.arange(a, b, dtype=np.float32)
        x = np.repeat(idx[:, None], n_ch, axis=1) * np.arange(1, n_ch + 1, dtype=np.float32)
        outlet.push_chunk(x, (t0 + np.arange(a, b) / sfreq).tolist())


@pytest.fixture
def sid():
    return uuid.uuid4().hex


def test_helpers_channel_desc_and_resolve(sid):
    out = _outlet(sid)
    info = resolve_stream(source_id=sid, timeout=5.0)
    inlet = pylsl.StreamInlet(info)
    assert channel_names(inlet.info(5.0)) == ["C0", "C1", "C2"]
    assert channel_names(info) == ["ch0", "ch1", "ch2"]  # resolve results carry no desc
    del inlet, out


def test_every_sample_once_in_order_with_sender_timestamps(sid):
    out = _outlet(sid)
    src = LSLSource(source_id=sid, timeout=5.0, buffer_seconds=10.0)
    desc = src.open()
    assert desc.ch_names == ["C0", "C1", "C2"] and desc.sfreq == SFREQ
    assert desc.ch_types == ["eeg"] * 3 and desc.source_id == sid
    src.start()
    try:
        assert _wait(out.have_consumers)
        t0 = pylsl.local_clock()
        _push(out, 0, 2000, t0)
        assert _wait(lambda: src.buffer.n_written >= 2000)
        time.sleep(0.05)
        data, ts = src.buffer.read(0, src.buffer.n_written)
        np.testing.assert_array_equal(data[0], np.arange(2000))
        np.testing.assert_array_equal(data[2], 3 * np.arange(2000))
        np.testing.assert_array_equal(ts, t0 + np.arange(2000) / SFREQ)  # exact: same host
        h = src.health
        assert (h.n_received, h.n_dropped, h.n_gaps, h.connected) == (2000, 0, 0, True)
    finally:
        src.stop()
        out = None  # outlet after the inlet


def test_forward_timestamp_jump_counts_dropped_samples(sid):
    out = _outlet(sid)
    src = LSLSource(source_id=sid, timeout=5.0)
    src.start()
    try:
        assert _wait(out.have_consumers)
        t0 = pylsl.local_clock()
        _push(out, 0, 1000, t0)  # 2 s: the clock model learns the stream's line
        _push(out, 1037, 1300, t0)  # samples 1000..1036 never sent
        assert _wait(lambda: src.buffer.n_written >= 1263)
        assert _wait(lambda: src.health.n_gaps == 1)
        assert src.health.n_dropped == 37
        assert any("37 samples missing before sample 1000" in e for e in src.health.events)
        assert src.buffer.gap_between(999, 1000) and not src.buffer.gap_between(0, 999)
        data, _ = src.buffer.read(0, 1263)
        np.testing.assert_array_equal(data[0], np.r_[np.arange(1000), np.arange(1037, 1300)])
    finally:
        src.stop()
        out = None  # outlet after the inlet


@pytest.mark.parametrize("kw, msg", [
    ({"expected_sfreq": 250.0}, "expected sampling rate 250 Hz, got 500 Hz"),
    ({"expected_channels": 64}, "expected 64 channels, got 3"),
    ({"expected_channels": ["C0", "C1", "Cz"]}, "missing: \\['Cz'\\]"),
])
def test_wrong_rate_or_channels_is_a_user_error(sid, kw, msg):
    out = _outlet(sid)
    src = LSLSource(source_id=sid, timeout=5.0, **kw)
    with pytest.raises(UserError, match=msg) as err:
        src.open()
    assert f"test-idx-{sid[:6]}" in str(err.value)
    del out


def test_missing_stream_is_a_user_error_naming_it():
    name = f"neuralign-missing-{uuid.uuid4().hex[:8]}"
    src = LSLSource(name=name, timeout=1.0)
    with pytest.raises(UserError, match=f"no LSL stream with name='{name}' found within 1 s "
                                        r"\(streams visible: "):
        src.open()


def test_disappearing_source_is_reported_and_reconnected(sid):
    out = _outlet(sid)
    src = LSLSource(source_id=sid, timeout=5.0, reconnect_interval=0.2)
    src.start()
    try:
        assert _wait(out.have_consumers)
        t0 = pylsl.local_clock()
        _push(out, 0, 100, t0)
        assert _wait(lambda: src.buffer.n_written >= 100)
        out = None  # the sender disappears (its outlet is destroyed)
        assert _wait(lambda: not src.health.connected, timeout=5.0)
        assert any("disconnected" in e for e in src.health.events)
        out = _outlet(sid)  # ... and comes back with the same source_id
        assert _wait(lambda: src.health.connected and out.have_consumers(), timeout=10.0)
        assert src.health.n_reconnects == 1
        _push(out, 100, 200, t0)
        assert _wait(lambda: src.buffer.n_written >= 200)
        data, ts = src.buffer.read(0, 200)  # the SAME buffer continues
        np.testing.assert_array_equal(data[0], np.arange(200))
        np.testing.assert_array_equal(ts, t0 + np.arange(200) / SFREQ)
        assert src.health.n_gaps >= 1 and any("reconnected" in e for e in src.health.events)
    finally:
        src.stop()
        out = None  # outlet after the inlet


def test_string_markers_arrive_with_sender_timestamps(sid):
    out = _outlet(sid)
    mk = make_outlet(f"test-mk-{sid[:6]}", "Markers", ["marker"], 0.0, sid + "-m", ["misc"],
                     dtype="string")
    src = LSLSource(source_id=sid, markers=LSLMarkerInlet(source_id=sid + "-m"), timeout=5.0)
    src.start()
    try:
        assert _wait(lambda: out.have_consumers() and mk.have_consumers())
        t0 = pylsl.local_clock()
        sent = [(t0 + 0.123456789, "img_001"), (t0 + 0.5, "img 002"), (t0 + 1.25, "x/y")]
        for t, v in sent:
            mk.push_sample([v], t)
        got = []
        assert _wait(lambda: len(got.extend(src.pop_markers()) or got) >= 3)
        assert [(m.timestamp, m.value) for m in got] == sent
        assert all(m.received > 0 for m in got)
    finally:
        src.stop()
        mk = out = None  # outlets after the inlets


def test_mne_lsl_one_hot_annotation_stream(sid):
    """PlayerLSL's default encoding: one float channel per description, non-zero = event."""
    out = _outlet(sid)
    ann = make_outlet(f"test-ann-{sid[:6]}", "annotations", ["face", "house"], 0.0, sid,
                      ["misc", "misc"], dtype="double64")  # same source_id, as mne-lsl does
    # offset 0: this test is about decoding; by default a player's stream is shifted by one
    # sample (test_fault_mne_lsl_player_markers_land_on_their_sample)
    src = LSLSource(source_id=sid, markers=LSLMarkerInlet(source_id=sid, stype="annotations",
                                                          offset_s=0.0), timeout=5.0)
    src.start()
    try:
        assert src.has_markers
        assert src.description.name == f"test-idx-{sid[:6]}"  # the data stream, not annotations
        assert _wait(lambda: out.have_consumers() and ann.have_consumers())
        t0 = pylsl.local_clock()
        ann.push_sample([0.0, -1.0], t0 + 1.0)
        ann.push_sample([0.5, 0.0], t0 + 2.0)
        got = []
        assert _wait(lambda: len(got.extend(src.pop_markers()) or got) >= 2)
        assert [(m.timestamp, m.value) for m in got] == [(t0 + 1.0, "house"), (t0 + 2.0, "face")]
    finally:
        src.stop()
        ann = out = None  # outlets after the inlets


def test_file_source_replays_fif_through_lsl(tmp_path):
    from neuralign.realtime.sources.file import FileSource

    n, sfreq = 600, 200.0
    info = mne.create_info(["Oz", "Pz", "idx"], sfreq, ["eeg", "eeg", "misc"])
    data = np.vstack([np.random.default_rng(0).normal(0, 1e-5, (2, n)), np.arange(n)])
    raw = mne.io.RawArray(data, info, verbose="error")
    onsets = [17, 250, 333, 599]
    raw.set_annotations(mne.Annotations(np.array(onsets) / sfreq, 0.0,
                                        ["a", "b", "BAD_seg", "c"]))
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    src = FileSource(path, speed=0, chunk_size=16, timeout=5.0)
    src.start()
    try:
        assert src.has_markers and src.description.ch_names == ["Oz", "Pz", "idx"]
        assert src.description.ch_types == ["eeg", "eeg", "misc"]
        assert _wait(lambda: src.buffer.n_written >= n)
        got, ts = src.buffer.read(0, n)
        np.testing.assert_array_equal(got[2], np.arange(n))
        np.testing.assert_allclose(got[:2], data[:2].astype(np.float32), rtol=0, atol=0)
        markers = []
        assert _wait(lambda: len(markers.extend(src.pop_markers()) or markers) >= 3)
        assert [m.value for m in markers] == ["a", "b", "c"]  # BAD_ skipped
        for m, onset in zip(markers, [17, 250, 599]):
            assert src.buffer.index_of_time(m.timestamp) == onset
            assert abs(m.timestamp - ts[onset]) < 1e-9
        assert src.done and src.health.n_dropped == 0 and src.health.n_gaps == 0
    finally:
        src.stop()


def test_brainflow_synthetic_board():
    from neuralign.realtime.lsl_io import local_clock
    from neuralign.realtime.sources.brainflow import BrainFlowSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brainflow imports pkg_resources
        src = BrainFlowSource("synthetic", buffer_seconds=10.0, markers=True)
        desc = src.open()
    assert desc.sfreq == 250.0 and len(desc.ch_names) == 16 and desc.ch_names[0] == "Fz"
    src.start()
    try:
        assert _wait(lambda: src.buffer.n_written > 50)
        t_mark = local_clock()
        src.insert_marker(7)
        t_start, n_start = local_clock(), src.buffer.n_written
        time.sleep(1.5)
        rate = (src.buffer.n_written - n_start) / (local_clock() - t_start)
        assert 150 < rate < 350
        n = src.buffer.n_written
        data, ts = src.buffer.read(n - 250, n)
        assert 1e-7 < np.abs(data).max() < 5e-3  # volts, not microvolts
        assert np.all(np.diff(ts) > 0) and abs(ts[-1] - local_clock()) < 0.5
        markers = src.pop_markers()
        assert [m.value for m in markers] == ["7"]
        assert abs(markers[0].timestamp - t_mark) < 5 / 250 + 0.02
        assert src.health.n_dropped == 0 and src.health.n_gaps == 0
    finally:
        src.stop()
