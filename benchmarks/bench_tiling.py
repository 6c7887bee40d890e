"""Tile-reading throughput of geoseg.tiling.iter_tiles vs a bare rasterio windowed-read loop.

    .venv/bin/python benchmarks/bench_tiling.py [--size 10000] [--small 6000] [--workdir DIR]
        [--repeat 5] [--before-pool]

1. Writes a synthetic SIZE x SIZE 3-band uint8 GeoTIFF (tiled 256 x 256, deflate) once, reusing
   it from --workdir on later runs.
2. Throughput: the same 512 px / 64 px-overlap windows (geoseg.tiling.make_grid) read by
   (a) a bare ``dataset.read(window=...)`` loop, (b) ``iter_tiles`` consumed as the model path
   consumes it (``tile.raw`` + ``tile.valid``; the normalisation happens later, in the model's
   batch), (c) ``iter_tiles`` that also materialises ``tile.image`` (float32 in [0, 1], the
   cost every tile paid before issue 15's lazy normalisation), (d) (b) with 2 GDAL threads,
   (e) the reader as it was before the lazy normalisation (the stretch while reading, with
   the buffer pool), and with --before-pool (f) iter_tiles as it was before its buffer pool
   (fresh arrays per tile, eager stretch). Best of --repeat runs each and the median of the
   paired ratios, after one warm-up pass so that all read from the OS page cache; the loops
   alternate so that background load hits them alike. CPU seconds (``time.process_time``)
   beside wall.
3. Micro: the stretch of 512 x 512 x 3 uint8 tiles in numpy per tile vs into a batch of 4
   (numpy into the batch tensor, torch in place per tile and over the whole batch, torch on
   1 and on its default number of threads), ms per tile, best and median of 20
   (:func:`micro_stretch`).
4. Peak memory: ``iter_tiles`` over a --small and a SIZE scene, each in a fresh process;
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


def geoseg_loop(path: Path, stats, *, image: bool = False, **kw) -> tuple[float, float, int]:
    """(wall s, CPU s, pixels) of iter_tiles over the same windows.

    ``image=False``: as the model path consumes tiles (raw pixels and the valid mask, the
    normalisation left to the model's batch); ``True``: also materialise ``tile.image``.
    """
    from geoseg.tiling import iter_tiles

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for t in iter_tiles(path, tile_size=TILE, overlap=OVERLAP, stats=stats, **kw):
        pixels = t.image if image else t.raw
        n += pixels.shape[1] * pixels.shape[2] * bool(t.valid.any())
    return time.perf_counter() - t0, time.process_time() - c0, n


def micro_stretch(stats, batch: int = 4, repeat: int = 20) -> dict[str, float]:
    """ms per 512 x 512 x 3 uint8 tile of the stretch to float32 [0, 1], five ways.

    ``numpy``: ``NormStats.stretch`` of one tile into a reused array (what ``tile.image``
    costs); ``batch_numpy``: ``geoseg.predict._input_images`` on the CPU (each tile stretched
    with numpy into its slice of one new ``[B, C, h, w]`` tensor); ``torch_per_tile``: the
    same in torch (``copy_`` of the raw tile into its slice, then ``sub_``, ``mul_``,
    ``clamp_`` in place); ``torch_batch``: ``_stretch_in_torch`` on the CPU (the GPU's way:
    the whole batch converted, then each op once over it). torch on one intra-op thread and
    on its default number.
    """
    import torch
    from affine import Affine

    from geoseg.predict import _input_images, _stretch_in_torch
    from geoseg.tiling import make_grid
    from geoseg.types import Tile

    rng = np.random.default_rng(0)
    specs = make_grid(TILE * batch, TILE, tile_size=TILE, overlap=0)
    raws = [rng.integers(0, 256, (3, TILE, TILE), dtype=np.uint8) for _ in range(batch)]
    valid = np.ones((TILE, TILE), bool)
    out = np.empty((3, TILE, TILE), np.float32)
    cpu = torch.device("cpu")
    low, scale = (torch.from_numpy(a)[:, None, None] for a in stats.coefficients())

    def tiles() -> list:
        return [
            Tile(s, None, valid, Affine.identity(), None, raw=r, norm=stats)
            for s, r in zip(specs, raws, strict=True)
        ]

    def per_tile_torch(ts: list) -> torch.Tensor:
        b = torch.empty((len(ts), 3, TILE, TILE), dtype=torch.float32)
        for i, t in enumerate(ts):
            x = b[i]
            x.copy_(torch.from_numpy(t.raw))
            x.sub_(low).mul_(scale).clamp_(0.0, 1.0)
        return b

    def numpy_tiles(ts: list) -> None:
        for t in ts:
            stats.stretch(t.raw, out)

    default_threads = torch.get_num_threads()
    ways = {
        "numpy": (numpy_tiles, (1,)),
        "batch_numpy": (lambda ts: _input_images(ts, cpu), (1,)),
        "torch_per_tile": (per_tile_torch, (1, default_threads)),
        "torch_batch": (lambda ts: _stretch_in_torch(ts, cpu), (1, default_threads)),
    }
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, (fn, thread_counts) in ways.items():
            for threads in thread_counts:
                torch.set_num_threads(threads)
                ts = tiles()
                t0 = time.perf_counter()
                fn(ts)
                key = name if name.startswith(("numpy", "batch")) else f"{name}_{threads}t"
                times.setdefault(key, []).append((time.perf_counter() - t0) / batch)
    torch.set_num_threads(default_threads)
    result: dict[str, float] = {"torch_default_threads": default_threads, "batch": batch}
    for key, ts in times.items():
        result[f"{key}_ms_per_tile_best"] = round(1e3 * min(ts), 3)
        result[f"{key}_ms_per_tile_median"] = round(1e3 * sorted(ts)[repeat // 2], 3)
    return result


def eager_loop(path: Path, stats) -> tuple[float, float, int]:
    """(wall s, CPU s, pixels) of iter_tiles as it was before issue 15's lazy normalisation:
    ``read_window`` with the buffer pool (the stretch to float32 done while reading) and a
    tile built from the image; otherwise the same steps as ``geoseg.tiling.read_tiles``."""
    from geoseg.raster import BufferPool, gdal_env, open_scene, read_window
    from geoseg.tiling import DEFAULT_CACHE_MB, make_grid, tile_transform
    from geoseg.types import Tile

    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    info = open_scene(path)
    specs = make_grid(info.width, info.height, tile_size=TILE, overlap=OVERLAP)
    with gdal_env(cache_mb=DEFAULT_CACHE_MB), rasterio.open(path) as ds:
        pool = BufferPool()
        for spec in specs:
            image, valid = read_window(
                ds, spec.window, bands=stats.bands, stats=stats, nodata=info.nodata, pool=pool
            )
            if not valid.any():
                continue
            t = Tile(spec, image, valid, tile_transform(info.transform, spec.window), info.crs_wkt)
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


def _summary(bare, runs) -> dict[str, float]:
    """Best and median-of-pairs ratios (bare / loop) in wall and CPU time."""
    wall = sorted(rb[0] / ro[0] for rb, ro in zip(bare, runs, strict=True))
    cpu = sorted(rb[1] / ro[1] for rb, ro in zip(bare, runs, strict=True))
    return {
        "wall_s_best": round(min(r[0] for r in runs), 3),
        "cpu_s_best": round(min(r[1] for r in runs), 3),
        "vs_bare_wall_best": round(min(r[0] for r in bare) / min(r[0] for r in runs), 3),
        "vs_bare_wall_median_of_pairs": round(wall[len(wall) // 2], 3),
        "vs_bare_cpu_best": round(min(r[1] for r in bare) / min(r[1] for r in runs), 3),
        "vs_bare_cpu_median_of_pairs": round(cpu[len(cpu) // 2], 3),
        "all_runs_wall_s": [round(r[0], 3) for r in runs],
        "all_runs_cpu_s": [round(r[1], 3) for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--small", type=int, default=6_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/geoseg_bench_tiling")
    ap.add_argument("--before-pool", action="store_true", help="also time the pre-pool loop")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
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

    load_start = os.getloadavg()
    bare_loop(big, windows)  # warm-up: page cache
    loops: dict[str, list[tuple[float, float, int]]] = {
        "bare": [],
        "iter_tiles_raw": [],
        "iter_tiles_image": [],
        "iter_tiles_raw_threads2": [],
        "eager_before": [],
    }
    if args.before_pool:
        loops["before_pool"] = []
    for _ in range(args.repeat):
        loops["bare"].append(bare_loop(big, windows))
        loops["iter_tiles_raw"].append(geoseg_loop(big, stats))
        loops["iter_tiles_image"].append(geoseg_loop(big, stats, image=True))
        loops["iter_tiles_raw_threads2"].append(geoseg_loop(big, stats, num_threads=2))
        loops["eager_before"].append(eager_loop(big, stats))
        if args.before_pool:
            loops["before_pool"].append(fresh_loop(big, stats))
    load_end = os.getloadavg()
    assert len({n for runs in loops.values() for *_, n in runs}) == 1, "same pixels everywhere"
    bare = loops["bare"]
    mpx = bare[0][2] / 1e6
    micro = micro_stretch(stats)

    memory = {}
    for label, path in () if args.no_memory else (("small", small), ("large", big)):
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
                "load_average_start": [round(v, 2) for v in load_start],
                "load_average_end": [round(v, 2) for v in load_end],
                "bare_rasterio": {
                    "wall_s_best": round(min(r[0] for r in bare), 3),
                    "cpu_s_best": round(min(r[1] for r in bare), 3),
                    "mpx_s_best": round(mpx / min(r[0] for r in bare), 1),
                    "all_runs_wall_s": [round(r[0], 3) for r in bare],
                    "all_runs_cpu_s": [round(r[1], 3) for r in bare],
                },
                **{name: _summary(bare, runs) for name, runs in loops.items() if name != "bare"},
                "micro_stretch": micro,
                "memory": memory,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
