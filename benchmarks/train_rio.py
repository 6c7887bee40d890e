"""Train and score the real building model on the SpaceNet-1 Rio mosaic (data_samples/rio/).

Split by area (reproducible): the southern strip of the mosaic (rows from (1 - ``--holdout``)
x height on) is never trained on; its northern half is the validation area (the score threshold
is tuned there), its southern half the test area (the figures in the model card), cut at the
row where each holds half of the strip's buildings. Both halves span the mosaic's whole width,
so each has the same mix of dense neighbourhoods (west) and scattered houses in vegetation
(east).
A gap of ``--overlap`` px separates the training part from the strip, so no training chip sees
a held-out pixel.

Steps (all data outside the git tree, under WORK):
  1. cut the mosaic into train / val / test GeoTIFFs (windows, georeference kept);
  2. chips of CHIP px from the training part (geoseg.chips.make_chips), validation chips from the
     validation area (COCO AP each epoch);
  3. fine-tune from the demo model (backbone, FPN, RPN and shared heads kept; new class
     predictor for the single class ``building``) at the input scale 1x, CPU;
  4. tune the score threshold on the validation area, score the test area at IoU 0.5 with
     geoseg.evaluate, and the synthetic town sample (a scene it never saw);
  5. with --publish, write geoseg/samples/models/rio_buildings_lite0.* (float16) and its card.

Usage:
  .venv/bin/python benchmarks/train_rio.py --work /tmp/geoseg_rio --steps 500 [--publish]
  .venv/bin/python benchmarks/train_rio.py --work /tmp/geoseg_rio --skip-train --publish
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data_samples" / "rio"
CLASSES = ("building",)
SCORE_GRID = [round(0.2 + 0.05 * i, 2) for i in range(15)]  # 0.20 .. 0.90


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def split(work: Path, *, holdout: float, overlap: int) -> dict[str, Path]:
    """Write train / val / test windows of the mosaic as GeoTIFFs.

    The southern strip (rows from ``(1 - holdout) x height`` on) is held out; it is cut at the
    median row of its buildings' centroids into a northern validation area and a southern test
    area with about as many buildings each, both the mosaic's full width.
    """
    import geopandas as gpd
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    out: dict[str, Path] = {}
    labels = gpd.read_file(DATA / "buildings.geojson")
    with rasterio.open(DATA / "rio.tif") as src:
        w, h = src.width, src.height
        y0 = round(h * (1 - holdout))
        pts = labels.geometry.representative_point()
        _, rows = ~src.transform * (np.asarray(pts.x), np.asarray(pts.y))
        ys = int(np.median(rows[rows >= y0]))
        parts = {
            "train": Window(0, 0, w, y0 - overlap),
            "val": Window(0, y0, w, ys - y0),
            "test": Window(0, ys, w, h - ys),
        }
        for name, win in parts.items():
            path = work / "parts" / f"rio_{name}_{win.row_off}_{win.height}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            profile = src.profile | {
                "width": int(win.width),
                "height": int(win.height),
                "transform": src.window_transform(win),
                "compress": "deflate",
                "photometric": "rgb",
            }
            if not path.is_file():
                with rasterio.open(path, "w", **profile) as dst:
                    dst.write(src.read(window=win))
            out[name] = path
    return out


def truth_in(part: Path):
    """Labels whose centroid lies in the part's footprint (the scoring rule of the card)."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    labels = gpd.read_file(DATA / "buildings.geojson")
    with rasterio.open(part) as ds:
        foot = box(*ds.bounds)
    return labels[labels.geometry.representative_point().within(foot)].reset_index(drop=True)


def make_data(work: Path, parts: dict[str, Path], *, chip: int, overlap: int):
    from geoseg.chips import make_chips

    dirs = {}
    for name in ("train", "val"):
        folder = work / "chips" / parts[name].stem
        if not (folder / "annotations.json").is_file():
            make_chips(
                parts[name],
                DATA / "buildings.geojson",
                folder,
                size=chip,
                overlap=overlap if name == "train" else 0,
                classes=CLASSES,
                keep_empty_fraction=0.05,
                seed=0,
                overwrite=True,
            )
        dirs[name] = folder
    return dirs


def run_training(
    work: Path,
    dirs,
    *,
    steps: int,
    batch: int,
    chip: int,
    seed: int,
    init: Path,
    upsample: float,
    lr: float,
):
    from geoseg.config import AugmentConfig, TrainConfig
    from geoseg.train import train

    # The demo model's anchors (16..256 model px) are chip px 8..128 at its 2x input scale;
    # at another scale they are rescaled so they cover the same buildings (4-60 m).
    side = round(chip * upsample)
    model = {
        "upsample": upsample,
        "anchor_sizes": [[round(s * upsample)] for s in (8, 16, 32, 64, 128)],
        "min_size": side,
        "max_size": side,
    }
    config = TrainConfig(
        train_chips=(dirs["train"],),
        val_chips=(dirs["val"],),
        output_dir=work / "run",
        classes=CLASSES,
        model=model,
        pretrained="none",
        init_checkpoint=init,
        epochs=1000,
        max_steps=steps,
        batch_size=batch,
        optimizer="adamw",
        lr=lr,
        weight_decay=1e-4,
        clip_grad_norm=5.0,
        warmup_steps=20,
        seed=seed,
        checkpoint_every=50,
        validate=True,
        device="cpu",
        num_threads=2,
        augment=AugmentConfig(scale_min=0.9, scale_max=1.15),
    )
    t0 = time.monotonic()

    def progress(p):
        if p.phase == "train" and p.step % 10 == 0:
            log(f"step {p.step}/{p.total_steps} loss {p.loss:.3f} {time.monotonic() - t0:.0f}s")
        elif p.phase == "validate":
            log(f"validate epoch {p.epoch}: {dict(p.metrics)}")

    result = train(config, progress=progress)
    return result, time.monotonic() - t0


