"""SI units end to end, live side: sources say their units, recordings keep them, and the engine
names a unit mistake (once) when the stream's scale is off the bundle's. Real LSL streams."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from neuralign.bundle import load_bundle
from neuralign.cli.report import health_text
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.recorder import Recorder, read_recording
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.realtime.subscriptions import recent
from neuralign.units import implausible_unit
from tests.realtime.faults import Sender, now, raw_events, tiny_raw, wait_until

SFREQ = 500.0


def _run(bundle, raw, unit: str | None, factor: float, units: str | None = None) -> Engine:
    """Send ``raw`` x ``factor`` on a stream declaring ``unit`` through an engine (``units``:
    its --units) until every epoch is decoded; returns the stopped engine."""
    sender = Sender(raw.ch_names, SFREQ, unit=unit)
    src = LSLSource(source_id=sender.sid, timeout=10, units=units,
                    markers=LSLMarkerInlet(source_id=sender.marker_sid, timeout=10))
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10), publish_lsl=False)
    engine.start()
    events = raw_events(raw)
    try:
        sender.wait_for_consumers()
        data = raw.get_data() * factor
        sender.send(data, now() + 0.1 + np.arange(raw.n_times) / SFREQ, events, speed=4)
        fits = [e for e in events if e[0] + 1.1 * SFREQ < raw.n_times]  # epoch inside the data
        assert engine.wait_for(len(fits), timeout=30), engine.status()
    finally:
        engine.stop()
    assert engine.error is None
    return engine


def _ratios(engine: Engine) -> tuple[float | None, float | None]:
    return engine.pipeline.scale_check.filtered_ratio, engine.scale_check.epoch_ratio


def test_bad_units_microvolts_declared_as_volts_are_named_once(tiny_bundle, caplog):
    """The stream's values are 1e6 x the bundle's: microvolts sent as 'volts'. The rail guard
    trips on every sample (so only the raw-fed start check can see the scale)."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 6.0)
    with caplog.at_level(logging.WARNING):
        engine = _run(bundle, raw, "volts", 1e6)
    h = engine.status()["health"]
    warning = h["unit_warning"]
    assert "microvolts declared as volts" in warning and "--units uV" in warning, warning
    assert h["railed_samples"] > 0
    assert 1e5 < _ratios(engine)[0] < 1e7
    logged = [r for r in caplog.records if r.getMessage().startswith("units:")]
    assert len(logged) == 1  # once, whichever check found it
    assert all(r.health["unit_warning"] == warning for r in recent(engine)[-3:])
    assert "UNITS: " in health_text(engine.status())


def test_bad_units_bundle_trained_on_microvolts_is_named(tiny_bundle):
    """The stream is 1e-6 x the bundle's scale, what a bundle trained on an unconverted
    microvolt recording meets live: both checks see it, one message names it."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    engine = _run(bundle, tiny_raw(data_dir, 6.0), "volts", 1e-6)
    warning = engine.status()["health"]["unit_warning"]
    assert "trained on microvolts kept as volts" in warning, warning
    assert "dataset.recording.units: uV" in warning
    filtered, epochs = _ratios(engine)
    assert 1e-7 < filtered < 1e-5 and 1e-7 < epochs < 1e-5


def test_bad_units_declared_microvolts_match_volts_without_warning(tiny_bundle):
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 6.0)
    ref = _run(bundle, raw, "volts", 1.0)
    uv = _run(bundle, raw, "microvolts", 1e6)
    for engine in (ref, uv):
        assert engine.status()["health"]["unit_warning"] == ""
        filtered, epochs = _ratios(engine)
        assert 1 / 3 < filtered < 3 and 1 / 3 < epochs < 3  # the checks ran, and agree
        assert "UNITS" not in health_text(engine.status())
    assert [r.marker for r in recent(uv)] == [r.marker for r in recent(ref)]
    assert [r.topk_ids for r in recent(uv)] == [r.topk_ids for r in recent(ref)]
    np.testing.assert_allclose([r.topk_scores for r in recent(uv)],
                               [r.topk_scores for r in recent(ref)], atol=1e-4)


def test_recording_from_a_microvolt_stream_keeps_its_unit_and_reads_volts(tiny_sim, tmp_path):
    raw = tiny_raw(tiny_sim[2], 2.0)
    data = raw.get_data()
    sender = Sender(raw.ch_names, SFREQ, unit="microvolts", markers=False)
    src = LSLSource(source_id=sender.sid, timeout=10)
    desc = src.open()
    assert desc.units == ["microvolts"] * len(raw.ch_names)
    assert desc.scales == [1e-6] * len(raw.ch_names)
    rec = Recorder.for_stream(tmp_path / "rec", desc, export_fif=False)
    src.start()
    try:
        sender.wait_for_consumers()
        sender.send(data * 1e6, now() + np.arange(data.shape[1]) / SFREQ, speed=20)
        assert wait_until(lambda: src.buffer.n_written == data.shape[1], 10)
        rec.write_samples(*src.buffer.read(0, data.shape[1]))
    finally:
        src.stop()
        rec.close()
    got, _, _, _, header = read_recording(tmp_path / "rec")
    assert header["units"] == ["V"] * len(raw.ch_names)
    assert header["stream_units"] == ["microvolts"] * len(raw.ch_names)
    assert header["stream_scales"] == [1e-6] * len(raw.ch_names)
    np.testing.assert_allclose(got, data, rtol=1e-5, atol=1e-12)
    # the stream's own values are recoverable from the header
    stream = got / np.asarray(header["stream_scales"])[:, None]
    np.testing.assert_allclose(stream, data * 1e6, rtol=1e-5, atol=1e-6)


def test_brainflow_board_says_microvolts_and_delivers_volts():
    from neuralign.realtime.sources.brainflow import UV_TO_V, BrainFlowSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brainflow imports pkg_resources
        src = BrainFlowSource("synthetic", buffer_seconds=10.0)
        desc = src.open()
    n_ch = len(desc.ch_names)
    assert desc.units == ["microvolts"] * n_ch and desc.scales == [UV_TO_V] * n_ch
    src.start()
    try:
        assert wait_until(lambda: src.buffer.n_written > 250, 10)
        data, _ = src.buffer.read(0, 250)
    finally:
        src.stop()
    assert implausible_unit(data, desc.ch_types, window=125) is None  # volts
    assert "microvolts" in implausible_unit(data / UV_TO_V, desc.ch_types, window=125)  # sent
