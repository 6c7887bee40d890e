#!/usr/bin/env bash
# Reproduce the bundled demo model data_samples/models/demo_lite0.{safetensors,json}
# (see data_samples/models/MODEL_CARD.md). All data goes to WORK (default /tmp/geoseg_demo),
# outside the git tree. CPU: about an hour on 2 cores; pass --steps N to change the length.
set -euo pipefail
WORK=${WORK:-/tmp/geoseg_demo}
mkdir -p "$WORK"
exec nice -n 5 .venv/bin/python -W ignore benchmarks/train_demo.py --work "$WORK" \
  --scenes 6 --size 2048 --chip 256 --overlap 64 --steps 800 --batch 4 --seed 0 "$@"
