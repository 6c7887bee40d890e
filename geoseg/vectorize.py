"""Masks to polygons in the scene CRS, with shape attributes.

Outlines follow **pixel edges**: each box-cropped mask is traced by
:func:`rasterio.features.shapes` with the affine of its mask box (:func:`shifted`, i.e.
:func:`rasterio.windows.transform` of the box window), so rasterising the polygon back onto
the scene grid reproduces the mask exactly
(tracing pixel *centres*, as contour finders do, shaves half a pixel off every side, which
costs small objects a lot of IoU). Holes are kept.

Geometry decisions:

* One object, one ``Polygon``: a mask whose pixels form several 4-connected parts (speckles,
  pixels touching only at a corner) keeps only its largest part
  (:func:`geoseg.geometry.main_polygon`, applied right after tracing and again after
  simplification), holes kept; attributes and ``min_area_m2`` are those of that part.
  :func:`mask_to_geometry` itself still returns every part.
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
from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.geometry import main_polygon, main_polygons, polygonal, rectangle_axes, to_metric
from geoseg.types import Detections

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "ATLAS_PIXELS",
    "COLUMNS",
    "PIXEL_COLUMNS",
    "mask_to_geometry",
    "shifted",
    "trace_outlines",
    "vectorize",
]

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


#: Pixels (padding included) of one atlas that :func:`trace_outlines` hands to GDAL at a time:
#: bounds the working memory (4 bytes per pixel) whatever the number of objects.
ATLAS_PIXELS = 1 << 22


def _affine_shift(
    transform: Affine, cols: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Offsets ``(c, f)`` of :func:`shifted` ``(transform, col, row)`` for ``[N]`` origins.

    The same floating-point operations as :func:`rasterio.windows.transform` and
    :class:`affine.Affine` (so the outlines are bit-identical to one trace per mask).
    """
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    col = cols.astype(np.float64)
    row = rows.astype(np.float64)
    x = col * a + row * b + c
    y = col * d + row * e + f
    return (c + 0.0 * f) + (x - c), (0.0 * c + f) + (y - f)


def _pack(
    heights: npt.NDArray[np.int64], widths: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int, int]:
    """Shelf-pack boxes ``[N]`` into one atlas with a 1-pixel gap around each.

    Returns:
        ``(col, row, atlas_height, atlas_width)``: the atlas pixel of each box's top-left corner.
    """
    ph, pw = heights + 1, widths + 1
    order = np.argsort(-ph, kind="stable")
    max_w = int(pw.max())
    run = max(max_w, int(np.sqrt(float((ph * pw).sum()))) + 1)
    start = np.cumsum(pw[order]) - pw[order]
    shelf = start // run
    col_sorted = start - shelf * run
    first = np.flatnonzero(np.r_[True, shelf[1:] != shelf[:-1]])
    shelf_h = ph[order][first]  # sorted by height: a shelf's first box is its tallest
    shelf_y = np.cumsum(shelf_h) - shelf_h
    row_sorted = shelf_y[np.searchsorted(shelf[first], shelf)]
    col = np.empty_like(col_sorted)
    row = np.empty_like(row_sorted)
    col[order], row[order] = col_sorted + 1, row_sorted + 1
    return col, row, int(shelf_h.sum()) + 1, run + max_w + 1


