"""Training loop: Mask R-CNN on georeferenced chips with COCO instance labels.

Input is the chip format written by :func:`geoseg.chips.make_chips`, one folder per scene::

    DIR/images/*.tif       chip GeoTIFFs, raw dtype (not normalised), the selected bands
    DIR/annotations.json   COCO: images, annotations (1-based category ids, polygons in chip
                           pixels or RLE), categories, and a "geoseg" block with norm_stats,
                           classes, bands, gsd, tile_size

Each chip is normalised with its folder's (scene-wide) ``norm_stats``. Chips are augmented
with flips, 90-degree rotations, photometric jitter and scale jitter; boxes are recomputed from
the augmented masks, so they are always tight.

Outputs in ``TrainConfig.output_dir``:

* ``last.safetensors`` + ``last.json``: the model after the latest checkpoint;
* ``last_state.safetensors`` + ``last_state.json``: optimiser (tensors in safetensors, the rest
  in JSON), scheduler, AMP scaler, RNG and loop position; nothing is pickled;
* ``best.safetensors`` + ``best.json``: the model at the best validation
  (``TrainConfig.monitor``, mask AP by default);
* ``steps.csv``: one row per optimiser step (loss and its parts, learning rate, seconds),
  appended and flushed as it happens;
* ``metrics.csv`` and ``metrics.json``: one row per validation (each epoch, or every
  ``validate_every`` steps, and the last step): COCO AP, precision/recall/F1 at IoU 0.5 per
  class, the per-class score thresholds calibrated on the validation chips
  (:mod:`geoseg.calibrate`) and the F1 they give. Checkpoints written after a validation carry
  those thresholds in their sidecar.

An interrupted run started again with the same output folder resumes from ``last`` with the
same optimiser/scheduler state, step, data order, metric history and early-stopping count.

Chip folders may be given through a parent folder (:func:`expand_chip_folders`). Fine-tuning
(``init_checkpoint``) keeps every shared layer and copies the class-specific rows of the
classes the checkpoint already has, by name (see :class:`~geoseg.config.TrainConfig`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from geoseg._version import __version__
from geoseg.calibrate import (
    DEFAULT_FLOOR,
    ScoreCurve,
    chip_curves,
    choose_thresholds,
    merge_curves,
    scores_at,
)
from geoseg.checkpoint import (
    ModelMeta,
    checkpoint_paths,
    load_checkpoint,
    read_meta,
    read_safetensors,
    save_checkpoint,
    write_safetensors,
)
from geoseg.coco import ANNOTATIONS_FILE, decode_segmentation, label_map, read_coco
from geoseg.config import (
    AugmentConfig,
    ModelConfig,
    OptimizerKind,
    TrainConfig,
    check_fine_tune,
    config_from_dict,
    config_to_dict,
    load_config,
)
from geoseg.errors import BandError, CheckpointError, ConfigError, LabelError
from geoseg.evaluate import ChipPrediction, coco_scores, predict_chips
from geoseg.io import atomic_write_text, check_no_overwrite
from geoseg.models import build_model, load_matching
from geoseg.settings import DEFAULT_MIN_SCORE
from geoseg.types import NormStats

__all__ = [
    "RUN_FILES",
    "ChipDataset",
    "TrainProgress",
    "TrainResult",
    "expand_chip_folders",
    "train",
]

logger = logging.getLogger(__name__)

#: The files :func:`train` writes in ``output_dir`` (see the module docstring).
RUN_FILES: tuple[str, ...] = (
    "last.safetensors",
    "last.json",
    "last_state.safetensors",
    "last_state.json",
    "best.safetensors",
    "best.json",
    "steps.csv",
    "metrics.csv",
    "metrics.json",
)

Target = dict[str, Tensor]


# --------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class _ChipFolder:
    """One chip folder's COCO content, indexed."""

    root: Path
    images: list[dict[str, Any]]
    anns_by_image: dict[int, list[dict[str, Any]]]
    category_to_label: dict[int, int]  # COCO category id -> 1-based model label
    norm_stats: NormStats
    info: dict[str, Any]


def _read_folder(root: Path, classes: Sequence[str]) -> _ChipFolder:
    path = root / ANNOTATIONS_FILE
    coco = read_coco(path, hint=f"is {root} a folder written by `geoseg chips`?")
    info = coco.extra.get("geoseg") or {}
    if "norm_stats" not in info:
        raise LabelError(
            f"{path}: no geoseg.norm_stats block; re-create the chips with `geoseg chips`"
        )
    norm = NormStats.from_dict(info["norm_stats"])
    cat_map, unknown = label_map(coco.categories, classes)
    if unknown:
        logger.warning("%s: ignoring categories not in the classes: %s", path, unknown)
    anns = coco.annotations_by_image(keep=cat_map)
    return _ChipFolder(root, coco.images, anns, cat_map, norm, info)


def _require_instances(dataset: ChipDataset, folders: Sequence[Path]) -> None:
    """Refuse training chips without a single instance of the model's classes.

    Raises:
        LabelError: naming the folders, the model's classes and the categories they hold.
    """
    if any(anns for f in dataset.folders for anns in f.anns_by_image.values()):
        return
    names = [str(f) for f in folders]
    held = sorted({str(c) for f in dataset.folders for c in f.info.get("classes") or ()})
    raise LabelError(
        f"{', '.join(names)}: the training chips hold no instance of the model's classes "
        f"{list(dataset.classes)}"
        + (f" (their classes: {held})" if held else "")
        + "; set `classes:` in the run file to the chips' classes, or make chips with labels "
        "of these classes"
    )


