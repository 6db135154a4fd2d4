"""The install layout: one import package, subpackages mapped from the top-level folders."""

import importlib
import importlib.util
import os
import subprocess
import sys


def test_subpackages_import():
    for name in ("neuralign.models", "neuralign.offline", "neuralign.realtime", "neuralign.ui",
                 "neuralign.signal", "neuralign.configs"):
        importlib.import_module(name)


def test_no_top_level_models_or_ui_installed(tmp_path):
    # Run from an empty directory so the repository's own folders are not on sys.path.
    code = "import importlib.util as u; print(u.find_spec('models'), u.find_spec('ui'), u.find_spec('offline'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "None None None", out.stdout + out.stderr


def test_lsl_config_is_local_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    code = "import os, neuralign; print(os.environ['LSLAPICFG'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    path = out.stdout.strip()
    text = open(path).read()
    assert "ResolveScope = machine" in text and "KnownPeers" in text and "127.0.0.1" in text
    user = tmp_path / "lab.cfg"
    user.write_text("[multicast]\nResolveScope = site\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "LSLAPICFG": str(user)}, cwd=tmp_path)
    assert out.stdout.strip() == str(user)


def _tomllib():
    """tomllib (Python >= 3.11), else the copy pip vendors (Python 3.10)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib


# Optional modules the suite may skip without: model weights / large stacks, not readers.
HEAVY_OPTIONAL = {"open_clip": "the [clip] extra needs local model weights",
                  "braindecode": "the [braindecode] extra pulls a second model zoo"}


def test_dev_extra_has_every_reader_the_tests_skip_without():
    """A test that `importorskip`s a data reader is always skipped in CI unless `[dev]` has it
    (the Allen loader's test and pynwb, issue 10 item 5)."""
    import re
    from pathlib import Path

    tomllib = _tomllib()
    root = Path(__file__).resolve().parents[2]
    dev = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    dev_names = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0].lower() for d in dev}
    skipped = {m for p in (root / "tests").rglob("*.py")
               for m in re.findall(r"importorskip\(\s*[\"']([\w.]+)", p.read_text())}
    assert "pynwb" in skipped  # the scan sees the Allen test
    missing = sorted(m for m in skipped - set(HEAVY_OPTIONAL) if m.split(".")[0] not in dev_names)
    assert not missing, f"tests skip without these, add them to [dev]: {missing}"


def test_license_is_an_spdx_string():
    """`project.license` as a table is deprecated by setuptools (3 warnings on every install)."""
    from pathlib import Path

    meta = _tomllib().loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "BSD-3-Clause"
