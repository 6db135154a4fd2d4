"""Keep LSL discovery on this host unless the user configured LSL themselves.

liblsl's default sends discovery multicast out of every network interface. neuralign ships a
config (``lsl_api.cfg``: machine scope + 127.0.0.1 as known peer) and points ``LSLAPICFG`` at it
before any LSL library is imported. A lab that streams across machines sets ``LSLAPICFG`` to its
own file (or ``NEURALIGN_LSL_CONFIG=system`` to use liblsl's own search order).
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

LOCAL_CONFIG = Path(str(resources.files("neuralign") / "lsl_api.cfg"))


def ensure_local_lsl_config() -> str | None:
    """Set ``LSLAPICFG`` to the shipped local-host config unless the user set one; return it.

    Must run before pylsl / mne_lsl create their first stream (liblsl reads the file once).
    """
    if os.environ.get("NEURALIGN_LSL_CONFIG", "").lower() == "system":
        return os.environ.get("LSLAPICFG")
    current = os.environ.get("LSLAPICFG")
    if current:
        if not Path(current).is_file():
            log.warning("LSLAPICFG=%s does not exist; liblsl will use its defaults", current)
        return current
    os.environ["LSLAPICFG"] = str(LOCAL_CONFIG)
    return str(LOCAL_CONFIG)


# Importing neuralign at all is enough to make every later LSL use local-host by default.
ensure_local_lsl_config()
