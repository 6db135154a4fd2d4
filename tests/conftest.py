"""Suite-wide setup: keep LSL discovery on this host and Qt offscreen BEFORE any import uses them."""

import os
from pathlib import Path

_LSL_CFG = Path(__file__).resolve().parents[1] / "neuralign" / "lsl_api.cfg"
os.environ["LSLAPICFG"] = str(_LSL_CFG)  # the suite never uses a user's LSL config
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MNE_DONTWRITE_HOME", "true")
os.environ.setdefault("OMP_NUM_THREADS", "2")
