"""Typed, immutable values that cross pipeline-stage boundaries.

Coordinate frames used throughout geoseg:

* **scene pixels**: integer column/row of the full raster, origin at the top-left corner of the
  top-left pixel, x = column (to the right), y = row (down). A pixel ``(col, row)`` covers
  ``[col, col + 1) x [row, row + 1)``.
* **tile pixels**: the same, relative to a tile's read window (``window.col_off``/``row_off``).
* **scene CRS**: the raster's coordinate reference system, reached from scene pixels by the
  scene's affine ``transform``.

Boxes are ``(x1, y1, x2, y2)`` with ``x1 < x2`` and ``y1 < y2`` (torchvision's convention), in
pixel-edge coordinates (a box around pixel (3, 4) alone is ``(3, 4, 4, 5)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from affine import Affine

__all__ = [
    "Detections",
    "ImageAllocator",
    "NormStats",
    "PixelWindow",
    "SceneInfo",
    "Tile",
    "TileDetections",
    "TileSpec",
]


@dataclass(frozen=True, slots=True)
class PixelWindow:
    """An integer, axis-aligned pixel window ``[col_off, col_off + width) x [row_off, ...)``.

    Offsets may be negative or run past the raster when a tile is padded; ``width`` and
    ``height`` are > 0 for a non-empty window and 0 for an empty one.
    """

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """Exclusive end column."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """Exclusive end row."""
        return self.row_off + self.height

    @property
    def area(self) -> int:
        """Number of pixels in the window."""
        return self.width * self.height

    def intersection(self, other: PixelWindow) -> PixelWindow:
        """Return the overlap of two windows (an empty window if they do not overlap)."""
        c0 = max(self.col_off, other.col_off)
        r0 = max(self.row_off, other.row_off)
        c1 = min(self.col_end, other.col_end)
        r1 = min(self.row_end, other.row_end)
        if c1 <= c0 or r1 <= r0:
            return PixelWindow(c0, r0, 0, 0)
        return PixelWindow(c0, r0, c1 - c0, r1 - r0)

    def contains(self, col: float, row: float) -> bool:
        """Whether the point ``(col, row)`` (pixel-edge coordinates) lies in the window."""
        return self.col_off <= col < self.col_end and self.row_off <= row < self.row_end

    def to_rasterio(self) -> Any:
        """Return the equivalent :class:`rasterio.windows.Window`."""
        from rasterio.windows import Window

        return Window(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True, slots=True)
class TileSpec:
    """One cell of a tile grid (pure geometry, no pixels).

    Attributes:
        index: position of the tile in its grid's row-major order.
        row: grid row; col: grid column.
        window: the read window in scene pixels, the grid's tile size (``tile_size x
            tile_size``, or the scene-pixel size of one model tile when the scene is read at
            another GSD); it extends past the scene's right/bottom edge only when the scene is
            smaller than a tile (the excess is padding and marked invalid).
        core: the pixels this tile *owns*, in scene pixels. The cores of all tiles in a grid
            partition the scene exactly: every scene pixel lies in exactly one core.
    """

    index: int
    row: int
    col: int
    window: PixelWindow
    core: PixelWindow


@dataclass(frozen=True, slots=True)
class NormStats:
    """Scene-wide per-band normalisation: a linear stretch from ``[low, high]`` to ``[0, 1]``.

    Computed once per scene (never per tile) and saved with a model checkpoint so that training
    and prediction normalise identically.

    Attributes:
        bands: 1-based band indexes the statistics belong to, in model-input order.
        low, high: per-band values mapped to 0 and 1 (e.g. the 2nd and 98th percentiles).
        percentiles: the percentiles ``low``/``high`` were taken at (informative).
        source_dtype: dtype of the raster the statistics came from, e.g. ``"uint16"``.
    """

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = (2.0, 98.0)
    source_dtype: str = "uint8"

    def __post_init__(self) -> None:
        if not (len(self.bands) == len(self.low) == len(self.high)):
            raise ValueError("NormStats: bands, low and high must have the same length")

    def apply(self, image: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Stretch ``image`` of shape ``[C, H, W]`` (C == len(bands)) to float32 in [0, 1]."""
        lo = np.asarray(self.low, dtype=np.float32)[:, None, None]
        hi = np.asarray(self.high, dtype=np.float32)[:, None, None]
        scale = 1.0 / np.maximum(hi - lo, np.float32(1e-6))
        out = (image.astype(np.float32, copy=False) - lo) * scale
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def coefficients(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The stretch's float32 constants ``(low, scale)``, each ``[C]``.

        A pixel ``x`` of band ``k`` stretches to ``clip((x - low[k]) * scale[k], 0, 1)``, with
        ``scale = 1 / max(high - low, 1e-6)``: the constants of :meth:`stretch`; a model that
        normalises its own batch (e.g. :class:`geoseg.predict.MaskRCNNPredictor`, in torch)
        uses them to get the same values.
        """
        lo = np.asarray(self.low, dtype=np.float32)
        hi = np.asarray(self.high, dtype=np.float32)
        scale = np.float32(1.0) / np.maximum(hi - lo, np.float32(1e-6))
        return lo, scale.astype(np.float32, copy=False)

    def stretch(
        self, data: npt.NDArray[Any], out: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.float32]:
        """Stretch raw pixels ``[C, H, W]`` to float32 in [0, 1], into ``out`` if given.

        Band by band with scalar operands, three in-place passes (subtract, multiply, clip):
        the values of :meth:`apply` for sources of up to 16 bits and float32 (bit for bit),
        with no intermediate array. For wider integers and float64 the subtraction runs in
        float64 (numpy's promotion) before the result is stored as float32.
        """
        if out is None:
            out = np.empty(data.shape, dtype=np.float32)
        lo, scale = self.coefficients()
        zero, one = np.float32(0.0), np.float32(1.0)
        for k in range(data.shape[0]):
            o = out[k]
            np.subtract(data[k], lo[k], out=o, casting="unsafe")
            np.multiply(o, scale[k], out=o)
            np.clip(o, zero, one, out=o)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (used in checkpoint sidecars)."""
        return {
            "bands": list(self.bands),
            "low": [float(v) for v in self.low],
            "high": [float(v) for v in self.high],
            "percentiles": list(self.percentiles),
            "source_dtype": self.source_dtype,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`."""
        p = data.get("percentiles", (2.0, 98.0))
        return cls(
            bands=tuple(int(b) for b in data["bands"]),
            low=tuple(float(v) for v in data["low"]),
            high=tuple(float(v) for v in data["high"]),
            percentiles=(float(p[0]), float(p[1])),
            source_dtype=str(data.get("source_dtype", "uint8")),
        )


@dataclass(frozen=True, slots=True)
class SceneInfo:
    """What geoseg knows about a raster without reading its pixels.

    Attributes:
        path: the GDAL path it was opened with (file path, ``/vsicurl/`` URL, VRT...).
        width, height: size in pixels; count: number of bands; dtype: numpy dtype name.
        crs_wkt: WKT of the CRS, or ``None`` when the raster has none (outputs are then in
            scene-pixel coordinates and marked so).
        transform: affine from scene pixels (col, row) to scene CRS (x, y).
        nodata: the nodata value, or ``None``.
        block_shape: internal tile/strip shape ``(rows, cols)`` of band 1.
        overviews: overview decimation factors of band 1, e.g. ``(2, 4, 8)``.
        driver: GDAL driver short name (``"GTiff"``, ``"VRT"``...).
    """

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    transform: Affine
    nodata: float | None = None
    block_shape: tuple[int, int] = (1, 1)
    overviews: tuple[int, ...] = ()
    driver: str = "GTiff"

    @property
    def is_geographic(self) -> bool:
        """Whether the CRS is geographic (degrees), so metres need a projection."""
        if self.crs_wkt is None:
            return False
        from pyproj import CRS

        return bool(CRS.from_wkt(self.crs_wkt).is_geographic)

    @property
    def gsd(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units (absolute values)."""
        return (abs(self.transform.a), abs(self.transform.e))


#: Allocates the array a :class:`Tile` normalises into: ``alloc(shape, dtype) -> array``
#: (e.g. :meth:`geoseg.raster.BufferPool.get`).
ImageAllocator = Callable[[tuple[int, ...], Any], npt.NDArray[Any]]


@dataclass(frozen=True, eq=False, init=False)
class Tile:
    """A tile's pixels with their georeference.

    A tile holds its pixels either as read (``raw``, with the normalisation ``norm`` still to
    apply: what :func:`geoseg.tiling.iter_tiles` hands out, so that a model can normalise a
    whole batch at once in its own framework) or already normalised (``image``, e.g. a tile
    built by hand as ``Tile(spec, image, valid, transform, crs_wkt)``). Either way
    :attr:`image` gives the normalised pixels; for a raw tile it is computed on first access
    and kept (the tile is immutable from the outside).

    Attributes:
        spec: the grid cell (window and core in scene pixels).
        image: float32 ``[C, h, w]`` normalised to [0, 1] with the scene-wide
            :class:`NormStats`; ``h, w`` equal the window's height/width, or the model's tile
            size when the window was resampled to the working GSD while read (then the
            image's pixels are *working pixels*, not scene pixels). Padding and nodata pixels
            are 0. For a raw tile: ``norm.stretch(raw)`` with the invalid pixels set to 0,
            computed on first access.
        valid: bool ``[h, w]``, True where the pixel is inside the scene and not nodata.
        transform: affine from the image's pixels (*tile pixels*, or working pixels when
            resampled) to the scene CRS.
        crs_wkt: WKT of the scene CRS (``None`` if the scene has none).
        raw: the pixels as read, ``[C, h, w]`` in the source dtype (e.g. uint8, uint16), the
            same pixel grid as ``image``; nodata pixels keep their value and padding is 0
            (``valid`` tells them apart). ``None`` for a tile built from a normalised image.
        norm: the scene-wide statistics that turn ``raw`` into ``image`` (``None`` with
            ``raw``).
    """

    spec: TileSpec
    valid: npt.NDArray[np.bool_]
    transform: Affine
    crs_wkt: str | None
    raw: npt.NDArray[Any] | None = field(default=None, repr=False)
    norm: NormStats | None = None
    # the normalised image when given or computed (``dataclasses.replace`` carries it over)
    _image: npt.NDArray[np.float32] | None = field(default=None, repr=False)

    def __init__(
        self,
        spec: TileSpec,
        image: npt.NDArray[np.float32] | None = None,
        valid: npt.NDArray[np.bool_] | None = None,
        transform: Affine | None = None,
        crs_wkt: str | None = None,
        *,
        raw: npt.NDArray[Any] | None = None,
        norm: NormStats | None = None,
        alloc: ImageAllocator | None = None,
        _image: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Build a tile from a normalised ``image``, or from ``raw`` pixels and ``norm``.

        Args:
            spec: the grid cell.
            image: the normalised image, or ``None`` when ``raw`` and ``norm`` are given.
            valid: bool ``[h, w]``, True on pixels inside the scene and not nodata.
            transform: affine from the image's pixels to the scene CRS.
            crs_wkt: WKT of the scene CRS, or ``None``.
            raw: pixels as read (see the attributes).
            norm: the statistics to normalise ``raw`` with.
            alloc: where the image computed from ``raw`` is allocated (``None``: a fresh
                array); not pickled.
            _image: ``image`` under its field name, for :func:`dataclasses.replace`; ignored
                when ``raw`` is given (the image is then computed again from the new fields).

        Raises:
            TypeError: ``valid`` or ``transform`` missing (they default to ``None`` only so that
                ``image`` may be left out, as :func:`dataclasses.replace` does).
            ValueError: neither ``image`` nor ``raw`` with ``norm``, or ``raw`` not
                ``[len(norm.bands), h, w]`` with ``valid`` ``[h, w]``.
        """
        if valid is None or transform is None:
            raise TypeError("Tile needs valid (bool [h, w]) and transform (an Affine)")
        if image is None and raw is None:
            image = _image
        if image is None:
            if raw is None or norm is None:
                raise ValueError("Tile needs a normalised image, or raw pixels and their norm")
            if raw.ndim != 3 or raw.shape[0] != len(norm.bands) or raw.shape[1:] != valid.shape:
                raise ValueError(
                    f"Tile: raw pixels {raw.shape} do not match {len(norm.bands)} bands and the "
                    f"valid mask {valid.shape}"
                )
        setattr_ = object.__setattr__
        setattr_(self, "spec", spec)
        setattr_(self, "valid", valid)
        setattr_(self, "transform", transform)
        setattr_(self, "crs_wkt", crs_wkt)
        setattr_(self, "raw", raw)
        setattr_(self, "norm", norm)
        setattr_(self, "_image", image)
        setattr_(self, "_alloc", alloc)

    @property
    def image(self) -> npt.NDArray[np.float32]:
        """float32 ``[C, h, w]`` in [0, 1], 0 on padding and nodata (see the class)."""
        image: npt.NDArray[np.float32] | None = self.__dict__["_image"]
        if image is None:
            image = self._normalise()
            object.__setattr__(self, "_image", image)
        return image

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of :attr:`image`, without computing it."""
        src = self.__dict__["_image"]
        if src is None:
            src = self.raw
        c, h, w = src.shape
        return int(c), int(h), int(w)

    @property
    def has_image(self) -> bool:
        """Whether :attr:`image` is already there (given, or computed and kept)."""
        return self.__dict__["_image"] is not None

    def normalise_into(self, out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Write the values of :attr:`image` into ``out``, float32 ``[C, h, w]``; return it.

        E.g. into one slice of a model's batch, without keeping an image on the tile. From
        ``raw`` when the tile has it (:meth:`NormStats.stretch`, invalid pixels 0), else
        a copy of ``image``.
        """
        raw, norm = self.raw, self.norm
        if raw is None or norm is None:
            out[...] = self.image
            return out
        norm.stretch(raw, out)
        if not self.valid.all():
            out[:, ~self.valid] = 0.0
        return out

    def _normalise(self) -> npt.NDArray[np.float32]:
        alloc: ImageAllocator | None = self.__dict__["_alloc"]
        shape = self.image_shape
        out = np.empty(shape, np.float32) if alloc is None else alloc(shape, np.float32)
        return self.normalise_into(out)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_alloc"] = None  # a buffer pool stays in the process that made it
        return state


def _as_index(item: int | slice | Sequence[int] | npt.NDArray[Any], n: int) -> npt.NDArray[np.intp]:
    """Turn an int/slice/index array/bool mask into an integer index array."""
    if isinstance(item, int | np.integer):
        return np.asarray([int(item)], dtype=np.intp)
    if isinstance(item, slice):
        return np.arange(n, dtype=np.intp)[item]
    arr = np.asarray(item)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} does not match length {n}")
        return np.flatnonzero(arr).astype(np.intp)
    return arr.astype(np.intp, copy=False).reshape(-1)


@dataclass(frozen=True, eq=False)
class _InstanceSet:
    """Common base of :class:`TileDetections` and :class:`Detections`.

    All per-object fields have the same length N. Masks are cropped to their *mask boxes*:
    ``masks[i]`` is bool ``[y2 - y1, x2 - x1]`` for ``mask_boxes[i] == (x1, y1, x2, y2)``.
    Never a full-tile or full-scene mask array.

    Attributes:
        boxes: float32 ``[N, 4]`` detection boxes ``(x1, y1, x2, y2)``.
        scores: float32 ``[N]`` confidence in [0, 1].
        labels: int64 ``[N]``, 0-based indexes into ``classes`` (no background class).
        mask_boxes: int32 ``[N, 4]`` integer pixel bounds of each mask, ``(x1, y1, x2, y2)``.
        masks: tuple of N bool arrays, ``masks[i].shape == (y2 - y1, x2 - x1)``.
        classes: class names, e.g. ``("ship", "vehicle", "building")``.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    mask_boxes: npt.NDArray[np.int32]
    masks: tuple[npt.NDArray[np.bool_], ...]
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,):
            raise ValueError(
                f"inconsistent lengths: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"labels {self.labels.shape}"
            )
        if self.mask_boxes.shape != (n, 4) or len(self.masks) != n:
            raise ValueError(
                f"inconsistent lengths: mask_boxes {self.mask_boxes.shape}, masks {len(self.masks)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def _fields(self) -> dict[str, Any]:
        return {
            "boxes": self.boxes,
            "scores": self.scores,
            "labels": self.labels,
            "mask_boxes": self.mask_boxes,
            "masks": self.masks,
            "classes": self.classes,
        }

    def __getitem__(self, item: int | slice | Sequence[int] | npt.NDArray[Any]) -> Self:
        """Select objects by int, slice, index array or boolean mask (detectron2 style)."""
        idx = _as_index(item, len(self))
        fields = self._fields()
        fields["boxes"] = self.boxes[idx]
        fields["scores"] = self.scores[idx]
        fields["labels"] = self.labels[idx]
        fields["mask_boxes"] = self.mask_boxes[idx]
        fields["masks"] = tuple(self.masks[i] for i in idx)
        return type(self)(**fields)

    def mask_areas(self) -> npt.NDArray[np.int64]:
        """int64 ``[N]``: number of True pixels per mask."""
        return np.fromiter((int(m.sum()) for m in self.masks), dtype=np.int64, count=len(self))

    @staticmethod
    def _empty_arrays() -> dict[str, Any]:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros((0,), np.float32),
            "labels": np.zeros((0,), np.int64),
            "mask_boxes": np.zeros((0, 4), np.int32),
            "masks": (),
        }


@dataclass(frozen=True, eq=False)
class TileDetections(_InstanceSet):
    """Per-tile model output; boxes and mask boxes are in **tile pixels**.

    Attributes:
        tile: the grid cell the detections came from (its window gives the tile-to-scene
            pixel offset).
    """

    tile: TileSpec | None = None

    def _fields(self) -> dict[str, Any]:
        return {**_InstanceSet._fields(self), "tile": self.tile}

    @classmethod
    def empty(cls, tile: TileSpec, classes: tuple[str, ...] = ()) -> TileDetections:
        """No detections for ``tile``."""
        return cls(**cls._empty_arrays(), classes=classes, tile=tile)


@dataclass(frozen=True, eq=False)
class Detections(_InstanceSet):
    """Scene-level objects; boxes and mask boxes are in **scene pixels**."""

    @classmethod
    def empty(cls, classes: tuple[str, ...] = ()) -> Detections:
        """No detections."""
        return cls(**cls._empty_arrays(), classes=classes)

    @classmethod
    def cat(cls, parts: Sequence[Detections]) -> Detections:
        """Concatenate several sets (their ``classes`` must agree)."""
        if not parts:
            return cls.empty()
        classes = parts[0].classes
        for p in parts[1:]:
            if p.classes != classes:
                raise ValueError(
                    f"cannot concatenate detections of classes {classes} and {p.classes}"
                )
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False),
            scores=np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False),
            labels=np.concatenate([p.labels for p in parts]).astype(np.int64, copy=False),
            mask_boxes=np.concatenate([p.mask_boxes for p in parts]).astype(np.int32, copy=False),
            masks=tuple(m for p in parts for m in p.masks),
            classes=classes,
        )
