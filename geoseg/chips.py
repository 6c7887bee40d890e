"""Training chips: georeferenced chip GeoTIFFs plus COCO instance labels, from a scene and vectors.

:func:`make_chips` cuts a scene into the same overlapping grid the predictor uses
(:func:`geoseg.tiling.make_grid`), writes each chip as a GeoTIFF in the scene's own dtype (not
normalised; selected bands; nodata kept) and writes one COCO file with the labels clipped to
each chip, in chip pixels. Layout of the output directory ``DIR``::

    DIR/images/<scene-stem>_r<grid row>_c<grid col>.tif
    DIR/annotations.json     COCO ("images", "annotations", "categories") + a "geoseg" block
    DIR/class_balance.json   per-class instance/chip counts and object sizes

Decisions (documented here and in ``geoseg chips --help``):

* **One directory per scene.** ``annotations.json`` carries the scene's normalisation
  statistics, CRS and GSD, so scenes are not merged: writing into a directory that already holds
  chips is an error unless ``overwrite=True`` (which first removes the chips listed there).
  Training takes a list of directories.
* **Segmentations** follow the label's *rasterised footprint* in the chip: the pixels whose
  centres lie inside the label clipped to the chip. A footprint without holes is stored as COCO
  polygons tracing its pixel edges (one exterior ring per 4-connected part, chip pixel-edge
  coordinates); a footprint with holes (courtyards) as compressed COCO RLE. Either way
  ``pycocotools`` ``COCO.annToMask`` returns exactly the footprint (checked for every
  annotation while writing; RLE is the fallback). The label's own vertices are not stored:
  pycocotools rasterises slanted polygon edges differently from the pixel-centre rule.
  ``area`` is the footprint's pixel count and ``bbox`` its tight pixel-edge box
  ``[x, y, w, h]``; ``source_index`` (an extra key) is the 0-based row of the object in the
  labels file.
* **Slivers**: an object cut by a chip border is clipped to the chip; the clipped part is dropped
  when it keeps less than ``min_visible_fraction`` (default 25 %) of the object's area *and* is
  smaller than ``min_visible_pixels`` (default 1024 px, e.g. 32 x 32) -- a large building cut in
  half still teaches the model. Parts whose footprint has no pixel are dropped too.
* **Empty chips** (no annotation) are kept with probability ``keep_empty_fraction`` (seeded);
  chips without a single valid pixel (all nodata) are never written.
* **Labels** are reprojected to the scene CRS; labels without a CRS are refused (unless the
  scene has none either: then label coordinates are taken in the scene's own frame). Invalid
  geometries are repaired with ``shapely.make_valid``; empty and non-polygonal ones are dropped;
  both are counted in the summary and logged.
* **Class balance**: a class is flagged as under-represented when it has no instance or fewer
  than ``1 / imbalance_ratio`` of the instances of the most frequent class.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely.affinity import affine_transform
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geoseg._version import __version__
from geoseg.coco import (
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    mask_bbox,
    read_coco,
    segmentation_from_mask,
    write_coco,
)
from geoseg.errors import ConfigError, ExportError, LabelError
from geoseg.geometry import apply_affine, polygonal
from geoseg.io import atomic_write, atomic_write_json, read_vectors
from geoseg.raster import (
    compute_norm_stats,
    ground_sample_distance_m,
    gsd_scale,
    open_scene,
    read_window_raw,
    validate_bands,
)
from geoseg.tiling import make_grid, tile_transform
from geoseg.types import NormStats, PixelWindow, SceneInfo

__all__ = [
    "ANNOTATIONS_FILE",
    "CLASS_BALANCE_FILE",
    "IMAGES_DIR",
    "TRAIN_DIR",
    "VAL_AREA_FILE",
    "VAL_DIR",
    "ChipSummary",
    "ClassBalance",
    "SplitSummary",
    "chip_folder_outputs",
    "format_class_balance",
    "make_chips",
    "make_split_chips",
    "pixel_frame_transform",
    "split_windows",
]

logger = logging.getLogger(__name__)

CLASS_BALANCE_FILE: Final = "class_balance.json"


@dataclass(frozen=True, slots=True)
class ClassBalance:
    """Per-class statistics of the written chips.

    Attributes:
        name: class name; category id is its 1-based position in the class list.
        instances: annotations of the class (an object cut by chip borders counts once per
            chip it appears in).
        objects: distinct source labels with at least one annotation.
        chips: chips holding at least one instance of the class.
        area_px: ``(min, 25th percentile, median, 75th percentile, max)`` annotation area in
            chip pixels (zeros when there is no instance).
        area_m2: the same in square metres, ``None`` when the scene has no CRS.
        under_represented: flagged by the imbalance rule (see module docstring).
    """

    name: str
    instances: int
    objects: int
    chips: int
    area_px: tuple[float, float, float, float, float]
    area_m2: tuple[float, float, float, float, float] | None
    under_represented: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (as written to ``class_balance.json``)."""
        return {
            "name": self.name,
            "instances": self.instances,
            "objects": self.objects,
            "chips": self.chips,
            "area_px": dict(zip(_QUANTILE_KEYS, self.area_px, strict=True)),
            "area_m2": None
            if self.area_m2 is None
            else dict(zip(_QUANTILE_KEYS, self.area_m2, strict=True)),
            "under_represented": self.under_represented,
        }


_QUANTILE_KEYS: Final = ("min", "p25", "median", "p75", "max")


@dataclass(frozen=True, slots=True)
class ChipSummary:
    """What :func:`make_chips` wrote and dropped.

    Attributes:
        out_dir: the output directory.
        annotations_path: the COCO file; class_balance_path: the class-balance JSON.
        classes: class names (category ids are 1-based positions).
        n_chips: chips written; n_empty_chips: of which without annotation.
        n_annotations: COCO annotations written.
        n_labels: labels used (polygonal, inside the scene, of a known class).
        n_repaired: invalid geometries repaired with ``make_valid``.
        n_dropped_geometry: labels dropped as empty or not polygonal.
        n_dropped_class: labels dropped because their class is not in ``classes``.
        n_outside: labels outside the scene.
        n_slivers: clipped parts dropped by the sliver rule (or without any pixel).
        class_balance: per-class statistics, in class order.
        warnings: human-readable warnings (under-represented classes...).
        n_not_reviewed: reviewed labels only: features whose status is not ``ok`` (never
            truth).
        n_chips_unreviewed: reviewed labels only: chips skipped because they reach outside the
            reviewed area or touch a feature not reviewed.
        review: reviewed labels only: :meth:`geoseg.review.Review.summary` (also in the
            folder's ``"geoseg"`` block).
    """

    out_dir: str
    annotations_path: str
    class_balance_path: str
    classes: tuple[str, ...]
    n_chips: int
    n_empty_chips: int
    n_annotations: int
    n_labels: int
    n_repaired: int
    n_dropped_geometry: int
    n_dropped_class: int
    n_outside: int
    n_slivers: int
    class_balance: tuple[ClassBalance, ...]
    warnings: tuple[str, ...]
    n_not_reviewed: int = 0
    n_chips_unreviewed: int = 0
    review: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True, slots=True)
