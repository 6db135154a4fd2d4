"""Issue 10, viewer: engines told apart by source_id (real LSL outlets), amplitude units and a
scale bar, sensor labels that do not overlap at the rim (real offscreen Qt)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from neuralign.bundle import load_bundle
from neuralign.realtime.decisions import Result
from neuralign.realtime.outputs import ResultOutlet
from neuralign.ui.feeds import LSLResultFeed, TraceSnapshot
from neuralign.ui.panels import MaskPanel, TracePanel
from neuralign.ui.panels.traces import nice_value

# pyqtgraph widgets these tests build are hidden, not deleted, at the end of each test: deleting
# a PlotWidget while the scene still has a paint queued crashes a later test (a deleted AxisItem)
_KEEP: list = []


def _keep(widget):
    _KEEP.append(widget)
    return widget


def _result(epoch_id: int, top: str) -> Result:
    return Result(epoch_id=epoch_id, marker=None, marker_timestamp=0.0,
                  last_sample_timestamp=0.0, topk_ids=[top], topk_scores=[1.0], n_repetitions=1,
                  avg_topk_ids=None, avg_topk_scores=None, stages_ms={})


def test_view_follows_the_engine_chosen_by_source_id(tiny_bundle):
    """Two engines publish the same result stream name on this host: the feed follows the one
    whose source_id it was given, reads only its results, and names the other one."""
    bundle = load_bundle(tiny_bundle[0])
    name = f"test-results-{uuid.uuid4().hex[:8]}"
    a, b = (ResultOutlet(name, f"engine-{c}-{uuid.uuid4().hex[:6]}") for c in "ab")
    ids = bundle.template_ids
    feed = LSLResultFeed(name, bundle, source_id=b.source_id, timeout=5)
    feed.others = None  # look for the other engines too (as 'neuralign view' does)
    feed.start()
    try:
        import time

        got: list = []
        deadline = time.monotonic() + 15
        k = 0
        while time.monotonic() < deadline and len(got) < 3:
            a.publish(_result(k, ids[0]))
            b.publish(_result(k, ids[1]))
            k += 1
            time.sleep(0.1)
            got += feed.poll().results
        assert len(got) >= 3
        assert {r.topk_ids[0] for r in got} == {ids[1]}  # only engine b's results
        text = feed.following()
        assert b.source_id in text and name in text
        assert a.source_id in text and "--result-source-id" in text
        assert b.source_id in feed.describe()
    finally:
        feed.close()
        a.close()
        b.close()


@pytest.mark.parametrize("x, nice", [(37.0, 20.0), (5.0, 5.0), (0.9, 0.5), (1e-5, 1e-5)])
def test_nice_value(x, nice):
    assert nice_value(x) == pytest.approx(nice)


def test_traces_have_a_scale_bar_in_microvolts(qtbot):
    panel = _keep(TracePanel(True, 5.0, ("µV", 1e6)))
    t = np.linspace(-5, 0, 500)
    rng = np.random.default_rng(0)
    data = (10e-6 * rng.standard_normal((3, t.size))).astype(np.float32)
    std = data.std(axis=1)
    snap = TraceSnapshot(t=t, data=data, channels=["O1", "Oz", "O2"],
                         bad=np.zeros(3, bool), std=std, ref_std=float(np.median(std)),
                         n_written=500)
    assert panel.show_traces(snap)
    value = panel.scale_value
    assert value > 0 and panel.scale_label.toPlainText() == f"{value:g} µV"
    assert "µV" in panel.title.text()
    xs, ys = panel.scale_bar.getData()
    lanes_per_volt = 1.0 / (6.0 * snap.ref_std)
    assert ys[1] - ys[0] == pytest.approx(value * 1e-6 * lanes_per_volt)


def test_reconstruction_plot_names_its_units(qtbot, tiny_bundle):
    from neuralign.ui.panels import reconstruction_amplitude_label

    man = load_bundle(tiny_bundle[0]).manifest
    label = reconstruction_amplitude_label(man)
    assert "whitened" in label and "s.d." in label
    panel = _keep(MaskPanel(["O1", "Oz", "O2"], ["eeg"] * 3, True, 250.0, 0.0, label))
    assert "whitened" in panel.rec_plot.getPlotItem().getAxis("left").labelText


def test_sensor_labels_do_not_overlap(qtbot):
    """The 63-channel easycap-M1 cap of the demo: no two channel labels overlap (they did at the
    rim: FT7/FC5, TP7/CP5, CP6/TP8)."""
    from neuralign.offline.simulator.forward import eeg_channel_names

    names = eeg_channel_names("easycap-M1")
    assert len(names) == 63
    for must in ("FT7", "FC5", "TP7", "CP5", "CP6", "TP8"):
        assert must in names
    panel = _keep(MaskPanel(names, ["eeg"] * len(names), True, 250.0))
    panel.resize(700, 380)  # the mask panel's share of a 1366 x 768 window
    panel.show()
    qtbot.waitExposed(panel)
    rects = {n: t.sceneBoundingRect() for n, t in panel.labels.items()}
    overlaps = [(a, b) for i, a in enumerate(rects) for b in list(rects)[i + 1:]
                if rects[a].intersected(rects[b]).width() > 1
                and rects[a].intersected(rects[b]).height() > 1]
    panel.hide()
    assert not overlaps, overlaps
