"""When a source wakes its listener (the engine): at the sample an epoch waits for, when markers
arrive, and every few milliseconds otherwise - never once per sample. Real pylsl outlets on
loopback, 1-sample pushes as a 1 kHz device app makes them."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from neuralign.realtime.lsl_io import local_clock, make_outlet
from neuralign.realtime.sources.lsl import IDLE_PULL_S, NEAR_S, LSLMarkerInlet, LSLSource

SFREQ = 1000.0


class _Pusher:
    """Pushes 1-sample chunks at SFREQ, stamped by liblsl at the push (a device app)."""

    def __init__(self, sid: str, n_ch: int = 4):
        self.outlet = make_outlet(f"wake-{sid[:6]}", "EEG", [f"C{i}" for i in range(n_ch)],
                                  SFREQ, sid)
        self.n_ch, self.n_sent = n_ch, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = local_clock()
        while not self._stop.is_set():
            due = t0 + self.n_sent / SFREQ
            delay = due - local_clock()
            if delay > 0:
                time.sleep(delay)
            self.outlet.push_sample(np.full(self.n_ch, self.n_sent, np.float32))
            self.n_sent += 1

    def __enter__(self) -> _Pusher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def _count_wakes(src: LSLSource, seconds: float) -> tuple[int, list[int]]:
    """Wake-ups of a listener over ``seconds`` and the buffer's sample count at each."""
    ev = threading.Event()
    src.add_listener(ev)
    counts = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ev.wait(0.05):
            ev.clear()
            counts.append(src.buffer.n_written)
    return len(counts), counts


@pytest.fixture
def sid():
    return uuid.uuid4().hex


def test_listener_is_woken_every_notify_period_not_every_sample(sid):
    with _Pusher(sid):
        src = LSLSource(source_id=sid, timeout=5.0, buffer_seconds=10.0)
        src.open()
        src.start()
        try:
            time.sleep(0.3)
            n_before = src.buffer.n_written
            n_wakes, _ = _count_wakes(src, 1.0)
            received = src.buffer.n_written - n_before
        finally:
            src.stop()
    assert received > 500  # the stream ran at about 1 kHz
    # every 20 ms at most: ~50 in a second (a sample-by-sample wake-up would be ~1000)
    assert 10 <= n_wakes <= 1.0 / src.notify_period_s * 1.5, (n_wakes, received)


def test_listener_is_woken_at_the_sample_it_waits_for(sid):
    with _Pusher(sid):
        src = LSLSource(source_id=sid, timeout=5.0, buffer_seconds=10.0)
        src.open()
        src.notify_period_s = 60.0  # no periodic wake-ups: only the awaited sample wakes it
        src.start()
        try:
            time.sleep(0.2)
            ev = threading.Event()
            src.add_listener(ev)
            ev.clear()
            got, near = [], []
            for _ in range(3):
                want = src.buffer.n_written + 137
                src.wake_at = want
                while True:  # at most one wake-up just before it (near_samples), then at it
                    assert ev.wait(5.0), "never woken for the awaited sample"
                    ev.clear()
                    if src.timeline.settled >= want:
                        break
                    near.append(want - src.buffer.n_written)
                got.append((want, src.timeline.settled))
                if len(got) < 3:
                    src.wake_at = None
            # told once: until the listener names another sample, no more wake-ups (a loaded
            # engine that reads late must not be woken, and its GIL contended, at every sample)
            assert not ev.wait(0.3)
            src.wake_at = None
        finally:
            src.stop()
    for want, settled in got:
        # woken once the awaited sample is in, and not long after (within a few pulls)
        assert want <= settled <= want + 50, got
    # the pull just before it woke the listener too, once per awaited sample, at most
    # near_samples before it (the listener filters what came then: little is left at the end)
    # (a pull that runs late takes the awaited sample with the rest: no near wake-up then)
    assert 1 <= len(near) <= 3 and all(0 < k <= src.near_samples for k in near), near


def test_a_marker_wakes_the_listener_at_once(sid):
    with _Pusher(sid):
        mid = uuid.uuid4().hex
        mout = make_outlet(f"wake-m-{mid[:6]}", "Markers", ["marker"], 0.0, mid, ["misc"],
                           dtype="string")
        src = LSLSource(source_id=sid, timeout=5.0, buffer_seconds=10.0,
                        markers=LSLMarkerInlet(source_id=mid, timeout=5.0))
        src.open()
        src.notify_period_s = 60.0
        src.start()
        try:
            time.sleep(0.5)  # the marker inlet is connected and probing
            ev = threading.Event()
            src.add_listener(ev)
            ev.clear()
            mout.push_sample(["img-1"], local_clock())
            assert ev.wait(5.0)
            deadline = time.monotonic() + 2
            markers = []
            while not markers and time.monotonic() < deadline:
                markers = src.pop_markers()
                time.sleep(0.01)
            assert [m.value for m in markers] == ["img-1"]
        finally:
            src.stop()
            del mout


def test_pull_sleeps_until_the_awaited_sample_is_near_then_waits_for_exactly_it(sid):
    """Nothing awaited: sleep the idle period, take what came. The awaited sample far: sleep
    until just before the stream can bring it (never past it), at most the idle period. Near
    it: no sleep, one blocking pull for exactly the samples up to it."""
    src = LSLSource(source_id=sid, timeout=5.0, buffer_seconds=10.0)
    with _Pusher(sid):
        src.open()
        try:
            assert src._pull_plan() == (IDLE_PULL_S, None)  # no epoch pending
            src.wake_at = src.buffer.n_written + 500  # 0.5 s away: the idle period
            assert src._pull_plan() == (IDLE_PULL_S, None)
            src.wake_at = src.buffer.n_written + 12  # 12 ms after the last delivery: wake
            src._last_data = time.monotonic()        # 2 ms before it is due
            sleep_s, need = src._pull_plan()
            assert need is None and 0.012 - NEAR_S - 0.002 < sleep_s <= 0.012 - NEAR_S
            # nothing delivered for 8 ms meanwhile (a chunked sender between bursts): the sample
            # is due 8 ms sooner, the sleep is that much shorter (not 10 ms again)
            src._last_data = time.monotonic() - 0.008
            sleep_s, need = src._pull_plan()
            assert need is None and 0 < sleep_s <= 0.012 - 0.008 - NEAR_S
            src._last_data = time.monotonic() - 0.011  # due within NEAR_S: wait for it
            assert src._pull_plan() == (0.0, 12)
            src.wake_at = src.buffer.n_written + 2  # near: wait for exactly those 2
            assert src._pull_plan() == (0.0, 2)
            src.wake_at = src.buffer.n_written - 10  # in and settled: the listener was told;
            assert src._pull_plan() == (IDLE_PULL_S, None)  # sleep until it names the next
        finally:
            src.stop()
