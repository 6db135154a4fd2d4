"""The engine with a generator bundle, through real LSL: one generated image per decoded epoch,
equal to the offline ``generate(normalize(encode_brain(epoch)))`` of the same trial (issue 14)."""

import uuid

import mne
import numpy as np
import pylsl
import pytest
import torch

from neuralign.bundle import load_bundle
from neuralign.config import RealtimeConfig
from neuralign.offline.preprocess import epochs_from_continuous
from neuralign.realtime.decisions import Result
from neuralign.realtime.engine import Engine
from neuralign.realtime.generation import GeneratorWorker
from neuralign.realtime.replay import LSLReplayer
from neuralign.realtime.replay.wiring import replay_source
from neuralign.realtime.subscriptions import recent
from neuralign.signal.events import annotation_onsets


def _offline_images(bundle, raw) -> tuple[list[str], np.ndarray]:
    """Markers and generated images of every trial of ``raw``, offline (the parity reference)."""
    raw = raw.copy().pick(bundle.ch_names)
    onsets, labels = annotation_onsets(raw)
    epochs, _, _, kept = epochs_from_continuous(raw.get_data(), raw.info["sfreq"], bundle.ch_names,
                                                onsets, bundle.manifest.preprocessing)
    x = bundle.manifest.noise_normalization.whitening().apply(epochs)
    with torch.inference_mode():
        z = torch.nn.functional.normalize(bundle.build_model().encode_brain(
            torch.from_numpy(np.ascontiguousarray(x, np.float32))), dim=-1).numpy()
    return [lab for lab, k in zip(labels, kept) if k], bundle.build_generator().generate(z)


def test_engine_generates_one_image_per_decoded_epoch(tiny_generator_bundle):
    bundle_dir, data = tiny_generator_bundle[:2]
    bundle = load_bundle(bundle_dir)
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", preload=True, verbose="error")
    markers, offline = _offline_images(bundle, raw)
    sid = uuid.uuid4().hex
    rep = LSLReplayer.from_raw(raw, name=f"test-eeg-{sid[:6]}", source_id=sid, chunk_size=10,
                               wait_for_consumers=20.0)
    src = replay_source(rep, timeout=10)
    result_sid = uuid.uuid4().hex
    # "always": the tiny generator is far too small to pass its validation; the gate is tested below
    engine = Engine(bundle, src, RealtimeConfig(batch_size=4, max_wait_ms=20, top_k=5,
                                                generated_images="always"),
                    result_source_id=result_sid)
    assert engine.generation is not None
    rep.start()
    engine.start()
    try:
        # a real LSL consumer of the result stream: results are published as usual
        infos = pylsl.resolve_byprop("source_id", result_sid, minimum=1, timeout=10)
        assert infos, "result stream not found"
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(timeout=5)
        assert engine.wait_for(len(markers), timeout=60), engine.n_decoded
        assert engine.generation.wait_for(len(markers), timeout=20)
        on_wire = []
        while (s := inlet.pull_sample(timeout=1.0)[0]) is not None and len(on_wire) < len(markers):
            on_wire.append(Result.from_json(s[0]))
        del inlet
    finally:
        engine.stop()
        rep.stop()
    assert engine.error is None and engine.generation.error is None
    gen = engine.generation
    assert gen.n_generated == engine.n_decoded == len(markers) and gen.n_dropped == 0
    by_epoch = {g.epoch_id: g for g in gen.images}
    results = sorted(recent(engine), key=lambda r: r.marker_timestamp)
    assert [r.epoch_id for r in results] == sorted(by_epoch)  # exactly one image per epoch
    assert {r.epoch_id for r in on_wire} <= set(by_epoch)
    assert [r.marker for r in results] == markers
    for i, r in enumerate(results):
        g = by_epoch[r.epoch_id]
        assert g.marker == r.marker
        assert g.image.shape == (64, 64) and g.image.dtype == np.float32
        assert 0.0 <= g.image.min() and g.image.max() <= 1.0
        # the live image is the offline generation of the same trial (folded encoder: ~1e-6)
        np.testing.assert_allclose(g.image, offline[i], atol=2e-3)
    assert gen.latest is not None and gen.latest.epoch_id == max(by_epoch)


