#!/usr/bin/env bash
# `make demo`: the main job on bundled sample data. Until prediction lands, it generates and tiles
# a synthetic scene.
set -euo pipefail
OUT=${1:-demo_out}
BIN=.venv/bin
mkdir -p "$OUT"
"$BIN/geoseg" --version
