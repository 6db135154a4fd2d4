"""The lab day with a microvolt amplifier whose app stamps each chunk when it pushes it.

Block 1 reaches neuralign either as a ``neuralign run --record`` directory or as an XDF file laid
out as LabRecorder writes it (channels declared in microvolts, the amplifier and the stimulus PC
on different clocks with ClockOffset chunks, jittered chunk stamps). neuralign trains on it;
block 2 is then decoded live from the same microvolt stream and recorded, and every live decision
must equal the offline decision on that recording, trial by trial.
"""

from __future__ import annotations

import json
import threading
import uuid

import mne
import numpy as np
import pytest

from neuralign.bundle import load_bundle
from neuralign.cli import main
from neuralign.offline.single_trial import decode_continuous
from neuralign.realtime.replay import LSLReplayer, get_profile, plan_schedule
from neuralign.recording_format import read_clock_log, read_recording, recorded_clock
from tests.conftest import FAST_TRAIN
from tests.lab_blocks import make_lab_blocks
from tests.offline.xdf_writer import XdfStream, write_xdf

AMP = get_profile("wired-1khz").without_losses()  # chunk_push stamps, 0.3 ms jitter


def _stream(raw, name: str, seed: int) -> LSLReplayer:
    """The amplifier app: microvolts, each chunk stamped at its push."""
    return LSLReplayer.from_raw(raw, name=name, source_id=uuid.uuid4().hex, unit="uV",
                                marker_name=f"{name}-stim", timing=AMP, timing_seed=seed,
                                wait_for_consumers=30.0)


def _run(bundle, rep: LSLReplayer, record, n_epochs: int, *extra: str) -> None:
    rep.start()
    try:
        assert main(["run", "--bundle", str(bundle), "--source", f"lsl:{rep.name}",
                     "--markers", f"lsl:{rep.marker_name}", "--record", str(record),
                     "--headless", "--n-epochs", str(n_epochs), "--status-every", "30",
                     *extra]) == 0
    finally:
        rep.stop()


def _train(data_arg, data_dir, blocks, out) -> None:
    sets = [f"--set={s}" for s in FAST_TRAIN + ["model.dropout=0.0"]]
    assert main(["train", "--config", "lab", "--data", str(data_arg),
                 "--images", str(data_dir / "image_set"),
                 "--set", f"dataset.recording.split.test_file={blocks['test_ids']}",
                 *sets, "--out", str(out / "run")]) == 0
    assert main(["export", "--run", str(out / "run"), "--out", str(out / "bundle")]) == 0


def _block2_live_equals_offline(bundle_dir, blocks, tmp_path) -> None:
    raw2 = mne.io.read_raw_fif(blocks["block2"], preload=True, verbose="error")
    _run(bundle_dir, _stream(raw2, f"amp2-{uuid.uuid4().hex[:6]}", 2), tmp_path / "block2", 12)
    data, ts, events, results, header = read_recording(tmp_path / "block2")
    assert header["complete"] and header["stream_units"][0].lower() in ("uv", "microvolts")
    # the recording holds volts: the microvolt stream was converted on the way in
    assert 1e-7 < float(np.median(np.abs(data))) < 1e-3
    bundle = load_bundle(bundle_dir)
    rows = [header["ch_names"].index(c) for c in bundle.ch_names]
    placed, breaks = recorded_clock(ts, events, header["sfreq"], read_clock_log(
        tmp_path / "block2"))
    offline = decode_continuous(bundle, data[rows].astype(np.float64), header["sfreq"],
                                [k for k, _ in placed], [v for _, v in placed], breaks=breaks)
    online = sorted(results, key=lambda r: r["marker_timestamp"])
    assert len(online) == len(offline) == 12
    assert [r["marker"] for r in online] == [o["marker"] for o in offline]
    for r, o in zip(online, offline):
        tie = abs(o["topk_scores"][0] - o["topk_scores"][1]) < 1e-4
        assert r["topk_ids"][0] == o["topk_ids"][0] or tie, (r, o)
        np.testing.assert_allclose(r["topk_scores"][0], o["topk_scores"][0], atol=1e-3)
        assert not r["health"].get("unit_warning"), r["health"]


