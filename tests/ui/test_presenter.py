"""The presenter's Qt-free logic: sequences, the stopping policy, the active-image queue, and a
session driven with made-up swap times (frame-boundary onsets, dropped frames, decisions)."""

from pathlib import Path

import pytest

from neuralign.errors import UserError
from neuralign.ui.presenter.closed_loop import ResultEvent, parse_result, parse_results_spec
from neuralign.ui.presenter.logfile import LogWriter, read_log
from neuralign.ui.presenter.sequence import (
    Timing,
    Trial,
    balanced_order,
    find_images,
    read_sequence,
)
from neuralign.ui.presenter.session import Session
from neuralign.ui.presenter.stopping import ActiveQueue, StoppingPolicy, posterior_of

PERIOD = 1 / 60


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a", "b", "c", "007"):
        (d / f"{name}.png").write_bytes(b"")  # only names matter here
    (d / "notes.txt").write_text("not an image")
    return d


def test_find_images_by_stem(image_dir):
    assert list(find_images(image_dir)) == ["007", "a", "b", "c"]
    (image_dir / "a.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="same image id"):
        find_images(image_dir)


@pytest.mark.parametrize("n_images,reps", [(2, 5), (3, 4), (7, 3), (20, 10)])
def test_balanced_order_is_balanced_and_never_repeats(n_images, reps):
    ids = [f"i{k}" for k in range(n_images)]
    for seed in range(5):
        order = balanced_order(ids, reps, seed)
        assert sorted(order) == sorted(ids * reps)
        assert all(a != b for a, b in zip(order, order[1:]))
    assert balanced_order(ids, reps, 3) == balanced_order(ids, reps, 3)  # seeded
    assert balanced_order(ids, reps, 3) != balanced_order(ids, reps, 4) or n_images == 2


def test_balanced_order_refuses_one_image_repeated():
    with pytest.raises(UserError, match="follow"):
        balanced_order(["x"], 2)


def test_sequence_csv_units_paths_and_defaults(image_dir, tmp_path):
    other = tmp_path / "extra.png"
    other.write_bytes(b"")
    csv = tmp_path / "seq.csv"
    csv.write_text("Image,duration,isi_s,jitter\n"
                   "a,50,0.1,10\n"
                   "007,,,\n"
                   "extra.png,200,0.05,\n")
    default = Timing(0.1, 0.3, 0.0)
    trials = read_sequence(csv, find_images(image_dir), default)
    assert [t.image_id for t in trials] == ["a", "007", "extra"]
    assert trials[0].timing == Timing(0.05, pytest.approx(0.15), 0.01)
    assert trials[1].timing == default  # empty cells: the defaults
    assert trials[2].path == other and trials[2].timing.soa == pytest.approx(0.25)


@pytest.mark.parametrize("text,match", [
    ("image,soa\na,100\nnope,100\n", r"seq.csv:3: image 'nope': no such file"),
    ("image,soa\na,fast\n", r"seq.csv:2: column 'soa': not a number"),
    ("image,duration,soa\na,200,100\n", r"seq.csv:2: SOA 100 ms is shorter"),
    ("image,isi,soa\na,1,2\n", r"seq.csv:1: give ISI or SOA"),
    ("picture,soa\na,100\n", r"seq.csv:1: no image column"),
    ("image,soa\na,100,7\n", r"seq.csv:2: 3 fields"),
])
def test_sequence_errors_name_file_and_line(image_dir, tmp_path, text, match):
    csv = tmp_path / "seq.csv"
    csv.write_text(text)
    with pytest.raises(UserError, match=match):
        read_sequence(csv, find_images(image_dir), Timing())


def test_policy_stop_continue_and_max():
    pol = StoppingPolicy(threshold=0.8, max_repetitions=3)
    assert pol.decide(0.85, 1).decision == "stop"
    assert pol.decide(0.85, 1).reason == "threshold"
    assert pol.decide(0.5, 2).decision == "continue"
    assert pol.decide(0.5, 3).reason == "max_repetitions"
    assert pol.decide(None, 1).reason == "uncalibrated"
    assert pol.decide(None, 2, timed_out=True).reason == "timeout"
    assert pol.decide(None, 3, timed_out=True).decision == "stop"
    with pytest.raises(ValueError):
        StoppingPolicy(threshold=1.5)


def test_posterior_prefers_the_accumulated_one():
    assert posterior_of({"topk_probs": [0.4], "avg_topk_probs": [0.7]}) == 0.7
    assert posterior_of({"topk_probs": [0.4]}) == 0.4
    assert posterior_of({"topk_probs": None}) is None
    assert posterior_of({}) is None


def test_parse_result_reads_probabilities_from_the_wire():
    text = ('{"epoch_id": 3, "marker": "a", "marker_timestamp": 12.5, '
            '"last_sample_timestamp": 13.0, "n_repetitions": 2, "topk_ids": ["a", "b"], '
            '"topk_scores": [0.3, 0.2], "topk_probs": [0.6, 0.3], "avg_topk_ids": ["a", "b"], '
            '"avg_topk_scores": [0.3, 0.1], "avg_topk_probs": [0.95, 0.04], "stages_ms": {}}')
    ev = parse_result(text, 14.0)
    assert ev == ResultEvent("a", 12.5, 2, 0.95, 14.0)
    with pytest.raises(ValueError):
        parse_result('{"marker": "a"}', 0.0)
    assert parse_results_spec("lsl:neuralign-results") == "neuralign-results"
    with pytest.raises(UserError):
        parse_results_spec("neuralign-results")


def test_active_queue_interleaves_and_waits_for_results():
    q = ActiveQueue(["a", "b", "c"], StoppingPolicy(0.9, 2), timeout_s=3.0, max_active=2)
    assert q.next_image(None) == "a"
    q.shown("a", 0, 10.0)
    assert q.next_image("a") == "b"  # a awaits its result: another image, not a frozen screen
    q.shown("b", 1, 10.2)
    assert q.next_image("b") is None  # both pending, and at most 2 active
    assert q.result("a", 10.0, 0.5).decision.decision == "continue"
    assert q.result("a", 10.0, 0.5) is None  # a duplicate: nothing pending
    assert q.next_image("b") == "a"
    q.shown("a", 2, 10.6)
    assert q.result("b", 10.2, 0.95).decision.reason == "threshold"  # b done: c may enter
    assert q.next_image("a") == "c"
    q.shown("c", 3, 10.8)
    d = q.result("a", 10.6, 0.1)
    assert (d.index, d.decision.decision, d.decision.reason) == (2, "stop", "max_repetitions")
    (late,) = q.expire(13.9)
    assert (late.image_id, late.decision.reason) == ("c", "timeout")
    assert q.next_image("a") == "c"  # after a timeout the image comes back
    q.shown("c", 4, 14.0)
    assert q.result("c", 10.8, 0.99) is None and q.late_results == 2  # the old one, late
    assert not q.finished
    assert q.result("c", 14.0, 0.2).decision.reason == "max_repetitions"
    assert q.finished


def _drive(session, t0=100.0, n_frames=400, jitter=None, drop_at=(), events=None):
    """Call plan/swapped as a display would at PERIOD, optionally late frames and results."""
    t = t0
    for k in range(n_frames):
        session.plan(t - 0.0005)
        session.swapped(t)
        if events is not None:
            session.poll(t, events(session, t))
        if session.finished(t):
            return k
        t += PERIOD * (3 if k in drop_at else 1) + (jitter(k) if jitter else 0.0)
    return n_frames


def test_session_onsets_on_frame_boundaries_and_counts_drops():
    trials = [Trial(f"i{k}", Path(f"i{k}.png"), Timing(0.05, 0.1)) for k in range(6)]
    pushed, rows = [], []
    s = Session(trials, PERIOD, "raster", lambda i, st: (pushed.append((i, st)), st + 1e-4)[1],
                rows.append)
    _drive(s, drop_at={20})
    assert [r.image_id for r in rows] == [t.image_id for t in trials]
    assert [p[0] for p in pushed] == [r.image_id for r in rows]
    for r in rows:
        assert r.stamp_s == r.onset_s  # the marker carries the swap time
        assert -PERIOD / 4 <= r.onset_error_ms / 1e3 < PERIOD  # first frame at/after request
        assert r.offset_ms == pytest.approx(0.1)
    onsets = [r.onset_s for r in rows]
    soas = [b - a for a, b in zip(onsets, onsets[1:])]
    assert all(0.1 - PERIOD / 4 <= d < 0.1 + PERIOD * 2.5 for d in soas)  # a stall: no catch-up
    assert s.dropped == 2 and rows[-1].dropped_frames == 2
    summ = s.summary()
    assert summ.n_shown == 6 and summ.dropped_frames == 2


def test_session_closed_loop_decisions_and_pause():
    trials = [Trial(n, Path(f"{n}.png"), Timing(0.05, 0.1)) for n in ("a", "b", "c")]
    post = {"a": [0.3, 0.95], "b": [0.2, 0.3, 0.4], "c": [0.99]}
    rows, due = [], []

    def push(image_id, stamp):
        due.append((stamp + 0.5, image_id, stamp))  # the engine answers 0.5 s later
        return stamp

    def events(session, t):
        out = [ResultEvent(i, st, 0, post[i].pop(0), t) for when, i, st in due if when <= t]
        due[:] = [d for d in due if d[0] > t]
        return out

    q = ActiveQueue(["a", "b", "c"], StoppingPolicy(0.9, 3), timeout_s=3.0)
    s = Session(trials, PERIOD, "raster", push, rows.append, queue=q, latency_s=0.01)
    s.toggle_pause(100.0)
    s.toggle_pause(100.0)
    _drive(s, n_frames=2000, events=events)
    got = {(r.image_id, r.repetition): (r.decision, r.reason) for r in rows}
    assert got == {("a", 1): ("continue", "below_threshold"), ("a", 2): ("stop", "threshold"),
                   ("b", 1): ("continue", "below_threshold"),
                   ("b", 2): ("continue", "below_threshold"),
                   ("b", 3): ("stop", "max_repetitions"), ("c", 1): ("stop", "threshold")}
    assert all(r.stamp_s == pytest.approx(r.onset_s + 0.01) for r in rows)
    assert s.summary().n_decisions == {"continue": 3, "stop": 3}


def test_session_abort_logs_pending_rows(tmp_path):
    trials = [Trial(n, Path(f"{n}.png"), Timing(0.05, 0.1)) for n in ("a", "b")]
    log = LogWriter(tmp_path / "log.csv")
    s = Session(trials, PERIOD, "raster", lambda i, st: st, log.write,
                queue=ActiveQueue(["a", "b"], StoppingPolicy()))
    _drive(s, n_frames=20)  # both shown, no result yet
    s.abort(200.0)
    log.close()
    rows = read_log(tmp_path / "log.csv")
    assert [(r["image_id"], r["decision"]) for r in rows] == [("a", "aborted"), ("b", "aborted")]
    assert s.finished(200.0)


def test_recommended_threshold_from_a_run_report(tmp_path):
    import json

    from neuralign.ui.presenter.app import recommended_threshold

    assert recommended_threshold(tmp_path) is None
    (tmp_path / "report.json").write_text(json.dumps(
        {"closed_loop": {"dynamic_stopping": {"recommended": {"threshold": 0.8}}}}))
    assert recommended_threshold(tmp_path) == 0.8
    assert recommended_threshold(tmp_path / "report.json") == 0.8
