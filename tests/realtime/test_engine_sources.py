"""The engine on every kind of source: BrainFlow synthetic board, mne-lsl PlayerLSL, recording."""

import time
import uuid

import mne
import numpy as np
import pytest
from brainflow.board_shim import BoardIds, BoardShim

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig, load_config
from neuralign.errors import UserError
from neuralign.realtime.engine import Engine
from neuralign.realtime.recorder import Recorder, read_recording
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.sources.brainflow import BrainFlowSource
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.realtime.subscriptions import recent
from tests.conftest import FAST_TRAIN

SYNTH_NAMES = BoardShim.get_eeg_names(BoardIds.SYNTHETIC_BOARD.value)


@pytest.fixture(scope="module")
def board_bundle(tiny_sim, tmp_path_factory):
    """A tiny bundle on the synthetic board's 16 channels (picked before the causal chain)."""
    from neuralign.offline.runs import export_run
    from neuralign.offline.train import run_training

    _, cfg_path, data = tiny_sim
    root = tmp_path_factory.mktemp("board_bundle")
    picks = "[" + ",".join(SYNTH_NAMES) + "]"
    cfg = load_config(cfg_path, FAST_TRAIN + [f"preprocessing.picks={picks}"])
    run_training(cfg, root / "run", data, None, progress=False)
    return export_run(root / "run", root / "bundle")


def test_brainflow_synthetic_board_with_inserted_markers(board_bundle):
    bundle = load_bundle(board_bundle)
    assert bundle.ch_names == SYNTH_NAMES
    src = BrainFlowSource("synthetic", markers=True)
    # the board's numeric markers are no image ids of the bundle: decode them all
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10,
                                                decode_markers="all"), publish_lsl=False)
    engine.start()
    try:
        time.sleep(1.0)  # the baseline window (-0.2 s) must be in the buffer
        for value in (1, 2, 3, 4):
            src.insert_marker(value)
            time.sleep(0.3)
        assert engine.wait_for(4, timeout=20), engine.status()
    finally:
        engine.stop()
    markers = [r.marker for r in recent(engine)[:4]]
    assert markers == ["1", "2", "3", "4"]
    for r in recent(engine):
        assert set(r.topk_ids) <= set(bundle.template_ids)
    assert engine.status()["dropped"] == 0
    assert engine.stats.summary()["engine_total"]["p50"] > 0


def test_mne_lsl_player_with_annotations(tiny_bundle):
    from mne_lsl.player import PlayerLSL

    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    raw.crop(0, 4.0)
    expected = [str(d) for d in raw.annotations.description if d]
    sid = uuid.uuid4().hex
    player = PlayerLSL(raw, chunk_size=10, name=f"player-{sid[:6]}", source_id=sid,
                       annotations=True)
    src = LSLSource(source_id=sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sid, offset_s=1 / raw.info["sfreq"]))
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10), publish_lsl=False)
    player.start()
    try:
        engine.start()
        # epochs whose window is complete within the replayed 4 s (the stream may start mid-file)
        assert engine.wait_for(5, timeout=30), engine.status()
    finally:
        engine.stop()
        player.stop()
    got = [r.marker for r in recent(engine)]
    assert got and all(m in expected for m in got)
    # consecutive decoded markers appear in the file's order
    pos = [expected.index(m) for m in got]
    assert pos == sorted(pos)


def test_recording_round_trip_is_sample_exact(tiny_bundle, tmp_path):
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    raw.crop(0, 3.0)
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"rec-{sid[:6]}", source_id=sid, speed=2.0,
                               wait_for_consumers=20.0)
    src = replay_source(rep, timeout=10)
    rep.start()
    desc = src.open()
    rec = Recorder(tmp_path / "rec", desc.ch_names, desc.ch_types, desc.sfreq)
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4), recorder=rec, publish_lsl=False)
    engine.start()
    try:
        assert rep.wait_done(30)
        deadline = time.monotonic() + 10
        while src.buffer.n_written < raw.n_times and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        engine.stop()  # closes the recording
        rep.stop()
    rdata, rts, events, results, header = read_recording(tmp_path / "rec")
    sent = raw.get_data().astype(np.float32)
    assert rdata.shape == sent.shape
    np.testing.assert_array_equal(rdata, sent)
    np.testing.assert_allclose(np.diff(rts), 1 / raw.info["sfreq"], atol=1e-6)
    assert [e["value"] for e in events] == [
        str(d) for d in raw.annotations.description]
    assert len(results) == engine.n_decoded
    assert (tmp_path / "rec" / "raw.fif").is_file()


