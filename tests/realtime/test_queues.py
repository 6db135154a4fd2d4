"""The shared building blocks of the engine's threads: the drop-oldest queue, the thread
lifecycle and the rate-limited log."""

from __future__ import annotations

import logging
import threading

from neuralign.realtime.health import RateLimitedLog
from neuralign.realtime.queues import DropOldestQueue
from neuralign.realtime.worker import ThreadedWorker


def test_drop_oldest_queue_never_blocks_and_reports_each_drop():
    dropped: list[int] = []
    q: DropOldestQueue[int] = DropOldestQueue(3, on_drop=dropped.append)
    for i in range(5):
        q.push(i)
    assert dropped == [0, 1]
    assert q.drain() == [2, 3, 4] and q.empty()


def test_threaded_worker_stops_and_joins_its_threads():
    class Ticker(ThreadedWorker):
        def __init__(self):
            self._init_threads()
            self.woken = threading.Event()

        def _wake_threads(self):
            self.woken.set()

        def start(self):
            self._spawn(lambda: self._stop.wait(10), "ticker")

        def stop(self):
            self.joined = self._halt(timeout=5)

    with Ticker() as t:
        assert t.running
    assert not t.running and t.woken.is_set() and not t.joined[0].is_alive()


def test_rate_limited_log_counts_or_demotes_the_records_in_between(caplog):
    logger = logging.getLogger("neuralign.test.ratelimit")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    rl = RateLimitedLog(logger, interval=60.0)
    assert rl.log("k", logging.WARNING, "a %d", 1) and not rl.log("k", logging.WARNING, "a %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["a 1"]
    caplog.clear()
    ev = RateLimitedLog(logger, interval=60.0, demote_to=logging.DEBUG,
                        min_level=logging.WARNING, max_level=logging.ERROR)
    ev.log("e", logging.INFO, "info")  # below min_level: never limited
    ev.log("e", logging.WARNING, "w1")
    ev.log("e", logging.WARNING, "w2")  # within the interval: demoted, not dropped
    ev.log("e", logging.ERROR, "err")  # errors always go out
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "info"), (logging.WARNING, "w1"), (logging.DEBUG, "w2"),
        (logging.ERROR, "err")]
