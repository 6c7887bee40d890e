"""Masks to polygons in the scene CRS, with shape attributes.

Outlines follow **pixel edges**: each box-cropped mask is traced by
:func:`rasterio.features.shapes` with the affine of its mask box (:func:`shifted`, i.e.
:func:`rasterio.windows.transform` of the box window), so rasterising the polygon back onto
the scene grid reproduces the mask exactly
(tracing pixel *centres*, as contour finders do, shaves half a pixel off every side, which
costs small objects a lot of IoU). Holes are kept.

Geometry decisions:

* A mask whose pixels form several 4-connected parts (e.g. touching only at a corner) becomes a
  ``MultiPolygon`` of all its parts, so no pixel is lost; a one-part mask a ``Polygon``.
* Invalid outlines (rare; e.g. after simplification) are repaired with
  :func:`shapely.make_valid` and only their polygonal parts are kept.
* ``simplify_tolerance`` (scene CRS units, e.g. metres or degrees) simplifies with
  ``preserve_topology=True``, so rings neither collapse nor cross. Attributes are computed on
  the exact, unsimplified outline.

Attributes (one row per object):

* ``class``: the class name (``detections.classes[label]``, or the label as text when the
  detections carry no class names); ``score``: the detection score.
* ``area_m2``: area in square metres; ``length_m``/``width_m``: long and short side of the
  minimum rotated rectangle, in metres; ``heading_deg``: azimuth of that rectangle's long axis,
  in degrees clockwise from north (grid north of the frame the metres are measured in), in
  ``[0, 180)``.
* ``scene``: the ``scene`` argument (e.g. the scene's file name).

The class names in model order (``detections.classes``) are recorded in
``gdf.attrs["classes"]``; :func:`geoseg.export.write_vectors` numbers COCO categories by them.

Where the metres come from (:func:`geoseg.geometry.to_metric`): in a projected CRS, the CRS's
own linear unit converted to metres (so a UTM scene gives UTM metres). In a geographic CRS
(degrees) and in Web ("Pseudo") Mercator, whose metres are stretched by ``1 / cos(latitude)``,
the outlines are first projected onto a local transverse Mercator centred on the scene (scale 1
at its centre), which is exact to well under 0.1 % over a satellite scene.

Without a CRS (a bare PNG or JPEG, a GeoTIFF without one) there are no metres, and the result is
in pixel space throughout (:data:`PIXEL_COLUMNS`): geometries stay in the frame of
``transform`` (scene pixels for an identity transform, rows growing downwards), sizes are in
scene pixels, in columns that say so (``area_px``, ``length_px``, ``width_px``, instead of the
metric ones, which would be NaN), ``heading_deg`` is measured clockwise from the image's up
direction, and ``min_area_m2`` is compared with the area in the geometry's own units.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.geometry import polygonal, rectangle_axes, to_metric
from geoseg.types import Detections

if TYPE_CHECKING:
    import geopandas

__all__ = ["COLUMNS", "PIXEL_COLUMNS", "mask_to_geometry", "shifted", "vectorize"]

logger = logging.getLogger(__name__)

#: Columns of the GeoDataFrame :func:`vectorize` returns, in order.
COLUMNS = ("geometry", "class", "score", "area_m2", "length_m", "width_m", "heading_deg", "scene")
#: The columns without a CRS: sizes in scene pixels (``area_px`` in square pixels).
PIXEL_COLUMNS = (
    "geometry",
    "class",
    "score",
    "area_px",
    "length_px",
    "width_px",
    "heading_deg",
    "scene",
)


def shifted(transform: Affine, col: int, row: int) -> Affine:
    """``transform`` composed with a shift by ``(col, row)`` pixels.

    The affine of a mask cropped at scene pixel ``(col, row)``:
    :func:`rasterio.windows.transform` of a window at that offset.
    """
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    out: Affine = window_transform(Window(col, row, 0, 0), transform)
    return out


def mask_to_geometry(mask: npt.NDArray[Any], transform: Affine) -> Any:
    """Trace one mask's pixel edges.

    Args:
        mask: bool ``[h, w]``, the mask cropped to its box.
        transform: affine from the mask's own pixel grid (column, row of ``mask``) to the output
            frame, e.g. ``shifted(scene_transform, x1, y1)``.

    Returns:
        A shapely ``Polygon`` (one 4-connected part) or ``MultiPolygon`` with holes kept, or
        ``None`` for an empty mask.
    """
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape

    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return None
    parts = [
        shape(g)
        for g, v in shapes(m, mask=m.astype(bool), connectivity=4, transform=transform)
        if v
    ]
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    if not geom.is_valid:
        geom = polygonal(geom, repair=True)
    return geom


def vectorize(
    detections: Detections,
    *,
    transform: Affine,
    crs_wkt: str | None,
    scene: str = "",
    simplify_tolerance: float = 0.0,
    min_area_m2: float = 0.0,
) -> geopandas.GeoDataFrame:
    """Turn scene-pixel detections into polygons in the scene CRS (see the module docstring).

    Args:
        detections: objects in **scene pixels** (mask boxes and box-cropped masks), e.g. the
            output of :func:`geoseg.stitch.stitch`.
        transform: the scene's affine from scene pixels to the scene CRS.
        crs_wkt: WKT of the scene CRS, or ``None`` (geometries then stay in the frame of
            ``transform`` and sizes are in scene pixels: :data:`PIXEL_COLUMNS`).
        scene: value of the ``scene`` column (e.g. the scene's file name).
        simplify_tolerance: topology-preserving simplification tolerance in scene CRS units;
            0 keeps the exact pixel-edge outline.
        min_area_m2: objects smaller than this many square metres are dropped (without a CRS:
            the geometry's own area units).

    Returns:
        A GeoDataFrame with columns ``geometry, class, score, area_m2, length_m, width_m,
        heading_deg, scene`` (see :data:`COLUMNS`; without a CRS :data:`PIXEL_COLUMNS`), one
        row per non-empty mask, in input order, with the scene CRS (``None`` without one).

    Raises:
        ValueError: a negative ``simplify_tolerance`` or ``min_area_m2``.
    """
    import geopandas
    import shapely

    if simplify_tolerance < 0:
        raise ValueError(f"vectorize: simplify_tolerance must be >= 0, got {simplify_tolerance}")
    if min_area_m2 < 0:
        raise ValueError(f"vectorize: min_area_m2 must be >= 0, got {min_area_m2}")
    geoms: list[Any] = []
    keep: list[int] = []
    for k in range(len(detections)):
        x1, y1 = int(detections.mask_boxes[k, 0]), int(detections.mask_boxes[k, 1])
        g = mask_to_geometry(detections.masks[k], shifted(transform, x1, y1))
        if g is not None:
            geoms.append(g)
            keep.append(k)
    idx = np.asarray(keep, dtype=np.int64)
    garr = np.empty(len(geoms), dtype=object)
    garr[:] = geoms
    labels = detections.labels[idx]
    names = [
        detections.classes[int(lab)] if int(lab) < len(detections.classes) else str(int(lab))
        for lab in labels
    ]
    nan = np.full(len(garr), np.nan)
    columns = COLUMNS
    if crs_wkt is None:
        if len(garr):
            logger.warning(
                "vectorize: scene %r has no CRS; geometries are in the frame of its transform "
                "(scene pixels for an identity transform) and sizes in scene pixels (area_px, "
                "length_px, width_px)",
                scene,
            )
        length, width, heading = rectangle_axes(garr, y_up=transform.e < 0)
        size_for_filter = shapely.area(garr) if len(garr) else nan
        inv = ~transform
        pixels = shapely.transform(garr, lambda xy: np.column_stack(inv @ (xy[:, 0], xy[:, 1])))
        length_m, width_m, _ = rectangle_axes(pixels, y_up=False)  # scene pixels, not metres
        area_m2 = shapely.area(pixels) if len(garr) else nan
        columns = PIXEL_COLUMNS
    else:
        metric, factor = to_metric(garr, crs_wkt)
        length, width, heading = rectangle_axes(metric, y_up=True)
        area_m2 = shapely.area(metric) * factor**2 if len(garr) else nan
        length_m, width_m = length * factor, width * factor
        size_for_filter = area_m2
    sel = (
        np.flatnonzero(size_for_filter >= min_area_m2) if min_area_m2 > 0 else np.arange(len(garr))
    )
    out_geoms = garr[sel]
    if simplify_tolerance > 0 and len(out_geoms):
        out_geoms = shapely.simplify(out_geoms, simplify_tolerance, preserve_topology=True)
        bad = ~shapely.is_valid(out_geoms)
        for i in np.flatnonzero(bad):
            out_geoms[i] = polygonal(out_geoms[i], repair=True)
    data = {
        "class": [names[i] for i in sel],
        "score": detections.scores[idx][sel].astype(np.float64),
        "area_m2": np.asarray(area_m2, dtype=np.float64)[sel],
        "length_m": np.asarray(length_m, dtype=np.float64)[sel],
        "width_m": np.asarray(width_m, dtype=np.float64)[sel],
        "heading_deg": np.asarray(heading, dtype=np.float64)[sel],
        "scene": [scene] * len(sel),
    }
    gdf = geopandas.GeoDataFrame(
        data, geometry=geopandas.GeoSeries(list(out_geoms), crs=crs_wkt), crs=crs_wkt
    )
    if columns is PIXEL_COLUMNS:
        gdf = gdf.rename(columns=dict(zip(COLUMNS, PIXEL_COLUMNS, strict=True)))
    gdf = gdf[list(columns)]
    gdf.attrs["classes"] = tuple(detections.classes)
    logger.debug("vectorize: %d masks -> %d polygons", len(detections), len(gdf))
    return gdf