class _Labels:
    geoms: npt.NDArray[Any]  # shapely geometries in scene pixels
    class_idx: npt.NDArray[np.int64]  # 0-based
    source_index: npt.NDArray[np.int64]  # row of each label in the input labels
    classes: tuple[str, ...]
    n_repaired: int
    n_dropped_geometry: int
    n_dropped_class: int
    n_outside: int


def _load_labels(
    labels: str | os.PathLike[str] | Any,
    info: SceneInfo,
    *,
    class_column: str,
    classes: Sequence[str] | None,
) -> _Labels:

    name = str(labels) if isinstance(labels, str | os.PathLike) else "labels"
    gdf = read_vectors(labels, what="labels")
    if len(gdf) == 0:
        raise LabelError(f"{name}: holds no features; nothing to cut chips for.")

    if gdf.crs is None:
        if info.crs_wkt is not None:
            raise LabelError(
                f"{name}: the labels have no CRS, so they cannot be placed on {info.path}. Set "
                "it, e.g. `ogr2ogr -a_srs EPSG:xxxx out.gpkg in.gpkg` or gdf.set_crs(...)."
            )
        logger.warning(
            "%s and %s have no CRS: label coordinates are taken in the scene's frame",
            name,
            info.path,
        )
    elif info.crs_wkt is None:
        raise LabelError(
            f"{info.path}: the scene has no CRS but the labels {name} have one ({gdf.crs}); "
            "georeference the scene first (gdal_edit.py -a_srs ...)."
        )
    else:
        from pyproj import CRS

        scene_crs = CRS.from_wkt(info.crs_wkt)
        if not CRS(gdf.crs).equals(scene_crs, ignore_axis_order=True):
            logger.info("reprojecting labels %s from %s to the scene CRS", name, gdf.crs)
            gdf = gdf.to_crs(scene_crs)

    # classes
    if class_column in gdf.columns:
        values = np.asarray([str(v) for v in gdf[class_column]], dtype=object)
    elif classes is not None and len(classes) == 1:
        values = np.full(len(gdf), str(classes[0]), dtype=object)
    else:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise LabelError(
            f"{name}: no class column {class_column!r} (columns: {cols}); pass class_column / "
            "--class-column, or a single class name to label every feature with it."
        )
    if classes is None:
        class_names = tuple(sorted(set(values.tolist())))
    else:
        class_names = tuple(str(c) for c in classes)
        if len(set(class_names)) != len(class_names):
            raise LabelError(f"duplicate class names in {class_names}")
    lookup = {c: i for i, c in enumerate(class_names)}
    known = np.asarray([v in lookup for v in values], dtype=bool)
    n_dropped_class = int((~known).sum())
    if n_dropped_class:
        unknown = sorted(set(values[~known].tolist()))
        logger.warning(
            "%s: %d labels of classes %s not in %s were skipped",
            name,
            n_dropped_class,
            unknown,
            list(class_names),
        )

    # geometries: repair, keep polygonal
    raw = np.asarray(gdf.geometry.values, dtype=object)
    n_repaired = 0
    n_dropped_geometry = 0
    keep_geoms: list[BaseGeometry] = []
    keep_cls: list[int] = []
    keep_rows: list[int] = []
    for row, (geom, val, ok) in enumerate(zip(raw, values, known, strict=True)):
        if not ok:
            continue
        if geom is not None and not geom.is_empty and not geom.is_valid:
            geom = shapely.make_valid(geom)
            n_repaired += 1
        poly = polygonal(geom)
        if poly is None or poly.area <= 0:
            n_dropped_geometry += 1
            continue
        keep_geoms.append(poly)
        keep_cls.append(lookup[val])
        keep_rows.append(row)
    if n_repaired:
        logger.warning("%s: repaired %d invalid geometries (shapely.make_valid)", name, n_repaired)
    if n_dropped_geometry:
        logger.warning("%s: dropped %d empty or non-polygonal geometries", name, n_dropped_geometry)
    if not keep_geoms and n_dropped_class == len(gdf) and len(gdf):
        raise LabelError(
            f"{name}: none of the labels' classes {sorted(set(values.tolist()))} is among the "
            f"classes asked for {list(class_names)}; check --classes and --class-column"
        )
    if not keep_geoms:
        kinds = sorted({str(k) for k in gdf.geometry.geom_type.dropna()})
        raise LabelError(
            f"{name}: no usable polygon labels (all empty, non-polygonal or skipped; geometry "
            f"types {kinds}); give polygons of the objects (e.g. buffer points to their size)"
        )

    # to scene pixels
    geoms = apply_affine(np.asarray(keep_geoms, dtype=object), ~info.transform)
    inside = shapely.intersects(geoms, box(0, 0, info.width, info.height))
    n_outside = int((~inside).sum())
    if not inside.any():
        bounds = shapely.total_bounds(np.asarray(keep_geoms, dtype=object))
        t = info.transform
        x0, x1 = sorted((t.c, t.c + t.a * info.width))
        y0, y1 = sorted((t.f, t.f + t.e * info.height))
        raise LabelError(
            f"{name}: no label overlaps the scene {info.path}. Label bounds (scene CRS) "
            f"{tuple(round(float(b), 3) for b in bounds)}, scene bounds "
            f"{(round(x0, 3), round(y0, 3), round(x1, 3), round(y1, 3))}. Check that labels "
            "and scene cover the same area and that the labels' CRS is declared correctly."
        )
    if n_outside:
        logger.info("%s: %d labels lie outside the scene", name, n_outside)
    return _Labels(
        geoms=geoms[inside],
        class_idx=np.asarray(keep_cls, dtype=np.int64)[inside],
        source_index=np.asarray(keep_rows, dtype=np.int64)[inside],
        classes=class_names,
        n_repaired=n_repaired,
        n_dropped_geometry=n_dropped_geometry,
        n_dropped_class=n_dropped_class,
        n_outside=n_outside,
    )


# ------------------------------------------------------------------ segmentation


