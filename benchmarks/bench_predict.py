"""Scene prediction end to end: geoseg vs SAHI vs a plain rasterio + torchvision loop.

Three experiments, each printing one JSON object per line:

``merge``
    Accuracy of the *merging* step alone. A synthetic scene (``geoseg.synth``, marina layout:
    densely packed touching boats, cars in parking rows) is cut into tiles and an *oracle*
    predictor returns, for every tile, exactly the true objects as that tile sees them (masks
    clipped to the tile, tight boxes, score 1). The per-tile predictions are then merged by
    (a) geoseg (``run_scene``: tiling, ``stitch``, ``vectorize``), (b) SAHI's
    ``get_sliced_prediction`` with its defaults (GREEDYNMM, IOS 0.5) through a SAHI
    ``TorchVisionDetectionModel`` whose model output is the oracle's, and (c) class-aware box
    NMS (IoU 0.5) over all tiles. Outputs are scored against the synthetic truth with
    ``geoseg.evaluate`` (F1 at IoU 0.5) and by count error.

``speed``
    The same Mask R-CNN and scene through (a) ``geoseg.pipeline.run_scene``, (b) SAHI's
    ``get_sliced_prediction`` with ``TorchVisionDetectionModel`` and (c) a plain loop (rasterio
    windows, ``model([tile])``, masks pasted by torchvision and cropped to boxes, box NMS,
    ``rasterio.features.shapes``). Each method runs in its own process; wall time and peak
    RSS (``os.wait4``) are reported, and F1/count error against the synthetic truth.
    The model is the bundled demo model when given (``--model``), else a randomly
    initialised geoseg Mask R-CNN (accuracy then means nothing; only speed does).

``memory``
    Peak RSS of ``run_scene`` as the scene grows (e.g. 4k and 16k pixels square), each in its
    own process, with a cheap predictor so that the figure is about reading, tiling,
    stitching and vectorising, not about the model: ``--predictor fake`` (default; every
    bright rectangle of the scene, no torch imported) or ``tiny`` (a tiny random Mask R-CNN,
    5 detections per tile).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_predict.py merge --size 2048
    nice -n 10 .venv/bin/python benchmarks/bench_predict.py speed --size 1536
    nice -n 10 .venv/bin/python benchmarks/bench_predict.py memory --sizes 4096 16384

SAHI is needed for (b): ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
OUT = HERE.parent / "out"


# ------------------------------------------------------------------------------------------
# helpers


def make_scene(path: Path, size: int, seed: int, layout: str, density: float = 1.0):
    """A synthetic scene + labels."""
    from geoseg.synth import generate_scene

    path.parent.mkdir(parents=True, exist_ok=True)
    return generate_scene(path, size=size, seed=seed, layout=layout, density=density)


def truth_ids(scene):
    """Per-pixel object ids of the whole scene and a dict object_id -> class index."""
    import geopandas as gpd

    from geoseg.synth import CLASSES, render_object_ids

    ids = render_object_ids(scene.spec)
    labels = gpd.read_file(scene.labels_path)
    cls = {
        int(o): CLASSES.index(c) for o, c in zip(labels["object_id"], labels["class"], strict=True)
    }
    return ids, cls


def clip_objects(ids, cls, x0, y0, w, h):
    """Oracle: the true objects as the window [x0, x0+w) x [y0, y0+h) sees them.

    Returns (boxes float32 [N,4] window px, labels int64 [N] 0-based, mask_boxes int32 [N,4],
    masks tuple of bool crops).
    """
    from scipy import ndimage

    win = np.zeros((h, w), np.int64)
    sub = ids[max(0, y0) : y0 + h, max(0, x0) : x0 + w]
    win[: sub.shape[0], : sub.shape[1]] = sub
    uniq, inv = np.unique(win, return_inverse=True)
    inv = inv.reshape(win.shape)
    if uniq[0] != 0:  # keep label 0 for "no object"
        uniq, inv = np.concatenate([[0], uniq]), inv + 1
    boxes, labels, masks = [], [], []
    for j, sl in enumerate(ndimage.find_objects(inv)):
        v = j + 1
        oid = int(uniq[v])
        if sl is None or oid not in cls:
            continue
        ys, xs = sl
        boxes.append((xs.start, ys.start, xs.stop, ys.stop))
        masks.append(inv[sl] == v)
        labels.append(cls[oid])
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return b, np.asarray(labels, np.int64), b.astype(np.int32), tuple(masks)


class OraclePredictor:
    """geoseg Predictor returning the true objects clipped to each tile."""

    def __init__(self, ids, cls, classes):
        self.ids, self.cls, self.classes = ids, cls, tuple(classes)

    def predict_tiles(self, tiles):
        from geoseg.types import TileDetections

        out = []
        for t in tiles:
            w = t.spec.window
            b, lab, mb, masks = clip_objects(
                self.ids, self.cls, w.col_off, w.row_off, w.width, w.height
            )
            out.append(
                TileDetections(
                    boxes=b,
                    scores=np.ones(len(lab), np.float32),
                    labels=lab,
                    mask_boxes=mb,
                    masks=masks,
                    classes=self.classes,
                    tile=t.spec,
                )
            )
        return out


def evaluate_gdf(pred, truth_path):
    from geoseg.evaluate import evaluate

    r = evaluate(pred, truth_path, iou_threshold=0.5)
    o = r.overall
    return {
        "n_pred": o.count_pred,
        "n_true": o.count_true,
        "count_error": o.count_error,
        "count_error_pct": round(100.0 * o.count_error / max(o.count_true, 1), 2),
        "f1": round(o.f1, 4),
        "precision": round(o.precision, 4),
        "recall": round(o.recall, 4),
        "mean_iou": round(o.mean_iou, 4),
        "per_class_count_error": {k: v.count_error for k, v in r.per_class.items()},
    }


def masks_to_gdf(items, transform, crs, classes):
    """items: iterable of (x0, y0, bool mask crop, label, score) in scene px -> GeoDataFrame."""
    import geopandas as gpd
    import rasterio.features
    from affine import Affine
    from shapely.geometry import shape
    from shapely.ops import unary_union

    geoms, names, scores = [], [], []
    for x0, y0, m, lab, sc in items:
        if not m.any():
            continue
        t = transform @ Affine.translation(x0, y0)
        polys = [
            shape(g)
            for g, v in rasterio.features.shapes(m.astype(np.uint8), mask=m, transform=t)
            if v
        ]
        geoms.append(unary_union(polys))
        names.append(classes[int(lab)])
        scores.append(float(sc))
    return gpd.GeoDataFrame({"class": names, "score": scores}, geometry=geoms, crs=crs)


def sahi_to_gdf(object_predictions, transform, crs, classes):
    """SAHI ObjectPredictions (full-image pixel polygons, pixel-centre contours) -> GeoDataFrame."""
    import geopandas as gpd
    import shapely
    from shapely.geometry import Polygon

    geoms, names, scores = [], [], []
    a = transform
    for op in object_predictions:
        polys = []
        if op.mask is not None:
            for seg in op.mask.segmentation:
                xy = np.asarray(seg, float).reshape(-1, 2)
                if len(xy) >= 3:  # make_valid may return lines/points too: keep areas
                    parts = shapely.get_parts(shapely.make_valid(Polygon(xy)))
                    polys += [q for q in parts if q.geom_type in ("Polygon", "MultiPolygon")]
        if not polys:
            x1, y1, x2, y2 = op.bbox.to_xyxy()
            polys = [shapely.box(x1, y1, x2, y2)]
        g = shapely.union_all(polys)
        g = shapely.affinity.affine_transform(g, [a.a, a.b, a.d, a.e, a.c, a.f])
        geoms.append(g)
        names.append(classes[int(op.category.id) - 1])
        scores.append(float(op.score.value))
    return gpd.GeoDataFrame({"class": names, "score": scores}, geometry=geoms, crs=crs)


def read_scene_uint8(path, stats):
    """Whole scene in memory as HWC uint8 after the scene-wide stretch (what SAHI needs)."""
    import rasterio

    with rasterio.open(path) as ds:
        data = ds.read(list(stats.bands))
    img = stats.apply(data)
    return np.ascontiguousarray((np.moveaxis(img, 0, -1) * 255.0 + 0.5).astype(np.uint8))


def box_nms_merge(per_tile, iou=0.5):
    """Class-aware box NMS over shifted per-tile detections.

    Returns a list of (x0, y0, mask, label, score) in scene pixels."""
    import torch
    from torchvision.ops import batched_nms

    items, boxes, scores, labels = [], [], [], []
    for (ox, oy), b, s, lab, mb, masks in per_tile:
        for i in range(len(s)):
            boxes.append(b[i] + np.array([ox, oy, ox, oy], np.float32))
            scores.append(s[i])
            labels.append(lab[i])
            items.append(
                (ox + int(mb[i][0]), oy + int(mb[i][1]), masks[i], int(lab[i]), float(s[i]))
            )
    if not items:
        return []
    keep = batched_nms(
        torch.as_tensor(np.asarray(boxes)),
        torch.as_tensor(np.asarray(scores, np.float32)),
        torch.as_tensor(np.asarray(labels)),
        iou,
    ).numpy()
    return [items[k] for k in keep]


# ------------------------------------------------------------------------------------------
# merge experiment (oracle)


def sahi_oracle_model(ids, cls, classes, sahi_full_masks=True):
    from sahi.models.torchvision import TorchVisionDetectionModel
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    class OracleSahiModel(TorchVisionDetectionModel):
        """SAHI's torchvision wrapper; the "model output" is the oracle's for each slice."""

        slivers_dropped = 0

        def set_model(self, model, **kwargs):
            self.model = model
            self.category_mapping = {str(i + 1): c for i, c in enumerate(classes)}

        def perform_inference(self, image, image_size=None):
            self._shape = image.shape[:2]

        def _create_object_prediction_list_from_original_predictions(
            self,
            shift_amount_list=None,
            full_shape_list=None,
        ):
            import torch

            shift_amount_list = shift_amount_list or [[0, 0]]

            sx, sy = (int(v) for v in shift_amount_list[0])
            h, w = self._shape
            b, lab, mb, masks = clip_objects(ids, cls, sx, sy, w, h)
            # SAHI raises "Invalid segmentation mask" on masks whose pixel-centre contour has
            # < 3 points (1-px slivers where a slice cuts an object): leave those out
            ok = [bool(get_coco_segmentation_from_bool_mask(m)) for m in masks]
            self.slivers_dropped += len(ok) - sum(ok)
            keep = np.flatnonzero(ok)
            b, lab, mb, masks = b[keep], lab[keep], mb[keep], tuple(masks[k] for k in keep)
            full = np.zeros((len(lab), 1, h, w), np.float32)
            for i, (m, box) in enumerate(zip(masks, mb, strict=True)):
                x1, y1, x2, y2 = box
                full[i, 0, y1:y2, x1:x2] = m
            self._original_predictions = [
                {
                    "boxes": torch.as_tensor(b),
                    "scores": torch.ones(len(lab)),
                    "labels": torch.as_tensor(lab + 1),
                    "masks": torch.as_tensor(full),
                }
            ]
            super()._create_object_prediction_list_from_original_predictions(
                shift_amount_list, full_shape_list
            )

    return OracleSahiModel(model=object(), confidence_threshold=0.5, device="cpu")


def run_merge(args):
    from geoseg.pipeline import run_scene
    from geoseg.synth import CLASSES
    from geoseg.tiling import make_grid

    OUT.mkdir(parents=True, exist_ok=True)
    scene = make_scene(
        OUT / f"merge_{args.layout}_{args.size}_{args.seed}_d{args.density:g}.tif",
        args.size,
        args.seed,
        args.layout,
        args.density,
    )

    ids, cls = truth_ids(scene)
    tile, overlap = args.tile, round(args.tile * args.overlap_ratio)
    results = {
        "experiment": "merge",
        "scene": {
            "size": args.size,
            "seed": args.seed,
            "layout": args.layout,
            "density": args.density,
            "n_objects": len(cls),
        },
        "tile": tile,
        "overlap_px": overlap,
    }
    import rasterio

    with rasterio.open(scene.raster_path) as ds:
        transform, crs = ds.transform, ds.crs

    # (a) geoseg
    t0 = time.perf_counter()
    r = run_scene(
        scene.raster_path,
        OraclePredictor(ids, cls, CLASSES),
        tile_size=tile,
        overlap=overlap,
        batch_size=8,
    )
    results["geoseg"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        **evaluate_gdf(r.gdf, scene.labels_path),
    }

    # (b) SAHI (defaults: GREEDYNMM, IOS, 0.5), perfect per-slice predictions
    try:
        from sahi.predict import get_sliced_prediction
    except ImportError as err:
        results["sahi"] = {"error": f"sahi not installed: {err}"}
    else:
        img = np.zeros((args.size, args.size, 3), np.uint8)
        model = sahi_oracle_model(ids, cls, CLASSES)
        t0 = time.perf_counter()
        pred = get_sliced_prediction(
            img,
            model,
            slice_height=tile,
            slice_width=tile,
            overlap_height_ratio=args.overlap_ratio,
            overlap_width_ratio=args.overlap_ratio,
            perform_standard_pred=False,
            verbose=0,
        )
        sec = time.perf_counter() - t0
        gdf = sahi_to_gdf(pred.object_prediction_list, transform, crs, CLASSES)
        results["sahi"] = {
            "seconds": round(sec, 2),
            "slivers_dropped": model.slivers_dropped,
            **evaluate_gdf(gdf, scene.labels_path),
        }

    # (c) box NMS over the same grid as geoseg
    t0 = time.perf_counter()
    per_tile = []
    for spec in make_grid(args.size, args.size, tile_size=tile, overlap=overlap):
        w = spec.window
        b, lab, mb, masks = clip_objects(ids, cls, w.col_off, w.row_off, w.width, w.height)
        per_tile.append(((w.col_off, w.row_off), b, np.ones(len(lab), np.float32), lab, mb, masks))
    kept = box_nms_merge(per_tile, 0.5)
    sec = time.perf_counter() - t0
    gdf = masks_to_gdf(kept, transform, crs, CLASSES)
    results["box_nms"] = {"seconds": round(sec, 2), **evaluate_gdf(gdf, scene.labels_path)}
    print(json.dumps(results))


# ------------------------------------------------------------------------------------------
# speed experiment: each method in its own process


def load_model(model_path, seed=0, min_score=0.5):
    """(torchvision MaskRCNN in eval mode, classes, bands, tile_size)."""
    import torch

    from geoseg.synth import CLASSES

    if model_path and Path(model_path).exists():
        from geoseg.checkpoint import load_checkpoint

        model, meta = load_checkpoint(model_path)
        model.roi_heads.score_thresh = min_score
        return model.eval(), tuple(meta.classes), tuple(meta.bands), meta.tile_size
    from geoseg.config import Backbone, ModelConfig
    from geoseg.models import build_model

    torch.manual_seed(seed)
    # the demo model's architecture (efficientnet-lite0, 128-channel FPN), randomly initialised;
    # 100 detections per tile so that every method handles the same number of masks
    cfg = ModelConfig(
        backbone=Backbone.EFFICIENTNET_LITE0,
        fpn_out_channels=128,
        box_score_thresh=min_score,
        box_detections_per_img=100,
    )
    model = build_model(cfg, num_classes=len(CLASSES), in_channels=3, pretrained=None)
    return model.eval(), CLASSES, (1, 2, 3), 512


def method_geoseg(args):
    from geoseg.pipeline import run_scene
    from geoseg.predict import MaskRCNNPredictor

    model, classes, bands, _ = load_model(args.model, min_score=args.min_score)
    pred = MaskRCNNPredictor(
        model,
        classes=classes,
        device="cpu",
        min_score=args.min_score,
        bands=bands,
        backend=args.backend,
        prescreen=args.prescreen,
    )
    t0 = time.perf_counter()
    r = run_scene(
        args.scene,
        pred,
        tile_size=args.tile,
        overlap=args.overlap,
        min_score=args.min_score,
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    sec = time.perf_counter() - t0
    return (
        sec,
        r.gdf,
        {"n_tiles": r.n_tiles, "timings": {k: round(v, 2) for k, v in r.timings.items()}},
    )


def method_sahi(args):
    import rasterio
    from sahi.models.torchvision import TorchVisionDetectionModel
    from sahi.predict import get_sliced_prediction

    from geoseg.raster import compute_norm_stats

    model, classes, bands, _ = load_model(args.model, min_score=args.min_score)
    det = robust_sahi_model(TorchVisionDetectionModel)(
        model=model,
        confidence_threshold=args.min_score,
        category_mapping={str(i + 1): c for i, c in enumerate(classes)},
        device="cpu",
    )
    t0 = time.perf_counter()
    stats = compute_norm_stats(args.scene, bands=bands)
    img = read_scene_uint8(args.scene, stats)
    import torch

    with torch.inference_mode():
        pred = get_sliced_prediction(
            img,
            det,
            slice_height=args.tile,
            slice_width=args.tile,
            overlap_height_ratio=args.overlap / args.tile,
            overlap_width_ratio=args.overlap / args.tile,
            perform_standard_pred=False,
            verbose=0,
        )
    with rasterio.open(args.scene) as ds:
        transform, crs = ds.transform, ds.crs
    gdf = sahi_to_gdf(pred.object_prediction_list, transform, crs, classes)
    sec = time.perf_counter() - t0
    durations = {k: round(v, 2) for k, v in pred.durations_in_seconds.items()}
    return sec, gdf, {"durations": durations, "slivers_dropped": type(det).dropped}


def robust_sahi_model(base):
    """SAHI's torchvision wrapper, minus one crash.

    SAHI raises ``ValueError("Invalid segmentation mask.")`` (and loses the whole scene) when a
    predicted mask has no pixel-centre contour of >= 3 points (1-px slivers, typical where a
    slice cuts an object). A SAHI user has to drop such detections first; so does this.
    """
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    class Robust(base):
        dropped = 0

        def _create_object_prediction_list_from_original_predictions(
            self, shift_amount_list=None, full_shape_list=None
        ):
            cleaned = []
            for pred in self._original_predictions:
                keep = [
                    i
                    for i, m in enumerate(pred["masks"])
                    if float(pred["scores"][i]) <= self.confidence_threshold
                    or get_coco_segmentation_from_bool_mask((m > self.mask_threshold).numpy())
                ]
                Robust.dropped += len(pred["scores"]) - len(keep)
                cleaned.append({k: v[keep] for k, v in pred.items()})
            self._original_predictions = cleaned
            super()._create_object_prediction_list_from_original_predictions(
                shift_amount_list or [[0, 0]], full_shape_list
            )

    return Robust


def method_plain(args):
    import rasterio
    import torch
    from rasterio.windows import Window

    from geoseg.raster import compute_norm_stats

    model, classes, bands, _ = load_model(args.model, min_score=args.min_score)
    t0 = time.perf_counter()
    stats = compute_norm_stats(args.scene, bands=bands)
    per_tile = []
    with rasterio.open(args.scene) as ds, torch.inference_mode():
        H, W = ds.height, ds.width
        step = args.tile - args.overlap
        for y in range(0, max(H - args.overlap, 1), step):
            for x in range(0, max(W - args.overlap, 1), step):
                data = ds.read(
                    list(bands), window=Window(x, y, args.tile, args.tile), boundless=True
                )
                img = torch.from_numpy(stats.apply(data))
                out = model([img])[0]
                b = out["boxes"].numpy()
                mb = np.stack(
                    [np.floor(b[:, 0]), np.floor(b[:, 1]), np.ceil(b[:, 2]), np.ceil(b[:, 3])], 1
                ).astype(np.int32)
                full = (out["masks"][:, 0] >= 0.5).numpy()
                masks = tuple(full[i, y1:y2, x1:x2] for i, (x1, y1, x2, y2) in enumerate(mb))
                per_tile.append(
                    ((x, y), b, out["scores"].numpy(), out["labels"].numpy() - 1, mb, masks)
                )
        transform, crs = ds.transform, ds.crs
    kept = box_nms_merge(per_tile, 0.5)
    gdf = masks_to_gdf(kept, transform, crs, classes)
    sec = time.perf_counter() - t0
    return sec, gdf, {"n_tiles": len(per_tile)}


METHODS = {"geoseg": method_geoseg, "sahi": method_sahi, "plain": method_plain}


def child_main(argv):
    """Run one method in this process; print its JSON."""
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("method")
    p.add_argument("--scene")
    p.add_argument("--labels")
    p.add_argument("--model", default=None)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--min-score", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto")
    p.add_argument("--prescreen", type=float, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    c0 = time.process_time()
    sec, gdf, extra = METHODS[args.method](args)
    cpu = time.process_time() - c0  # all threads; includes building the model (same for all)
    res = {
        "method": args.method,
        "seconds": round(sec, 2),
        "cpu_s": round(cpu, 1),
        "n_objects": len(gdf),
        **extra,
    }
    if args.labels:
        res.update(evaluate_gdf(gdf, args.labels))
    print(json.dumps(res))


def run_child(argv):
    """Run ``child_main(argv)`` in a fresh process; return its JSON plus peak RSS (MiB)."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, str(HERE), "_child", *argv], stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "argv": argv}
    res = json.loads(text.strip().splitlines()[-1])
    res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    # CPU seconds of the whole child (model load included): the fair figure on a shared machine
    res["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return res


def run_speed(args):
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"speed_{args.layout}_{args.size}_{args.seed}"
    if args.density != 1.0:
        name += f"_d{args.density:g}"
    scene = make_scene(OUT / f"{name}.tif", args.size, args.seed, args.layout, args.density)
    common = [
        "--scene", str(scene.raster_path),
        "--labels", str(scene.labels_path),
        "--tile", str(args.tile),
        "--overlap", str(args.overlap),
        "--min-score", str(args.min_score),
        "--threads", str(args.threads),
    ]  # fmt: skip
    if args.model:
        common += ["--model", args.model]
    res = {
        "experiment": "speed",
        "scene": {
            "size": args.size,
            "seed": args.seed,
            "layout": args.layout,
            "density": args.density,
        },
        "load_start": os.getloadavg(),
        "model": args.model or "random efficientnet_lite0 FPN-128 Mask R-CNN, 100 dets/tile",
        "tile": args.tile,
        "overlap": args.overlap,
        "min_score": args.min_score,
        "torch_threads": args.threads,
    }
    for m in args.methods:
        extra = (
            [
                *("--batch-size", str(args.batch_size), "--workers", str(args.workers)),
                *("--backend", args.backend),
                *(("--prescreen", str(args.prescreen)) if args.prescreen is not None else ()),
            ]
            if m == "geoseg"
            else []
        )
        res[m] = run_child([m, *common, *extra])
    g, s = res.get("geoseg", {}), res.get("sahi", {})
    if "seconds" in g and "seconds" in s:
        res["speedup_vs_sahi"] = round(s["seconds"] / g["seconds"], 2)
        res["cpu_speedup_vs_sahi"] = round(s["process_cpu_s"] / g["process_cpu_s"], 2)
    res["load_end"] = os.getloadavg()
    print(json.dumps(res))


# ------------------------------------------------------------------------------------------
# memory vs scene size


def write_big_scene(path: Path, size: int, seed: int = 0):
    """A tiled, deflate-compressed RGB GeoTIFF of bright rectangles on noise, written block by
    block (the synthetic renderer is too slow for 16k x 16k on 2 cores)."""
    import rasterio
    from affine import Affine

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    block = 1024
    base = rng.integers(20, 60, size=(3, block, block), dtype=np.uint8)
    for _ in range(40):  # objects in the repeated block
        x, y = rng.integers(0, block - 20, 2)
        w, h = rng.integers(4, 16, 2)
        base[:, y : y + h, x : x + w] = rng.integers(150, 250, size=(3, 1, 1), dtype=np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 4700000),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
    }  # fmt: skip
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size, block):
            for x in range(0, size, block):
                h, w = min(block, size - y), min(block, size - x)
                dst.write(base[:, :h, :w], window=rasterio.windows.Window(x, y, w, h))
    os.replace(tmp, path)
    return path


