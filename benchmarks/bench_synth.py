"""Time and peak memory of `geoseg.synth.generate_scene` at several scene sizes.

Each size runs in its own Python process so that its peak RSS (resource.getrusage) is its own.
Prints one JSON object per size, e.g.

    .venv/bin/python benchmarks/bench_synth.py --size 4096 --size 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(size: int, seed: int, layout: str, keep: str | None) -> dict:
    from geoseg.synth import generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep) if keep else Path(tmp) / f"bench_{size}.tif"
        t0 = time.perf_counter()
        scene = generate_scene(out, size=size, seed=seed, layout=layout)
        seconds = time.perf_counter() - t0
        tif_mb = out.stat().st_size / 2**20
        gpkg_mb = scene.labels_path.stat().st_size / 2**20
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "size": size,
        "layout": layout,
        "seed": seed,
        "seconds": round(seconds, 2),
        "megapixels_per_s": round(size * size / 1e6 / seconds, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "tif_mb": round(tif_mb, 1),
        "gpkg_mb": round(gpkg_mb, 1),
        "counts": scene.counts,
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, action="append", help="scene side in pixels (repeat)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layout", default="mixed")
    ap.add_argument("--keep", help="write the (single) scene here instead of a temporary folder")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = args.size or [1024, 4096]
    if args.one:
        print(json.dumps(_one(sizes[0], args.seed, args.layout, args.keep)), flush=True)
        return
    for size in sizes:
        cmd = [sys.executable, __file__, "--one", "--size", str(size), "--seed", str(args.seed)]
        cmd += ["--layout", args.layout]
        if args.keep:
            cmd += ["--keep", args.keep]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(json.dumps({"size": size, "error": res.stderr.strip()[-2000:]}), flush=True)
            continue
        print(res.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
