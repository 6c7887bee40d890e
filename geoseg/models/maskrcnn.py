r"""Small-object Mask R-CNN: :func:`build_model`, pretrained weights (``ml`` extra).

The model is torchvision's :class:`~torchvision.models.detection.MaskRCNN` with an FPN whose
finest level has stride 4 (so 8 px anchors make sense) over one of the
:class:`~geoseg.config.Backbone`\ s (:mod:`geoseg.models.backbones`), and an RPN that matches
anchors sparsely (:mod:`geoseg.models.matching`). Unlike torchvision's defaults it never resizes
its input to 800 px: a chip (or tile) is used at its native size, scaled by exactly
``ModelConfig.upsample``.

Input: a list of float32 tensors ``[C, H, W]`` in [0, 1] (tile pixels; normalised with the
scene-wide :class:`~geoseg.types.NormStats`). Labels are torchvision's: 1-based, 0 is the
background; ``ModelMeta.classes[label - 1]`` names them. Checkpoints (safetensors + JSON
sidecar) are read and written by :mod:`geoseg.checkpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from geoseg.checkpoint import load_state_dict_file
from geoseg.config import Backbone, ModelConfig, PretrainedWeights
from geoseg.errors import CheckpointError, ConfigError
from geoseg.models.backbones import adapt_first_conv, build_backbone, image_stats
from geoseg.models.matching import _SparseMatchRPN

if TYPE_CHECKING:
    from torchvision.models.detection import MaskRCNN

__all__ = ["build_model", "count_parameters", "load_matching"]

logger = logging.getLogger(__name__)


class _FixedScaleTransform(GeneralizedRCNNTransform):
    """torchvision's ``GeneralizedRCNNTransform`` scaling by a fixed factor instead of resizing.

    torchvision resizes every image so its short side is ``min_size`` (800 by default), which
    blows a 512 px tile up to 800 px and makes a model behave differently on chips and tiles
    of other sizes. Here images are normalised with ``image_mean``/``image_std`` and scaled
    by exactly ``scale`` (1.0: untouched); boxes and masks of training targets follow.
    """

    def __init__(
        self,
        *,
        scale: float,
        min_size: int,
        max_size: int,
        image_mean: list[float],
        image_std: list[float],
    ) -> None:
        super().__init__(min_size, max_size, image_mean, image_std)
        self.scale = float(scale)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Scale ``image`` ``[C, H, W]`` (and ``target`` boxes/masks) by ``self.scale``."""
        if self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        new_h = max(1, round(h * self.scale))
        new_w = max(1, round(w * self.scale))
        image = nn.functional.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", align_corners=False
        )[0]
        if target is None:
            return image, target
        target = dict(target)
        boxes = target["boxes"].clone()
        boxes[:, 0::2] *= new_w / w
        boxes[:, 1::2] *= new_h / h
        target["boxes"] = boxes
        if "masks" in target and target["masks"].numel():
            k = round(self.scale)
            if k == self.scale and (new_h, new_w) == (h * k, w * k):
                # integer scale: nearest-neighbour is a repeat; no float copy of N full masks
                masks = target["masks"].repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
                target["masks"] = masks.to(torch.uint8)
            else:
                scaled = nn.functional.interpolate(
                    target["masks"][:, None].float(), size=(new_h, new_w), mode="nearest"
                )
                target["masks"] = scaled[:, 0].to(torch.uint8)
        return image, target


