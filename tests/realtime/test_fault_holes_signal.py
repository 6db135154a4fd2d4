"""Signal-side holes: --fill-missing under whitening, one huge finite value on MEG / MUA streams,
null scores on the result stream, and pickled .npy files handed to replay or a loader."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from neuralign.bundle import NoiseNormalizationSection, load_bundle
from neuralign.config import RealtimeConfig
from neuralign.errors import DataError
from neuralign.offline.loaders.things_eeg2 import load_published_dict
from neuralign.realtime.decisions import Result, ResultBuilder, RunningAccuracy
from neuralign.realtime.engine import Engine
from neuralign.realtime.epocher import Epocher, EpochWindow
from neuralign.realtime.inference import Decoder
from neuralign.realtime.pipeline import Pipeline
from neuralign.realtime.ringbuffer import RingBuffer
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.signal.whitening import Whitening, inverse_sqrt
from tests.realtime.faults import ResultReader, Sender, now, raw_events, tiny_raw

SFREQ = 500.0
OCCIPITAL = ("O1", "Oz", "O2")


def _push_all(pipes_and_data, ts: np.ndarray, chunk: int = 50) -> None:
    for a in range(0, len(ts), chunk):
        for pipe, x in pipes_and_data:
            pipe.push(x[:, a:a + chunk], ts[a:a + chunk])


def _decode(bundle, decoder, x, ts, events, keep=None, pipe_kw=None):
    """Epochs of ``events`` through a real Pipeline + Epocher (only the ``keep`` channels in the
    stream, --fill-missing), decided by a real ResultBuilder: (pipeline, epochs, results)."""
    keep = list(range(x.shape[0])) if keep is None else keep
    names = bundle.ch_names
    pipe = Pipeline(bundle, [names[i] for i in keep], SFREQ, fill_missing=len(keep) < len(names),
                    **(pipe_kw or {}))
    inputs = RingBuffer(len(keep), x.shape[1] + 10)
    epo = Epocher(pipe.output, EpochWindow.for_signal(bundle.manifest.epoch, pipe.output), inputs,
                  health=pipe.health)
    for s, label in events:
        epo.add_onset(label, s, ts[s])
    eps = []
    for a in range(0, x.shape[1], 25):
        inputs.write(x[keep, a:a + 25].astype(np.float32), ts[a:a + 25])
        pipe.push(x[keep, a:a + 25], ts[a:a + 25])
        eps += epo.ready_epochs()
    return pipe, eps, ResultBuilder(decoder, pipe.missing).build(eps)


# ---- --fill-missing and whitening -------------------------------------------------------------
def test_fault_fill_missing_whitens_the_present_channels_on_their_own(tiny_bundle):
    """The zero rows of the missing channels went through the full W, whose off-diagonal terms
    mixed them into every present channel: the present channels must be whitened as a bundle
    fitted on them alone would, the missing rows left at 0."""
    from neuralign.offline.mvnn import NoiseNormalizer

    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    train = load_published_dict(data_dir / "preprocessed_eeg_training.npy",
                                ["preprocessed_eeg_data"])["preprocessed_eeg_data"]
    # the bundle's MVNN refitted on every training epoch, so the reference uses the same rows
    bundle.manifest.noise_normalization = NoiseNormalizationSection(
        **NoiseNormalizer.fit(train).to_dict())
    names = bundle.ch_names
    keep = [i for i, n in enumerate(names) if n not in OCCIPITAL]
    missing = [names.index(n) for n in OCCIPITAL]
    # what a bundle fitted on the present channels gives: MVNN on their training epochs,
    # re-referenced to their own average as the pipeline re-references them live
    sub = train[:, :, keep]
    fitted_on_present = NoiseNormalizer.fit(sub - sub.mean(axis=2, keepdims=True))

    raw = tiny_raw(data_dir)
    x, ts = raw.get_data(), raw.times
    full = Pipeline(bundle, names, SFREQ)
    part = Pipeline(bundle, [names[i] for i in keep], SFREQ, fill_missing=True)
    _push_all([(full, x), (part, x[keep])], ts)
    n = full.processed.n_written
    got, _ = part.processed.read(n - 1500, n)
    ref, _ = full.processed.read(n - 1500, n)
    got = got - got.mean(axis=1, keepdims=True)  # a baseline, as every epoch gets
    ref = ref - ref.mean(axis=1, keepdims=True)

    z = part.normalize(got)
    assert np.all(z[missing] == 0)  # the neutral value the model's reconstruction fills in
    want = fitted_on_present.apply(got[keep])
    rel = np.linalg.norm(z[keep] - want) / np.linalg.norm(want)
    full_w = full.normalize(ref)[keep]
    dev_new = float(np.median(np.abs(z[keep] - full_w)))
    dev_old = float(np.median(np.abs((full.whitening.w @ got)[keep] - full_w)))  # zeros via W
    assert rel < 0.03, rel  # measured 0.009 (the zeros through the full W: 0.43)
    assert dev_new < 0.5 * dev_old, (dev_new, dev_old)  # measured 0.016 vs 0.046 whitened units


def test_fault_restricted_whitening_is_right_for_every_method():
    """MVNN: the present block of the implied covariance, whitened (identity covariance on the
    recentred data); z-score: the present channels' own scale, the missing rows 0, not -mean/sd."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((6, 6))
    sigma = a @ a.T + 0.5 * np.eye(6)
    p = [0, 2, 3, 5]
    white = Whitening(w=inverse_sqrt(sigma, 1e-9), method="mvnn", mean=np.zeros(6),
                      extra={"eigenvalue_floor": 1e-9})
    r = white.restricted(p).w
    np.testing.assert_allclose(r[np.ix_(p, p)], inverse_sqrt(sigma[np.ix_(p, p)], 1e-9),
                               rtol=1e-6, atol=1e-9)
    assert not r[[1, 4]].any() and not r[:, [1, 4]].any()
    c = np.eye(4) - 0.25  # present channels re-referenced to their own average
    rc = white.restricted(p, recentred=True).w[np.ix_(p, p)]
    np.testing.assert_allclose(rc @ (c @ sigma[np.ix_(p, p)] @ c) @ rc.T, c, atol=1e-9)

    mean, std = rng.standard_normal(6), rng.uniform(0.5, 2.0, 6)
    z = Whitening(w=np.diag(1 / std), method="zscore", mean=mean)
    x = rng.standard_normal((6, 20))
    x[[1, 4]] = 0.0  # what --fill-missing puts in the missing rows
    out = z.restricted(p).apply(x)
    np.testing.assert_allclose(out[p], (x[p] - mean[p, None]) / std[p, None], rtol=1e-6)
    assert not out[[1, 4]].any() and z.apply(x)[[1, 4]].any()


