"""The stream clock model on stamp sequences the way devices produce them (see neuralign/signal/clock.py).

Stamps are generated from a known truth (the host time each sample was produced), so each test
knows exactly where every sample and every marker belongs, and which samples never came.
"""

from __future__ import annotations

import numpy as np
import pytest

from neuralign.signal.clock import ClockSettings, MarkerClockCheck, StreamClock


def feed(sfreq=1000.0, dur=40.0, chunk=10, jitter=0.0005, mode="chunk_push", drop=None,
         ppm=0.0, late_every=None, late_s=0.05, jump_back=None, seed=0,
         settings: ClockSettings | None = None):
    """Stream ``dur`` s through a StreamClock; returns (clock, gaps, sent indices, true times)."""
    rng = np.random.default_rng(seed)
    n = int(dur * sfreq)
    sent = np.ones(n, bool)
    if drop is not None:
        sent[drop[0]:drop[0] + drop[1]] = False
    t_true = 100.0 + np.arange(n) / (sfreq * (1 + ppm * 1e-6))
    if jump_back is not None:  # the sender's clock steps back at this sample
        t_true[jump_back[0]:] -= jump_back[1]
    idx = np.flatnonzero(sent)
    clock = StreamClock(sfreq, settings)
    gaps, written = [], 0
    for k, a in enumerate(range(0, len(idx), chunk)):
        ii = idx[a:a + chunk]
        push = t_true[ii[-1]] + abs(rng.normal(0, jitter))
        if late_every and k % late_every == late_every - 1:
            push += late_s
        if mode == "chunk_push":  # liblsl: the last sample at the push, the others back-computed
            stamps = push - (len(ii) - 1 - np.arange(len(ii))) / sfreq
        elif mode == "nominal":  # a hardware clock: t0 + k / nominal
            stamps = 100.0 + ii / sfreq
        else:  # each sample stamped on arrival
            stamps = t_true[ii] + np.abs(rng.normal(0, jitter, len(ii)))
        gaps += clock.observe(written, stamps, arrival=push + 1e-4)
        written += len(ii)
    return clock, gaps, idx, t_true


def placement_errors(clock, idx, t_true, every=997):
    """|model index - true index| for markers stamped at true onset times."""
    ks = np.arange(1000, len(idx) - 1000, every)
    got = np.array([clock.index_of(t_true[idx[k]]) for k in ks])
    return np.abs(got - ks)


@pytest.mark.parametrize("chunk,jitter", [(1, 0.0005), (10, 0.0005), (10, 0.003), (12, 0.02)])
def test_jittered_pushes_make_no_gap_and_markers_land_on_their_sample(chunk, jitter):
    sfreq = 256.0 if chunk == 12 else 1000.0
    clock, gaps, idx, t_true = feed(sfreq=sfreq, chunk=chunk, jitter=jitter)
    assert gaps == []
    # Bluetooth-like jitter (20 ms SD at 256 Hz): the line needs a few seconds to be exact
    assert placement_errors(clock, idx, t_true).max() <= (1 if jitter > 0.01 else 0)
    rep = clock.snapshot()
    assert rep.jitter_p99_ms > 0.5 * jitter * 1e3, rep
    assert rep.gaps == 0 and rep.missing_samples == 0


@pytest.mark.parametrize("mode", ["chunk_push", "sample_arrival", "nominal"])
def test_a_real_gap_is_one_gap_with_the_exact_count(mode):
    clock, gaps, idx, t_true = feed(mode=mode, drop=(20000, 137), chunk=10)
    assert [(g.index, g.missing) for g in gaps] == [(20000, 137)]
    assert placement_errors(clock, idx, t_true).max() == 0  # both sides of the gap
    # a marker inside the hole maps to the first sample after it (its epoch spans the gap)
    assert clock.index_of(t_true[20050]) == 20000


def test_late_chunks_are_jitter_not_gaps():
    clock, gaps, idx, t_true = feed(late_every=97, late_s=0.05)
    assert gaps == []
    rep = clock.snapshot()
    assert rep.late_deliveries >= 30
    assert placement_errors(clock, idx, t_true).max() == 0
    # rare late chunks do not widen the tolerance: a 10 ms gap is still found
    assert clock.tolerance < 0.01


