"""Building outlines that look like buildings: right-angle regularisation of mask outlines.

Mask outlines follow pixel edges (:mod:`geoseg.vectorize`), so a building turned 30° off the
pixel grid comes out as a staircase of dozens of vertices. :func:`regularize_polygon` replaces
such an outline by a right-angle one along the building's dominant orientation:

1. **Orientation.** Two candidates, in a conformal frame (equal ground scale on both axes):
   the length-weighted mean edge direction modulo 90° of the outline simplified by about one
   pixel (Douglas-Peucker: the staircase steps go, the walls stay), and the orientation of the
   outline's minimum rotated rectangle. Each candidate is tried; the one whose result overlaps
   the mask outline best wins.
2. **Rectangle** (simple roofs): the rectangle along that orientation around the outline, each
   side pulled in equally so that its area equals the outline's (a pixel-edge outline sticks
   out by up to half a pixel at each step).
3. **Orthogonal polygon** (L, T, U shapes, courtyards): the simplified outline rotated onto the
   orientation, each edge snapped to horizontal or vertical (whichever it is closer to),
   consecutive edges of the same direction merged into one wall at their length-weighted mean
   position, and consecutive walls joined at right angles. Holes are treated the same way.
4. **Kept only where close to the mask.** The rectangle is chosen when its IoU with the mask
   outline reaches ``min_iou`` and is within :data:`RECTANGLE_SLACK` of the orthogonal
   polygon's (a simpler shape for nearly the same fit); else the orthogonal polygon when its
   IoU reaches ``min_iou``; else the mask outline is kept unchanged.

:func:`regularize` applies this to the polygons of chosen classes of a result
(:func:`geoseg.pipeline.vectorize_scene` calls it after :func:`geoseg.vectorize.vectorize` when
``RunSettings.regularize`` names classes). Geometries are taken from the **scene CRS** to
**scene pixels** (inverse of the scene transform) with the x axis scaled by the ground aspect
of a pixel, so that right angles on the ground are right angles in the frame where the work is
done, whatever the CRS (a 0.46 x 0.50 m pixel of an EPSG:4326 scene included); results go back
the same way. The attribute columns (``area_m2``, ``length_m``...) are those of the mask
outline; a column ``regularized`` says which outline was replaced (``rectangle``,
``orthogonal``) or kept (``""``).

No torch, no GDAL: shapely and numpy only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon

from geoseg.errors import ConfigError
from geoseg.geometry import apply_affine, polygonal

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "DEFAULT_MIN_IOU",
    "RECTANGLE_SLACK",
    "REGULARIZED_COLUMN",
    "Regularized",
    "dominant_angle",
    "iou",
    "oriented_rectangle",
    "orthogonalize",
    "regularize",
    "regularize_classes",
    "regularize_polygon",
    "vertex_count",
]

logger = logging.getLogger(__name__)

#: IoU with the mask outline a regularised outline must reach to replace it (preset key
#: ``vectorize.regularize_min_iou``).
DEFAULT_MIN_IOU: Final = 0.8
#: The rectangle wins over the orthogonal polygon when its IoU is at most this much lower.
RECTANGLE_SLACK: Final = 0.03
#: Column :func:`regularize` adds: ``"rectangle"``, ``"orthogonal"`` or ``""`` (mask kept).
REGULARIZED_COLUMN: Final = "regularized"


@dataclass(frozen=True, slots=True)
class Regularized:
    """One outline after :func:`regularize_polygon`.

    Attributes:
        geometry: the outline (a ``Polygon``/``MultiPolygon``), in the input's frame.
        kind: ``"rectangle"``, ``"orthogonal"`` or ``""`` (the input kept).
        iou: IoU of ``geometry`` with the input outline (1.0 when kept).
    """

    geometry: Any
    kind: str
    iou: float


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two polygonal geometries (0.0 when both are empty)."""
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def dominant_angle(ring: npt.NDArray[np.float64]) -> float:
    """The dominant wall direction of a ring, modulo 90°, in radians in ``[0, pi/2)``.

    Args:
        ring: float ``[N, 2]`` vertices (closed or not) in a conformal frame.

    Returns:
        The length-weighted circular mean of the edge directions taken modulo 90° (angles
        multiplied by 4, averaged as unit vectors, divided by 4).
    """
    xy = np.asarray(ring, dtype=np.float64)
    d = np.diff(np.vstack([xy, xy[:1]]), axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    a = np.arctan2(d[:, 1], d[:, 0])
    c, s = float((length * np.cos(4 * a)).sum()), float((length * np.sin(4 * a)).sum())
    if c == 0.0 and s == 0.0:
        return 0.0
    return (math.atan2(s, c) / 4.0) % (math.pi / 2)


def _ring_xy(ring: Any) -> npt.NDArray[np.float64]:
    """Vertices of a shapely ring without the closing repeat, float ``[N, 2]``."""
    return np.asarray(ring.coords, dtype=np.float64)[:-1, :2]


def _snap_ring(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Snap a ring already rotated onto its axes to horizontal/vertical walls.

    Args:
        xy: float ``[N, 2]`` ring vertices (not closed), walls roughly along x and y.

    Returns:
        float ``[M, 2]`` right-angle ring vertices (``M`` even, >= 4), or ``None`` when the
        ring has fewer than two walls of each direction.
    """
    n = len(xy)
    if n < 3:
        return None
    nxt = np.roll(xy, -1, axis=0)
    d = nxt - xy
    length = np.hypot(d[:, 0], d[:, 1])
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    if horizontal.all() or (~horizontal).all():
        return None
    start = int(np.flatnonzero(horizontal != np.roll(horizontal, 1))[0])  # a run starts here
    order = (np.arange(n) + start) % n
    walls: list[tuple[bool, float]] = []  # (horizontal, position: y for H walls, x for V walls)
    k = 0
    while k < n:
        h = bool(horizontal[order[k]])
        j = k
        weight = 0.0
        total = 0.0
        while j < n and bool(horizontal[order[j]]) == h:
            i = order[j]
            mid = (xy[i] + nxt[i]) / 2.0
            w = max(float(length[i]), 1e-12)
            total += w * float(mid[1] if h else mid[0])
            weight += w
            j += 1
        walls.append((h, total / weight))
        k = j
    if len(walls) < 4 or len(walls) % 2:
        return None
    out = np.empty((len(walls), 2), np.float64)
    for i, (h, pos) in enumerate(walls):
        h2, pos2 = walls[(i + 1) % len(walls)]
        if h == h2:
            return None
        out[i] = (pos2, pos) if h else (pos, pos2)
    return out


def _rotate_xy(
    xy: npt.NDArray[np.float64], angle: float, origin: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Rotate ``[N, 2]`` points by ``angle`` radians (counter-clockwise) about ``origin``."""
    c, s = math.cos(angle), math.sin(angle)
    p = xy - origin
    return np.column_stack((c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1])) + origin


def orthogonalize(poly: Polygon, angle: float, *, tolerance: float = 1.0) -> Any:
    """A right-angle version of ``poly`` whose walls run at ``angle`` and ``angle + 90°``.

    Args:
        poly: a polygon in a conformal frame (e.g. pixels with square ground footprint).
        angle: wall direction in radians.
        tolerance: Douglas-Peucker tolerance applied first (frame units; about one pixel
            removes a staircase's steps).

    Returns:
        A valid ``Polygon``/``MultiPolygon`` (holes that cannot be snapped are dropped), or
        ``None`` when the exterior cannot be snapped.
    """
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if simple.is_empty or simple.geom_type != "Polygon":
        simple = poly
    c = poly.centroid
    origin = (c.x, c.y)
    rings: list[npt.NDArray[np.float64]] = []
    for k, ring in enumerate([simple.exterior, *simple.interiors]):
        snapped = _snap_ring(_rotate_xy(_ring_xy(ring), -angle, origin))
        if snapped is None:
            if k == 0:
                return None
            continue
        rings.append(_rotate_xy(snapped, angle, origin))
    out = Polygon(rings[0], rings[1:])
    if not out.is_valid:
        out = polygonal(out, repair=True)
    if out is None or out.is_empty or out.area <= 0:
        return None
    return out


def oriented_rectangle(poly: Any, angle: float) -> Polygon:
    """The rectangle along ``angle`` around ``poly``, sides pulled in to keep its area.

    The bounding box of ``poly`` in the frame rotated by ``-angle``, each side moved inwards
    by the same distance ``d`` so that the rectangle's area equals ``poly``'s, rotated back.

    Args:
        poly: a polygonal geometry in a conformal frame.
        angle: direction of the rectangle's sides, in radians.
    """
    c = poly.centroid
    rot = affinity.rotate(poly, -angle, origin=c, use_radians=True)
    x0, y0, x1, y1 = rot.bounds
    w, h = x1 - x0, y1 - y0
    area = poly.area
    disc = (w + h) ** 2 - 4.0 * (w * h - area)
    d = ((w + h) - math.sqrt(max(disc, 0.0))) / 4.0
    d = min(max(d, 0.0), 0.49 * min(w, h))
    rect = Polygon([(x0 + d, y0 + d), (x1 - d, y0 + d), (x1 - d, y1 - d), (x0 + d, y1 - d)])
    out: Polygon = affinity.rotate(rect, angle, origin=c, use_radians=True)
    return out


def _mrr_angle(poly: Any) -> float:
    """Direction of the minimum rotated rectangle's first side, modulo 90°, in radians."""
    rect = shapely.minimum_rotated_rectangle(poly)
    if rect.geom_type != "Polygon":
        return 0.0
    xy = _ring_xy(rect.exterior)
    d = xy[1] - xy[0]
    return math.atan2(d[1], d[0]) % (math.pi / 2)


def vertex_count(geom: Any) -> int:
    """Vertices of a polygonal geometry (each ring's closing repeat not counted)."""
    parts = getattr(geom, "geoms", [geom])
    return sum(
        len(r.coords) - 1 for p in parts for r in [p.exterior, *p.interiors] if not p.is_empty
    )


def _regularize_part(poly: Polygon, min_iou: float, tolerance: float) -> Regularized:
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    angles = [dominant_angle(_ring_xy(simple.exterior)), _mrr_angle(poly)]
    best_ortho: tuple[float, Any] = (-1.0, None)
    best_rect: tuple[float, Any] = (-1.0, None)
    for angle in angles:
        ortho = orthogonalize(poly, angle, tolerance=tolerance)
        if ortho is not None:
            score = iou(ortho, poly)
            if score > best_ortho[0]:
                best_ortho = (score, ortho)
        if not poly.interiors:
            rect = oriented_rectangle(poly, angle)
            score = iou(rect, poly)
            if score > best_rect[0]:
                best_rect = (score, rect)
    rect_ok = best_rect[1] is not None and best_rect[0] >= min_iou
    if rect_ok and best_rect[0] >= best_ortho[0] - RECTANGLE_SLACK:
        return Regularized(best_rect[1], "rectangle", best_rect[0])
    if best_ortho[1] is not None and best_ortho[0] >= min_iou:
        return Regularized(best_ortho[1], "orthogonal", best_ortho[0])
    return Regularized(poly, "", 1.0)


def regularize_polygon(
    geom: Any, *, min_iou: float = DEFAULT_MIN_IOU, tolerance: float = 1.0
) -> Regularized:
    """Regularise one outline (see the module docstring for the rules).

    Args:
        geom: a ``Polygon`` or ``MultiPolygon`` in a **conformal frame** (equal ground scale
            along both axes), e.g. scene pixels with square ground footprint.
        min_iou: the IoU with ``geom`` a regularised outline must reach, in (0, 1].
        tolerance: simplification tolerance in frame units (1 pixel suits pixel-edge
            outlines).

    Returns:
        A :class:`Regularized`. A ``MultiPolygon`` is regularised part by part and replaced
        only when the whole reaches ``min_iou``.

    Raises:
        ValueError: ``min_iou`` outside (0, 1] or a negative ``tolerance``.
    """
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"regularize: min_iou must be in (0, 1], got {min_iou}")
    if tolerance < 0:
        raise ValueError(f"regularize: tolerance must be >= 0, got {tolerance}")
    if geom is None or geom.is_empty:
        return Regularized(geom, "", 1.0)
    if geom.geom_type == "Polygon":
        return _regularize_part(geom, min_iou, tolerance)
    if geom.geom_type != "MultiPolygon":
        return Regularized(geom, "", 1.0)
    parts = [_regularize_part(p, min_iou, tolerance) for p in geom.geoms]
    if not any(p.kind for p in parts):
        return Regularized(geom, "", 1.0)
    merged = polygonal(MultiPolygon([p.geometry for p in parts]), repair=True)
    if merged is None:
        return Regularized(geom, "", 1.0)
    score = iou(merged, geom)
    if score < min_iou:
        return Regularized(geom, "", 1.0)
    kinds = {p.kind for p in parts if p.kind}
    return Regularized(merged, "rectangle" if kinds == {"rectangle"} else "orthogonal", score)


