"""Stitching speed and memory: 10k, 100k and 1M per-tile detections.

The input is what a perfect predictor returns on a dense scene: small objects (boats and cars:
axis-aligned rectangles and rotated ellipses of about 4-16 px) packed in touching rows over a
square scene, tiled by ``geoseg.tiling.make_grid`` (512 px tiles, 64 px overlap by default).
Every tile reports every object it sees, cropped where the tile cuts it, so objects near tile
borders come as duplicates and fragments. Each size runs in its own process pinned to one CPU
core; the JSON line per size gives the number of input detections, the stitch wall time (best
of ``--repeat``, and every run) and CPU time, the output count against the true object count,
the resident memory before stitching (the input plus the imported modules) and the
process's peak resident memory. On a shared machine compare CPU seconds: wall time includes
waiting for the core (the 1-minute load average is recorded).

Usage::

    .venv/bin/python benchmarks/bench_stitch.py                 # 10k, 100k, 1M
    .venv/bin/python benchmarks/bench_stitch.py --sizes 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from geoseg.stitch import stitch
from geoseg.tiling import make_grid
from geoseg.types import TileDetections

CLASSES = ("boat", "car")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_objects(n_objects: int, rng: np.random.Generator):
    """Rows of touching objects filling a square scene; returns (boxes, masks, labels, size)."""
    mean_area = 8.0 * 10.0  # mean box area of the objects below, gaps included
    side = int(np.sqrt(n_objects * mean_area / 0.8)) + 16
    boxes, masks, labels = [], [], []
    ellipses = {}
    y = 0
    while y < side and len(boxes) < n_objects:
        h = int(rng.integers(5, 12))
        x = int(rng.integers(0, 6))
        widths = rng.integers(4, 17, size=side // 4 + 2)
        kinds = rng.random(len(widths))
        for w, kind in zip(widths.tolist(), kinds.tolist(), strict=False):
            if x + w > side or len(boxes) >= n_objects:
                break
            if kind < 0.3:  # an ellipse inscribed in its box
                key = (h, w)
                if key not in ellipses:
                    yy, xx = np.mgrid[0:h, 0:w] + 0.5
                    ellipses[key] = ((xx - w / 2) / (w / 2)) ** 2 + (
                        (yy - h / 2) / (h / 2)
                    ) ** 2 <= 1
                m = ellipses[key]
            else:
                m = np.ones((h, w), dtype=bool)
            boxes.append((x, y, x + w, y + h))
            masks.append(m)
            labels.append(0 if kind < 0.7 else 1)
            x += w
        y += h + int(rng.integers(0, 3))
    return np.asarray(boxes, dtype=np.int64), masks, np.asarray(labels, dtype=np.int64), side


def count_detections(boxes, side, tile_size, overlap):
    """How many (tile, object) pairs the grid produces, from the boxes alone."""
    n = 0
    for spec in make_grid(side, side, tile_size=tile_size, overlap=overlap):
        w = spec.window
        n += int(
            (
                (boxes[:, 0] < w.col_end)
                & (boxes[:, 2] > w.col_off)
                & (boxes[:, 1] < w.row_end)
                & (boxes[:, 3] > w.row_off)
            ).sum()
        )
    return n


def make_tile_detections(boxes, masks, labels, side, tile_size, overlap, rng):
    """What a perfect predictor returns for every tile of the grid."""
    order = np.argsort(boxes[:, 1], kind="stable")
    boxes, labels = boxes[order], labels[order]
    masks = [masks[i] for i in order]
    y0s = boxes[:, 1]
    max_h = int((boxes[:, 3] - boxes[:, 1]).max())
    out = []
    for spec in make_grid(side, side, tile_size=tile_size, overlap=overlap):
        w = spec.window
        lo = np.searchsorted(y0s, w.row_off - max_h, side="left")
        hi = np.searchsorted(y0s, w.row_end, side="left")
        b = boxes[lo:hi]
        hit = (
            (b[:, 0] < w.col_end)
            & (b[:, 2] > w.col_off)
            & (b[:, 1] < w.row_end)
            & (b[:, 3] > w.row_off)
        )
        idx = np.flatnonzero(hit) + lo
        bb = boxes[idx] - (w.col_off, w.row_off, w.col_off, w.row_off)
        cl = np.clip(bb, 0, tile_size)
        crop = cl - bb
        tile_masks = tuple(
            masks[i][c[1] : m.shape[0] + c[3], c[0] : m.shape[1] + c[2]]
            for i, c, m in zip(
                idx.tolist(), crop.tolist(), (masks[i] for i in idx.tolist()), strict=True
            )
        )
        n = len(idx)
        out.append(
            TileDetections(
                boxes=cl.astype(np.float32),
                scores=rng.uniform(0.5, 1.0, n).astype(np.float32),
                labels=labels[idx],
                mask_boxes=cl.astype(np.int32),
                masks=tile_masks,
                classes=CLASSES,
                tile=spec,
            )
        )
    return out


def run_one(n_detections: int, tile_size: int, overlap: int, repeat: int, seed: int) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = np.random.default_rng(seed)
    # aim the object count at the detection target (objects near tile borders count 2-4 times)
    n_objects = int(n_detections / 1.3)
    for _ in range(3):
        boxes, masks, labels, side = make_objects(n_objects, np.random.default_rng(seed))
        n_est = count_detections(boxes, side, tile_size, overlap)
        if abs(n_est - n_detections) < 0.03 * n_detections:
            break
        n_objects = int(n_objects * n_detections / n_est)
    tds = make_tile_detections(boxes, masks, labels, side, tile_size, overlap, rng)
    n_in = sum(len(t) for t in tds)
    import scipy.sparse.csgraph  # noqa: F401  - imported lazily by stitch: not timed
    import shapely  # noqa: F401

    rss_before = _rss_mb()
    times, cpu = [], []
    det = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        det = stitch(tds, scene_width=side, scene_height=side)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert det is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "target_detections": n_detections,
        "input_detections": n_in,
        "true_objects": len(boxes),
        "output_objects": len(det),
        "tiles": len(tds),
        "scene_px": side,
        "tile_size": tile_size,
        "overlap": overlap,
        "seconds_best": round(min(times), 4),
        "seconds_all": [round(t, 4) for t in times],
        "cpu_seconds_best": round(min(cpu), 4),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "rss_before_stitch_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--tile-size", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.tile_size, args.overlap, args.repeat, args.seed)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(n),
            "--tile-size",
            str(args.tile_size),
            "--overlap",
            str(args.overlap),
            "--repeat",
            str(args.repeat if n < 1_000_000 else 1),
            "--seed",
            str(args.seed),
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(json.dumps({"target_detections": n, "error": res.stderr.strip()[-2000:]}))
        else:
            print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
