"""Fault-matrix holes, viewer side: ``neuralign run`` WITH the viewer (offscreen Qt) must stop on
SIGTERM / Ctrl-C like the headless run (window closed, engine stopped, recording complete) and
exit non-zero on an engine error; the window says when the marker stream is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.recorder import read_recording
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.sources.lsl import LSLMarkerInlet, LSLSource
from neuralign.ui.feeds import EngineFeed
from neuralign.ui.viewer import ViewerWindow
from tests.realtime.faults import Sender, now, stream_until, tiny_raw, wait_until

#: what a test puts before ``neuralign run``: an engine whose decoder fails on the first batch
_BROKEN_DECODER = """
import sys
from neuralign.realtime.decisions import ResultBuilder

def broken(self, batch):
    raise RuntimeError("decoder exploded")

ResultBuilder.build = broken
from neuralign.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_with_viewer(bundle_dir, sid: str, rec, broken: bool = False) -> subprocess.Popen:
    args = ["run", "--bundle", str(bundle_dir), "--source", f"lsl:source_id={sid}",
            "--markers", f"lsl:source_id={sid}-markers", "--record", str(rec)]
    cmd = [sys.executable, "-c", _BROKEN_DECODER, *args] if broken else [
        sys.executable, "-m", "neuralign", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})


def _replay(data_dir, sid: str) -> tuple[LSLReplayer, float]:
    raw = tiny_raw(data_dir)
    rep = LSLReplayer.from_raw(raw, name=f"view-{sid[:6]}", source_id=sid, loop=True,
                               wait_for_consumers=60.0)
    rep.start()
    return rep, raw.info["sfreq"]


def _results_written(rec) -> int:
    path = rec / "results.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _assert_complete(rec) -> None:
    data, ts, _, _, header = read_recording(rec)
    assert header["complete"] is True and header["n_samples"] == data.shape[1] > 0
    assert (rec / "raw.fif").is_file()
    assert np.all(np.diff(ts) > 0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_fault_stop_signal_with_the_viewer_open_leaves_a_valid_recording(tiny_bundle, tmp_path,
                                                                         sig):
    """A stop signal used to raise KeyboardInterrupt inside a Qt slot: the event loop went on,
    the engine kept running and the recording was never closed."""
    bundle_dir, data_dir = tiny_bundle
    sid = os.urandom(8).hex()
    rep, _ = _replay(data_dir, sid)
    rec = tmp_path / "rec"
    proc = _run_with_viewer(bundle_dir, sid, rec)
    try:
        assert wait_until(lambda: _results_written(rec) >= 3 or proc.poll() is not None, 90), (
            proc.poll())
        time.sleep(2.0)  # the window is up and its event loop runs
        assert proc.poll() is None, proc.communicate()
        t_signal = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
        rep.stop()
    assert proc.returncode in (0, 130), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert took < 10, took
    assert "final: decoded" in out, out[-2000:]
    _assert_complete(rec)


def test_fault_engine_error_with_the_viewer_open_exits_non_zero(tiny_bundle, tmp_path):
    """An engine error left the window open over a dead engine, and closing it exited 0."""
    bundle_dir, data_dir = tiny_bundle
    sid = os.urandom(8).hex()
    rep, _ = _replay(data_dir, sid)
    rec = tmp_path / "rec"
    proc = _run_with_viewer(bundle_dir, sid, rec, broken=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        rep.stop()
    assert proc.returncode == 1, (out[-1000:], err[-2000:])
    last = err.strip().splitlines()[-1]
    assert last == ("neuralign: error: engine stopped: RuntimeError('decoder exploded') "
                    "(exit code 1)"), err[-2000:]
    _assert_complete(rec)


def test_fault_viewer_closes_when_its_engine_fails(qtbot, tiny_bundle):
    """In process: the window over a failing engine closes by itself and the engine stops."""
    from neuralign.cli.online import show_in_viewer

    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 4.0)
    sender = Sender(raw.ch_names, 500.0)
    engine = Engine(bundle, LSLSource(source_id=sender.sid, timeout=10,
                                      markers=LSLMarkerInlet(source_id=sender.marker_sid)),
                    RealtimeConfig(batch_size=4, max_wait_ms=10), publish_lsl=False)
    stop = threading.Event()
    engine.start()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def fail() -> None:
        raise RuntimeError("decoder exploded")

    def feed_markers() -> None:
        sender.wait_for_consumers()
        stream_until(sender, raw.get_data(), stop)
        time.sleep(2.0)  # the window is open; then an epoch reaches the broken decoder
        engine.result_builder.build = lambda batch: fail()
        sender.marker(bundle.template_ids[0], now())

    threading.Thread(target=feed_markers, daemon=True).start()
    t0 = time.monotonic()
    try:
        show_in_viewer(engine, bundle, engine.stop)  # returns once the window closed
    finally:
        stop.set()
        engine.stop()
        for s, h in handlers.items():
            signal.signal(s, h)
    assert isinstance(engine.error, RuntimeError) and time.monotonic() - t0 < 30
    assert not engine._threads  # stopped


def test_fault_viewer_says_when_the_marker_stream_is_lost(qtbot, tiny_bundle):
    """The marker stream vanished: results stop; the status bar must say why."""
    bundle_dir, data_dir = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = tiny_raw(data_dir, 4.0)
    sender = Sender(raw.ch_names, 500.0)
    engine = Engine(bundle, LSLSource(source_id=sender.sid, timeout=10,
                                      markers=LSLMarkerInlet(source_id=sender.marker_sid)),
                    RealtimeConfig(batch_size=4, max_wait_ms=10), publish_lsl=False)
    stop = threading.Event()
    engine.start()
    win = ViewerWindow(EngineFeed(engine, bundle, status_period_s=0.1))
    qtbot.addWidget(win)
    win.show()
    try:
        sender.wait_for_consumers()
        stream_until(sender, raw.get_data(), stop)
        qtbot.waitUntil(lambda: win.health_text()[0].startswith("waiting"), timeout=10_000)
        sender.marker_outlet = None
        qtbot.waitUntil(lambda: win.health_text()[0].startswith("marker stream lost"),
                        timeout=10_000)
        assert win.health_text()[1] == "#c00"
    finally:
        win.close()
        stop.set()
        engine.stop()
