"""How many objects would be MultiPolygons, and what the one-Polygon rule drops (issue 16).

Runs a checkpoint on a scene once with :func:`geoseg.pipeline.run_scene` (default: the demo
model on the bundled marina), then traces each stitched mask with all its 4-connected parts
(:func:`geoseg.vectorize.mask_to_geometry`, what was written before) and compares with what
is written now (:func:`geoseg.geometry.main_polygon`: the largest part). Prints one JSON line:
objects, MultiPolygons before (count and share), parts dropped with a histogram of their
sizes in scene pixels, pixels dropped, the geometry types written, wall and CPU seconds.

    python benchmarks/bench_multipart.py [--scene S.tif] [--model M.safetensors]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import shapely

from geoseg.pipeline import run_scene
from geoseg.predict import load_predictor
from geoseg.samples import demo_model_path, sample_scene_path
from geoseg.vectorize import mask_to_geometry, shifted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=None, help="raster (default: the bundled marina)")
    ap.add_argument("--model", default=None, help="checkpoint (default: the demo model)")
    args = ap.parse_args()
    scene = args.scene or sample_scene_path("marina")
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_scene(scene, load_predictor(args.model or demo_model_path()))
    det, info = result.detections, result.scene
    pix = abs(info.transform.a * info.transform.e)
    multi, sizes, px_total = 0, [], 0
    for k in range(len(det)):
        x1, y1 = int(det.mask_boxes[k, 0]), int(det.mask_boxes[k, 1])
        g = mask_to_geometry(det.masks[k], shifted(info.transform, x1, y1))
        if g is None:
            continue
        px_total += int(det.masks[k].sum())
        if g.geom_type == "MultiPolygon":
            multi += 1
            areas = np.sort(shapely.area(shapely.get_parts(g)))
            sizes += [round(a / pix) for a in areas[:-1]]
    hist = np.histogram(sizes, bins=[0, 2.5, 8.5, 32.5, np.inf])[0]
    print(
        json.dumps(
            {
                "scene": str(scene),
                "objects": len(det),
                "multipolygon_before": multi,
                "multipolygon_share": round(multi / max(len(det), 1), 4),
                "parts_dropped": len(sizes),
                "dropped_part_px_hist": dict(
                    zip(["1-2", "3-8", "9-32", "33+"], hist.tolist(), strict=True)
                ),
                "largest_dropped_part_px": max(sizes, default=0),
                "pixels_dropped": int(sum(sizes)),
                "pixels_total": px_total,
                "min_area_px": result.settings.min_area_px if result.settings else None,
                "written_types": sorted(set(result.gdf.geom_type)),
                "wall_s": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
