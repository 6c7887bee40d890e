#!/usr/bin/env bash
# Reproduce the bundled demo model geoseg/samples/models/demo_lite0.{safetensors,json}
# (see geoseg/samples/models/MODEL_CARD.md). All data goes to WORK (default /tmp/geoseg_demo),
# outside the git tree. Three stages on the CPU (about 25 + 20 + 110 minutes on a 2-core machine):
#   1. 800 AdamW steps from the ImageNet EfficientNet-Lite0 backbone, chips at their own size;
#   2. 700 more steps from stage 1's last checkpoint (a fresh warm-up + cosine cycle);
#   3. 900 steps from stage 2 with the input upsampled 2x (anchors doubled with it), so a
#      9 x 4 px car covers 4 x 2 cells of the stride-4 feature map instead of 2 x 1.
# The last stage publishes its last checkpoint (float16), tunes per-class score thresholds on
# a separate synthetic scene and writes the model card with held-out scores.
set -euo pipefail
WORK=${WORK:-/tmp/geoseg_demo}
COMMON=(--work "$WORK" --scenes 6 --size 2048 --chip 256 --overlap 64 --batch 4)
PY=(nice -n 5 .venv/bin/python -W ignore benchmarks/train_demo.py)
mkdir -p "$WORK"
"${PY[@]}" "${COMMON[@]}" --steps 800 --seed 0 "$@"
rm -rf "$WORK/run_stage1"
mv "$WORK/run" "$WORK/run_stage1"
cp "$WORK/run_stage1/last.safetensors" "$WORK/stage1.safetensors"
cp "$WORK/run_stage1/last.json" "$WORK/stage1.json"
"${PY[@]}" "${COMMON[@]}" --steps 700 --seed 1 --init-checkpoint "$WORK/stage1.safetensors" "$@"
rm -rf "$WORK/run_stage2"
mv "$WORK/run" "$WORK/run_stage2"
cp "$WORK/run_stage2/last.safetensors" "$WORK/stage2.safetensors"
cp "$WORK/run_stage2/last.json" "$WORK/stage2.json"
exec "${PY[@]}" "${COMMON[@]}" --steps 900 --seed 2 --upsample 2.0 \
  --init-checkpoint "$WORK/stage2.safetensors" "$@"