def _write_chip(
    path: Path, data: npt.NDArray[Any], profile: dict[str, Any], transform: Affine
) -> None:
    """Write one chip GeoTIFF atomically (``data``: ``[bands, h, w]`` in the scene dtype)."""

    def write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", **profile, transform=transform) as dst:
            dst.write(data)

    atomic_write(path, write, make_parents=False)


def _prepare_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    ann = out_dir / ANNOTATIONS_FILE
    if ann.exists():
        if not overwrite:
            raise ExportError(
                f"{out_dir}: already holds chips ({ANNOTATIONS_FILE}). Use one directory per "
                "scene (training accepts a list of directories) or pass overwrite=True / "
                "--overwrite to replace them."
            )
        try:
            names = [im["file_name"] for im in read_coco(ann).images]
        except (LabelError, KeyError, TypeError) as err:
            raise ExportError(f"{ann}: cannot read the existing chips index: {err}") from err
        images = (out_dir / IMAGES_DIR).resolve()
        for name in names:
            p = (out_dir / name).resolve()
            if p.parent == images:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    try:
        (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{out_dir}: cannot create the output directory: {err}") from err


def _quantiles(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    q = np.percentile(np.asarray(values, dtype=np.float64), [0, 25, 50, 75, 100])
    return (float(q[0]), float(q[1]), float(q[2]), float(q[3]), float(q[4]))


def _class_balance(
    classes: tuple[str, ...],
    annotations: list[dict[str, Any]],
    ann_objects: list[int],
    pixel_area_m2: float | None,
    imbalance_ratio: float,
) -> tuple[tuple[ClassBalance, ...], tuple[str, ...]]:
    per_areas: list[list[float]] = [[] for _ in classes]
    per_chips: list[set[int]] = [set() for _ in classes]
    per_objects: list[set[int]] = [set() for _ in classes]
    for ann, obj in zip(annotations, ann_objects, strict=True):
        k = ann["category_id"] - 1
        per_areas[k].append(float(ann["area"]))
        per_chips[k].add(ann["image_id"])
        per_objects[k].add(obj)
    counts = [len(a) for a in per_areas]
    top = max(counts) if counts else 0
    top_name = classes[counts.index(top)] if counts else ""
    rows: list[ClassBalance] = []
    warns: list[str] = []
    for k, name in enumerate(classes):
        n = counts[k]
        under = n == 0 or (top > 0 and n * imbalance_ratio < top)
        if n == 0:
            warns.append(f"class {name!r} has no instance in the chips")
        elif under:
            warns.append(
                f"class {name!r} is under-represented: {n} instances vs {top} for "
                f"{top_name!r} (less than 1/{imbalance_ratio:g}); add labels or oversample it"
            )
        q = _quantiles(per_areas[k])
        rows.append(
            ClassBalance(
                name=name,
                instances=n,
                objects=len(per_objects[k]),
                chips=len(per_chips[k]),
                area_px=q,
                area_m2=None
                if pixel_area_m2 is None
                else (
                    q[0] * pixel_area_m2,
                    q[1] * pixel_area_m2,
                    q[2] * pixel_area_m2,
                    q[3] * pixel_area_m2,
                    q[4] * pixel_area_m2,
                ),
                under_represented=under,
            )
        )
    return tuple(rows), tuple(warns)


def format_class_balance(balance: Sequence[ClassBalance]) -> str:
    """Render the class balance as a plain-text table (what ``geoseg chips`` prints)."""
    header = (
        f"{'class':<16} {'instances':>9} {'objects':>8} {'chips':>6} "
        f"{'area px min':>11} {'median':>8} {'max':>8} {'median m2':>10}"
    )
    lines = [header, "-" * len(header)]
    for b in balance:
        m2 = "-" if b.area_m2 is None else f"{b.area_m2[2]:.1f}"
        flag = "  <- under-represented" if b.under_represented else ""
        lines.append(
            f"{b.name[:16]:<16} {b.instances:>9} {b.objects:>8} {b.chips:>6} "
            f"{b.area_px[0]:>11.0f} {b.area_px[2]:>8.0f} {b.area_px[4]:>8.0f} {m2:>10}{flag}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------ grid


def pixel_frame_transform(gsd: float) -> Affine:
    """The georeference geoseg gives an image that has none: its *pixel frame* in metres.

    ``x = col * gsd``, ``y = -row * gsd``: origin at the top-left corner of the top-left pixel,
    x to the right, y up (the north-up GeoTIFF convention), one pixel = ``gsd`` metres, no CRS.
    Chips cut from such an image carry this transform (offset to the chip), so their pixel
    size is the stated GSD; coordinates are local to the image and match no map.

    Example:
        >>> pixel_frame_transform(0.3) @ (10, 20)
        (3.0, -6.0)
    """
    if not gsd > 0:
        raise ConfigError(f"the GSD must be a positive number of metres, got {gsd}")
    return Affine(float(gsd), 0.0, 0.0, 0.0, -float(gsd), 0.0)


def _clip_region(info: SceneInfo, region: PixelWindow) -> PixelWindow:
    clipped = region.intersection(PixelWindow(0, 0, info.width, info.height))
    if clipped.area == 0:
        raise ConfigError(f"{info.path}: the chip region {region} does not overlap the scene")
    return clipped


def _chip_cells(
    info: SceneInfo,
    *,
    size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    region: PixelWindow | None,
) -> list[tuple[int, int, PixelWindow]]:
    """``(grid row, grid col, window in scene pixels)`` of every chip to cut.

    ``size`` and ``overlap`` are in scene pixels (``(x, y)`` for chips cut at another GSD,
    see :func:`_chip_scale`).

    Without ``region`` this is :func:`geoseg.tiling.make_grid` over the scene (windows of a
    scene smaller than a chip run past it: padding). With one, the grid covers the region and
    each window is cropped to it.
    """
    if region is None:
        grid = make_grid(info.width, info.height, tile_size=size, overlap=overlap)
        return [(t.row, t.col, t.window) for t in grid]
    r = _clip_region(info, region)
    cells: list[tuple[int, int, PixelWindow]] = []
    for t in make_grid(r.width, r.height, tile_size=size, overlap=overlap):
        w = t.window
        shifted = PixelWindow(w.col_off + r.col_off, w.row_off + r.row_off, w.width, w.height)
        cells.append((t.row, t.col, shifted.intersection(r)))
    return cells


def _scene_gsd_m(info: SceneInfo, scene_gsd: float | None) -> tuple[float, float] | None:
    """The scene's pixel size in metres: from its CRS, else the stated one, else ``None``."""
    if info.crs_wkt is not None:
        return ground_sample_distance_m(info)
    return None if scene_gsd is None else (float(scene_gsd), float(scene_gsd))


def _chip_scale(
    info: SceneInfo, gsd_m: tuple[float, float] | None, target_gsd: float | None
) -> tuple[float, float] | None:
    """Scene pixels per chip pixel ``(x, y)`` for chips cut at ``target_gsd`` metres.

    ``None`` when no target is given or the scene is within
    :data:`geoseg.raster.GSD_TOLERANCE` of it (chips cut as they are).

    Raises:
        ConfigError: a target for a scene whose GSD is unknown (no CRS, none stated).
    """
    if target_gsd is None:
        return None
    if gsd_m is None:
        raise ConfigError(
            f"{info.path}: the scene has no CRS and no stated GSD, so it cannot be cut at "
            f"{target_gsd:g} m; state its GSD (scene_gsd=, --gsd) or leave out the target"
        )
    ratio = gsd_scale(gsd_m, target_gsd)
    if ratio is None:
        logger.info("%s: GSD %.2f m is within tolerance of %g m", info.path, gsd_m[0], target_gsd)
        return None
    logger.info(
        "%s: scene %.2f m, chips cut at %g m: windows resampled by %.3g",
        info.path,
        gsd_m[0],
        target_gsd,
        ratio[0],
    )
    return (1.0 / ratio[0], 1.0 / ratio[1])


def _cell_size(
    size: int, overlap: int, scale: tuple[float, float] | None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Chip side and overlap in chip pixels -> ``((x, y) side, (x, y) overlap)`` in scene px."""
    if scale is None:
        return (size, size), (overlap, overlap)
    side = (max(1, round(size * scale[0])), max(1, round(size * scale[1])))
    over = (
        min(round(overlap * scale[0]), side[0] - 1),
        min(round(overlap * scale[1]), side[1] - 1),
    )
    return side, over


def _chip_layout(width: int, height: int) -> dict[str, Any]:
    """GeoTIFF size and tiling options of a ``width x height`` chip."""
    layout: dict[str, Any] = {"width": width, "height": height}
    if width % 16 == 0 and height % 16 == 0:
        layout.update(tiled=True, blockxsize=min(width, 256), blockysize=min(height, 256))
    return layout


# ---------------------------------------------------------------------- reviews


def _is_review(labels: Any, status_column: str) -> bool:
    """Whether ``labels`` (a path or a GeoDataFrame) has a review status column."""
    import geopandas as gpd

    if isinstance(labels, gpd.GeoDataFrame):
        return status_column in labels.columns
    if not isinstance(labels, str | os.PathLike):
        return False
    import pyogrio

    from geoseg.review import labels_layer

    try:
        fields = pyogrio.read_info(os.fspath(labels), layer=labels_layer(labels))["fields"]
    except Exception:  # unreadable: read_vectors reports it with the file's name
        return False
    return status_column in {str(f) for f in fields}


@dataclass(frozen=True, eq=False)
class _ReviewFilter:
    """Which chip windows a review allows: inside the reviewed area, no unreviewed feature.

    Attributes:
        area: the reviewed area in scene pixels.
        todo: the features not reviewed, in scene pixels.
        window: the bounding window of ``area`` (scene pixels, clipped to the scene).
    """

    area: BaseGeometry
    todo: npt.NDArray[Any]
    window: PixelWindow
    scene_box: BaseGeometry

    def __call__(self, w: PixelWindow) -> bool:
        b = _window_box(w).intersection(self.scene_box)
        if not self.area.contains(b):
            return False
        if not len(self.todo):
            return True
        # a todo feature that only touches the chip's edge has no pixel in it
        hit = shapely.intersects(self.todo, b) & ~shapely.touches(self.todo, b)
        return not bool(hit.any())


def _review_filter(review: Any, info: SceneInfo) -> _ReviewFilter:
    """The reviewed area and the unreviewed features of ``review`` in scene pixels."""
    import geopandas as gpd

    name = review.name
    if (review.crs is None) != (info.crs_wkt is None):
        raise LabelError(
            f"{name}: the reviewed labels and the scene {info.path} must both have a CRS or both "
            "have none"
        )
    area = gpd.GeoSeries([review.area], crs=review.crs)
    todo = gpd.GeoSeries(list(review.todo.geometry.values), crs=review.crs)
    if info.crs_wkt is not None:
        from pyproj import CRS

        scene_crs = CRS.from_wkt(info.crs_wkt)
        area, todo = area.to_crs(scene_crs), todo.to_crs(scene_crs)
    inv = ~info.transform
    scene_box = box(0, 0, info.width, info.height)
    area_px = polygonal(apply_affine(area.values[0], inv))
    area_px = None if area_px is None else polygonal(area_px.intersection(scene_box))
    if area_px is None or area_px.area < 1:
        raise LabelError(
            f"{name}: the reviewed area ({review.area_source}) does not cover a pixel of the "
            f"scene {info.path}; check that labels and scene are the same place"
        )
    todo_px = np.asarray(apply_affine(np.asarray(todo.values, dtype=object), inv), dtype=object)
    todo_px = todo_px[[g is not None and not g.is_empty for g in todo_px]]
    x0, y0, x1, y1 = area_px.bounds
    c0, r0 = math.floor(x0), math.floor(y0)
    window = PixelWindow(c0, r0, math.ceil(x1) - c0, math.ceil(y1) - r0)
    # half a pixel of slack: the area's vertices need not lie on pixel edges
    return _ReviewFilter(area_px.buffer(0.5, join_style="mitre"), todo_px, window, scene_box)


# ------------------------------------------------------------------------ main


def make_chips(
    scene: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Any,
    out_dir: str | os.PathLike[str],
    *,
    size: int = 512,
    overlap: int = 64,
    bands: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    class_column: str = "class",
    min_visible_fraction: float = 0.25,
    min_visible_pixels: float = 1024.0,
    keep_empty_fraction: float = 0.1,
    seed: int = 0,
    stats: NormStats | None = None,
    overwrite: bool = False,
    imbalance_ratio: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    region: PixelWindow | None = None,
    chip_filter: Callable[[PixelWindow], bool] | None = None,
    scene_gsd: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    target_gsd: float | None = None,
    reviewed_area: Any = None,
    status_column: str = "status",
) -> ChipSummary:
    """Cut training chips and COCO instance labels from a scene and vector labels.

    See the module docstring for the output layout and the rules (segmentation format, slivers,
    empty chips, label repair, class balance).

    **Reviewed labels** (model-assisted labelling, :mod:`geoseg.review`): when ``labels`` has
    a ``status_column`` (pre-labels from ``geoseg label`` edited in QGIS), only features whose
    status is ``ok`` are labels; the others are never rasterised. Chips are cut only inside
    the reviewed area (the file's ``reviewed_area`` layer, ``reviewed_area``, or the convex
    hull of the ok features): the grid is laid over the area's bounding window (chips cropped
    to it), and a chip is skipped when it reaches outside the area or touches a feature that
    is not ok, so an unreviewed object is neither a label nor background.

    Args:
        scene: the raster (any path :func:`geoseg.raster.open_scene` accepts).
        labels: vector labels (a path geopandas reads, or a GeoDataFrame) with polygon
            geometries and a class column; reprojected to the scene CRS.
        out_dir: output directory (created); one directory per scene.
        size: chip side in pixels.
        overlap: pixels shared by neighbouring chips (``0 <= overlap < size``).
        bands: 1-based band indexes written to the chips, in model-input order (None = all).
        classes: class names in category order (category id = position + 1); ``None`` = the
            sorted distinct values of ``class_column``. Labels of other classes are skipped.
        class_column: the labels' class attribute. When missing and ``classes`` has one name,
            every feature gets that class.
        min_visible_fraction: sliver rule, see the module docstring.
        min_visible_pixels: sliver rule, in chip pixels.
        keep_empty_fraction: probability of keeping a chip without annotation (0 = none).
        seed: seed of the empty-chip draw.
        stats: normalisation statistics to record (default: the scene's own, computed here).
        overwrite: replace the chips already in ``out_dir``.
        imbalance_ratio: class-balance warning threshold, see the module docstring.
        progress: called as ``progress(done, total)`` after each grid cell.
        region: cut the grid inside this window of scene pixels only (clipped to the scene);
            chips are cropped to it, so none reaches outside (a chip may then be smaller than
            ``size``). ``None`` = the whole scene. Used by :func:`make_split_chips`.
        chip_filter: ``chip_filter(window) -> bool`` for each chip window (scene pixels); a
            chip it refuses is skipped before any pixel is read.
        scene_gsd: for a scene without CRS (an image without georeference whose labels are in
            its pixels): its ground sample distance in metres, stated by the user. The chips
            then get the pixel frame of :func:`pixel_frame_transform` and the folder records
            this GSD in metres. Ignored (with a warning) for a scene with a CRS.
        metadata: extra keys merged into the ``"geoseg"`` block of ``annotations.json``
            (e.g. where the data came from, the split it belongs to).
        target_gsd: cut the chips at this ground sample distance in metres (a model's): a
            scene more than 10 % away from it is resampled window by window while it is read
            (GDAL average when shrinking, bilinear when enlarging; no copy of the scene) and
            the labels are rasterised on each chip's resampled grid. ``size``, ``overlap`` and
            ``min_visible_pixels`` are then in chip pixels at ``target_gsd``; ``region``,
            ``chip_filter`` windows and the recorded ``window`` of each chip stay in scene
            pixels. ``None``: the scene's own GSD.
        reviewed_area: the area a person reviewed (polygon vector file, GeoDataFrame or
            shapely geometry in the labels' CRS); with it, labels without a status column
            count as all reviewed. ``None``: see above.
        status_column: the review status attribute.

    Returns:
        A :class:`ChipSummary` (also see ``class_balance.json``).

    Raises:
        RasterReadError, UnsupportedTransformError, BandError: the scene is unusable.
        LabelError: labels unreadable, without CRS, without usable polygons, or not overlapping
            the scene.
        ExportError: ``out_dir`` already holds chips (without ``overwrite``) or is unwritable.
        ConfigError: invalid size/overlap/fractions, or a ``target_gsd`` for a scene whose
            GSD is unknown.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ConfigError(f"need size > 0 and 0 <= overlap < size, got size={size}, {overlap=}")
    if not 0.0 <= min_visible_fraction <= 1.0 or not 0.0 <= keep_empty_fraction <= 1.0:
        raise ConfigError("min_visible_fraction and keep_empty_fraction must be in [0, 1]")
    if imbalance_ratio < 1.0:
        raise ConfigError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")

    info = open_scene(scene)
    sel = validate_bands(info, bands if bands is not None or stats is None else stats.bands)
    norm = stats if stats is not None else compute_norm_stats(info, bands=sel)
    review = None
    review_filter: _ReviewFilter | None = None
    if reviewed_area is not None or _is_review(labels, status_column):
        from geoseg.review import read_review

        review = read_review(
            labels,
            reviewed_area=reviewed_area,
            status_column=status_column,
            require_status=reviewed_area is None,
        )
        review_filter = _review_filter(review, info)
        labels = review.truth
        region = (
            review_filter.window
            if region is None
            else _clip_region(info, region).intersection(review_filter.window)
        )
        if region.area == 0:
            raise ConfigError(
                f"{info.path}: the chip region and the reviewed area ({review.area_source}) "
                "do not overlap"
            )
        logger.info(
            "%s: %d reviewed labels, %d not reviewed; reviewed area: %s",
            review.name,
            len(review.truth),
            len(review.todo),
            review.area_source,
        )
    lab = _load_labels(labels, info, class_column=class_column, classes=classes)
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite=overwrite)

    gsd_m: tuple[float, float] | None = None
    chip_frame = info.transform
    if info.crs_wkt is not None:
        gsd_m = ground_sample_distance_m(info)
        if scene_gsd is not None:
            logger.warning(
                "%s is georeferenced: its GSD comes from its transform, scene_gsd=%g is ignored",
                info.path,
                scene_gsd,
            )
    elif scene_gsd is not None:
        if not scene_gsd > 0:
            raise ConfigError(f"scene_gsd must be a positive number of metres, got {scene_gsd}")
        gsd_m = (float(scene_gsd), float(scene_gsd))
        chip_frame = pixel_frame_transform(scene_gsd)
    scale = _chip_scale(info, gsd_m, target_gsd)  # scene px per chip px; None: as they are
    cell, cell_overlap = _cell_size(size, overlap, scale)
    if scale is not None and gsd_m is not None:
        gsd_m = (gsd_m[0] * cell[0] / size, gsd_m[1] * cell[1] / size)  # the chips' pixels
    stem = Path(info.path.rstrip("/")).stem or "scene"
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": len(sel),
        "dtype": info.dtype,
        "crs": info.crs_wkt,
        "nodata": info.nodata,
        "compress": "deflate",
    }

    tree = shapely.STRtree(lab.geoms)
    areas = shapely.area(lab.geoms)
    scene_box = box(0, 0, info.width, info.height)
    specs = _chip_cells(info, size=cell, overlap=cell_overlap, region=region)
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_objects: list[int] = []
    n_empty = 0
    n_slivers = 0
    n_unreviewed = 0
    with rasterio.open(info.path) as ds:
        for done, (grid_row, grid_col, w) in enumerate(specs, start=1):
            refused = chip_filter is not None and not chip_filter(w)
            if not refused and review_filter is not None and not review_filter(w):
                refused = True
                n_unreviewed += 1
            if refused:
                if progress is not None:
                    progress(done, len(specs))
                continue
            chip_box = box(w.col_off, w.row_off, w.col_end, w.row_end).intersection(scene_box)
            ch, cw = (
                (w.height, w.width)
                if scale is None
                else (max(1, round(w.height / scale[1])), max(1, round(w.width / scale[0])))
            )
            sx, sy = w.width / cw, w.height / ch  # scene px per chip px (1 unless resampled)
            data, valid = read_window_raw(ds, w, bands=sel, nodata=info.nodata, out_shape=(ch, cw))
            if not valid.any():
                if progress is not None:
                    progress(done, len(specs))
                continue
            image_id = len(images) + 1
            chip_anns: list[tuple[dict[str, Any], int]] = []
            for i in sorted(int(j) for j in tree.query(chip_box, predicate="intersects")):
                part = polygonal(lab.geoms[i].intersection(chip_box))
                if part is None:
                    continue
                visible = part.area
                if (
                    visible < min_visible_fraction * areas[i] - 1e-9
                    and visible / (sx * sy) < min_visible_pixels
                ):
                    n_slivers += 1
                    continue
                local = affine_transform(  # scene px -> chip px
                    part, [1 / sx, 0, 0, 1 / sy, -w.col_off / sx, -w.row_off / sy]
                )
                mask = rasterize(
                    [(local, 1)],
                    out_shape=(ch, cw),
                    transform=Affine.identity(),
                    dtype="uint8",
                ).astype(bool)
                if not mask.any():
                    n_slivers += 1
                    continue
                chip_anns.append(
                    (
                        {
                            "id": 0,
                            "image_id": image_id,
                            "category_id": int(lab.class_idx[i]) + 1,
                            "segmentation": segmentation_from_mask(mask),
                            "area": float(mask.sum()),
                            "bbox": mask_bbox(mask),
                            "iscrowd": 0,
                            "source_index": int(lab.source_index[i]),
                        },
                        i,
                    )
                )
            if not chip_anns:
                if rng.random() >= keep_empty_fraction:
                    if progress is not None:
                        progress(done, len(specs))
                    continue
                n_empty += 1
            name = f"{stem}_r{grid_row}_c{grid_col}.tif"
            _write_chip(
                out / IMAGES_DIR / name,
                data,
                {**profile, **_chip_layout(cw, ch)},
                tile_transform(chip_frame, w, (ch, cw)),
            )
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{IMAGES_DIR}/{name}",
                    "width": cw,
                    "height": ch,
                    "scene": info.path,
                    "window": [w.col_off, w.row_off, w.width, w.height],
                    "grid": [grid_row, grid_col],
                }
            )
            for ann, obj in chip_anns:
                ann["id"] = len(annotations) + 1
                annotations.append(ann)
                ann_objects.append(obj)
            if progress is not None:
                progress(done, len(specs))

    pixel_area_m2 = None if gsd_m is None else gsd_m[0] * gsd_m[1]
    balance, warns = _class_balance(
        lab.classes, annotations, ann_objects, pixel_area_m2, imbalance_ratio
    )
    for msg in warns:
        logger.warning("%s", msg)
    geoseg_block = {
        "norm_stats": norm.to_dict(),
        "classes": list(lab.classes),
        "bands": list(sel),
        "gsd": float((gsd_m[0] + gsd_m[1]) / 2) if gsd_m else float(sum(info.gsd) / 2),
        "gsd_units": "metre" if gsd_m else "pixel-size in scene units (no CRS)",
        "gsd_source": "stated"
        if gsd_m and info.crs_wkt is None
        else ("georeference" if gsd_m else None),
        "crs_wkt": info.crs_wkt,
        "tile_size": size,
        "overlap": overlap,
        "scene": info.path,
        "dtype": info.dtype,
        "nodata": None if info.nodata is None or math.isnan(info.nodata) else info.nodata,
        "min_visible_fraction": min_visible_fraction,
        "min_visible_pixels": min_visible_pixels,
        "keep_empty_fraction": keep_empty_fraction,
        "seed": seed,
    }
    if scale is not None:  # cut at target_gsd: "gsd" is the chips' pixel size
        geoseg_block["gsd_source"] = "resampled"
    if region is not None:
        r = _clip_region(info, region)
        geoseg_block["region"] = [r.col_off, r.row_off, r.width, r.height]
    if review is not None:
        geoseg_block["review"] = {**review.summary(), "chips_skipped": n_unreviewed}
    for key, value in (metadata or {}).items():
        geoseg_block[key] = value
    ann_path = out / ANNOTATIONS_FILE
    bal_path = out / CLASS_BALANCE_FILE
    atomic_write_json(
        bal_path,
        {
            "scene": info.path,
            "classes": [b.to_dict() for b in balance],
            "warnings": list(warns),
            "n_chips": len(images),
            "n_empty_chips": n_empty,
            "n_annotations": len(annotations),
        },
    )
    write_coco(
        ann_path,
        images,
        annotations,
        lab.classes,
        info={"description": f"geoseg training chips of {info.path}", "version": __version__},
        extra={"geoseg": geoseg_block},
        indent=1,
    )
    summary = ChipSummary(
        out_dir=str(out),
        annotations_path=str(ann_path),
        class_balance_path=str(bal_path),
        classes=lab.classes,
        n_chips=len(images),
        n_empty_chips=n_empty,
        n_annotations=len(annotations),
        n_labels=len(lab.geoms),
        n_repaired=lab.n_repaired,
        n_dropped_geometry=lab.n_dropped_geometry,
        n_dropped_class=lab.n_dropped_class,
        n_outside=lab.n_outside,
        n_slivers=n_slivers,
        class_balance=balance,
        warnings=warns,
        n_not_reviewed=0 if review is None else len(review.todo),
        n_chips_unreviewed=n_unreviewed,
        review=None if review is None else {**review.summary(), "chips_skipped": n_unreviewed},
    )
    logger.info(
        "%s: wrote %d chips (%d empty), %d annotations to %s",
        info.path,
        summary.n_chips,
        n_empty,
        summary.n_annotations,
        out,
    )
    return summary


# ------------------------------------------------------------------ area split

#: Sub-folders and the validation-area file written by :func:`make_split_chips`.
TRAIN_DIR: Final = "train"
VAL_DIR: Final = "val"
VAL_AREA_FILE: Final = "val_area.gpkg"


def chip_folder_outputs(
    out_dir: str | os.PathLike[str], *, split: bool = False, role: str = "out_dir"
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """What writing chips into ``out_dir`` may replace, for :func:`geoseg.io.check_no_overwrite`.

    Returns:
        ``(files, trees)``: the index and class-balance files (and, with ``split``, the
        validation-area file) as ``(role, path)``, and the ``images/`` folders, whose chips an
        ``overwrite`` run deletes, as ``(role, folder)``. With ``split`` the chip folders are
        ``out_dir/train`` and ``out_dir/val``.
    """
    out = Path(out_dir)
    folders = [out / TRAIN_DIR, out / VAL_DIR] if split else [out]
    files = [(role, d / name) for d in folders for name in (ANNOTATIONS_FILE, CLASS_BALANCE_FILE)]
    if split:
        files.append((role, out / VAL_AREA_FILE))
    return files, [(role, d / IMAGES_DIR) for d in folders]


@dataclass(frozen=True, slots=True)
class SplitSummary:
    """What :func:`make_split_chips` wrote.

    Attributes:
        train: the training chip folder (``OUT/train``).
        val: the validation chip folder (``OUT/val``).
        val_area: the validation area in scene pixels (a shapely polygon).
        train_region: the window the training grid was cut in (strip split), ``None`` when the
            training grid covers the scene minus the (buffered) validation polygon.
        gap: pixels between the validation area and the nearest training chip (at least).
        val_area_path: the validation area as a vector file in the scene CRS
            (``OUT/val_area.gpkg``; in the scene's own frame when it has no CRS).
    """

    train: ChipSummary
    val: ChipSummary
    val_area: BaseGeometry
    train_region: PixelWindow | None
    gap: int
    val_area_path: str


def split_windows(
    width: int,
    height: int,
    val_fraction: float,
    *,
    gap: int = 0,
    side: str = "end",
) -> tuple[PixelWindow, PixelWindow]:
    """Split a ``width x height`` scene into a training and a validation strip (scene pixels).

    The validation strip spans the whole shorter side and takes ``val_fraction`` of the longer
    one (rounded, at least one pixel), at its ``"end"`` (right or bottom) or ``"start"`` (left
    or top). The training window is the rest minus a ``gap`` of pixels next to the strip.

    Returns:
        ``(train_window, val_window)``, disjoint, ``gap`` pixels apart.

    Raises:
        ConfigError: ``val_fraction`` outside (0, 1), ``side`` unknown, negative ``gap``, or a
            training part of no pixel.

    Example:
        >>> train, val = split_windows(1000, 600, 0.2, gap=64)
        >>> (train.col_off, train.width), (val.col_off, val.width)
        ((0, 736), (800, 200))
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if side not in ("start", "end"):
        raise ConfigError(f"side must be 'start' or 'end', got {side!r}")
    if gap < 0:
        raise ConfigError(f"gap must be >= 0 pixels, got {gap}")
    length = max(width, height)
    n_val = min(max(1, round(val_fraction * length)), length - 1)
    n_train = length - n_val - gap
    if n_train < 1:
        raise ConfigError(
            f"a validation strip of {n_val} px plus a gap of {gap} px leaves no training pixel "
            f"on a {width} x {height} scene; lower val_fraction or the gap"
        )
    if side == "end":
        train_span, val_span = (0, n_train), (n_train + gap, n_val)
    else:
        train_span, val_span = (n_val + gap, n_train), (0, n_val)
    if width >= height:
        return (
            PixelWindow(train_span[0], 0, train_span[1], height),
            PixelWindow(val_span[0], 0, val_span[1], height),
        )
    return (
        PixelWindow(0, train_span[0], width, train_span[1]),
        PixelWindow(0, val_span[0], width, val_span[1]),
    )


def _val_polygon_px(val_area: str | os.PathLike[str] | Any, info: SceneInfo) -> BaseGeometry:
    """The validation area (vector file, GeoDataFrame or shapely geometry) in scene pixels."""
    if isinstance(val_area, BaseGeometry):
        geom: BaseGeometry | None = polygonal(val_area)
        name = "val_area (geometry, scene pixels)"
    else:
        name = str(val_area) if isinstance(val_area, str | os.PathLike) else "val_area"
        gdf = read_vectors(val_area, what="validation area", allow_empty=False)
        if gdf.crs is not None and info.crs_wkt is not None:
            from pyproj import CRS

            gdf = gdf.to_crs(CRS.from_wkt(info.crs_wkt))
        elif (gdf.crs is None) != (info.crs_wkt is None):
            raise LabelError(
                f"{name}: the validation area and the scene {info.path} must both have a CRS or "
                "both have none (then the area is in the scene's own frame)"
            )
        union = shapely.union_all(np.asarray(gdf.geometry.values, dtype=object))
        geom = polygonal(apply_affine(union, ~info.transform))
    if geom is not None:
        geom = polygonal(geom.intersection(box(0, 0, info.width, info.height)))
    if geom is None or geom.area <= 0:
        raise LabelError(f"{name}: the validation area has no polygon inside the scene {info.path}")
    return geom


def _write_val_area(path: Path, area_px: BaseGeometry, info: SceneInfo) -> None:
    import geopandas as gpd

    geom = apply_affine(area_px, info.transform)
    gdf = gpd.GeoDataFrame({"part": ["val"]}, geometry=[geom], crs=info.crs_wkt)

    def write(tmp: Path) -> None:
        tmp.unlink()
        gdf.to_file(tmp, driver="GPKG", layer="val_area")

    atomic_write(path, write)


def make_split_chips(
    scene: str | os.PathLike[str],
    labels: str | os.PathLike[str] | Any,
    out_dir: str | os.PathLike[str],
    *,
    val_fraction: float | None = None,
    val_area: str | os.PathLike[str] | Any = None,
    val_side: str = "end",
    gap: int | None = None,
    size: int = 512,
    overlap: int = 64,
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    overwrite: bool = False,
    scene_gsd: float | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> SplitSummary:
    """Cut one scene into a training and a validation chip folder, split by area.

    For a scene (or two) that must give both training and validation data: the validation
    area is either a strip along the scene's longer side (``val_fraction``, see
    :func:`split_windows`) or a polygon (``val_area``). **No training chip overlaps the
    validation area**, and at least ``gap`` pixels lie between them:

    * strip: the training grid is cut inside the training window only (chips cropped to it),
      the validation grid inside the strip;
    * polygon: the validation grid is cut inside the polygon's bounding window (chips that do
      not touch the polygon are skipped, so validation chips may hold pixels just outside it);
      the training grid covers the scene and every chip that intersects the polygon grown by
      ``gap`` is skipped.

    Objects that straddle the boundary are clipped to each part (the sliver rule of
    :func:`make_chips` applies). Both folders record the same normalisation statistics (the
    whole scene's, or ``stats``) so the validation chips are normalised as the training ones.

    Layout: ``OUT/train`` and ``OUT/val`` (chip folders as :func:`make_chips` writes them, their
    ``"geoseg"`` block has a ``"split"`` entry) and ``OUT/val_area.gpkg`` (the validation area
    in the scene CRS, e.g. for ``geoseg evaluate`` on predictions of the whole scene).

    Args:
        scene: the raster.
        labels: the vector labels, as :func:`make_chips`.
        out_dir: the output folder.
        val_fraction: fraction of the longer side given to the validation strip, in (0, 1).
        val_area: the validation area instead: a vector file or GeoDataFrame (polygons, in any
            CRS; reprojected), or a shapely geometry in scene pixels.
        val_side: where the strip lies: ``"end"`` (right/bottom) or ``"start"`` (left/top).
        gap: scene pixels kept free between the validation area and the training chips;
            default the ``overlap`` (in scene pixels).
        size: chip side in (chip) pixels.
        overlap: (chip) pixels shared by neighbouring chips.
        bands: 1-based bands written to the chips.
        stats: normalisation statistics to record (default: the whole scene's).
        overwrite: replace chips already in ``OUT/train`` / ``OUT/val``.
        scene_gsd: GSD in metres of a scene without CRS (see :func:`make_chips`).
        metadata: extra keys for both folders' ``"geoseg"`` blocks.
        progress: ``progress(done, total)`` over both grids.
        **options: the other :func:`make_chips` options (``classes``, ``class_column``,
            ``min_visible_fraction``, ``keep_empty_fraction``, ``seed``, ``target_gsd``...).

    Returns:
        A :class:`SplitSummary`.

    Raises:
        ConfigError: neither or both of ``val_fraction`` / ``val_area``, a negative ``gap``,
            or a split that leaves a part without chips.
        LabelError: the validation area is unreadable or misses the scene; and as
            :func:`make_chips`.
    """
    if (val_fraction is None) == (val_area is None):
        raise ConfigError("give exactly one of val_fraction (a strip) or val_area (a polygon)")
    info = open_scene(scene)
    # chip sizes in scene pixels (differ from size/overlap when cut at a target GSD)
    scale = _chip_scale(info, _scene_gsd_m(info, scene_gsd), options.get("target_gsd"))
    cell, cell_overlap = _cell_size(size, overlap, scale)
    gap_px = max(cell_overlap) if gap is None else int(gap)
    if gap_px < 0:
        raise ConfigError(f"gap must be >= 0 pixels, got {gap_px}")
    sel = validate_bands(info, bands if bands is not None or stats is None else stats.bands)
    norm = stats if stats is not None else compute_norm_stats(info, bands=sel)
    out = Path(out_dir)

    train_region: PixelWindow | None
    val_region: PixelWindow
    train_filter: Callable[[PixelWindow], bool] | None
    val_filter: Callable[[PixelWindow], bool] | None
    if val_fraction is not None:
        train_region, val_region = split_windows(
            info.width, info.height, val_fraction, gap=gap_px, side=val_side
        )
        val_px: BaseGeometry = box(
            val_region.col_off, val_region.row_off, val_region.col_end, val_region.row_end
        )
        train_filter = val_filter = None
    else:
        val_px = _val_polygon_px(val_area, info)
        x0, y0, x1, y1 = val_px.bounds
        c0, r0 = math.floor(x0), math.floor(y0)
        val_region = PixelWindow(c0, r0, math.ceil(x1) - c0, math.ceil(y1) - r0)
        train_region = None
        keep_out = val_px.buffer(gap_px, join_style="mitre") if gap_px > 0 else val_px

        def train_filter(w: PixelWindow) -> bool:
            return not keep_out.intersection(_window_box(w)).area > 0

        def val_filter(w: PixelWindow) -> bool:
            return val_px.intersection(_window_box(w)).area > 0

    split_info = {
        "val_area_px": shapely.to_wkt(val_px, rounding_precision=3),
        "gap": gap_px,
        "method": "strip" if val_fraction is not None else "polygon",
        "val_fraction": val_fraction,
        "val_side": val_side if val_fraction is not None else None,
    }
    n_train = len(_chip_cells(info, size=cell, overlap=cell_overlap, region=train_region))
    n_val = len(_chip_cells(info, size=cell, overlap=cell_overlap, region=val_region))
    total = n_train + n_val

    def part_progress(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        report = progress
        return lambda done, _total: report(offset + done, total)

    common: dict[str, Any] = {
        "size": size,
        "overlap": overlap,
        "bands": sel,
        "stats": norm,
        "overwrite": overwrite,
        "scene_gsd": scene_gsd,
        **options,
    }
    train = make_chips(
        scene,
        labels,
        out / TRAIN_DIR,
        region=train_region,
        chip_filter=train_filter,
        metadata={**(metadata or {}), "split": {"part": "train", **split_info}},
        progress=part_progress(0),
        **common,
    )
    val = make_chips(
        scene,
        labels,
        out / VAL_DIR,
        region=val_region,
        chip_filter=val_filter,
        metadata={**(metadata or {}), "split": {"part": "val", **split_info}},
        progress=part_progress(n_train),
        **common,
    )
    for part, summary in (("training", train), ("validation", val)):
        if summary.n_chips == 0:
            raise ConfigError(
                f"{info.path}: the {part} part holds no chip; move or resize the validation area"
            )
    area_path = out / VAL_AREA_FILE
    _write_val_area(area_path, val_px, info)
    logger.info(
        "%s: split by area: %d training chips, %d validation chips, gap %d px",
        info.path,
        train.n_chips,
        val.n_chips,
        gap_px,
    )
    return SplitSummary(
        train=train,
        val=val,
        val_area=val_px,
        train_region=train_region,
        gap=gap_px,
        val_area_path=str(area_path),
    )


def _window_box(w: PixelWindow) -> BaseGeometry:
    return box(w.col_off, w.row_off, w.col_end, w.row_end)
