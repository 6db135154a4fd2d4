"""End to end, in one process: the presenter (closed loop, offscreen window) shows images; a
virtual subject watches its marker stream and streams simulated EEG; the engine decodes it with
the tiny bundle and publishes results; the presenter stops or repeats each image by them."""

import time
import uuid

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.offline.simulator.live import VirtualSubject
from neuralign.realtime.engine import Engine
from neuralign.realtime.sources.factory import open_source
from neuralign.ui.presenter.app import PresentOptions, run_presentation
from neuralign.ui.presenter.markers import MarkerOutlet
from neuralign.ui.presenter.sequence import Timing, find_images, folder_sequence


def test_present_virtual_subject_engine_present(qapp, tiny_sim, tiny_bundle, tmp_path):
    cfg, _, data = tiny_sim
    bundle_dir, _ = tiny_bundle
    bundle = load_bundle(bundle_dir)
    images = find_images(data / "image_set" / "test_images")  # the simulator's pictures
    ids = [i for i in bundle.template_ids if i in images][:6]
    assert len(ids) == 6
    trials = folder_sequence({i: images[i] for i in ids}, Timing(0.1, 0.2))
    tag = uuid.uuid4().hex[:8]
    outlet = MarkerOutlet(f"presenter-{tag}")
    rt = RealtimeConfig(batch_size=4, max_wait_ms=20, top_k=3,
                        result_stream_name=f"results-{tag}")
    with VirtualSubject(cfg.dataset.simulation, markers=f"presenter-{tag}",
                        name=f"virtual-{tag}", latency_s=0.05, seed=3, block_s=2.0) as subject:
        source = open_source(f"lsl:virtual-{tag}", f"lsl:presenter-{tag}", rt)
        engine = Engine(bundle, source, rt, device="cpu")
        results = engine.subscribe()
        engine.start()
        try:
            deadline = time.monotonic() + 5
            while not subject.marker_connected and time.monotonic() < deadline:
                time.sleep(0.01)
            opts = PresentOptions(log_path=tmp_path / "log.csv", windowed=True, size=(320, 240),
                                  timing="raster", refresh_hz=60.0, lead_in_s=0.5,
                                  closed_loop=True, results=f"lsl:results-{tag}",
                                  threshold=0.9, max_repetitions=3, result_timeout_s=3.0,
                                  wait_for_consumers_s=5, max_duration_s=25)
            t0 = time.monotonic()
            summary, rows = run_presentation(trials, opts, outlet=outlet)
            elapsed = time.monotonic() - t0
            time.sleep(0.3)
            got = results.drain()
        finally:
            engine.stop()
        assert engine.error is None and subject.error is None
    assert not summary.aborted and elapsed < 25
    shown = [(r.image_id, r.stamp_s) for r in rows]
    # every shown image reached the subject as one marker, stamped with its swap
    assert [(s.image_id, s.marker_time) for s in subject.stimuli] == shown
    # ... got a result from the engine, for that very presentation
    by_marker = {(r.marker, round(r.marker_timestamp, 6)) for r in got}
    assert all((i, round(ts, 6)) in by_marker for i, ts in shown)
    # ... and a decision taken on it (not on a timeout); every image ended with a stop
    assert all(r.decision in ("stop", "continue") and r.reason != "timeout" for r in rows)
    last = {r.image_id: r for r in rows}
    assert set(last) == set(ids) and all(r.decision == "stop" for r in last.values())
    assert all(1 <= r.repetition <= 3 for r in rows)
    calibrated = any(r.posterior is not None for r in rows)
    for r in last.values():
        assert r.reason in (("threshold", "max_repetitions") if calibrated
                            else ("max_repetitions",))
    print("\n".join(summary.lines()), f"\n{elapsed:.1f} s, {len(rows)} presentations")
