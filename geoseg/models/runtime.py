"""Inference engines for a torchvision Mask R-CNN: PyTorch (the reference) or ONNX Runtime.

:class:`~geoseg.predict.MaskRCNNPredictor` runs the model stage by stage (see
:func:`detect`) so that each stage can be run by either engine and so that work nobody will
keep is skipped:

1. **dense part** (:meth:`Engine.dense`): backbone + FPN + the RPN head's convolutions, on a
   batch ``[B, C, H, W]`` of normalised, upsampled model-input images (model pixels);
2. proposals (PyTorch always: anchors, box decoding, per-level top-n, NMS), at most
   ``max_proposals`` per image;
3. **box head** (:meth:`Engine.box_head`) on RoI-aligned ``[K, F, 7, 7]`` features, then
   torchvision's per-class box decoding and NMS;
4. detections below their class's score threshold are dropped **before** the mask head
   (the pipeline would drop them afterwards anyway);
5. **mask head** (:meth:`Engine.mask_head`) on ``[K, F, M, M]`` features (M = 14), giving
   ``[K, classes + 1, 2M, 2M]`` mask logits.

The ONNX engine exports the three convolutional parts (dense, box head, mask head) with
``torch.onnx.export`` when the predictor is built (a few seconds; the graphs are cached on disk
by :mod:`geoseg.models.onnx_cache`, so a second load of the same weights skips the export) and
runs them with ONNX Runtime's CPU provider (``onnxruntime``, the ``ml`` extra);
everything else stays in PyTorch, so both engines share the same proposal, NMS and
post-processing code. An optional empty-tile pre-screen (``prescreen``) skips stages 3-5 for
a tile whose best RPN objectness is below a threshold.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from geoseg.errors import ConfigError
from geoseg.predict import Backend, resolve_backend

if TYPE_CHECKING:
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import RegionProposalNetwork
    from torchvision.ops import MultiScaleRoIAlign

__all__ = [
    "Engine",
    "OnnxEngine",
    "TorchEngine",
    "detect",
    "filter_proposals",
    "make_engine",
    "roi_pool",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_THREADS = 0
_EXECUTOR_LOCK = threading.Lock()


def _map(fn: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (shared pool, order kept).

    For torch CPU kernels that run on one thread (torchvision's ``roi_align`` and ``nms``):
    they release the GIL, so Python threads run them side by side.
    """
    global _EXECUTOR, _EXECUTOR_THREADS
    if threads < 2 or len(items) < 2:
        return [fn(x) for x in items]
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or threads > _EXECUTOR_THREADS:
            if _EXECUTOR is not None:
                _EXECUTOR.shutdown(wait=False)
            _EXECUTOR = ThreadPoolExecutor(threads, thread_name_prefix="geoseg-roi")
            _EXECUTOR_THREADS = threads
        ex = _EXECUTOR
    return list(ex.map(fn, items))


def roi_pool(
    pooler: MultiScaleRoIAlign,
    features: dict[str, Tensor],
    boxes: list[Tensor],
    image_sizes: list[tuple[int, int]],
    *,
    threads: int = 1,
) -> Tensor:
    """``pooler(features, boxes, image_sizes)``, the RoIs split over ``threads`` CPU threads.

    torchvision's CPU ``roi_align`` runs on one thread; each RoI's output depends on that RoI
    alone, so splitting the RoIs of each pyramid level into chunks gives the same values.

    Args:
        pooler: the model's ``MultiScaleRoIAlign`` (box or mask RoI pool).
        features: feature maps by name, ``[B, F, H_l, W_l]`` (model pixels / stride).
        boxes: per image, ``[N_i, 4]`` boxes in model-input pixels (x1, y1, x2, y2).
        image_sizes: per image, ``(height, width)`` in model-input pixels.
        threads: CPU threads (1, a CUDA device or few RoIs: the pooler itself).

    Returns:
        float ``[sum N_i, F, S, S]`` pooled features, images in order.
    """
    from torchvision.ops import poolers as tvp
    from torchvision.ops import roi_align

    n = sum(int(b.shape[0]) for b in boxes)
    first = next(iter(features.values()))
    if threads < 2 or n < 32 or first.device.type != "cpu":
        out: Tensor = pooler(features, boxes, image_sizes)
        return out
    x = tvp._filter_input(features, pooler.featmap_names)
    if pooler.scales is None or pooler.map_levels is None:
        pooler.scales, pooler.map_levels = tvp._setup_scales(
            x, image_sizes, pooler.canonical_scale, pooler.canonical_level
        )
    scales = pooler.scales
    rois = tvp._convert_to_roi_format(boxes)
    levels = torch.zeros(n, dtype=torch.int64) if len(x) == 1 else pooler.map_levels(boxes)
    size = tuple(pooler.output_size)
    result = torch.zeros((n, int(x[0].shape[1]), *size), dtype=x[0].dtype)
    chunk = math.ceil(n / threads)
    tasks = []
    for level, (feature, scale) in enumerate(zip(x, scales, strict=True)):
        idx = torch.where(levels == level)[0]
        tasks += [(feature, scale, part) for part in idx.split(chunk) if part.numel()]

    def run(task: tuple[Tensor, float, Tensor]) -> tuple[Tensor, Tensor]:
        feature, scale, part = task
        pooled = roi_align(
            feature,
            rois[part],
            output_size=size,
            spatial_scale=scale,
            sampling_ratio=pooler.sampling_ratio,
        )
        return part, pooled

    for part, pooled in _map(run, tasks, threads):
        result[part] = pooled.to(result.dtype)
    return result