def test_fault_fill_missing_decodes_far_above_chance(tiny_bundle, tmp_path):
    """Three occipital channels missing: decoding stays where it is with all channels.

    The tiny bundle's model retrieves at chance with its own template bank (two training
    epochs), so the bank here is the model's embeddings of each image's average full-channel
    epoch over its first presentations in a clean session of the same simulated head; the later
    presentations are decoded, with all channels and with O1/Oz/O2 missing."""
    from neuralign.offline.simulator import simulate
    from tests.conftest import tiny_config

    bundle_dir, _ = tiny_bundle
    bundle = load_bundle(bundle_dir)
    cfg, _ = tiny_config(tmp_path, ["dataset.simulation.snr=5", "dataset.simulation.soa=0.6",
                                    "dataset.simulation.test_repetitions=8"])
    simulate(cfg.dataset.simulation, tmp_path / "data", preprocessing=cfg.preprocessing)
    raw = tiny_raw(tmp_path / "data")
    x, ts, events = raw.get_data(), raw.times, raw_events(raw)
    decoder = Decoder(bundle, 8, 5, "cpu")
    _, full_eps, _ = _decode(bundle, decoder, x, ts, events)
    by_image: dict[str, list] = {}
    for ep in full_eps:
        by_image.setdefault(ep.label, []).append(ep)
    ids = sorted(by_image)
    avg = np.stack([np.mean([e.data for e in by_image[i][:4]], axis=0) for i in ids])
    decoder.template_ids = ids
    decoder.bank = decoder.bank.new_tensor(np.stack(
        [d.embedding for d in decoder.decode_all(list(avg))]))
    later = {(e.label, e.onset_index) for i in ids for e in by_image[i][4:]}
    names = bundle.ch_names
    keep = [i for i, n in enumerate(names) if n not in OCCIPITAL]

    def top1(keep_channels) -> float:
        _, eps, res = _decode(bundle, decoder, x, ts, events, keep_channels)
        res = [r for e, r in zip(eps, res) if (e.label, e.onset_index) in later]
        assert len(res) == 24
        return RunningAccuracy(ids).extend(res).summary()["top1"]

    chance = 1 / len(ids)
    all_channels, without = top1(None), top1(keep)
    # measured 0.71 and 0.71 (chance 0.17; the zeros through the full W: 0.46)
    assert all_channels >= 3 * chance and without >= 3 * chance, (all_channels, without)
    assert without >= all_channels - 0.1, (all_channels, without)