def fake_predictor():
    """A model-free predictor (no torch).

    Each 4-connected group of bright pixels (all bands at the top of the stretch) of a tile is
    one object, its mask cropped to its box. On the ``write_big_scene`` scenes that is every
    rectangle, cut where the tile cuts it.
    """
    from scipy import ndimage

    from geoseg.predict import PredictorBase
    from geoseg.types import TileDetections

    class Bright(PredictorBase):
        classes = ("object",)

        def predict_tiles(self, tiles):
            out = []
            for t in tiles:
                lab, _ = ndimage.label((t.image.min(axis=0) >= 1.0) & t.valid)
                boxes, masks = [], []
                for i, sl in enumerate(ndimage.find_objects(lab)):
                    if sl is not None:
                        boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
                        masks.append(lab[sl] == i + 1)
                n = len(boxes)
                arr = np.asarray(boxes, np.int32).reshape(n, 4)
                out.append(
                    TileDetections(
                        boxes=arr.astype(np.float32),
                        scores=np.full(n, 0.9, np.float32),
                        labels=np.zeros(n, np.int64),
                        mask_boxes=arr,
                        masks=tuple(masks),
                        classes=self.classes,
                        tile=t.spec,
                    )
                )
            return out

    return Bright()


def memory_child(argv):
    p = argparse.ArgumentParser()
    p.add_argument("scene")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--predictor", choices=("fake", "tiny"), default="fake")
    args = p.parse_args(argv)
    from geoseg.pipeline import run_scene

    if args.predictor == "tiny":
        import torch

        from geoseg.predict import MaskRCNNPredictor

        torch.set_num_threads(2)
        model = tiny_model()
        with torch.no_grad():  # masks fill their boxes, so every detection becomes an object
            model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(8.0)
        pred = MaskRCNNPredictor(model, classes=("a", "b", "c"), device="cpu", min_score=0.0)
    else:
        pred = fake_predictor()
    t0 = time.perf_counter()
    r = run_scene(
        args.scene, pred, tile_size=args.tile, overlap=args.overlap, min_score=0.0, batch_size=4
    )
    print(
        json.dumps(
            {
                "predictor": args.predictor,
                "n_tiles": r.n_tiles,
                "n_objects": len(r.gdf),
                "seconds": round(time.perf_counter() - t0, 1),
                "timings": {k: round(v, 2) for k, v in r.timings.items()},
                "torch_imported": "torch" in sys.modules,
            }
        )
    )


