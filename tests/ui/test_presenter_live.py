"""The presenter in a real (offscreen) window with real LSL streams: one marker per shown image,
stamped with the swap time the log records; closed loop against a fake engine that answers each
marker with the posteriors the test chose."""

import json
import threading
import time
import uuid

import numpy as np
import pylsl
import pytest
from PIL import Image

from neuralign.ui.presenter.app import PresentOptions, run_presentation
from neuralign.ui.presenter.logfile import read_log
from neuralign.ui.presenter.markers import MarkerOutlet
from neuralign.ui.presenter.sequence import Timing, find_images, repeated_sequence


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e"):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(d / f"{name}.png")
    return find_images(d)


def _marker_inlet(outlet: MarkerOutlet) -> pylsl.StreamInlet:
    (info,) = pylsl.resolve_byprop("source_id", outlet.source_id, minimum=1, timeout=5)
    inlet = pylsl.StreamInlet(info, recover=False)
    inlet.open_stream(timeout=5)
    assert outlet.wait_for_consumers(5)
    return inlet


def _opts(tmp_path, **kw) -> PresentOptions:
    base = dict(log_path=tmp_path / "log.csv", marker_stream=f"test-{uuid.uuid4().hex[:6]}",
                windowed=True, size=(320, 240), timing="raster",
                refresh_hz=60.0, lead_in_s=0.1, photodiode="top-left", max_duration_s=20)
    base.update(kw)
    return PresentOptions(**base)


def test_every_image_one_marker_stamped_with_its_swap(qapp, tmp_path, images):
    trials = repeated_sequence(images, Timing(0.05, 0.1, 0.1), repetitions=2, seed=1)
    outlet = MarkerOutlet(f"test-markers-{uuid.uuid4().hex[:6]}")
    inlet = _marker_inlet(outlet)
    summary, rows = run_presentation(trials, _opts(tmp_path), outlet=outlet)
    markers = []
    while (got := inlet.pull_sample(timeout=0.5))[0] is not None:
        markers.append((got[0][0], got[1]))
    assert [r.image_id for r in rows] == [t.image_id for t in trials]
    assert [m for m, _ in markers] == [r.image_id for r in rows]  # exactly one each, in order
    np.testing.assert_allclose([ts for _, ts in markers], [r.onset_s for r in rows], atol=1e-6)
    logged = read_log(tmp_path / "log.csv")
    assert [r["image_id"] for r in logged] == [r.image_id for r in rows]
    np.testing.assert_allclose([r["stamp_s"] for r in logged], [ts for _, ts in markers],
                               atol=1e-6)
    assert {r["mode"] for r in logged} == {"raster"}
    onsets = np.array([r.onset_s for r in rows])
    soa = np.diff(onsets)
    assert soa.min() > 0.1 - 0.02 and soa.max() < 0.2 + 0.05  # 100 ms + up to 100 ms jitter
    assert summary.n_shown == 10 and not summary.aborted
    assert 0 <= summary.offset_ms_p50 <= summary.offset_ms_p99 < 20
    assert summary.onset_error_ms_p99 < 1000 / 60 + 5
    print("\n".join(summary.lines()))
    assert json.loads((tmp_path / "log.csv.summary.json").read_text())["n_shown"] == 10