def _nms_per_level(
    boxes: Tensor, scores: Tensor, levels: Tensor, iou: float
) -> list[tuple[Tensor, Tensor, Tensor, float]]:
    """The per-level NMS jobs of :func:`torchvision.ops.batched_nms` (its CPU ``vanilla`` path)."""
    return [
        (idx, boxes[idx], scores[idx], iou)
        for idx in (torch.where(levels == lv)[0] for lv in torch.unique(levels))
    ]


def filter_proposals(
    rpn: RegionProposalNetwork,
    proposals: Tensor,
    objectness: Tensor,
    image_shapes: list[tuple[int, int]],
    num_anchors_per_level: list[int],
    *,
    threads: int = 1,
) -> tuple[list[Tensor], list[Tensor]]:
    """``rpn.filter_proposals`` with the per-level NMS of all images run on ``threads`` threads.

    Same steps and results as torchvision's (per-level top-n, clip, small and low-score boxes
    dropped, NMS per level, post-NMS top-n); only the NMS calls, each on one thread in
    torchvision, run side by side.

    Args:
        rpn: the model's RPN (its ``pre/post_nms_top_n``, ``nms_thresh``, ``score_thresh``,
            ``min_size`` apply).
        proposals: float ``[B, A, 4]`` decoded boxes, model-input pixels.
        objectness: ``[B * A, 1]`` or ``[B, A]`` objectness logits.
        image_shapes: per image ``(height, width)``.
        num_anchors_per_level: anchors per image in each pyramid level.
        threads: CPU threads for the NMS calls (1 or a CUDA device: torchvision's own).

    Returns:
        Per image, ``[N, 4]`` boxes and ``[N]`` objectness probabilities, best first.
    """
    from torchvision.ops import boxes as box_ops

    if threads < 2 or proposals.device.type != "cpu":
        out: tuple[list[Tensor], list[Tensor]] = rpn.filter_proposals(
            proposals, objectness, image_shapes, num_anchors_per_level
        )
        return out
    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat(
        [torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(num_anchors_per_level)]
    )
    levels = levels.reshape(1, -1).expand_as(objectness)
    top_n_idx = rpn._get_top_n_idx(objectness, num_anchors_per_level)
    batch_idx = torch.arange(num_images)[:, None]
    objectness = objectness[batch_idx, top_n_idx]
    levels = levels[batch_idx, top_n_idx]
    proposals = proposals[batch_idx, top_n_idx]
    prob = torch.sigmoid(objectness)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []
    jobs: list[tuple[int, tuple[Tensor, Tensor, Tensor, float]]] = []
    for i, (boxes, scores, lvl, shape) in enumerate(
        zip(proposals, prob, levels, image_shapes, strict=True)
    ):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        kept.append((boxes, scores, lvl))
        if boxes.numel() > 4000:  # torchvision's CPU switch to one NMS per level
            jobs += [(i, job) for job in _nms_per_level(boxes, scores, lvl, rpn.nms_thresh)]

    def run(item: tuple[int, tuple[Tensor, Tensor, Tensor, float]]) -> tuple[int, Tensor]:
        i, (idx, b, s, iou) = item
        return i, idx[box_ops.nms(b, s, iou)]

    masks = [torch.zeros_like(s, dtype=torch.bool) for _, s, _ in kept]
    for i, keep_idx in _map(run, jobs, threads):
        masks[i][keep_idx] = True
    final_boxes, final_scores = [], []
    for i, (boxes, scores, lvl) in enumerate(kept):
        if boxes.numel() > 4000:
            keep = torch.where(masks[i])[0]
            keep = keep[scores[keep].sort(descending=True)[1]]
        else:
            keep = box_ops.batched_nms(boxes, scores, lvl, rpn.nms_thresh)
        keep = keep[: rpn.post_nms_top_n()]
        final_boxes.append(boxes[keep])
        final_scores.append(scores[keep])
    return final_boxes, final_scores


