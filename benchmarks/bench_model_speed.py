"""End-to-end scene throughput of the demo model: predictor configurations side by side.

Every configuration runs ``geoseg.pipeline.run_scene`` on the same synthetic scenes with the
checkpoint's settings (256 px tiles, overlap 64, per-class score thresholds), alternating
configurations within each repeat; F1 at IoU 0.5 against the synthetic truth
(``geoseg.evaluate``). Configurations (``--configs``):

* ``today``: the predictor as it was before the speed work: PyTorch, contiguous memory
  format, the checkpoint's 1,000 RPN proposals, masks for every detection above the lowest
  class threshold;
* ``torch``: the current defaults (channels-last, the checkpoint's proposals, per-class
  thresholds applied before the mask head);
* ``onnx``: the same with ``backend="onnx"`` (ONNX Runtime);
* ``torch+screen`` / ``onnx+screen``: with the empty-tile pre-screen at ``--screen``.

Prints one JSON object; e.g.

    .venv/bin/python benchmarks/bench_model_speed.py --scene mixed:1536:900 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def make_predictor(model, meta, name: str, settings, screen: float):
    from geoseg.predict import MaskRCNNPredictor

    classes = tuple(meta.classes)
    common = {
        "classes": classes,
        "device": "cpu",
        "min_score": settings.lowest_score(),
        "mask_threshold": meta.model_config.mask_threshold,
        "bands": meta.bands,
        "norm_stats": meta.norm_stats,
        "tile_size": meta.tile_size,
        "gsd": meta.gsd,
        "score_thresholds": meta.score_thresholds,
    }
    if name == "today":
        opts = {"channels_last": False, "max_proposals": None}
    else:
        backend = name.split("+")[0]
        per_class = {c: settings.class_min_score.get(c, settings.min_score) for c in classes}
        opts = {"backend": backend, "class_min_scores": per_class}
        if name.endswith("+screen"):
            opts["prescreen"] = screen
    return MaskRCNNPredictor(copy.deepcopy(model), **common, **opts)


def main() -> None:
    import torch

    from geoseg.checkpoint import load_checkpoint
    from geoseg.evaluate import evaluate
    from geoseg.pipeline import run_scene
    from geoseg.samples import demo_model_path
    from geoseg.settings import resolve
    from geoseg.synth import generate_scene

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--scene",
        action="append",
        help="LAYOUT:SIZE:SEED[:DENSITY] of a geoseg.synth scene (repeatable)",
    )
    p.add_argument("--configs", nargs="+", default=["today", "torch", "onnx"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--screen", type=float, default=0.5, help="pre-screen objectness threshold")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(demo_model_path())
    scenes = []
    for spec in args.scene or ["mixed:1536:900"]:
        layout, size, seed, *dens = spec.split(":")
        density = float(dens[0]) if dens else 1.0
        path = OUT / f"model_speed_{layout}_{size}_{seed}_{density:g}.tif"
        OUT.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            generate_scene(path, size=int(size), seed=int(seed), layout=layout, density=density)
        scenes.append((spec, path, int(size)))
    predictors = {}
    for name in args.configs:
        t0 = time.perf_counter()
        settings = resolve(meta)
        predictors[name] = make_predictor(model, meta, name, settings, args.screen)
        predictors[name].build_s = round(time.perf_counter() - t0, 2)  # type: ignore[attr-defined]
    res: dict = {"load_start": os.getloadavg(), "threads": args.threads, "scenes": {}}
    for spec, path, size in scenes:
        rows: dict = {n: {"wall_s": [], "cpu_s": []} for n in args.configs}
        for rep in range(args.repeats):
            for name in args.configs:
                c0, t0 = time.process_time(), time.perf_counter()
                r = run_scene(path, predictors[name])
                rows[name]["wall_s"].append(round(time.perf_counter() - t0, 2))
                rows[name]["cpu_s"].append(round(time.process_time() - c0, 2))
                print(spec, name, rep, rows[name]["wall_s"][-1], rows[name]["cpu_s"][-1],
                      os.getloadavg()[0], file=sys.stderr, flush=True)  # fmt: skip
                if rep == 0:
                    o = evaluate(r.gdf, path.with_suffix(".gpkg"), iou_threshold=0.5).overall
                    print(spec, name, "f1", round(o.f1, 4), file=sys.stderr, flush=True)
                    rows[name].update(
                        f1=round(o.f1, 4),
                        precision=round(o.precision, 4),
                        recall=round(o.recall, 4),
                        n_pred=o.count_pred,
                        n_true=o.count_true,
                        build_s=predictors[name].build_s,
                    )
        for row in rows.values():
            best = min(row["wall_s"])
            row["mpx_per_s_best"] = round(size * size / 1e6 / best, 4)
            row["cpu_s_median"] = sorted(row["cpu_s"])[len(row["cpu_s"]) // 2]
        base = rows.get("today")
        if base:
            for row in rows.values():
                row["speedup_wall_best"] = round(min(base["wall_s"]) / min(row["wall_s"]), 2)
                row["speedup_cpu_median"] = round(base["cpu_s_median"] / row["cpu_s_median"], 2)
        res["scenes"][spec] = rows
    res["load_end"] = os.getloadavg()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