def tiny_model():
    """A small random torchvision Mask R-CNN (strided conv backbone)."""
    import torch
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as Head
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    bb = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU(),
    )  # fmt: skip
    bb.out_channels = 16
    return MaskRCNN(
        bb,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        box_head=TwoMLPHead(16 * 49, 32),
        box_predictor=FastRCNNPredictor(32, 4),
        mask_head=MaskRCNNHeads(16, [16, 16], 1),
        mask_predictor=Head(16, 16, 4),
        min_size=512,
        max_size=512,
        box_detections_per_img=5,  # a few objects per tile: the output stays small
        rpn_post_nms_top_n_test=200,
    )


def run_memory(args):
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        scene = write_big_scene(OUT / f"mem_{size}.tif", size)
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE),
                    "_memory",
                    str(scene),
                    "--tile",
                    str(args.tile),
                    "--predictor",
                    args.predictor,
                ],
                stdout=out,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            out.seek(0)
            text = out.read()
        row = {
            "size": size,
            "megapixels": round(size * size / 1e6, 1),
            "exit": os.waitstatus_to_exitcode(status),
        }
        if row["exit"] == 0:
            row.update(json.loads(text.strip().splitlines()[-1]))
        row["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
        row["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
        rows.append(row)
        print(json.dumps({"experiment": "memory", **row}), flush=True)
    if len(rows) >= 2:
        a, b = rows[0]["peak_rss_mb"], rows[-1]["peak_rss_mb"]
        print(
            json.dumps({"experiment": "memory", "peak_ratio_largest_vs_smallest": round(b / a, 3)})
        )


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        return memory_child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("--size", type=int, default=2048)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--layout", default="marina")
    m.add_argument("--tile", type=int, default=256)
    m.add_argument("--overlap-ratio", type=float, default=0.2)
    m.add_argument("--density", type=float, default=1.0, help="geoseg.synth object density")
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=1024)
    s.add_argument("--seed", type=int, default=2)
    s.add_argument("--layout", default="marina")
    s.add_argument("--model", default=None)
    s.add_argument("--tile", type=int, default=512)
    s.add_argument("--overlap", type=int, default=64)
    s.add_argument("--min-score", type=float, default=0.5)
    s.add_argument("--batch-size", type=int, default=1)
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--methods", nargs="+", default=["geoseg", "sahi", "plain"])
    s.add_argument("--density", type=float, default=1.0, help="geoseg.synth object density")
    s.add_argument("--backend", default="auto", help="geoseg's backend: auto, torch or onnx")
    s.add_argument("--prescreen", type=float, default=None, help="geoseg's pre-screen")
    mm = sub.add_parser("memory")
    mm.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    mm.add_argument("--tile", type=int, default=512)
    mm.add_argument(
        "--predictor",
        choices=("fake", "tiny"),
        default="fake",
        help="fake: bright-pixel components, no torch; tiny: a tiny random Mask R-CNN",
    )
    args = p.parse_args()
    {"merge": run_merge, "speed": run_speed, "memory": run_memory}[args.cmd](args)


if __name__ == "__main__":
    main()