def test_wrong_sampling_rate_is_one_clear_error(tiny_bundle):
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    raw.crop(0, 2.0).resample(333.0)
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"sr-{sid[:6]}", source_id=sid, wait_for_consumers=5)
    rep.start()
    src = LSLSource(source_id=sid, timeout=10)
    engine = Engine(bundle, src, RealtimeConfig(), publish_lsl=False)
    try:
        with pytest.raises(UserError, match="333"):
            engine.start()
    finally:
        src.stop()
        rep.stop()


def test_no_stream_within_timeout_is_one_clear_error(tiny_bundle):
    bundle = load_bundle(tiny_bundle[0])
    src = LSLSource(name=f"absent-{uuid.uuid4().hex[:8]}", timeout=1.0)
    with pytest.raises(UserError, match="absent-"):
        Engine(bundle, src, RealtimeConfig(), publish_lsl=False).start()


def test_source_that_disappears_is_reconnected_and_everything_keeps_going(tiny_bundle, tmp_path):
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    raw.set_annotations(None).crop(0, 2.5)  # no markers: the engine slides a window
    sid = uuid.uuid4().hex
    first = LSLReplayer.from_raw(raw, name=f"gone-{sid[:6]}", source_id=sid,
                                 wait_for_consumers=20.0)
    first.start()
    src = LSLSource(source_id=sid, timeout=10)
    desc = src.open()
    rec = Recorder(tmp_path / "rec", desc.ch_names, desc.ch_types, desc.sfreq)
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, sliding_hop_s=0.2), recorder=rec,
                    publish_lsl=False)
    engine.start()
    try:
        assert first.wait_done(30)
        first.stop()  # the outlet disappears
        deadline = time.monotonic() + 10
        while src.health.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not src.health.connected
        decoded_before, received_before = engine.n_decoded, src.health.n_received
        second = LSLReplayer.from_raw(raw, name=f"gone-{sid[:6]}", source_id=sid,
                                      wait_for_consumers=20.0)
        second.start()
        assert second.wait_done(30)
        deadline = time.monotonic() + 10
        while engine.n_decoded <= decoded_before + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        second.stop()
    finally:
        engine.stop()
    assert engine.error is None
    assert src.health.n_reconnects >= 1 and src.health.n_received > received_before
    assert engine.n_decoded > decoded_before + 3  # decoding went on after the reconnection
    rdata, _, _, _, _ = read_recording(tmp_path / "rec")
    assert rdata.shape[1] == src.health.n_received  # the recording kept going too


def test_fill_missing_lets_the_model_reconstruct_absent_channels(tiny_bundle):
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    raw.crop(0, 5.0)  # the session starts after a lead-in; this holds several complete epochs
    absent = ["O1", "Oz", "O2"]
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw.copy().drop_channels(absent), name=f"fill-{sid[:6]}",
                               source_id=sid, wait_for_consumers=20.0)
    src = replay_source(rep, timeout=10)
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, fill_missing=True), publish_lsl=False)
    rep.start()
    try:
        engine.start()
        assert list(engine.pipeline.channel_map.missing) == absent
        assert engine.wait_for(3, timeout=30), engine.status()
    finally:
        engine.stop()
        rep.stop()
    assert engine.error is None


def test_online_noise_normalisation_adapts_to_the_session(tiny_bundle):
    from neuralign.realtime.pipeline import Pipeline

    bundle = load_bundle(tiny_bundle[0])
    bundle.manifest.preprocessing.noise_normalization.online_update = True
    bundle.manifest.preprocessing.noise_normalization.online_halflife_s = 2.0
    pipe = Pipeline(bundle, bundle.ch_names, 500.0)
    w0 = pipe.whitening.w.copy()
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((63, 63)) * 1e-6
    for _ in range(40):  # 8 s of spatially correlated noise in 0.2 s chunks
        pipe.push(mix @ rng.standard_normal((63, 100)), np.zeros(100))
    assert not np.allclose(pipe.whitening.w, w0)
    recent, _ = pipe.processed.read(pipe.processed.n_written - 500, pipe.processed.n_written)
    white = pipe.whitening.w @ (recent - recent.mean(axis=1, keepdims=True))
    cov = white @ white.T / white.shape[1]
    # average reference removes one dimension; the rest is ~white
    eig = np.sort(np.linalg.eigvalsh(cov))[1:]
    assert 0.3 < np.median(eig) < 3.0
