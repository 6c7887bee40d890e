"""The one chip-folder writer of the importers: source images + pixel-space objects -> chips.

Every importer parses its format into :class:`SourceImage` records (an image file and its
objects as polygons in that image's pixels) and hands them to :func:`write_dataset`, which
writes one chip folder in the layout of :func:`geoseg.chips.make_chips`, so that
:class:`geoseg.train.ChipDataset` and :func:`geoseg.coco.read_coco` read it as any other::

    OUT/images/<image>.tif or <image>_r<row>_c<col>.tif   GeoTIFF chips, the source dtype
    OUT/annotations.json   COCO + a "geoseg" block (norm_stats, classes, bands, gsd, source...)
    OUT/class_balance.json per-class instance/chip counts and object sizes

Rules (the same as ``geoseg chips`` where they overlap):

* **Frames.** Objects are polygons in *image pixels*: x = column, y = row, origin at the
  top-left corner of the top-left pixel, pixel edges at integers (a box around pixel (3, 4)
  alone is ``(3, 4, 4, 5)``). A chip's mask is the set of pixels whose centres lie inside the
  object clipped to the chip; it is stored as COCO polygons tracing the pixel edges, or RLE
  when the footprint has holes (:func:`geoseg.coco.segmentation_from_mask`).
* **Georeference.** An image with a CRS keeps its transform (chips are cut from it as from a
  scene). An image without one gets its *pixel frame* (:func:`geoseg.chips.pixel_frame_transform`:
  ``x = col * gsd``, ``y = -row * gsd``, no CRS), so every chip's pixel size is the GSD.
* **GSD.** Per image: from its georeference, else from the format (DOTA's ``gsd:`` line),
  else the GSD the user states (``gsd``); an image with none of these is refused (the error
  says to pass ``--gsd``). The folder records one GSD in metres: ``target_gsd`` when images are
  resampled to it, else the median over images (a warning when they differ by more than 25 %).
* **Cutting.** An image at most ``size`` pixels on both sides is one chip, at its own size
  (not padded). A larger image is cut into the overlapping grid of
  :func:`geoseg.tiling.make_grid`, windows cropped to the image. Images are read window by
  window, except PNG/JPEG/BMP/GIF images up to 1 GiB, which GDAL can only decode from the top:
  they are read once, whole.
* **Bands.** Alpha bands are dropped (alpha 0 = not valid), palette images expanded to RGB, a
  single-band image in a multi-band dataset repeated to every band; ``bands`` then selects
  (1-based). All images must end with the same band count and dtype.
* **Geometry.** Invalid polygons are repaired (``shapely.make_valid``); empty, non-polygonal
  and zero-area ones are dropped and counted. Objects clipped by a chip border follow the
  sliver rule of :func:`geoseg.chips.make_chips`.
* **Normalisation.** ``norm_stats`` are the 2nd/98th percentiles per band of a seeded sample of
  valid pixels of every chip written (dataset-wide, never per chip).
* **Empty chips** are kept with probability ``keep_empty_fraction`` (seeded).
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.features import rasterize
from shapely.affinity import scale as scale_geometry
from shapely.affinity import translate
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geoseg._version import __version__
from geoseg.chips import (
    CLASS_BALANCE_FILE,
    ChipSummary,
    _class_balance,
    _prepare_out_dir,
    _write_chip,
    pixel_frame_transform,
)
from geoseg.coco import (
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    encode_rle_crop,
    mask_bbox,
    segmentation_from_mask,
    write_coco,
)
from geoseg.errors import BandError, ConfigError, LabelError, RasterReadError
from geoseg.geometry import polygonal
from geoseg.importers.classes import ClassMapping, output_classes
from geoseg.io import atomic_write_json
from geoseg.tiling import make_grid, tile_transform
from geoseg.types import NormStats, PixelWindow

__all__ = [
    "IMAGE_SUFFIXES",
    "ImportSummary",
    "Instance",
    "SourceImage",
    "write_dataset",
]

logger = logging.getLogger(__name__)

#: Image file suffixes the importers look for (any GDAL raster works when named directly).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

_STATS_SAMPLE = 1_000_000  # pixels per band kept for the percentiles, over the whole dataset
# Formats GDAL decodes line by line from the top (a window read restarts the decoder): an image
# cut into several chips is read once, whole, when it fits in this many bytes.
_SEQUENTIAL_DRIVERS = frozenset({"PNG", "JPEG", "BMP", "GIF"})
_WHOLE_READ_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class Instance:
    """One labelled object of a source image.

    Attributes:
        name: its class in the source (before mapping).
        geometry: a shapely (multi)polygon in *image pixels* (see the module docstring); may
            be invalid (repaired on writing) or reach past the image (clipped).
        ref: where it came from in the source, for messages and provenance (a COCO
            annotation id, ``"file.txt:12"``...); written as ``source_ref``.
    """

    name: str
    geometry: BaseGeometry
    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A source image and its objects.

    Attributes:
        path: the image file (anything GDAL reads: PNG, JPEG, TIFF...).
        instances: its objects.
        label_file: the file its labels came from (named in errors).
        name: a short name used for the chip file names (made unique on writing).
        gsd: the GSD in metres the format states for this image (DOTA's ``gsd:`` line), or
            ``None`` to use the image's georeference or the importer's stated GSD.
    """

    path: Path
    instances: tuple[Instance, ...]
    label_file: str
    name: str
    gsd: float | None = None


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an importer read, mapped, dropped and wrote.

    Attributes:
        format: the source format (``coco``, ``dota``, ``yolo-obb``, ``vector``).
        source: the source path given.
        chips: the chip folder written (for a split vector import: the training folder).
        val: the validation folder of a split vector import, else ``None``.
        classes: the folder's class names (category id = index + 1).
        n_images: source images read.
        instances: geoseg class -> source objects mapped to it (before geometry checks and
            cutting into chips).
        dropped: source class -> objects dropped by the class mapping or ``classes``.
        n_crowd: COCO ``iscrowd`` objects skipped.
        n_box_masks: objects without outline turned into box masks.
        n_invalid: objects dropped for their geometry (empty, degenerate, not polygonal).
        gsd: the GSD the folder records, in metres per pixel.
        gsd_source: where it came from (``stated``, ``header``, ``georeference``, ``resampled``,
            or several joined by ``+``).
        warnings: human-readable warnings.
    """

    format: str
    source: str
    chips: ChipSummary
    val: ChipSummary | None
    classes: tuple[str, ...]
    n_images: int
    instances: dict[str, int]
    dropped: dict[str, int]
    n_crowd: int = 0
    n_box_masks: int = 0
    n_invalid: int = 0
    gsd: float | None = None
    gsd_source: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True, slots=True)
class _Bands:
    """How one source image's bands become the dataset's bands."""

    read: tuple[int, ...]  # 1-based dataset bands read
    palette: npt.NDArray[Any] | None  # uint8 [256, 3] colour table of a palette image
    alpha: int | None  # 1-based alpha band
    repeat: int  # >1: a single band repeated this many times
    count: int  # bands after expansion, before selection


def _open(path: Path, label_file: str) -> Any:
    if not path.is_file():
        raise LabelError(f"{label_file}: the image {path} was not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as err:
        raise RasterReadError(f"{path}: cannot read the image ({err})") from err


def _band_plan(ds: Any, path: Path) -> _Bands:
    interp = list(ds.colorinterp)
    if ds.count == 1 and interp[0] == ColorInterp.palette:
        cmap = ds.colormap(1)
        lut = np.zeros((256, 3), np.uint8)
        for k, rgba in cmap.items():
            if 0 <= int(k) < 256:
                lut[int(k)] = rgba[:3]
        return _Bands((1,), lut, None, 1, 3)
    alpha = [i + 1 for i, c in enumerate(interp) if c == ColorInterp.alpha]
    read = tuple(i + 1 for i, c in enumerate(interp) if c != ColorInterp.alpha)
    if not read:
        raise BandError(f"{path}: the image has only an alpha band")
    return _Bands(read, None, alpha[0] if alpha else None, 1, len(read))


def _is_georeferenced(ds: Any) -> bool:
    return ds.crs is not None and not ds.transform.is_identity


def _image_gsd(ds: Any, path: Path) -> float:
    from geoseg.raster import ground_sample_distance_m, open_scene

    gx, gy = ground_sample_distance_m(open_scene(path))
    return float((gx + gy) / 2)


def _read_chip(
    ds: Any,
    plan: _Bands,
    window: PixelWindow,
    scale: tuple[float, float],
    resampling: Resampling,
    sel: Sequence[int],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Read ``window`` (output pixels) of a source image: ``data [C, h, w]``, ``valid [h, w]``."""
    from rasterio.windows import Window

    sx, sy = scale
    src = Window(window.col_off / sx, window.row_off / sy, window.width / sx, window.height / sy)
    shape = (window.height, window.width)
    method = Resampling.nearest if plan.palette is not None else resampling
    raw = ds.read(
        list(plan.read), window=src, out_shape=(len(plan.read), *shape), resampling=method
    )
    if plan.palette is not None:
        data = np.moveaxis(plan.palette[raw[0].astype(np.intp).clip(0, 255)], -1, 0)
    elif plan.repeat > 1:
        data = np.repeat(raw, plan.repeat, axis=0)
    else:
        data = raw
    valid = np.ones(shape, np.bool_)
    if plan.alpha is not None:
        a = ds.read(plan.alpha, window=src, out_shape=shape, resampling=Resampling.nearest)
        valid &= a > 0
    if ds.nodata is not None and plan.palette is None:
        nd = ds.nodata
        invalid = np.isnan(raw).all(axis=0) if math.isnan(nd) else (raw == nd).all(axis=0)
        valid &= ~invalid
    return np.ascontiguousarray(data[[b - 1 for b in sel]]), valid


