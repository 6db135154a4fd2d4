"""Streams stamped the way device apps stamp them: each chunk when it is pushed.

A pylsl producer (not neuralign's replayer) pushes the simulated test session with
``push_chunk(data)`` and no stamps, so liblsl stamps the chunk's last sample with the push time;
the pushes jitter by a random scheduling delay. Every epoch whose samples all arrived must be
decoded, with the top-1 of offline decoding of the same samples; an epoch across a real gap must
be dropped and counted, and only those.
"""

from __future__ import annotations

import time

import mne
import numpy as np
import pytest

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.offline.single_trial import decode_recording
from neuralign.realtime.engine import Engine
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.realtime.subscriptions import recent
from neuralign.signal.events import stimulus_events
from tests.realtime.faults import wait_until
from tests.realtime.producers import ArrivalProducer


def _session(bundle, producer: ArrivalProducer, n_expected: int, **cfg) -> Engine:
    src = LSLSource(name=producer.name, timeout=10,
                    markers=LSLMarkerInlet(name=producer.marker_name, timeout=10))
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=10, **cfg),
                    publish_lsl=False)
    engine.start()
    try:
        producer.wait_for_consumers()
        producer.start()
        producer.join()
        wait_until(lambda: engine.n_decoded >= n_expected, 10)
        time.sleep(0.3)  # anything late would show now
    finally:
        engine.stop()
    assert engine.error is None
    return engine


def _offline(bundle, data_dir):
    raw = mne.io.read_raw_fif(data_dir / "sim_test_raw.fif", preload=True, verbose="error")
    offline = decode_recording(bundle, data_dir / "sim_test_raw.fif")
    return raw, offline


@pytest.mark.parametrize("chunk", [1, 10])
def test_arrival_stamped_chunks_decode_every_epoch_as_offline(tiny_bundle, chunk):
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw, offline = _offline(bundle, data_dir)
    events = stimulus_events(raw)
    producer = ArrivalProducer(raw.get_data(picks=bundle.ch_names), raw.info["sfreq"],
                               bundle.ch_names, events, chunk=chunk, jitter_s=0.001)
    engine = _session(bundle, producer, len(offline))
    online = {r.marker_timestamp: r for r in recent(engine)}
    st = engine.status()
    assert st["received"] == raw.n_times, st  # every sample arrived ...
    assert st["health"]["gap_epochs_dropped"] == 0, st  # ... so no epoch spans a gap
    assert st["gaps"] == 0 and st["dropped"] == 0, st
    assert len(online) >= 0.99 * len(offline), (len(online), len(offline), st)
    # the epochs are the offline ones: same top-1, scores within float error
    by_onset = {round(producer.report.t0 + o["onset_sample"] / raw.info["sfreq"], 6): o
                for o in offline}
    same = 0
    for t, r in online.items():
        o = by_onset[round(t, 6)]
        same += r.topk_ids[0] == o["topk_ids"][0]
        np.testing.assert_allclose(r.topk_scores[0], o["topk_scores"][0], atol=2e-3)
    assert same >= 0.99 * len(online), (same, len(online))
    # the stamps did jitter, and health says how much
    assert st["health"]["jitter_p99_ms"] > 0.05, st["health"]


def test_fault_one_real_gap_drops_exactly_the_epochs_across_it_and_restarts_the_filters(
        tiny_bundle):
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw, offline = _offline(bundle, data_dir)
    sfreq = raw.info["sfreq"]
    events = stimulus_events(raw)
    gap_start, gap_len = int(5.0 * sfreq), int(0.08 * sfreq)  # 80 ms never sent
    producer = ArrivalProducer(raw.get_data(picks=bundle.ch_names), sfreq, bundle.ch_names,
                               events, chunk=10, jitter_s=0.0005, drop=(gap_start, gap_len))
    engine = _session(bundle, producer, len(offline) - 10)
    st = engine.status()
    tmin, tmax = bundle.manifest.epoch.tmin, bundle.manifest.epoch.tmax
    base = bundle.manifest.epoch.baseline
    t_lo = min(tmin, base[0]) if base else tmin
    # the epochs whose window holds a sample that never came, and only those, are dropped
    across = [k for k, _ in events
              if k + t_lo * sfreq <= gap_start + gap_len - 1 and k + tmax * sfreq >= gap_start]
    assert across, "the gap must hit some epochs for this test to mean anything"
    assert st["health"]["gap_epochs_dropped"] == len(across), (st, across)
    assert st["gaps"] == 1 and st["dropped"] == gap_len, st
    # the causal chain restarted at the gap (settled on the first sample after it)
    assert st["health"]["filter_restarts"] == 1, st
    assert st["received"] == raw.n_times - gap_len
    assert engine.n_decoded == len(offline) - len(across), (engine.n_decoded, len(offline))


def test_fault_clock_sync_is_settable_from_the_cli():
    """--clock-sync reaches the data and the marker inlets (it could only be set in code)."""
    from neuralign.cli.common import config_from_args
    from neuralign.cli.online import RUN_FLAGS
    from neuralign.cli.parser import build_parser
    from neuralign.realtime.sources.factory import open_source

    args = build_parser().parse_args(["run", "--bundle", "B", "--source", "lsl:amp",
                                      "--markers", "lsl:stim", "--clock-sync", "lsl"])
    rt = config_from_args(args, RUN_FLAGS).realtime
    assert rt.clock_sync == "lsl"
    src = open_source(rt.source, rt.markers, rt)
    assert src.clock_sync == "lsl" and src.marker_inlet.clock_sync == "lsl"
    with pytest.raises(SystemExit):  # argparse: one line naming the choices, exit code 2
        build_parser().parse_args(["run", "--bundle", "B", "--clock-sync", "ntp"])
