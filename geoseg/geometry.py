"""Geometry helpers shared by the stages: polygonal parts, rotated-rectangle axes, metric frames.

* :func:`polygonal` / :func:`polygonal_array`: the polygonal part of a geometry (points and
  lines dropped from collections, zero-area parts dropped), optionally after
  :func:`shapely.make_valid`. Used for labels (chips), predictions and truth (evaluate) and
  traced outlines (vectorize).
* :func:`main_polygon`: one object, one ``Polygon``: the largest polygonal part of an outline
  (holes kept), applied to each traced outline by :mod:`geoseg.vectorize`.
* :func:`pixel_boxes`: each geometry's axis-aligned box on the pixel grid (``--geometry box``).
* :func:`rectangle_axes`: length, width and heading of each geometry's minimum rotated
  rectangle (vectorize's attributes; count's lengths).
* Metric frames. A length in metres needs a frame whose units are metres on the ground:

  - a projected CRS whose unit is a length, **except Web ("Pseudo") Mercator** (EPSG:3857 and
    its aliases), is used as is; its unit times :func:`metres_per_unit` is metres
    (1.0 for metre CRSs, 0.3048 for international feet);
  - a geographic CRS (degrees) or Web Mercator, whose "metres" are stretched by
    ``1 / cos(latitude)`` (x2 at 60°), is projected first: :func:`to_metric` uses a transverse
    Mercator centred on the data (scale 1 at its centre, exact to well under 0.1 % over a
    satellite scene) for measuring objects; :func:`metric_crs` gives the data's UTM zone (a
    Lambert azimuthal equal-area frame centred on the data beyond UTM's 84°N / 80°S), a
    standard CRS, for grids that must line up between runs and for comparisons.

Geometries are shapely 2 objects in the CRS named by each function's ``crs`` argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "apply_affine",
    "is_metric_crs",
    "is_web_mercator",
    "local_metric_crs",
    "main_polygon",
    "main_polygons",
    "metres_per_unit",
    "metric_crs",
    "pixel_boxes",
    "polygonal",
    "polygonal_array",
    "rectangle_axes",
    "to_metric",
    "utm_crs",
]

_POLYGON_TYPES = ("Polygon", "MultiPolygon")


# --------------------------------------------------------------------------------------------
# polygonal parts


def polygonal(geom: Any, *, repair: bool = False) -> Any:
    """The polygonal part of one geometry: a ``Polygon``, a ``MultiPolygon`` or ``None``.

    A ``Polygon`` / ``MultiPolygon`` is returned as is (after repair, when asked). From a
    collection the polygons with a positive area are kept (points and lines dropped); several
    are unioned into one valid ``(Multi)Polygon``.

    Args:
        geom: a shapely geometry or ``None``, in any frame.
        repair: first apply :func:`shapely.make_valid` to an invalid geometry.

    Returns:
        The polygonal part, or ``None`` when there is none (``None``, empty, only points/lines).
    """
    import shapely

    if geom is None or geom.is_empty:
        return None
    if repair and not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in _POLYGON_TYPES:
        return geom if not geom.is_empty else None
    parts = [
        p
        for p in shapely.get_parts(geom)
        if p.geom_type in _POLYGON_TYPES and not p.is_empty and p.area > 0
    ]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in _POLYGON_TYPES else polygonal(merged)


def main_polygon(geom: Any) -> Any:
    """One object, one ``Polygon``: the largest polygonal part of ``geom``, holes kept.

    A traced mask whose pixels form several 4-connected parts (1-2 px speckles beside the
    object, or pixels touching it only at a corner) would otherwise be a ``MultiPolygon``,
    and a layer's geometry type would switch between scenes. The main part is the one with
    the largest area (ties: the first in the geometry's order); the other parts are dropped,
    however large, so the result is always a ``Polygon`` (or ``None``). Holes of the main part
    are kept; islands inside its holes are other parts and are dropped.

    Args:
        geom: a shapely geometry or ``None``, in any frame (areas compared in its units).

    Returns:
        A valid ``Polygon`` or ``None`` when ``geom`` has no polygonal part.
    """
    import shapely

    poly = polygonal(geom, repair=geom is not None and not geom.is_valid)
    if poly is None or poly.geom_type == "Polygon":
        return poly
    parts = shapely.get_parts(poly)
    return parts[int(np.argmax(shapely.area(parts)))]


def main_polygons(geoms: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """:func:`main_polygon` of every geometry of an array, vectorised for the common case.

    Valid ``Polygon`` entries (most traced masks) and ``None`` are kept as they are; each
    valid ``MultiPolygon`` gives its largest part (ties: the first part), the same choice as
    :func:`main_polygon`; anything else (invalid or not polygonal) goes through
    :func:`main_polygon` one by one.

    Args:
        geoms: object ``[N]`` array of shapely geometries or ``None``, in any frame.

    Returns:
        Object ``[N]`` array of ``Polygon`` or ``None``.
    """
    import shapely

    out = np.array(geoms, dtype=object).reshape(-1)
    if len(out) == 0:
        return out
    kind = shapely.get_type_id(out)  # -1 for None, 3 Polygon, 6 MultiPolygon
    present = np.flatnonzero(kind != -1)
    valid = np.zeros(len(out), dtype=bool)
    valid[present] = shapely.is_valid(out[present])
    multi = np.flatnonzero((kind == 6) & valid)
    if len(multi):
        parts, owner = shapely.get_parts(out[multi], return_index=True)
        # per owner, the largest part; ties keep the first part (lexsort is stable)
        order = np.lexsort((-shapely.area(parts), owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        out[multi[owner[first]]] = parts[first]
    for i in np.flatnonzero((kind != -1) & ~((kind == 3) & valid) & ~((kind == 6) & valid)):
        out[i] = main_polygon(out[i])
    return out


def pixel_boxes(geoms: Sequence[Any] | npt.NDArray[Any], transform: Any) -> npt.NDArray[Any]:
    """Each geometry's axis-aligned box on the pixel grid, as a ``Polygon`` in the same frame.

    The geometries are mapped to pixels with ``~transform``, their bounds widened to whole
    pixels (floor of the minimum, ceiling of the maximum, 1e-6 px tolerance) and the box's
    corners mapped back with ``transform``: for a pixel-edge outline, the box of its mask's
    pixels; for a north-up scene, a rectangle in the scene CRS.

    Args:
        geoms: ``[N]`` shapely geometries (or ``None``) in the frame of ``transform``.
        transform: the :class:`affine.Affine` from pixels (column, row) to that frame.

    Returns:
        Object ``[N]`` array of ``Polygon`` (``None`` where the input is ``None`` or empty).
    """
    import shapely

    g = np.asarray(geoms, dtype=object)
    out = np.empty(len(g), dtype=object)
    if len(g) == 0:
        return out
    inv = ~transform

    def apply(t: Any, xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    px = shapely.transform(g, lambda xy: apply(inv, xy))
    b = shapely.bounds(px)
    ok = np.isfinite(b).all(axis=1)
    c0, r0 = np.floor(b[:, 0] + 1e-6), np.floor(b[:, 1] + 1e-6)
    c1, r1 = np.ceil(b[:, 2] - 1e-6), np.ceil(b[:, 3] - 1e-6)
    boxes = shapely.box(c0[ok], r0[ok], c1[ok], r1[ok])
    out[ok] = shapely.transform(boxes, lambda xy: apply(transform, xy))
    return out


def polygonal_array(geoms: Sequence[Any] | npt.NDArray[Any], *, repair: bool = False) -> Any:
    """:func:`polygonal` of each geometry: object ``[N]`` array, ``None`` where none is left."""
    out = np.empty(len(geoms), dtype=object)
    out[:] = [polygonal(g, repair=repair) for g in geoms]
    return out


def apply_affine(geoms: Any, a: Any) -> Any:
    """Apply the affine ``a`` (an :class:`affine.Affine`) to a geometry or an array of them.

    E.g. ``apply_affine(g, ~transform)`` takes scene-CRS geometries to scene pixels.
    """
    import shapely

    return shapely.transform(
        geoms,
        lambda xy: np.column_stack(
            (a.a * xy[:, 0] + a.b * xy[:, 1] + a.c, a.d * xy[:, 0] + a.e * xy[:, 1] + a.f)
        ),
    )


# --------------------------------------------------------------------------------------------
# rotated-rectangle axes


def rectangle_axes(
    geoms: Sequence[Any] | npt.NDArray[Any], *, y_up: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Long side, short side and heading of each geometry's minimum rotated rectangle.

    Args:
        geoms: ``[N]`` shapely geometries, in one frame (sides come out in its units).
        y_up: ``True`` when y grows northwards/upwards (a CRS); ``False`` for image rows.

    Returns:
        ``(length, width, heading)``, float ``[N]`` each: the long and short side in the
        geometries' units and the long side's direction in degrees clockwise from up (north),
        in ``[0, 180)``. A line gives its length and width 0; a point 0 and 0; an empty
        geometry or ``None`` NaN.
    """
    import shapely

    g = np.asarray(geoms, dtype=object)
    n = len(g)
    if n == 0:
        z = np.zeros(0)
        return z, z, z.copy()
    rect = shapely.minimum_rotated_rectangle(g)
    coords, index = shapely.get_coordinates(rect, return_index=True)
    count = np.bincount(index, minlength=n)
    ok = count > 0
    first = np.searchsorted(index, np.arange(n))
    last = first + np.maximum(count, 1) - 1
    safe = np.vstack([coords, np.zeros((1, 2))]) if len(coords) else np.zeros((1, 2))
    first = np.where(ok, first, len(safe) - 1)
    last = np.where(ok, last, len(safe) - 1)
    p0 = safe[first]
    p1 = safe[np.minimum(first + 1, last)]
    p2 = safe[np.minimum(first + 2, last)]
    e1, e2 = p1 - p0, p2 - p1
    l1, l2 = np.hypot(e1[:, 0], e1[:, 1]), np.hypot(e2[:, 0], e2[:, 1])
    long_vec = np.where((l1 >= l2)[:, None], e1, e2)
    dx, dy = long_vec[:, 0], long_vec[:, 1]
    if not y_up:
        dy = -dy
    heading = np.degrees(np.arctan2(dx, dy)) % 180.0
    heading = np.where(np.isclose(heading, 180.0), 0.0, heading)
    nan = np.full(n, np.nan)
    return (
        np.where(ok, np.maximum(l1, l2), nan),
        np.where(ok, np.minimum(l1, l2), nan),
        np.where(ok, heading, nan),
    )


# --------------------------------------------------------------------------------------------
# metric frames


def _crs(crs: Any) -> Any:
    from pyproj import CRS

    return CRS.from_user_input(crs)


def is_web_mercator(crs: Any) -> bool:
    """Whether ``crs`` is Web ("Pseudo", "Popular Visualisation") Mercator, e.g. EPSG:3857."""
    c = _crs(crs)
    if not c.is_projected:
        return False
    op = c.coordinate_operation
    method = op.method_name.lower() if op is not None else ""
    if "pseudo" in method:
        return True
    return c.to_epsg(min_confidence=90) in (3857, 3785, 900913, 102100, 102113)


def metres_per_unit(crs: Any) -> float | None:
    """Metres per coordinate unit of a projected CRS, or ``None`` when units are not metres.

    ``None`` for a geographic CRS (degrees) and for Web Mercator, whose units are metres only
    at the equator (scale ``1 / cos(latitude)``).
    """
    c = _crs(crs)
    if not c.is_projected or is_web_mercator(c):
        return None
    factor = 1.0
    if c.axis_info and c.axis_info[0].unit_conversion_factor:
        factor = float(c.axis_info[0].unit_conversion_factor)
    return factor


def is_metric_crs(crs: Any) -> bool:
    """Whether lengths in ``crs`` are metres on the ground (projected, metre unit, not 3857)."""
    factor = metres_per_unit(crs)
    return factor is not None and abs(factor - 1.0) < 1e-12


def _centre_lonlat(crs: Any, bounds: Sequence[float]) -> tuple[float, float]:
    """Longitude/latitude (degrees) of the centre of ``bounds`` given in ``crs``."""
    from pyproj import Transformer

    c = _crs(crs)
    x0, y0, x1, y1 = (float(b) for b in bounds)
    to_geo = Transformer.from_crs(c, c.geodetic_crs or "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return float(lon), float(lat)


def local_metric_crs(lon: float, lat: float) -> Any:
    """A transverse Mercator centred on ``(lon, lat)`` (degrees), in metres, scale 1 there."""
    from pyproj import CRS

    return CRS.from_proj4(
        f"+proj=tmerc +lat_0={lat:.10f} +lon_0={lon:.10f} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
    )


def utm_crs(lon: float, lat: float) -> Any:
    """The WGS 84 UTM zone of ``(lon, lat)`` (degrees), as geopandas ``estimate_utm_crs``.

    Beyond UTM's latitudes (polar regions) a Lambert azimuthal equal-area CRS centred on the
    point is returned instead.
    """
    from pyproj import CRS
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    if -80.0 <= lat <= 84.0:
        found = query_utm_crs_info(
            datum_name="WGS 84",
            area_of_interest=AreaOfInterest(lon, lat, lon, lat),
        )
        if found:
            return CRS.from_authority(found[0].auth_name, found[0].code)
    return CRS.from_proj4(
        f"+proj=laea +lat_0={lat:.10f} +lon_0={lon:.10f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
    )


def metric_crs(crs: Any, bounds: Sequence[float]) -> Any:
    """A standard CRS with metre units for data at ``bounds`` (``x0, y0, x1, y1`` in ``crs``).

    ``crs`` itself when it is metric (:func:`is_metric_crs`); otherwise (geographic, Web
    Mercator, feet...) the UTM zone of the centre of ``bounds`` (:func:`utm_crs`).

    Returns:
        A :class:`pyproj.CRS`.
    """
    c = _crs(crs)
    if is_metric_crs(c):
        return c
    return utm_crs(*_centre_lonlat(c, bounds))


def to_metric(geoms: Sequence[Any] | npt.NDArray[Any], crs: Any) -> tuple[npt.NDArray[Any], float]:
    """Geometries in a frame whose units times the returned factor are metres, y = north.

    Args:
        geoms: ``[N]`` shapely geometries in ``crs``.
        crs: their CRS (anything :meth:`pyproj.CRS.from_user_input` takes).

    Returns:
        ``(geoms, factor)``: in a projected, non-Web-Mercator CRS the input itself and its
        :func:`metres_per_unit`; otherwise the geometries projected onto
        :func:`local_metric_crs` at the centre of their bounds, and 1.0.
    """
    import shapely
    from pyproj import Transformer

    g = np.asarray(geoms, dtype=object)
    c = _crs(crs)
    factor = metres_per_unit(c)
    if factor is not None or len(g) == 0:
        return g, 1.0 if factor is None else factor
    local = local_metric_crs(*_centre_lonlat(c, shapely.total_bounds(g)))
    fwd = Transformer.from_crs(c, local, always_xy=True)
    out = shapely.transform(g, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    return np.asarray(out, dtype=object), 1.0
