"""Fault matrix, signal side (issue 11): NaN / Inf / railed samples, gaps, overruns,
--fill-missing and online re-whitening. Real LSL streams wherever a stream is involved."""

from __future__ import annotations

import uuid

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.pipeline import Pipeline
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from tests.realtime.faults import ResultReader, Sender, now, raw_events, tiny_raw, wait_until

SFREQ = 500.0


def _engine(bundle, sender: Sender, **cfg) -> tuple[Engine, str]:
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10))
    rsid = uuid.uuid4().hex
    return Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10, **cfg),
                  result_source_id=rsid), rsid


def _window(onset: int) -> tuple[int, int]:
    """First and last input sample of the tiny bundle's epoch (-0.2 .. 1.0 s, 250 Hz, q=2)."""
    first = (int(np.floor(onset / 2 + 0.5)) - 50) * 2
    return first, first + (300 - 1) * 2


def test_fault_non_finite_and_railed_samples_are_held_flagged_and_counted(tiny_bundle):
    """Defect 1: one NaN used to poison the chain for good (NaN scores, bare NaN in the JSON)."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    data = raw.get_data()
    bad = {1000: np.nan, 1250: np.inf, 1500: 5.0}  # NaN, Inf, a 5 V railed spike
    for k, v in bad.items():
        data[7, k] = v
    sender = Sender(raw.ch_names, SFREQ)
    engine, rsid = _engine(bundle, sender)
    engine.start()
    try:
        reader = ResultReader(rsid)
        sender.wait_for_consumers()
        t0 = now() + 0.1
        events = raw_events(raw)
        sender.send(data, t0 + np.arange(data.shape[1]) / SFREQ, events, speed=4)
        got = reader.read(len(events), timeout=30, idle=5)  # strict JSON: NaN would raise
    finally:
        engine.stop()
    assert engine.error is None
    assert len(got) == len(events) == engine.n_decoded
    h = engine.health
    assert (h.non_finite_samples, h.railed_samples) == (2, 1)
    n_flagged = 0
    for r in got:
        assert all(np.isfinite(r["topk_scores"])) and r["topk_scores"][0] > -1
        onset = int(round((r["marker_timestamp"] - t0) * SFREQ))
        first, last = _window(onset)
        touches = any(first <= k <= last for k in bad)
        assert (r.get("flags") == ["bad_samples"]) == touches, (onset, r.get("flags"))
        n_flagged += touches
        assert "health" in r and r["health"]["connected"] in (True, False)
    assert 0 < n_flagged < len(got) and h.flagged_epochs == n_flagged
    assert got[-1]["health"]["non_finite_samples"] == 2
    # after the bad stretch the decisions are the model's again, not a fixed top-k
    late = [r for r in got if r["marker_timestamp"] - t0 > 3.3]
    assert len({tuple(r["topk_ids"]) for r in late}) > 1


def test_fault_epochs_across_a_gap_are_dropped_and_counted(tiny_bundle):
    """Defect 3: after a 500 ms gap a 0-1 s epoch silently spanned 1.5 s of real time."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 8.0)
    data = raw.get_data()
    sender = Sender(raw.ch_names, SFREQ)
    engine, rsid = _engine(bundle, sender)
    engine.start()
    try:
        reader = ResultReader(rsid)
        sender.wait_for_consumers()
        t0 = now() + 0.1
        stamps = t0 + np.arange(data.shape[1]) / SFREQ
        stamps[1500:] += 0.5  # 500 ms with no samples at 3.0 s
        events = raw_events(raw)
        sender.send(data, stamps, events, speed=4)
        spanning = [s for s, _ in events if _window(s)[0] < 1500 <= _window(s)[1]]
        got = reader.read(len(events) - len(spanning), timeout=30, idle=5)
    finally:
        engine.stop()
    assert engine.error is None
    assert 0 < len(spanning) < len(events)
    assert engine.health.gap_epochs_dropped == len(spanning)
    assert len(got) == len(events) - len(spanning)
    for r in got:  # every decoded epoch is 1 s of contiguous time
        assert r["last_sample_timestamp"] - r["marker_timestamp"] < 1.0, r
    assert engine.status()["gaps"] >= 1