# ---- one huge finite value on MEG / MUA streams ------------------------------------------------
@pytest.mark.parametrize("modality, ch_type, scale, offset, spikes", [
    # 1e30 beyond the magnetometer ceiling; 5e-8 T under it but 2e4 x the channel's magnitude
    ("meg", "mag", 1e-7, 0.0, {1000: 1e30, 2500: 5e-8}),
    # MUA in spikes/s: no physical ceiling, only the channel's own magnitude tells
    ("mua", "misc", 1e6, 20.0, {1000: 1e30}),
])
def test_fault_huge_value_on_meg_and_mua_streams_is_held_and_flagged(tiny_bundle, modality,
                                                                     ch_type, scale, offset,
                                                                     spikes):
    """One 1e30 sample on an MEG or MUA stream kept every channel over 100x its amplitude for
    minutes (IIR state + average reference): these modalities had no rail."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    bundle.manifest.modality = modality
    bundle.manifest.channels.types = [ch_type] * len(bundle.ch_names)
    raw = tiny_raw(data_dir)
    x, ts, events = raw.get_data() * scale + offset, raw.times, raw_events(raw)
    cfg = RealtimeConfig()
    guarded = {"rail": cfg.rail_volts, "spike_limit": cfg.spike_limit}  # as the engine builds it
    decoder = Decoder(bundle, 8, 5, "cpu")

    # clean data: not one sample touched (parity), nothing flagged
    bare = Pipeline(bundle, bundle.ch_names, SFREQ)
    clean_pipe, clean_eps, _ = _decode(bundle, decoder, x, ts, events, pipe_kw=guarded)
    _push_all([(bare, x)], ts, chunk=25)
    n = bare.processed.n_written
    clean = clean_pipe.processed.read(0, n)[0]
    assert np.array_equal(clean, bare.processed.read(0, n)[0])
    assert clean_pipe.health.railed_samples == 0 and not any(e.flags for e in clean_eps)

    spiked = x.copy()
    for k, v in spikes.items():
        spiked[7, k] = v
    pipe, eps, results = _decode(bundle, decoder, spiked, ts, events, pipe_kw=guarded)
    assert pipe.health.railed_samples == len(spikes)
    for e in eps:
        first = (int(np.floor(e.onset_index / 2 + 0.5)) - 50) * 2  # -0.2 s at 250 Hz, q = 2
        touches = any(first <= k <= e.last_input_index for k in spikes)
        assert (e.flags == ["bad_samples"]) == touches, (e.onset_index, e.flags)
    assert any(e.flags for e in eps) and not all(e.flags for e in eps)
    for r in results:
        assert all(math.isfinite(s) for s in r.topk_scores), r
    # one epoch window (1.2 s of input, 300 processed samples) after the last spike, every
    # channel's amplitude is what it is without it
    out = pipe.processed.read(0, n)[0]
    after = max(spikes) // 2 + 300
    assert np.isfinite(out).all()
    ratio = out[:, after:].std(axis=1) / clean[:, after:].std(axis=1)
    assert np.all(np.abs(ratio - 1) < 0.01), ratio.min()


def test_fault_sample_guard_limits_each_channel_by_its_own_magnitude():
    """Clean chunks come back as the very array (parity); 2e4 x a channel's magnitude is held,
    5e3 x is not; a channel stuck at an absurd value stays held (held values never teach it)."""
    from neuralign.signal.guard import SampleGuard

    rng = np.random.default_rng(5)
    scale = np.array([1.0, 100.0, 1e-12])[:, None]
    guard = SampleGuard(3, spike_limit=1e4, learn=256)
    for _ in range(16):
        x = rng.standard_normal((3, 16)) * scale
        y, rep = guard.apply(x)
        assert y is x and not rep.bad.any()
    x = rng.standard_normal((3, 16)) * scale
    x[0, 3] = 5e3  # 5e3 x channel 0's magnitude: a big artefact, kept
    x[1, 5] = 2e4 * 100 * 1.7  # 2e4 x channel 1's: held
    y, rep = guard.apply(x)
    assert rep.n_railed == 1 and np.flatnonzero(rep.bad).tolist() == [5]
    assert y[0, 3] == 5e3 and y[1, 5] == y[1, 4]
    for _ in range(50):
        x = rng.standard_normal((3, 16)) * scale
        x[2] = 1e30
        y, rep = guard.apply(x)
        assert rep.n_railed == 16 and np.all(np.abs(y[2]) < 1e-9)


def test_fault_huge_value_on_an_meg_stream_through_the_engine(tiny_bundle):
    """The engine gives MEG streams the guard too (it used to pass no rail beyond EEG)."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    bundle.manifest.modality = "meg"
    bundle.manifest.channels.types = ["mag"] * len(bundle.ch_names)
    raw = tiny_raw(data_dir, 8.0)
    data = raw.get_data() * 1e-7  # teslas
    data[7, 1000] = 1e30  # beyond any magnetometer
    data[20, 2500] = 5e-8  # under the ceiling, 2e4 x the channel's magnitude (spike_limit)
    sender = Sender(raw.ch_names, SFREQ, unit="T", ch_type="mag")
    src = LSLSource(source_id=sender.sid, timeout=10,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10))
    rsid = uuid.uuid4().hex
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10),
                    result_source_id=rsid)
    engine.start()
    try:
        reader = ResultReader(rsid)
        sender.wait_for_consumers()
        t0 = now() + 0.1
        events = raw_events(raw)
        sender.send(data, t0 + np.arange(data.shape[1]) / SFREQ, events, speed=4)
        got = reader.read(len(events), timeout=30, idle=5)  # strict JSON
    finally:
        engine.stop()
    assert engine.error is None and len(got) == len(events)
    assert engine.health.railed_samples == 2
    assert all(s is not None and math.isfinite(s) for r in got for s in r["topk_scores"])
    flagged = [r for r in got if r.get("flags") == ["bad_samples"]]
    assert 0 < len(flagged) < len(got)


