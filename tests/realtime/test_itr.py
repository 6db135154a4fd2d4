"""Wolpaw ITR, the live ITR of running accuracy, and calibrated probabilities on results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from neuralign.itr import bits_per_minute, wolpaw_bits
from neuralign.realtime.decisions import Result, ResultBuilder, RunningAccuracy
from neuralign.realtime.epocher import Epoch
from neuralign.realtime.inference import Decoded


def test_wolpaw_bits_worked_by_hand():
    assert wolpaw_bits(2, 1.0) == 1.0 and wolpaw_bits(4, 1.0) == 2.0
    # log2 4 + 0.9 log2 0.9 + 0.1 log2(0.1 / 3)
    assert wolpaw_bits(4, 0.9) == pytest.approx(2 + 0.9 * math.log2(0.9) + 0.1 * math.log2(0.1 / 3))
    assert wolpaw_bits(4, 0.25) == 0.0 and wolpaw_bits(4, 0.1) == 0.0  # chance and below
    assert wolpaw_bits(1, 1.0) == 0.0 and wolpaw_bits(4, float("nan")) == 0.0
    assert bits_per_minute(4, 1.0, 0.5) == pytest.approx(240.0)  # 2 bits, 120 selections/min
    assert bits_per_minute(4, 1.0, 0.0) == 0.0


def _res(i, marker, top, t):
    return Result(i, marker, t, t + 1.0, 1, top, [0.0] * len(top))


def test_running_accuracy_reports_itr_at_the_observed_presentation_rate():
    acc = RunningAccuracy(["a", "b", "c", "d"])
    acc.add(_res(0, "a", ["a"], 10.0))
    assert "itr_bits_per_min" not in acc.summary()  # one presentation: no rate yet
    acc.extend([_res(1, "b", ["b"], 10.2), _res(2, "zzz", ["a"], 10.4),  # unknown truth counts
                _res(3, "c", ["a"], 10.6), _res(4, None, ["a"], 99.0)])  # as a presentation
    s = acc.summary()
    assert s["presentations_per_s"] == pytest.approx(5.0) and s["n_candidates"] == 4
    assert s["top1"] == pytest.approx(2 / 3)
    assert s["itr_bits"] == pytest.approx(wolpaw_bits(4, 2 / 3))
    assert s["itr_bits_per_min"] == pytest.approx(wolpaw_bits(4, 2 / 3) * 60 * 5)

    from neuralign.cli.report import accuracy_text

    assert "bits/min (4 images, 5.0 presentations/s)" in accuracy_text(s)


def test_viewer_accuracy_text_shows_bits_per_minute():
    from neuralign.ui.viewer import ViewerState

    state = ViewerState(["a", "b"])
    state.ingest([_res(0, "a", ["a"], 1.0)])
    assert "bits/min" not in state.accuracy_text()
    state.ingest([_res(1, "a", ["a"], 1.5)])
    assert "ITR 120.0 bits/min" in state.accuracy_text()  # 1 bit x 2 presentations/s


class BankDecoder:
    """Three templates on the axes of R^3; the epoch's first three values are its embedding."""

    batch_size = 4
    template_ids = ["x", "y", "z"]
    bank = torch.eye(3)

    def __init__(self, temperature=None):
        self.temperature = temperature

    def decode_all(self, items):
        out = []
        for x in items:
            z = x.ravel()[:3].astype(np.float32)
            z = z / np.linalg.norm(z)
            order = np.argsort(-z)[:2]
            every = z @ self.bank.numpy().T  # every template's cosine, as the real decoder keeps
            out.append(Decoded(z, [self.template_ids[j] for j in order], z[order].tolist(),
                               every if self.temperature is not None else None))
        return out


def _ep(i, label, v):
    data = np.zeros((1, 4), np.float32)
    data[0, :3] = v
    return Epoch(i, data, label, 0, float(i), 0, float(i))


def _softmax(a):
    e = np.exp(a - a.max())
    return e / e.sum()


def test_results_carry_calibrated_probabilities_of_the_repetition_decision():
    t, t2 = 0.5, 0.25
    builder = ResultBuilder(BankDecoder(temperature=t), repetition_temperatures=[t, t2])
    v1, v2, v3 = np.array([3.0, 1.0, 0.0]), np.array([1.0, 2.0, 2.0]), np.array([0.0, 3.0, 1.0])
    (r1,) = builder.build([_ep(0, "x", v1)])
    z1 = v1 / np.linalg.norm(v1)
    p1 = _softmax(z1 / t)  # softmax over the whole bank, not the top-k
    assert r1.topk_ids == ["x", "y"] and r1.avg_topk_probs is None
    np.testing.assert_allclose(r1.topk_probs, p1[[0, 1]], atol=1e-6)
    (r2,) = builder.build([_ep(1, "x", v2)])
    za = (v1 + v2) / 2
    za = za / np.linalg.norm(za)
    post = _softmax(za / t2)  # the averaged epoch's scores at T_2, not summed evidence
    idx = [BankDecoder.template_ids.index(i) for i in r2.avg_topk_ids]
    np.testing.assert_allclose(r2.avg_topk_probs, post[idx], atol=1e-6)
    assert r2.avg_topk_probs[0] == pytest.approx(post.max(), abs=1e-6)  # the max posterior
    assert r2.avg_topk_probs == sorted(r2.avg_topk_probs, reverse=True)
    # a third presentation (beyond the list: T_2) and another image's first, in one batch
    r3, other = builder.build([_ep(2, "x", v3), _ep(3, "y", v2)])
    zb = (v1 + v2 + v3) / 3
    post3 = _softmax(zb / np.linalg.norm(zb) / t2)
    idx3 = [BankDecoder.template_ids.index(i) for i in r3.avg_topk_ids]
    np.testing.assert_allclose(r3.avg_topk_probs, post3[idx3], atol=1e-6)
    assert other.avg_topk_probs is None
    np.testing.assert_allclose(other.topk_probs[0], _softmax(v2 / np.linalg.norm(v2) / t).max(),
                               atol=1e-6)
    # on the wire after their scores; an old reader of the wire ignores them
    wire = r2.to_dict()
    keys = list(wire)
    assert keys.index("topk_probs") == keys.index("topk_scores") + 1
    assert keys.index("avg_topk_probs") == keys.index("avg_topk_scores") + 1
    assert Result.from_json(json.dumps(wire)).to_dict() == wire
    # an uncalibrated bundle (no temperature): no probabilities, no keys
    (plain,) = ResultBuilder(BankDecoder()).build([_ep(0, "x", v1)])
    assert plain.topk_probs is None and "topk_probs" not in plain.to_dict()
