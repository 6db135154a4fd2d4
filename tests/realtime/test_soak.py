"""The soak (issue 11) in a few seconds: replay + engine + recorder faster than real time, and
every figure of the report. The 2-hour-equivalent run is 'neuralign bench soak' (docs/benchmarks/soak.md)."""

from __future__ import annotations

from neuralign.realtime.soak import run_soak


def test_soak_short_run_reports_every_figure(tiny_bundle, tmp_path):
    bundle_dir, data_dir = tiny_bundle
    rep = run_soak(bundle_dir, data_dir / "sim_test_raw.fif", equivalent_s=16.0, speed=8.0,
                   warmup_s=2.0, out=tmp_path / "soak.json")
    assert rep.equivalent_s >= 16.0 and rep.wall_s < rep.equivalent_s
    assert rep.dropped_samples == 0
    assert rep.sent_samples == rep.received_samples == rep.recorded_samples
    assert rep.decoded == rep.markers_sent > 0  # every stimulus of every pass decoded
    assert 0 < rep.rss_start_mb <= rep.rss_max_mb and rep.rss_end_mb > 0
    assert rep.p99_first_ms > 0 and rep.p99_last_ms > 0
    assert (tmp_path / "soak.json").is_file() and len(rep.lines()) == 5