# ---- null scores on the wire ------------------------------------------------------------------
def test_fault_null_score_reads_back_as_nan():
    """Strict JSON carries a non-finite score as null; reading it back raised, so every reader
    (the viewer's LSL feed) dropped that result."""
    r = Result(epoch_id=3, marker="img1", marker_timestamp=1.0, last_sample_timestamp=2.0,
               n_repetitions=2, topk_ids=["img1", "img2"], topk_scores=[float("nan"), 0.5],
               avg_topk_ids=["img2", "img1"], avg_topk_scores=[0.25, float("inf")])
    text = r.to_json()
    assert "null" in text and "NaN" not in text
    back = Result.from_json(text)
    assert back.topk_ids == ["img1", "img2"] and back.epoch_id == 3
    assert math.isnan(back.topk_scores[0]) and back.topk_scores[1] == 0.5
    assert back.avg_topk_scores[0] == 0.25 and math.isnan(back.avg_topk_scores[1])


def test_fault_viewer_shows_a_result_with_a_null_score(qtbot, tiny_bundle):
    """Over LSL (the JSON's null) and in process (a NaN score): shown, the score as n/a."""
    from neuralign.realtime.outputs import ResultOutlet
    from neuralign.ui.feeds import LSLResultFeed
    from neuralign.ui.panels.stimulus import StimulusPanel
    from neuralign.ui.viewer import ViewerWindow

    bundle = load_bundle(tiny_bundle[0])
    ids = bundle.template_ids
    r = Result(epoch_id=7, marker=ids[0], marker_timestamp=1.0, last_sample_timestamp=2.0,
               n_repetitions=1, topk_ids=ids[:3], topk_scores=[float("nan"), 0.4, 0.3])

    panel = StimulusPanel(ids, bundle.thumbnails, k=3)
    qtbot.addWidget(panel)
    assert panel.show_result(r)
    assert panel.topk_tiles[0].text.text().endswith("n/a")
    assert panel.topk_tiles[1].text.text().endswith("0.400")

    name = f"test-null-{uuid.uuid4().hex[:8]}"
    outlet = ResultOutlet(name)
    feed = LSLResultFeed(name, bundle, source_id=outlet.source_id, timeout=10)
    win = ViewerWindow(feed)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(outlet.have_consumers, timeout=10_000)

    def shown() -> bool:
        if win.state.n_results == 0:
            outlet.publish(r)  # until the inlet is subscribed
        return win.stimulus.shown is not None

    qtbot.waitUntil(shown, timeout=15_000)
    assert win.state.latest.epoch_id == 7 and math.isnan(win.state.latest.topk_scores[0])
    assert win.stimulus.displayed_ids()[:3] == ids[:3]
    assert win.stimulus.topk_tiles[0].text.text().endswith("n/a")
    win.close()


