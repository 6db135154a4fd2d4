"""Fault matrix, stream side (issue 11): units, unknown and garbage markers, foreign clocks,
acquisition errors, mne-lsl player offsets, streams that vanish and return, timestamps that jump,
repeat or drift, stalled consumers and impostor streams. All on real LSL streams."""

from __future__ import annotations

import logging
import time
import uuid

import mne
import numpy as np
import pytest

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.errors import UserError
from neuralign.realtime.engine import Engine
from neuralign.realtime.sources.factory import open_source
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.realtime.subscriptions import recent
from tests.realtime.faults import (
    ResultReader,
    Sender,
    now,
    raw_events,
    tiny_raw,
    wait_until,
)

SFREQ = 500.0


def _engine(bundle, sender: Sender, publish: bool = False, **cfg) -> Engine:
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10))
    return Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10, **cfg),
                  publish_lsl=publish, result_source_id=uuid.uuid4().hex if publish else None)


def test_fault_lsl_units_are_converted_to_volts_or_refused(tiny_sim):
    """Defect 2: a microvolt stream reached a volt model 1e6 times too large, silently."""
    raw = tiny_raw(tiny_sim[2], 2.0)
    data = raw.get_data()
    for unit, factor, override in (("microvolts", 1e6, None), ("", 1e6, "uV"), ("-6", 1e6, None)):
        sender = Sender(raw.ch_names, SFREQ, unit=unit or None, markers=False)
        src = LSLSource(source_id=sender.sid, timeout=10, units=override)
        src.start()
        try:
            sender.wait_for_consumers()
            sender.send(data * factor, now() + np.arange(data.shape[1]) / SFREQ, speed=20)
            assert wait_until(lambda s=src: s.buffer.n_written == data.shape[1], 10)
            got, _ = src.buffer.read(0, data.shape[1])
        finally:
            src.stop()
        np.testing.assert_allclose(got, data, rtol=1e-5, atol=1e-12)
    sender = Sender(raw.ch_names, SFREQ, unit="furlongs", markers=False)
    with pytest.raises(UserError, match="unknown channel unit.*furlongs.*--units"):
        LSLSource(source_id=sender.sid, timeout=10).open()


def test_fault_unknown_and_garbage_markers_are_counted_never_decoded(tiny_bundle, caplog):
    """Defect 4 (+ marker garbage): 'boundary', 'fixation', '12345', empty and non-UTF-8
    markers used to be decoded and averaged like images (and kept in the store forever)."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    engine.start()
    try:
        sender.wait_for_consumers()
        t0 = now() + 0.1
        events = raw_events(raw)
        junk = [(600, "boundary"), (700, "fixation"), (800, "12345"), (900, ""),
                (950, b"\xff\xfe img"), (1050, "boundary")]
        with caplog.at_level(logging.WARNING):
            sender.send(raw.get_data(), t0 + np.arange(raw.n_times) / SFREQ, events + junk,
                        speed=4)
            assert engine.wait_for(len(events), timeout=30), engine.status()
            time.sleep(0.5)
    finally:
        engine.stop()
    assert engine.error is None
    assert [r.marker for r in recent(engine)] == [v for _, v in events]
    h = engine.status()["health"]
    assert h["unknown_markers"] == 4 and h["bad_markers"] == 2
    assert len(engine.result_builder.repetitions) <= len(bundle.template_ids)
    unknown_logs = [r for r in caplog.records if "not an image id" in r.getMessage()]
    assert len(unknown_logs) == 3  # once per distinct value


def test_fault_acquisition_errors_and_foreign_clock_markers_are_reported(tiny_bundle, caplog):
    """Defect 5: acquisition exceptions were swallowed without a log line while status said
    connected; markers stamped with time.time() were parked forever."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 4.0)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    src = engine.source
    real = src._acquire_once
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] % 40 == 0:
            raise OSError("amplifier USB hiccup")
        real()

    src._acquire_once = flaky
    engine.start()
    try:
        sender.wait_for_consumers()
        t0 = now() + 0.1
        with caplog.at_level(logging.WARNING):
            sender.marker("c0001_i00", time.time())  # another clock: ~1.7e9 s ahead
            sender.send(raw.get_data(), t0 + np.arange(raw.n_times) / SFREQ, speed=4)
            assert wait_until(lambda: engine.health.deferred_markers_dropped == 1, 10)
            src._acquire_once = lambda: (_ for _ in ()).throw(OSError("device gone"))
            assert wait_until(lambda: not engine.status()["connected"], 5)
            st = engine.status()
    finally:
        engine.stop()
    assert st["health"]["acquisition_errors"] >= 2
    assert "device gone" in st["health"]["last_error"]
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "acquisition failed" in msgs and "another clock" in msgs


