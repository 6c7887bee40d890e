"""Time geoseg.evaluate on N predicted vs N true polygons (prints JSON).

Usage: .venv/bin/python benchmarks/bench_evaluate.py [N ...]
"""

from __future__ import annotations

import json
import sys
import time

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from geoseg.evaluate import evaluate


def run(n: int) -> dict:
    rng = np.random.default_rng(0)
    side = np.sqrt(n) * 40.0
    xy = rng.uniform(0, side, size=(n, 2))
    cls = rng.choice(["ship", "vehicle", "building"], size=n)
    truth = gpd.GeoDataFrame(
        {"class": cls}, geometry=[box(x, y, x + 4.5, y + 1.8) for x, y in xy], crs="EPSG:32633"
    )
    shift = rng.normal(0, 0.3, size=(n, 2))
    pred = gpd.GeoDataFrame(
        {"class": cls, "score": rng.random(n)},
        geometry=[
            box(x + dx, y + dy, x + dx + 4.5, y + dy + 1.8)
            for (x, y), (dx, dy) in zip(xy, shift, strict=True)
        ],
        crs="EPSG:32633",
    )
    t0 = time.perf_counter()
    res = evaluate(pred, truth)
    seconds = time.perf_counter() - t0
    return {"n_pred": n, "n_true": n, "seconds": round(seconds, 3), "f1": round(res.overall.f1, 4)}


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 50_000]
    print(json.dumps({"benchmark": "evaluate", "results": [run(n) for n in sizes]}, indent=1))