# ---- pickled .npy files ------------------------------------------------------------------------
class _WritesMarker:
    """Unpickling this creates a file: what any code in a crafted pickle could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path, marker, as_dict: bool = True):
    payload = _WritesMarker(marker)
    obj = {"preprocessed_eeg_data": payload, "raw_eeg_data": payload, "ch_names": ["a"],
           "times": payload} if as_dict else [payload]
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    return path


def test_bad_pickled_npy_is_refused_by_replay_and_every_loader(tmp_path):
    from neuralign.offline.feature_files import load_features
    from neuralign.offline.generative.paired import load_paired_npz
    from neuralign.offline.loaders.things_eeg2 import load_things_eeg2_preprocessed
    from neuralign.offline.timelines import load_timeline

    marker = tmp_path / "code_ran"
    # replay (its THINGS-EEG2 names go through the data-only unpickler), the THINGS loader
    for name in ("preprocessed_eeg_test.npy", "raw_eeg_test.npy"):
        p = _crafted(tmp_path / name, marker)
        with pytest.raises(DataError, match=rf"{name}: refused: it names .*open"):
            load_timeline(p)
    _crafted(tmp_path / "preprocessed_eeg_training.npy", marker)
    with pytest.raises(DataError, match="preprocessed_eeg_training.npy: refused"):
        load_things_eeg2_preprocessed(tmp_path)
    with pytest.raises(DataError, match="evil.npy"):
        load_timeline(_crafted(tmp_path / "evil.npy", marker))
    # everything else never unpickles
    nice = tmp_path / "nice"
    nice.mkdir()
    _crafted(nice / "clip_feature_maps_training.npy", marker, as_dict=False)
    with pytest.raises(DataError, match="clip_feature_maps_training.npy: this feature file "
                                        "holds pickled Python objects"):
        load_features(nice, ordered_ids=["a"])
    np.savez(tmp_path / "feats.npz", features=np.ones((1, 2)),
             image_ids=np.array([_WritesMarker(marker)], dtype=object))
    with pytest.raises(DataError, match="feats.npz: this feature file holds pickled"):
        load_features(tmp_path / "feats.npz")
    np.savez(tmp_path / "paired.npz", train_images=np.array([_WritesMarker(marker)], object))
    with pytest.raises(DataError, match="paired.npz: this paired data file holds pickled"):
        load_paired_npz(tmp_path / "paired.npz")
    assert not marker.exists()

    # `neuralign replay` as a user runs it: one line naming the file, exit 2
    out = subprocess.run([sys.executable, "-m", "neuralign", "replay",
                          str(tmp_path / "preprocessed_eeg_test.npy")],
                         capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "preprocessed_eeg_test.npy: refused" in out.stderr
    assert not marker.exists()


def test_bad_pickle_check_still_reads_the_published_dict_files(tiny_sim, tmp_path):
    """The data-only unpickler reads THINGS-EEG2 dicts, also as numpy 1.x pickled them."""
    import io
    import pickle

    data = tiny_sim[2]
    d = load_published_dict(data / "preprocessed_eeg_test.npy", ["preprocessed_eeg_data"])
    assert d["preprocessed_eeg_data"].ndim == 4 and isinstance(d["ch_names"], list)
    raw = {"raw_eeg_data": np.ones((2, 5)), "ch_names": ["Oz", "stim"],
           "ch_types": ["eeg", "stim"], "sfreq": np.float64(1000.0), "highpass": 0.01}
    arr = np.array(raw, dtype=object)
    for protocol in (2, 3):  # numpy 1.x wrote numpy.core... globals
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
        body = pickle.dumps(arr, protocol=protocol).replace(b"numpy._core", b"numpy.core")
        (tmp_path / "raw_eeg_training.npy").write_bytes(buf.getvalue() + body)
        got = load_published_dict(tmp_path / "raw_eeg_training.npy", ["raw_eeg_data", "sfreq"])
        assert got["sfreq"] == 1000.0 and got["raw_eeg_data"].shape == (2, 5)
