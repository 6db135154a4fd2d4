"""The viewer's "generated" panel against a real replay, a real engine with a generator bundle and
real LSL (offscreen Qt): it follows the decoded epochs with the engine's own images; attached to
the LSL result stream only, it says why it has none."""

import uuid

import mne
import pytest

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.realtime.engine import Engine
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import recent
from neuralign.ui.feeds import EngineFeed, LSLResultFeed
from neuralign.ui.panels.generated import ATTACH_MODE, image_rgb
from neuralign.ui.viewer import ViewerWindow


@pytest.fixture
def generator_engine(tiny_generator_bundle):
    """A looping replay of the tiny test recording decoded by an engine with a generator."""
    bundle_dir, data = tiny_generator_bundle[:2]
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"test-eeg-{sid[:6]}", source_id=sid, chunk_size=10,
                               wait_for_consumers=20.0, loop=True)
    src = replay_source(rep, timeout=10)
    cfg = RealtimeConfig(batch_size=4, max_wait_ms=20, top_k=5, generated_images="always",
                         result_stream_name=f"test-results-{sid[:8]}")
    engine = Engine(bundle, src, cfg, result_source_id=uuid.uuid4().hex)
    rep.start()
    engine.start()
    try:
        yield bundle, engine
    finally:
        engine.stop()
        rep.stop()


def test_generated_panel_follows_decoded_epochs(qtbot, generator_engine):
    bundle, engine = generator_engine
    win = ViewerWindow(EngineFeed(engine, bundle))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    panel = win.generated
    assert panel.available and panel.stack.currentIndex() == 0
    seen: dict[int, object] = {}

    def changed() -> bool:
        if panel.shown is not None:
            seen[panel.shown.epoch_id] = panel.shown
        return len(seen) >= 3

    qtbot.waitUntil(changed, timeout=40_000)
    assert panel.n_changes >= 3
    generated = {g.epoch_id: g for g in list(engine.generation.images)}
    decoded = {r.epoch_id: r for r in recent(engine)}
    for epoch_id, g in seen.items():
        assert g is generated[epoch_id]  # the engine's own image of that epoch
        assert g.marker == decoded[epoch_id].marker
    # the picture on screen is the newest shown image (64 px grey scaled to the tile)
    pm = panel.tile.pic.pixmap()
    assert pm is not None and not pm.isNull()
    assert f"epoch {panel.shown.epoch_id}" in panel.info.text()
    assert len({image_rgb(g.image).tobytes() for g in seen.values()}) >= 2  # images differ
    win.close()


def test_attached_viewer_says_the_generator_is_unavailable(qtbot, generator_engine):
    bundle, engine = generator_engine
    feed = LSLResultFeed(engine.cfg.result_stream_name, bundle, timeout=10)
    win = ViewerWindow(feed)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.state.n_results >= 2, timeout=40_000)
    panel = win.generated
    assert not panel.available and panel.stack.currentIndex() == 1
    assert panel.stack.widget(1).text() == ATTACH_MODE and "attach mode" in ATTACH_MODE
    assert panel.shown is None and panel.n_changes == 0
    win.close()


def test_a_generator_that_lost_to_the_mean_image_shows_the_retrieved_image(qtbot, tiny_generator_bundle):
    """Default policy with a generator whose validation lost to the mean training image: the
    engine makes no images and the panel shows each epoch's retrieved top-1 and says why."""
    from neuralign.bundle import GeneratorValidation

    bundle_dir, data = tiny_generator_bundle[:2]
    bundle = load_bundle(bundle_dir)
    bundle.manifest.generator.validation = GeneratorValidation(
        split="test images", n_images=40, ssim=0.50, ssim_mean_image=0.55, two_way_pixel=0.6)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"test-eeg-{sid[:6]}", source_id=sid, chunk_size=10,
                               wait_for_consumers=20.0, loop=True)
    engine = Engine(bundle, replay_source(rep, timeout=10), RealtimeConfig(batch_size=4, top_k=5),
                    result_source_id=uuid.uuid4().hex)
    assert engine.generation is None and "mean training image" in engine.generation_off
    assert engine.status()["generation"]["off"] == engine.generation_off
    rep.start()
    engine.start()
    try:
        win = ViewerWindow(EngineFeed(engine, bundle))
        qtbot.addWidget(win)
        win.show()
        panel = win.generated
        assert panel.fallback is not None and "mean training image" in panel.info.text()
        qtbot.waitUntil(lambda: panel.n_changes >= 2, timeout=40_000)
        shown = panel.shown
        assert panel.tile.image_id == shown.topk_ids[0]  # the retrieved top-1 of that epoch
        assert shown.epoch_id in {r.epoch_id for r in recent(engine)}
        win.close()
    finally:
        engine.stop()
        rep.stop()
