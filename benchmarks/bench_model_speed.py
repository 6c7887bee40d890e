"""End-to-end scene throughput of the demo model: predictor configurations side by side.

Every configuration runs ``geoseg.pipeline.run_scene`` on the same synthetic scenes with the
checkpoint's settings (256 px tiles, overlap 64, per-class score thresholds), alternating
configurations within each repeat; F1 at IoU 0.5 against the synthetic truth
(``geoseg.evaluate``). Configurations (``--configs``):

* ``today``: the predictor as it was before the speed work: PyTorch, contiguous memory
  format, the checkpoint's 1,000 RPN proposals, masks for every detection above the lowest
  class threshold, torchvision's single-threaded RoIAlign and RPN NMS; with
  ``--today-checkpoint`` on another model (the demo model as it was before issue 15);
* ``default``: what ``geoseg predict`` does (``load_predictor`` with the checkpoint's settings:
  the ``auto`` backend, threaded RoIAlign/NMS);
* ``torch``: the current defaults (channels-last, the checkpoint's proposals, per-class
  thresholds applied before the mask head);
* ``onnx``: the same with ``backend="onnx"`` (ONNX Runtime);
* ``torch+screen`` / ``onnx+screen``: with the empty-tile pre-screen at ``--screen``;
* ``NAME@today``: configuration ``NAME`` on the ``--today-checkpoint`` model (e.g.
  ``default@today``: today's code on the previous model, to tell the engine's gain from the
  model's).

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
_Today: type = object  # the "today" predictor class, made in main() (torch imported late)


def make_predictor(model, meta, name: str, settings, screen: float, path=None):
    from geoseg.predict import MaskRCNNPredictor, load_predictor

    if name == "default":
        return load_predictor(path, settings)

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
        opts = {"backend": "torch", "channels_last": False, "max_proposals": None}
        return _Today(copy.deepcopy(model), **common, **opts)
    else:
        backend = name.split("+")[0]
        per_class = {c: settings.class_min_score.get(c, settings.min_score) for c in classes}
        opts = {"backend": backend, "class_min_scores": per_class}
        if name.endswith("+screen"):
            opts["prescreen"] = screen
    return MaskRCNNPredictor(copy.deepcopy(model), **common, **opts)


class _TodayMixin:
    """The RoI pooling and RPN NMS on one thread, as torchvision runs them."""

    def _forward(self, tiles):
        import functools

        import geoseg.models.runtime as rt

        orig = rt.detect
        rt.detect = functools.partial(orig, parallel=False)
        try:
            return super()._forward(tiles)  # type: ignore[misc]
        finally:
            rt.detect = orig


def _today_class():
    from geoseg.predict import MaskRCNNPredictor

    return type("TodayPredictor", (_TodayMixin, MaskRCNNPredictor), {})


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
    p.add_argument("--checkpoint", type=Path, help="model under test (default: the bundled one)")
    p.add_argument("--today-checkpoint", type=Path, help="model of the 'today' configuration")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global _Today
    _Today = _today_class()
    path = args.checkpoint or demo_model_path()
    model, meta = load_checkpoint(path)
    today = load_checkpoint(args.today_checkpoint) if args.today_checkpoint else (model, meta)
    scenes = []
    for spec in args.scene or ["mixed:1536:900"]:
        layout, size, seed, *dens = spec.split(":")
        density = float(dens[0]) if dens else 1.0
        tif = OUT / f"model_speed_{layout}_{size}_{seed}_{density:g}.tif"
        OUT.mkdir(parents=True, exist_ok=True)
        if not tif.exists():
            generate_scene(tif, size=int(size), seed=int(seed), layout=layout, density=density)
        scenes.append((spec, tif, int(size)))
    predictors = {}
    for name in args.configs:
        t0 = time.perf_counter()
        on_today = name == "today" or name.endswith("@today")
        m, mt = today if on_today else (model, meta)
        settings = resolve(mt)
        ckpt = (args.today_checkpoint or path) if on_today else path
        kind = name.removesuffix("@today")
        predictors[name] = make_predictor(m, mt, kind, settings, args.screen, ckpt)
        predictors[name].build_s = round(time.perf_counter() - t0, 2)  # type: ignore[attr-defined]
    res: dict = {
        "load_start": os.getloadavg(),
        "threads": args.threads,
        "checkpoint": str(path),
        "today_checkpoint": str(args.today_checkpoint or path),
        "scenes": {},
    }
    for spec, scene_path, size in scenes:
        rows: dict = {n: {"wall_s": [], "cpu_s": []} for n in args.configs}
        for rep in range(args.repeats):
            for name in args.configs:
                c0, t0 = time.process_time(), time.perf_counter()
                r = run_scene(scene_path, predictors[name])
                rows[name]["wall_s"].append(round(time.perf_counter() - t0, 2))
                rows[name]["cpu_s"].append(round(time.process_time() - c0, 2))
                print(spec, name, rep, rows[name]["wall_s"][-1], rows[name]["cpu_s"][-1],
                      os.getloadavg()[0], file=sys.stderr, flush=True)  # fmt: skip
                if rep == 0:
                    truth = scene_path.with_suffix(".gpkg")
                    o = evaluate(r.gdf, truth, iou_threshold=0.5).overall
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