def _trace_chunk(
    masks: Sequence[npt.NDArray[Any]], shapes_hw: npt.NDArray[np.int64]
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
]:
    """Trace several masks with one :func:`rasterio.features.shapes` call.

    The masks are packed into one label atlas (1-pixel gaps, so no two touch) traced with
    4-connectivity; every polygon's coordinates are moved back to its own mask's pixel grid.

    Args:
        masks: ``[n]`` masks ``[h, w]`` (non-zero = object), none of them empty in size.
        shapes_hw: int ``[n, 2]``, their ``(h, w)``.

    Returns:
        ``(xy, ring_of_point, polygon_of_ring, mask_of_polygon)``: vertex coordinates ``[P, 2]``
        in each mask's own pixel grid (column, row of its corner), the ring of each vertex, the
        polygon of each ring (a polygon's first ring is its exterior), the mask of each polygon.
    """
    from rasterio.features import shapes

    h, w = shapes_hw[:, 0], shapes_hw[:, 1]
    col, row, ah, aw = _pack(h, w)
    atlas = np.zeros((ah, aw), dtype=np.int32)
    # as mask_to_geometry reads a mask: its uint8 cast, non-zero = object
    flat = np.concatenate([np.asarray(m).ravel() for m in masks]).astype(np.uint8) != 0
    sizes = h * w
    starts = np.cumsum(sizes) - sizes
    pix = np.flatnonzero(flat)
    owner = np.searchsorted(starts, pix, side="right") - 1
    local = pix - starts[owner]
    r, c = np.divmod(local, w[owner])
    atlas[row[owner] + r, col[owner] + c] = owner.astype(np.int32) + 1
    ring_len: list[int] = []
    ring_poly: list[int] = []
    poly_mask: list[int] = []
    points: list[Any] = []
    for geom, value in shapes(atlas, mask=atlas > 0, connectivity=4):
        for ring in geom["coordinates"]:
            ring_len.append(len(ring))
            ring_poly.append(len(poly_mask))
            points.extend(ring)
        poly_mask.append(int(value) - 1)
    n_pts = sum(ring_len)
    xy = np.fromiter(chain.from_iterable(points), dtype=np.float64, count=2 * n_pts).reshape(
        n_pts, 2
    )
    ring_of_point = np.repeat(np.arange(len(ring_len)), ring_len)
    polygon_of_ring = np.asarray(ring_poly, dtype=np.int64)
    mask_of_polygon = np.asarray(poly_mask, dtype=np.int64)
    m = mask_of_polygon[polygon_of_ring[ring_of_point]]
    xy[:, 0] -= col[m]
    xy[:, 1] -= row[m]
    return xy, ring_of_point, polygon_of_ring, mask_of_polygon


def trace_outlines(
    masks: Sequence[npt.NDArray[Any]],
    origins: npt.NDArray[Any],
    transform: Affine,
    *,
    atlas_pixels: int = ATLAS_PIXELS,
) -> npt.NDArray[Any]:
    """Pixel-edge outlines of many box-cropped masks, in a few GDAL calls.

    The same geometries as :func:`mask_to_geometry` of each mask with ``shifted(transform,
    *origins[k])`` (the same vertices, to the last bit; the ring start and part order may
    differ), but the masks are traced together: packed into label atlases of about
    ``atlas_pixels`` pixels each, one :func:`rasterio.features.shapes` call per atlas, the
    affine applied to all vertices at once and the shapely geometries built from coordinate
    arrays (:func:`shapely.linearrings`, :func:`shapely.polygons`).

    Args:
        masks: ``[N]`` masks, bool ``[h, w]`` each, cropped to their boxes.
        origins: int ``[N, 2]``, the ``(col, row)`` of each mask's top-left pixel in the frame
            of ``transform`` (scene pixels: the mask boxes' ``x1, y1``).
        transform: affine from that pixel frame to the output frame (the scene CRS).
        atlas_pixels: about how many pixels one atlas holds (working memory: 4 bytes each).

    Returns:
        Object ``[N]``: a ``Polygon`` (one 4-connected part) or ``MultiPolygon`` per mask,
        holes kept, ``None`` for an empty mask.
    """
    import shapely

    n = len(masks)
    out = np.full(n, None, dtype=object)
    if n == 0:
        return out
    hw = np.array([np.shape(m) for m in masks], dtype=np.int64).reshape(n, 2)
    pad = (hw[:, 0] + 1) * (hw[:, 1] + 1)
    chunk_of = (np.cumsum(pad) - pad) // max(int(atlas_pixels), 1)
    bounds = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1], True])
    parts: list[tuple[Any, ...]] = []
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        keep = np.flatnonzero(hw[lo:hi].min(axis=1) > 0) + lo
        if len(keep) == 0:
            continue
        xy, ring_pt, poly_ring, mask_poly = _trace_chunk([masks[i] for i in keep], hw[keep])
        parts.append((xy, ring_pt, poly_ring, keep[mask_poly]))
    if not parts:
        return out
    # one array of vertices, rings, polygons for all chunks (indices offset per chunk)
    xys, ring_pts, poly_rings, obj_polys = [], [], [], []
    n_rings = n_polys = 0
    for xy, ring_pt, poly_ring, obj_poly in parts:
        xys.append(xy)
        ring_pts.append(ring_pt + n_rings)
        poly_rings.append(poly_ring + n_polys)
        obj_polys.append(obj_poly)
        n_rings += len(poly_ring)
        n_polys += len(obj_poly)
    xy = np.concatenate(xys)
    ring_of_point = np.concatenate(ring_pts)
    polygon_of_ring = np.concatenate(poly_rings)
    object_of_polygon = np.concatenate(obj_polys)
    if len(object_of_polygon) == 0:
        return out
    org = np.asarray(origins, dtype=np.int64).reshape(n, 2)
    c0, f0 = _affine_shift(transform, org[:, 0], org[:, 1])
    obj = object_of_polygon[polygon_of_ring[ring_of_point]]
    a, b, _, d, e, _ = (float(v) for v in transform[:6])
    a1, b1, d1, e1 = a + 0.0 * d, b + 0.0 * e, 0.0 * a + d, 0.0 * b + e
    col, row = xy[:, 0], xy[:, 1]
    world = np.empty_like(xy)
    world[:, 0] = c0[obj] + col * a1 + row * b1
    world[:, 1] = f0[obj] + col * d1 + row * e1
    rings = shapely.linearrings(world, indices=ring_of_point)
    polygons = shapely.polygons(rings, indices=polygon_of_ring)
    out[:] = _one_geometry_per_object(polygons, object_of_polygon, n)
    present = np.flatnonzero(out != None)  # noqa: E711 - object array: elementwise
    bad = present[~shapely.is_valid(out[present])]
    for i in bad.tolist():
        out[i] = polygonal(out[i], repair=True)
    return out


