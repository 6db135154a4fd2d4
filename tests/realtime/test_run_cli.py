"""`neuralign run` as a user runs it, on a file source (in-process LSL replay) and a bad stream."""

import os
import subprocess
import sys


def test_run_headless_on_a_file_source_records_and_stops(tiny_bundle, tmp_path):
    bundle_dir, data = tiny_bundle
    rec = tmp_path / "rec"
    out = subprocess.run(
        [sys.executable, "-m", "neuralign", "run", "--bundle", str(bundle_dir), "--source",
         f"file:{data / 'sim_test_raw.fif'}", "--speed", "2", "--headless", "--n-epochs", "6",
         "--record", str(rec), "--status-every", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    final = [ln for ln in out.stdout.splitlines() if ln.startswith("final:")]
    assert final and "decoded" in final[0]
    assert int(final[0].split("decoded ")[1].split(",")[0]) >= 6
    assert (rec / "header.json").is_file() and (rec / "raw.fif").is_file()
    assert len((rec / "results.jsonl").read_text().splitlines()) >= 6


def test_run_with_absent_stream_is_one_line_error(tiny_bundle):
    bundle_dir, _ = tiny_bundle
    out = subprocess.run(
        [sys.executable, "-m", "neuralign", "run", "--bundle", str(bundle_dir), "--source",
         "lsl:no-such-stream-here", "--headless", "--set", "realtime.connect_timeout_s=2"],
        capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 2
    assert "no-such-stream-here" in out.stderr and "Traceback" not in out.stderr