class FakeEngine:
    """Reads the marker stream and answers each marker ``delay`` s later with a result whose
    posteriors come from ``posteriors[image][repetition - 1]`` ('none': a result without
    probabilities; a missing image: no result at all)."""

    def __init__(self, marker_source_id: str, posteriors: dict, delay: float = 0.25):
        self.name = f"test-results-{uuid.uuid4().hex[:6]}"
        info = pylsl.StreamInfo(self.name, "NeuralignResults", 1, 0.0, "string",
                                uuid.uuid4().hex)
        self.outlet = pylsl.StreamOutlet(info)
        (minfo,) = pylsl.resolve_byprop("source_id", marker_source_id, minimum=1, timeout=5)
        self.inlet = pylsl.StreamInlet(minfo, recover=False)
        self.inlet.open_stream(timeout=5)
        self.posteriors, self.delay = posteriors, delay
        self.counts: dict[str, int] = {}
        self.received: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = []
        while not self._stop.is_set():
            sample, ts = self.inlet.pull_sample(timeout=0.01)
            if sample is not None:
                image = sample[0]
                self.received.append((image, ts))
                n = self.counts[image] = self.counts.get(image, 0) + 1
                due.append((pylsl.local_clock() + self.delay, image, ts, n))
            now = pylsl.local_clock()
            for item in [d for d in due if d[0] <= now]:
                due.remove(item)
                self._publish(*item[1:])

    def _publish(self, image: str, ts: float, n: int) -> None:
        if image not in self.posteriors:
            return
        d = {"epoch_id": len(self.received), "marker": image, "marker_timestamp": ts,
             "last_sample_timestamp": ts + 0.6, "n_repetitions": n, "topk_ids": [image, "x"],
             "topk_scores": [0.5, 0.1], "stages_ms": {}}
        p = self.posteriors[image][n - 1]
        if p != "none":
            d["topk_probs"] = [0.3, 0.1]
            if n >= 2:
                d.update(avg_topk_ids=[image, "x"], avg_topk_scores=[0.5, 0.1],
                         avg_topk_probs=[p, 1 - p])
            else:
                d["topk_probs"] = [p, 1 - p]
        self.outlet.push_sample([json.dumps(d)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def test_closed_loop_stops_at_threshold_or_max(qapp, tmp_path, images):
    outlet = MarkerOutlet(f"test-markers-{uuid.uuid4().hex[:6]}")
    posteriors = {"a": [0.95], "b": [0.2, 0.5, 0.92], "c": [0.1, 0.2, 0.3],
                  "d": ["none", "none", "none"]}  # e: the engine never answers (timeouts)
    engine = FakeEngine(outlet.source_id, posteriors)
    assert outlet.wait_for_consumers(5)
    trials = [t for t in repeated_sequence(images, Timing(0.05, 0.1), 1)]
    opts = _opts(tmp_path, log_path=tmp_path / "log.jsonl", closed_loop=True,
                 results=f"lsl:{engine.name}", threshold=0.9, max_repetitions=3,
                 result_timeout_s=0.8)
    t0 = time.monotonic()
    try:
        summary, rows = run_presentation(trials, opts, outlet=outlet)
    finally:
        engine.close()
    elapsed = time.monotonic() - t0
    shown = {i: sum(r.image_id == i for r in rows) for i in images}
    assert shown == {"a": 1, "b": 3, "c": 3, "d": 3, "e": 3}
    last = {r.image_id: r for r in rows}  # the final decision of each image
    assert {i: (r.decision, r.reason) for i, r in last.items()} == {
        "a": ("stop", "threshold"), "b": ("stop", "threshold"), "c": ("stop", "max_repetitions"),
        "d": ("stop", "max_repetitions"), "e": ("stop", "max_repetitions")}
    assert last["b"].posterior == pytest.approx(0.92) and last["b"].repetition == 3
    assert {r.reason for r in rows if r.image_id == "e"} == {"timeout", "max_repetitions"}
    assert all(r.decision in ("stop", "continue") for r in rows)  # every presentation decided
    logged = read_log(tmp_path / "log.jsonl")
    assert [r["index"] for r in logged] == list(range(len(rows)))
    assert [(r["decision"], r["posterior"], r["repetition"]) for r in logged] == [
        (r.decision, r.posterior, r.repetition) for r in rows]
    # one marker per presentation, stamped with its swap
    assert [(i, pytest.approx(ts, abs=1e-6)) for i, ts in engine.received] == [
        (r.image_id, r.stamp_s) for r in rows]
    # interleaving: 13 presentations with ~0.25-0.8 s result latency took far less than
    # 13 sequential waits; no image followed itself while another could be shown
    assert elapsed < 13 * 0.8
    assert summary.n_decisions == {"stop": 5, "continue": 8}


def test_space_pauses_and_esc_aborts_with_the_log_kept(qapp, tmp_path, images):
    from PyQt6.QtCore import Qt, QTimer
    from PyQt6.QtGui import QGuiApplication
    from PyQt6.QtTest import QTest

    def press(key):
        (win,) = [w for w in QGuiApplication.topLevelWindows()
                  if w.title() == "neuralign present" and w.isVisible()]
        QTest.keyClick(win, key)

    trials = repeated_sequence(images, Timing(0.05, 0.1), repetitions=10, seed=2)
    QTimer.singleShot(400, lambda: press(Qt.Key.Key_Space))
    QTimer.singleShot(1000, lambda: press(Qt.Key.Key_Space))
    QTimer.singleShot(1300, lambda: press(Qt.Key.Key_Escape))
    summary, rows = run_presentation(trials, _opts(tmp_path, lead_in_s=0.05))
    assert summary.aborted and 3 <= len(rows) < len(trials)
    gaps = np.diff([r.onset_s for r in rows])
    assert gaps.max() > 0.5  # nothing started while paused
    assert [r["image_id"] for r in read_log(tmp_path / "log.csv")] == [r.image_id for r in rows]


def test_cli_present_and_a_bad_sequence(tmp_path, images):
    import os
    import subprocess
    import sys

    folder = next(iter(images.values())).parent
    log = tmp_path / "cli.jsonl"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [sys.executable, "-m", "neuralign", "present", "--images", str(folder), "--windowed",
         "--size", "200x150", "--repetitions", "2", "--soa", "100", "--duration", "50",
         "--lead-in", "0.1", "--photodiode", "--marker-stream", f"cli-{uuid.uuid4().hex[:6]}",
         "--log", str(log)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "swap-to-marker offset p50" in out.stdout and "dropped frames" in out.stdout
    rows = read_log(log)
    assert len(rows) == 10 and {r["mode"] for r in rows} == {"raster"}
    seq = tmp_path / "seq.csv"
    seq.write_text("image,soa\na,100\nzzz,100\n")
    bad = subprocess.run([sys.executable, "-m", "neuralign", "present", "--images", str(folder),
                          "--sequence", str(seq)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert bad.returncode == 2 and f"{seq}:3: image 'zzz'" in bad.stderr


@pytest.mark.skipif(not __import__("os").environ.get("DISPLAY"),
                    reason="needs an X display with OpenGL (e.g. Xvfb + Mesa)")
def test_cli_present_with_opengl_swaps(tmp_path, images):
    """The OpenGL path (frameSwapped stamps) where a display exists; Xvfb's Mesa has no vsync,
    so there the frames are paced by a timer and the rows say so."""
    import os
    import subprocess
    import sys

    folder = next(iter(images.values())).parent
    log = tmp_path / "gl.csv"
    out = subprocess.run(
        [sys.executable, "-m", "neuralign", "present", "--images", str(folder), "--windowed",
         "--size", "200x150", "--repetitions", "2", "--soa", "100", "--timing", "opengl",
         "--lead-in", "0.3", "--marker-stream", f"gl-{uuid.uuid4().hex[:6]}", "--log",
         str(log)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "QT_QPA_PLATFORM": "xcb"})
    if out.returncode == 2 and "OpenGL" in out.stderr:
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr
    rows = read_log(log)
    assert len(rows) == 10 and {r["mode"] for r in rows} <= {"opengl", "opengl-novsync"}
    assert all(r["stamp_s"] == r["onset_s"] for r in rows)
