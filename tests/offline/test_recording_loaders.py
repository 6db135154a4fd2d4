"""A lab's own recordings (issue 16): every format loads to the same epochs as the FIF fixture.

One continuous session is written by neuralign in each format (FIF, BrainVision, EDF, an XDF file
with the published chunk structure, a ``neuralign run --record`` directory, FIF + a BIDS
events.tsv); each must give the same events (to the sample) and the same epochs.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from neuralign.config import RecordingConfig, RecordingSplitConfig, config_from_dict
from neuralign.errors import DataError, UserError
from neuralign.offline.loaders.recording import load_recording_dataset, read_continuous

from .xdf_writer import XdfStream, write_xdf

SFREQ = 500.0
N_SAMPLES = 15000  # 30 s: a whole number of seconds (EDF data records)
CHANNELS = ["Fz", "Cz", "Pz", "P3", "P4", "O1", "Oz", "O2"]
# 4 concepts x 2 images; c3 is the zero-shot test concept; img 'c3_b' also has an unshown template
IMAGES = {f"c{c}_{k}": f"c{c}" for c in range(4) for k in "ab"}
REPS = 6


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict:
    """The FIF fixture (float32-exact values, 'start' marker + image onsets) and its images."""
    import mne
    from PIL import Image

    root = tmp_path_factory.mktemp("lab")
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((len(CHANNELS), N_SAMPLES)), axis=1) * 2e-7
    x += rng.standard_normal(x.shape) * 5e-6
    x = x.astype(np.float32).astype(np.float64)  # every format below can hold these exactly
    order = [img for _ in range(REPS) for img in rng.permutation(list(IMAGES))]
    onsets = 1000 + np.arange(len(order)) * 250 + rng.integers(0, 20, len(order))
    events = [(600, "start")] + [(int(s), img) for s, img in zip(onsets, order)]
    info = mne.create_info(CHANNELS, SFREQ, "eeg")
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.set_annotations(mne.Annotations([s / SFREQ for s, _ in events], 0.0,
                                        [lab for _, lab in events]))
    fif = root / "block_raw.fif"
    raw.save(fif, fmt="single", verbose="error")
    for img, concept in list(IMAGES.items()) + [("c3_t", "c3")]:
        (root / "stimuli" / concept).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
            root / "stimuli" / concept / f"{img}.png")
    return {"root": root, "raw": raw, "x": x, "events": events, "fif": fif}


def _config(root: Path, **split):
    return config_from_dict({
        "dataset": {"kind": "recording", "recording": {
            "images": str(root / "stimuli"), "split": {"by": "concepts", "test": ["c3"], **split}}},
        "preprocessing": {"resample_sfreq": 250.0, "notch_freqs": [50.0], "tmax": 0.6},
    })


def _write_xdf(s: dict, path: Path) -> Path:
    """EEG on a device clock 5000.25 s behind the recorder (ClockOffset chunks with 20 us noise),
    stamps jittered by 10 us, only every 4th sample stamped; markers from another machine 300.5 s
    behind, each stamped within 0.3 sample of its onset; an accelerometer stream; a trigger
    channel in the EEG stream (dropped)."""
    rng = np.random.default_rng(5)
    t_rec0 = 812.125  # recorder clock at sample 0
    k = np.arange(N_SAMPLES)
    dev_off, mk_off = 5000.25, 300.5
    eeg_ts = t_rec0 + k / SFREQ - dev_off + rng.uniform(-1e-5, 1e-5, N_SAMPLES)
    trig = np.zeros((N_SAMPLES, 1))
    data = np.hstack([s["x"].T, trig]).astype(np.float32)
    chans = [(c, "EEG", "volts") for c in CHANNELS] + [("TRIG", "TRG", "")]
    eeg_offsets = [(float(t - dev_off), dev_off + rng.uniform(-2e-5, 2e-5))
                   for t in np.arange(t_rec0, t_rec0 + 31, 5.0)]
    m_ts = np.array([t_rec0 + smp / SFREQ - mk_off + rng.uniform(-0.3, 0.3) / SFREQ
                     for smp, _ in s["events"]])
    mk_offsets = [(float(t - mk_off), mk_off) for t in np.arange(t_rec0, t_rec0 + 31, 5.0)]
    acc_ts = t_rec0 + np.arange(0, 30, 0.02)
    streams = [
        XdfStream("Accel", "Accelerometer", 50.0, "float32", acc_ts,
                  data=rng.standard_normal((len(acc_ts), 3)).astype(np.float32),
                  channels=[("X", "ACC", "g"), ("Y", "ACC", "g"), ("Z", "ACC", "g")]),
        XdfStream("ActiCHamp", "EEG", SFREQ, "float32", eeg_ts, data=data, channels=chans,
                  clock_offsets=eeg_offsets, deduce_every=4),
        XdfStream("PsychoPyMarkers", "Markers", 0.0, "string", m_ts,
                  labels=[lab for _, lab in s["events"]], clock_offsets=mk_offsets),
    ]
    return write_xdf(path, streams)


def _write_recording(s: dict, path: Path) -> Path:
    """Written by the engine's own Recorder: chunks of 37 samples on an LSL clock, markers stamped
    within 0.4 sample of their onset sample."""
    from neuralign.realtime.recorder import Recorder

    rng = np.random.default_rng(6)
    ts = 4321.5 + np.arange(N_SAMPLES) / SFREQ
    with Recorder(path, CHANNELS, ["eeg"] * len(CHANNELS), SFREQ, export_fif=False) as rec:
        for lo in range(0, N_SAMPLES, 37):
            rec.write_samples(s["x"][:, lo:lo + 37], ts[lo:lo + 37])
        for smp, lab in s["events"]:
            rec.write_event({"timestamp": ts[smp] + rng.uniform(-0.4, 0.4) / SFREQ, "value": lab})
    return path


def _write_events_table(s: dict, root: Path) -> tuple[Path, Path]:
    """The FIF without annotations + a BIDS events.tsv (onset s, stim_file) / a CSV of samples."""
    raw = s["raw"].copy().set_annotations(None)
    fif = root / "noann_raw.fif"
    raw.save(fif, fmt="single", overwrite=True, verbose="error")
    tsv = root / "sub-01_task-rsvp_events.tsv"
    with tsv.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["onset", "duration", "trial_type", "stim_file"])
        for smp, lab in s["events"]:
            w.writerow([repr(smp / SFREQ), 0.1, "start" if lab == "start" else "image",
                        "n/a" if lab == "start" else f"stimuli/{IMAGES[lab]}/{lab}.png"])
    return fif, tsv


FORMATS = ["fif", "brainvision", "edf", "xdf", "neuralign", "events_tsv"]


@pytest.fixture(scope="module")
def blocks(session) -> dict:
    import mne

    s, root = session, session["root"]
    out = {"fif": (s["fif"], None)}
    # mne's BrainVision export truncates onset * sfreq (time_as_index without rounding), which
    # puts e.g. 1017 / 500 s on sample 1016: hand it onsets a quarter sample late
    bv = s["raw"].copy()
    bv.set_annotations(mne.Annotations(bv.annotations.onset + 0.25 / SFREQ, 0.0,
                                       bv.annotations.description))
    mne.export.export_raw(root / "block.vhdr", bv, fmt="brainvision", verbose="error")
    out["brainvision"] = (root / "block.vhdr", None)
    mne.export.export_raw(root / "block.edf", s["raw"], fmt="edf", verbose="error")
    out["edf"] = (root / "block.edf", None)
    out["xdf"] = (_write_xdf(s, root / "block.xdf"), None)
    out["neuralign"] = (_write_recording(s, root / "block_rec"), None)
    out["events_tsv"] = _write_events_table(s, root)
    return out


def _edf_step(x: np.ndarray) -> float:
    """EDF stores 16-bit integers over the physical range (MNE: per channel type)."""
    return float((x.max() - x.min()) / (2**16 - 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_gives_fif_events_and_samples(session, blocks, fmt):
    path, events = blocks[fmt]
    block = read_continuous(path, events)
    expected = [(smp, lab) for smp, lab in session["events"]
                if not (fmt == "events_tsv" and lab == "start")]  # 'n/a' rows carry no image
    assert block.events == expected  # every marker on its exact sample
    assert block.ch_names == CHANNELS and block.sfreq == SFREQ
    assert block.ch_types == ["eeg"] * len(CHANNELS)
    # EDF: half a 16-bit step, plus the rounding of the physical range to 8 ASCII characters
    tol = _edf_step(session["x"]) * 0.51 if fmt == "edf" else \
        (1e-6 * np.abs(session["x"]).max() if fmt == "brainvision" else 0.0)  # uV float32
    np.testing.assert_allclose(block.data, session["x"], rtol=0, atol=tol)


@pytest.fixture(scope="module")
def reference(session, blocks):
    cfg = _config(session["root"])
    return load_recording_dataset(cfg, [session["fif"]])


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_format_loads_to_the_fif_epochs(session, blocks, reference, fmt):
    path, events = blocks[fmt]
    cfg = _config(session["root"])
    if events is not None:
        cfg.dataset.recording.events = [events]
    ds = load_recording_dataset(cfg, [path])
    assert ds.train.image_ids == reference.train.image_ids
    assert ds.test.image_ids == reference.test.image_ids == ["c3_a", "c3_b"]
    assert ds.ch_names == reference.ch_names and np.allclose(ds.times, reference.times)
    for got, ref in ((ds.train.data, reference.train.data), (ds.test.data, reference.test.data)):
        if fmt == "edf":
            # 16-bit samples: the quantisation error (<= step/2 per sample) passes through the
            # linear chain; bound it by 10 steps and check it stays below 1 % of the signal RMS
            step = _edf_step(session["x"])
            np.testing.assert_allclose(got, ref, rtol=0, atol=10 * step)
            assert np.sqrt(np.mean((got - ref) ** 2)) < 0.01 * np.sqrt(np.mean(ref ** 2))
        elif fmt == "brainvision":  # float32 in microvolts: float32 rounding only
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
        else:  # XDF, neuralign recording, events table: the very same float32 samples
            np.testing.assert_array_equal(got, ref)


def test_reference_dataset_split_and_templates(reference):
    ds = reference
    assert ds.provenance == "neuralign-causal" and ds.modality == "eeg"
    assert ds.train.n_images == 6 and ds.train.n_repetitions == REPS
    assert set(ds.train.concepts) == {"c0", "c1", "c2"} and ds.test.concepts == ["c3", "c3"]
    assert ds.template_ids == {"c3": ["c3_t"]}  # shown never, concept under test: classification
    assert ds.sfreq == 250.0 and ds.train.data.shape[-1] == 150


def test_epochs_are_the_causal_chain_of_the_continuous_data(session, reference):
    """The dataset is epochs_from_continuous of the raw at the annotation onsets (one path)."""
    from neuralign.offline.preprocess import epochs_from_continuous

    cfg = _config(session["root"])
    ev = [(smp, lab) for smp, lab in session["events"] if lab in IMAGES]
    ep, _, _, kept = epochs_from_continuous(session["x"], SFREQ, CHANNELS,
                                            np.array([e[0] for e in ev]), cfg.preprocessing)
    labs = [lab for (_, lab), k in zip(ev, kept) if k]
    first = [labs.index(img) for img in reference.test.image_ids]
    np.testing.assert_array_equal(reference.test.data[:, 0], ep[first])


def test_splits_by_images_and_by_block(session, blocks):
    root = session["root"]
    cfg = _config(root, by="images", test=["c2_a", "c3_b"])
    ds = load_recording_dataset(cfg, [session["fif"]])
    assert ds.test.image_ids == ["c2_a", "c3_b"]
    assert "c2_b" not in ds.train.image_ids and "c3_a" not in ds.train.image_ids  # zero-shot
    (root / "test_ids.txt").write_text("# test images\nc1_a\n")
    cfg = _config(root, by="images", test=[], test_file=str(root / "test_ids.txt"))
    assert load_recording_dataset(cfg, [session["fif"]]).test.image_ids == ["c1_a"]
    cfg = _config(root, test=[], n_test_concepts=2)
    assert len(set(load_recording_dataset(cfg, [session["fif"]]).test.concepts)) == 2
    # two blocks: the XDF one is the test block; all its images are test, so nothing trains
    cfg = _config(root, by="block", test=["1"])
    with pytest.raises(UserError, match="training and"):
        load_recording_dataset(cfg, [session["fif"], blocks["xdf"][0]])


def test_several_blocks_combine_repetitions(session, blocks):
    cfg = _config(session["root"])
    ds = load_recording_dataset(cfg, [session["fif"], blocks["neuralign"][0]])
    assert ds.train.n_repetitions == 2 * REPS


def test_bad_input_is_one_clear_error(session, tmp_path):
    root = session["root"]
    with pytest.raises(DataError, match="recording not found"):
        read_continuous(tmp_path / "nope.fif")
    bad = tmp_path / "events.csv"
    bad.write_text("time,label\n1.0,c0_a\n")
    with pytest.raises(DataError, match="events.csv: expected an onset column"):
        read_continuous(session["fif"], bad)
    with pytest.raises(UserError, match="split.test: by images: list the test images"):
        load_recording_dataset(_config(root, by="images", test=[]), [session["fif"]])
    with pytest.raises(UserError, match="concepts .* were never shown"):
        load_recording_dataset(_config(root, test=["c9"]), [session["fif"]])
    cfg = _config(root)
    cfg.dataset.recording.xdf_eeg_stream = "NoSuchAmp"
    xdf = _write_xdf(session, tmp_path / "b.xdf")
    with pytest.raises(DataError, match="b.xdf: dataset.recording.xdf_eeg_stream: no stream"):
        load_recording_dataset(cfg, [xdf])
    cfg = _config(root)
    cfg.dataset.recording.images = tmp_path
    with pytest.raises(DataError, match="no image files"):
        load_recording_dataset(cfg, [session["fif"]])


def test_every_recording_key_is_read():
    """Each key of dataset.recording is read by the loader (no schema key without a reader)."""
    src = "".join(Path(m).read_text() for m in (
        Path(__file__).parents[2] / "offline" / "loaders" / "recording.py",
        Path(__file__).parents[2] / "offline" / "prepare.py"))
    for section, prefix in ((RecordingConfig, r"rec\."), (RecordingSplitConfig, r"rec\.split\.")):
        for key in section.model_fields:
            assert re.search(prefix + key + r"\b", src) or (
                section is RecordingConfig and re.search(r"ds\.recording\." + key, src)), key


def test_lab_config_ships_and_validates():
    from neuralign.config import load_config

    cfg = load_config("lab", ["dataset.recording.split.by=concepts"])
    assert cfg.dataset.kind == "recording" and cfg.dataset.recording.split.by == "concepts"
    assert json.dumps(cfg.model_dump(mode="json"))  # a run can store it


def test_train_cli_images_and_repeated_data(capsys, tmp_path):
    """--images and a repeated --data are for kind 'recording' only; blocks keep their order."""
    from neuralign.cli import main
    from neuralign.cli.offline import _data_arg
    from neuralign.config import load_config

    assert main(["train", "--config", "demo", "--images", str(tmp_path)]) == 2
    assert "--images: only for dataset.kind 'recording'" in capsys.readouterr().err
    cfg = load_config("lab")
    last = _data_arg(cfg, ["b1.xdf", "b2/", "b3.vhdr"], None)
    assert cfg.dataset.recording.recordings == [Path("b1.xdf"), Path("b2/")]
    assert last == Path("b3.vhdr")
