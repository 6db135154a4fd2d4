"""`neuralign replay` as a user runs it: a subprocess whose streams any LSL client can read."""

import os
import subprocess
import sys
import uuid

import mne
import numpy as np
import pylsl
import pytest

from neuralign.errors import DataError
from neuralign.offline.timelines import load_timeline, stitch_epochs


def test_replay_command_streams_data_and_markers_in_time(tiny_sim):
    _, _, data = tiny_sim
    raw = mne.io.read_raw_fif(data / "sim_test_raw.fif", verbose="error")
    sid = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralign", "replay", str(data / "sim_test_raw.fif"), "--name",
         f"cli-{sid[:6]}", "--source-id", sid, "--speed", "4", "--wait", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        info = pylsl.resolve_byprop("source_id", sid, 1, 15)
        minfo = pylsl.resolve_byprop("name", f"cli-{sid[:6]}-markers", 1, 15)
        assert info and minfo
        inlet = pylsl.StreamInlet(info[0], max_buflen=360)
        minlet = pylsl.StreamInlet(minfo[0], max_buflen=360)
        minlet.open_stream(timeout=5)
        inlet.open_stream(timeout=5)
        samples, stamps, markers = [], [], []
        deadline = pylsl.local_clock() + 60
        while len(stamps) < raw.n_times and pylsl.local_clock() < deadline:
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
    assert len(stamps) == raw.n_times
    np.testing.assert_allclose(np.asarray(samples)[:, 0], raw.get_data()[0], rtol=1e-5, atol=1e-9)
    stamps = np.asarray(stamps)
    assert [m for m, _ in markers] == [str(d) for d in raw.annotations.description]
    onsets = raw.time_as_index(raw.annotations.onset - raw.first_time, use_rounding=True)
    for (_, t), onset in zip(markers, onsets):
        assert abs(t - stamps[onset]) < 1 / raw.info["sfreq"]


def test_epoched_datasets_are_stitched_on_a_timeline(tiny_sim):
    _, _, data = tiny_sim
    tl = load_timeline(data / "preprocessed_eeg_test.npy", soa=0.2)
    d = np.load(data / "preprocessed_eeg_test.npy", allow_pickle=True).item()
    n_img, n_rep = d["preprocessed_eeg_data"].shape[:2]
    assert len(tl.events) == n_img * n_rep and tl.sfreq == pytest.approx(250.0)
    gaps = np.diff([o for o, _ in tl.events])
    assert set(gaps.tolist()) == {50}  # one onset every 200 ms at 250 Hz
    ep = np.zeros((2, 1, 10))
    ep[1, 0, 0] = 1.0
    x, ev = stitch_epochs(ep, ["a", "b"], sfreq=10.0, soa=0.5, seed=0)
    onset_b = dict((lab, o) for o, lab in ev)["b"]
    assert x[0, onset_b] == 1.0


def test_unknown_file_kind_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(DataError, match="notes.txt"):
        load_timeline(p)
