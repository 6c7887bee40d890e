"""Stitching what real models return: fragments and tiles that disagree about one object.

Two modes, each printing one JSON line per run.

``oracle``: a scene's exact labels, rasterised, are cut by a ``make_grid`` grid and an
*imperfect oracle* (:func:`geoseg.synth.oracle.oracle_detections`) returns for every tile what
a real model might: all outlines of a tile grown or shrunk by 1-2 px, random scores, objects
missed by one of the tiles that see them, and extra fragments predicted as separate objects.
The stitched count is compared with the truth (``lost``: true objects no output covers with
the majority of its pixels; ``duplicates``: extra outputs on an object). Variants:

* ``perfect``: the true objects clipped to each tile;
* ``outline1`` / ``outline2``: every tile's outlines off by +-1 / by -2, -1, +1 or +2 px;
* ``missed``: ``outline2`` and 5 % of the objects seen by several tiles missed by one of
  them, another tile still seeing all of it;
* ``missed_half``: the same, but the tile left may see as little as half of the object (with
  2 px noise a 4 px boat cut by a tile edge is then hard to tell from its neighbour's edge);
* ``fragments``: ``outline2`` and 5 % of the objects also predicted as a separate half;
* ``all``: ``outline2``, ``missed`` and ``fragments`` together.

Scenes: the bundled marina (``geoseg/samples/marina.tif``: 448 boats and ships, 535
vehicles) and town (``data_samples/town.tif``: 1,497 vehicles, 118 buildings); any labelled
scene with ``--scene`` and ``--truth``.

``model``: a checkpoint run on a scene with :func:`geoseg.pipeline.run_scene`, tiled (the
model's tile size and overlap, or ``--tile-size``/``--overlap``) against one tile covering the
whole scene (or ``--big-tile`` working pixels), each scored against the truth with
:func:`geoseg.evaluate.evaluate` at IoU 0.5: predicted count, count error, precision, recall,
F1, and the number of predictions lying mostly (``>= --inside``, 0.8, of their area) inside
another prediction (fragments and duplicates). ``--crop`` cuts a square of the scene first
(a quick check on a small input). Heavy on a CPU: run it with ``nice``, and give ``--cache
DIR`` to keep each run's per-tile detections there (a second call only re-stitches them;
``--stitch KEY=VALUE`` changes stitch settings, e.g. ``contain_frac=0.7``). ``oracle`` takes
``--stitch`` too.

Usage::

    .venv/bin/python benchmarks/bench_fragments.py oracle
    .venv/bin/python benchmarks/bench_fragments.py oracle --scenes marina --variants all
    nice -n 19 .venv/bin/python benchmarks/bench_fragments.py model \\
        --checkpoint geoseg/samples/models/demo_lite0.safetensors \\
        --scene geoseg/samples/marina.tif --truth geoseg/samples/marina.gpkg --crop 384
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCENES = {
    "marina": (
        REPO / "geoseg" / "samples" / "marina.tif",
        REPO / "geoseg" / "samples" / "marina.gpkg",
    ),
    "town": (REPO / "data_samples" / "town.tif", REPO / "data_samples" / "town.gpkg"),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "perfect": {},
    "outline1": {"outline_px": (-1, 1)},
    "outline2": {"outline_px": (-2, -1, 1, 2)},
    "missed": {"outline_px": (-2, -1, 1, 2), "drop": 0.05},
    "missed_half": {"outline_px": (-2, -1, 1, 2), "drop": 0.05, "whole_left": False},
    "fragments": {"outline_px": (-2, -1, 1, 2), "fragment": 0.05},
    "all": {"outline_px": (-2, -1, 1, 2), "drop": 0.05, "fragment": 0.05},
}


# --------------------------------------------------------------------------- oracle mode


def truth_image(scene: Path, truth: Path):
    """The labels rasterised on the scene grid: (inst, cls, class names, width, height)."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(scene) as src:
        width, height, transform, crs = src.width, src.height, src.transform, src.crs
    labels = gpd.read_file(truth).to_crs(crs)
    classes = tuple(sorted(labels["class"].unique()))
    names = {c: i for i, c in enumerate(classes)}
    inst = rasterize(
        [(g, i + 1) for i, g in enumerate(labels.geometry)],
        out_shape=(height, width),
        transform=transform,
        dtype="int32",
    )
    cls = np.asarray([0, *(names[c] for c in labels["class"])], dtype=np.int64)
    return inst, cls, classes, width, height