def _windows(
    width: int, height: int, size: int, overlap: int
) -> list[tuple[int, int, PixelWindow]]:
    """``(grid row, grid col, window)`` chips of a ``width x height`` image (output pixels)."""
    if width <= size and height <= size:
        return [(-1, -1, PixelWindow(0, 0, width, height))]
    whole = PixelWindow(0, 0, width, height)
    return [
        (t.row, t.col, t.window.intersection(whole))
        for t in make_grid(width, height, tile_size=size, overlap=overlap)
    ]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _unique_stem(name: str, used: set[str]) -> str:
    stem = _UNSAFE.sub("_", name).strip("._") or "image"
    out, k = stem, 1
    while out.casefold() in used:
        k += 1
        out = f"{stem}-{k}"
    used.add(out.casefold())
    return out


# --------------------------------------------------------------------------------------------
# geometry


def _clean(geom: BaseGeometry | None) -> tuple[BaseGeometry | None, bool]:
    """``(polygonal part or None, repaired?)`` of an object's geometry."""
    if geom is None or geom.is_empty:
        return None, False
    repaired = False
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
        repaired = True
    poly = polygonal(geom)
    if poly is None or poly.area <= 0:
        return None, repaired
    return poly, repaired


def _segment(part: BaseGeometry, width: int, height: int) -> dict[str, Any] | None:
    """COCO ``segmentation``, ``area`` and ``bbox`` of ``part`` (chip pixels) in a chip.

    The footprint (pixel centres inside ``part``) is rasterised on the part's bounding box
    grown by one pixel, not on the whole chip, and stored as
    :func:`geoseg.coco.segmentation_from_mask` would store the whole-chip mask: pixel-edge
    polygons shifted to chip pixels (an integer shift, which pycocotools' rasteriser follows),
    or whole-chip RLE from the crop (:func:`geoseg.coco.encode_rle_crop`). ``None`` when no
    pixel centre lies inside.
    """
    x0, y0, x1, y1 = part.bounds
    c0, r0 = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
    c1, r1 = min(width, math.ceil(x1) + 1), min(height, math.ceil(y1) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    crop = rasterize(
        [(translate(part, -c0, -r0), 1)],
        out_shape=(r1 - r0, c1 - c0),
        transform=Affine.identity(),
        dtype="uint8",
    ).astype(bool)
    if not crop.any():
        return None
    seg: Any = segmentation_from_mask(crop)
    if isinstance(seg, list):
        seg = [[v + (c0 if k % 2 == 0 else r0) for k, v in enumerate(ring)] for ring in seg]
    else:
        seg = encode_rle_crop(crop, c0, r0, width, height)
    bx, by, bw, bh = mask_bbox(crop)
    return {"segmentation": seg, "area": float(crop.sum()), "bbox": [bx + c0, by + r0, bw, bh]}


def _norm_stats(samples: list[list[npt.NDArray[Any]]], sel: Sequence[int], dtype: str) -> NormStats:
    lows: list[float] = []
    highs: list[float] = []
    for b in range(len(sel)):
        values = np.concatenate([s[b] for s in samples]) if samples else np.zeros(0)
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if values.size == 0:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = (float(v) for v in np.percentile(values, [2.0, 98.0]))
            if hi <= lo:
                hi = lo + 1.0
        lows.append(lo)
        highs.append(hi)
    return NormStats(
        bands=tuple(sel),
        low=tuple(lows),
        high=tuple(highs),
        percentiles=(2.0, 98.0),
        source_dtype=dtype,
    )


# --------------------------------------------------------------------------------------------
# the writer


def write_dataset(
    images: Sequence[SourceImage],
    out_dir: str | os.PathLike[str],
    *,
    fmt: str,
    source: str | os.PathLike[str],
    source_classes: Sequence[str] = (),
    mapping: ClassMapping | None = None,
    classes: Sequence[str] | None = None,
    gsd: float | None = None,
    target_gsd: float | None = None,
    size: int = 512,
    overlap: int = 64,
    bands: Sequence[int] | None = None,
    min_visible_fraction: float = 0.25,
    min_visible_pixels: float = 1024.0,
    keep_empty_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    imbalance_ratio: float = 10.0,
    counts: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Write source images and their pixel-space objects as one geoseg chip folder.

    See the module docstring for the rules (frames, georeference, GSD, cutting, bands).

    Args:
        images: the parsed source (objects in image pixels).
        out_dir: the chip folder to write.
        fmt: the source format name (recorded).
        source: the source path (named in errors, recorded).
        source_classes: the source's class names in its own order (the default class order).
        mapping: the class mapping (default: every class under its own name).
        classes: the folder's class order; objects whose mapped class is not in it are dropped.
        gsd: metres per pixel of the images without georeference or GSD of their own.
        target_gsd: resample every image to this GSD (metres per pixel) while cutting.
        size: chip side in pixels (images at most this size are one chip).
        overlap: pixels shared by neighbouring chips of a larger image.
        bands: 1-based bands written, after alpha/palette handling (``None`` = all).
        min_visible_fraction: sliver rule, as :func:`geoseg.chips.make_chips`.
        min_visible_pixels: sliver rule, in chip pixels.
        keep_empty_fraction: probability of keeping a chip without objects.
        seed: seed of the empty-chip draw and the statistics sample.
        overwrite: replace chips already in ``out_dir``.
        imbalance_ratio: class-balance warning threshold.
        counts: the parser's own counts (``n_crowd``, ``n_box_masks``, ``n_invalid``).
        metadata: extra keys for the ``"geoseg"`` block.
        progress: ``progress(done, total)`` after each image.

    Returns:
        An :class:`ImportSummary`.

    Raises:
        LabelError: no object left after mapping (naming ``source`` and the classes found),
            or an image missing.
        ConfigError: an image without a GSD (pass ``--gsd``), or invalid sizes/fractions.
        BandError: images with different band counts or dtypes, or ``bands`` out of range.
        RasterReadError: an image cannot be read.
        ExportError: ``out_dir`` already holds chips (without ``overwrite``).
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ConfigError(f"need size > 0 and 0 <= overlap < size, got size={size}, {overlap=}")
    if not 0.0 <= min_visible_fraction <= 1.0 or not 0.0 <= keep_empty_fraction <= 1.0:
        raise ConfigError("min_visible_fraction and keep_empty_fraction must be in [0, 1]")
    for name, value in (("gsd", gsd), ("target_gsd", target_gsd)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be a positive number of metres per pixel, got {value}")
    src_name = os.fspath(source)
    mapping = mapping or ClassMapping()
    counts = dict(counts or {})
    if not images:
        raise LabelError(f"{src_name}: no labelled image found")

    # ---- classes: map, count, order
    present: Counter[str] = Counter()
    found: Counter[str] = Counter()
    for img in images:
        for inst in img.instances:
            found[inst.name] += 1
            target = mapping.target(inst.name)
            if target is not None:
                present[target] += 1
    class_names = output_classes(mapping, source_classes, present, classes)
    lookup = {c: i for i, c in enumerate(class_names)}
    kept: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for img in images:
        for inst in img.instances:
            target = mapping.target(inst.name)
            if target is None or target not in lookup:
                dropped[inst.name] += 1
            else:
                kept[target] += 1
    if not kept:
        found_text = ", ".join(f"{k} ({v})" for k, v in sorted(found.items())) or "none"
        raise LabelError(
            f"{src_name}: no usable object after the class mapping. Objects found per class: "
            f"{found_text}; mapping {mapping.to_dict()['map'] or 'none'}"
            + (f", classes {list(classes)}" if classes is not None else "")
            + ". Map classes with --map 'SOURCE[,SOURCE]=TARGET' or keep them with --keep NAME."
        )
    if dropped:
        logger.warning(
            "%s: dropped objects of unmapped classes: %s",
            src_name,
            ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())),
        )

    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    used_names: set[str] = set()
    chip_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_objects: list[int] = []
    samples: list[list[npt.NDArray[Any]]] = []
    gsd_values: list[float] = []
    gsd_sources: list[str] = []
    crs_values: set[str | None] = set()
    n_bands: int | None = None
    dtype: str | None = None
    sel: tuple[int, ...] = ()
    n_empty = n_slivers = n_repaired = n_outside = n_labels = 0
    n_invalid = int(counts.get("n_invalid", 0))
    max_side = 0
    object_id = 0
    per_image_budget = max(4096, _STATS_SAMPLE // max(1, len(images)))

    for done, img in enumerate(images, start=1):
        with _open(img.path, img.label_file) as ds:
            plan = _band_plan(ds, img.path)
            if n_bands is None:
                n_bands, dtype = plan.count, str(ds.dtypes[plan.read[0] - 1])
                sel = tuple(bands) if bands is not None else tuple(range(1, n_bands + 1))
                if not sel or any(not 1 <= b <= n_bands for b in sel):
                    raise BandError(
                        f"{img.path}: bands {list(sel)} out of range; the images have "
                        f"{n_bands} band(s) (after dropping alpha / expanding palettes)"
                    )
            if plan.count == 1 and n_bands > 1:
                logger.info("%s: single band repeated to %d bands", img.path, n_bands)
                plan = _Bands(plan.read, None, plan.alpha, n_bands, n_bands)
            if plan.count != n_bands:
                raise BandError(
                    f"{img.path}: {plan.count} band(s) where the first image has {n_bands}; "
                    "import images with the same bands together"
                )
            this_dtype = "uint8" if plan.palette is not None else str(ds.dtypes[plan.read[0] - 1])
            if this_dtype != dtype:
                raise BandError(
                    f"{img.path}: pixel type {this_dtype} where the first image has {dtype}; "
                    "convert the images to one type"
                )

            # georeference and GSD
            georef = _is_georeferenced(ds)
            if georef:
                image_gsd, how = _image_gsd(ds, img.path), "georeference"
                frame: Affine = ds.transform
                crs_values.add(ds.crs.to_wkt())
            else:
                crs_values.add(None)
                if img.gsd is not None:
                    image_gsd, how = float(img.gsd), "header"
                elif gsd is not None:
                    image_gsd, how = float(gsd), "stated"
                else:
                    raise ConfigError(
                        f"{img.path}: the image has no georeference and {img.label_file} states "
                        "no GSD; pass --gsd METRES (gsd=... in Python), the ground size of one "
                        "pixel, e.g. --gsd 0.3"
                    )
                frame = pixel_frame_transform(image_gsd)
            factor = 1.0 if target_gsd is None else image_gsd / target_gsd
            out_w = max(1, round(ds.width * factor))
            out_h = max(1, round(ds.height * factor))
            sx, sy = out_w / ds.width, out_h / ds.height
            resampling = (
                Resampling.nearest
                if (out_w, out_h) == (ds.width, ds.height)
                else (Resampling.average if factor < 1 else Resampling.bilinear)
            )
            chip_frame = frame @ Affine.scale(1.0 / sx, 1.0 / sy)
            gsd_values.append(image_gsd / ((sx + sy) / 2))
            gsd_sources.append("resampled" if target_gsd is not None else how)

            # objects in output pixels
            geoms: list[BaseGeometry] = []
            cls_idx: list[int] = []
            refs: list[Any] = []
            objs: list[int] = []
            image_box = box(0, 0, out_w, out_h)
            for k, inst in enumerate(img.instances):
                target = mapping.target(inst.name)
                if target is None or target not in lookup:
                    continue
                poly, repaired = _clean(inst.geometry)
                n_repaired += int(repaired)
                if poly is None:
                    n_invalid += 1
                    continue
                if (sx, sy) != (1.0, 1.0):
                    poly = scale_geometry(poly, sx, sy, origin=(0, 0))
                if not poly.intersects(image_box):
                    n_outside += 1
                    continue
                object_id += 1
                geoms.append(poly)
                cls_idx.append(lookup[target])
                refs.append(inst.ref if inst.ref is not None else k)
                objs.append(object_id)
            n_labels += len(geoms)
            tree = shapely.STRtree(np.asarray(geoms, dtype=object)) if geoms else None
            areas = [g.area for g in geoms]
            stem = _unique_stem(img.name, used_names)
            crs_wkt = ds.crs.to_wkt() if georef else None
            profile = {
                "driver": "GTiff",
                "count": len(sel),
                "dtype": dtype,
                "crs": crs_wkt,
                "nodata": None,
                "compress": "deflate",
            }

            cells = _windows(out_w, out_h, size, overlap)
            whole_window = PixelWindow(0, 0, out_w, out_h)
            whole_read = (
                len(cells) > 1
                and ds.driver in _SEQUENTIAL_DRIVERS
                and out_w * out_h * len(sel) * np.dtype(dtype).itemsize <= _WHOLE_READ_BYTES
            )
            whole: tuple[npt.NDArray[Any], npt.NDArray[np.bool_]] | None = None
            for grid_row, grid_col, w in cells:
                chip_box = box(w.col_off, w.row_off, w.col_end, w.row_end)
                hits = [] if tree is None else tree.query(chip_box, predicate="intersects")
                chip_anns: list[tuple[dict[str, Any], int]] = []
                for i in sorted(int(j) for j in hits):
                    part = polygonal(geoms[i].intersection(chip_box))
                    if part is None:
                        continue
                    visible = part.area
                    if (
                        visible < min_visible_fraction * areas[i] - 1e-9
                        and visible < min_visible_pixels
                    ):
                        n_slivers += 1
                        continue
                    seg = _segment(translate(part, -w.col_off, -w.row_off), w.width, w.height)
                    if seg is None:
                        n_slivers += 1
                        continue
                    chip_anns.append(
                        (
                            {
                                "id": 0,
                                "image_id": 0,
                                "category_id": cls_idx[i] + 1,
                                **seg,
                                "iscrowd": 0,
                                "source_ref": refs[i],
                            },
                            objs[i],
                        )
                    )
                if not chip_anns and rng.random() >= keep_empty_fraction:
                    continue
                if whole_read:
                    if whole is None:
                        whole = _read_chip(ds, plan, whole_window, (sx, sy), resampling, sel)
                    rows = slice(w.row_off, w.row_end)
                    cols = slice(w.col_off, w.col_end)
                    data = np.ascontiguousarray(whole[0][:, rows, cols])
                    valid = whole[1][rows, cols]
                else:
                    data, valid = _read_chip(ds, plan, w, (sx, sy), resampling, sel)
                if not valid.any():
                    continue
                if not chip_anns:
                    n_empty += 1
                flat = data.reshape(len(sel), -1)[:, valid.ravel()]
                if flat.shape[1] > per_image_budget:
                    pick = rng.choice(flat.shape[1], per_image_budget, replace=False)
                    flat = flat[:, pick]
                samples.append(list(flat))
                name = f"{stem}.tif" if grid_row < 0 else f"{stem}_r{grid_row}_c{grid_col}.tif"
                _write_chip(
                    out / IMAGES_DIR / name,
                    data,
                    {**profile, "width": w.width, "height": w.height},
                    tile_transform(chip_frame, w),
                )
                max_side = max(max_side, w.width, w.height)
                image_id = len(chip_images) + 1
                chip_images.append(
                    {
                        "id": image_id,
                        "file_name": f"{IMAGES_DIR}/{name}",
                        "width": w.width,
                        "height": w.height,
                        "source_image": str(img.path),
                        "label_file": img.label_file,
                        "window": [w.col_off, w.row_off, w.width, w.height],
                        "scale": [sx, sy],
                        "gsd": gsd_values[-1],
                        "georeferenced": georef,
                    }
                )
                for ann, obj in chip_anns:
                    ann["id"] = len(annotations) + 1
                    ann["image_id"] = image_id
                    annotations.append(ann)
                    ann_objects.append(obj)
        if progress is not None:
            progress(done, len(images))

    # ---- folder-level facts
    assert dtype is not None
    if not annotations:
        raise LabelError(
            f"{src_name}: no object left inside the images ({n_invalid} invalid geometries, "
            f"{n_outside} outside their image, {n_slivers} without a pixel or too small); "
            "check that the labels are in image pixels"
        )
    warns: list[str] = []
    folder_gsd = float(target_gsd) if target_gsd is not None else float(np.median(gsd_values))
    if min(gsd_values) > 0 and max(gsd_values) / min(gsd_values) > 1.25:
        warns.append(
            f"the images' GSDs range from {min(gsd_values):.3g} to {max(gsd_values):.3g} m; the "
            f"folder records {folder_gsd:.3g} m (pass --target-gsd to resample them to one GSD)"
        )
    gsd_source = "+".join(dict.fromkeys(gsd_sources))
    norm = _norm_stats(samples, sel, dtype)
    balance, balance_warns = _class_balance(
        class_names, annotations, ann_objects, folder_gsd * folder_gsd, imbalance_ratio
    )
    warns.extend(balance_warns)
    for msg in warns:
        logger.warning("%s", msg)
    crs_wkt_all = next(iter(crs_values)) if len(crs_values) == 1 else None
    geoseg_block: dict[str, Any] = {
        "norm_stats": norm.to_dict(),
        "classes": list(class_names),
        "bands": list(sel),
        "gsd": folder_gsd,
        "gsd_units": "metre",
        "gsd_source": gsd_source,
        "crs_wkt": crs_wkt_all,
        "frame": "pixel frame (x = col * gsd, y = -row * gsd, no CRS) for images without "
        "georeference; the image's own transform otherwise",
        "tile_size": max_side or size,
        "overlap": overlap,
        "scene": src_name,
        "dtype": dtype,
        "nodata": None,
        "min_visible_fraction": min_visible_fraction,
        "min_visible_pixels": min_visible_pixels,
        "keep_empty_fraction": keep_empty_fraction,
        "seed": seed,
        "source": {
            "format": fmt,
            "path": src_name,
            "images": len(images),
            "class_mapping": mapping.to_dict(),
            "instances": dict(sorted(kept.items())),
            "dropped": dict(sorted(dropped.items())),
            **{k: int(v) for k, v in counts.items()},
        },
    }
    geoseg_block.update(metadata or {})
    ann_path = out / ANNOTATIONS_FILE
    bal_path = out / CLASS_BALANCE_FILE
    atomic_write_json(
        bal_path,
        {
            "scene": src_name,
            "classes": [b.to_dict() for b in balance],
            "warnings": warns,
            "n_chips": len(chip_images),
            "n_empty_chips": n_empty,
            "n_annotations": len(annotations),
        },
    )
    write_coco(
        ann_path,
        chip_images,
        annotations,
        class_names,
        info={
            "description": f"geoseg chips imported from {fmt} {src_name}",
            "version": __version__,
        },
        extra={"geoseg": geoseg_block},
        indent=1,
    )
    chips = ChipSummary(
        out_dir=str(out),
        annotations_path=str(ann_path),
        class_balance_path=str(bal_path),
        classes=class_names,
        n_chips=len(chip_images),
        n_empty_chips=n_empty,
        n_annotations=len(annotations),
        n_labels=n_labels,
        n_repaired=n_repaired,
        n_dropped_geometry=n_invalid,
        n_dropped_class=sum(dropped.values()),
        n_outside=n_outside,
        n_slivers=n_slivers,
        class_balance=balance,
        warnings=tuple(warns),
    )
    logger.info(
        "%s: imported %d images as %d chips (%d empty), %d annotations in %s",
        src_name,
        len(images),
        chips.n_chips,
        n_empty,
        chips.n_annotations,
        out,
    )
    return ImportSummary(
        format=fmt,
        source=src_name,
        chips=chips,
        val=None,
        classes=class_names,
        n_images=len(images),
        instances=dict(kept),
        dropped=dict(dropped),
        n_crowd=int(counts.get("n_crowd", 0)),
        n_box_masks=int(counts.get("n_box_masks", 0)),
        n_invalid=n_invalid,
        gsd=folder_gsd,
        gsd_source=gsd_source,
        warnings=tuple(warns),
    )