def test_fault_mne_lsl_player_markers_land_on_their_sample(tiny_sim):
    """Defect 8: the CLI never passed the player's one-sample marker offset, so a quarter of
    the epochs (decimation 4) were one model sample off."""
    from mne_lsl.player import PlayerLSL

    n = 2000
    ramp = np.arange(n, dtype=np.float64)  # channel value == file sample index
    info = mne.create_info(["idx", "Cz"], SFREQ, ["misc", "eeg"])
    raw = mne.io.RawArray(np.vstack([ramp, np.zeros(n)]), info, verbose="error")
    onsets = [301, 502, 703, 1004, 1405]
    raw.set_annotations(mne.Annotations(np.array(onsets) / SFREQ, 0.0,
                                        [f"img{i}" for i in range(len(onsets))]))
    sid = uuid.uuid4().hex
    player = PlayerLSL(raw, chunk_size=10, name=f"player-{sid[:6]}", source_id=sid,
                       annotations=True)
    # exactly what 'neuralign run --source lsl:source_id=SID --markers lsl:source_id=SID' builds
    src = open_source(f"lsl:source_id={sid}", f"lsl:source_id={sid}",
                      RealtimeConfig(connect_timeout_s=10))
    player.start()
    got = []
    try:
        src.start()
        assert wait_until(lambda: len(got.extend(src.pop_markers()) or got) >= 3, 20)
        time.sleep(0.2)
        got += src.pop_markers()
        for m in got:
            i = src.buffer.index_of_time(m.timestamp)
            value = src.buffer.read(i, i + 1)[0][0, 0]
            assert int(value) == onsets[int(m.value[3:])], (m, value)
            assert abs(src.buffer.timestamp_at(i) - m.timestamp) < 1e-6
    finally:
        src.stop()
        player.stop()