def _boxes_from_masks(masks: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Tight ``(x1, y1, x2, y2)`` pixel-edge boxes of ``[N, H, W]`` masks (all non-empty)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def _augment(
    image: npt.NDArray[np.float32],
    masks: npt.NDArray[np.uint8],
    aug: AugmentConfig,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Augment an image ``[C, H, W]`` in [0, 1] and its masks ``[N, H, W]`` together."""
    if rng.random() < aug.hflip:
        image, masks = image[:, :, ::-1], masks[:, :, ::-1]
    if rng.random() < aug.vflip:
        image, masks = image[:, ::-1, :], masks[:, ::-1, :]
    if aug.rot90:
        k = int(rng.integers(0, 4))
        if k:
            image = np.rot90(image, k, axes=(1, 2))
            masks = np.rot90(masks, k, axes=(1, 2))
    if aug.scale_max > aug.scale_min or aug.scale_min != 1.0:
        s = float(np.exp(rng.uniform(np.log(aug.scale_min), np.log(aug.scale_max))))
        image, masks = _rescale(image, masks, s, rng)
    image = np.ascontiguousarray(image, dtype=np.float32)
    if aug.contrast > 0 or aug.brightness > 0 or aug.band_jitter > 0:
        c = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
        b = rng.uniform(-aug.brightness, aug.brightness)
        gains = 1.0 + rng.uniform(-aug.band_jitter, aug.band_jitter, size=(image.shape[0], 1, 1))
        mean = image.mean(axis=(1, 2), keepdims=True)
        image = ((image - mean) * c + mean + b) * gains
        np.clip(image, 0.0, 1.0, out=image)
    return image.astype(np.float32, copy=False), np.ascontiguousarray(masks)


def _rescale(
    image: npt.NDArray[np.float32],
    masks: npt.NDArray[np.uint8],
    scale: float,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Zoom by ``scale`` then crop (random window) or zero-pad back to the original size."""
    c, h, w = image.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return image, masks
    t = torch.from_numpy(np.ascontiguousarray(image))[None]
    big = nn.functional.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)[0]
    img2 = big.numpy()
    if len(masks):
        tm = torch.from_numpy(np.ascontiguousarray(masks))[None].float()
        msk2 = nn.functional.interpolate(tm, size=(nh, nw), mode="nearest")[0].to(torch.uint8)
        m2 = msk2.numpy()
    else:
        m2 = np.zeros((0, nh, nw), np.uint8)
    out_img = np.zeros((c, h, w), np.float32)
    out_msk = np.zeros((len(masks), h, w), np.uint8)
    y0 = int(rng.integers(0, nh - h + 1)) if nh > h else 0
    x0 = int(rng.integers(0, nw - w + 1)) if nw > w else 0
    ch, cw = min(h, nh), min(w, nw)
    out_img[:, :ch, :cw] = img2[:, y0 : y0 + ch, x0 : x0 + cw]
    out_msk[:, :ch, :cw] = m2[:, y0 : y0 + ch, x0 : x0 + cw]
    return out_img, out_msk


class ChipDataset(torch.utils.data.Dataset[tuple[Tensor, Target]]):
    """Training chips from one or more chip folders, as torchvision detection samples.

    ``dataset[i]`` is ``(image, target)``: ``image`` float32 ``[C, H, W]`` in [0, 1] (chip
    pixels, normalised with the folder's scene-wide statistics, augmented when ``augment``
    is given); ``target`` has ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2, chip pixels,
    pixel edges), ``labels`` int64 ``[N]`` (1-based into ``classes``) and ``masks`` uint8
    ``[N, H, W]``.

    Augmentation randomness depends only on ``(seed, epoch, index)`` (see :meth:`set_epoch`),
    so a resumed run sees exactly the same samples.
    """

    def __init__(
        self,
        folders: Sequence[str | Path],
        *,
        classes: Sequence[str],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        if not folders:
            raise ConfigError("no chip folders given")
        self.classes = tuple(classes)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.folders = [_read_folder(Path(f), self.classes) for f in folders]
        self.items: list[tuple[int, dict[str, Any]]] = [
            (fi, img) for fi, folder in enumerate(self.folders) for img in folder.images
        ]
        if not self.items:
            raise LabelError(f"the chip folders {[str(f) for f in folders]} hold no chips")
        bands = {len(f.norm_stats.bands) for f in self.folders}
        if len(bands) > 1:
            raise BandError(
                f"chip folders have different band counts {sorted(bands)}; make all chips "
                "with the same --bands"
            )

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = epoch

    @property
    def band_count(self) -> int:
        """Bands per chip (model input channels)."""
        return len(self.folders[0].norm_stats.bands)

    def labels_of(self, index: int) -> list[int]:
        """1-based labels of the objects in chip ``index`` (no pixels read)."""
        fi, img = self.items[index]
        folder = self.folders[fi]
        return [
            folder.category_to_label[int(a["category_id"])]
            for a in folder.anns_by_image.get(int(img["id"]), [])
        ]

    def read(self, index: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], list[int]]:
        """Chip ``index`` without augmentation: image ``[C,H,W]``, masks ``[N,H,W]``, labels."""
        import rasterio

        fi, img = self.items[index]
        folder = self.folders[fi]
        path = folder.root / img["file_name"]
        try:
            with rasterio.open(path) as src:
                raw = src.read()
        except rasterio.errors.RasterioIOError as err:
            raise LabelError(f"{path}: cannot read the chip ({err})") from err
        if raw.shape[0] != len(folder.norm_stats.bands):
            raise BandError(
                f"{path}: {raw.shape[0]} bands but the folder's norm_stats has "
                f"{len(folder.norm_stats.bands)}"
            )
        image = folder.norm_stats.apply(raw)
        h, w = image.shape[1:]
        masks, labels = [], []
        for ann in folder.anns_by_image.get(int(img["id"]), []):
            m = decode_segmentation(ann["segmentation"], h, w)
            if m.any():
                masks.append(m)
                labels.append(folder.category_to_label[int(ann["category_id"])])
        stack = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        return image, stack, labels

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, masks, labels = self.read(index)
        lab = np.asarray(labels, dtype=np.int64)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, masks = _augment(image, masks, self.augment, rng)
            keep = masks.reshape(len(masks), -1).sum(axis=1) >= 2 if len(masks) else []
            masks, lab = masks[keep], lab[keep]
        boxes = _boxes_from_masks(masks) if len(masks) else np.zeros((0, 4), np.float32)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(lab),
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
        }
        return torch.from_numpy(np.ascontiguousarray(image)), target


