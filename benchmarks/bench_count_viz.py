"""Benchmark geoseg.count and geoseg.viz on synthetic results; prints JSON.

.venv/bin/python benchmarks/bench_count_viz.py [--objects 100000] [--zones 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from geoseg.count import count, write_counts
from geoseg.viz import quicklook, web_map

X0, Y0 = 500_000.0, 5_010_000.0


def objects(n, extent, seed=0):
    rng = np.random.default_rng(seed)
    x = X0 + rng.uniform(0, extent, n)
    y = Y0 - rng.uniform(0, extent, n)
    cls = rng.choice(["ship", "vehicle", "building"], n)
    half = np.where(cls == "ship", 15.0, np.where(cls == "vehicle", 2.5, 8.0))
    geoms = shapely.box(x - half, y - half / 2, x + half, y + half / 2)
    return gpd.GeoDataFrame(
        {"class": cls, "score": rng.uniform(0, 1, n), "length_m": 2 * half, "scene": "bench"},
        geometry=geoms,
        crs="EPSG:32631",
    )


def timed(fn):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round(dt, 3), round(peak / 2**20, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--zones", type=int, default=100)
    ap.add_argument("--extent", type=float, default=10_000.0, help="metres")
    ap.add_argument("--map-objects", type=int, default=5_000)
    args = ap.parse_args()
    gdf = objects(args.objects, args.extent)
    k = int(np.sqrt(args.zones))
    step = args.extent / k
    zones = gpd.GeoDataFrame(
        geometry=[
            shapely.box(X0 + i * step, Y0 - (j + 1) * step, X0 + (i + 1) * step, Y0 - j * step)
            for i in range(k)
            for j in range(k)
        ],
        crs="EPSG:32631",
    ).to_crs("EPSG:4326")
    report = {"objects": args.objects, "zones": len(zones), "extent_m": args.extent}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res, report["count_grid250_s"], report["count_grid250_peak_mib"] = timed(
            lambda: count(gdf, grid_m=250)
        )
        report["grid_cells"] = len(res.grid)
        _, report["count_aoi_s"], report["count_aoi_peak_mib"] = timed(
            lambda: count(gdf, aoi=zones)
        )
        _, report["write_gpkg_s"], _ = timed(lambda: write_counts(res, tmp / "c.gpkg"))
        scene = tmp / "scene.tif"
        size = 8192
        with rasterio.open(
            scene,
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=3,
            dtype="uint16",
            crs="EPSG:32631",
            transform=from_origin(X0, Y0, args.extent / size, args.extent / size),
            tiled=True,
            compress="deflate",
        ) as dst:
            rng = np.random.default_rng(1)
            for r in range(0, size, 1024):
                win = rasterio.windows.Window(0, r, size, 1024)
                dst.write(rng.integers(0, 4000, (3, 1024, size), dtype=np.uint16), window=win)
            dst.build_overviews([2, 4, 8, 16], Resampling.average)
        report["scene_px"] = size
        sub = gdf.iloc[: args.map_objects]
        _, report["quicklook_1024_s"], report["quicklook_peak_mib"] = timed(
            lambda: quicklook(scene, sub, tmp / "q.png", max_size=1024)
        )
        out, report["web_map_s"], report["web_map_peak_mib"] = timed(
            lambda: web_map(sub, scene=scene, out_html=tmp / "m.html", max_size=1024)
        )
        report["map_objects"] = len(sub)
        report["web_map_mb"] = round(out.stat().st_size / 1e6, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
