"""Can the Qt viewer open a window here? Asked before any long pipeline starts.

Why: on X11 Qt's xcb platform plugin aborts the whole process (SIGABRT) when one of its libraries
is missing, with a message that only names ``xcb-cursor0`` whichever one it was; in the demo
that happened after minutes of training. :func:`headless_reason` finds it out first: it checks
that the display exists and that every shared library the xcb plugin loads is present, and
returns one message naming the missing Debian packages and the apt command (``None`` when the
viewer can open).

Standard library only, so ``.ci/qt-deps.sh`` (CI and ``make demo``) reads the one package list
with ``python3 ui/display.py --debs`` before anything is installed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

#: Debian package -> the shared library of it that PyQt6 (its xcb plugin, or Qt itself even
#: offscreen) loads. The one list: CI and ``make demo`` install from it too.
QT_DEBS: dict[str, str] = {
    "libglib2.0-0": "libglib-2.0.so.0",
    "libegl1": "libEGL.so.1",
    "libgl1": "libGL.so.1",
    "libfontconfig1": "libfontconfig.so.1",
    "libdbus-1-3": "libdbus-1.so.3",
    "libxkbcommon0": "libxkbcommon.so.0",
    "libxkbcommon-x11-0": "libxkbcommon-x11.so.0",
    "libxcb-cursor0": "libxcb-cursor.so.0",
    "libxcb-icccm4": "libxcb-icccm.so.4",
    "libxcb-image0": "libxcb-image.so.0",
    "libxcb-keysyms1": "libxcb-keysyms.so.1",
    "libxcb-randr0": "libxcb-randr.so.0",
    "libxcb-render-util0": "libxcb-render-util.so.0",
    "libxcb-shape0": "libxcb-shape.so.0",
    "libxcb-xinerama0": "libxcb-xinerama.so.0",
    "libxcb-xkb1": "libxcb-xkb.so.1",
}


def missing_qt_packages(debs: Mapping[str, str] = QT_DEBS) -> list[str]:
    """Debian packages whose library the dynamic loader cannot load (what Qt would abort on)."""
    missing = []
    for deb, soname in debs.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(deb)
    return missing


def apt_command(debs: list[str]) -> str:
    """The one command that installs ``debs`` (``sudo`` unless we are root)."""
    sudo = "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
    return f"{sudo}apt-get install -y {' '.join(debs)}"


def headless_reason(env: Mapping[str, str] | None = None,
                    debs: Mapping[str, str] = QT_DEBS) -> str | None:
    """Why the viewer cannot open here (one message for the user), or None when it can;
    commands that can go on without it add "running headless".

    Only the X11 (xcb) path is checked for libraries: ``QT_QPA_PLATFORM=offscreen``/``wayland``
    users chose their platform and Qt reports its own problems there without aborting.
    """
    env = os.environ if env is None else env
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None
    if not platform and env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY"):
        return None
    if not env.get("DISPLAY"):
        return "No display found (set DISPLAY, or pass --headless to silence this)"
    missing = missing_qt_packages(debs)
    if missing:
        return (f"The viewer cannot open: Qt's X11 (xcb) plugin needs {', '.join(missing)} "
                f"(not installed). Install them with: {apt_command(missing)}")
    return None


if __name__ == "__main__":  # .ci/qt-deps.sh: the package list, or only the missing ones
    print(" ".join(missing_qt_packages() if "--missing" in sys.argv else QT_DEBS))