def build_model(
    config: ModelConfig,
    *,
    num_classes: int,
    in_channels: int = 3,
    pretrained: PretrainedWeights | str | Path | None = None,
) -> MaskRCNN:
    """Build a small-object Mask R-CNN.

    Args:
        config: architecture and thresholds (a preset's ``model`` section).
        num_classes: number of object classes, **without** the background (the torchvision
            model gets ``num_classes + 1`` outputs; label ``k`` is ``classes[k - 1]``).
        in_channels: input bands C; extra bands get first-layer filters from the mean of the
            pretrained RGB ones (see :func:`adapt_first_conv`).
        pretrained: ``None``/``"none"`` (random init, never downloads), ``"imagenet"``
            (backbone), ``"coco"`` (resnet50 only: torchvision's COCO Mask R-CNN, every layer
            whose shape fits), or a path to a ``.safetensors``/``.pth`` state dict (a geoseg or
            torchvision detection model, or a bare backbone), loaded where shapes fit.

    Returns:
        A ``torchvision.models.detection.MaskRCNN`` in training mode, on the CPU.

    Raises:
        ConfigError: invalid arguments (e.g. COCO weights for a non-resnet50 backbone).
        CheckpointError: weights that cannot be obtained or read.
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    weights_file: Path | None = None
    if pretrained is None:
        kind = PretrainedWeights.NONE
    elif isinstance(pretrained, Path):
        kind, weights_file = PretrainedWeights.NONE, pretrained
    else:
        try:
            kind = PretrainedWeights(str(pretrained))
        except ValueError:
            kind, weights_file = PretrainedWeights.NONE, Path(str(pretrained))
    if kind is PretrainedWeights.COCO and config.backbone is not Backbone.RESNET50:
        raise ConfigError(
            f"COCO weights exist only for the resnet50 backbone, not {config.backbone}; "
            "use pretrained='imagenet'"
        )
    imagenet = kind is PretrainedWeights.IMAGENET
    backbone = build_backbone(config, in_channels=in_channels, imagenet=imagenet)

    ch = config.fpn_out_channels
    n_levels = len(config.anchor_sizes)
    anchors = AnchorGenerator(
        sizes=tuple(tuple(level) for level in config.anchor_sizes),
        aspect_ratios=(tuple(config.aspect_ratios),) * n_levels,
    )
    feature_names = ["0", "1", "2", "3"]
    mask_ch = config.mask_head_channels
    mean, std = image_stats(in_channels)
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=mean,
        image_std=std,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(ch, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_nms_thresh=config.rpn_nms_thresh,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign(feature_names, 7, 2),
        box_head=TwoMLPHead(ch * 7 * 7, config.box_head_size),
        box_predictor=FastRCNNPredictor(config.box_head_size, num_classes + 1),
        box_score_thresh=config.box_score_thresh,
        box_nms_thresh=config.box_nms_thresh,
        box_detections_per_img=config.box_detections_per_img,
        box_batch_size_per_image=config.box_batch_size_per_image,
        mask_roi_pool=MultiScaleRoIAlign(feature_names, config.mask_roi_size, 2),
        mask_head=MaskRCNNHeads(ch, (mask_ch,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_ch, mask_ch, num_classes + 1),
    )
    stock = model.rpn
    model.rpn = _SparseMatchRPN(
        stock.anchor_generator,
        stock.head,
        fg_iou_thresh=stock.proposal_matcher.high_threshold,
        bg_iou_thresh=stock.proposal_matcher.low_threshold,
        batch_size_per_image=stock.fg_bg_sampler.batch_size_per_image,
        positive_fraction=stock.fg_bg_sampler.positive_fraction,
        pre_nms_top_n=stock._pre_nms_top_n,
        post_nms_top_n=stock._post_nms_top_n,
        nms_thresh=stock.nms_thresh,
        score_thresh=stock.score_thresh,
    )
    model.transform = _FixedScaleTransform(
        scale=config.upsample,
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=mean,
        image_std=std,
    )
    if kind is PretrainedWeights.COCO:
        _load_coco(model, in_channels)
    if weights_file is not None:
        state = load_state_dict_file(weights_file)
        n = load_matching(model, state, in_channels=in_channels)
        logger.info("initialised %d tensors from %s", n, weights_file)
    result: MaskRCNN = model
    return result


def _load_coco(model: nn.Module, in_channels: int) -> None:
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    try:
        state = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=False)
    except Exception as err:  # download failures come as many types
        raise CheckpointError(
            f"could not get torchvision's COCO Mask R-CNN weights ({err}); they need internet "
            "once. Download them elsewhere and pass the file path as pretrained"
        ) from err
    n = load_matching(model, state, in_channels=in_channels)
    logger.info("initialised %d tensors from torchvision's COCO Mask R-CNN", n)


def load_matching(model: nn.Module, state: Mapping[str, Tensor], *, in_channels: int) -> int:
    """Copy every tensor of ``state`` whose name and shape fit ``model``; return how many.

    A bare backbone state dict (``conv1.weight``, ``layer1...`` or timm's ``conv_stem...``)
    is recognised and put under ``backbone.body.``. A first convolution with a different input
    channel count is adapted with :func:`adapt_first_conv`. Everything else that does not fit
    (heads for other classes or anchors) keeps its fresh initialisation.
    """
    own = model.state_dict()
    best_prefix, best_hits = "", -1
    for prefix in ("", "backbone.body."):
        hits = sum(1 for k in state if prefix + k in own)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits
    if best_hits <= 0:
        raise CheckpointError(
            "the weights file shares no tensor names with the model; is it for another "
            "architecture (backbone)?"
        )
    update: dict[str, Tensor] = {}
    for key, tensor in state.items():
        name = best_prefix + key
        target = own.get(name)
        if target is None:
            continue
        if tensor.shape != target.shape and (
            tensor.ndim == 4
            and target.ndim == 4
            and tensor.shape[0] == target.shape[0]
            and tensor.shape[2:] == target.shape[2:]
            and target.shape[1] == in_channels
            and tensor.shape[1] == 3
        ):
            tensor = adapt_first_conv(tensor, in_channels)
        if tensor.shape == target.shape:
            update[name] = tensor.to(target.dtype)
    model.load_state_dict(update, strict=False)
    skipped = len(own) - len(update)
    logger.debug("loaded %d tensors, %d kept their initialisation", len(update), skipped)
    return len(update)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())
