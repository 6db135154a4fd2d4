"""The command line as a user runs it: a real subprocess, exit codes, one-line errors."""

import os
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "neuralign", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ}, timeout=120,
    )


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("simulate", "train", "evaluate", "export", "replay", "run", "view", "bench", "demo"):
        assert cmd in out.stdout
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and len(sub.stdout) > 100, cmd


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("dataset: {kind: simulated}\ntraining: {epochz: 3}\n", "training.epochz: unknown key"),
        ("dataset: {kind: simulated}\ntraining: {lr: fast}\n", "training.lr: expected a valid number"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, yaml_text, needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = run("simulate", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(cfg) in lines[0] and needle in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()


def test_missing_config_file_and_debug_traceback(tmp_path):
    out = run("simulate", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path))
    assert out.returncode == 2 and "nope.yaml" in out.stderr and "file not found" in out.stderr
    assert "Traceback" not in out.stderr
    dbg = run("--debug", "simulate", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path))
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr


def test_bad_override_value():
    out = run("simulate", "--set", "dataset.simulation.snr=-1", "--out", "/tmp/unused")
    assert out.returncode == 2
    assert "dataset.simulation.snr" in out.stderr and "greater than 0" in out.stderr


def test_missing_bundle_is_one_line_error(tmp_path):
    for args in (("view", "--bundle", str(tmp_path / "nope")),
                 ("run", "--bundle", str(tmp_path / "nope"), "--source", "lsl:x", "--headless"),
                 ("export", "--run", str(tmp_path), "--out", str(tmp_path / "b"))):
        out = run(*args)
        assert out.returncode == 2, args
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
