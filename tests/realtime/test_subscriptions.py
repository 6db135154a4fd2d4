"""The results-consumption API (realtime/subscriptions.py): one bounded queue per reader, drops
counted per reader, kept history only on request, health snapshots bounded, never blocking the
publisher."""

from __future__ import annotations

import threading
import time

import pytest

from neuralign.realtime.decisions import Result
from neuralign.realtime.subscriptions import ResultHub, recent


def _r(i: int) -> Result:
    return Result(i, "x", float(i), float(i), 1, ["x"], [1.0], health={"gaps": 0})


def _ids(results: list[Result]) -> list[int]:
    return [r.epoch_id for r in results]


def test_subscription_gets_what_is_published_after_it_opens_oldest_first():
    hub = ResultHub(keep=100)
    for i in range(3):
        hub.publish(_r(i))
    with hub.subscribe(maxlen=10) as sub:
        assert sub.drain() == []  # like an LSL inlet: nothing from before it opened
        for i in range(3, 7):
            hub.publish(_r(i))
        assert len(sub) == 4
        assert _ids(sub.drain()) == [3, 4, 5, 6]
        assert sub.drain() == [] and sub.dropped == 0
    assert sub.closed and hub.n_subscribers == 0


def test_replay_starts_with_the_newest_kept_results():
    hub = ResultHub(keep=5)
    for i in range(8):
        hub.publish(_r(i))
    sub = hub.subscribe(maxlen=3, replay=True)
    hub.publish(_r(8))
    # replayed: the newest 3 kept (5, 6, 7); the live 8 then pushed the oldest out
    assert _ids(sub.drain()) == [6, 7, 8] and sub.dropped == 1
    assert _ids(recent(hub)) == [4, 5, 6, 7, 8]  # the whole kept history
    assert _ids(recent(hub, 2)) == [7, 8]
    assert hub.n_subscribers == 1  # recent() closed its own subscription
    sub.close()


def test_a_slow_reader_loses_its_oldest_only_and_counts_them():
    hub = ResultHub(keep=100)
    slow, fast = hub.subscribe(maxlen=3), hub.subscribe(maxlen=100)
    for i in range(10):
        hub.publish(_r(i))
    assert _ids(slow.drain()) == [7, 8, 9] and slow.dropped == 7
    assert _ids(fast.drain()) == list(range(10)) and fast.dropped == 0
    assert hub.n_dropped == 7 and hub.n_published == 10


def test_closed_subscription_keeps_what_waited_and_receives_nothing_new():
    hub = ResultHub()
    sub = hub.subscribe()
    hub.publish(_r(0))
    sub.close()
    sub.close()  # idempotent
    hub.publish(_r(1))
    assert _ids(sub.drain()) == [0]
    assert sub.drain() == []


def test_only_the_newest_keep_health_results_keep_their_health():
    hub = ResultHub(keep=1000, keep_health=10)
    sub = hub.subscribe(maxlen=1000)
    for i in range(25):
        hub.publish(_r(i))
    kept = [r.health is not None for r in sub.drain()]
    assert sum(kept) == 10 and all(kept[-10:]) and not any(kept[:15])


def test_wait_blocks_the_reader_until_a_result_is_published():
    hub = ResultHub()
    sub = hub.subscribe()
    assert sub.wait(0.01) is False
    threading.Timer(0.05, hub.publish, args=(_r(0),)).start()
    assert sub.wait(5.0) is True
    assert _ids(sub.drain()) == [0]
    assert sub.wait(0.0) is False  # drained: nothing waits any more


def test_publisher_never_waits_on_readers_and_each_reader_sees_every_result_in_order():
    hub = ResultHub(keep=10)
    n = 20000
    subs = [hub.subscribe(maxlen=n) for _ in range(3)]
    got: list[list[int]] = [[] for _ in subs]
    done = threading.Event()

    def read(k: int) -> None:
        while not done.is_set() or len(subs[k]):
            got[k] += _ids(subs[k].drain())
            time.sleep(0.0005)

    readers = [threading.Thread(target=read, args=(k,)) for k in range(len(subs))]
    for t in readers:
        t.start()
    t0 = time.perf_counter()
    for i in range(n):
        hub.publish(_r(i))
    per_publish_us = 1e6 * (time.perf_counter() - t0) / n
    done.set()
    for t in readers:
        t.join(10)
    assert all(g == list(range(n)) for g in got)
    assert hub.n_dropped == 0
    assert per_publish_us < 200, per_publish_us  # microseconds, even with readers draining


@pytest.mark.parametrize("bad", [0, -1])
def test_maxlen_must_be_positive(bad):
    with pytest.raises(ValueError):
        ResultHub().subscribe(maxlen=bad)
