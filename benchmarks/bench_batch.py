"""Batch throughput: scenes per hour with 1 and N dask workers vs a plain loop over run_scene.

Builds seeded synthetic GeoTIFFs and a random-weight Mask R-CNN checkpoint (no download), then
times, on the same scenes and settings:

* ``loop``: one process loads the predictor once and calls ``run_scene`` on each scene
  (torch uses all cores);
* ``batch_<k>w``: ``run_batch`` on a fresh local cluster of ``k`` worker processes (the one
  ``run_batch`` starts itself, each with ``cores / k`` torch threads), wall time including
  cluster start-up and model loading; CPU seconds of this process plus the workers.

The dask overhead is ``batch_1w`` wall time over ``loop`` wall time, minus one (and the same
for CPU seconds, which a machine shared with other jobs distorts less than wall time).
Prints JSON.

Usage: ``nice -n 10 .venv/bin/python benchmarks/bench_batch.py [--scenes 8 --size 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from rasterio.transform import from_origin


def write_scene(path: Path, *, seed: int, size: int) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(10, 40, size=(3, size, size), dtype=np.uint8)
    for _ in range(size * size // 4000):
        h, w = rng.integers(4, 16, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        data[:, r : r + h, c : c + w] = rng.integers(150, 255, size=(3, 1, 1), dtype=np.uint8)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000.0 + 1000 * seed, 4000000.0, 0.5, 0.5),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def make_model(folder: Path, tile: int) -> Path:
    import torch

    from geoseg.checkpoint import ModelMeta, save_checkpoint
    from geoseg.config import Backbone, ModelConfig, config_to_dict
    from geoseg.models import build_model

    cfg = ModelConfig(
        backbone=Backbone.RESNET18,
        fpn_out_channels=64,
        box_head_size=256,
        mask_head_channels=32,
        box_detections_per_img=50,
        min_size=tile,
        max_size=tile,
    )
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2, in_channels=3, pretrained=None)
    meta = ModelMeta(
        classes=("ship", "vehicle"),
        bands=(1, 2, 3),
        norm_stats=None,
        tile_size=tile,
        gsd=0.5,
        config=config_to_dict(cfg),
    )
    return save_checkpoint(folder / "bench", model, meta)


def own_cpu() -> float:
    """CPU seconds of this process (all threads)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="scene side in pixels")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--min-score", type=float, default=0.3)
    args = ap.parse_args()

    from distributed import Client

    from geoseg.batch import run_batch
    from geoseg.batch.cluster import start_local_cluster
    from geoseg.checkpoint import read_meta
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor
    from geoseg.settings import resolve

    with tempfile.TemporaryDirectory(prefix="geoseg-bench-batch-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "scenes").mkdir()
        scenes = [
            write_scene(tmp / "scenes" / f"s{i:03d}.tif", seed=i, size=args.size)
            for i in range(args.scenes)
        ]
        ckpt = make_model(tmp, args.tile)
        settings = resolve(read_meta(ckpt), min_score=args.min_score, device="cpu")
        results: dict[str, object] = {
            "benchmark": "batch",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "scenes": args.scenes,
            "scene_px": args.size,
            "tile_size": settings.tile_size,
            "overlap": settings.overlap,
            "model": "Mask R-CNN resnet18-FPN (random weights), CPU",
        }

        t0, c0 = time.perf_counter(), own_cpu()
        predictor = load_predictor(ckpt, settings)
        objects = 0
        tiles = 0
        (tmp / "loop").mkdir()
        for s in scenes:
            out = tmp / "loop" / f"{s.stem}.gpkg"
            res = run_scene(s, predictor, settings, output=out)
            objects += len(res.gdf)
            tiles += res.n_tiles
        loop_s = time.perf_counter() - t0
        loop_cpu = own_cpu() - c0
        results["tiles_per_scene"] = tiles // args.scenes
        results["objects"] = objects
        results["loop"] = {
            "wall_s": round(loop_s, 2),
            "scenes_per_hour": round(3600 * args.scenes / loop_s, 1),
            "cpu_s": round(loop_cpu, 1),
        }

        for k in args.workers:
            t0, c0 = time.perf_counter(), own_cpu()
            with start_local_cluster(k) as cluster, Client(cluster) as client:
                startup = time.perf_counter() - t0
                rep = run_batch(
                    [str(s) for s in scenes],
                    model=ckpt,
                    out_dir=tmp / f"batch{k}",
                    scheduler=cluster.scheduler_address,
                    settings=settings,
                )
                workers_cpu = sum(client.run(own_cpu).values())
            wall = time.perf_counter() - t0
            cpu = own_cpu() - c0 + workers_cpu  # client + scheduler + nannies, and the workers
            assert rep.n_failed == 0, rep.failed
            assert sum(r.n_objects for r in rep.records) == objects
            busy = sum(r.seconds for r in rep.records)
            results[f"batch_{k}w"] = {
                "wall_s": round(wall, 2),
                "scenes_per_hour": round(3600 * args.scenes / wall, 1),
                "task_seconds_sum": round(busy, 2),
                "cluster_startup_s": round(startup, 2),
                "startup_and_overhead_s": round(wall - busy / k, 2),
                "cpu_s": round(cpu, 1),
            }
        if "batch_1w" in results:
            b1 = results["batch_1w"]
            assert isinstance(b1, dict)
            results["dask_overhead_vs_loop"] = round(b1["wall_s"] / loop_s - 1.0, 3)
            results["dask_cpu_overhead_vs_loop"] = round(b1["cpu_s"] / loop_cpu - 1.0, 3)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