def test_fault_engine_overrun_keeps_indices_on_the_source_grid(tiny_bundle):
    """Defect 3: after a ring-buffer overrun the pipeline counted what it read, not the
    source's index, and every later epoch was misaligned."""
    bundle = load_bundle(tiny_bundle[0])
    pipe = Pipeline(bundle, bundle.ch_names, SFREQ)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((63, 301)) * 1e-6
    ts = 100.0 + np.arange(301) / SFREQ
    pipe.push(x[:, :101], ts[:101], start=0)
    pipe.push(x[:, 201:], ts[201:], start=201)  # samples 101..200 were overwritten unread
    assert pipe.n_in == 301 and pipe.chain.n_in == 301
    assert pipe.processed.n_written == 151  # input 300 -> processed 150, as on the source grid
    assert pipe.health.lost_samples == 100
    assert pipe.processed.gap_between(50, 101)  # epochs across the hole are dropped
    np.testing.assert_allclose(pipe.processed.timestamp_at(150), ts[300])


def test_fault_fill_missing_keeps_the_present_channels_as_trained(tiny_bundle):
    """Defect 6: zeros for the missing channels entered the average reference, so the present
    channels differed from what the model was trained on."""
    bundle = load_bundle(tiny_bundle[0])
    names = bundle.ch_names
    absent = ["O1", "Oz", "O2"]
    keep = [i for i, n in enumerate(names) if n not in absent]
    rng = np.random.default_rng(1)
    t = np.arange(5000) / SFREQ
    common = 50e-6 * np.sin(2 * np.pi * 10 * t)  # what every electrode shares
    x = common + 5e-6 * rng.standard_normal((63, len(t)))
    full = Pipeline(bundle, names, SFREQ)
    part = Pipeline(bundle, [names[i] for i in keep], SFREQ, fill_missing=True)
    for a in range(0, len(t), 50):
        full.push(x[:, a:a + 50], t[a:a + 50])
        part.push(x[keep, a:a + 50], t[a:a + 50])
    n = full.processed.n_written
    ref, _ = full.processed.read(n - 1000, n)
    got, _ = part.processed.read(n - 1000, n)
    present = [i for i in range(63) if names[i] not in absent]
    err = np.std(got[present] - ref[present]) / np.std(ref[present])
    assert err < 0.05, err


def test_fault_online_whitening_does_not_depend_on_the_chunk_size(tiny_bundle):
    """Defect 7: the covariance was centred per chunk (0.49x the truth at 10-sample chunks) and
    chunks of <= 4 samples gave a zero covariance that stopped the engine."""
    rng = np.random.default_rng(2)
    mix = rng.standard_normal((63, 63)) * 1e-6
    x = mix @ rng.standard_normal((63, 6000))
    ts = np.arange(6000) / SFREQ
    for chunk in (10, 3):
        bundle = load_bundle(tiny_bundle[0])
        bundle.manifest.preprocessing.noise_normalization.online_update = True
        bundle.manifest.preprocessing.noise_normalization.online_halflife_s = 4.0
        pipe = Pipeline(bundle, bundle.ch_names, SFREQ)
        for a in range(0, x.shape[1], chunk):
            pipe.push(x[:, a:a + chunk], ts[a:a + chunk])
        recent, _ = pipe.processed.read(pipe.processed.n_written - 1000,
                                        pipe.processed.n_written)
        white = pipe.whitening.w @ (recent - recent.mean(axis=1, keepdims=True))
        eig = np.sort(np.linalg.eigvalsh(white @ white.T / white.shape[1]))[1:]
        assert 0.75 < np.median(eig) < 1.33, (chunk, np.median(eig))


def test_fault_railed_epochs_can_be_dropped_instead_of_flagged(tiny_bundle):
    """realtime.bad_epochs: drop: the epochs that touch a bad sample are counted, not decoded."""
    from neuralign.realtime.epocher import Epocher, EpochWindow
    from neuralign.realtime.ringbuffer import RingBuffer

    bundle = load_bundle(tiny_bundle[0])
    pipe = Pipeline(bundle, bundle.ch_names, SFREQ, rail=0.5)
    inputs = RingBuffer(63, 15000)
    ep = Epocher(pipe.output, EpochWindow.for_signal(bundle.manifest.epoch, pipe.output), inputs,
                 sliding_hop_s=0.2, bad_epochs="drop", health=pipe.health)
    x = np.random.default_rng(3).standard_normal((63, 3000)) * 1e-5
    x[3, 1200] = 2.0  # railed
    ts = np.arange(3000) / SFREQ
    out = []
    for a in range(0, 3000, 25):
        inputs.write(x[:, a:a + 25].astype(np.float32), ts[a:a + 25])
        pipe.push(x[:, a:a + 25], ts[a:a + 25])
        out += ep.ready_epochs()
    assert pipe.health.railed_samples == 1 and pipe.health.bad_epochs_dropped > 0
    assert all(not e.flags for e in out)
    assert all(not (e.onset_index - 100 <= 1200 <= e.last_input_index) for e in out)
    assert wait_until(lambda: True, 0)