def test_a_sender_restart_is_a_backward_gap():
    clock, gaps, _, _ = feed(jump_back=(15000, 3.0))
    assert [(g.index, g.missing) for g in gaps] == [(15000, -3000)]


def test_fault_nominal_stamps_on_a_drifting_clock_are_reported():
    clock, gaps, idx, t_true = feed(ppm=150.0, dur=60.0)
    assert gaps == [] and abs(clock.snapshot().rate_ppm - 150.0) < 10
    assert placement_errors(clock, idx, t_true).max() == 0
    clock, gaps, _, _ = feed(ppm=150.0, dur=60.0, mode="nominal")
    rep = clock.snapshot()
    assert gaps == [] and abs(rep.arrival_drift_ppm - 150.0) < 10, rep
    assert rep.warnings and "per hour" in rep.warnings[0]


def test_settled_waits_for_the_verdict_on_a_suspicious_chunk():
    clock = StreamClock(1000.0)
    t = 10.0 + np.arange(3000) / 1000.0
    for k in range(0, 2000, 10):
        clock.observe(k, t[k:k + 10])
    assert clock.settled == 2000
    clock.observe(2000, t[2010:2020])  # 10 samples missing ... or a late chunk?
    assert clock.settled == 2000  # undecided: nothing from sample 2000 on is final
    gaps = []
    for k in range(2020, 2990, 10):
        gaps += clock.observe(k - 10, t[k:k + 10])
    assert [(g.index, g.missing) for g in gaps] == [(2000, 10)]
    assert clock.settled == clock.n_seen


def test_fault_marker_clock_behind_the_data_or_drifting_is_reported():
    check = MarkerClockCheck(max_lag_s=0.25)
    for k in range(5):  # stamps 0.5 s behind the time they are sent
        check.add(100.0 + k, 100.0 + k + 0.5 + 0.002, data_latency_s=0.002)
    assert check.offset_ms == pytest.approx(500.0, abs=1)
    assert check.warnings and "behind" in check.warnings[0]
    ok = MarkerClockCheck()
    for k in range(5):
        ok.add(100.0 + k, 100.0 + k + 0.003, data_latency_s=0.002)
    assert ok.warnings == []
    drifting = MarkerClockCheck()  # a presenter on another host, 300 ppm off, not synced
    for k in range(40):
        drifting.add(100.0 + 3 * k, 100.0 + 3 * k + 0.003 + 3 * k * 300e-6, 0.002)
    assert drifting.drift_ppm == pytest.approx(300, abs=5)
    assert any("drifts" in w for w in drifting.warnings)


def test_recorded_stamps_place_events_where_the_live_model_does():
    from neuralign.signal.clock import place_recorded_events

    rng = np.random.default_rng(3)
    sfreq, n = 500.0, 30000
    t_true = 50.0 + np.arange(n) / sfreq
    keep = np.ones(n, bool)
    keep[12000:12040] = False  # 80 ms lost
    idx = np.flatnonzero(keep)
    stamps = np.empty(len(idx))
    for a in range(0, len(idx), 10):  # chunks stamped at their push
        ii = idx[a:a + 10]
        push = t_true[ii[-1]] + abs(rng.normal(0, 0.001))
        stamps[a:a + len(ii)] = push - (len(ii) - 1 - np.arange(len(ii))) / sfreq
    onsets = np.arange(600, n - 600, 331)
    onsets = onsets[keep[onsets]]
    rec = place_recorded_events(stamps, t_true[onsets], sfreq)
    expected = np.searchsorted(idx, onsets)  # index among the samples received
    assert rec.events == expected.tolist()
    assert [(g.index, g.missing) for g in rec.gaps] == [(12000, 40)]
    # ideal stamps: the nearest sample, as before
    ideal = place_recorded_events(t_true, t_true[onsets] + 0.0004, sfreq)
    assert ideal.events == onsets.tolist() and ideal.gaps == []
    # outside the recording: None
    assert place_recorded_events(t_true, np.array([t_true[0] - 1.0]), sfreq).events == [None]