def test_worker_is_bounded_and_never_blocks(tiny_generator_bundle, tiny_bundle):
    """A generator slower than the submissions drops the oldest pending epochs (counted) and
    keeps at most ``keep`` images; a retrieval-only bundle has no worker at all."""
    assert GeneratorWorker.for_bundle(load_bundle(tiny_bundle[0])) is None
    bundle = load_bundle(tiny_generator_bundle[0])
    worker = GeneratorWorker(bundle.build_generator(), keep=8, max_pending=2)
    d = bundle.template_embeddings.shape[1]
    z = np.random.default_rng(0).standard_normal((4, d)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n_batches = 60
    for b in range(n_batches):
        results = [Result(epoch_id=4 * b + i, marker=None, marker_timestamp=0.0,
                          last_sample_timestamp=0.0, n_repetitions=1, topk_ids=[],
                          topk_scores=[]) for i in range(4)]
        worker.submit(results, list(z))
    worker.stop(timeout=20)
    assert worker.n_generated + worker.n_dropped == 4 * n_batches
    assert len(worker.images) <= 8
    assert worker.latest is not None and worker.latest.epoch_id == 4 * n_batches - 1


def test_generation_waits_while_the_engine_decodes_but_not_forever(tiny_generator_bundle):
    """With several streams, epochs complete together and run as consecutive batches: a
    generation waits until the engine stops decoding (it would take CPU and the GIL from the
    next batch), and under a load that never ends it still runs after MAX_DEFER_S."""
    import threading
    import time

    from neuralign.realtime import generation

    bundle = load_bundle(tiny_generator_bundle[0])
    worker = GeneratorWorker(bundle.build_generator())
    d = bundle.template_embeddings.shape[1]
    z = np.ones((1, d), np.float32) / np.sqrt(d)
    busy = threading.Event()
    busy.set()
    worker.busy = busy.is_set
    result = [Result(epoch_id=0, marker=None, marker_timestamp=0.0, last_sample_timestamp=0.0,
                     n_repetitions=1, topk_ids=[], topk_scores=[])]
    worker.submit(result, list(z))
    time.sleep(generation.MAX_DEFER_S / 3)
    assert worker.n_generated == 0  # still decoding: the image waits
    busy.clear()
    assert worker.wait_for(1, 10) and worker.n_deferred == 1
    busy.set()  # a decoder that never stops: the image comes anyway, after the longest wait
    t0 = time.monotonic()
    worker.submit([Result(epoch_id=1, marker=None, marker_timestamp=0.0,
                          last_sample_timestamp=0.0, n_repetitions=1, topk_ids=[],
                          topk_scores=[])], list(z))
    assert worker.wait_for(2, 10)
    assert time.monotonic() - t0 >= generation.MAX_DEFER_S * 0.9
    worker.stop()


def test_generation_waits_for_an_epoch_that_completes_while_it_would_run(
        tiny_generator_bundle):
    """An epoch due before a generation would end goes first (the generation would hold the GIL
    and a core while its last sample is processed); one due later does not hold it up."""
    import time

    from neuralign.realtime import generation

    bundle = load_bundle(tiny_generator_bundle[0])
    worker = GeneratorWorker(bundle.build_generator())
    d = bundle.template_embeddings.shape[1]
    z = list(np.ones((1, d), np.float32) / np.sqrt(d))

    def result(i: int) -> list[Result]:
        return [Result(epoch_id=i, marker=None, marker_timestamp=0.0, last_sample_timestamp=0.0,
                       n_repetitions=1, topk_ids=[], topk_scores=[])]

    worker.submit(result(0), z)
    assert worker.wait_for(1, 10)  # how long a generation takes is known from here on
    # due within the generation's margin; once it is done the engine names one far off
    due = time.monotonic() + generation.GENERATION_MARGIN_S / 2
    worker.next_epoch_in = lambda: (due - time.monotonic() if time.monotonic() < due + 0.01
                                    else 10.0)
    worker.submit(result(1), z)
    assert worker.wait_for(2, 10)
    assert worker.n_deferred == 1 and worker.latest.epoch_id == 1
    assert worker.images[-1] is worker.latest
    worker.next_epoch_in = lambda: 10.0  # far off: no wait
    worker.submit(result(2), z)
    assert worker.wait_for(3, 10) and worker.n_deferred == 1
    worker.stop()


def _with_validation(bundle, ssim: float, ssim_mean: float, two_way: float):
    from neuralign.bundle import GeneratorValidation

    bundle.manifest.generator.validation = GeneratorValidation(
        split="test images", n_images=40, ssim=ssim, ssim_mean_image=ssim_mean, two_way_pixel=two_way)
    return bundle


@pytest.mark.parametrize(("ssim", "two_way", "shown"), [(0.60, 0.62, True), (0.50, 0.62, False),
                                                         (0.60, 0.48, False)])
def test_generated_images_only_when_the_generator_beat_the_mean_image(tiny_generator_bundle, ssim,
                                                                       two_way, shown):
    """The gate: a generator that lost to the mean training image on held-out images (SSIM or
    2-way identification) makes no images, and the engine says why; "always" / "off" override."""
    bundle = _with_validation(load_bundle(tiny_generator_bundle[0]), ssim, 0.55, two_way)
    assert (GeneratorWorker.for_bundle(bundle, "cpu") is not None) is shown
    reason = GeneratorWorker.off_reason(bundle)
    assert (reason == "") is shown
    if not shown:
        assert "mean training image" in reason and "retrieved image" in reason
    assert GeneratorWorker.for_bundle(bundle, "cpu", policy="always") is not None
    assert GeneratorWorker.for_bundle(bundle, "cpu", policy="off") is None
    assert "off" in GeneratorWorker.off_reason(bundle, "off")


def test_stop_drops_what_is_pending_after_its_timeout_and_joins(tiny_generator_bundle):
    """A generator slower than the epochs: stop() generates for at most its timeout, counts the
    rest as dropped and returns with the thread ended (a thread left in torch at interpreter
    exit aborts the process)."""
    import time

    bundle = load_bundle(tiny_generator_bundle[0])
    model = bundle.build_generator()
    real = model.generate

    def slow_generate(z):
        time.sleep(0.1)
        return real(z)

    model.generate = slow_generate
    worker = GeneratorWorker(model, max_pending=64)
    d = bundle.template_embeddings.shape[1]
    z = np.ones((2, d), np.float32) / np.sqrt(d)
    for b in range(40):
        worker.submit([Result(epoch_id=2 * b + i, marker=None, marker_timestamp=0.0,
                              last_sample_timestamp=0.0, n_repetitions=1, topk_ids=[],
                              topk_scores=[]) for i in range(2)], list(z))
    (thread,) = worker._threads
    t0 = time.monotonic()
    worker.stop(timeout=0.3)
    assert time.monotonic() - t0 < 2.0 and not thread.is_alive()
    assert worker.n_generated + worker.n_dropped == 80 and worker.n_dropped > 0


def _results(first: int, n: int) -> list[Result]:
    return [Result(epoch_id=first + i, marker=None, marker_timestamp=0.0, last_sample_timestamp=0.0,
                   n_repetitions=1, topk_ids=[], topk_scores=[]) for i in range(n)]


def _slow(model, seconds: float):
    import time

    real = model.generate

    def slow_generate(z):
        time.sleep(seconds)
        return real(z)

    model.generate = slow_generate
    return model


def _busy(model, seconds: float):
    """``model`` whose generation uses ``seconds`` of its thread's CPU (a busy loop)."""
    import time

    real = model.generate

    def busy_generate(z):
        t0 = time.thread_time()
        while time.thread_time() - t0 < seconds:
            pass
        return real(z)

    model.generate = busy_generate
    return model


def test_generator_keeps_to_its_cpu_share(tiny_generator_bundle):
    """With 20 epochs waiting and a generation of 50 ms of CPU, a quarter share means a
    generation at most every 200 ms: well under the 20 an unthrottled worker would make in the
    same second (an upper bound: a slower machine only makes fewer). The share counts CPU, not
    wall time: a generation that waits (here, sleeps) costs nothing and needs no rest."""
    import time

    bundle = load_bundle(tiny_generator_bundle[0])
    d = bundle.template_embeddings.shape[1]
    z = np.ones((1, d), np.float32) / np.sqrt(d)
    counts = {}
    for share in (1.0, 0.25):
        worker = GeneratorWorker(_busy(bundle.build_generator(), 0.05), cpu_share=share)
        for b in range(20):
            worker.submit(_results(b, 1), list(z))
        time.sleep(1.0)
        counts[share] = worker.n_generated
        worker.stop(timeout=0.0)
        assert worker.busy_s > 0
    assert counts[0.25] <= 7, counts
    sleeper = GeneratorWorker(_slow(bundle.build_generator(), 0.05), cpu_share=0.25)
    for b in range(20):
        sleeper.submit(_results(b, 1), list(z))
    time.sleep(1.0)
    sleeper.stop(timeout=0.0)
    assert sleeper.n_generated > 7  # waiting is not CPU: no rest after it
    with pytest.raises(ValueError, match="cpu_share"):
        GeneratorWorker(bundle.build_generator(), cpu_share=0.0)


def test_generator_skips_epochs_that_waited_too_long(tiny_generator_bundle):
    """An epoch whose turn comes after max_age_s is skipped (counted as dropped and too old):
    the live image stays close to what was just seen; the newest epoch is still generated."""
    bundle = load_bundle(tiny_generator_bundle[0])
    d = bundle.template_embeddings.shape[1]
    z = np.ones((1, d), np.float32) / np.sqrt(d)
    worker = GeneratorWorker(_slow(bundle.build_generator(), 0.6), max_age_s=0.3)
    worker.submit(_results(0, 1), list(z))
    import time

    time.sleep(0.05)  # the first generation is running (0.6 s): these wait longer than 0.3 s
    for b in range(1, 4):
        worker.submit(_results(b, 1), list(z))
    assert worker.wait_for(1, 10)
    time.sleep(0.3)
    assert worker.n_too_old == 3 and worker.n_dropped == 3
    worker.submit(_results(9, 1), list(z))  # a fresh one after the backlog: generated
    assert worker.wait_for(2, 10) and worker.latest.epoch_id == 9
    worker.stop()
