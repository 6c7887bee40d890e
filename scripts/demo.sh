#!/usr/bin/env bash
# `make demo`: find and outline the objects of a bundled scene with the bundled demo model.
#
#   bash scripts/demo.sh [OUT]        (OUT defaults to demo_out)
#
# Writes OUT/<scene>.gpkg (polygons in the scene CRS) and OUT/<scene>.png (quicklook), prints
# the objects per class and, when the scene has synthetic truth beside it (<scene>.gpkg), the
# F1 score against it. Overrides: DEMO_SCENE=path.tif, DEMO_MODEL=path.safetensors.
# Without a bundled scene a synthetic one is generated; without the demo model the scene is
# shown with its true labels instead of predictions.
set -euo pipefail
OUT=${1:-demo_out}
BIN=${BIN:-.venv/bin}
GEOSEG="$BIN/geoseg"
MODEL=${DEMO_MODEL:-geoseg/samples/models/demo_lite0.safetensors}
mkdir -p "$OUT"
"$GEOSEG" --version

SCENE=${DEMO_SCENE:-}
if [ -z "$SCENE" ]; then
    for candidate in geoseg/samples/marina.tif data_samples/town.tif; do
        if [ -f "$candidate" ]; then
            SCENE=$candidate
            break
        fi
    done
fi
if [ -z "$SCENE" ]; then
    mkdir -p "$OUT/scene"
    SCENE="$OUT/scene/synth_marina.tif"
    echo "no bundled sample scene: generating $SCENE"
    "$GEOSEG" synth -o "$SCENE" --size 1024 --seed 7 --layout marina
fi
NAME=$(basename "${SCENE%.*}")
TRUTH="${SCENE%.*}.gpkg"
RESULT="$OUT/$NAME.gpkg"
PNG="$OUT/$NAME.png"

if [ -f "$MODEL" ]; then
    echo "predicting $SCENE with $MODEL"
    "$GEOSEG" predict "$SCENE" -m "$MODEL" -o "$RESULT" --quicklook "$PNG" --device cpu
    if [ -f "$TRUTH" ]; then
        echo "against the synthetic truth ($TRUTH):"
        "$GEOSEG" evaluate "$RESULT" "$TRUTH"
    fi
    echo "results: $RESULT   quicklook: $PNG"
else
    echo "demo model $MODEL not found: showing $SCENE with its true labels instead" >&2
    if [ -f "$TRUTH" ]; then
        "$GEOSEG" count "$TRUTH"
        "$BIN/python" -c 'import sys; from geoseg.viz import quicklook; print(quicklook(sys.argv[1], sys.argv[2], sys.argv[3]))' \
            "$SCENE" "$TRUTH" "$PNG"
    else
        "$BIN/python" -c 'import sys; from geoseg.viz import quicklook; print(quicklook(sys.argv[1], None, sys.argv[2]))' \
            "$SCENE" "$PNG"
    fi
fi