def test_fault_data_stream_disappears_and_returns_5_times(tiny_bundle):
    """The sender goes away and comes back 5 times: reconnected each time, epochs across the
    holes dropped and counted, decoding goes on, no error."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    data = raw.get_data()
    sid = uuid.uuid4().hex
    events = raw_events(raw)
    sender = Sender(raw.ch_names, SFREQ, source_id=sid)
    engine = Engine(bundle, LSLSource(source_id=sid, timeout=10, stall_timeout=0.3,
                                      reconnect_interval=0.2,
                                      markers=LSLMarkerInlet(source_id=sender.marker_sid)),
                    RealtimeConfig(batch_size=4, max_wait_ms=10), publish_lsl=False)
    engine.start()
    decoded = []
    try:
        t_end = 0.0
        for k in range(6):
            sender.wait_for_consumers()
            t0 = max(now(), t_end) + 0.05  # a sender's clock goes on while it is away
            t_end = t0 + 1500 / SFREQ
            part = slice(900, 2400)  # 3 s holding 8 stimuli with complete windows
            ev = [(s - 900, v) for s, v in events if 900 + 100 <= s < 2400 - 500]
            sender.send(data[:, part], t0 + np.arange(1500) / SFREQ, ev, speed=6)
            want = sum(decoded) + len(ev)
            assert wait_until(lambda w=want: engine.n_decoded >= w, 15), (
                k, engine.n_decoded, sum(decoded), list(engine.source.health.events)[-6:])
            decoded.append(len(ev))
            if k < 5:
                del sender  # the outlets disappear
                assert wait_until(lambda: not engine.source.health.connected, 10), k
                sender = Sender(raw.ch_names, SFREQ, source_id=sid)
    finally:
        engine.stop()
    st = engine.status()
    assert engine.error is None and st["reconnects"] == 5
    assert engine.n_decoded == sum(decoded)
    assert st["health"]["gap_epochs_dropped"] >= 0 and st["gaps"] >= 5
    # each return restarted the causal chain (no ringing across the outage)
    assert st["health"]["filter_restarts"] >= 5, st["health"]


def test_fault_timestamps_jump_repeat_and_drift(tiny_bundle):
    """Timestamps jumping back and forward and a duplicated chunk: epochs across them are
    dropped and counted; a rate 1 % off nominal is no gap: every epoch decoded."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    data = raw.get_data()
    events = raw_events(raw)
    # 1 % fast clock: no gap, every epoch
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    engine.start()
    try:
        sender.wait_for_consumers()
        t0 = now() + 0.1
        sender.send(data, t0 + np.arange(raw.n_times) / (SFREQ * 1.01), events, speed=4)
        assert engine.wait_for(len(events), 30), engine.status()
    finally:
        engine.stop()
    assert engine.status()["gaps"] == 0 and engine.health.gap_epochs_dropped == 0
    # jump forward 2 s at 2.5 s, back 1 s at 4.0 s, chunk 3000..3010 sent twice
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender)
    engine.start()
    try:
        sender.wait_for_consumers()
        t0 = now() + 0.1
        stamps = t0 + np.arange(raw.n_times) / SFREQ
        stamps[1250:] += 2.0
        stamps[2000:] -= 1.0
        cols = np.r_[np.arange(3010), np.arange(3000, raw.n_times)]
        sender.send(data[:, cols], stamps[cols], [(int(np.searchsorted(cols, s)), v)
                                                  for s, v in events], speed=4)
        time.sleep(3)
    finally:
        engine.stop()
    st = engine.status()
    assert engine.error is None and st["gaps"] >= 3
    assert st["health"]["gap_epochs_dropped"] > 0
    assert 0 < engine.n_decoded < len(events)
    for r in recent(engine):
        assert 0 < r.last_sample_timestamp - r.marker_timestamp < 1.0


def test_fault_result_consumer_stalling_5s_never_stalls_the_engine(tiny_bundle):
    """A result inlet that stops reading for 5 s (no in-process reader at all): decoding
    goes on, the late consumer then gets every result."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    events = raw_events(raw)
    sender = Sender(raw.ch_names, SFREQ)
    engine = _engine(bundle, sender, publish=True)
    engine.start()
    try:
        reader = ResultReader(engine.outlet.source_id)
        sender.wait_for_consumers()
        t0 = now() + 0.1
        # 5 s of sending while the result inlet reads nothing (a stalled consumer)
        sender.send(raw.get_data(), t0 + np.arange(raw.n_times) / SFREQ, events, speed=1.6)
        assert engine.wait_for(len(events), 10), engine.status()
        got = reader.read(len(events), timeout=10)
    finally:
        engine.stop()
    assert len(got) == len(events)
    assert engine.error is None and engine.health.ready_dropped == 0


def test_fault_impostor_with_the_same_name_is_never_used(tiny_sim):
    """A stream with the right name but another source_id: never connected to when the
    source_id is given, neither at start nor when the real one disappears."""
    raw = tiny_raw(tiny_sim[2], 1.0)
    name = f"eeg-{uuid.uuid4().hex[:6]}"
    impostor = Sender(raw.ch_names, SFREQ, name=name, markers=False)
    sid = uuid.uuid4().hex
    with pytest.raises(UserError, match="no LSL stream"):
        open_source(f"lsl:name={name},source_id={sid}", None,
                    RealtimeConfig(connect_timeout_s=1.5)).open()
    real = Sender(raw.ch_names, SFREQ, name=name, markers=False, source_id=sid)
    src = open_source(f"lsl:name={name},source_id={sid}", None,
                      RealtimeConfig(connect_timeout_s=5))
    src.stall_timeout, src.reconnect_interval = 0.3, 0.2
    src.start()
    try:
        assert src.description.source_id == sid
        del real
        assert wait_until(lambda: not src.health.connected, 10)
        time.sleep(2.5)  # several reconnection attempts while only the impostor is visible
        assert not src.health.connected and not impostor.outlet.have_consumers()
    finally:
        src.stop()