def _one_geometry_per_object(
    polygons: npt.NDArray[Any], object_of_polygon: npt.NDArray[np.int64], n: int
) -> npt.NDArray[Any]:
    """Group ``[P]`` polygons by their object.

    Returns:
        Object ``[n]``: a ``Polygon`` for a one-part object, a ``MultiPolygon`` for several
        parts, ``None`` for none. (The one place that decides the geometry type per object.)
    """
    import shapely

    out = np.full(n, None, dtype=object)
    order = np.argsort(object_of_polygon, kind="stable")
    objs = object_of_polygon[order]
    counts = np.bincount(objs, minlength=n)
    single = counts[objs] == 1
    out[objs[single]] = polygons[order][single]
    multi = ~single
    if multi.any():
        mobj = objs[multi]
        uniq, grp = np.unique(mobj, return_inverse=True)
        out[uniq] = shapely.multipolygons(polygons[order][multi], indices=grp)
    return out


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
    traced = trace_outlines(detections.masks, detections.mask_boxes[:, :2], transform)
    idx = np.flatnonzero(traced != None)  # noqa: E711 - object array: elementwise
    garr = main_polygons(traced[idx])
    names = _class_names(detections.labels[idx], detections.classes)
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
            out_geoms[i] = main_polygon(out_geoms[i])
    data = {
        "class": names[sel],
        "score": detections.scores[idx][sel].astype(np.float64),
        "area_m2": np.asarray(area_m2, dtype=np.float64)[sel],
        "length_m": np.asarray(length_m, dtype=np.float64)[sel],
        "width_m": np.asarray(width_m, dtype=np.float64)[sel],
        "heading_deg": np.asarray(heading, dtype=np.float64)[sel],
        "scene": [scene] * len(sel),
    }
    gdf = geopandas.GeoDataFrame(
        data, geometry=geopandas.GeoSeries(out_geoms, crs=crs_wkt), crs=crs_wkt
    )
    if columns is PIXEL_COLUMNS:
        gdf = gdf.rename(columns=dict(zip(COLUMNS, PIXEL_COLUMNS, strict=True)))
    gdf = gdf[list(columns)]
    gdf.attrs["classes"] = tuple(detections.classes)
    logger.debug("vectorize: %d masks -> %d polygons", len(detections), len(gdf))
    return gdf


def _class_names(labels: npt.NDArray[Any], classes: Sequence[str]) -> npt.NDArray[Any]:
    """Class name per label, object ``[N]``.

    ``classes[label]``, or the label as text when ``classes`` has no such entry.
    """
    lab = np.asarray(labels, dtype=np.int64)
    table = np.empty(len(classes), dtype=object)
    table[:] = list(classes)
    out = np.empty(len(lab), dtype=object)
    known = (lab >= 0) & (lab < len(classes))
    out[known] = table[lab[known]]
    out[~known] = [str(int(v)) for v in lab[~known]]
    return out