def score(checkpoint: Path, scene: Path, truth, *, min_score: float | None = None):
    from geoseg.evaluate import evaluate
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor

    predictor = load_predictor(checkpoint)
    kwargs = {} if min_score is None else {"min_score": min_score, "class_min_score": {}}
    t0 = time.monotonic()
    result = run_scene(scene, predictor, **kwargs)
    seconds = time.monotonic() - t0
    return result.gdf, evaluate(result.gdf, truth, classes=CLASSES), seconds


def curve_of(pred, truth) -> dict[str, float]:
    """F1 at IoU 0.5 of the predictions kept at each threshold of :data:`SCORE_GRID`."""
    from geoseg.evaluate import evaluate

    return {
        str(t): evaluate(pred[pred["score"] >= t], truth, classes=CLASSES).overall.f1
        for t in SCORE_GRID
    }


def best_threshold(curve: dict[str, float]) -> float:
    """The threshold of the best F1 (ties: the one nearest 0.5)."""
    return max(SCORE_GRID, key=lambda t: (curve[str(t)], -abs(t - 0.5)))


def scores_at(pred, truth, threshold: float, seconds: float) -> dict[str, float]:
    from geoseg.evaluate import evaluate

    m = evaluate(pred[pred["score"] >= threshold], truth, classes=CLASSES).per_class["building"]
    return {
        "threshold": threshold,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "mean_iou": m.mean_iou,
        "ap50": m.ap50,
        "n_pred": m.count_pred,
        "n_true": m.count_true,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg_rio"))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--holdout", type=float, default=0.22)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--upsample", type=float, default=2.0, help="input scale (the demo's is 2)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument(
        "--init", type=Path, default=None, help="checkpoint to start from (default: demo model)"
    )
    ap.add_argument("--which", default="best", help="checkpoint of the run to score: best|last")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--publish", action="store_true")
    args = ap.parse_args()

    import torch

    from geoseg.checkpoint import load_checkpoint, save_checkpoint
    from geoseg.samples import demo_model_path, sample_scene_path

    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    parts = split(args.work, holdout=args.holdout, overlap=args.overlap)
    dirs = make_data(args.work, parts, chip=args.chip, overlap=args.overlap)
    figures: dict = {
        "steps": args.steps,
        "batch": args.batch,
        "chip": args.chip,
        "upsample": args.upsample,
        "lr": args.lr,
    }
    if not args.skip_train:
        _, seconds = run_training(
            args.work,
            dirs,
            steps=args.steps,
            batch=args.batch,
            chip=args.chip,
            seed=args.seed,
            init=args.init or demo_model_path(),
            upsample=args.upsample,
            lr=args.lr,
        )
        figures["train_seconds"] = round(seconds, 1)
    run = args.work / "run"
    ckpt = run / args.which
    if not ckpt.with_suffix(".safetensors").is_file():
        ckpt = run / "last"
    truth = {name: truth_in(parts[name]) for name in ("val", "test")}
    # one prediction per area at a low threshold; the F1 curves follow by filtering
    pred, seconds = {}, {}
    for name in ("val", "test"):
        pred[name], _, seconds[name] = score(
            ckpt.with_suffix(".safetensors"), parts[name], truth[name], min_score=0.1
        )
    curves = {name: curve_of(pred[name], truth[name]) for name in ("val", "test")}
    best = best_threshold(curves["val"])
    figures.update(checkpoint=str(ckpt), threshold=best, val_curve=curves["val"])
    # the card's figures: the test area at the threshold tuned on the validation area; and the
    # second fold (roles swapped), since the two halves differ (the south is denser)
    figures["test"] = scores_at(pred["test"], truth["test"], best, seconds["test"])
    figures["val_tuned_on_test"] = scores_at(
        pred["val"], truth["val"], best_threshold(curves["test"]), seconds["val"]
    )
    figures["test_curve"] = curves["test"]
    model, meta = load_checkpoint(ckpt)
    tuned = args.work / "tuned" / "rio_buildings_lite0"
    tuned.parent.mkdir(parents=True, exist_ok=True)
    import dataclasses

    meta = dataclasses.replace(
        meta,
        score_thresholds={"building": best},
        trained_on={
            **dict(meta.trained_on),
            "data": "SpaceNet-1 Rio de Janeiro mosaic (CC BY-SA 4.0; imagery courtesy of "
            "DigitalGlobe/Maxar), southern strip held out",
            "holdout_fraction": args.holdout,
        },
    )
    save_checkpoint(tuned, model, meta, half=True)
    import geopandas as gpd

    town = REPO / "data_samples" / "town.tif"
    if town.is_file():
        town_truth = gpd.read_file(town.with_suffix(".gpkg"))
        town_truth = town_truth[town_truth["class"] == "building"]
        _, town_scores, _ = score(tuned.with_suffix(".safetensors"), town, town_truth)
        t = town_scores.per_class["building"]
        figures["town_synthetic"] = {"precision": t.precision, "recall": t.recall, "f1": t.f1}
    _ = sample_scene_path
    if args.publish:
        dest = REPO / "geoseg" / "samples" / "models" / "rio_buildings_lite0"
        save_checkpoint(dest, model, meta, half=True)
        figures["published"] = str(dest)
    (args.work / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
