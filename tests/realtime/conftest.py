"""Fixtures shared by the realtime tests."""

import pytest

from neuralign.cli.parser import main as cli_main


@pytest.fixture(scope="session")
def bench_latency_run(tiny_bundle, tmp_path_factory):
    """One short real ``bench latency`` run (producer, engine, naive baseline, consumer over
    LSL), shared by the tests that check its report: each process start costs seconds. The
    producer stamps at the push, as device apps do."""
    bundle_dir, data = tiny_bundle
    tmp = tmp_path_factory.mktemp("bench-latency")
    out, png = tmp / "lat.json", tmp / "lat.png"
    rc = cli_main(["bench", "latency", "--bundle", str(bundle_dir), "--raw",
                   str(data / "sim_test_raw.fif"), "--duration", "6", "--warmup", "1",
                   "--streams", "2", "--chunk-size", "2", "--stamps", "push",
                   "--priority", "high", "--naive-priority", "same", "--json", str(out),
                   "--plot", str(png)])
    return rc, out, png
