"""The Qt viewer against a real replay, a real engine and real LSL streams (offscreen Qt).

What matters to a user: the images change with the trials and are the engine's results, the
accuracy counter moves, a click on the sensor map makes a reconstruction appear, pausing loses
nothing, and closing the window stops the viewer's threads but not an engine it does not own.
"""

import logging
import os
import shutil
import uuid
from pathlib import Path

import mne
import numpy as np
import pytest
from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QApplication

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import recent
from neuralign.ui.feeds import EngineFeed, LSLResultFeed, default_trace_channels
from neuralign.ui.panels import pearson_r
from neuralign.ui.viewer import ViewerWindow

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def live_engine(tiny_bundle):
    """A looping replay of the tiny test recording decoded by a running engine (SOA 200 ms)."""
    bundle_dir, data = tiny_bundle
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    sid = uuid.uuid4().hex
    # loop: trials keep coming after the first pass, so nothing below races the end of the file
    rep = LSLReplayer.from_raw(raw, name=f"test-eeg-{sid[:6]}", source_id=sid, chunk_size=10,
                               wait_for_consumers=20.0, loop=True)
    src = replay_source(rep, timeout=10)
    cfg = RealtimeConfig(batch_size=8, max_wait_ms=20, top_k=5,
                         result_stream_name=f"test-results-{sid[:8]}")
    engine = Engine(bundle, src, cfg, result_source_id=uuid.uuid4().hex)
    rep.start()
    engine.start()
    try:
        yield bundle, engine
    finally:
        engine.stop()
        rep.stop()


def _answer_dialog(answer, tries: int = 200) -> None:
    """Answer the next modal dialog (opened by a key press) from inside its event loop."""

    def attempt(left: int) -> None:
        dlg = QApplication.activeModalWidget()
        if dlg is not None:
            answer(dlg)
        elif left:
            QTimer.singleShot(20, lambda: attempt(left - 1))

    QTimer.singleShot(20, lambda: attempt(tries))


def _activate(qtbot, win) -> None:
    """Make the window active (window-level shortcuts need it); activation is asynchronous."""
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5_000)


def _engine_alive(engine) -> bool:
    return bool(engine._threads) and all(t.is_alive() for t in engine._threads)


def test_engine_viewer_follows_trials_masks_and_closes_cleanly(qtbot, live_engine, tmp_path):
    bundle, engine = live_engine
    feed = EngineFeed(engine, bundle)
    win = ViewerWindow(feed)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    assert win.traces.available and win.mask.available
    assert win.mask.map is not None, "easycap-M1 names must give a sensor map, not a list"

    shown: dict[int, tuple] = {}  # epoch_id -> (displayed top-k ids, their pixmap keys, marker)

    def record() -> None:
        r = win.stimulus.shown
        if r is not None:
            tiles = win.stimulus.topk_tiles[: win.stimulus.k]
            shown[r.epoch_id] = (tuple(win.stimulus.displayed_ids()),
                                 tuple(t.pixmap_key() for t in tiles), r.marker)

    qtbot.waitUntil(lambda: win.state.n_results >= 1, timeout=40_000)
    # mask Oz like a user: a real mouse click on its dot in the sensor map
    oz = bundle.ch_names.index("Oz")
    pt = win.mask.map_point("Oz")
    qtbot.mouseClick(win.mask.map.viewport(), Qt.MouseButton.LeftButton, pos=pt.toPoint())
    assert engine.masked_channels == [oz]
    assert win.mask.selected == oz

    def progressed() -> bool:
        record()
        return (len({v[0] for v in shown.values()}) >= 2 and len(shown) >= 3
                and win.mask.last_r is not None and win.state.n_judged > 0)

    qtbot.waitUntil(progressed, timeout=40_000)

    # the top-k panel showed the engine's own results, and changed between trials
    by_epoch = {r.epoch_id: r for r in recent(engine)}
    for epoch_id, (ids, keys, marker) in shown.items():
        r = by_epoch[epoch_id]
        assert list(ids) == r.topk_ids[: len(ids)]
        assert marker == r.marker
        for tid, key in zip(ids, keys):
            assert key == win.stimulus.pixmaps[tid].cacheKey()
    assert len({v[0] for v in shown.values()}) >= 2
    assert len({v[2] for v in shown.values()}) >= 2  # the stimulus changed too

    # running accuracy over exactly the results the viewer ingested
    known = set(bundle.template_ids)
    judged = [by_epoch[r.epoch_id] for r in win.state.history if r.marker in known]
    assert win.state.n_judged == len(judged) > 0
    assert win.state.n_top1 == sum(r.topk_ids[0] == r.marker for r in judged)
    assert "top-1" in win._labels["accuracy"].text()

    # the reconstruction of the masked channel is on screen with a finite r
    rec = engine.last_reconstruction
    assert rec is not None and oz in rec.channels
    assert np.isfinite(win.mask.last_r)
    j = rec.channels.index(oz)
    if win.mask.last_epoch == rec.epoch_id:
        assert win.mask.last_r == pytest.approx(pearson_r(rec.original[j],
                                                          rec.reconstructed[j]))
    assert "r = " in win.mask.rec_plot.getPlotItem().titleLabel.text

    # keyboard: C picks trace channels, K picks k (both modal dialogs, answered like a user)
    _activate(qtbot, win)
    _answer_dialog(lambda d: (d._set(["Oz", "Pz"]), d.accept()))
    qtbot.keyClick(win, Qt.Key.Key_C)
    assert feed.trace_channels == ["Pz", "Oz"]  # bundle order
    qtbot.waitUntil(lambda: win.traces._shown is not None
                    and win.traces._shown.channels == ["Pz", "Oz"], timeout=5_000)
    _activate(qtbot, win)  # offscreen Qt does not hand activation back after a dialog
    _answer_dialog(lambda d: (d.setIntValue(3), d.accept()))
    qtbot.keyClick(win, Qt.Key.Key_K)
    assert win.stimulus.k == 3 and len(win.stimulus.displayed_ids()) == 3
    win.set_k(5)
    win.set_trace_channels(default_trace_channels(bundle.ch_names))

    # Space pauses the display only: results keep being ingested, none lost
    _activate(qtbot, win)
    qtbot.keyClick(win, Qt.Key.Key_Space)
    assert win.paused
    frozen, n0 = win.stimulus.shown.epoch_id, win.state.n_results
    qtbot.waitUntil(lambda: engine.n_decoded >= n0 + 2 and win.state.n_results >= n0 + 2,
                    timeout=20_000)
    assert win.stimulus.shown.epoch_id == frozen
    assert "PAUSED" in win._labels["pause"].text()
    qtbot.keyClick(win, Qt.Key.Key_Space)
    assert not win.paused
    qtbot.waitUntil(lambda: win.stimulus.shown.epoch_id != frozen, timeout=5_000)
    assert win.state.n_results == len(win.state.history)  # every decoded epoch arrived

    # screenshot: a test artefact and the documentation image (with a repetition average shown)
    qtbot.waitUntil(lambda: win.mask.last_r is not None and win.fps() > 0
                    and bool(win.stimulus.shown.avg_topk_ids), timeout=20_000)
    log.info("viewer: %.1f display updates/s, %.1f repaints/s, GUI thread %.0f %% CPU",
             win.fps(), win.paint_fps(), 100 * win.gui_cpu_fraction())
    win.screenshot_dir = tmp_path
    qtbot.keyClick(win, Qt.Key.Key_S)
    assert len(list(tmp_path.glob("neuralign-viewer-*.png"))) == 1
    out = win.save_screenshot(tmp_path / "viewer.png")
    assert out.stat().st_size > 10_000
    if os.environ.get("NEURALIGN_UPDATE_DOCS") == "1":  # refresh the README's / docs' image on request only
        shutil.copyfile(out, REPO / "docs" / "viewer.png")

    # closing stops the feed thread, not the engine the window does not own
    assert feed.threads and all(t.is_alive() for t in feed.threads)
    n_before = engine.n_decoded
    qtbot.keyClick(win, Qt.Key.Key_Q)
    assert not win.isVisible()
    assert not any(t.is_alive() for t in feed.threads)
    assert not win.timer.isActive()
    assert _engine_alive(engine) and engine.error is None
    assert engine.wait_for(n_before + 1, timeout=15)


