"""`neuralign demo --headless` end to end on small settings: every stage, then live == offline."""

import json
import os
import subprocess
import sys

from tests.conftest import FAST_TRAIN, tiny_config


def test_demo_headless_end_to_end_with_parity(tmp_path):
    _, cfg_path = tiny_config(tmp_path, FAST_TRAIN)
    out_json = tmp_path / "live.json"
    proc = subprocess.run(
        [sys.executable, "-m", "neuralign", "demo", "--headless", "--config", str(cfg_path),
         "--cache-dir", str(tmp_path / "cache"), "--n-trials", "16", "--speed", "2",
         # the tiny run's generator need not beat the mean image: show its images anyway (the
         # gate has its own tests); the real demo runs with the default, "validated"
         "--set", "realtime.generated_images=always", "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "parity:"):
        assert step in proc.stdout, step
    live = json.loads(out_json.read_text())
    assert live["decoded"] == live["n_trials"] == 16
    assert live["parity_n"] == 16 and live["parity_same_top1"] == 16
    assert live["online_top1"] == live["offline_top1"]
    assert live["accuracy"]["n"] == 16
    assert "engine_total" in live["latency_ms"]
    # the bundle carries the generator trained beside the BrainAE, with its validation against
    # the mean training image; one image per decoded trial, scored live beside the mean image
    # and the retrieved top-1
    assert "held-out single trials: SSIM" in proc.stdout and "mean training image" in proc.stdout
    assert "16 generated images: generated SSIM" in proc.stdout
    gen = live["generated"]
    assert gen["n"] == 16 and 0 < gen["generated"]["ssim"] <= 1
    assert gen["mean_image"]["n"] == 16 and 0 <= gen["generated"]["two_way"] <= 1
    assert gen["retrieved"]["n"] == 16  # every epoch has a top-1 among the templates
    # a second run reuses the cached dataset, run and report
    again = subprocess.run(
        [sys.executable, "-m", "neuralign", "demo", "--headless", "--config", str(cfg_path),
         "--cache-dir", str(tmp_path / "cache"), "--n-trials", "4", "--speed", "4"],
        capture_output=True, text=True, timeout=600, env={**os.environ})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Reusing simulated dataset" in again.stdout and "reusing the trained run" in again.stdout
    assert "reusing the trained generator" in again.stdout
