"""Per-tile inference: the :class:`Predictor` protocol and the Mask R-CNN implementation.

A predictor turns a batch of :class:`~geoseg.types.Tile` into one
:class:`~geoseg.types.TileDetections` per tile, in the same order. Everything downstream
(:mod:`geoseg.stitch`, :mod:`geoseg.vectorize`, :mod:`geoseg.export`) only sees
``TileDetections``, so any model can plug in.

Adapting another framework
--------------------------
Subclass :class:`PredictorBase`, set ``classes`` (the class names; labels index into it) and
write a ``predict_tiles(tiles)`` method, then pass an instance to
:func:`geoseg.pipeline.run_scene`. :class:`Predictor` is a structural :class:`typing.Protocol`:
a class that declares every attribute itself needs no base class. Declare ``bands``,
``tile_size``, ``gsd``, ``score_thresholds`` and ``norm_stats`` when the model knows them; the
pipeline's settings follow them (see :func:`geoseg.settings.resolve`). For each tile the method
must return a ``TileDetections`` with:

* ``boxes``: float32 ``[N, 4]`` ``(x1, y1, x2, y2)`` in **tile pixels**, the pixels of
  ``tile.image`` (pixel-edge coordinates, origin at its top-left corner). When the pipeline
  reads a scene at the model's GSD, ``tile.image`` holds the window resampled to the working
  GSD and the pipeline maps these boxes back to scene pixels itself;
* ``scores``: float32 ``[N]`` in [0, 1]; ``labels``: int64 ``[N]``, **0-based** indexes into
  ``classes`` (convert from 1-based "0 = background" conventions, as done here for torchvision);
* ``mask_boxes``: int32 ``[N, 4]`` integer tile-pixel bounds of each mask, and ``masks``: a
  tuple of N bool arrays with ``masks[i].shape == (y2 - y1, x2 - x1)`` of ``mask_boxes[i]``.
  Crop masks to their boxes; never return a full-tile mask per object. A box-only detector can
  return its box filled with True as the mask;
* ``tile``: ``tiles[i].spec``.

``tile.image`` is float32 ``[C, h, w]`` normalised to [0, 1] with scene-wide statistics
(computed on first access from ``tile.raw``, the pixels as read, and ``tile.norm``, for tiles
from :func:`geoseg.tiling.iter_tiles`; a predictor that batches may normalise ``raw`` itself);
``tile.valid`` (bool ``[h, w]``) is False on padding and nodata, where a predictor should not
report objects. For example, a detectron2 model would be wrapped as::

    class Detectron2Predictor(PredictorBase):
        def __init__(self, predictor, classes):
            self.model, self.classes = predictor, tuple(classes)

        def predict_tiles(self, tiles):
            out = []
            for t in tiles:
                inst = self.model(np.moveaxis(t.image * 255, 0, -1))["instances"].to("cpu")
                # crop inst.pred_masks[i] to its integer box, build TileDetections(...)
            return out

An ultralytics/YOLO segmentation model is wrapped the same way (``result.boxes.xyxy``,
``result.boxes.cls`` already 0-based, ``result.masks.data`` cropped to each box).

The Mask R-CNN predictor
------------------------
:class:`MaskRCNNPredictor` runs a torchvision :class:`~torchvision.models.detection.MaskRCNN`
stage by stage (transform, backbone, RPN, ROI heads) instead of calling the model, because the
model's own post-processing pastes every 28x28 mask into a full ``N x H x W`` tile array. Here
each mask probability map is resampled only onto the pixels of its own integer box (bilinear,
pixel-centre aligned, as detectron2 does) and thresholded at ``mask_threshold``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from geoseg.errors import ConfigError
from geoseg.types import NormStats, Tile, TileDetections

if TYPE_CHECKING:
    import torch

    from geoseg.settings import RunSettings

__all__ = [
    "Backend",
    "Device",
    "MaskRCNNPredictor",
    "Predictor",
    "PredictorBase",
    "check_predictor",
    "load_predictor",
    "paste_masks_in_boxes",
    "pick_device",
    "resolve_backend",
]

logger = logging.getLogger(__name__)

#: Largest number of float32 elements allocated at once when pasting a group of masks.
_PASTE_BUDGET = 4_000_000


@runtime_checkable
class Predictor(Protocol):
    """Anything that turns a batch of tiles into per-tile detections.

    Besides ``classes`` and :meth:`predict_tiles`, a predictor declares what the pipeline needs
    to know about its model; ``None`` (or an empty mapping) means "unknown", and the pipeline
    then falls back to the scene or to defaults. Subclass :class:`PredictorBase` to get those
    defaults and write only ``classes`` and ``predict_tiles``.

    Attributes:
        classes: class names; detection labels are 0-based indexes into this tuple.
        bands: 1-based raster bands the model expects, in input order (``None``: all bands).
        tile_size: tile side the model was trained on, in pixels (``None``: unknown).
        gsd: ground sample distance of the training imagery, metres (``None``: unknown).
        score_thresholds: recommended per-class score thresholds (class -> score).
        norm_stats: normalisation the model was trained with (``None``: unknown).
        device_type: ``"cuda"``, ``"cpu"``, ``"mps"``...: where it runs (chooses the default
            batch size).
    """

    classes: tuple[str, ...]
    bands: tuple[int, ...] | None
    tile_size: int | None
    gsd: float | None
    score_thresholds: Mapping[str, float]
    norm_stats: NormStats | None

    @property
    def device_type(self) -> str:
        """Where the model runs (``"cuda"``, ``"cpu"``...)."""
        ...

    def predict_tiles(self, tiles: Sequence[Tile]) -> list[TileDetections]:
        """Predict objects in each tile.

        Args:
            tiles: tiles whose ``image`` is float32 ``[C, h, w]`` in [0, 1].

        Returns:
            One :class:`TileDetections` per tile, in order, with boxes and mask boxes in tile
            pixels, 0-based labels, masks cropped to their mask boxes and ``tile`` set to the
            tile's spec.
        """
        ...


class PredictorBase:
    """Defaults for the optional :class:`Predictor` attributes ("unknown" everywhere).

    Subclass it, set ``classes`` and implement ``predict_tiles``.
    """

    classes: tuple[str, ...] = ()
    device_type: str = "cpu"
    bands: tuple[int, ...] | None = None
    tile_size: int | None = None
    gsd: float | None = None
    score_thresholds: Mapping[str, float] = MappingProxyType({})
    norm_stats: NormStats | None = None

    def predict_tiles(self, tiles: Sequence[Tile]) -> list[TileDetections]:
        """Predict objects in each tile (see :meth:`Predictor.predict_tiles`)."""
        raise NotImplementedError


def check_predictor(predictor: object) -> Predictor:
    """Return ``predictor`` if it has every :class:`Predictor` member, else raise TypeError.

    Raises:
        TypeError: a missing member; the message names them and points at
            :class:`PredictorBase`.
    """
    if isinstance(predictor, Predictor):
        return predictor
    members = (
        "classes",
        "device_type",
        "bands",
        "tile_size",
        "gsd",
        "score_thresholds",
        "norm_stats",
    )
    missing = [m for m in (*members, "predict_tiles") if not hasattr(predictor, m)]
    raise TypeError(
        f"{type(predictor).__name__} is not a geoseg Predictor: it lacks {', '.join(missing)}; "
        "subclass geoseg.predict.PredictorBase to get defaults for the optional attributes"
    )


class Device(StrEnum):
    """Where inference runs. ``AUTO`` picks CUDA, then Apple MPS, then the CPU."""

    AUTO = "auto"
    CUDA = "cuda"
    MPS = "mps"
    CPU = "cpu"


class Backend(StrEnum):
    """Which engine runs the Mask R-CNN's convolutions (:mod:`geoseg.models.runtime`).

    ``TORCH`` is the reference; ``ONNX`` exports the backbone and heads to ONNX Runtime when
    the predictor is built (CPU only; the ``onnxruntime`` package of the ``ml`` extra; the
    exported graphs are cached on disk, :mod:`geoseg.models.onnx_cache`). ``AUTO`` (the
    default) is ``ONNX`` on the CPU when ``onnxruntime`` imports, else ``TORCH``
    (:func:`resolve_backend`).
    """

    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"


def _onnxruntime_imports() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except (ImportError, OSError) as err:
        logger.debug("onnxruntime does not import: %s", err)
        return False
    return True


def resolve_backend(requested: Backend | str | None, device: torch.device | str) -> Backend:
    """The engine that runs a model on ``device`` for a backend request.

    ``auto`` (or ``None``) is ``onnx`` when ``device`` is the CPU and ``onnxruntime`` imports
    (faster there: BENCHMARKS.md, "Model speed"), else ``torch``; the choice is logged (INFO).
    ``torch`` and ``onnx`` are returned as they are (``onnx`` off the CPU is refused later, by
    :func:`geoseg.models.runtime.make_engine`).

    Raises:
        ConfigError: an unknown backend name.
    """
    import torch

    text = Backend.AUTO.value if requested is None else str(requested).lower()
    try:
        kind = Backend(text)
    except ValueError as err:
        raise ConfigError(
            f"unknown backend {requested!r}; use one of {[b.value for b in Backend]}"
        ) from err
    if kind is not Backend.AUTO:
        return kind
    device_type = torch.device(device).type
    if device_type != "cpu":
        kind, why = Backend.TORCH, f"the device is {device_type}"
    elif not _onnxruntime_imports():
        kind, why = Backend.TORCH, "onnxruntime is not installed"
    else:
        kind, why = Backend.ONNX, "CPU, onnxruntime available"
    logger.info("backend auto: %s (%s)", kind.value, why)
    return kind


def pick_device(requested: Device | str | None = None) -> torch.device:
    """Resolve a device request to a :class:`torch.device`.

    Args:
        requested: a :class:`Device`, a torch device string such as ``"cuda:1"``, or ``None``
            / ``"auto"`` for the best available one (CUDA, then MPS, then CPU).

    Returns:
        The torch device.

    Raises:
        ValueError: the requested accelerator is not available on this machine.
    """
    import torch

    text = "auto" if requested is None else str(requested).lower()
    if text == Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise ValueError(
            f"device {requested!r} is not a device; use one of {[d.value for d in Device]}"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {requested!r}: MPS is not available here; use 'cpu'")
    return device


def _interp_weights(
    lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor, length: int, m: int
) -> torch.Tensor:
    """1-D bilinear resampling matrices from an ``m``-cell mask grid onto integer pixels.

    Args:
        lo: float ``[N]``: the box edge (tile pixels) where the ``m`` mask cells start.
        hi: float ``[N]``: the box edge where they end.
        start: float ``[N]``: first output pixel index (the integer mask box's start).
        length: number of output pixels (padded length of the group).
        m: mask resolution (28 for torchvision).

    Returns:
        float32 ``[N, length, m]``: row ``i`` holds the weights of the mask cells sampled at
        the centre of pixel ``start + i``; cells outside the mask contribute zero (the same
        as ``grid_sample(..., align_corners=False, padding_mode="zeros")``).
    """
    import torch

    n = lo.shape[0]
    centres = start[:, None] + torch.arange(length, device=lo.device, dtype=torch.float32) + 0.5
    span = (hi - lo).clamp(min=1e-3)[:, None]
    src = (centres - lo[:, None]) / span * m - 0.5  # position in mask-cell centres
    i0 = torch.floor(src)
    frac = src - i0
    i0 = i0.long()
    i1 = i0 + 1
    w0 = (1.0 - frac) * ((i0 >= 0) & (i0 < m))
    w1 = frac * ((i1 >= 0) & (i1 < m))
    w = torch.zeros((n, length, m), device=lo.device, dtype=torch.float32)
    w.scatter_add_(2, i0.clamp(0, m - 1)[..., None], w0[..., None])
    w.scatter_add_(2, i1.clamp(0, m - 1)[..., None], w1[..., None])
    return w


def _groups(sizes: npt.NDArray[np.int64], budget: int) -> Iterator[npt.NDArray[np.intp]]:
    """Yield index groups (sorted by size) whose padded ``count * h * w`` fits ``budget``."""
    order = np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")
    group: list[int] = []
    gh = gw = 0
    for i in order:
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        nh, nw = max(gh, h), max(gw, w)
        if group and (len(group) + 1) * nh * nw > budget:
            yield np.asarray(group, dtype=np.intp)
            group, nh, nw = [], h, w
        group.append(int(i))
        gh, gw = nh, nw
    if group:
        yield np.asarray(group, dtype=np.intp)


def paste_masks_in_boxes(
    mask_probs: torch.Tensor,
    boxes: torch.Tensor,
    *,
    height: int,
    width: int,
    threshold: float = 0.5,
    budget: int = _PASTE_BUDGET,
) -> tuple[npt.NDArray[np.int32], tuple[npt.NDArray[np.bool_], ...]]:
    """Resample low-resolution mask probabilities onto each detection's own integer box.

    The replacement for torchvision's ``paste_masks_in_image``: no ``N x H x W`` array is
    built; memory is bounded by ``budget`` float32 elements per group of similar-sized masks.

    Args:
        mask_probs: float ``[N, 1, M, M]`` or ``[N, M, M]`` probabilities, each spanning its box.
        boxes: float ``[N, 4]`` boxes ``(x1, y1, x2, y2)`` in tile pixels.
        height: tile height in pixels (mask boxes are clipped to it).
        width: tile width in pixels.
        threshold: probability at or above which a pixel belongs to the object.
        budget: maximum float32 elements per resampling group.

    Returns:
        ``(mask_boxes, masks)``: int32 ``[N, 4]`` integer boxes in tile pixels (the box rounded
        outward and clipped to the tile, at least one pixel), and N bool masks of shape
        ``(y2 - y1, x2 - x1)``.
    """
    import torch

    n = int(boxes.shape[0])
    if n == 0:
        return np.zeros((0, 4), np.int32), ()
    probs = mask_probs.reshape(n, mask_probs.shape[-2], mask_probs.shape[-1]).float()
    m_h, m_w = int(probs.shape[1]), int(probs.shape[2])
    b = boxes.float()
    x1 = torch.floor(b[:, 0]).clamp(0, width - 1)
    y1 = torch.floor(b[:, 1]).clamp(0, height - 1)
    x2 = torch.maximum(torch.ceil(b[:, 2]).clamp(max=width), x1 + 1)
    y2 = torch.maximum(torch.ceil(b[:, 3]).clamp(max=height), y1 + 1)
    mask_boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.int32).cpu().numpy()
    sizes = np.stack(
        [mask_boxes[:, 3] - mask_boxes[:, 1], mask_boxes[:, 2] - mask_boxes[:, 0]], axis=1
    ).astype(np.int64)
    masks: list[npt.NDArray[np.bool_] | None] = [None] * n
    for idx in _groups(sizes, budget):
        gh, gw = int(sizes[idx, 0].max()), int(sizes[idx, 1].max())
        t_idx = torch.as_tensor(idx, device=b.device)
        bb = b[t_idx]
        wy = _interp_weights(bb[:, 1], bb[:, 3], y1[t_idx], gh, m_h)  # [g, gh, M]
        wx = _interp_weights(bb[:, 0], bb[:, 2], x1[t_idx], gw, m_w)  # [g, gw, M]
        pasted = torch.bmm(torch.bmm(wy, probs[t_idx]), wx.transpose(1, 2))  # [g, gh, gw]
        binary = (pasted >= threshold).cpu().numpy()
        for j, i in enumerate(idx):
            h, w = sizes[i]
            masks[i] = np.ascontiguousarray(binary[j, :h, :w])
    return mask_boxes, tuple(m for m in masks if m is not None)


def _drop_invalid(
    dets: TileDetections, valid: npt.NDArray[np.bool_], *, min_valid_fraction: float
) -> TileDetections:
    """Clear invalid pixels from masks; drop detections mostly on padding/nodata or empty."""
    if len(dets) == 0:
        return dets
    keep = np.zeros(len(dets), dtype=bool)
    new_masks: list[npt.NDArray[np.bool_]] = []
    for i, (mb, mask) in enumerate(zip(dets.mask_boxes, dets.masks, strict=True)):
        x1, y1, x2, y2 = (int(v) for v in mb)
        v = valid[y1:y2, x1:x2]
        total = int(mask.sum())
        inside = mask & v
        kept = int(inside.sum())
        keep[i] = total > 0 and kept >= min_valid_fraction * total
        new_masks.append(inside)
    fields = dets._fields()
    fields["masks"] = tuple(new_masks)
    return type(dets)(**fields)[keep]


def _raw_batchable(tiles: Sequence[Tile]) -> bool:
    """Whether the tiles' raw pixels make one batch normalised exactly as ``tile.image`` is.

    All raw, one shape, dtype and :class:`NormStats`, and a dtype that numpy stretches in
    float32 (up to 16-bit integers, float16/32), as the GPU does.
    """
    first = tiles[0]
    if first.raw is None or first.norm is None:
        return False
    shape, dtype, norm = first.raw.shape, first.raw.dtype, first.norm
    if np.result_type(dtype, np.float32) != np.float32:
        return False
    return all(
        t.raw is not None
        and t.raw.shape == shape
        and t.raw.dtype == dtype
        and (t.norm is norm or t.norm == norm)
        for t in tiles[1:]
    )


#: Float32 batch arrays of :func:`_input_images` (a :class:`geoseg.raster.BufferPool`).
_BATCHES: Any = None

#: Raw dtypes moved to a GPU as they are and stretched there (torch converts them fully;
#: uint16 has only "limited" CUDA support in torch and is normalised on the host until a GPU
#: run confirms its conversion, see :func:`_stretch_in_torch`).
_ON_GPU = frozenset(np.dtype(d) for d in ("uint8", "int8", "int16", "float16", "float32"))


def _stretch_in_torch(tiles: Sequence[Tile], device: torch.device) -> torch.Tensor:
    """The batch, float32 ``[B, C, h, w]`` on ``device``, normalised there (the GPU's way).

    The raw pixels of ``tiles`` (which :func:`_raw_batchable` accepts) are moved as they are
    and stretched in place, with the constants and operation order of
    :meth:`NormStats.stretch`; invalid pixels 0.
    """
    import torch

    norm = tiles[0].norm
    assert norm is not None
    raws = [t.raw for t in tiles if t.raw is not None]
    low, scale = (torch.from_numpy(a).to(device)[:, None, None] for a in norm.coefficients())
    host = torch.from_numpy(np.stack(raws))
    if device.type == "cuda":  # one pinned host batch, one asynchronous copy
        host = host.pin_memory()
    batch = host.to(device, non_blocking=True).to(torch.float32)
    batch.sub_(low).mul_(scale).clamp_(0.0, 1.0)
    for i, t in enumerate(tiles):
        if not t.valid.all():
            batch[i].masked_fill_(torch.from_numpy(~t.valid).to(device), 0.0)
    return batch


def _input_images(tiles: Sequence[Tile], device: torch.device) -> list[torch.Tensor]:
    """The model's input: one float32 ``[C, h, w]`` tensor in [0, 1] per tile, on ``device``.

    Tiles read by :func:`geoseg.tiling.iter_tiles` carry raw pixels (``tile.raw``) and their
    statistics (``tile.norm``); they are normalised here, into the model's batch, with the
    values of ``tile.image`` bit for bit, and ``tile.image`` is never made:

    * on a GPU, the raw pixels of the batch (8-bit, int16, float16/32) travel as one pinned
      ``[B, C, h, w]`` tensor (4x fewer bytes than float32 for uint8) and are stretched there
      in place in float32 with the constants and operation order of
      :meth:`NormStats.stretch` (subtract, multiply, clamp; invalid pixels 0);
    * otherwise each tile is stretched with numpy straight into its slice of one float32
      ``[B, C, h, w]`` batch array, reused from batch to batch (:meth:`Tile.normalise_into`):
      no per-tile image array, and the passes stay in the CPU cache; on a GPU that batch is
      pinned and moved in one copy. torch's in-place ops
      measured slower on a CPU, and far slower on two threads of a loaded machine
      (BENCHMARKS.md, "Normalising in the model's batch (issue 15)").

    Batches of tiles of different shapes, or whose first tile was built from a normalised
    image, use ``tile.image``.
    """
    import torch

    first = tiles[0]
    shapes = {t.image_shape for t in tiles}
    if first.raw is not None and len(shapes) == 1:
        if device.type == "cuda" and _raw_batchable(tiles) and first.raw.dtype in _ON_GPU:
            return list(_stretch_in_torch(tiles, device).unbind(0))
        from geoseg.raster import BufferPool

        global _BATCHES
        if _BATCHES is None:
            _BATCHES = BufferPool(size=2)
        # a batch array whose pages are mapped already (a fresh one faults ~1.5 ms per
        # 512 px tile in); reused once the model has dropped the previous batch
        slices = _BATCHES.get((len(tiles), *first.image_shape), np.float32)
        for i, t in enumerate(tiles):
            t.normalise_into(slices[i])
        batch = torch.from_numpy(slices)
        if device.type == "cuda":  # one pinned host batch, one asynchronous copy
            batch = batch.pin_memory()
        return list(batch.to(device, non_blocking=True).unbind(0))
    if device.type == "cuda" and len(shapes) == 1:
        # one pinned host batch, one asynchronous copy
        host = torch.from_numpy(np.stack([t.image for t in tiles])).pin_memory()
        return list(host.to(device, non_blocking=True).unbind(0))
    return [
        torch.from_numpy(np.ascontiguousarray(t.image)).to(device, non_blocking=True) for t in tiles
    ]


class MaskRCNNPredictor:
    """A torchvision Mask R-CNN behind the :class:`Predictor` protocol.

    Masks stay cropped to their boxes from the model output on (see the module docstring).
    Labels are converted from torchvision's 1-based labels to 0-based indexes into
    ``classes``. Detections on padding or nodata pixels are dropped.

    Attributes:
        model: the wrapped model, in eval mode on ``device``.
        classes: class names (without the background class).
        device: where inference runs.
        bands: 1-based raster bands the model expects (``None``: unknown; all bands).
        norm_stats: the normalisation the model was trained with (``None``: unknown).
        tile_size: the tile side the model was trained on (``None``: unknown).
        gsd: ground sample distance of the training imagery in metres (``None``: unknown).
        score_thresholds: recommended per-class score thresholds (from the checkpoint).
        meta: the checkpoint metadata when built by :meth:`from_checkpoint`, else ``None``.
    """

    def __init__(
        self,
        model: Any,
        *,
        classes: Sequence[str],
        device: Device | str | torch.device | None = None,
        amp: bool = True,
        channels_last: bool = True,
        min_score: float = 0.05,
        mask_threshold: float = 0.5,
        min_valid_fraction: float = 0.5,
        bands: Sequence[int] | None = None,
        norm_stats: NormStats | None = None,
        tile_size: int | None = None,
        gsd: float | None = None,
        score_thresholds: Mapping[str, float] | None = None,
        meta: Any = None,
        backend: Backend | str = Backend.AUTO,
        max_proposals: int | None = None,
        class_min_scores: Mapping[str, float] | None = None,
        prescreen: float | None = None,
    ) -> None:
        """Wrap ``model``.

        Args:
            model: a torchvision ``MaskRCNN`` (any ``GeneralizedRCNN`` with a mask head).
            classes: class names; the model has ``len(classes) + 1`` outputs (background 0).
            device: where to run; ``None`` picks CUDA, then MPS, then CPU.
            amp: on CUDA, run under bfloat16 autocast (ignored elsewhere).
            channels_last: use the channels-last memory format for the convolutions (CUDA
                and CPU; the torch backend).
            min_score: the model's own score threshold (``roi_heads.score_thresh``).
            mask_threshold: mask probability at or above which a pixel is inside.
            min_valid_fraction: drop a detection when less than this fraction of its mask
                lies on valid (non-padding, non-nodata) pixels.
            bands: 1-based raster bands the model expects, in input order.
            norm_stats: normalisation the model was trained with.
            tile_size: tile side the model was trained on.
            gsd: ground sample distance of the training imagery, metres.
            score_thresholds: recommended per-class score thresholds.
            meta: checkpoint metadata to keep with the predictor.
            backend: ``"torch"`` (the reference), ``"onnx"`` (ONNX Runtime on the CPU for
                the backbone and the heads; :mod:`geoseg.models.runtime`) or ``"auto"`` (onnx
                on the CPU when onnxruntime is installed, else torch: :func:`resolve_backend`).
                ``predictor.backend`` is the engine chosen.
            max_proposals: at most this many RPN proposals per tile after NMS (``None``: the
                model's own ``rpn_post_nms_top_n_test``). Fewer is faster but loses objects
                in dense tiles (300 instead of the demo model's 1,000 cost 0.03 F1 on a
                held-out scene; BENCHMARKS.md, "Model speed").
            class_min_scores: per-class score thresholds (class -> score) applied before the
                mask head; classes not named keep ``min_score``. The pipeline applies the same
                thresholds later, so this only saves mask-head work.
            prescreen: skip the RoI heads of a tile whose best RPN objectness probability is
                below this (``None``: off).
        """
        import torch

        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        self.classes: tuple[str, ...] = tuple(classes)
        self.device: torch.device = (
            device if isinstance(device, torch.device) else pick_device(device)
        )
        self.amp = bool(amp) and self.device.type == "cuda"
        kind = resolve_backend(backend, self.device)
        self.channels_last = bool(channels_last) and kind is Backend.TORCH
        if max_proposals is not None and max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
        if prescreen is not None and not 0.0 <= prescreen < 1.0:
            raise ValueError(f"prescreen must be in [0, 1), got {prescreen}")
        self.max_proposals = max_proposals
        self.prescreen = prescreen
        self.mask_threshold = float(mask_threshold)
        self.min_valid_fraction = float(min_valid_fraction)
        self.bands = None if bands is None else tuple(int(b) for b in bands)
        self.norm_stats = norm_stats
        self.tile_size = tile_size
        self.gsd = gsd
        self.score_thresholds: Mapping[str, float] = dict(score_thresholds or {})
        self.meta = meta
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.roi_heads.score_thresh = float(min_score)
        if model.roi_heads.mask_predictor is None:
            raise ValueError("MaskRCNNPredictor needs a model with a mask head (roi_heads.mask_*)")
        self.model = model
        per_class = dict(class_min_scores or {})
        unknown = sorted(set(per_class) - set(self.classes))
        if unknown:
            raise ValueError(f"class_min_scores names unknown classes {unknown}")
        self._class_min = torch.tensor(
            [0.0, *(max(float(min_score), per_class.get(c, 0.0)) for c in self.classes)],
            device=self.device,
        )
        from geoseg.models.runtime import make_engine

        self.engine = make_engine(model, kind, device=self.device, channels_last=self.channels_last)
        self.backend: Backend = self.engine.backend

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        device: Device | str | torch.device | None = None,
        amp: bool = True,
        min_score: float = 0.05,
        mask_threshold: float | None = None,
        **options: Any,
    ) -> MaskRCNNPredictor:
        """Load a geoseg checkpoint (safetensors + JSON sidecar) with :mod:`geoseg.checkpoint`.

        Args:
            path: the checkpoint file.
            device: where to run (``None``: best available).
            amp: bfloat16 autocast on CUDA.
            min_score: the model's own score threshold (the pipeline filters again with the
                run settings' per-class thresholds).
            mask_threshold: mask probability threshold; ``None``: the checkpoint's
                ``model.mask_threshold``.
            **options: ``backend``, ``max_proposals``, ``class_min_scores``, ``prescreen``,
                ``channels_last`` (see :meth:`__init__`).

        Returns:
            The predictor, with ``classes``, ``bands``, ``norm_stats``, ``tile_size``, ``gsd``
            and ``score_thresholds`` taken from the checkpoint metadata.

        Raises:
            CheckpointError: the checkpoint is missing, unsafe or corrupt.
        """
        from geoseg.checkpoint import load_checkpoint

        model, meta = load_checkpoint(path)
        return cls(
            model,
            classes=tuple(meta.classes),
            device=device,
            amp=amp,
            min_score=min_score,
            mask_threshold=(
                meta.model_config.mask_threshold if mask_threshold is None else mask_threshold
            ),
            bands=meta.bands,
            norm_stats=meta.norm_stats,
            tile_size=meta.tile_size,
            gsd=meta.gsd,
            score_thresholds=meta.score_thresholds,
            meta=meta,
            **options,
        )

    @property
    def device_type(self) -> str:
        """``self.device.type`` (``"cuda"``, ``"cpu"``, ``"mps"``)."""
        return str(self.device.type)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def predict_tiles(self, tiles: Sequence[Tile]) -> list[TileDetections]:
        """Run the model on a batch of tiles.

        Tiles without any valid pixel are not sent to the model.

        Args:
            tiles: tiles with float32 ``[C, h, w]`` images in [0, 1].

        Returns:
            One :class:`TileDetections` per tile (tile pixels, 0-based labels, cropped masks).
        """
        import torch

        results: list[TileDetections | None] = [None] * len(tiles)
        todo = []
        for i, tile in enumerate(tiles):
            if not tile.valid.any():
                results[i] = TileDetections.empty(tile.spec, self.classes)
            else:
                todo.append(i)
        if todo:
            with torch.inference_mode():
                outputs = self._forward([tiles[i] for i in todo])
            for i, out in zip(todo, outputs, strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    def _forward(self, tiles: Sequence[Tile]) -> list[TileDetections]:
        """Transform, backbone, RPN and ROI heads; masks pasted per box (no full-tile paste)."""
        from torchvision.models.detection.transform import resize_boxes

        from geoseg.models.runtime import detect

        model = self.model
        images = _input_images(tiles, self.device)
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        with self._autocast():
            image_list, _ = model.transform(images, None)
            detections = detect(
                model,
                self.engine,
                image_list,
                max_proposals=self.max_proposals,
                class_min_scores=self._class_min,
                prescreen=self.prescreen,
            )
        out: list[TileDetections] = []
        for tile, det, size, orig in zip(
            tiles, detections, image_list.image_sizes, original_sizes, strict=True
        ):
            boxes = resize_boxes(det["boxes"].float(), list(size), list(orig))
            h, w = orig
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            mask_boxes, masks = paste_masks_in_boxes(
                det["masks"], boxes, height=h, width=w, threshold=self.mask_threshold
            )
            labels = det["labels"].cpu().numpy().astype(np.int64) - 1
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
                raise ValueError(
                    f"model produced labels outside 1..{len(self.classes)}; its number of "
                    f"classes does not match classes={self.classes}"
                )
            dets = TileDetections(
                boxes=boxes.cpu().numpy().astype(np.float32),
                scores=det["scores"].float().cpu().numpy().astype(np.float32),
                labels=labels,
                mask_boxes=mask_boxes,
                masks=masks,
                classes=self.classes,
                tile=tile.spec,
            )
            out.append(_drop_invalid(dets, tile.valid, min_valid_fraction=self.min_valid_fraction))
        return out

    def __repr__(self) -> str:
        return (
            f"MaskRCNNPredictor(classes={self.classes}, device={self.device}, amp={self.amp}, "
            f"channels_last={self.channels_last}, backend={self.backend.value}, "
            f"max_proposals={self.max_proposals}, prescreen={self.prescreen})"
        )


def load_predictor(
    path: str | Path, settings: RunSettings | None = None, *, amp: bool = True
) -> MaskRCNNPredictor:
    """Load a checkpoint as a predictor ready for ``settings``.

    The model runs on ``settings.device`` with ``settings.backend`` and reports detections
    down to the lowest score threshold of the settings (so no detection the filter would keep
    is cut by the model); masks are computed only for detections above their own class's
    threshold, the ones the pipeline keeps.

    Args:
        path: the checkpoint (``NAME.safetensors`` with its ``NAME.json`` sidecar).
        settings: the run settings; ``None``: the device is picked automatically and the
            model's own low threshold (0.05) applies.
        amp: bfloat16 autocast on CUDA.

    Raises:
        CheckpointError: the checkpoint is missing, unsafe or corrupt.
        ConfigError: the settings' device is not available.
    """
    if settings is None:
        return MaskRCNNPredictor.from_checkpoint(path, amp=amp)
    try:
        device = pick_device(settings.device)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    from geoseg.checkpoint import read_meta

    classes = read_meta(path).classes
    per_class = {c: settings.class_min_score.get(c, settings.min_score) for c in classes}
    return MaskRCNNPredictor.from_checkpoint(
        path,
        device=device,
        amp=amp,
        min_score=settings.lowest_score(),
        backend=settings.backend,
        class_min_scores=per_class,
        prescreen=settings.prescreen,
    )
