"""Building regularisation on real footprints: IoU against the truth and vertices, before/after.

Two measurements on SpaceNet-1 Rio (``data_samples/rio``):

* ``--mode truth`` (no model): each true footprint is rasterised onto the mosaic's own pixel
  grid (pixel-centre rule, as a perfect mask would be), the masks go through the pipeline's own
  :func:`geoseg.pipeline.vectorize_scene` twice, without and with ``regularize=("building",)``,
  and each outline is compared with its true polygon (IoU in a metric frame) and counted
  (vertices). This isolates what regularisation does to a staircase outline.
* ``--mode model --model CKPT --scene TIF``: a real model's predictions on a scene (e.g. the
  held-out Rio strip), run twice through :func:`geoseg.pipeline.run_scene` without and with
  regularisation; each prediction is matched to the truth (greedy, IoU >= 0.5 on the mask
  outline) and the matched pairs' IoU and vertex counts are reported.

Prints one JSON object. ``--figure PNG`` also draws a few buildings, mask outline vs
regularised outline over the imagery (the README's picture).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RIO = ROOT / "data_samples" / "rio"


def _truth_masks(scene: str, truth: Any) -> tuple[Any, Any, Any]:
    """Rasterise each true footprint onto the scene grid: Detections + kept truth rows."""
    import shapely
    from rasterio.features import rasterize

    from geoseg.raster import open_scene
    from geoseg.types import Detections

    info = open_scene(scene)
    gdf = truth.to_crs(info.crs_wkt)
    inv = ~info.transform
    boxes, masks, rows = [], [], []
    for row, geom in enumerate(gdf.geometry.values):
        px = shapely.transform(
            geom,
            lambda xy: np.column_stack(
                (
                    inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                    inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f,
                )
            ),
        )
        x0, y0, x1, y1 = px.bounds
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), info.width), min(int(np.ceil(y1)), info.height)
        if c1 - c0 < 2 or r1 - r0 < 2 or x0 < 0 or y0 < 0 or x1 > info.width or y1 > info.height:
            continue  # cut by the scene border: not a whole footprint
        local = shapely.affinity.translate(px, -c0, -r0)
        from affine import Affine

        m = rasterize(
            [(local, 1)], out_shape=(r1 - r0, c1 - c0), transform=Affine.identity(), dtype="uint8"
        ).astype(bool)
        if m.sum() < 4:
            continue
        boxes.append((c0, r0, c1, r1))
        masks.append(m)
        rows.append(row)
    n = len(masks)
    dets = Detections(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.ones(n, np.float32),
        labels=np.zeros(n, np.int64),
        mask_boxes=np.asarray(boxes, np.int32).reshape(n, 4),
        masks=tuple(masks),
        classes=("building",),
    )
    return info, dets, gdf.iloc[rows]


_FRAME: dict[str, Any] = {}


def _metric(geoms: Any, crs: Any) -> Any:
    """Geometries in one metric frame for the whole run (the truth's UTM zone).

    One frame for every set: a frame centred on each set's own bounds would shift the sets
    against each other.
    """
    import geopandas as gpd

    from geoseg.geometry import metric_crs

    s = gpd.GeoSeries(list(geoms), crs=crs)
    if "crs" not in _FRAME:
        _FRAME["crs"] = metric_crs(s.crs, s.total_bounds)
    return np.asarray(s.to_crs(_FRAME["crs"]).values, dtype=object)


def _pair_stats(pred: Any, truth: Any) -> tuple[Any, Any]:
    import shapely

    inter = shapely.area(shapely.intersection(pred, truth))
    union = shapely.area(pred) + shapely.area(truth) - inter
    return inter / np.maximum(union, 1e-12), np.asarray(
        [_vertices(g) for g in pred], dtype=np.float64
    )


def _vertices(g: Any) -> int:
    from geoseg.regularize import vertex_count

    return vertex_count(g)


def _summary(iou: Any, verts: Any) -> dict[str, float]:
    return {
        "mean_iou": round(float(np.mean(iou)), 4),
        "median_iou": round(float(np.median(iou)), 4),
        "mean_vertices": round(float(np.mean(verts)), 2),
        "median_vertices": float(np.median(verts)),
    }


def truth_mode(scene: str, labels: str, min_iou: float) -> tuple[dict[str, Any], Any]:
    """Staircase vs regularised outlines of perfect masks of the true footprints."""
    from geoseg.io import read_vectors
    from geoseg.pipeline import vectorize_scene
    from geoseg.settings import RunSettings

    truth = read_vectors(labels, what="truth")
    info, dets, kept = _truth_masks(scene, truth)
    t0 = time.perf_counter()
    plain = vectorize_scene(dets, info, settings=RunSettings())
    t1 = time.perf_counter()
    reg = vectorize_scene(
        dets, info, settings=RunSettings(regularize=("building",), regularize_min_iou=min_iou)
    )
    t2 = time.perf_counter()
    truth_m = _metric(kept.geometry.values, info.crs_wkt)
    plain_m = _metric(plain.geometry.values, info.crs_wkt)
    reg_m = _metric(reg.geometry.values, info.crs_wkt)
    iou0, v0 = _pair_stats(plain_m, truth_m)
    iou1, v1 = _pair_stats(reg_m, truth_m)
    tv = np.asarray([_vertices(g) for g in truth_m], np.float64)
    kinds = reg["regularized"].value_counts().to_dict()
    changed = reg["regularized"].to_numpy() != ""
    out = {
        "mode": "truth",
        "scene": scene,
        "buildings": len(kept),
        "min_iou": min_iou,
        "mask_outline": _summary(iou0, v0),
        "regularized": _summary(iou1, v1),
        "truth_vertices": {"mean": round(float(tv.mean()), 2), "median": float(np.median(tv))},
        "kinds": {("kept mask" if k == "" else k): int(v) for k, v in kinds.items()},
        "replaced_only": {
            "n": int(changed.sum()),
            "mask_iou": round(float(iou0[changed].mean()), 4) if changed.any() else None,
            "regularized_iou": round(float(iou1[changed].mean()), 4) if changed.any() else None,
            "better": int((iou1[changed] > iou0[changed] + 1e-9).sum()),
            "worse": int((iou1[changed] < iou0[changed] - 1e-9).sum()),
        },
        "seconds": {"vectorize": round(t1 - t0, 2), "vectorize+regularize": round(t2 - t1, 2)},
    }
    return out, (info, plain, reg, kept)


def model_mode(scene: str, labels: str, model: str, min_iou: float) -> dict[str, Any]:
    """A real model's matched predictions, mask outline vs regularised, against the truth."""
    import dataclasses

    from geoseg.evaluate import match_polygons
    from geoseg.io import read_vectors
    from geoseg.pipeline import finish_scene, plan_scene, predict_tiles
    from geoseg.predict import load_predictor

    predictor = load_predictor(model)
    plan = plan_scene(scene, predictor)
    t0 = time.perf_counter()
    tiles = predict_tiles(plan, predictor)
    t1 = time.perf_counter()
    plain = finish_scene(plan, tiles).gdf
    reg_plan = dataclasses.replace(
        plan,
        settings=plan.settings.replace(regularize=("building",), regularize_min_iou=min_iou),
    )
    reg = finish_scene(reg_plan, tiles).gdf
    truth = read_vectors(labels, what="truth").to_crs(plain.crs)
    truth_m = _metric(truth.geometry.values, plain.crs)
    plain_m = _metric(plain.geometry.values, plain.crs)
    reg_m = _metric(reg.geometry.values, plain.crs)
    (m,), _ = match_polygons(plain_m, truth_m, scores=plain["score"].to_numpy(), thresholds=[0.5])
    hit = m >= 0
    iou0, v0 = _pair_stats(plain_m[hit], truth_m[m[hit]])
    iou1, v1 = _pair_stats(reg_m[hit], truth_m[m[hit]])
    kinds = reg["regularized"].value_counts().to_dict()
    return {
        "mode": "model",
        "scene": scene,
        "model": model,
        "predictions": len(plain),
        "matched_iou50": int(hit.sum()),
        "min_iou": min_iou,
        "mask_outline": _summary(iou0, v0) if hit.any() else None,
        "regularized": _summary(iou1, v1) if hit.any() else None,
        "kinds": {("kept mask" if k == "" else k): int(v) for k, v in kinds.items()},
        "seconds_predict": round(t1 - t0, 1),
    }


def figure(data: Any, path: Path, *, n: int = 6) -> None:
    """Mask outline (left, red) vs regularised outline (right, cyan) of a few buildings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.windows import Window

    info, plain, reg, _ = data
    changed = np.flatnonzero(reg["regularized"].to_numpy() != "")
    area = _metric(plain.geometry.values, plain.crs)[changed]
    area = np.asarray([g.area for g in area])
    # mid-sized buildings, L/T shapes first, spread over the scene
    kinds = reg["regularized"].to_numpy()[changed]
    order = changed[np.lexsort((-area, kinds != "orthogonal"))]
    picks = [int(i) for i in order[: n * 4 : 4]][:n]
    fig, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.3), dpi=110)
    inv = ~info.transform
    with rasterio.open(info.path) as ds:
        for col, i in enumerate(picks):
            x0, y0, x1, y1 = plain.geometry.values[i].bounds
            c0, r1 = inv * (x0, y0)
            c1, r0 = inv * (x1, y1)
            pad = 6
            win = Window(
                int(c0) - pad, int(r0) - pad, int(c1 - c0) + 2 * pad, int(r1 - r0) + 2 * pad
            )
            img = np.moveaxis(ds.read([1, 2, 3], window=win, boundless=True), 0, -1)
            for row, (gdf, colour) in enumerate(((plain, "#ff3030"), (reg, "#30e0ff"))):
                ax = axes[row, col]
                ax.imshow(img, interpolation="nearest")
                geom = gdf.geometry.values[i]
                for part in getattr(geom, "geoms", [geom]):
                    xy = np.asarray(part.exterior.coords)
                    px = np.asarray([inv * tuple(p) for p in xy]) - (win.col_off, win.row_off)
                    ax.plot(px[:, 0] - 0.5, px[:, 1] - 0.5, color=colour, lw=1.2)
                from geoseg.regularize import vertex_count

                ax.set_title(f"{vertex_count(geom)} vertices", fontsize=7)
                ax.set_axis_off()
    axes[0, 0].text(-0.15, 0.5, "mask", rotation=90, transform=axes[0, 0].transAxes, va="center")
    axes[1, 0].text(
        -0.15, 0.5, "regularised", rotation=90, transform=axes[1, 0].transAxes, va="center"
    )
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    buf.seek(0)
    # a 256-colour palette keeps the picture small enough for the README (< 200 KB)
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)


def main() -> None:
    """Parse arguments, run one mode, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=["truth", "model"], default="truth")
    ap.add_argument("--scene", default=str(RIO / "rio.tif"))
    ap.add_argument("--labels", default=str(RIO / "buildings.geojson"))
    ap.add_argument("--model", help="checkpoint for --mode model")
    ap.add_argument("--min-iou", type=float, default=0.8)
    ap.add_argument("--figure", type=Path, help="PNG of a few buildings before/after (truth)")
    args = ap.parse_args()
    if args.mode == "truth":
        result, data = truth_mode(args.scene, args.labels, args.min_iou)
        if args.figure is not None:
            figure(data, args.figure)
            result["figure"] = str(args.figure)
    else:
        if not args.model:
            ap.error("--mode model needs --model")
        result = model_mode(args.scene, args.labels, args.model, args.min_iou)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
