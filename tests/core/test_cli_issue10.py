"""Issue 10: the command line says what it does (help, bench subcommands, run's config flags,
cached demo steps keyed on the config, the viewer's display check, the attach-mode hint)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from neuralign.cli.parser import build_parser


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralign", *args], capture_output=True,
                          text=True, env={**os.environ}, timeout=timeout)


def subparser(*path: str):
    """The argparse parser of ``neuralign <path...>``."""
    p = build_parser()
    for name in path:
        action = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
        p = action.choices[name]
    return p


def option_help(parser, flag: str) -> str:
    action = next(a for a in parser._actions if flag in a.option_strings)
    return (action.help or "") % {"default": action.default} if action.help else ""


def test_bare_neuralign_prints_the_help():
    out = run()
    assert out.returncode == 0, out.stderr
    assert "usage: neuralign" in out.stdout and "<command>" in out.stdout
    assert "error" not in out.stderr


def test_run_help_documents_top_k_device_and_duration():
    p = subparser("run")
    assert "retrieved" in option_help(p, "--top-k")
    assert "cuda" in option_help(p, "--device") and "default auto" in option_help(p, "--device")
    assert "default" in option_help(p, "--duration")
    for flag in ("--config", "--set", "--torch-threads", "--result-name", "--result-source-id"):
        assert option_help(p, flag), flag


def test_bench_has_one_subcommand_per_measurement():
    training, latency = subparser("bench", "training"), subparser("bench", "latency")
    flags = {name: {s for a in p._actions for s in a.option_strings}
             for name, p in (("training", training), ("latency", latency))}
    assert {"--n-chans", "--batch", "--steps"} <= flags["training"]
    assert {"--bundle", "--raw", "--duration", "--max-wait-ms"} <= flags["latency"]
    assert not flags["training"] & {"--bundle", "--raw", "--duration"}
    assert not flags["latency"] & {"--n-chans", "--n-times", "--batch"}
    assert "--families" in {s for a in subparser("bench", "fidelity")._actions
                            for s in a.option_strings}
    out = run("bench")
    assert out.returncode == 0 and "training" in out.stdout and "latency" in out.stdout


def test_run_reads_the_realtime_section_of_its_config(tmp_path):
    """`run --config/--set` reach the realtime section: a bad value is the schema's one-line
    error naming the key (before any bundle or stream is opened)."""
    out = run("run", "--bundle", str(tmp_path), "--source", "lsl:x", "--headless",
              "--set", "realtime.batch_size=0")
    assert out.returncode == 2 and "realtime.batch_size" in out.stderr, out.stderr
    cfg = tmp_path / "rt.yaml"
    cfg.write_text("dataset: {kind: simulated}\nrealtime: {max_wait_ms: -1}\n")
    out = run("run", "--config", str(cfg), "--bundle", str(tmp_path), "--source", "lsl:x",
              "--headless")
    assert out.returncode == 2 and "realtime.max_wait_ms" in out.stderr and str(cfg) in out.stderr
    out = run("run", "--bundle", str(tmp_path), "--headless")
    assert out.returncode == 2 and "--source" in out.stderr and "realtime.source" in out.stderr


def test_run_flags_and_config_keys_are_one_setting():
    from neuralign.cli.common import config_from_args
    from neuralign.cli.online import RUN_FLAGS

    p = subparser("run")
    args = p.parse_args(["--bundle", "b", "--source", "lsl:EEG", "--torch-threads", "2",
                         "--result-source-id", "0012", "--set", "realtime.top_k=7"])
    rt = config_from_args(args, RUN_FLAGS).realtime
    assert (rt.source, rt.torch_threads, rt.top_k) == ("lsl:EEG", 2, 7)
    assert rt.result_source_id == "0012"  # a string, not the number 12


def test_simulated_dataset_cache_is_keyed_on_the_config(tmp_path, capsys):
    from neuralign.cli.offline import ensure_simulated
    from neuralign.config import load_config
    from tests.conftest import TINY_SIM

    sets = [f"dataset.simulation.{k}={v}" for k, v in TINY_SIM.items()]
    sets += ["dataset.simulation.n_train_concepts=3", "dataset.simulation.n_test_concepts=2",
             "dataset.simulation.test_repetitions=2"]
    data = tmp_path / "data"
    ensure_simulated(load_config("demo", sets), data, force=False)
    assert "Simulating" in capsys.readouterr().out
    ensure_simulated(load_config("demo", sets), data, force=False)
    assert "Reusing" in capsys.readouterr().out
    ensure_simulated(load_config("demo", [*sets, "dataset.simulation.snr=2.5"]), data, force=False)
    out = capsys.readouterr().out
    assert "another config" in out and "Simulating" in out and "Reusing" not in out
    assert json.loads((data / "simulation.json").read_text())["simulation"]["snr"] == 2.5


def test_cache_key_changes_with_config_and_code(tmp_path, monkeypatch):
    from neuralign.cli import cache

    k1 = cache.cache_key(config={"a": 1})
    assert k1 == cache.cache_key(config={"a": 1}) != cache.cache_key(config={"a": 2})
    cache.mark_cached(tmp_path, k1, "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert cache.is_cached(tmp_path, k1, "model.safetensors")
    monkeypatch.setattr(cache, "code_version", lambda: "0.0.0+other")
    assert not cache.is_cached(tmp_path, cache.cache_key(config={"a": 1}), "model.safetensors")


def test_viewer_check_names_missing_packages_and_the_apt_command():
    from neuralign.ui.display import QT_DEBS, headless_reason, missing_qt_packages

    fake = {"libfake-xcb-thing0": "libfake-xcb-thing.so.0", "libc6": "libc.so.6"}
    assert missing_qt_packages(fake) == ["libfake-xcb-thing0"]
    msg = headless_reason({"DISPLAY": ":0"}, fake)
    assert "libfake-xcb-thing0" in msg and "apt-get install -y libfake-xcb-thing0" in msg
    assert "libc6" not in msg
    assert "No display" in headless_reason({}, fake)
    assert headless_reason({"QT_QPA_PLATFORM": "offscreen"}, fake) is None
    assert {"libxcb-icccm4", "libxcb-keysyms1", "libxcb-xinerama0", "libxcb-cursor0"} <= set(QT_DEBS)
    # one list: the shell script CI and `make demo` use reads it from the module
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "ui" / "display.py")], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == list(QT_DEBS)
    assert "ui/display.py" in (root / ".ci" / "qt-deps.sh").read_text()
    for user in (root / ".ci" / "run", root / "Makefile"):
        assert "qt-deps.sh" in user.read_text() and "libxcb-icccm4" not in user.read_text()


def test_attach_mode_hint_names_only_flags_that_exist():
    from neuralign.ui.panels.common import IN_PROCESS_HINT

    flags = set(re.findall(r"--[\w-]+", IN_PROCESS_HINT)) - {"--headless"}
    known = {s for a in subparser("run")._actions for s in a.option_strings}
    assert flags and flags <= known
    ui = Path(__file__).resolve().parents[2] / "ui"
    for f in ui.rglob("*.py"):
        assert "run --view" not in f.read_text(), f


def test_screenshots_go_to_a_documented_directory(monkeypatch, tmp_path):
    from neuralign.ui.viewer import default_screenshot_dir

    monkeypatch.setenv("NEURALIGN_SCREENSHOT_DIR", str(tmp_path / "shots"))
    assert default_screenshot_dir() == tmp_path / "shots"
    monkeypatch.delenv("NEURALIGN_SCREENSHOT_DIR")
    assert default_screenshot_dir() == Path.home() / "neuralign" / "screenshots"
    readme = (Path(__file__).resolve().parents[2] / "docs" / "howto" / "viewer.md").read_text()
    assert "NEURALIGN_SCREENSHOT_DIR" in readme and "~/neuralign/screenshots" in readme


@pytest.mark.parametrize("what", ["training", "latency"])
def test_bench_subcommand_help_runs(what):
    out = run("bench", what, "--help")
    assert out.returncode == 0 and f"neuralign bench {what}" in out.stdout
