"""The demo model (0.5 m) on one synthetic scene at 0.5 m, 0.3 m and 0.25 m: F1 against the truth.

    .venv/bin/python benchmarks/bench_gsd.py [--layouts town marina] [--size 320] [--seeds 7]

For each layout and seed:

1. renders a synthetic scene at 0.5 m (``geoseg.synth.generate_scene``) with exact labels;
2. warps it to 0.3 m and 0.25 m with ``rasterio.warp.reproject`` (bilinear, as
   ``gdalwarp -tr 0.3 0.3 -r bilinear`` would), written as new GeoTIFFs;
3. runs the bundled demo model with ``geoseg.pipeline.run_scene`` (default settings: the
   checkpoint's tile size and score thresholds) on the three scenes, the finer two both with
   resampling to the model's GSD (the default) and without (``resample=False``);
4. scores each run against the synthetic labels with ``geoseg.evaluate.evaluate`` (IoU 0.5).

Prints one JSON object: per run the overall F1, the per-class F1, objects found, tiles
predicted, the GSD decision and the wall seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.warp import Resampling, reproject


def warp_to(src_path: Path, dst_path: Path, gsd: float) -> Path:
    """``src_path`` resampled to ``gsd`` metres (bilinear), written to ``dst_path``."""
    with rasterio.open(src_path) as src:
        t = src.transform
        width, height = round(src.width * t.a / gsd), round(src.height * -t.e / gsd)
        dst_t = Affine(gsd, 0, t.c, 0, -gsd, t.f)
        profile = src.profile | {"width": width, "height": height, "transform": dst_t}
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, b),
                    rasterio.band(dst, b),
                    dst_transform=dst_t,
                    dst_crs=src.crs,
                    resampling=Resampling.bilinear,
                )
    return dst_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=["town", "marina"])
    parser.add_argument("--size", type=int, default=320, help="scene side at 0.5 m, pixels")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument("--density", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from geoseg.evaluate import evaluate
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor
    from geoseg.samples import demo_model_path
    from geoseg.synth import generate_scene

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_gsd_"))
    work.mkdir(parents=True, exist_ok=True)
    predictor = load_predictor(demo_model_path())
    runs = []
    for layout in args.layouts:
        for seed in args.seeds:
            scene = generate_scene(
                work / f"{layout}_{seed}_0.5.tif",
                size=args.size,
                seed=seed,
                layout=layout,
                gsd=0.5,
                density=args.density,
            )
            paths = {0.5: scene.raster_path}
            for gsd in (0.3, 0.25):
                paths[gsd] = warp_to(scene.raster_path, work / f"{layout}_{seed}_{gsd}.tif", gsd)
            for gsd, path in paths.items():
                for resample in (True, False) if gsd != 0.5 else (True,):
                    t0 = time.perf_counter()
                    result = run_scene(path, predictor, resample=resample)
                    seconds = time.perf_counter() - t0
                    scores = evaluate(result.gdf, scene.labels_path)
                    runs.append(
                        {
                            "layout": layout,
                            "seed": seed,
                            "scene_gsd": gsd,
                            "resample": resample,
                            "f1": round(scores.overall.f1, 3),
                            "f1_per_class": {
                                k: round(v.f1, 3) for k, v in scores.per_class.items()
                            },
                            "objects": len(result.gdf),
                            "truth": int(scores.overall.tp + scores.overall.fn),
                            "tiles": result.n_tiles,
                            "decision": None if result.grid is None else result.grid.describe(),
                            "seconds": round(seconds, 1),
                        }
                    )
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {platform.python_version()}",
                "size_at_0.5m": args.size,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
