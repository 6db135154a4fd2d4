"""`neuralign replay FILE.xdf`: the EEG stream and its markers over LSL, markers keeping their
original timing relative to the data (to the sample), clock offsets applied (issue 16)."""

import os
import subprocess
import sys
import uuid

import numpy as np
import pylsl

from neuralign.offline.timelines import load_timeline
from tests.offline.xdf_writer import XdfStream, write_xdf

SFREQ = 250.0


def _xdf(path):
    """EEG on a clock 77.5 s behind the recorder's, markers on one 3.25 s behind."""
    rng = np.random.default_rng(0)
    n = int(6 * SFREQ)
    t_rec = 100.0 + np.arange(n) / SFREQ
    data = rng.standard_normal((n, 4)).astype(np.float32) * 1e-5
    onsets = np.array([300, 555, 801, 1100])
    eeg = XdfStream("Amp", "EEG", SFREQ, "float32", t_rec - 77.5, data=data,
                    channels=[(c, "EEG", "volts") for c in ("O1", "Oz", "O2", "Pz")],
                    clock_offsets=[(float(t - 77.5), 77.5) for t in (100.0, 103.0, 106.0)])
    mk = XdfStream("Stim", "Markers", 0.0, "string", t_rec[onsets] + 0.001 - 3.25,
                   labels=["img_a", "img_b", "img_a", "img_c"],
                   clock_offsets=[(float(t - 3.25), 3.25) for t in (100.0, 106.0)])
    return write_xdf(path, [eeg, mk]), data, onsets


def test_xdf_timeline_keeps_markers_on_their_samples(tmp_path):
    path, data, onsets = _xdf(tmp_path / "rec.xdf")
    tl = load_timeline(path)
    assert tl.events == [(int(o), lab) for o, lab in zip(onsets, ["img_a", "img_b", "img_a",
                                                                   "img_c"])]
    np.testing.assert_array_equal(tl.data, data.T)
    assert tl.sfreq == SFREQ and tl.ch_names == ["O1", "Oz", "O2", "Pz"]


def test_replay_command_streams_an_xdf(tmp_path):
    path, data, onsets = _xdf(tmp_path / "rec.xdf")
    sid = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralign", "replay", str(path), "--name", f"x-{sid[:6]}",
         "--source-id", sid, "--speed", "4", "--wait", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        info = pylsl.resolve_byprop("source_id", sid, 1, 15)
        minfo = pylsl.resolve_byprop("name", f"x-{sid[:6]}-markers", 1, 15)
        assert info and minfo
        inlet, minlet = pylsl.StreamInlet(info[0]), pylsl.StreamInlet(minfo[0])
        minlet.open_stream(timeout=5)
        inlet.open_stream(timeout=5)
        samples, stamps, markers = [], [], []
        deadline = pylsl.local_clock() + 30
        while len(stamps) < len(data) and pylsl.local_clock() < deadline:
            chunk, ts = inlet.pull_chunk(timeout=0.2)
            samples += chunk
            stamps += ts
            m, mts = minlet.pull_chunk(timeout=0.0)
            markers += list(zip([x[0] for x in m], mts))
        m, mts = minlet.pull_chunk(timeout=1.0)
        markers += list(zip([x[0] for x in m], mts))
        del inlet, minlet
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    np.testing.assert_array_equal(np.asarray(samples, np.float32), data)
    stamps = np.asarray(stamps)
    assert [v for v, _ in markers] == ["img_a", "img_b", "img_a", "img_c"]
    for (_, t), onset in zip(markers, onsets):  # original timing relative to the data
        assert abs((t - stamps[0]) - onset / SFREQ) < 0.5 / SFREQ
