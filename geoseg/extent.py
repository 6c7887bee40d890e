"""Processing extent: predict only an area of interest (AOI polygons, or a bounding box).

An :class:`Extent` is a polygonal area in a CRS (``crs=None``: the CRS of each scene, as a
``--bbox`` without ``--bbox-crs`` is). It is part of the run settings
(:attr:`geoseg.settings.RunSettings.extent`, in their digest), and decides two things in
:mod:`geoseg.pipeline`:

* **Tiles read.** :func:`select_tiles`: only the tiles whose *window* (scene pixels, overlap
  included) intersects the extent are read and predicted. Every object that fits in a
  window, as stitching assumes (objects no larger than the overlap), lies wholly in a window
  that contains its centroid, so the tiles kept see every object the next rule keeps.
* **Objects kept.** :func:`keep_in_extent`: an object is kept when its centroid, computed in
  metres (:func:`geoseg.count.zone_points`), lies inside the extent or on its border: the rule
  ``geoseg count --aoi`` assigns objects to zones with (:func:`geoseg.count.in_zones`), so
  counting the output in the same AOI counts every object once.

The scene-wide normalisation statistics are still computed over the whole scene (a sample
of its overviews or windows), so an object inside the AOI gets the same pixels, and the same
prediction, as in a run over the whole scene.

Per-scene areas (``geoseg batch``): an AOI file with a column ``scene`` gives each feature to
the scene of that name (:meth:`Extent.for_scene`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import ConfigError, LabelError

if TYPE_CHECKING:
    import geopandas as gpd

    from geoseg.types import SceneInfo, TileSpec

__all__ = [
    "SCENE_COLUMN",
    "Extent",
    "bbox_extent",
    "check_overlap",
    "extent_in_scene",
    "keep_in_extent",
    "parse_bbox",
    "read_aoi",
    "select_tiles",
]

logger = logging.getLogger(__name__)

#: Column of an AOI file that gives each feature to one scene of a batch.
SCENE_COLUMN = "scene"

#: Edges are cut into at least this many pieces before an extent is reprojected, so that a
#: straight edge in one CRS follows its curve in another.
_SEGMENTS = 64


@dataclass(frozen=True, slots=True)
class Extent:
    """A processing extent: a polygonal area, in a CRS.

    Attributes:
        wkt: the area (``Polygon`` or ``MultiPolygon``; the union of an AOI's features) as
            WKT, in ``crs``.
        crs: the area's CRS (WKT or ``AUTH:CODE``); ``None``: each scene's own CRS.
        source: where it came from (the AOI file, ``bbox``); informative, not in the digest.
        by_scene: ``(scene name, WKT)`` pairs of a per-scene AOI (its ``scene`` column); empty
            when the area applies to every scene. :meth:`for_scene` picks one.
    """

    wkt: str
    crs: str | None = None
    source: str = ""
    by_scene: tuple[tuple[str, str], ...] = ()

    def geometry(self) -> Any:
        """The area as a shapely geometry, in :attr:`crs`."""
        import shapely

        return shapely.from_wkt(self.wkt)

    def for_scene(self, name: str) -> Extent:
        """The extent of the scene ``name``: its own area for a per-scene AOI, else this one.

        Raises:
            ConfigError: a per-scene AOI without a feature for ``name``.
        """
        if not self.by_scene:
            return self
        for scene, wkt in self.by_scene:
            if scene == name:
                return Extent(wkt=wkt, crs=self.crs, source=f"{self.source} [{name}]")
        raise ConfigError(
            f"{self.source}: the AOI has a {SCENE_COLUMN!r} column but no feature for scene "
            f"{name!r}; add one, or drop the column to use the whole AOI for every scene"
        )

    def check_scenes(self, names: Sequence[str]) -> None:
        """Refuse a per-scene AOI that misses one of ``names`` or names a scene not in them.

        Raises:
            ConfigError: naming the scenes without an area and the areas without a scene.
        """
        if not self.by_scene:
            return
        have = {s for s, _ in self.by_scene}
        missing = [n for n in names if n not in have]
        unknown = sorted(have - set(names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"no feature for scene(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"features for scene(s) {', '.join(unknown)} that are not inputs")
            raise ConfigError(
                f"{self.source}: the AOI's {SCENE_COLUMN!r} column gives each feature to one "
                f"scene, but it has {' and '.join(parts)}; the scene names are "
                f"{', '.join(names)} (output file stems)"
            )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that goes into the settings' digest (``source`` left out)."""
        return {"wkt": self.wkt, "crs": self.crs, "by_scene": [list(p) for p in self.by_scene]}

    def describe(self) -> str:
        """One line for logs."""
        b = self.geometry().bounds
        where = "the scene CRS" if self.crs is None else _crs_name(self.crs)
        per = f", {len(self.by_scene)} scenes" if self.by_scene else ""
        return (
            f"extent {self.source or 'area'}: bounds {b[0]:.6g}, {b[1]:.6g}, {b[2]:.6g}, "
            f"{b[3]:.6g} in {where}{per}"
        )


def _crs_name(crs: str) -> str:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    code = c.to_authority()
    return ":".join(code) if code else c.name


def _wkt(geom: Any) -> str:
    import shapely

    return str(shapely.to_wkt(geom, rounding_precision=-1))


def read_aoi(path: str | os.PathLike[str] | gpd.GeoDataFrame) -> Extent:
    """Read an AOI: polygons from any vector file GDAL reads, in any CRS (it must have one).

    The features are unioned; with a ``scene`` column (:data:`SCENE_COLUMN`), the features of
    each scene name are unioned separately too (:attr:`Extent.by_scene`).

    Raises:
        LabelError: no such file, unreadable, no CRS, no features, or non-polygon geometries.
    """
    import shapely

    from geoseg.count import read_aoi as read_zones

    gdf = read_zones(path)  # the checks of count --aoi: a CRS, features, polygons only
    source = "<GeoDataFrame>" if not isinstance(path, str | os.PathLike) else os.fspath(path)
    geoms = gdf.geometry.to_numpy()
    valid = shapely.make_valid(geoms)
    area = shapely.union_all(valid)
    if area.is_empty or area.area <= 0:
        raise LabelError(f"{source}: the AOI has no area; give polygons")
    by_scene: tuple[tuple[str, str], ...] = ()
    if SCENE_COLUMN in gdf.columns:
        names = gdf[SCENE_COLUMN].astype(str).to_numpy()
        by_scene = tuple(
            (str(name), _wkt(shapely.union_all(valid[names == name])))
            for name in dict.fromkeys(names)
        )
    crs = gdf.crs.to_wkt()
    return Extent(wkt=_wkt(area), crs=crs, source=source, by_scene=by_scene)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``"minx,miny,maxx,maxy"`` -> four floats (checked by :func:`bbox_extent`).

    Raises:
        ConfigError: not four numbers.
    """
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError as err:
        raise ConfigError(
            f"bbox {text!r}: give four numbers minx,miny,maxx,maxy, e.g. 500000,4000000,501000,"
            "4001000 (scene CRS) or -9.2,38.6,-9.1,38.7 with a lon/lat CRS"
        ) from err
    if len(values) != 4:
        raise ConfigError(f"bbox {text!r}: give four numbers minx,miny,maxx,maxy")
    return values[0], values[1], values[2], values[3]


def bbox_extent(bounds: Sequence[float], crs: str | None = None) -> Extent:
    """A box ``(minx, miny, maxx, maxy)`` in ``crs`` (``None``: each scene's CRS).

    Raises:
        ConfigError: not four finite numbers with ``minx < maxx`` and ``miny < maxy``, or an
            unknown ``crs``.
    """
    import shapely

    vals = [float(v) for v in bounds]
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise ConfigError(f"bbox {list(bounds)}: give four finite numbers minx,miny,maxx,maxy")
    x0, y0, x1, y1 = vals
    if not (x0 < x1 and y0 < y1):
        raise ConfigError(
            f"bbox {x0:g},{y0:g},{x1:g},{y1:g}: minx must be below maxx and miny below maxy "
            "(the order is minx,miny,maxx,maxy)"
        )
    crs_wkt = None
    if crs is not None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs_wkt = CRS.from_user_input(crs).to_wkt()
        except CRSError as err:
            raise ConfigError(f"bbox CRS {crs!r}: unknown CRS ({err}); e.g. EPSG:4326") from err
    return Extent(wkt=_wkt(shapely.box(x0, y0, x1, y1)), crs=crs_wkt, source="bbox")


def extent_in_scene(extent: Extent, info: SceneInfo) -> Any:
    """The extent as a geometry in the scene CRS (edges densified before reprojecting).

    Raises:
        ConfigError: the extent has a CRS and the scene has none.
    """
    import shapely
    from pyproj import CRS, Transformer

    geom = extent.geometry()
    if extent.crs is None:
        return geom
    if info.crs_wkt is None:
        raise ConfigError(
            f"{info.path}: the scene has no CRS, so an AOI or bbox in {_crs_name(extent.crs)} "
            "cannot be placed on it; give a --bbox in the scene's pixel frame without --bbox-crs"
        )
    src, dst = CRS.from_user_input(extent.crs), CRS.from_wkt(info.crs_wkt)
    if src.equals(dst):
        return geom
    x0, y0, x1, y1 = geom.bounds
    geom = shapely.segmentize(geom, max(x1 - x0, y1 - y0) / _SEGMENTS)
    fwd = Transformer.from_crs(src, dst, always_xy=True)
    out = shapely.transform(geom, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))
    if not out.is_valid:
        out = shapely.make_valid(out)
    return out


def check_overlap(extent: Extent, info: SceneInfo) -> None:
    """Refuse an extent that misses the scene (often an AOI or bbox in the wrong CRS).

    Raises:
        ConfigError: naming the scene and both extents in the scene CRS.
    """
    import shapely

    area = extent_in_scene(extent, info)
    corners = [info.transform @ (c, r) for c in (0, info.width) for r in (0, info.height)]
    footprint = shapely.Polygon([corners[0], corners[1], corners[3], corners[2]])
    if area.intersects(footprint):
        return
    a, f = area.bounds, footprint.bounds
    hint = (
        "; a --bbox without --bbox-crs is in the scene's CRS (lon/lat: add --bbox-crs EPSG:4326)"
        if extent.crs is None
        else ""
    )
    raise ConfigError(
        f"{info.path}: the {extent.source or 'extent'} does not overlap the scene: in the scene "
        f"CRS it spans {a[0]:.6g},{a[1]:.6g},{a[2]:.6g},{a[3]:.6g} and the scene "
        f"{f[0]:.6g},{f[1]:.6g},{f[2]:.6g},{f[3]:.6g}{hint}"
    )


def select_tiles(specs: Sequence[TileSpec], area: Any, info: SceneInfo) -> tuple[int, ...]:
    """Grid indexes of the tiles whose window intersects ``area`` (a geometry in the scene CRS).

    Args:
        specs: the tile grid, windows in **scene pixels**.
        area: from :func:`extent_in_scene`.
        info: the scene (its transform maps the area to scene pixels).

    Returns:
        The indexes, in grid (row-major) order.
    """
    import shapely

    inv = ~info.transform

    def to_px(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f])

    px = shapely.transform(area, to_px)
    shapely.prepare(px)
    boxes = shapely.box(
        [s.window.col_off for s in specs],
        [s.window.row_off for s in specs],
        [s.window.col_end for s in specs],
        [s.window.row_end for s in specs],
    )
    hit = shapely.intersects(px, boxes)
    return tuple(int(specs[int(i)].index) for i in np.flatnonzero(hit))


def keep_in_extent(gdf: gpd.GeoDataFrame, area: Any) -> npt.NDArray[np.bool_]:
    """Which objects the extent keeps: ``geoseg count``'s zone rule (:func:`.count.in_zones`).

    Args:
        gdf: the scene's objects (polygons in the scene CRS, or in its pixel frame when it has
            no CRS).
        area: from :func:`extent_in_scene` (the scene CRS).

    Returns:
        bool ``[len(gdf)]``: the object's centroid (in metres) is inside ``area`` or on its
        border.
    """
    import geopandas as gpd

    from geoseg.count import in_zones

    zones = gpd.GeoDataFrame(geometry=[area], crs=gdf.crs)
    return in_zones(gdf, zones)
