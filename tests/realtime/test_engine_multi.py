"""One engine, several LSL streams: epochs of every stream batched together, each result naming
its stream, and each stream's decisions those of offline decoding of that stream."""

import uuid

import mne

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.offline.single_trial import decode_recording
from neuralign.realtime.decisions import Result
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import recent


def test_two_streams_in_one_engine_decode_like_offline(tiny_bundle):
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw_path = data / "sim_test_raw.fif"
    offline = decode_recording(bundle, raw_path)
    raw = mne.io.read_raw_fif(raw_path, preload=True, verbose="error")
    reps, srcs = [], []
    for i in range(2):
        sid = uuid.uuid4().hex
        rep = LSLReplayer.from_raw(raw, name=f"multi{i}-{sid[:6]}", source_id=sid,
                                   chunk_size=1 if i else 10, wait_for_consumers=20.0)
        reps.append(rep)
        srcs.append(replay_source(rep, timeout=10))
    # whole forward passes at each epoch's last sample, on the processing thread (early
    # encoding and inline passes are test_engine's)
    engine = Engine(bundle, srcs, RealtimeConfig(batch_size=8, max_wait_ms=20,
                                                 early_encoding=False, inline_pass=False),
                    publish_lsl=False)
    for rep in reps:
        rep.start()
    engine.start()
    try:
        assert engine.wait_for(2 * len(offline), timeout=60)
    finally:
        engine.stop()
        for rep in reps:
            rep.stop()
    assert engine.error is None
    names = sorted({r.stream for r in recent(engine)})
    assert len(names) == 2 and all(names)
    for name in names:
        mine = sorted((r for r in recent(engine) if r.stream == name),
                      key=lambda r: r.marker_timestamp)
        assert [r.marker for r in mine] == [o["marker"] for o in offline]
        for r, o in zip(mine, offline):
            if abs(o["topk_scores"][0] - o["topk_scores"][1]) > 1e-4:
                assert r.topk_ids[0] == o["topk_ids"][0]
        # repetitions are averaged within the stream: counts as if it were alone
        assert max(r.n_repetitions for r in mine) == max(
            sum(o["marker"] == m for o in offline) for m in {o["marker"] for o in offline})
    wire = Result.from_json(recent(engine)[0].to_json())
    assert wire.stream in names
    assert engine.status()["streams"][0]["lost_in_engine"] == 0
    # the model was touched before epochs were due (realtime.prewarm_ms), at most once each,
    # and the results above match offline all the same
    assert engine.early is None and engine.n_early_epochs == 0 and engine.n_inline_passes == 0
    assert 0 < engine.n_prewarms <= 2 * len(offline) + 1, (engine.n_prewarms, len(offline))


def test_single_stream_results_have_no_stream_key():
    r = Result(0, "a", 1.0, 2.0, 1, ["a"], [0.5])
    assert "stream" not in r.to_dict() and Result.from_dict(r.to_dict()).stream is None