def _same_epochs_as_the_volts_file(block1, blocks, data_dir) -> None:
    """What neuralign trained on is block 1 as the FIF holds it, in volts, on the same samples:
    the microvolts were converted and the jittered stamps put every marker on its sample."""
    from neuralign.config import load_config
    from neuralign.offline.loaders.recording import load_recording_dataset

    cfg = load_config("lab", [f"dataset.recording.images={data_dir / 'image_set'}",
                              f"dataset.recording.split.test_file={blocks['test_ids']}"])
    got = load_recording_dataset(cfg, [block1])
    ref = load_recording_dataset(cfg, [blocks["block1"]])
    for a, b in ((got.train.data, ref.train.data), (got.test.data, ref.test.data)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


@pytest.mark.slow
def test_lab_day_microvolt_amplifier_through_a_recording(tiny_sim, tiny_bundle, tmp_path):
    _, _, data = tiny_sim
    other_subject_bundle, _ = tiny_bundle
    blocks = make_lab_blocks(data, tmp_path / "blocks", test_reps_in_block1=2)
    raw1 = mne.io.read_raw_fif(blocks["block1"], preload=True, verbose="error")
    n_stim = sum(not d.startswith(("BAD", "EDGE")) for d in raw1.annotations.description)
    _run(other_subject_bundle, _stream(raw1, f"amp1-{uuid.uuid4().hex[:6]}", 1),
         tmp_path / "block1", n_stim, "--set", "realtime.decode_markers=all")
    header = json.loads((tmp_path / "block1" / "header.json").read_text())
    assert header["complete"] and header["n_events"] == n_stim
    _same_epochs_as_the_volts_file(tmp_path / "block1", blocks, data)
    _train(tmp_path / "block1", data, blocks, tmp_path)
    _block2_live_equals_offline(tmp_path / "bundle", blocks, tmp_path)


@pytest.mark.slow
def test_lab_day_microvolt_amplifier_through_labrecorder_xdf(tiny_sim, tmp_path):
    _, _, data = tiny_sim
    blocks = make_lab_blocks(data, tmp_path / "blocks", test_reps_in_block1=2)
    raw1 = mne.io.read_raw_fif(blocks["block1"], preload=True, verbose="error")
    sfreq = raw1.info["sfreq"]
    x = raw1.get_data(picks="eeg")
    # the amplifier's own clock runs 1234.5 s behind the recorder's, the stimulus PC's 87.25 s
    # ahead; LabRecorder stores each stream on its own clock with ClockOffset chunks
    amp_offset, stim_offset = 1234.5, -87.25
    sched = plan_schedule(x.shape[1], sfreq, AMP, seed=4, t0=5000.0)
    stamps = sched.stamps - amp_offset  # chunk_push: the push time, back-computed, jittered
    assert np.any(np.diff(stamps) < 1.0 / sfreq - 1e-4)  # really jittered
    events = [(int(s), d) for s, d in zip(
        raw1.time_as_index(raw1.annotations.onset - raw1.first_time, use_rounding=True),
        raw1.annotations.description) if not d.startswith(("BAD", "EDGE"))]
    m_ts = np.array([sched.t_true[k] for k, _ in events]) - stim_offset
    span = np.arange(0.0, x.shape[1] / sfreq + 5, 5.0) + 5000.0
    xdf = write_xdf(tmp_path / "block1.xdf", [
        XdfStream("ActiChamp", "EEG", sfreq, "float32", stamps,
                  data=(x.T * 1e6).astype(np.float32),
                  channels=[(c, "EEG", "microvolts") for c in raw1.copy().pick("eeg").ch_names],
                  clock_offsets=[(t - amp_offset, amp_offset) for t in span]),
        XdfStream("PsychoPy", "Markers", 0.0, "string", m_ts, labels=[v for _, v in events],
                  clock_offsets=[(t - stim_offset, stim_offset) for t in span]),
    ])
    _same_epochs_as_the_volts_file(xdf, blocks, data)
    _train(xdf, data, blocks, tmp_path)
    _block2_live_equals_offline(tmp_path / "bundle", blocks, tmp_path)


def test_fault_marker_stream_behind_the_data_clock_is_reported(tiny_bundle):
    """A presenter stamping 0.5 s behind the data's clock: reported in health, not silent."""
    from neuralign.config import RealtimeConfig
    from neuralign.realtime.engine import Engine
    from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
    from tests.realtime.producers import ArrivalProducer

    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data_dir / "sim_test_raw.fif", preload=True, verbose="error")
    events = [(int(s), d) for s, d in zip(
        raw.time_as_index(raw.annotations.onset - raw.first_time, use_rounding=True),
        raw.annotations.description)]
    producer = ArrivalProducer(raw.get_data(picks=bundle.ch_names), raw.info["sfreq"],
                               bundle.ch_names, events, chunk=10, marker_lag_s=0.5)
    src = LSLSource(name=producer.name, timeout=10,
                    markers=LSLMarkerInlet(name=producer.marker_name, timeout=10))
    engine = Engine(bundle, src, RealtimeConfig(), publish_lsl=False)
    engine.start()
    try:
        producer.wait_for_consumers()
        producer.start()
        done = threading.Event()
        threading.Thread(target=lambda: (producer.join(), done.set()), daemon=True).start()
        done.wait(60)
        h = engine.health_snapshot()
    finally:
        engine.stop()
    assert h["marker_offset_ms"] == pytest.approx(500, abs=60), h
    assert "behind" in h["clock_warning"], h
    assert any("behind" in e for e in engine.source.health.events)