def _collate(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def _epoch_order(
    dataset: ChipDataset, *, seed: int, epoch: int, class_balanced: bool, skip_empty: float
) -> list[int]:
    """The chip indexes of one epoch, a pure function of ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch, 7])
    n = len(dataset)
    labels = [dataset.labels_of(i) for i in range(n)]
    candidates = np.arange(n)
    if skip_empty > 0:
        empty = np.asarray([not lab for lab in labels])
        drop = empty & (rng.random(n) < skip_empty)
        candidates = candidates[~drop]
    if not class_balanced:
        return [int(i) for i in rng.permutation(candidates)]
    counts: dict[int, int] = {}
    for lab in labels:
        for c in set(lab):
            counts[c] = counts.get(c, 0) + 1
    weights = np.asarray(
        [
            max((1.0 / counts[c] for c in set(labels[i])), default=1.0 / max(n, 1))
            for i in candidates
        ]
    )
    weights /= weights.sum()
    return [int(i) for i in rng.choice(candidates, size=len(candidates), p=weights)]


# --------------------------------------------------------------------------------------------
# training state (no pickle: tensors in safetensors, the rest in JSON)


def _save_state(
    out: Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    loop: dict[str, Any],
) -> None:
    opt = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                plain.setdefault(str(pid), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    write_safetensors(out / "last_state.safetensors", tensors)
    info = {
        "format": "geoseg-train-state",
        "geoseg_version": __version__,
        "optimizer_param_groups": opt["param_groups"],
        "optimizer_plain_state": plain,
        "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "loop": loop,
    }
    atomic_write_text(out / "last_state.json", json.dumps(info, indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _load_state(out: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    path = out / "last_state.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable training state ({err})") from err
    tensors = read_safetensors(out / "last_state.safetensors")
    return info, tensors


def _optimizer_state(info: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in info["optimizer_plain_state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": info["optimizer_param_groups"]}


# --------------------------------------------------------------------------------------------
# the loop


@dataclass(frozen=True)
class TrainProgress:
    """One progress report of :func:`train`.

    Sent after every optimiser step (``phase="train"``), validation (``phase="validate"``)
    and checkpoint (``phase="checkpoint"``).

    Attributes:
        step: optimiser steps done; total_steps: planned total.
        epoch: current epoch (0-based); loss: this step's total loss; lr: learning rate.
        losses: the step's loss components (``loss_classifier``, ``loss_mask``...).
        phase: what just happened; metrics: validation metrics when ``phase="validate"``.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float = float("nan")
    lr: float = 0.0
    losses: Mapping[str, float] = field(default_factory=dict)
    phase: str = "train"
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced; :meth:`summary` is the report ``geoseg train`` prints.

    Attributes:
        output_dir: the run folder; last_checkpoint / best_checkpoint: ``.safetensors`` paths.
        steps: optimiser steps done in total; resumed_from_step: 0 for a fresh run.
        losses: total loss of each step run in *this* call, in order.
        history: one metrics row per validation (or per epoch without validation chips) of the
            whole run, resumed parts included (the rows of ``metrics.csv``).
        total_steps: the planned number of steps.
        seconds: wall time of this call; elapsed: training time of the whole run.
        classes: the model's classes.
        monitor: the metric that chose ``best`` (``train_loss`` without validation).
        best_value, best_step, best_epoch: its best value and when (``None``: never measured).
        best_row: the history row of the best checkpoint.
        score_thresholds: the per-class thresholds stored with the best checkpoint (empty when
            not calibrated).
        thresholds_from: where ``score_thresholds`` come from: ``"validation chips"``,
            ``"parent checkpoint"`` (a fine-tune without calibration keeps its parent's) or
            ``""`` (none).
        stopped_early: whether early stopping ended the run; stop_reason says why.
        n_val_chips: validation chips (0 without validation).
        metrics_file, steps_file: ``metrics.csv`` (per validation), ``steps.csv`` (per step).
    """

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    steps: int
    resumed_from_step: int
    losses: tuple[float, ...]
    history: tuple[Mapping[str, Any], ...]
    total_steps: int = 0
    seconds: float = 0.0
    elapsed: float = 0.0
    classes: tuple[str, ...] = ()
    monitor: str = "train_loss"
    best_value: float | None = None
    best_step: int | None = None
    best_epoch: int | None = None
    best_row: Mapping[str, Any] = field(default_factory=dict)
    score_thresholds: Mapping[str, float] = field(default_factory=dict)
    thresholds_from: str = ""
    stopped_early: bool = False
    stop_reason: str = ""
    n_val_chips: int = 0
    metrics_file: Path | None = None
    steps_file: Path | None = None

    def summary(self) -> str:
        """The run in a few lines: steps, time, best metric and when, per-class F1, files."""
        lines = [f"training run {self.output_dir}"]
        state = "stopped early: " + self.stop_reason if self.stopped_early else ""
        if not state and self.steps < self.total_steps:
            state = "interrupted; run again to resume"
        lines.append(
            f"  steps      {self.steps} of {self.total_steps}" + (f" ({state})" if state else "")
        )
        when = f" (this call {_duration(self.seconds)}"
        when += f", resumed at step {self.resumed_from_step})" if self.resumed_from_step else ")"
        lines.append(f"  time       {_duration(self.elapsed)}{when}")
        if self.losses:
            tail = self.losses[-min(len(self.losses), 20) :]
            lines.append(f"  loss       {np.mean(tail):.4f} (mean of the last {len(tail)} steps)")
        if self.best_value is not None:
            lines.append(
                f"  best       {self.monitor} {self.best_value:.4f} at step {self.best_step} "
                f"(epoch {self.best_epoch})"
            )
        row = self.best_row
        if self.n_val_chips and "f1" in row:
            lines.append(
                f"  per class  on {self.n_val_chips} validation chips, IoU 0.5, at the best "
                "checkpoint:"
            )
            lines.append(f"    {'class':<14} {'F1@0.5':>7} {'threshold':>10} {'F1@thr':>7}")
            for c in self.classes:
                thr = self.score_thresholds.get(c)
                tuned = row.get(f"f1_tuned_{c}")
                lines.append(
                    f"    {c[:14]:<14} {_num(row.get(f'f1_{c}')):>7} "
                    f"{_num(thr):>10} {_num(tuned if thr is not None else None):>7}"
                )
            lines.append(
                f"    {'overall':<14} {_num(row.get('f1')):>7} {'':>10} "
                f"{_num(row.get('f1_tuned')):>7}"
            )
        ckpt = self.best_checkpoint or self.last_checkpoint
        lines.append(f"  checkpoint {ckpt}")
        if self.score_thresholds and self.thresholds_from == _FROM_PARENT:
            lines.append(
                "             score thresholds kept from the checkpoint fine-tuned from (not "
                "recalibrated; `geoseg predict` uses them; `geoseg calibrate` redoes them)"
            )
        elif self.score_thresholds:
            lines.append(
                "             score thresholds calibrated on the validation chips; "
                "`geoseg predict` uses them"
            )
        else:
            lines.append(
                "             score thresholds not calibrated: run `geoseg calibrate "
                f"{ckpt.name} SCENE LABELS` on a labelled scene"
            )
        files = [str(p) for p in (self.metrics_file, self.steps_file) if p is not None]
        if files:
            lines.append(f"  logs       {', '.join(files)}")
        return "\n".join(lines)


_FROM_VALIDATION = "validation chips"
_FROM_PARENT = "parent checkpoint"


def _inherited_thresholds(
    init_checkpoint: Path | None, classes: Sequence[str], *, calibrating: bool
) -> dict[str, float]:
    """The parent's calibrated score thresholds a fine-tune keeps when it does not calibrate.

    A fine-tune without calibration (no validation chips, or ``calibrate`` off) would
    otherwise write checkpoints without thresholds, so ``geoseg predict`` would fall back to
    :data:`~geoseg.settings.DEFAULT_MIN_SCORE` for every class the parent had calibrated.
    Returns class -> threshold for the classes in both ``classes`` and the parent's
    ``score_thresholds`` (empty when calibrating, or when not fine-tuning).
    """
    if init_checkpoint is None or calibrating:
        return {}
    parent = read_meta(init_checkpoint).score_thresholds
    kept = {c: float(parent[c]) for c in classes if c in parent}
    if kept:
        logger.info(
            "no calibration in this run: keeping the score thresholds of %s for %s",
            init_checkpoint,
            ", ".join(f"{c} {t:g}" for c, t in kept.items()),
        )
    return kept


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.3f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


_RESUME_KEYS = (
    "train_chips",
    "preset",
    "classes",
    "model",
    "batch_size",
    "grad_accum",
    "optimizer",
    "seed",
)

#: The class-specific layers (name -> rows per class): rebuilt when fine-tuning to new classes.
_CLASS_LAYERS: dict[str, int] = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}


def expand_chip_folders(paths: Sequence[str | Path], *, what: str = "chip folders") -> list[Path]:
    """Chip folders from a list of chip folders and parent folders of chip folders.

    A folder holding ``annotations.json`` is a chip folder; any other folder stands for the
    chip folders directly inside it, sorted by name. Duplicates are dropped (first kept).

    Args:
        paths: folders, in order.
        what: what the list is (``train_chips``...), for messages.

    Raises:
        LabelError: a path that does not exist, or a folder that is neither a chip folder nor
            holds one (the message names it).
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if (p / ANNOTATIONS_FILE).is_file():
            found.append(p)
            continue
        if not p.is_dir():
            raise LabelError(
                f"{what}: {p} does not exist (give chip folders written by `geoseg chips`)"
            )
        children = sorted(c for c in p.iterdir() if (c / ANNOTATIONS_FILE).is_file())
        if not children:
            raise LabelError(
                f"{what}: {p} holds no chip folder: neither it nor a folder directly inside it "
                f"has an {ANNOTATIONS_FILE} (written by `geoseg chips`)"
            )
        found.extend(children)
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a torch device (cpu, cuda, cuda:1)") from err


def _make_schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warm = config.warmup_steps
    floor = config.min_lr_ratio

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        span = max(1, total_steps - warm)
        t = min(1.0, (step - warm) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _transfer_class_rows(
    model: nn.Module,
    old_state: Mapping[str, Tensor],
    old_classes: Sequence[str],
    new_classes: Sequence[str],
) -> list[str]:
    """Copy the class-specific rows of the background and of classes in both sets, by name.

    The other rows (new classes) keep ``model``'s fresh initialisation. Returns the classes
    whose rows were copied.
    """
    old_index = {c: i + 1 for i, c in enumerate(old_classes)}
    pairs = [(0, 0)] + [(j + 1, old_index[c]) for j, c in enumerate(new_classes) if c in old_index]
    own = model.state_dict()
    update: dict[str, Tensor] = {}
    for name, per in _CLASS_LAYERS.items():
        new = own[name].clone()
        old = old_state[name]
        for dst, src in pairs:
            new[dst * per : (dst + 1) * per] = old[src * per : (src + 1) * per]
        update[name] = new
    model.load_state_dict(update, strict=False)
    return [c for c in new_classes if c in old_index]


def _build_for_training(
    config: TrainConfig, classes: tuple[str, ...], in_channels: int
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """The model to train: fresh (preset + overrides) or fine-tuned from ``init_checkpoint``.

    Fine-tuning keeps every tensor of the checkpoint except the class-specific layers
    (:data:`_CLASS_LAYERS`), whose rows are copied per class name (background included); new
    classes start from a fresh initialisation (see :class:`~geoseg.config.TrainConfig`).

    Raises:
        ConfigError: invalid model settings, or a setting fine-tuning may not change.
        BandError: the checkpoint takes another number of bands.
        CheckpointError: an unreadable checkpoint, or weights that do not fit.
    """
    old_config: ModelConfig | None = None
    if config.init_checkpoint is not None:
        old_model, old_meta = load_checkpoint(config.init_checkpoint)
        base = dict(old_meta.config)
        provenance: dict[str, Any] = {"init_checkpoint": str(config.init_checkpoint)}
        if old_meta.in_channels != in_channels:
            raise BandError(
                f"{config.init_checkpoint}: the checkpoint takes {old_meta.in_channels} bands, "
                f"the chips have {in_channels}"
            )
        old_config = old_meta.model_config
    else:
        preset = load_config(config.preset)
        base = config_to_dict(preset.model)
        provenance = {"pretrained": config.pretrained}
    merged = {**base, **dict(config.model)}
    try:
        model_config = config_from_dict(ModelConfig, merged)
    except ConfigError as err:
        raise ConfigError(f"model: {err}") from err
    if config.init_checkpoint is None:
        model = build_model(
            model_config,
            num_classes=len(classes),
            in_channels=in_channels,
            pretrained=config.pretrained,
        )
        return model, model_config, provenance
    assert old_config is not None
    check_fine_tune(old_config, model_config, source=config.init_checkpoint)
    model = build_model(model_config, num_classes=len(classes), in_channels=in_channels)
    state = old_model.state_dict()
    shared = {k: v for k, v in state.items() if k not in _CLASS_LAYERS}
    own = model.state_dict()
    misfit = sorted(
        k
        for k in own
        if k not in _CLASS_LAYERS and (k not in shared or shared[k].shape != own[k].shape)
    )
    if misfit:
        raise CheckpointError(
            f"{config.init_checkpoint}: {len(misfit)} tensor(s) of the model do not fit the "
            f"checkpoint ({', '.join(misfit[:4])}...); was it made by another geoseg version?"
        )
    n = load_matching(model, shared, in_channels=in_channels)
    copied = _transfer_class_rows(model, state, old_meta.classes, classes)
    new = [c for c in classes if c not in copied]
    provenance.update(class_rows_copied=copied, class_rows_new=new)
    logger.info(
        "fine-tuning from %s: %d tensors kept; class rows copied for %s, new for %s",
        config.init_checkpoint,
        n,
        copied or "none",
        new or "none",
    )
    return model, model_config, provenance


class _StepLog:
    """``steps.csv``: one row per optimiser step, appended and flushed as it happens.

    Resuming at step ``S`` keeps the rows up to ``S`` (steps after the last checkpoint are
    run again) and appends; a fresh run starts a new file. The columns are fixed by the first
    row written (a torn last line of an interrupted run is dropped).
    """

    def __init__(self, path: Path, *, keep_until: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        self._fh: io.TextIOWrapper | None = None
        self._writer: csv.DictWriter[str] | None = None
        if keep_until is None:
            path.unlink(missing_ok=True)
            return
        if not path.is_file():
            return
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if _step_of(r) is not None]
        kept = [r for r in rows if (_step_of(r) or 0) <= keep_until]
        if not fields:
            path.unlink(missing_ok=True)
            return
        self.fields = fields
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(path, buf.getvalue())

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row and flush it to the file."""
        if self._fh is None:
            new_file = not self.path.is_file() or self.path.stat().st_size == 0
            if self.fields is None:
                self.fields = list(row)
            self._fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
            self._writer = csv.DictWriter(
                self._fh, fieldnames=self.fields, lineterminator="\n", extrasaction="ignore"
            )
            if new_file:
                self._writer.writeheader()
        assert self._writer is not None and self._fh is not None
        self._writer.writerow(dict(row))
        self._fh.flush()

    def close(self) -> None:
        """Close the file (rows are already flushed)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _step_of(row: Mapping[str, Any]) -> int | None:
    """The step of a ``steps.csv`` row, ``None`` for a torn or malformed one."""
    if None in row.values() or None in row:
        return None
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None


def _validate(
    model: nn.Module,
    dataset: ChipDataset,
    model_config: ModelConfig,
    *,
    device: torch.device,
    batch_size: int,
    calibrate: bool,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Validation metrics of ``model`` on ``dataset`` in one pass over the chips.

    Returns:
        ``(row, thresholds)``: ``row`` has COCO ``bbox_ap``, ``bbox_ap50``, ``segm_ap``,
        ``segm_ap50``; ``precision``, ``recall``, ``f1`` (all classes, IoU 0.5) and
        ``f1_<class>`` at the uncalibrated threshold :data:`geoseg.settings.DEFAULT_MIN_SCORE`;
        ``f1_tuned`` and ``f1_tuned_<class>`` at the calibrated thresholds, ``thr_<class>``
        those thresholds. ``thresholds`` maps the calibrated classes to their threshold
        (empty when ``calibrate`` is false).
    """
    classes = dataset.classes
    parts: list[dict[str, ScoreCurve]] = []

    def feed(chips: Iterator[ChipPrediction]) -> Iterator[ChipPrediction]:
        for chip in chips:
            parts.append(chip_curves(chip, classes))
            yield chip

    chips = predict_chips(
        model,
        dataset,
        device=device,
        batch_size=batch_size,
        mask_threshold=model_config.mask_threshold,
    )
    row: dict[str, Any] = dict(
        coco_scores(feed(chips), classes, max_dets=model_config.box_detections_per_img)
    )
    curves = merge_curves(parts)
    per, overall = scores_at(curves, {}, DEFAULT_MIN_SCORE)
    thresholds = choose_thresholds(curves) if calibrate else {}
    per_t, overall_t = scores_at(curves, thresholds, DEFAULT_MIN_SCORE)
    row.update(precision=overall.precision, recall=overall.recall, f1=overall.f1)
    row["f1_tuned"] = overall_t.f1
    for c in classes:
        row[f"f1_{c}"] = per[c].f1
    for c in classes:
        row[f"f1_tuned_{c}"] = per_t[c].f1
    for c, t in thresholds.items():
        row[f"thr_{c}"] = t
    return row, thresholds


def _better(value: float, best: float | None, *, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    if monitor == "train_loss":
        return value < best - min_delta
    return value > best + min_delta


def train(
    config: TrainConfig,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    resume: bool = True,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train (or fine-tune) a Mask R-CNN on chip folders.

    Every optimiser step appends a row to ``output_dir/steps.csv`` (step, epoch, loss and its
    parts, learning rate, training seconds) and flushes it. Each validation (every epoch, or
    every ``validate_every`` steps, and at the last step) adds a row to ``metrics.csv`` /
    ``metrics.json``: COCO mask and box AP, precision/recall/F1 at IoU 0.5 per class and
    overall, the per-class score thresholds that maximise F1 on the validation chips and the
    F1 they give (see :func:`_validate`). The best validation (``config.monitor``) is saved as
    ``best``; with ``patience``, the run stops after that many validations without
    improvement. Checkpoints written after a validation carry its calibrated thresholds in
    their sidecar (``score_thresholds``), so ``geoseg predict`` uses them; thresholds are
    chosen on validation chips (chip level), which ``geoseg calibrate`` can redo on a whole
    labelled scene. A fine-tune that does not calibrate (no validation chips, or
    ``calibrate`` off) keeps ``init_checkpoint``'s thresholds for the classes both share.

    Args:
        config: the run (see :class:`~geoseg.config.TrainConfig`).
        progress: called after each optimiser step, validation and checkpoint.
        resume: continue from ``output_dir/last_state.*`` when present (same optimiser,
            scheduler, step, data order, metric history and early-stopping count); ``False``
            starts afresh and overwrites (``steps.csv``, ``metrics.*`` and ``best.*`` too).
        stop_at_step: stop (after checkpointing) once this many steps are done, without
            changing the learning-rate schedule: for time-boxed runs and tests.

    Returns:
        The checkpoints written, the losses of this call, the metric history and the summary
        (:meth:`TrainResult.summary`).

    Raises:
        ConfigError: invalid settings, or an output folder holding a different run.
        LabelError, BandError: unusable chip folders.
        CheckpointError: an unreadable ``init_checkpoint`` or training state.
    """
    call_started = time.monotonic()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    out = config.output_dir
    train_dirs = expand_chip_folders(config.train_chips, what="train_chips")
    val_dirs = expand_chip_folders(config.val_chips, what="val_chips") if config.val_chips else []
    init = config.init_checkpoint
    check_no_overwrite(
        [
            ("init_checkpoint", checkpoint_paths(init)[0] if init is not None else None),
            *[("train_chips", d / ANNOTATIONS_FILE) for d in train_dirs],
            *[("val_chips", d / ANNOTATIONS_FILE) for d in val_dirs],
        ],
        [("output_dir", out / name) for name in RUN_FILES],
    )
    device = _resolve_device(config.device)

    if config.classes:
        classes = tuple(config.classes)
    elif config.init_checkpoint is None:
        classes = load_config(config.preset).classes
    else:
        classes = read_meta(config.init_checkpoint).classes
    torch.manual_seed(config.seed)
    train_ds = ChipDataset(train_dirs, classes=classes, augment=config.augment, seed=config.seed)
    val_ds = (
        ChipDataset(val_dirs, classes=classes, augment=None)
        if val_dirs and config.validate
        else None
    )
    _require_instances(train_ds, train_dirs)
    out.mkdir(parents=True, exist_ok=True)
    if val_ds is not None and val_ds.band_count != train_ds.band_count:
        raise BandError(
            f"validation chips have {val_ds.band_count} bands, training chips {train_ds.band_count}"
        )
    monitor = config.monitor if val_ds is not None else "train_loss"
    if monitor != config.monitor:
        logger.info("no validation chips: monitoring train_loss instead of %s", config.monitor)
    model, model_config, provenance = _build_for_training(config, classes, train_ds.band_count)
    inherited = _inherited_thresholds(
        config.init_checkpoint, classes, calibrating=val_ds is not None and config.calibrate
    )
    model.to(device)
    model.train()

    first = train_ds.folders[0]
    tile_size = int(first.info.get("tile_size") or first.images[0]["width"])
    gsd = first.info.get("gsd")
    trained_on = {
        **provenance,
        "train_chips": [str(p) for p in train_dirs],
        "val_chips": [str(p) for p in val_dirs],
        "n_train_chips": len(train_ds),
        "scenes": [f.info.get("scene") for f in train_ds.folders if f.info.get("scene")],
    }

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if config.optimizer is OptimizerKind.SGD:
        optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(
        len(
            _epoch_order(
                train_ds,
                seed=config.seed,
                epoch=0,
                class_balanced=config.class_balanced,
                skip_empty=config.skip_empty,
            )
        )
        / config.batch_size
    )
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / config.grad_accum))
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _make_schedule(config, total_steps))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    run_key: dict[str, Any] = {k: config_to_dict(getattr(config, k)) for k in _RESUME_KEYS}
    run_key["train_chips"] = [str(p) for p in train_dirs]
    step, epoch, batch_in_epoch = 0, 0, 0
    history: list[dict[str, Any]] = []
    resumed_from = 0
    # early stopping, best checkpoint and calibration (saved with the loop state)
    track: dict[str, Any] = {
        "best_value": None,
        "best_step": None,
        "best_epoch": None,
        "best_row": {},
        "best_thresholds": dict(inherited),
        "thresholds": dict(inherited),
        "bad_evals": 0,
        "stopped": "",
        "elapsed": 0.0,
        "window_sum": 0.0,
        "window_n": 0,
        "last_eval_step": 0,
    }
    state_file = out / "last_state.json"
    resuming = resume and state_file.is_file()
    if resuming:
        info, tensors = _load_state(out)
        if info["loop"].get("run_key") != json.loads(json.dumps(run_key)):
            raise ConfigError(
                f"{out} holds a different training run (settings differ); choose another "
                "output_dir or start afresh with --no-resume"
            )
        weights = read_safetensors(out / "last.safetensors")
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(_optimizer_state(info, tensors))
        scheduler.load_state_dict(info["scheduler"])
        if scaler is not None and info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        loop = info["loop"]
        step, epoch, batch_in_epoch = loop["step"], loop["epoch"], loop["batch_in_epoch"]
        history = list(loop.get("history", []))
        track.update({k: v for k, v in (loop.get("track") or {}).items() if k in track})
        if not loop.get("track") and history:  # a state written by an earlier geoseg
            track["last_eval_step"] = int(history[-1].get("step", 0))
            old_best = float(loop.get("best_score", -1.0))  # segm_ap, or -train_loss
            if monitor == "train_loss" and "segm_ap" not in history[-1]:
                track["best_value"] = -old_best
            elif monitor == "segm_ap" and old_best > -1.0:
                track["best_value"] = old_best
        if track["stopped"] and (not config.patience or track["bad_evals"] < config.patience):
            logger.info("patience raised to %d: continuing after early stop", config.patience)
            track["stopped"] = ""
        resumed_from = step
        logger.info("resuming %s at step %d (epoch %d)", out, step, epoch)
    else:
        for name in ("metrics.csv", "metrics.json", "best.safetensors", "best.json"):
            (out / name).unlink(missing_ok=True)
    step_log = _StepLog(out / "steps.csv", keep_until=step if resuming else None)
    elapsed_before = float(track["elapsed"])

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - call_started

    def meta(metrics: Mapping[str, Any], thresholds: Mapping[str, float]) -> ModelMeta:
        record = dict(metrics)
        if thresholds and not inherited and val_ds is not None:
            record["calibration"] = {
                "source": _FROM_VALIDATION,
                "n_chips": len(val_ds),
                "iou_threshold": 0.5,
                "floor": DEFAULT_FLOOR,
                "step": step,
            }
        elif thresholds and inherited:
            record["calibration"] = {
                "source": _FROM_PARENT,
                "checkpoint": str(config.init_checkpoint),
            }
        return ModelMeta(
            classes=classes,
            bands=tuple(first.info.get("bands") or first.norm_stats.bands),
            norm_stats=first.norm_stats,
            tile_size=tile_size,
            gsd=None if gsd is None else float(gsd),
            config=config_to_dict(model_config),
            trained_on=trained_on,
            metrics=record,
            score_thresholds=dict(thresholds),
            step=step,
        )

    def checkpoint() -> None:
        last_metrics = history[-1] if history else {}
        save_checkpoint(out / "last", model, meta(last_metrics, track["thresholds"]))
        track["elapsed"] = elapsed()
        _save_state(
            out,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            loop={
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "history": history,
                "track": track,
                "total_steps": total_steps,
                "run_key": run_key,
            },
        )
        if progress is not None:
            progress(TrainProgress(step, total_steps, epoch, phase="checkpoint"))

    def evaluate_now() -> None:
        """Validate (when there are validation chips), log a row, keep the best, early-stop."""
        n = int(track["window_n"])
        row: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(track["window_sum"]) / n if n else float("nan"),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": round(elapsed(), 1),
        }
        thresholds: dict[str, float] = dict(inherited)
        if val_ds is not None:
            metrics, thresholds = _validate(
                model,
                val_ds,
                model_config,
                device=device,
                batch_size=config.batch_size,
                calibrate=config.calibrate,
            )
            row.update(metrics)
            thresholds = thresholds or dict(inherited)
            track["thresholds"] = thresholds
            if progress is not None:
                progress(TrainProgress(step, total_steps, epoch, phase="validate", metrics=metrics))
        history.append(row)
        track["window_sum"], track["window_n"] = 0.0, 0
        track["last_eval_step"] = step
        value = float(row[monitor])
        if not math.isnan(value) and _better(
            value, track["best_value"], monitor=monitor, min_delta=config.min_delta
        ):
            track.update(
                best_value=value,
                best_step=step,
                best_epoch=epoch,
                best_row=row,
                best_thresholds=thresholds,
                bad_evals=0,
            )
            save_checkpoint(out / "best", model, meta(row, thresholds))
        else:
            track["bad_evals"] = int(track["bad_evals"]) + 1
            if config.patience and track["bad_evals"] >= config.patience:
                track["stopped"] = (
                    f"{monitor} did not improve for {track['bad_evals']} validation(s) after "
                    f"step {track['best_step']}; raise patience to continue"
                )
                logger.info("early stopping at step %d: %s", step, track["stopped"])
        _write_metrics(out, history)

    losses: list[float] = []
    stop = stop_at_step if stop_at_step is not None else total_steps
    stop = min(stop, total_steps)
    try:
        while step < stop and epoch < config.epochs and not track["stopped"]:
            train_ds.set_epoch(epoch)
            order = _epoch_order(
                train_ds,
                seed=config.seed,
                epoch=epoch,
                class_balanced=config.class_balanced,
                skip_empty=config.skip_empty,
            )
            batches = [
                order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
            ]
            optimizer.zero_grad(set_to_none=True)
            accum: dict[str, float] = {}
            n_accum = 0
            while batch_in_epoch < len(batches) and step < stop and not track["stopped"]:
                images, targets = _collate([train_ds[i] for i in batches[batch_in_epoch]])
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss_dict = model(images, targets)
                    loss = sum(loss_dict.values(), torch.zeros((), device=device))
                if not torch.isfinite(loss):
                    raise ConfigError(
                        f"the loss became {float(loss)} at step {step}; lower lr (now "
                        f"{config.lr}) or raise warmup_steps"
                    )
                scaled = loss / config.grad_accum
                if scaler is not None:
                    scaler.scale(scaled).backward()
                else:
                    scaled.backward()
                for k, v in loss_dict.items():
                    accum[k] = accum.get(k, 0.0) + float(v.detach()) / config.grad_accum
                n_accum += 1
                batch_in_epoch += 1
                if n_accum < config.grad_accum and batch_in_epoch < len(batches):
                    continue
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if config.clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                lr = float(optimizer.param_groups[0]["lr"])
                scheduler.step()
                step += 1
                total = sum(accum.values()) * config.grad_accum / n_accum
                losses.append(total)
                track["window_sum"] = float(track["window_sum"]) + total
                track["window_n"] = int(track["window_n"]) + 1
                step_log.write(
                    {
                        "step": step,
                        "epoch": epoch,
                        "loss": round(total, 6),
                        "lr": lr,
                        "seconds": round(elapsed(), 2),
                        **{k: round(v * config.grad_accum / n_accum, 6) for k, v in accum.items()},
                    }
                )
                if progress is not None:
                    progress(
                        TrainProgress(step, total_steps, epoch, total, lr, dict(accum), "train")
                    )
                accum, n_accum = {}, 0
                epoch_done = batch_in_epoch >= len(batches)
                due = step % config.validate_every == 0 if config.validate_every else epoch_done
                if due:
                    evaluate_now()
                if step % config.checkpoint_every == 0 and not epoch_done:
                    checkpoint()
            if batch_in_epoch >= len(batches):
                epoch += 1
                batch_in_epoch = 0
            checkpoint()
        finished = step >= total_steps or epoch >= config.epochs
        if finished and step > 0 and track["last_eval_step"] != step and not track["stopped"]:
            evaluate_now()  # the last step is always validated
            checkpoint()
    finally:
        step_log.close()
    best = out / "best.safetensors"
    return TrainResult(
        output_dir=out,
        last_checkpoint=out / "last.safetensors",
        best_checkpoint=best if best.is_file() else None,
        steps=step,
        resumed_from_step=resumed_from,
        losses=tuple(losses),
        history=tuple(history),
        total_steps=total_steps,
        seconds=time.monotonic() - call_started,
        elapsed=elapsed(),
        classes=classes,
        monitor=monitor,
        best_value=track["best_value"],
        best_step=track["best_step"],
        best_epoch=track["best_epoch"],
        best_row=dict(track["best_row"]),
        score_thresholds=dict(track["best_thresholds"]),
        thresholds_from=(
            "" if not track["best_thresholds"] else _FROM_PARENT if inherited else _FROM_VALIDATION
        ),
        stopped_early=bool(track["stopped"]),
        stop_reason=str(track["stopped"]),
        n_val_chips=0 if val_ds is None else len(val_ds),
        metrics_file=out / "metrics.csv" if history else None,
        steps_file=out / "steps.csv" if (out / "steps.csv").is_file() else None,
    )


def _write_metrics(out: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """``metrics.csv`` and ``metrics.json`` (key ``epochs``: the rows), rewritten atomically."""
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(dict(row))
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    atomic_write_text(
        out / "metrics.json",
        json.dumps({"epochs": list(history)}, indent=1, default=_json_default) + "\n",
    )


def iter_chip_folders(root: str | Path) -> Iterator[Path]:
    """Chip folders (holding ``annotations.json``) at or below ``root``, sorted."""
    root = Path(root)
    if (root / ANNOTATIONS_FILE).is_file():
        yield root
        return
    for p in sorted(root.rglob(ANNOTATIONS_FILE)):
        yield p.parent
