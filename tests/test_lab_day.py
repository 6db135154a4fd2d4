"""The lab day end to end (issue 16) on simulated blocks, over real LSL:

1. block 1 (training session + half the test repetitions) is streamed over LSL and recorded by
   ``neuralign run --bundle B --source lsl:... --markers lsl:... --record block1/``;
2. ``neuralign train --config lab --data block1/ --images image_set/`` trains on that recording
   (then evaluate, export);
3. the new bundle decodes block 2 live, trial for trial as offline decoding of block 2 does;
4. the same recording fine-tuned from a run pretrained on other subjects (``train --init``) makes
   a bundle that records its pretraining and decodes block 2 live as offline, too.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.conftest import FAST_TRAIN
from tests.lab_blocks import make_lab_blocks


@pytest.mark.slow
def test_lab_day_record_train_decode_next_block(tiny_sim, tiny_bundle, tiny_pretrained,
                                                tmp_path):
    import mne

    from neuralign.bundle import load_bundle
    from neuralign.cli import main
    from neuralign.config import load_config
    from neuralign.offline.loaders.recording import load_recording_dataset
    from neuralign.realtime.replay import LSLReplayer

    _, _, data = tiny_sim
    other_subject_bundle, _ = tiny_bundle
    blocks = make_lab_blocks(data, tmp_path / "blocks", test_reps_in_block1=2)

    # 1. the amplifier + stimulus PC: block 1 as LSL data + marker streams; neuralign records it
    raw1 = mne.io.read_raw_fif(blocks["block1"], preload=True, verbose="error")
    n_stim = sum(not d.startswith(("BAD", "EDGE")) for d in raw1.annotations.description)
    rep = LSLReplayer.from_raw(raw1, name="lab-amp", source_id="lab-amp-sid", speed=4.0,
                               marker_name="lab-stim", wait_for_consumers=30.0)
    rep.start()
    try:
        assert main(["run", "--bundle", str(other_subject_bundle), "--source", "lsl:lab-amp",
                     "--markers", "lsl:lab-stim", "--record", str(tmp_path / "block1"),
                     "--headless", "--n-epochs", str(n_stim), "--status-every", "30",
                     # block 1's training images are not in the other subject's bank: decode them
                     # anyway, so that --n-epochs counts every stimulus
                     "--set", "realtime.decode_markers=all"]) == 0
    finally:
        rep.stop()
    header = json.loads((tmp_path / "block1" / "header.json").read_text())
    assert header["complete"] and header["n_events"] == n_stim

    # the recording is lossless: same epochs as the file that was streamed, markers on the sample
    cfg = load_config("lab", [f"dataset.recording.images={data / 'image_set'}",
                              f"dataset.recording.split.test_file={blocks['test_ids']}"])
    from_rec = load_recording_dataset(cfg, [tmp_path / "block1"])
    from_fif = load_recording_dataset(cfg, [blocks["block1"]])
    np.testing.assert_array_equal(from_rec.train.data, from_fif.train.data)
    np.testing.assert_array_equal(from_rec.test.data, from_fif.test.data)
    assert from_rec.train.n_repetitions == 2 and from_rec.test.n_repetitions == 2
    assert from_rec.template_ids  # unshown images of the test concepts: classification

    # 2. train on the recording, evaluate, export
    sets = [f"--set={s}" for s in FAST_TRAIN + ["model.dropout=0.0"]]
    assert main(["train", "--config", "lab", "--data", str(tmp_path / "block1"),
                 "--images", str(data / "image_set"),
                 "--set", f"dataset.recording.split.test_file={blocks['test_ids']}",
                 *sets, "--out", str(tmp_path / "run")]) == 0
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--no-masks"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["retrieval"]["top1"] >= 0.0 and "classification" in report
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "bundle")]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert sorted(bundle.template_ids) == blocks["test_ids"].read_text().split()
    assert bundle.manifest.provenance == "neuralign-causal"

    # 3. block 2 live with the new bundle == offline decoding of block 2
    _live_equals_offline(bundle, blocks["block2"], cfg)

    # 4. the same recording, fine-tuned from a run pretrained on two other subjects
    pretrained_run = tiny_pretrained[0]
    assert main(["train", "--config", "lab", "--data", str(tmp_path / "block1"),
                 "--images", str(data / "image_set"),
                 "--set", f"dataset.recording.split.test_file={blocks['test_ids']}",
                 *sets, "--init", str(pretrained_run), "--out", str(tmp_path / "run_init")]) == 0
    assert main(["export", "--run", str(tmp_path / "run_init"),
                 "--out", str(tmp_path / "bundle_init")]) == 0
    adapted = load_bundle(tmp_path / "bundle_init")
    assert adapted.manifest.pretrained.subjects == ["1", "2"]
    assert adapted.manifest.pretrained.run == str(pretrained_run.resolve())
    _live_equals_offline(adapted, blocks["block2"], cfg)


def _live_equals_offline(bundle, block2, cfg) -> None:
    """Block 2 replayed over LSL into the engine: the same trials, markers and top-1 as offline
    decoding of the file."""
    from neuralign.offline.single_trial import decode_recording
    from neuralign.realtime.replay.session import replay_session

    session = replay_session(bundle, block2, cfg.realtime, speed=2.0, device="cpu")
    session.start()
    t0 = time.monotonic()
    try:
        while session.engine.n_decoded < session.n_trials and time.monotonic() - t0 < 60:
            assert session.engine.error is None
            time.sleep(0.1)
    finally:
        session.stop()
    online = session.results_in_stimulus_order()
    offline = decode_recording(bundle, block2)
    assert len(online) == len(offline) == session.n_trials == 12  # 6 test images x 2 reps
    assert [r.marker for r in online] == [o["marker"] for o in offline]
    assert [r.topk_ids[0] for r in online] == [o["topk_ids"][0] for o in offline]
    np.testing.assert_allclose([r.topk_scores[0] for r in online],
                               [o["topk_scores"][0] for o in offline], atol=1e-4)