def score_count(inst, det) -> dict[str, int]:
    """True objects, outputs, lost objects and duplicate outputs (majority-pixel owner)."""
    n_ids = int(inst.max())
    areas = np.bincount(inst.ravel(), minlength=n_ids + 1)
    owners = []
    for k in range(len(det)):
        x1, y1, x2, y2 = det.mask_boxes[k].tolist()
        cnt = np.bincount(inst[y1:y2, x1:x2][det.masks[k]], minlength=n_ids + 1)
        cnt[0] = 0
        if cnt.max() > 0:
            owners.append(int(cnt.argmax()))
    true_ids = set(np.flatnonzero(areas[1:]) + 1)
    hits = np.bincount(np.asarray(owners, dtype=np.int64), minlength=n_ids + 1)
    return {
        "true_objects": len(true_ids),
        "output_objects": len(det),
        "lost": int(sum(1 for t in true_ids if hits[t] == 0)),
        "duplicates": int(np.maximum(hits[1:] - 1, 0).sum()),
        "on_background": len(det) - len(owners),
    }


def parse_stitch(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings as keyword arguments (values read as JSON: 0.7, 8, true)."""
    out: dict[str, Any] = {}
    for kv in pairs or []:
        key, _, val = kv.partition("=")
        out[key] = json.loads(val)
    return out


def run_oracle(args: argparse.Namespace) -> None:
    from geoseg.stitch import stitch
    from geoseg.synth.oracle import oracle_detections, visible_ids
    from geoseg.tiling import make_grid

    stitch_kw = parse_stitch(args.stitch)
    scenes = dict(SCENES)
    if args.scene:
        scenes = {Path(args.scene).stem: (Path(args.scene), Path(args.truth))}
    for name in args.scenes or list(scenes):
        scene, truth = scenes[name]
        inst, cls, classes, width, height = truth_image(scene, truth)
        inst = visible_ids(inst)
        grid = make_grid(width, height, tile_size=args.tile_size, overlap=args.overlap)
        for variant in args.variants:
            kw = VARIANTS[variant]
            for seed in range(args.seeds):
                tds = oracle_detections(
                    inst,
                    cls,
                    grid,
                    classes,
                    seed=seed,
                    scores=(0.3, 1.0),
                    min_px=4 if kw else 1,
                    **kw,
                )
                t0 = time.perf_counter()
                det = stitch(tds, scene_width=width, scene_height=height, **stitch_kw)
                seconds = time.perf_counter() - t0
                res = score_count(inst, det)
                err = res["output_objects"] - res["true_objects"]
                print(
                    json.dumps(
                        {
                            "scene": name,
                            "variant": variant,
                            "seed": seed,
                            "tile_size": args.tile_size,
                            "overlap": args.overlap,
                            "input_detections": sum(len(t) for t in tds),
                            **res,
                            "count_error": err,
                            "count_error_pct": round(100 * err / max(res["true_objects"], 1), 2),
                            "stitch_s": round(seconds, 3),
                        }
                    ),
                    flush=True,
                )


# --------------------------------------------------------------------------- model mode


def mostly_inside(gdf, frac: float) -> int:
    """Predictions with at least ``frac`` of their area inside another prediction."""
    import shapely

    geoms = np.asarray(gdf.geometry.values)
    if len(geoms) < 2:
        return 0
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a != b
    a, b = a[keep], b[keep]
    inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    own = shapely.area(geoms[a])
    inside = inter >= frac * np.maximum(own, 1e-12)
    return len(np.unique(a[inside]))


def truth_inside(scene: Path, truth: Path, out: Path) -> Path:
    """The labels whose representative point lies on the scene (a GeoPackage under ``out``).

    A label file may cover more than the scene (a mosaic's labels scored on one part of it);
    objects off the scene would otherwise count as misses.
    """
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        crs, foot = src.crs, box(*src.bounds)
    labels = gpd.read_file(truth)
    if crs is not None:
        labels = labels.to_crs(crs)
    labels = labels[labels.geometry.representative_point().within(foot)]
    path = out / "truth_inside.gpkg"
    labels.to_file(path)
    return path


def crop_inputs(scene: Path, truth: Path, size: int, col: int, row: int, out: Path):
    """A ``size`` x ``size`` px window of the scene (GeoTIFF) and the labels it intersects."""
    import geopandas as gpd
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from shapely.geometry import box

    with rasterio.open(scene) as src:
        win = Window(col, row, min(size, src.width - col), min(size, src.height - row))
        data = src.read(window=win)
        profile = src.profile | {
            "width": int(win.width),
            "height": int(win.height),
            "transform": src.window_transform(win),
            "tiled": False,
        }
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        bounds = window_bounds(win, src.transform)
        crs = src.crs
    path = out / "crop.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    labels = gpd.read_file(truth).to_crs(crs)
    labels = labels[labels.intersects(box(*bounds))].copy()
    labels["geometry"] = labels.geometry.intersection(box(*bounds))
    labels = labels[~labels.geometry.is_empty & (labels.geometry.area > 0)]
    lpath = out / "crop.gpkg"
    labels.to_file(lpath)
    return path, lpath


def predicted_tiles(plan, predictor, cache: Path | None, label: str, tag: str) -> list[Any]:
    """The plan's per-tile detections, read from ``cache`` when it holds them (else predicted
    and written there): predict once, stitch many times with other settings."""
    import pickle

    from geoseg.pipeline import predict_tiles

    s = plan.settings
    key = f"{tag}_{label}_{s.tile_size}_{s.overlap}_{s.min_score:g}.pkl"
    if cache is not None and (cache / key).exists():
        with open(cache / key, "rb") as f:
            return list(pickle.load(f))
    tiles = predict_tiles(plan, predictor)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / (key + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(tiles, f)
        tmp.replace(cache / key)
    return tiles


def run_model(args: argparse.Namespace) -> None:
    import dataclasses

    from geoseg.evaluate import evaluate
    from geoseg.pipeline import finish_scene, plan_scene
    from geoseg.predict import load_predictor
    from geoseg.raster import open_scene

    scene, truth = Path(args.scene), Path(args.truth)
    cache = Path(args.cache) if args.cache else None
    stitch_kw = parse_stitch(args.stitch)
    with tempfile.TemporaryDirectory() as tmp:
        if args.crop:
            scene, truth = crop_inputs(scene, truth, args.crop, args.col, args.row, Path(tmp))
        else:
            truth = truth_inside(scene, truth, Path(tmp))
        predictor = load_predictor(args.checkpoint)
        info = open_scene(scene)
        tag = Path(args.scene).stem + (
            f"_crop{args.crop}_{args.col}_{args.row}" if args.crop else ""
        )
        tag += "_" + Path(args.checkpoint).stem
        common: dict[str, Any] = {}
        if args.min_score is not None:
            common["min_score"] = args.min_score
        tiled_kw = dict(common)
        if args.tile_size:
            tiled_kw["tile_size"] = args.tile_size
        if args.overlap:
            tiled_kw["overlap"] = args.overlap
        plans = [("tiled", plan_scene(scene, predictor, **tiled_kw))]
        grid = plans[0][1].settings
        if args.big_tile:
            big = args.big_tile
        else:  # one tile over the whole scene, in working pixels
            g = plans[0][1].grid
            scale = grid.tile_size / max(g.scene_tile[0], 1) if g is not None else 1.0
            big = int(np.ceil(max(info.width, info.height) * scale)) + 1
        big_kw = dict(common, tile_size=big, overlap=max(1, min(grid.overlap, big // 4)))
        label = "big_tile" if args.big_tile else "untiled"
        plans.append((label, plan_scene(scene, predictor, **big_kw)))
        for label, plan in plans:
            t0 = time.perf_counter()
            tiles = predicted_tiles(plan, predictor, cache, label, tag)
            t_pred = time.perf_counter() - t0
            if stitch_kw:
                settings = plan.settings.replace(**stitch_kw)
                plan = dataclasses.replace(plan, settings=settings)
            res = finish_scene(plan, tiles)
            o = evaluate(res.gdf, truth, iou_threshold=0.5).overall
            print(
                json.dumps(
                    {
                        "run": label,
                        "scene": str(args.scene),
                        "crop": args.crop,
                        "scene_px": [info.width, info.height],
                        "tile_size": res.settings.tile_size,
                        "overlap": res.settings.overlap,
                        "stitch": stitch_kw,
                        "tiles": res.n_tiles,
                        "predicted": o.count_pred,
                        "true": o.count_true,
                        "count_error": o.count_error,
                        "precision": round(o.precision, 4),
                        "recall": round(o.recall, 4),
                        "f1": round(o.f1, 4),
                        "mostly_inside_another": mostly_inside(res.gdf, args.inside),
                        "predict_s": round(t_pred, 2),
                        "stitch_s": round(res.timings.get("stitch", 0.0), 3),
                        "load_avg_1min": round(os.getloadavg()[0], 2),
                    }
                ),
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("oracle", help="imperfect oracles on labelled scenes")
    o.add_argument("--scenes", nargs="+", choices=sorted(SCENES), default=None)
    o.add_argument("--scene", help="a labelled scene instead of the bundled ones")
    o.add_argument("--truth", help="its labels (vector file with a 'class' column)")
    o.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    o.add_argument("--seeds", type=int, default=3)
    o.add_argument("--tile-size", type=int, default=256)
    o.add_argument("--overlap", type=int, default=64)
    o.add_argument(
        "--stitch", nargs="+", default=None, metavar="KEY=VALUE", help="stitch() keywords"
    )
    m = sub.add_parser("model", help="a checkpoint tiled vs one big tile")
    m.add_argument("--checkpoint", required=True)
    m.add_argument("--scene", required=True)
    m.add_argument("--truth", required=True)
    m.add_argument("--tile-size", type=int, default=None, help="default: the model's")
    m.add_argument("--overlap", type=int, default=None, help="default: the model's")
    m.add_argument("--big-tile", type=int, default=None, help="default: the whole scene")
    m.add_argument("--min-score", type=float, default=None)
    m.add_argument("--inside", type=float, default=0.8)
    m.add_argument("--crop", type=int, default=None, help="cut a square of this many px first")
    m.add_argument("--col", type=int, default=0)
    m.add_argument("--row", type=int, default=0)
    m.add_argument(
        "--cache",
        default=None,
        help="folder keeping each run's per-tile detections: a second call only re-stitches",
    )
    m.add_argument(
        "--stitch",
        nargs="+",
        default=None,
        metavar="KEY=VALUE",
        help="stitch settings to change (RunSettings fields, e.g. contain_frac=0.7)",
    )
    args = p.parse_args()
    if args.mode == "oracle":
        if bool(args.scene) != bool(args.truth):
            p.error("--scene and --truth go together")
        run_oracle(args)
    else:
        run_model(args)


if __name__ == "__main__":
    main()
