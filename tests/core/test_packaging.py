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
