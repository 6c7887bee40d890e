"""GPU throughput of the bundled demo model: model-only and end-to-end Mpx/s at several batch sizes.

Self-contained (the bundled checkpoint, a ``geoseg.synth`` scene written to a temporary
directory, nothing downloaded) and a few minutes long on one GPU. Prints one JSON object:

* ``model_only``: per batch size, Mpx/s of the predictor alone (tiles already normalised in
  host memory, pinned copy to the device, AMP bfloat16 and channels-last on CUDA, RPN, heads,
  per-box mask resampling) and the peak device memory;
* ``end_to_end``: per batch size, Mpx/s of ``geoseg.pipeline.run_scene`` on the scene
  (reading with ``--workers`` reader processes, normalising, the model, stitching,
  vectorising), objects found and the peak device memory.

    .venv/bin/python benchmarks/bench_gpu.py                      # CUDA, 8192 px scene
    .venv/bin/python benchmarks/bench_gpu.py --device cpu         # smoke run: small and short

Expectation on one H100-class GPU: >= 100 Mpx/s end to end at the best batch size (see
README, "Speed"). The CPU mode only checks that the script works (``tests/test_runtime.py``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def model_only(predictor, tiles, batch: int, seconds: float) -> dict:
    """Mpx/s of ``predictor.predict_tiles`` on ``tiles`` (host arrays), ``batch`` at a time."""
    device = predictor.device
    predictor.predict_tiles(tiles[:batch])  # warm-up (cuDNN autotune, allocator)
    _sync(device)
    _reset_peak(device)
    n_px = done = 0
    t0 = time.perf_counter()
    while True:
        for i in range(0, len(tiles) - batch + 1, batch):
            chunk = tiles[i : i + batch]
            predictor.predict_tiles(chunk)
            n_px += sum(t.image_shape[1] * t.image_shape[2] for t in chunk)
            done += len(chunk)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return {
        "batch": batch,
        "tiles": done,
        "seconds": round(elapsed, 2),
        "mpx_per_s": round(n_px / 1e6 / elapsed, 4),
        "peak_device_mb": _peak_mb(device),
    }


def end_to_end(model_path, scene, size: int, device_name: str, batch: int, workers: int) -> dict:
    """Mpx/s of ``run_scene`` (model loaded before the clock starts)."""
    from geoseg.checkpoint import read_meta
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor
    from geoseg.settings import resolve

    settings = resolve(read_meta(model_path), batch_size=batch, device=device_name)
    predictor = load_predictor(model_path, settings)
    device = predictor.device
    _reset_peak(device)
    t0 = time.perf_counter()
    result = run_scene(scene.raster_path, predictor, settings, num_workers=workers)
    _sync(device)
    elapsed = time.perf_counter() - t0
    px = size * size
    return {
        "batch": batch,
        "workers": workers,
        "tiles": result.n_tiles,
        "objects": len(result.gdf),
        "seconds": round(elapsed, 2),
        "mpx_per_s": round(px / 1e6 / elapsed, 4),
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
        "peak_device_mb": _peak_mb(device),
    }


def main() -> None:
    import torch

    from geoseg.datasets import TileDataset
    from geoseg.pipeline import plan_scene
    from geoseg.predict import load_predictor, pick_device
    from geoseg.samples import demo_model_path
    from geoseg.settings import resolve
    from geoseg.synth import generate_scene

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (smoke mode)")
    p.add_argument("--size", type=int, help="scene side in px [8192 on CUDA, 512 on CPU]")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes [8 16 32; CPU: 1 2]")
    p.add_argument("--workers", type=int, help="reader processes [4 on CUDA, 0 on CPU]")
    p.add_argument("--seconds", type=float, help="model-only time per batch size [20; CPU 2]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (8192 if cuda else 512)
    batches = args.batches or ([8, 16, 32] if cuda else [1, 2])
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    seconds = args.seconds or (20.0 if cuda else 2.0)
    model_path = demo_model_path()
    out: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "scene_px": size,
        "cpu_count": os.cpu_count(),
        "load_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scene = generate_scene(Path(tmp) / "scene.tif", size=size, seed=7, layout="mixed")
        out["synth_s"] = round(time.perf_counter() - t0, 1)
        predictor = load_predictor(model_path, resolve(None, device=str(device)))
        plan = plan_scene(scene.raster_path, predictor)
        dataset = TileDataset(
            plan.info,
            tile_size=plan.settings.tile_size,
            overlap=plan.settings.overlap,
            bands=plan.bands,
            stats=plan.stats,
        )
        tiles = list(itertools.islice(iter(dataset), 4 * max(batches)))
        out["model_only"] = [model_only(predictor, tiles, b, seconds) for b in batches]
        del predictor
        out["end_to_end"] = [
            end_to_end(model_path, scene, size, str(device), b, workers) for b in batches
        ]
    out["load_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
