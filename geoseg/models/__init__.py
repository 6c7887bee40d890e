"""The Mask R-CNN and its parts; everything here needs the ``ml`` extra (torch, torchvision, timm).

* :mod:`geoseg.models.maskrcnn`: :func:`build_model` (small-object Mask R-CNN, input a list of
  float32 ``[C, H, W]`` tensors in [0, 1]), :func:`load_matching` (copy weights where names and
  shapes fit), :func:`count_parameters`.
* :mod:`geoseg.models.backbones`: :func:`build_backbone` (ResNet / EfficientNet-Lite0 + FPN,
  strides 4-64), :func:`adapt_first_conv` (RGB filters to any band count).
* :mod:`geoseg.models.matching`: :func:`sparse_match` / :func:`overlapping_pairs` (RPN anchor
  matching without the dense boxes x anchors IoU matrix).

Checkpoints (weights + JSON sidecar) are in :mod:`geoseg.checkpoint`, whose sidecar half needs
no torch.
"""

from __future__ import annotations

from geoseg._extras import extra_error

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError as _err:  # pragma: no cover - depends on the install
    raise extra_error("ml", "geoseg.models") from _err

from geoseg.models.backbones import adapt_first_conv, build_backbone
from geoseg.models.maskrcnn import build_model, count_parameters, load_matching
from geoseg.models.matching import overlapping_pairs, sparse_match

__all__ = [
    "adapt_first_conv",
    "build_backbone",
    "build_model",
    "count_parameters",
    "load_matching",
    "overlapping_pairs",
    "sparse_match",
]
