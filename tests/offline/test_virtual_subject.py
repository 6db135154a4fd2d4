"""The virtual subject (offline/simulator/live.py): the simulator's responses, live on LSL."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
import pytest

from neuralign.config import SimulationConfig
from tests.conftest import TINY_SIM

pytestmark = pytest.mark.timeout(60)


def _cfg(**changes) -> SimulationConfig:
    return SimulationConfig(**{**TINY_SIM, **changes})


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def _distinct_pair(sig) -> tuple[str, str]:
    """Two test images whose noise-free responses differ most."""
    ids = [i for i, s in zip(sig.image_ids, sig.subject.paradigm.split) if s == "test"]
    best = min(((_corr(sig.template(a), sig.template(b)), a, b)
                for k, a in enumerate(ids) for b in ids[k + 1:]))
    return best[1], best[2]


def test_signal_adds_each_image_response_at_its_onset(caplog):
    """Same live seed with and without stimuli: the difference is exactly the responses, from
    their onset samples on (overlaps add); the background joins blocks without steps."""
    from neuralign.offline.simulator.live import LiveSignal

    cfg = _cfg(snr=0.5, blink_rate=0.0)
    quiet = LiveSignal(cfg, seed=3, block_s=2.0)
    shown = LiveSignal(cfg, seed=3, block_s=2.0, subject=quiet.subject)
    a, b = _distinct_pair(shown)
    onsets = {a: 700, b: 760}  # 120 ms apart at 500 Hz: the responses overlap
    for image, k in onsets.items():
        assert shown.add_stimulus(image, k) == (True, 0)
    n = 3 * shown.block
    x0, x1 = quiet.render(n // 2), shown.render(n // 2)
    x0 = np.concatenate([x0, quiet.render(n)], axis=1)
    x1 = np.concatenate([x1, shown.render(n)], axis=1)
    diff = x1 - x0
    assert np.all(diff[:, :700] == 0) and np.any(diff[:, 700] != 0)
    assert np.all(diff[:, 760 + shown.n_win:] == 0)
    resp_a = diff[:, 700:760]  # only a's response before b starts
    assert _corr(resp_a, shown.template(a)[:, :60]) > 0.9
    both = shown.template(a)[:, 60:]
    both = both + shown.template(b)[:, : both.shape[1]]
    assert _corr(diff[:, 760:700 + shown.n_win], both) > 0.9
    # SNR as defined offline: evoked RMS / background RMS over the occipito-parietal channels
    assert quiet.noise_rms == pytest.approx(np.sqrt(12e-6**2 + 6e-6**2 + 1e-6**2), rel=0.05)
    # continuity at block edges (crossfaded background, periodic mains): no step larger than
    # the signal's own sample-to-sample changes
    steps = np.abs(np.diff(x0, axis=1)).max(axis=0)
    edges = [k * quiet.block - 1 for k in (1, 2)]
    assert steps[edges].max() < np.percentile(steps, 99.9)
    # an unknown id: warned once, the shared response only
    with caplog.at_level(logging.WARNING):
        assert shown.add_stimulus("not-an-image", shown.next_sample + 10)[0] is False
        shown.add_stimulus("not-an-image", shown.next_sample + 400)
    assert sum("not-an-image" in r.getMessage() for r in caplog.records) == 1
    assert shown.n_unknown == 2


def test_mua_signal_rates_rise_after_onset():
    from neuralign.offline.simulator.live import LiveSignal

    sig = LiveSignal(_cfg(modality="mua", n_mua_channels=30, snr=2.0), seed=1, block_s=2.0)
    for k in range(5):
        sig.add_stimulus(sig.image_ids[k], 300 + 150 * k)
    x = sig.render(2 * sig.block + 7)
    assert x.shape == (30, 2 * sig.block + 7) and np.all(x >= 0)
    assert x[:, 300:1200].mean() > 1.3 * x[:, :300].mean()


def test_virtual_subject_streams_responses_at_marker_time_plus_latency():
    """Real LSL on loopback: markers pushed on a pylsl outlet, the stream read by an inlet."""
    import pylsl

    from neuralign.offline.simulator.live import VirtualSubject

    tag = uuid.uuid4().hex[:8]
    cfg = _cfg(snr=3.0, blink_rate=0.0)
    latency = 0.1  # margin for a loaded machine: markers must beat their onset chunk
    info = pylsl.StreamInfo(f"presenter-{tag}", "Markers", 1, 0.0, "string", f"pres-{tag}")
    marker_out = pylsl.StreamOutlet(info)
    with VirtualSubject(cfg, markers=f"presenter-{tag}", name=f"virtual-{tag}",
                        latency_s=latency, seed=5, block_s=2.0) as subject:
        sig = subject.signal
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", f"virtual-{tag}", 1, 5.0)[0],
                                  max_chunklen=1)
        inlet.open_stream(5.0)
        full = inlet.info(5.0)
        ch = full.desc().child("channels").child("channel")
        assert ch.child_value("label") == sig.ch_names[0] and ch.child_value("unit") == "volts"
        assert full.nominal_srate() == cfg.sfreq and full.channel_count() == len(sig.ch_names)
        deadline = time.monotonic() + 5
        while not subject.marker_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert subject.marker_connected
        a, b = _distinct_pair(sig)
        sent = []
        time.sleep(0.2)
        for k in range(12):
            image = (a, b)[k % 2]
            t = pylsl.local_clock()
            marker_out.push_sample([image], t)
            sent.append((image, t))
            time.sleep(0.2)  # the demo's SOA: responses overlap
        chunks, stamps = [], []
        end = sent[-1][1] + latency + 0.6
        while not stamps or stamps[-1][-1] < end:
            data, ts = inlet.pull_chunk(timeout=1.0)
            if ts:
                chunks.append(np.asarray(data))
                stamps.append(np.asarray(ts))
        inlet.close_stream()
        n_sent = subject.n_sent
        assert subject.error is None and subject.n_late == 0
    x = np.concatenate(chunks).T  # (channels, samples), volts
    t = np.concatenate(stamps)
    # (c) a regular clock, nothing dropped
    assert np.allclose(np.diff(t), 1.0 / cfg.sfreq, atol=1e-7)
    assert n_sent >= len(t)
    # (a) each response starts at marker time + latency: the lag that best matches the images'
    # noise-free responses, over the trials, is 0 within the trial-to-trial latency jitter
    sfreq, n_win = cfg.sfreq, sig.n_win
    lags = np.arange(-25, 26)  # samples, +-50 ms
    score = np.zeros(len(lags))
    for image, tm in sent:
        k0 = int(round((tm + latency - t[0]) * sfreq))
        tpl = sig.template(image)
        for i, lag in enumerate(lags):
            score[i] += _corr(x[:, k0 + lag:k0 + lag + n_win], tpl)
    assert abs(lags[np.argmax(score)]) <= 4  # 8 ms
    assert [s.image_id for s in subject.stimuli] == [i for i, _ in sent]
    assert all(abs(s.onset_time - (tm + latency)) < 1.0 / sfreq for s, (_, tm)
               in zip(subject.stimuli, sent))
    # (b) different images give different responses: each image's average matches its own
    def average(image: str) -> np.ndarray:
        ks = [int(round((tm + latency - t[0]) * sfreq)) for i, tm in sent if i == image]
        return np.mean([x[:, k:k + n_win] for k in ks], axis=0)

    avg_a, avg_b = average(a), average(b)
    assert _corr(avg_a, sig.template(a)) > _corr(avg_a, sig.template(b)) + 0.1
    assert _corr(avg_b, sig.template(b)) > _corr(avg_b, sig.template(a)) + 0.1


def test_cli_simulate_live_streams_for_duration(capsys):
    import pylsl

    from neuralign.cli import main

    sets = [x for k, v in TINY_SIM.items() for x in ("--set", f"dataset.simulation.{k}={v}")]
    tag = uuid.uuid4().hex[:8]
    presenter = pylsl.StreamOutlet(pylsl.StreamInfo(f"presenter-{tag}", "Markers", 1, 0.0,
                                                    "string", f"pres-{tag}"))
    assert main(["simulate", "--live", *sets, "--markers", f"presenter-{tag}", "--name",
                 f"virtual-{tag}", "--timing", "brainflow", "--duration", "0.3",
                 "--status-every", "0"]) == 0
    del presenter
    out = capsys.readouterr().out
    assert f"Virtual subject 'virtual-{tag}': EEG 63 ch @ 500 Hz" in out and "brainflow" in out
    assert main(["simulate", *sets]) != 0
    assert "--out is required" in capsys.readouterr().err
    assert main(["simulate", "--live", *sets, "--timing", "nope"]) != 0
    assert "unknown profile 'nope'" in capsys.readouterr().err
