"""Cost of keeping per-tile partial results (``run_scene(resume=True)``, ``geoseg predict``).

Times ``run_scene`` on one synthetic marina scene with the bundled demo model, alternating
``resume=False`` and ``resume=True`` (partial results written per batch, deleted at the end),
and one resumed run that finds half the tiles in the partial-results file. Reports wall and
CPU seconds of this process per run, the tiles, and the partial-results file's size when
half the tiles are stored. Prints JSON.

``--store-only`` times the partial-results file alone (no model): ``--tiles`` tiles of
``--objects`` random cropped masks (10-40 px sides) each, one transaction per tile (a batch of
1, as on a CPU), then reading them all back.

Usage: ``.venv/bin/python benchmarks/bench_resume.py [--size 768 --repeats 3]`` or
``.venv/bin/python benchmarks/bench_resume.py --store-only [--tiles 400 --objects 40]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path


class StopAfter:
    """Forward to a predictor; raise KeyboardInterrupt after ``n`` tiles."""

    def __init__(self, inner, n):
        self._inner, self.n, self.seen = inner, n, 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def device_type(self):
        return self._inner.device_type

    def predict_tiles(self, tiles):
        if self.seen + len(tiles) > self.n:
            raise KeyboardInterrupt
        self.seen += len(tiles)
        return self._inner.predict_tiles(tiles)


def store_only(n_tiles: int, n_objects: int) -> dict:
    import numpy as np

    from geoseg.partial import PartialResults
    from geoseg.types import PixelWindow, TileDetections, TileSpec

    rng = np.random.default_rng(0)
    specs = [
        TileSpec(i, 0, i, PixelWindow(i * 448, 0, 512, 512), PixelWindow(0, 0, 1, 1))
        for i in range(n_tiles)
    ]
    tiles = []
    for spec in specs:
        sides = rng.integers(10, 41, size=(n_objects, 2))
        x0 = rng.integers(0, 470, size=(n_objects, 2))
        boxes = np.concatenate([x0, x0 + sides], axis=1).astype(np.int32)
        tiles.append(
            TileDetections(
                boxes=boxes.astype(np.float32),
                scores=rng.random(n_objects).astype(np.float32),
                labels=rng.integers(0, 3, n_objects),
                mask_boxes=boxes,
                masks=tuple(rng.random((int(h), int(w))) > 0.3 for w, h in sides),
                classes=("ship", "vehicle", "building"),
                tile=spec,
            )
        )
    folder = Path(tempfile.mkdtemp(prefix="bench-partial-"))
    store = PartialResults.open(folder / "x.partial", "key", scene="s.tif", tiles_total=n_tiles)
    w0, c0 = time.perf_counter(), time.process_time()
    for t in tiles:
        store.add([t])
    add_wall, add_cpu = time.perf_counter() - w0, time.process_time() - c0
    store.close()
    size = (folder / "x.partial").stat().st_size
    w0, c0 = time.perf_counter(), time.process_time()
    store = PartialResults.open(folder / "x.partial", "key", scene="s.tif", tiles_total=n_tiles)
    back = store.load(specs)
    load_wall, load_cpu = time.perf_counter() - w0, time.process_time() - c0
    store.remove()
    assert len(back) == n_tiles
    return {
        "tiles": n_tiles,
        "objects_per_tile": n_objects,
        "add_ms_per_tile_wall": round(1000 * add_wall / n_tiles, 3),
        "add_ms_per_tile_cpu": round(1000 * add_cpu / n_tiles, 3),
        "load_all_s_wall": round(load_wall, 3),
        "load_all_s_cpu": round(load_cpu, 3),
        "file_bytes": size,
        "bytes_per_tile": size // n_tiles,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store-only", action="store_true")
    ap.add_argument("--tiles", type=int, default=400)
    ap.add_argument("--objects", type=int, default=40)
    args = ap.parse_args()
    if args.store_only:
        result = store_only(args.tiles, args.objects)
        result["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
        result["loadavg_end"] = os.getloadavg()
        print(json.dumps(result, indent=1))
        return

    from geoseg.partial import partial_path
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor
    from geoseg.samples import demo_model_path
    from geoseg.synth import generate_scene

    folder = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    scene = generate_scene(folder / "s.tif", size=args.size, seed=3, layout="marina").raster_path
    predictor = load_predictor(demo_model_path())
    kw = dict(device="cpu", batch_size=1)

    def timed(resume: bool) -> dict:
        out = folder / f"out-{resume}.gpkg"
        w0, c0 = time.perf_counter(), time.process_time()
        res = run_scene(scene, predictor, output=out, resume=resume, **kw)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out.unlink()
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "tiles": res.n_tiles}

    runs: dict[str, list] = {"off": [], "on": []}
    timed(False)  # warm-up (GDAL cache, torch kernels)
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            runs[mode].append(timed(mode == "on"))
    # an interrupted run, then the resumed one
    out = folder / "half.gpkg"
    half = runs["on"][0]["tiles"] // 2
    with contextlib.suppress(KeyboardInterrupt):
        run_scene(scene, StopAfter(predictor, half), output=out, resume=True, **kw)
    partial_bytes = partial_path(out).stat().st_size
    w0, c0 = time.perf_counter(), time.process_time()
    res = run_scene(scene, predictor, output=out, resume=True, **kw)
    resumed = {
        "wall_s": round(time.perf_counter() - w0, 3),
        "cpu_s": round(time.process_time() - c0, 3),
        "resumed_tiles": res.resumed_tiles,
        "tiles": res.n_tiles,
    }

    def median(xs: list, key: str) -> float:
        return sorted(x[key] for x in xs)[len(xs) // 2]

    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "loadavg_end": os.getloadavg(),
                "size_px": args.size,
                "runs": runs,
                "median_wall_ratio_on_off": round(
                    median(runs["on"], "wall_s") / median(runs["off"], "wall_s"), 3
                ),
                "median_cpu_ratio_on_off": round(
                    median(runs["on"], "cpu_s") / median(runs["off"], "cpu_s"), 3
                ),
                "partial_bytes_half_the_tiles": partial_bytes,
                "objects": len(res.gdf),
                "resumed_after_half": resumed,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
