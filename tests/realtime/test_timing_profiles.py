"""Device timing profiles: the planner's statistics against each profile's parameters, and
``LSLReplayer(timing=...)`` read by a real pylsl inlet on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import mne
import numpy as np
import pylsl
import pytest

from neuralign.realtime.replay import LSLReplayer, get_profile, plan_schedule
from neuralign.realtime.replay.timing import (
    PROFILES,
    ChunkSizes,
    Dropouts,
    IndexRange,
    Latency,
    Schedule,
    TimingProfile,
)

NAMES = ["ideal", "wired-1khz", "cyton-dongle", "consumer-256", "brainflow"]
REAL = [n for n in NAMES if n != "ideal"]


def _sfreq(profile: TimingProfile) -> float:
    return profile.sfreq or 250.0


def _fit_ppm(index: np.ndarray, t: np.ndarray, sfreq: float) -> float:
    """Rate of ``t`` against sample count, in ppm off nominal (least squares)."""
    slope = np.polyfit(index - index[0], t - t[0], 1)[0]
    return (1.0 / (slope * sfreq) - 1.0) * 1e6


# --- the planner ---------------------------------------------------------------------------------

def test_the_named_profiles_exist_and_say_what_they_model():
    assert set(NAMES) <= set(PROFILES)
    for name in NAMES:
        assert get_profile(name).name == name and len(get_profile(name).description) > 60
    with pytest.raises(KeyError, match="consumer-256"):
        get_profile("muse")
    assert get_profile("wired-1khz", drift_ppm=0).drift_ppm == 0
    assert get_profile("consumer-256").without_losses().dropouts is None


@pytest.mark.parametrize("gap", [False, True], ids=["no-gap", "gap"])
@pytest.mark.parametrize("name", NAMES)
def test_every_kept_sample_is_planned_once_in_order_and_never_early(name, gap):
    profile = get_profile(name)
    if gap:
        profile = profile.with_gap(at_s=7.0, n_samples=30)
    sf, n = _sfreq(profile), int(120 * _sfreq(profile))
    s = plan_schedule(n, sf, profile, seed=4, t0=5000.0)
    assert np.all(np.diff(s.index) > 0)  # each sample at most once, in order
    lost = np.zeros(n, dtype=bool)
    for r in s.dropped:
        lost[r.start:r.stop] = True
    np.testing.assert_array_equal(s.index, np.flatnonzero(~lost))  # all the others, exactly
    assert s.n_delivered + s.n_dropped == n
    if gap:
        g0 = round(7.0 * sf)
        assert any(r.start <= g0 and g0 + 30 <= r.stop for r in s.dropped)
    elif profile.dropouts is None:
        assert s.dropped == ()
    assert np.all(np.diff(s.push_time) >= 0)
    assert np.all(s.delay_s >= 0)  # a chunk never goes out before its last sample exists
    last = s.bounds[1:] - 1
    if profile.stamping == "chunk_push":
        np.testing.assert_array_equal(s.stamps[last], s.push_time)
        inner = np.ones(s.n_delivered - 1, dtype=bool)
        inner[last[:-1]] = False  # steps inside a chunk: exactly one nominal period
        np.testing.assert_allclose(np.diff(s.stamps)[inner], 1 / sf, rtol=0, atol=1e-9)
    elif profile.stamping == "sample_arrival":
        chunk_of = np.repeat(np.arange(s.n_chunks), s.chunk_sizes)
        assert np.all(s.stamps <= s.push_time[chunk_of])  # stamped before it is pushed
        assert np.all(s.stamp_error_s >= 0)  # ... and after it was produced
    else:
        np.testing.assert_array_equal(s.stamps, 5000.0 + s.index / sf)


def test_ideal_plans_the_old_chunks_push_times_and_stamps_bit_for_bit():
    sf, n, cs, t0 = 250.0, 1003, 7, 12345.678
    s = plan_schedule(n, sf, get_profile("ideal"), t0=t0, chunk_size=cs)
    starts = np.arange(0, n, cs)
    np.testing.assert_array_equal(s.bounds, np.r_[starts, n])
    np.testing.assert_array_equal(s.stamps, t0 + np.arange(n) / sf)  # what the replayer sends
    np.testing.assert_array_equal(s.push_time, t0 + (np.minimum(starts + cs, n) - 1) / sf)
    np.testing.assert_array_equal(s.t_true, s.stamps)


@pytest.mark.parametrize("name", NAMES)
def test_packet_sizes_match_the_profile(name):
    profile = get_profile(name).without_losses().replace(stalls=None)
    sf = _sfreq(profile)
    s = plan_schedule(int(300 * sf), sf, profile, seed=1)
    sizes = s.chunk_sizes[:-1]  # the last packet is cut at the end of the data
    if profile.transport_period_s is None and profile.poll_period_s is None:
        choices = (profile.chunks or ChunkSizes.fixed(10)).choices
        assert set(sizes.tolist()) <= set(choices)
        assert sizes.mean() == pytest.approx(np.mean(choices), rel=0.02)
    else:  # pushes on the tick grid: at most one per tick, the samples of a tick together
        period = profile.poll_period_s or profile.transport_period_s
        ticks = np.diff(s.push_time) / period
        np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-6)
        assert np.all(np.round(ticks) >= 1)
        assert sizes.mean() >= period * sf * 0.99


@pytest.mark.parametrize("name", ["wired-1khz", "consumer-256", "brainflow"])
def test_delays_have_the_profiles_base_mean_and_jitter(name):
    """Profiles whose packets are spaced well beyond their jitter: in-order delivery rarely binds,
    so the realised delays are the drawn ones."""
    profile = get_profile(name).without_losses().replace(stalls=None, poll_period_s=None,
                                                         transport_period_s=None)
    sf = _sfreq(profile)
    d = plan_schedule(int(600 * sf), sf, profile, seed=2).delay_s
    lat = profile.latency
    assert d.min() >= lat.base_s - 1e-12
    assert d.mean() == pytest.approx(lat.mean_s, rel=0.05)
    assert d.std() == pytest.approx(lat.jitter_sd_s, rel=0.08)


def test_latency_draws_are_base_plus_a_gamma_with_the_given_sd():
    x = Latency(base_s=0.004, jitter_sd_s=0.01, shape=2.0).draw(np.random.default_rng(0), 200_000)
    assert x.min() >= 0.004 and x.std() == pytest.approx(0.01, rel=0.02)
    assert x.mean() == pytest.approx(0.004 + 0.01 * np.sqrt(2), rel=0.02)
    assert np.median(x) < x.mean()  # right-skewed: mostly small, a tail


def test_cyton_stamps_arrive_in_16ms_bursts_with_tens_of_ms_jitter():
    profile = get_profile("cyton-dongle").without_losses().replace(stalls=None)
    s = plan_schedule(250 * 600, 250.0, profile, seed=3)
    steps = np.diff(s.stamps)
    np.testing.assert_allclose(steps / 0.016, np.round(steps / 0.016), atol=1e-6)  # on the ticks
    assert np.mean(steps == 0) > 0.5  # several samples share one burst's stamp
    err = s.stamp_error_s
    assert 0.004 < err.std() < 0.02 and np.percentile(err, 99) > 0.02


@pytest.mark.parametrize("ppm", [None, -150.0, 0.0])
@pytest.mark.parametrize("name", NAMES)
def test_drift_shows_in_true_times_and_in_host_stamps(name, ppm):
    profile = get_profile(name).without_losses().replace(stalls=None)
    if ppm is not None:
        profile = profile.replace(drift_ppm=ppm)
    sf = _sfreq(profile)
    s = plan_schedule(int(600 * sf), sf, profile, seed=5)
    assert _fit_ppm(np.arange(s.n_samples), s.t_true, sf) == pytest.approx(profile.drift_ppm,
                                                                           abs=0.01)
    stamp_ppm = _fit_ppm(s.index, s.stamps, sf)
    if profile.stamping == "nominal":  # the device's own clock: nominal, off the host's time
        assert stamp_ppm == pytest.approx(0.0, abs=0.01)
    else:  # stamps taken on the host follow the true rate
        assert stamp_ppm == pytest.approx(profile.drift_ppm, abs=2.0)


def test_stalls_deliver_the_backlog_at_once_and_chunk_stamps_step_backwards():
    profile = get_profile("consumer-256").without_losses()
    st = profile.stalls
    steady = profile.replace(latency=Latency(base_s=0.005))  # late only when stalled
    s = plan_schedule(256 * 1800, 256.0, steady, seed=6)
    late = s.delay_s > 0.006
    n_stalls = np.count_nonzero(np.diff(np.r_[0, late.astype(int)]) == 1)
    expected = st.rate_hz * 1800
    assert abs(n_stalls - expected) < 4 * np.sqrt(expected)  # Poisson (a few overlap)
    run_of = np.cumsum(np.diff(np.r_[0, late.astype(int)]) == 1)[late]  # stall of each chunk
    longest = np.array([s.delay_s[late][run_of == r].max() for r in np.unique(run_of)])
    assert np.all(longest >= st.min_s * 0.5)  # a chunk produced as the stall began waits it out
    assert np.mean(longest <= st.max_s + 0.006) > 0.9  # longer only where two stalls overlap
    same = np.diff(s.push_time) == 0
    assert np.count_nonzero(same) >= n_stalls  # each stall ends in a burst: same push time
    assert np.all(late[:-1][same])  # ... of chunks held back
    jittered = plan_schedule(256 * 1800, 256.0, profile, seed=6)
    assert jittered.delay_s.max() >= st.min_s
    assert np.diff(jittered.stamps).min() < -0.02  # a burst's chunks stamped on top of each other


def test_random_dropouts_follow_their_rate_and_length():
    profile = get_profile("consumer-256").replace(stalls=None, dropouts=Dropouts(0.5, 12, 12))
    s = plan_schedule(256 * 600, 256.0, profile, seed=7)
    runs = [len(r) for r in s.dropped]
    assert 230 <= len(runs) <= 360  # 300 expected (Poisson), a few merge
    assert min(runs) >= 12 and np.median(runs) == 12
    assert get_profile("wired-1khz").dropouts is None  # wired amplifiers lose nothing


def test_plans_are_reproducible_for_a_seed_and_loop_passes_continue():
    profile = get_profile("consumer-256")
    a = plan_schedule(256 * 60, 256.0, profile, seed=11, t0=1.0)
    b = plan_schedule(256 * 60, 256.0, profile, seed=11, t0=1.0)
    c = plan_schedule(256 * 60, 256.0, profile, seed=12, t0=1.0)
    for field in ("push_time", "index", "stamps", "t_true", "bounds"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.push_time, c.push_time)
    np.testing.assert_array_equal(a.shifted(2.5).stamps, a.stamps + 2.5)
    n = 256 * 60
    nxt = plan_schedule(n, 256.0, profile, seed=11, t0=1.0, first_index=n)
    both = Schedule.concat([a, nxt])
    assert both.n_samples == 2 * n and both.index[0] == a.index[0] and nxt.index[0] >= n
    assert np.all(np.diff(both.index) > 0)
    rate = 256.0 * (1 + profile.drift_ppm * 1e-6)
    assert nxt.true_time(n) == pytest.approx(1.0 + n / rate, abs=1e-9)


# --- over LSL ------------------------------------------------------------------------------------

def _open(source_id: str) -> pylsl.StreamInlet:
    infos = pylsl.resolve_byprop("source_id", source_id, 1, 5.0)
    assert infos, f"stream {source_id} not found"
    inlet = pylsl.StreamInlet(infos[0], max_chunklen=64, recover=False)
    inlet.open_stream(5.0)
    return inlet


def _drain(inlet: pylsl.StreamInlet, n: int, timeout: float = 10.0):
    data, stamps = [], []
    deadline = time.monotonic() + timeout
    while sum(len(s) for s in stamps) < n and time.monotonic() < deadline:
        d, ts = inlet.pull_chunk(timeout=0.05, max_samples=4096)
        if ts:
            data.append(np.asarray(d))
            stamps.append(np.asarray(ts))
    return (np.concatenate(data) if data else np.zeros((0, 2)),
            np.concatenate(stamps) if stamps else np.zeros(0))


def _replay(profile: TimingProfile | None, sfreq: float, n: int, events, **kw):
    """Run a replay to its end; returns (replayer, data, stamps, markers) as a consumer got them."""
    sid = uuid.uuid4().hex
    data = np.vstack([np.arange(n), np.sin(np.arange(n) / 7.0)])
    rep = LSLReplayer(data, sfreq, ["idx", "s"], ["misc", "eeg"], events,
                      name=f"timing-{sid[:6]}", source_id=sid, timing=profile,
                      wait_for_consumers=15.0, **kw)
    rep.start()
    inlet = _open(sid)
    markers = _open(sid + "-markers")  # the last consumer: sending starts now
    try:
        assert rep.wait_done(30.0) and rep.error is None
        expect = rep.schedule.n_delivered if profile is not None else rep.n_sent
        got, ts = _drain(inlet, expect)
        m, mts = [], []
        deadline = time.monotonic() + 5.0
        while len(m) < rep.n_markers_sent and time.monotonic() < deadline:
            x, t = markers.pull_chunk(timeout=0.05)
            m += [v[0] for v in x]
            mts += t
    finally:
        del inlet, markers
        rep.stop()
    return rep, got, ts, (m, np.asarray(mts))


@pytest.mark.parametrize("name", REAL)
def test_a_pylsl_inlet_gets_exactly_the_kept_samples_with_the_profiles_stamps(name):
    profile = get_profile(name).with_gap(at_s=1.0, n_samples=25)
    sf = _sfreq(profile)
    n = int(2.5 * sf)
    g0 = round(1.0 * sf)
    onsets = [3, g0 + 5, int(1.8 * sf)]  # the second one's sample is lost
    rep, got, ts, (mvals, mts) = _replay(profile, sf, n, [(k, f"m{k}") for k in onsets])
    s = rep.schedule
    assert IndexRange(g0, g0 + 25) in s.dropped or any(
        r.start <= g0 and g0 + 25 <= r.stop for r in s.dropped)
    np.testing.assert_array_equal(got[:, 0], s.index)  # every kept sample once, in order
    assert rep.n_sent == s.n_delivered == len(ts)
    last = s.bounds[1:] - 1
    clocks = np.asarray(rep.push_clocks)
    assert np.all(clocks >= s.push_time - 1e-6)  # paced: never before the planned push
    assert np.all(clocks - s.push_time < 0.5)  # ... and not far behind it (loaded machine)
    if profile.stamping == "chunk_push":  # the last sample is stamped at the push
        np.testing.assert_array_equal(ts[last], clocks)
        lateness = ts - s.stamps
        chunk_of = np.repeat(np.arange(s.n_chunks), s.chunk_sizes)
        np.testing.assert_allclose(lateness, lateness[last][chunk_of], rtol=0, atol=1e-9)
    else:
        np.testing.assert_array_equal(ts, s.stamps)
    # the stamps show the device's jitter, not t0 + k / sfreq
    err = ts - s.t_true[s.index]
    assert err.min() >= profile.latency.base_s - 1e-6
    assert err.std() >= 0.5 * profile.latency.jitter_sd_s
    assert np.abs(ts - (rep.t0 + s.index / sf)).max() > 1e-4
    # markers: every one, with its onset sample's true host time (also the lost one's)
    assert mvals == [f"m{k}" for k in onsets]
    np.testing.assert_array_equal(mts, [s.true_time(k) for k in onsets])


def test_the_ideal_profile_replays_exactly_what_no_profile_does():
    sf, n = 250.0, 300
    events = [(0, "first"), (5, "a"), (123, "b"), (299, "last")]
    runs = {}
    for label, profile in (("none", None), ("ideal", get_profile("ideal"))):
        runs[label] = _replay(profile, sf, n, events, chunk_size=7, speed=0, loop=True,
                              n_loops=2)
    for rep, got, ts, (mvals, mts) in runs.values():
        np.testing.assert_array_equal(got[:, 0], np.r_[np.arange(n), np.arange(n)])
        np.testing.assert_array_equal(ts, rep.t0 + np.arange(2 * n) / sf)
        assert mvals == [v for _, v in events] * 2
        np.testing.assert_array_equal(mts, ts[[0, 5, 123, 299, n, n + 5, n + 123, n + 299]])
    rep = runs["ideal"][0]
    assert rep.n_sent == 2 * n and rep.n_dropped == 0
    np.testing.assert_array_equal(rep.schedule.bounds, _two_pass_bounds(n, 7))


def _two_pass_bounds(n: int, cs: int) -> np.ndarray:
    """Chunk offsets of two passes of ``n`` samples in chunks of ``cs`` (the last one short)."""
    one = np.r_[np.arange(0, n, cs), n]
    return np.r_[one, one[1:] + n]


def test_replay_cli_takes_a_timing_profile(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "neuralign", "replay", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for name in PROFILES:
        assert name in " ".join(help_text.split())
    sf, n = 256.0, 512
    raw = mne.io.RawArray(np.zeros((2, n)), mne.create_info(["Fz", "Cz"], sf, "eeg"),
                          verbose="error")
    raw.set_annotations(mne.Annotations([0.5, 1.5], 0.0, ["x", "y"]))
    path = tmp_path / "tiny_raw.fif"
    raw.save(path, verbose="error")
    bad = subprocess.run([sys.executable, "-m", "neuralign", "replay", str(path), "--timing",
                          "nope"], capture_output=True, text=True, env={**os.environ})
    assert bad.returncode != 0 and "consumer-256" in bad.stderr + bad.stdout
    expected = plan_schedule(n, sf, get_profile("consumer-256"), seed=3)
    sid = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "neuralign", "replay", str(path), "--source-id", sid,
         "--timing", "consumer-256", "--timing-seed", "3", "--speed", "4", "--wait", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        inlet = _open(sid)
        markers = _open(sid + "-markers")  # both consumers connected: sending starts
        n_got, m = 0, []
        deadline = time.monotonic() + 20
        while (n_got < expected.n_delivered or len(m) < 2) and time.monotonic() < deadline:
            n_got += len(inlet.pull_chunk(timeout=0.05, max_samples=4096)[1])
            m += [v[0] for v in markers.pull_chunk(timeout=0.0)[0]]
        del inlet, markers
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert n_got == expected.n_delivered  # the same plan in another process, for the seed
    assert m == ["x", "y"]
    assert f"{expected.n_delivered} samples sent, {expected.n_dropped} lost" in out