class _Dense(nn.Module):
    """Backbone + FPN + RPN head convolutions as one tensor-in, tensors-out module.

    Input ``[B, C, H, W]`` model-input pixels; output: the L feature maps ``[B, F, H_l, W_l]``
    (finest first), then L objectness maps ``[B, A, H_l, W_l]``, then L box-delta maps
    ``[B, 4A, H_l, W_l]``.
    """

    def __init__(self, model: MaskRCNN) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        features = self.backbone(x)
        if isinstance(features, Tensor):
            features = {"0": features}
        maps = list(features.values())
        logits, deltas = self.rpn_head(maps)
        return (*maps, *logits, *deltas)


class _Head(nn.Module):
    """A RoI head and its predictor chained: ``[K, F, S, S]`` pooled features in."""

    def __init__(self, head: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.predictor = predictor

    def forward(self, x: Tensor) -> Any:
        return self.predictor(self.head(x))


class Engine:
    """Runs the three convolutional parts of a Mask R-CNN (PyTorch reference implementation).

    Attributes:
        names: the backbone's feature map names (``"0"``, ``"1"``... ``"pool"``; the ONNX
            engine only, which needs them to name its outputs).
    """

    backend = Backend.TORCH

    def __init__(self, model: MaskRCNN, *, channels_last: bool = True) -> None:
        self.model = model
        self.channels_last = channels_last
        self._dense = _Dense(model).eval()
        rh = model.roi_heads
        self._box = _Head(rh.box_head, rh.box_predictor).eval()
        self._mask = _Head(rh.mask_head, rh.mask_predictor).eval()
        self.names: tuple[str, ...] = ()

    def dense(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """``(features by name, objectness per level, box deltas per level)`` for ``x``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.model.backbone(x)
        if isinstance(features, Tensor):
            features = {"0": features}
        logits, deltas = self.model.rpn.head(list(features.values()))
        return features, logits, deltas

    def _split(self, out: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        n = len(self.names)
        return dict(zip(self.names, out[:n], strict=True)), out[n : 2 * n], out[2 * n : 3 * n]

    def box_head(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits ``[K, classes + 1]`` and box deltas ``[K, 4 (classes + 1)]``."""
        cls, reg = self._box(pooled)
        return cls, reg

    def mask_head(self, pooled: Tensor) -> Tensor:
        """Mask logits ``[K, classes + 1, 2M, 2M]`` for ``[K, F, M, M]`` pooled features."""
        out: Tensor = self._mask(pooled)
        return out


class TorchEngine(Engine):
    """The PyTorch engine (the reference); ``channels_last`` memory format for the convs."""


class OnnxEngine(Engine):
    """ONNX Runtime (CPU provider) for the dense part and both RoI heads.

    Exported when built (or read from the disk cache, :mod:`geoseg.models.onnx_cache`); input
    sizes and RoI counts are dynamic.
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``), spinning off so that
    idle ORT threads do not take cores from PyTorch's stages in between.
    """

    backend = Backend.ONNX

    def __init__(self, model: MaskRCNN, *, threads: int | None = None) -> None:
        super().__init__(model, channels_last=False)
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(
                "the onnx backend needs onnxruntime: pip install 'geoseg[ml]' (or onnxruntime)"
            ) from err
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        c = _in_channels(model)
        feat = int(model.backbone.out_channels)
        box_size = _roi_size(model.roi_heads.box_roi_pool)
        mask_size = _roi_size(model.roi_heads.mask_roi_pool)
        with torch.inference_mode():
            probe = torch.zeros(1, c, 64, 64, device=_device(model))
            out = model.backbone(probe)
        self.names = ("0",) if isinstance(out, Tensor) else tuple(out.keys())
        n = len(self.names)
        dense_out = [f"f{i}" for i in range(n)] + [f"o{i}" for i in range(n)]
        dense_out += [f"d{i}" for i in range(n)]
        self._sess_dense = _session(
            ort,
            opts,
            self._dense,
            torch.zeros(1, c, 128, 128),
            dense_out,
            {"x": {0: "batch", 2: "height", 3: "width"}},
        )
        self._sess_box = _session(
            ort,
            opts,
            self._box,
            torch.zeros(2, feat, box_size, box_size),
            ["cls", "reg"],
            {"x": {0: "rois"}},
        )
        self._sess_mask = _session(
            ort,
            opts,
            self._mask,
            torch.zeros(2, feat, mask_size, mask_size),
            ["mask"],
            {"x": {0: "rois"}},
        )

    def dense(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        """See :meth:`Engine.dense` (float32 on the CPU)."""
        out = self._sess_dense.run(None, {"x": x.float().contiguous().numpy()})
        return self._split([torch.from_numpy(a) for a in out])

    def box_head(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """See :meth:`Engine.box_head`."""
        if pooled.shape[0] == 0:
            return super().box_head(pooled)
        cls, reg = self._sess_box.run(None, {"x": pooled.contiguous().numpy()})
        return torch.from_numpy(cls), torch.from_numpy(reg)

    def mask_head(self, pooled: Tensor) -> Tensor:
        """See :meth:`Engine.mask_head`."""
        if pooled.shape[0] == 0:
            return super().mask_head(pooled)
        (out,) = self._sess_mask.run(None, {"x": pooled.contiguous().numpy()})
        return torch.from_numpy(out)


def _in_channels(model: MaskRCNN) -> int:
    return len(model.transform.image_mean)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _roi_size(pool: Any) -> int:
    size = pool.output_size
    return int(size[0] if isinstance(size, tuple | list) else size)


#: Version of the ONNX export done by :func:`_session` (the wrapper modules, input and output
#: names, exporter options): part of the export cache's key (:mod:`geoseg.models.onnx_cache`),
#: so bump it whenever the export changes in a way the key does not see.
ONNX_EXPORT_VERSION = 1
#: ONNX opset of the export.
ONNX_OPSET = 17


def _session(
    ort: Any,
    opts: Any,
    module: nn.Module,
    example: Tensor,
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> Any:
    """An ORT session on ``module`` (CPU, float32) exported to ONNX.

    The graph comes from the export cache when it holds one for these weights and this export
    (:func:`geoseg.models.onnx_cache.cached_graph`), else it is exported in memory and cached.
    """
    import warnings

    from geoseg.models.onnx_cache import cached_graph

    dynamic = {**dynamic, **{name: {0: "n"} for name in outputs}}

    def export() -> bytes:
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buf,  # type: ignore[arg-type]  # a file object works with the TorchScript exporter
                input_names=["x"],
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
        return buf.getvalue()

    def load(graph: bytes) -> Any:
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])

    return cached_graph(
        module,
        example,
        export=export,
        load=load,
        opset=ONNX_OPSET,
        version=ONNX_EXPORT_VERSION,
        extra={"inputs": ["x"], "outputs": outputs, "dynamic": dynamic},
        label=f"{type(module).__name__} ({outputs[0]}..{outputs[-1]})",
    )


def make_engine(
    model: MaskRCNN, backend: Backend | str, *, device: torch.device, channels_last: bool
) -> Engine:
    """The engine for ``backend`` (``onnx`` runs on the CPU only).

    ``auto`` is resolved by :func:`geoseg.predict.resolve_backend`.

    Raises:
        ConfigError: an unknown backend, or ``onnx`` with a non-CPU device.
    """
    kind = resolve_backend(backend, device)
    if kind is Backend.ONNX:
        if device.type != "cpu":
            raise ConfigError(
                f"the onnx backend runs on the CPU only, not {device}; use --backend torch"
            )
        return OnnxEngine(model)
    return TorchEngine(model, channels_last=channels_last)


def detect(
    model: MaskRCNN,
    engine: Engine,
    images: ImageList,
    *,
    max_proposals: int | None,
    class_min_scores: Tensor | None,
    prescreen: float | None,
    parallel: bool = True,
) -> list[dict[str, Tensor]]:
    """Mask R-CNN inference on a batch, stage by stage (see the module docstring).

    Args:
        model: the torchvision Mask R-CNN (eval mode) whose RPN and RoI heads' settings apply.
        engine: runs the convolutional parts.
        images: the transformed batch (model-input pixels, normalised, padded).
        max_proposals: at most this many RPN proposals kept per image after NMS (``None``:
            the model's own ``rpn_post_nms_top_n_test``); the per-level pre-NMS top-n is then
            capped at twice the post-NMS number.
        class_min_scores: float ``[classes + 1]`` score below which a detection of that label is
            dropped before the mask head (index 0, the background, unused); ``None``: keep all
            that pass the model's own ``score_thresh``.
        prescreen: skip the RoI heads of an image whose best RPN objectness probability is
            below this (``None``: never).
        parallel: on the CPU, run the RPN's per-level NMS and the RoI pooling (single-threaded
            kernels in torchvision) on ``torch.get_num_threads()`` threads (same results).

    Returns:
        Per image: ``boxes`` float ``[N, 4]`` (model pixels), ``scores`` ``[N]``, ``labels``
        int64 ``[N]`` (1-based), ``masks`` float ``[N, 1, 2M, 2M]`` probabilities of the label.
    """
    from torchvision.models.detection.roi_heads import maskrcnn_inference
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    rpn = model.rpn
    rh = model.roi_heads
    features, objectness, deltas = engine.dense(images.tensors)
    anchors = rpn.anchor_generator(images, list(features.values()))
    n_img = len(anchors)
    per_level = [int(o[0].numel()) for o in objectness]
    obj, reg = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(reg, anchors).view(n_img, -1, 4)
    saved = dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n)
    if max_proposals is not None:
        post = min(saved[1]["testing"], int(max_proposals))
        rpn._post_nms_top_n["testing"] = post
        rpn._pre_nms_top_n["testing"] = min(saved[0]["testing"], 2 * post)
    threads = torch.get_num_threads() if parallel else 1
    try:
        boxes, scores = filter_proposals(
            rpn, proposals, obj, images.image_sizes, per_level, threads=threads
        )
    finally:
        rpn._pre_nms_top_n, rpn._post_nms_top_n = saved
    empty = [
        prescreen is not None and (s.numel() == 0 or float(s.max()) < prescreen) for s in scores
    ]
    results: list[dict[str, Tensor]] = [_no_detections(features) for _ in range(n_img)]
    todo = [i for i in range(n_img) if not empty[i]]
    if not todo:
        return results
    feats = features if len(todo) == n_img else {k: v[todo] for k, v in features.items()}
    sizes = [images.image_sizes[i] for i in todo]
    props = [boxes[i] for i in todo]
    pooled = roi_pool(rh.box_roi_pool, feats, props, sizes, threads=threads)
    cls, box_reg = engine.box_head(pooled)
    det_boxes, det_scores, det_labels = rh.postprocess_detections(cls, box_reg, props, sizes)
    if class_min_scores is not None:
        for j in range(len(todo)):
            # labels beyond the table (a class-count mismatch) are kept for the caller to report
            idx = det_labels[j].clamp(max=len(class_min_scores) - 1)
            keep = (det_scores[j] >= class_min_scores[idx]) | (
                det_labels[j] >= len(class_min_scores)
            )
            det_boxes[j], det_scores[j], det_labels[j] = (
                det_boxes[j][keep],
                det_scores[j][keep],
                det_labels[j][keep],
            )
    if sum(int(b.shape[0]) for b in det_boxes):
        pooled = roi_pool(rh.mask_roi_pool, feats, det_boxes, sizes, threads=threads)
        mask_logits = engine.mask_head(pooled)
        probs = maskrcnn_inference(mask_logits, det_labels)
    else:
        probs = [_no_masks(features) for _ in det_boxes]
    for j, i in enumerate(todo):
        results[i] = {
            "boxes": det_boxes[j],
            "scores": det_scores[j],
            "labels": det_labels[j],
            "masks": probs[j],
        }
    return results


def _no_masks(features: dict[str, Tensor]) -> Tensor:
    device = next(iter(features.values())).device
    return torch.zeros((0, 1, 28, 28), device=device)


def _no_detections(features: dict[str, Tensor]) -> dict[str, Tensor]:
    device = next(iter(features.values())).device
    return {
        "boxes": torch.zeros((0, 4), device=device),
        "scores": torch.zeros((0,), device=device),
        "labels": torch.zeros((0,), dtype=torch.int64, device=device),
        "masks": _no_masks(features),
    }