def regularize_classes(requested: Sequence[str], classes: Sequence[str]) -> tuple[str, ...]:
    """The model's class names that ``requested`` (``RunSettings.regularize``) stands for.

    A name is a class of ``classes``, or its plural with a trailing ``s`` (``buildings`` for
    ``building``), so that ``--regularize buildings`` reads naturally.

    Raises:
        ConfigError: a name that is no class of the model (the message lists them).
    """
    known = set(classes)
    out: list[str] = []
    for name in requested:
        if name in known:
            out.append(name)
        elif name.endswith("s") and name[:-1] in known:
            out.append(name[:-1])
        else:
            raise ConfigError(
                f"--regularize {name}: no class of that name; the model's classes are "
                f"{', '.join(classes)}"
            )
    return tuple(dict.fromkeys(out))


def _to_frame(transform: Affine, aspect: float) -> Affine:
    """Scene CRS -> conformal pixel frame: inverse transform, then x scaled by ``aspect``."""
    return Affine.scale(aspect, 1.0) @ ~transform


def _apply(geoms: npt.NDArray[Any], a: Affine) -> npt.NDArray[Any]:
    return np.asarray(apply_affine(geoms, a), dtype=object)


def regularize(
    gdf: geopandas.GeoDataFrame,
    *,
    classes: Sequence[str],
    transform: Affine,
    pixel_aspect: float = 1.0,
    min_iou: float = DEFAULT_MIN_IOU,
    tolerance_px: float = 1.0,
) -> geopandas.GeoDataFrame:
    """Regularise the outlines of the objects of ``classes`` in a result.

    Args:
        gdf: objects in the **scene CRS** with a ``class`` column (e.g. from
            :func:`geoseg.vectorize.vectorize`).
        classes: class names whose outlines are regularised (others are left as they are).
        transform: the scene's affine, scene pixels -> scene CRS.
        pixel_aspect: a scene pixel's ground width over its ground height (1.0 for square
            pixels; ``0.46 / 0.50`` for SpaceNet Rio's EPSG:4326 mosaic), so that right angles
            are measured on the ground.
        min_iou: see :func:`regularize_polygon`.
        tolerance_px: simplification tolerance in scene pixels.

    Returns:
        A copy of ``gdf`` with the chosen outlines replaced and a :data:`REGULARIZED_COLUMN`
        column (``"rectangle"``, ``"orthogonal"`` or ``""``).

    Raises:
        ValueError: ``min_iou`` outside (0, 1], ``pixel_aspect <= 0`` or a negative tolerance.
    """
    if not pixel_aspect > 0:
        raise ValueError(f"regularize: pixel_aspect must be > 0, got {pixel_aspect}")
    out = gdf.copy()
    kinds = np.full(len(out), "", dtype=object)
    wanted = set(classes)
    sel: npt.NDArray[np.intp] | list[int] = (
        np.flatnonzero(out["class"].astype(str).isin(wanted).to_numpy()) if len(out) else []
    )
    if len(sel):
        fwd = _to_frame(transform, pixel_aspect)
        frame = _apply(np.asarray(out.geometry.values, dtype=object)[sel], fwd)
        results = [regularize_polygon(g, min_iou=min_iou, tolerance=tolerance_px) for g in frame]
        changed = [i for i, r in enumerate(results) if r.kind]
        if changed:
            back = _apply(np.asarray([results[i].geometry for i in changed], dtype=object), ~fwd)
            geoms = np.asarray(out.geometry.values, dtype=object).copy()
            for i, g in zip(changed, back, strict=True):
                geoms[sel[i]] = g
                kinds[sel[i]] = results[i].kind
            out = out.set_geometry(list(geoms), crs=gdf.crs)
        logger.info(
            "regularize: %d of %d outlines of %s replaced (%d rectangles)",
            len(changed),
            len(sel),
            sorted(wanted),
            sum(1 for r in results if r.kind == "rectangle"),
        )
    out[REGULARIZED_COLUMN] = kinds
    out.attrs.update(gdf.attrs)
    return out
