#!/usr/bin/env bash
# Reproduce the bundled demo model data_samples/models/demo_lite0.{safetensors,json}
# (see data_samples/models/MODEL_CARD.md). All data goes to WORK (default /tmp/geoseg_demo),
# outside the git tree. Two stages on the CPU (about 25 + 20 minutes on an idle 2-core machine):
#   1. 800 AdamW steps from the ImageNet EfficientNet-Lite0 backbone;
#   2. 700 more steps continuing from stage 1's last checkpoint (a fresh warm-up + cosine cycle).
# The second stage publishes its last checkpoint and writes the model card with held-out scores.
set -euo pipefail
WORK=${WORK:-/tmp/geoseg_demo}
COMMON=(--work "$WORK" --scenes 6 --size 2048 --chip 256 --overlap 64 --batch 4)
mkdir -p "$WORK"
nice -n 5 .venv/bin/python -W ignore benchmarks/train_demo.py "${COMMON[@]}" --steps 800 --seed 0 "$@"
rm -rf "$WORK/run_stage1"
mv "$WORK/run" "$WORK/run_stage1"
cp "$WORK/run_stage1/last.safetensors" "$WORK/stage1.safetensors"
cp "$WORK/run_stage1/last.json" "$WORK/stage1.json"
exec nice -n 5 .venv/bin/python -W ignore benchmarks/train_demo.py "${COMMON[@]}" --steps 700 --seed 1 \
  --init-checkpoint "$WORK/stage1.safetensors" "$@"
