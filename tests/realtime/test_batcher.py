"""BatchPolicy: the fixed-latency dispatch rule, without threads, a bundle or a source."""

from __future__ import annotations

import pytest

from neuralign.config import RealtimeConfig
from neuralign.realtime.batcher import BatchPolicy, batch_size

POLICY = BatchPolicy(capacity=4, max_wait_s=0.020, idle_wait_s=0.010)
T0 = 100.0  # when the oldest pending epoch was queued


def dispatch(n_pending=1, now=T0 + 0.005, next_ready_in_s=0.001, queue_empty=True) -> bool:
    return POLICY.should_dispatch(n_pending, T0, now, next_ready_in_s, queue_empty)


def test_capacity_from_config_leaves_room_for_repetition_averages():
    assert BatchPolicy.from_config(RealtimeConfig(batch_size=8, max_wait_ms=20)).capacity == 4
    assert BatchPolicy.from_config(RealtimeConfig(batch_size=1)).capacity == 1
    p = BatchPolicy.from_config(RealtimeConfig(max_wait_ms=30, cadence_ms=5))
    assert p.max_wait_s == pytest.approx(0.030) and p.idle_wait_s == pytest.approx(0.005)


def test_several_streams_get_two_slots_each_so_their_simultaneous_epochs_share_a_batch():
    cfg = RealtimeConfig(batch_size=4)
    assert batch_size(cfg, 1) == 4 and batch_size(cfg, 2) == 4
    assert batch_size(cfg, 8) == 16
    assert BatchPolicy.from_config(cfg, n_streams=8).capacity == 8
    assert batch_size(RealtimeConfig(batch_size=32), 8) == 32  # a larger setting stays


def test_nothing_pending_never_dispatches():
    assert not POLICY.should_dispatch(0, None, T0, None, True)


def test_a_full_batch_goes_at_once():
    assert dispatch(n_pending=4, next_ready_in_s=0.0, queue_empty=False)


def test_the_deadline_sends_a_partial_batch():
    assert dispatch(now=T0 + 0.020, next_ready_in_s=0.0, queue_empty=False)
    assert dispatch(now=T0 + 0.5, next_ready_in_s=0.0, queue_empty=False)


def test_at_once_when_nothing_can_join_before_the_deadline():
    assert dispatch(next_ready_in_s=None)  # no epoch expected at all
    assert dispatch(now=T0 + 0.005, next_ready_in_s=0.016)  # 15 ms left, next one in 16 ms


def test_waits_while_another_epoch_can_still_join():
    assert not dispatch(now=T0 + 0.005, next_ready_in_s=0.010)  # arrives before the deadline
    assert not dispatch(next_ready_in_s=None, queue_empty=False)  # one is ready: take it first


def test_timeout_is_the_idle_wait_cut_short_by_the_deadline():
    assert POLICY.timeout(None, T0) == pytest.approx(0.010)
    assert POLICY.timeout(T0, T0 + 0.002) == pytest.approx(0.010)
    assert POLICY.timeout(T0, T0 + 0.015) == pytest.approx(0.005)
    assert POLICY.timeout(T0, T0 + 0.030) == 0.0


def test_cpu_buckets_are_powers_of_two_up_to_the_batch_size():
    from neuralign.realtime.batcher import shape_buckets

    assert shape_buckets(4) == [1, 2, 4]
    assert shape_buckets(6) == [1, 2, 4, 6]
    assert shape_buckets(1) == [1]


def test_accelerators_keep_one_fixed_shape():
    from neuralign.realtime.batcher import shape_buckets

    assert shape_buckets(8, "cuda") == [8]


def test_a_batch_runs_on_the_smallest_bucket_that_holds_it():
    from neuralign.realtime.batcher import bucket_for

    assert [bucket_for(n, [1, 2, 4]) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]
    with pytest.raises(ValueError):
        bucket_for(5, [1, 2, 4])
