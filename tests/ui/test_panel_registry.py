"""Viewer panels come from the registry: one class (one module in ui/panels/) is a new panel.

The window is real (offscreen Qt); the feed is a small scripted one, so the tests show exactly
which frames a panel gets: the engine's typed objects, results held back while paused delivered on
resume, a broken panel isolated from the others, and the window asking the feed (not an engine)
for its top-k and for stopping its source.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PyQt6.QtWidgets import QLabel, QSplitter, QWidget

import neuralign.ui.panels as panels_pkg
from neuralign.realtime.decisions import Reconstruction, Result
from neuralign.ui.feeds import Feed
from neuralign.ui.forms import ChannelComparison, Frame
from neuralign.ui.panels import registry
from neuralign.ui.panels.registry import PanelContext, Slot, register_panel, unregister_panel
from neuralign.ui.viewer import ViewerWindow

IDS = [f"img{i:02d}" for i in range(8)]
NAMES = ["O1", "Oz", "O2", "Pz", "P3", "P4"]


def _bundle() -> SimpleNamespace:
    """What the window and the built-in panels read of a bundle."""
    man = SimpleNamespace(sfreq=250.0, channels=SimpleNamespace(types=["eeg"] * len(NAMES)),
                          epoch=SimpleNamespace(tmin=-0.1),
                          noise_normalization=SimpleNamespace(method="mvnn"))
    thumbs = np.full((len(IDS), 48, 48, 3), 128, np.uint8)
    return SimpleNamespace(template_ids=IDS, thumbnails=thumbs, manifest=man, ch_names=NAMES,
                           path=Path("/nonexistent/bundle"))


def _result(i: int) -> Result:
    return Result(epoch_id=i, marker=IDS[i % len(IDS)], marker_timestamp=float(i),
                  last_sample_timestamp=i + 0.5, n_repetitions=1, topk_ids=IDS[:5],
                  topk_scores=[0.9, 0.8, 0.7, 0.6, 0.5])


class ScriptedFeed(Feed):
    """A feed whose results the test pushes; no thread, nothing to wait for."""

    def __init__(self, top_k: int | None = None):
        super().__init__(_bundle())
        self.top_k = top_k
        self.rec: Reconstruction | None = None
        self.n_source_stops = 0

    def start(self) -> None:
        pass

    def push(self, *results: Result) -> None:
        self._results.extend(results)

    def reconstruction(self) -> Reconstruction | None:
        return self.rec

    @property
    def default_top_k(self) -> int | None:
        return self.top_k

    def stop_source(self) -> None:
        self.n_source_stops += 1


class EpochLog:
    """The tiny extra panel: one label, and every frame it was given."""

    name = "test_epoch_log"
    title = "Epoch log"
    slot = Slot.RIGHT_BOTTOM
    order = 10
    stretch = 0

    def build(self, ctx: PanelContext) -> QWidget:
        self.frames: list[Frame] = []
        self.label = QLabel(f"{len(ctx.bundle.template_ids)} templates")
        return self.label

    def update(self, frame: Frame) -> None:
        self.frames.append(frame)
        if frame.results:
            self.label.setText(f"epoch {frame.results[-1].epoch_id}")


@pytest.fixture
def epoch_log():
    register_panel(EpochLog)
    try:
        yield EpochLog
    finally:
        unregister_panel(EpochLog.name)


def _window(qtbot, feed: Feed, **kw) -> ViewerWindow:
    win = ViewerWindow(feed, fps=100.0, **kw)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_the_built_in_panels_are_registered_in_layout_order():
    names = [c.name for c in registry.registered_panels()]
    assert names[:4] == ["traces", "stimulus", "generated", "mask"]


def test_the_window_lays_out_and_feeds_an_extra_panel(qtbot, epoch_log):
    feed = ScriptedFeed()
    win = _window(qtbot, feed)
    panel = win.panels[EpochLog.name]
    label = win.panel_widgets[EpochLog.name]
    # laid out in its slot: beside the mask panel (after it), shown, named for the user
    split = label.parentWidget()
    assert isinstance(split, QSplitter) and split.indexOf(win.mask) == 0
    assert split.indexOf(label) == 1 and label.isVisible()
    assert label.accessibleName() == "Epoch log" and label.text() == f"{len(IDS)} templates"

    feed.push(_result(1), _result(2))
    qtbot.waitUntil(lambda: label.text() == "epoch 2", timeout=5_000)
    got = [r.epoch_id for f in panel.frames for r in f.results]
    assert got == [1, 2]  # every result once, as the typed objects the feed delivered
    assert panel.frames[-1].latest is win.state.latest
    assert win.stimulus.shown is win.state.latest  # the built-in panels got the same frame

    # paused: no frames; on resume one frame carries what arrived meanwhile
    win.set_paused(True)
    n_frames = len(panel.frames)
    feed.push(_result(3), _result(4))
    qtbot.waitUntil(lambda: win.state.n_results == 4, timeout=5_000)
    qtbot.wait(50)
    assert len(panel.frames) == n_frames and label.text() == "epoch 2"
    win.set_paused(False)
    qtbot.waitUntil(lambda: label.text() == "epoch 4", timeout=5_000)
    assert [r.epoch_id for f in panel.frames for r in f.results] == [1, 2, 3, 4]
    win.close()


def test_the_mask_panel_plots_a_typed_reconstruction(qtbot):
    feed = ScriptedFeed()
    feed.supports_masking = True
    win = _window(qtbot, feed)
    oz = NAMES.index("Oz")
    win.toggle_mask("Oz")
    rng = np.random.default_rng(0)
    orig = rng.standard_normal((2, 50))
    feed.rec = Reconstruction(epoch_id=9, channels=[0, oz], original=orig,
                              reconstructed=orig + 0.1 * rng.standard_normal((2, 50)))
    qtbot.waitUntil(lambda: win.mask.last_epoch == 9, timeout=5_000)
    row = ChannelComparison.of(feed.rec, oz)
    assert row is not None and np.array_equal(row.original, orig[1])
    assert win.mask.last_r == pytest.approx(np.corrcoef(row.original, row.reconstructed)[0, 1])
    assert ChannelComparison.of(feed.rec, NAMES.index("Pz")) is None
    win.close()


def test_a_failing_panel_does_not_stop_the_others(qtbot, caplog):
    class Broken(EpochLog):
        name = "test_broken"

        def update(self, frame: Frame) -> None:
            raise RuntimeError("panel bug")

    register_panel(Broken)
    try:
        feed = ScriptedFeed()
        win = _window(qtbot, feed)
        feed.push(_result(5))
        qtbot.waitUntil(lambda: win.stimulus.shown is not None, timeout=5_000)
        assert "test_broken" in win._failed_panels
        assert "panel bug" in caplog.text
        win.close()
    finally:
        unregister_panel(Broken.name)


def test_the_window_asks_the_feed_for_top_k_and_to_stop_its_source(qtbot):
    feed = ScriptedFeed(top_k=3)
    win = _window(qtbot, feed)
    assert win.stimulus.k == 3
    win.close()
    assert feed.n_source_stops == 0  # not owned: the source keeps running

    owner = ScriptedFeed()
    win = _window(qtbot, owner, owns_source=True, k=4)
    assert win.stimulus.k == 4
    win.close()
    win.shutdown()  # idempotent
    assert owner.n_source_stops == 1


def test_a_new_module_in_the_panel_package_is_discovered(tmp_path, monkeypatch):
    """A new panel is one new file: discovery imports every module of ``ui/panels/``."""
    module = "test_discovered_panel"
    (tmp_path / f"{module}.py").write_text(
        "from PyQt6.QtWidgets import QLabel\n"
        "from neuralign.ui.panels.registry import Slot, register_panel\n\n\n"
        "@register_panel\n"
        "class Discovered:\n"
        "    name = 'test_discovered'\n"
        "    title = 'Discovered'\n"
        "    slot = Slot.LEFT\n"
        "    order = 5\n"
        "    stretch = 0\n\n"
        "    def build(self, ctx):\n"
        "        return QLabel('found')\n\n"
        "    def update(self, frame):\n"
        "        pass\n")
    monkeypatch.setattr(panels_pkg, "__path__", [*panels_pkg.__path__, str(tmp_path)])
    monkeypatch.setattr(registry, "_discovered", False)
    try:
        names = [c.name for c in registry.registered_panels()]
        assert names.index("traces") < names.index("test_discovered") < names.index("stimulus")
    finally:
        unregister_panel("test_discovered")
        sys.modules.pop(f"{registry.PANEL_PACKAGE}.{module}", None)


def test_a_taken_panel_name_is_refused():
    class Impostor(EpochLog):
        name = "traces"

    with pytest.raises(ValueError, match="taken"):
        register_panel(Impostor)
