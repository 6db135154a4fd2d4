#!/usr/bin/env bash
# Install the Debian libraries PyQt6 needs (offscreen, and its X11 xcb plugin for the viewer)
# when they are missing. One list, in ui/display.py (QT_DEBS), which the viewer also checks
# before opening. Used by .ci/run and `make demo`. Without apt-get, or without root and sudo,
# it says what is missing and returns 0: the demo then runs headless with the same message.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
missing=""
for deb in $(python3 "$root/ui/display.py"); do
  dpkg -s "$deb" >/dev/null 2>&1 || missing="$missing $deb"
done
[ -z "$missing" ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "Qt runtime libraries missing:$missing (install them as root: apt-get install -y$missing)"
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Qt runtime libraries missing:$missing (no apt-get here: install the equivalents)"
  exit 0
fi
echo "installing Qt runtime libraries:$missing"
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
