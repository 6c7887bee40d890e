#!/usr/bin/env bash
# Test set-up: make sure a headless Chromium is available for tests/test_viz.py (the offline
# HTML map is opened in a real browser). Installs Debian's `chromium` package when it is
# missing and apt-get can be used (root, Debian/Ubuntu). Never fails the build: if Chromium
# cannot be installed, the browser tests skip and say why.
set -u

for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: apt-get not found; install Chromium yourself for the browser tests" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
else
  SUDO=""
fi

echo "install_chromium: installing Debian's chromium package (used by the map tests)" >&2
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/dev/null \
  && $SUDO apt-get install -y -qq chromium >/dev/null; then
  echo "install_chromium: $(chromium --version 2>/dev/null)" >&2
else
  echo "install_chromium: could not install chromium; the browser tests will be skipped" >&2
fi
exit 0
