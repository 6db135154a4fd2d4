"""Result (the result stream's schema), the repetition store, the decider, running accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuralign.realtime.decisions import (
    RepetitionStore,
    Result,
    ResultBuilder,
    RunningAccuracy,
)
from neuralign.realtime.epocher import Epoch
from neuralign.realtime.inference import Decoded

# What the engine published before Result existed, key for key and in the same order.
WIRE_WITH_AVG = {"epoch_id": 7, "marker": "img_3", "marker_timestamp": 12.5,
                 "last_sample_timestamp": 13.5, "n_repetitions": 2,
                 "topk_ids": ["img_3", "img_1"], "topk_scores": [0.412345, 0.3],
                 "avg_topk_ids": ["img_1", "img_3"], "avg_topk_scores": [0.5, 0.25],
                 "stages_ms": {"acquire": 6.2, "inference": 20.125}}
WIRE_FIRST = {"epoch_id": 0, "marker": None, "marker_timestamp": 1.0,
              "last_sample_timestamp": float("nan"), "n_repetitions": 1,
              "topk_ids": ["img_2"], "topk_scores": [0.1], "stages_ms": {}}


@pytest.mark.parametrize("wire", [WIRE_WITH_AVG, WIRE_FIRST])
def test_result_json_is_the_wire_format_and_round_trips(wire):
    r = Result.from_json(json.dumps(wire))
    # strict JSON on the wire (issue 11): a non-finite number is null, never a bare NaN
    assert r.to_json() == json.dumps(wire).replace("NaN", "null")
    assert list(r.to_dict()) == list(wire)
    assert Result.from_json(r.to_json()).to_json() == r.to_json()


def test_result_schema_errors_name_the_key():
    with pytest.raises(ValueError, match="topk_ids"):
        Result.from_dict({k: v for k, v in WIRE_WITH_AVG.items() if k != "topk_ids"})
    with pytest.raises(ValueError):
        Result.from_json("not json")
    assert Result.from_dict({**WIRE_FIRST, "future_field": 1}).epoch_id == 0


def test_repetition_store_averages_each_image_separately():
    store = RepetitionStore()
    a1, a2, a3 = (np.full((2, 3), v, np.float32) for v in (1.0, 2.0, 6.0))
    assert store.add("a", a1) == (1, None)
    n, avg = store.add("a", a2)
    assert n == 2 and avg.dtype == np.float32
    np.testing.assert_array_equal(avg, 1.5)
    assert store.add("b", a3) == (1, None)
    n, avg = store.add("a", a3)
    assert n == 3
    np.testing.assert_array_equal(avg, 3.0)  # (1 + 2 + 6) / 3
    assert store.count("a") == 3 and store.count("b") == 1 and store.count("c") == 0


class FakeDecoder:
    """Ranks two templates by the epoch's mean: > 0 -> "pos" first, else "neg" first."""

    batch_size = 2

    def __init__(self):
        self.calls: list[list[float]] = []

    def decode_all(self, items):
        self.calls.append([float(x.mean()) for x in items])
        return [Decoded(np.zeros(1), ["pos", "neg"] if x.mean() > 0 else ["neg", "pos"],
                        [0.1234567, -0.5]) for x in items]

    def reconstruct(self, epoch, masked):
        out = epoch.copy()
        out[masked] = 9.0
        return out


def _epoch(i, label, value):
    return Epoch(i, np.full((2, 4), value, np.float32), label, 100 * i, 10.0 + i, 100 * i + 3,
                 10.5 + i)


def test_decider_decodes_singles_and_running_averages_in_one_call():
    dec = FakeDecoder()
    decider = ResultBuilder(dec)
    first = decider.build([_epoch(0, "x", 1.0), _epoch(1, None, -1.0)])
    again = decider.build([_epoch(2, "x", -3.0)])
    assert dec.calls == [[1.0, -1.0], [-3.0, -1.0]]  # single, then the average of 1 and -3
    r0, r1 = first
    assert (r0.epoch_id, r0.marker, r0.marker_timestamp, r0.last_sample_timestamp) == (
        0, "x", 10.0, 10.5)
    assert r0.n_repetitions == 1 and r0.topk_ids == ["pos", "neg"] and r0.avg_topk_ids is None
    assert r0.topk_scores == [0.123457, -0.5]  # 6 digits on the wire
    assert r1.marker is None and r1.n_repetitions == 1 and r1.topk_ids == ["neg", "pos"]
    (r2,) = again
    assert r2.n_repetitions == 2 and r2.avg_topk_ids == ["neg", "pos"]


def test_decider_fills_missing_channels_and_reconstructs_masked_ones():
    decider = ResultBuilder(FakeDecoder(), missing=[1])
    ep = _epoch(0, "x", 1.0)
    decider.build([ep])
    np.testing.assert_array_equal(ep.data[1], 9.0)  # filled before decoding
    rec = decider.reconstruct(_epoch(1, "y", 2.0), [0])
    assert rec.epoch_id == 1 and rec.channels == [0]
    np.testing.assert_array_equal(rec.original, 2.0)
    np.testing.assert_array_equal(rec.reconstructed, 9.0)


def _r(marker, top, avg=None, n=1):
    return Result(0, marker, 0.0, 0.0, n, top, [0.0] * len(top), avg,
                  None if avg is None else [0.0] * len(avg))


def test_running_accuracy_worked_by_hand():
    ids = ["a", "b", "c", "d"]
    results = [
        _r("a", ["a", "b"]),  # top-1 hit
        _r("b", ["c", "b"]),  # top-5 hit only
        _r("zzz", ["a"]),  # truth unknown: not judged
        _r(None, ["a"]),  # sliding window: not judged
        _r("a", ["b", "c"], avg=["a", "b"], n=2),  # miss; its average hits
        _r("b", ["b"], avg=["c"], n=2),  # hit; its average misses
        _r("a", ["a"], avg=["a"], n=3),  # hit; average hits
    ]
    acc = RunningAccuracy(ids).extend(results)
    assert (acc.n_judged, acc.n_top1, acc.n_top5) == (5, 3, 4)
    assert (acc.n_avg_judged, acc.n_avg_top1) == (3, 2)
    assert acc.summary() == {"n": 5, "top1": 0.6, "top5": 0.8, "chance_top1": 0.25,
                             "avg_top1": pytest.approx(2 / 3), "avg_n_repetitions": 3}
    # the summary's average scores only the latest len(ids) averaged decisions
    more = [_r("c", ["c"], avg=["d"], n=2), _r("d", ["d"], avg=["d"], n=2)]
    acc.extend(more)
    # latest four averaged: b (miss), a (hit), c (miss), d (hit)
    assert acc.summary()["avg_top1"] == 0.5 and acc.summary()["avg_n_repetitions"] == 3
    assert (acc.n_avg_judged, acc.n_avg_top1) == (5, 3)


def test_running_accuracy_before_any_truth():
    assert RunningAccuracy(["a"]).extend([_r(None, ["a"])]).summary() == {"n": 0}