def test_lsl_result_feed_shows_the_engines_result_stream(qtbot, live_engine):
    bundle, engine = live_engine
    feed = LSLResultFeed(engine.cfg.result_stream_name, bundle, timeout=10)
    win = ViewerWindow(feed)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    # traces and masking say they are unavailable instead of pretending
    assert win.traces.stack.currentIndex() == 1 and win.mask.stack.currentIndex() == 1
    assert not win.actions_by_name["Choose channels…"].isEnabled()

    qtbot.waitUntil(lambda: win.state.n_results >= 3 and win.stimulus.shown is not None
                    and win.state.n_judged > 0, timeout=40_000)
    by_epoch = {r.epoch_id: r for r in recent(engine)}
    for r in win.state.history:  # what travelled over LSL is what the engine decoded
        assert r.topk_ids == by_epoch[r.epoch_id].topk_ids
    assert win.stimulus.displayed_ids() == win.stimulus.shown.topk_ids[: win.stimulus.k]
    win.toggle_mask("Oz")
    assert engine.masked_channels == []
    n_seen = win.state.n_results
    qtbot.waitUntil(lambda: win.feed_status.get("connected") is True
                    and win.feed_status.get("decoded", 0) >= n_seen, timeout=5_000)
    text, _ = win.health_text()
    assert text.startswith(("connected", "stalled"))

    # the engine stops: its result stream stays but goes quiet -> 'stalled', window still live
    engine.stop()
    ticks = win.n_ticks
    qtbot.waitUntil(lambda: "stalled" in win._labels["health"].text(), timeout=10_000)
    assert win.state.seconds_since_result() > 2.0
    assert win.n_ticks > ticks + 30  # the timer kept running the whole time

    win.close()
    assert feed.threads and not any(t.is_alive() for t in feed.threads)


def test_owned_engine_stops_with_the_window(qtbot, live_engine):
    """``neuralign run --view``: the window owns the engine, so closing it stops the engine."""
    bundle, engine = live_engine
    win = ViewerWindow(EngineFeed(engine, bundle), owns_source=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.state.n_results >= 1, timeout=40_000)
    win.close()
    assert not any(t.is_alive() for t in win.feed.threads)
    assert not engine._threads  # Engine.stop() joined and cleared its threads


def test_view_lsl_names_a_missing_result_stream(tiny_bundle):
    """``neuralign view`` with a wrong stream name: one clear UserError before any window opens."""
    from neuralign.errors import UserError
    from neuralign.ui.app import view_lsl

    missing = f"no-such-results-{uuid.uuid4().hex[:8]}"
    with pytest.raises(UserError, match=missing):
        view_lsl(missing, tiny_bundle[0], timeout=0.5)
