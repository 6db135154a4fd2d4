"""``neuralign bench adaptation`` end to end at a toy scale, and its summary arithmetic."""

from __future__ import annotations

import json

import pytest


def test_bench_adaptation_runs_and_reports(tmp_path):
    from neuralign.cli import main

    out = tmp_path / "ab"
    assert main(["bench", "adaptation", "--out", str(out), "--subjects", "3", "--pretrain", "2",
                 "--minutes", "0.5", "--scratch-minutes", "0.5,1", "--pretrain-minutes", "1",
                 "--scratch-epochs", "1", "--fine-tune-epochs", "1", "--pretrain-epochs", "1",
                 "--jobs", "1", "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["pretrain_subjects"] == [1, 2] and rep["held_out"] == [3]
    modes = {(p["mode"], p["minutes"]) for p in rep["points"]}
    assert modes == {("scratch", 0.5), ("scratch", 1.0), ("pretrained", 0.5)}
    for p in rep["points"]:
        assert 0.0 <= p["top1"] <= p["top5"] <= 1.0 and p["subject"] == 3
        # 0.5 min = 37-38 images of 4 repetitions at SOA 0.2 s
        assert p["n_images"] == round(p["minutes"] * 60 / 0.2 / 4)
    assert (out / "adaptation.png").stat().st_size > 0
    hist = json.loads((out / "sub-03-pretrained-0.5min" / "history.json").read_text())
    assert hist["pretrained"]["subjects"] == ["1", "2"]  # fine-tuned from the pretrained run


def test_summary_and_verdict():
    from neuralign.offline.adaptation_bench import Point, summarise, verdict

    pts = []
    for s, (a, b, c, d) in enumerate([(0.1, 0.2, 0.3, 0.32), (0.12, 0.22, 0.34, 0.30)]):
        pts += [Point(s, "scratch", 5.0, 375, top1=a, top5=0.5, train_seconds=10),
                Point(s, "scratch", 10.0, 750, top1=b, top5=0.6, train_seconds=20),
                Point(s, "scratch", 20.0, 1500, top1=c, top5=0.7, train_seconds=40),
                Point(s, "pretrained", 5.0, 375, top1=d, top5=0.7, train_seconds=8)]
    rows = summarise(pts)
    pre5 = next(r for r in rows if r["mode"] == "pretrained")
    assert pre5["top1"] == pytest.approx(0.31) and pre5["n_subjects"] == 2
    assert pre5["top1_ci"][0] < 0.31 < pre5["top1_ci"][1]
    v = verdict(rows)
    # scratch reaches 0.31 only at 20 minutes: 4x the pretrained run's 5
    assert v["scratch_minutes_to_match"] == 20.0 and v["data_ratio"] == 4.0 and v["met"]
