"""Vectorizing speed: the batched tracer against one GDAL trace per mask, side by side.

The objects are those of ``bench_stitch.py`` (rows of touching 4-16 px rectangles and ellipses,
what stitching returns on a dense scene of boats and cars), as scene-level ``Detections`` in a
UTM scene with 0.5 m pixels. Each size runs in its own process pinned to one CPU core; the two
methods alternate (old, new, old, new...) so that both see the same load:

* ``per_mask``: how ``geoseg.vectorize`` traced until this benchmark was written, one
  :func:`geoseg.vectorize.mask_to_geometry` (a :func:`rasterio.features.shapes` call) per mask;
* ``batched``: :func:`geoseg.vectorize.trace_outlines` (masks packed into label atlases, one
  trace per atlas, geometries built from coordinate arrays).

Both run inside the same :func:`geoseg.vectorize.vectorize` (attributes included), and the
outputs are checked equal (normalised geometries, attributes) before any figure is printed.
The JSON line per size gives wall and CPU seconds of every run, the best of each, the speed-up
and the 1-minute load average. On a shared machine compare CPU seconds.

Usage::

    .venv/bin/python benchmarks/bench_vectorize.py                   # 10k and 100k objects
    .venv/bin/python benchmarks/bench_vectorize.py --sizes 100000 --repeat 3 --old-repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stitch import CLASSES, make_objects

import geoseg.vectorize as vec
from geoseg.types import Detections

UTM_WKT = 'PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","32633"]]'  # noqa: E501


def per_mask_outlines(masks, origins, transform, **_):
    """The trace ``vectorize`` used before ``trace_outlines``: one GDAL call per mask."""
    out = np.full(len(masks), None, dtype=object)
    for k, m in enumerate(masks):
        x1, y1 = int(origins[k][0]), int(origins[k][1])
        out[k] = vec.mask_to_geometry(m, vec.shifted(transform, x1, y1))
    return out


def make_detections(n_objects: int, seed: int) -> Detections:
    boxes, masks, labels, _ = make_objects(n_objects, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    return Detections(
        boxes=boxes.astype(np.float32),
        scores=rng.uniform(0.5, 1.0, len(boxes)).astype(np.float32),
        labels=labels,
        mask_boxes=boxes.astype(np.int32),
        masks=tuple(masks),
        classes=CLASSES,
    )


def run_one(n_objects: int, repeat: int, old_repeat: int, seed: int) -> dict:
    import warnings

    import shapely
    from affine import Affine

    warnings.simplefilter("ignore", PendingDeprecationWarning)  # affine's `*` in shifted()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    det = make_detections(n_objects, seed)
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)

    def run(method: str):
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "per_mask":
            with mock.patch.object(vec, "trace_outlines", per_mask_outlines):
                gdf = vec.vectorize(det, transform=transform, crs_wkt=UTM_WKT)
        else:
            gdf = vec.vectorize(det, transform=transform, crs_wkt=UTM_WKT)
        return gdf, time.perf_counter() - t0, time.process_time() - c0

    vec.vectorize(det[:10], transform=transform, crs_wkt=UTM_WKT)  # imports: not timed
    times: dict[str, list[float]] = {"per_mask": [], "batched": []}
    cpu: dict[str, list[float]] = {"per_mask": [], "batched": []}
    outputs = {}
    for r in range(max(repeat, old_repeat)):
        for method, n in (("per_mask", old_repeat), ("batched", repeat)):
            if r < n:
                outputs[method], wall, c = run(method)
                times[method].append(wall)
                cpu[method].append(c)
    new = outputs["batched"]
    if old_repeat == 0:  # --old-repeat 0: the batched tracer alone, nothing to compare
        return {
            "objects": len(det),
            "polygons": len(new),
            "geometry_types": sorted(set(new.geom_type)),
            "batched_wall_s": [round(t, 3) for t in times["batched"]],
            "batched_cpu_s": [round(t, 3) for t in cpu["batched"]],
            "batched_us_per_object": round(1e6 * min(cpu["batched"]) / len(det), 2),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
    old = outputs["per_mask"]
    same_geoms = bool(
        len(old) == len(new)
        and all(
            a.wkb == b.wkb
            for a, b in zip(
                shapely.normalize(np.asarray(old.geometry.values, dtype=object)),
                shapely.normalize(np.asarray(new.geometry.values, dtype=object)),
                strict=True,
            )
        )
    )
    cols = ["area_m2", "length_m", "width_m"]
    same_attrs = bool(np.allclose(old[cols].to_numpy(), new[cols].to_numpy(), rtol=1e-9))
    if not (same_geoms and same_attrs):
        raise SystemExit(f"outputs differ: geometries {same_geoms}, attributes {same_attrs}")
    best = {m: min(cpu[m]) for m in cpu}
    return {
        "objects": len(det),
        "polygons": len(new),
        "multipolygons": int((new.geom_type == "MultiPolygon").sum()),
        "per_mask_wall_s": [round(t, 3) for t in times["per_mask"]],
        "per_mask_cpu_s": [round(t, 3) for t in cpu["per_mask"]],
        "batched_wall_s": [round(t, 3) for t in times["batched"]],
        "batched_cpu_s": [round(t, 3) for t in cpu["batched"]],
        "per_mask_cpu_best_s": round(best["per_mask"], 3),
        "batched_cpu_best_s": round(best["batched"], 3),
        "batched_us_per_object": round(1e6 * best["batched"] / len(det), 2),
        "speedup_cpu": round(best["per_mask"] / best["batched"], 1),
        "speedup_wall": round(min(times["per_mask"]) / min(times["batched"]), 1),
        "same_output": True,
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--repeat", type=int, default=3, help="runs of the batched tracer")
    p.add_argument(
        "--old-repeat",
        type=int,
        default=None,
        help="runs of the per-mask trace (0: time the batched tracer alone)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    old_repeat = args.repeat if args.old_repeat is None else args.old_repeat
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.repeat, old_repeat, args.seed)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--repeat", str(args.repeat)]
        cmd += ["--old-repeat", str(old_repeat), "--seed", str(args.seed)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(json.dumps({"objects": n, "error": res.stderr.strip()[-2000:]}))
        else:
            print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
