"""Tile-reading throughput of geoseg.tiling.iter_tiles vs a bare rasterio windowed-read loop.

    .venv/bin/python benchmarks/bench_tiling.py [--size 10000] [--small 6000] [--workdir DIR]

1. Writes a synthetic SIZE x SIZE 3-band uint8 GeoTIFF (tiled 256 x 256, deflate) once, reusing
   it from --workdir on later runs.
2. Throughput: the same 512 px / 64 px-overlap windows (geoseg.tiling.make_grid) read by
   (a) a bare ``dataset.read(window=...)`` loop and (b) ``iter_tiles`` (which also normalises
   to float32 with scene-wide statistics and builds the valid mask), (c) iter_tiles as it was
   before its buffer pool (fresh arrays per tile) and (d) iter_tiles with 2 GDAL threads.
   Best of --repeat runs each, after one warm-up pass so that all read from the OS page
   cache; the loops alternate so that background load hits them alike.
3. Peak memory: ``iter_tiles`` over a --small and a SIZE scene, each in a fresh process;
   reports the RSS before reading (after imports) and the peak RSS sampled while reading.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

TILE, OVERLAP = 512, 64


def make_scene(path: Path, size: int) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000.0, 4000000.0, 0.5, 0.5),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        nodata=0,
    )
    rng = np.random.default_rng(0)
    strip = 1024
    xx = np.arange(size, dtype=np.float32)
    with rasterio.open(tmp, "w", **profile) as ds:
        for r0 in range(0, size, strip):
            h = min(strip, size - r0)
            yy = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
            base = 100 + 60 * np.sin(xx / 300.0)[None, :] * np.cos(yy / 200.0)
            for b in range(3):
                noise = rng.normal(0, 12, (h, size)).astype(np.float32)
                band = np.clip(base + 20 * b + noise, 1, 255).astype(np.uint8)
                ds.write(band, b + 1, window=Window(0, r0, size, h))
    os.replace(tmp, path)
    return path


def bare_loop(path: Path, windows) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, pixels) of a plain rasterio windowed-read loop."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with rasterio.open(path) as ds:
        for w in windows:
            a = ds.read(window=Window(w.col_off, w.row_off, w.width, w.height))
            n += a.shape[1] * a.shape[2]
    return time.perf_counter() - t0, time.process_time() - c0, n


def geoseg_loop(path: Path, stats, **kw) -> tuple[float, float, int]:
    """(wall s, CPU s, pixels) of iter_tiles over the same windows."""
    from geoseg.tiling import iter_tiles

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for t in iter_tiles(path, tile_size=TILE, overlap=OVERLAP, stats=stats, **kw):
        n += t.image.shape[1] * t.image.shape[2]
    return time.perf_counter() - t0, time.process_time() - c0, n


def fresh_loop(path: Path, stats) -> tuple[float, float, int]:
    """(wall s, CPU s, pixels) of iter_tiles as it was before its buffer pool: fresh arrays per
    tile (``read_window`` without ``pool``) and ``rasterio.windows.transform`` per tile."""
    import warnings

    from geoseg.raster import open_scene, read_window
    from geoseg.tiling import make_grid
    from geoseg.types import Tile

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    info = open_scene(path)
    with rasterio.open(path) as ds, warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        for spec in make_grid(info.width, info.height, tile_size=TILE, overlap=OVERLAP):
            image, valid = read_window(
                ds, spec.window, bands=stats.bands, stats=stats, nodata=info.nodata
            )
            if not valid.any():
                continue
            t = Tile(
                spec=spec,
                image=image,
                valid=valid,
                transform=rasterio.windows.transform(spec.window.to_rasterio(), info.transform),
                crs_wkt=info.crs_wkt,
            )
            n += t.image.shape[1] * t.image.shape[2]
    return time.perf_counter() - t0, time.process_time() - c0, n


def memory_child(path: str) -> None:
    """Run in a fresh process: iterate all tiles, report RSS (MiB) before and during reading.

    ``rss_before_mib``: current RSS after imports and the statistics (torch, GDAL loaded);
    ``peak_rss_mib``: the highest current RSS sampled after every tile; ``delta_mib`` their
    difference, i.e. what reading the scene adds.
    """
    import psutil

    from geoseg.raster import compute_norm_stats
    from geoseg.tiling import iter_tiles

    proc = psutil.Process()
    stats = compute_norm_stats(path)
    before = proc.memory_info().rss / 2**20
    peak = before
    n = 0
    for _t in iter_tiles(path, tile_size=TILE, overlap=OVERLAP, stats=stats):
        n += 1
        peak = max(peak, proc.memory_info().rss / 2**20)
    print(
        json.dumps(
            {
                "tiles": n,
                "rss_before_mib": round(before, 1),
                "peak_rss_mib": round(peak, 1),
                "delta_mib": round(peak - before, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=6_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/geoseg_bench_tiling")
    ap.add_argument("--memory-child")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    from geoseg.raster import compute_norm_stats, open_scene
    from geoseg.tiling import make_grid

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    big = make_scene(work / f"scene_{args.size}.tif", args.size)
    small = make_scene(work / f"scene_{args.small}.tif", args.small)
    gen_s = time.perf_counter() - t0

    info = open_scene(big)
    t0 = time.perf_counter()
    stats = compute_norm_stats(info)
    stats_s = time.perf_counter() - t0
    windows = [
        s.window for s in make_grid(info.width, info.height, tile_size=TILE, overlap=OVERLAP)
    ]

    bare_loop(big, windows)  # warm-up: page cache
    bare, ours, ours_mt, fresh = [], [], [], []
    for _ in range(args.repeat):
        bare.append(bare_loop(big, windows))
        ours.append(geoseg_loop(big, stats))
        fresh.append(fresh_loop(big, stats))
        ours_mt.append(geoseg_loop(big, stats, num_threads=2))
    assert len({n for *_, n in bare + ours + fresh}) == 1, "the loops must read the same pixels"
    b, o, om = (min(r[0] for r in runs) for runs in (bare, ours, ours_mt))
    bc, oc, omc = (min(r[1] for r in runs) for runs in (bare, ours, ours_mt))
    pair_ratios = sorted(rb[0] / ro[0] for rb, ro in zip(bare, ours, strict=True))
    cpu_pair_ratios = sorted(rb[1] / ro[1] for rb, ro in zip(bare, ours, strict=True))
    fr, frc = min(r[0] for r in fresh), min(r[1] for r in fresh)
    mpx = bare[0][2] / 1e6

    memory = {}
    for label, path in (("small", small), ("large", big)):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(path)],
            check=True,
            capture_output=True,
            text=True,
        )
        with rasterio.open(path) as ds:
            side = ds.width
        memory[label] = {
            "scene_px": f"{side}x{side}",
            **json.loads(out.stdout.strip().splitlines()[-1]),
        }

    print(
        json.dumps(
            {
                "scene": f"{args.size}x{args.size} uint8 x3, 256 px deflate tiles",
                "tile_size": TILE,
                "overlap": OVERLAP,
                "tiles": len(windows),
                "megapixels_read": round(mpx, 1),
                "generate_s": round(gen_s, 1),
                "norm_stats_s": round(stats_s, 3),
                "bare_rasterio_s": round(b, 3),
                "iter_tiles_s": round(o, 3),
                "iter_tiles_threads2_s": round(om, 3),
                "bare_rasterio_mpx_s": round(mpx / b, 1),
                "iter_tiles_mpx_s": round(mpx / o, 1),
                "iter_tiles_vs_bare": round(b / o, 3),
                "iter_tiles_threads2_vs_bare": round(b / om, 3),
                "iter_tiles_vs_bare_median_of_pairs": round(pair_ratios[len(pair_ratios) // 2], 3),
                "bare_rasterio_cpu_s": round(bc, 3),
                "iter_tiles_cpu_s": round(oc, 3),
                "iter_tiles_threads2_cpu_s": round(omc, 3),
                "iter_tiles_vs_bare_cpu": round(bc / oc, 3),
                "iter_tiles_vs_bare_cpu_median_of_pairs": round(
                    cpu_pair_ratios[len(cpu_pair_ratios) // 2], 3
                ),
                "before_pool_s": round(fr, 3),
                "before_pool_cpu_s": round(frc, 3),
                "before_pool_vs_bare": round(b / fr, 3),
                "before_pool_vs_bare_cpu": round(bc / frc, 3),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "all_runs_s": {
                    "bare": [round(r[0], 3) for r in bare],
                    "iter_tiles": [round(r[0], 3) for r in ours],
                    "iter_tiles_threads2": [round(r[0], 3) for r in ours_mt],
                    "before_pool": [round(r[0], 3) for r in fresh],
                },
                "all_runs_cpu_s": {
                    "bare": [round(r[1], 3) for r in bare],
                    "iter_tiles": [round(r[1], 3) for r in ours],
                    "before_pool": [round(r[1], 3) for r in fresh],
                },
                "memory": memory,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
