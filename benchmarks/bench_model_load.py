"""Model load time: building a predictor from the bundled demo checkpoint, per backend.

Each measurement runs in a fresh Python process (imports done before the clock starts) and
times ``geoseg.predict.load_predictor(demo, RunSettings(device="cpu", backend=...))``: wall
seconds (``time.perf_counter``) and this process's CPU seconds (``time.process_time``).
Variants, alternating within each repeat:

* ``onnx-cold``: the ONNX engine with an empty export cache (``GEOSEG_CACHE_DIR`` a new
  folder): three ``torch.onnx.export`` calls, then three ONNX Runtime sessions;
* ``onnx-warm``: the same right after, with the cache the cold load filled (no export); its
  ``key_s`` is the time spent hashing the weights into the cache keys;
* ``torch``: the PyTorch engine (the reference; nothing exported).

Prints one JSON line per measurement, then a summary (median per variant) with the load
average. E.g.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_model_load.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
from geoseg.models import onnx_cache
from geoseg.predict import load_predictor
from geoseg.samples import demo_model_path
from geoseg.settings import RunSettings

key_s = 0.0
real_key = onnx_cache.graph_key


def timed_key(*args, **kwargs):
    global key_s
    t = time.perf_counter()
    try:
        return real_key(*args, **kwargs)
    finally:
        key_s += time.perf_counter() - t


onnx_cache.graph_key = timed_key
settings = RunSettings(device="cpu", backend=sys.argv[1])
wall, cpu = time.perf_counter(), time.process_time()
p = load_predictor(demo_model_path(), settings)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"backend": p.backend.value, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                  "key_s": round(key_s, 2)}))
"""


def measure(variant: str, cache: Path, repo: Path) -> dict:
    env = {**os.environ, "GEOSEG_CACHE_DIR": str(cache)}
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    backend = "torch" if variant == "torch" else "onnx"
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backend],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return {"variant": variant, "load_1min": round(load, 2), **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-cache-") as tmp:
        for i in range(args.repeats):
            cache = Path(tmp) / f"run{i}"  # empty: a cold load
            for variant in ("onnx-cold", "onnx-warm", "torch"):
                row = measure(variant, cache, repo)
                row["repeat"] = i + 1
                rows.append(row)
                print(json.dumps(row), flush=True)
            files = sorted((cache / "onnx").glob("*.onnx"))
            size_mb = sum(f.stat().st_size for f in files) / 1e6
            info = {"cache_files": len(files), "cache_mb": round(size_mb, 1)}
            print(json.dumps(info), flush=True)
    summary = {
        v: {
            "median_wall_s": statistics.median(r["wall_s"] for r in rows if r["variant"] == v),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in rows if r["variant"] == v),
        }
        for v in ("onnx-cold", "onnx-warm", "torch")
    }
    print(json.dumps({"summary": summary, "load_end": os.getloadavg()}))


if __name__ == "__main__":
    main()
