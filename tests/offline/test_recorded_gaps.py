"""A recording with a gap is epoched offline where the engine would cut it live.

The recorder stores the samples that arrived; the readers find the gap with the engine's clock
model (or take the engine's own decision from ``clock.jsonl``), restart the chain there and drop
the epochs across it; the FIF export marks it with MNE's discontinuity annotations.
"""

from __future__ import annotations

import mne
import numpy as np

from neuralign.config import PreprocessingConfig
from neuralign.offline.loaders.recording import read_continuous
from neuralign.offline.preprocess import epochs_from_continuous
from neuralign.realtime.recorder import Recorder
from neuralign.recording_format import recorded_clock

SFREQ = 250.0


def _record(path, stamps, data, events, live=None):
    rec = Recorder(path, ["Cz", "Pz"], ["eeg", "eeg"], SFREQ)
    for a in range(0, data.shape[1], 10):  # in chunks, as the engine writes them
        rec.write_samples(data[:, a:a + 10], stamps[a:a + 10])
    for t, v in events:
        rec.write_event({"timestamp": t, "value": v})
    for line in live or ():
        if "gap" in line:
            rec.write_gap(line["gap"])
        else:
            rec.write_placement(line["marker"], line["value"], line["sample"])
    rec.close()


def test_a_gap_in_a_recording_restarts_the_chain_and_drops_the_epochs_across(tmp_path):
    rng = np.random.default_rng(0)
    n, hole = 5000, (2500, 50)  # 20 s, 200 ms never arrived
    t_true = 1000.0 + np.arange(n) / SFREQ
    keep = np.ones(n, bool)
    keep[hole[0]:hole[0] + hole[1]] = False
    stamps = t_true[keep] + np.abs(rng.normal(0, 0.0005, keep.sum()))  # jittered arrivals
    data = rng.normal(0, 1e-5, (2, keep.sum())) + 2e-3  # a DC offset the chain must settle
    onsets = [1000, 2400, 2580, 4000]  # the windows of 2400 and 2580 span the hole
    events = [(t_true[k], f"img{k}") for k in onsets]
    _record(tmp_path / "rec", stamps, data, events)
    block = read_continuous(tmp_path / "rec")
    assert block.breaks == [hole[0]]
    assert [s for s, _ in block.events] == [1000, 2400, 2530, 3950]  # received indices
    pre = PreprocessingConfig(resample_sfreq=250.0, tmin=-0.2, tmax=0.8, baseline=(-0.2, 0.0))
    ep, _, _, kept = epochs_from_continuous(block.data, SFREQ, block.ch_names,
                                            np.array([s for s, _ in block.events]), pre,
                                            breaks=block.breaks)
    assert kept.tolist() == [True, False, False, True]  # the two across the hole are dropped
    assert np.all(np.isfinite(ep))
    # the FIF export carries the gap as MNE's discontinuity, and reads back the same
    raw = mne.io.read_raw_fif(tmp_path / "rec" / "raw.fif", verbose="error")
    assert "EDGE boundary" in raw.annotations.description
    fif = read_continuous(tmp_path / "rec" / "raw.fif")
    assert fif.breaks == block.breaks and fif.events == block.events


def test_the_engine_decisions_stored_with_a_recording_win(tmp_path):
    stamps = 50.0 + np.arange(1000) / SFREQ
    events = [(stamps[300], "a"), (stamps[600], "b")]
    live = [{"marker": stamps[300], "value": "a", "sample": 301}, {"gap": 700}]
    placed, breaks = recorded_clock(stamps, [{"timestamp": t, "value": v} for t, v in events],
                                    SFREQ, live)
    assert placed == [(301, "a"), (600, "b")] and breaks == [700]
    _record(tmp_path / "rec", stamps, np.zeros((2, 1000)), events, live)
    block = read_continuous(tmp_path / "rec")
    assert block.events == [(301, "a"), (600, "b")] and block.breaks == [700]
