"""Counting objects per scene and class, per zone (AOI) and per grid cell; size distributions.

Input is what :func:`geoseg.export.write_vectors` writes (or the GeoDataFrame
:func:`geoseg.vectorize.vectorize` returns): one row per object with the columns ``geometry``
(polygons in the scene CRS; EPSG:4326 for GeoJSON), ``class``, ``score``, ``area_m2``,
``length_m``, ``width_m``, ``heading_deg`` and ``scene``. A batch output folder holds one such
file per scene (plus a ``manifest.json``, which is ignored).

Counting rule: an object is counted in the zone or grid cell that contains its **centroid**,
computed in a metric CRS (the data's own when its unit is the metre, else the local UTM zone:
geographic or Web Mercator data, see :func:`geoseg.geometry.metric_crs`), so an object
straddling two zones is counted exactly once. A centroid lying exactly on a border shared by
several zones goes to the first of them (lowest row index); a centroid in the interior of
several *overlapping* zones is counted in each of them (each zone counts its own objects).
:func:`zone_points` and :func:`in_zones` are this rule; ``geoseg predict --aoi`` keeps objects
with it (:mod:`geoseg.extent`), so predicting with an AOI and counting in it agree.

Zones are named by a column of the AOI: ``aoi_field`` when given, else the first column that
looks like a name (``name``, then any column whose name contains ``name``, then ``id``,
``zone``, ``label``, ``title``, ``code`` or ``*_id``) whose values are all present and distinct;
the name goes into the ``zone`` column of the zones, and tables show it. Without such a column
a zone is named by its row number (``zone_id``, from 0).

``classes`` asked for must be known: a class some result holds, or one of the bundled presets'
classes (ship, vehicle, building: counted 0 when absent); any other name is refused with the
known ones listed (:func:`geoseg.config.check_class_names`), so a misspelt class does not count
0 silently.

Densities are objects per km², with zone and cell areas measured in the equal-area
EPSG:6933 (WGS 84 / NSIDC EASE-Grid 2.0 Global) projection, never in degrees. Grid cells are
square in a metric CRS (the data's, or the local UTM zone) with their corners on multiples of
the cell size, so grids of two runs over the same area line up cell for cell.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS

from geoseg.config import check_class_names, preset_classes
from geoseg.errors import ConfigError, ExportError, LabelError
from geoseg.geometry import is_metric_crs, metric_crs, rectangle_axes, utm_crs
from geoseg.io import VectorFormat, atomic_write, read_vectors

__all__ = [
    "DEFAULT_SIZE_BINS",
    "EQUAL_AREA_CRS",
    "CountResult",
    "CountsFormat",
    "ResultsLike",
    "SizeHistogram",
    "check_result_classes",
    "check_zone_field",
    "common_metric_crs",
    "count",
    "filter_results",
    "format_counts",
    "grid_membership",
    "in_zones",
    "read_aoi",
    "read_results",
    "write_counts",
    "zone_membership",
    "zone_name_field",
    "zone_points",
]

logger = logging.getLogger(__name__)

#: Equal-area CRS in which zone and cell areas (km²) are measured.
EQUAL_AREA_CRS = "EPSG:6933"

#: Histogram bin edges of ``length_m`` per class (metres; the last bin is open-ended).
DEFAULT_SIZE_BINS: Mapping[str, tuple[float, ...]] = {
    "ship": (0.0, 10.0, 25.0, 50.0, 100.0, 200.0, 300.0, math.inf),
    "vehicle": (0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 20.0, math.inf),
}

#: Most grid cells :func:`count` builds (guards against ``grid_m`` given in the wrong unit).
MAX_GRID_CELLS = 4_000_000

#: File name suffixes read from a results folder.
RESULT_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet")

#: Side files of a ``geoseg batch`` output folder, never read as results.
_BATCH_SIDE_FILES = frozenset({"manifest.json", "summary.parquet", "summary.csv"})
#: Suffixes a folder may hold as non-vector side files (COCO JSON, tables): skipped if unreadable.
_MAYBE_NOT_VECTOR = frozenset({".json", ".parquet"})

_OneResult: TypeAlias = "str | os.PathLike[str] | gpd.GeoDataFrame"
#: What :func:`read_results` accepts: a file, a folder, a GeoDataFrame, or a sequence of these.
ResultsLike: TypeAlias = "_OneResult | Sequence[_OneResult]"


class CountsFormat(StrEnum):
    """Output formats of :func:`write_counts`, chosen by the file extension."""

    CSV = "csv"  # the per scene / class table
    GPKG = "gpkg"  # zones and/or grid cells with count columns (layers "zones", "grid")
    JSON = "json"  # everything except geometries


@dataclass(frozen=True, slots=True)
class SizeHistogram:
    """Distribution of one size attribute of one class.

    Attributes:
        class_name: the object class, e.g. ``"ship"``.
        attribute: the column binned, e.g. ``"length_m"`` (metres).
        edges: ``n + 1`` increasing bin edges; bin ``i`` is ``[edges[i], edges[i + 1])`` and the
            last edge may be ``inf``.
        counts: ``n`` object counts, one per bin. Objects below ``edges[0]`` or without a value
            are not counted.
    """

    class_name: str
    attribute: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_frame(self) -> pd.DataFrame:
        """One row per bin: ``class``, ``attribute``, ``bin_lo``, ``bin_hi``, ``count``."""
        return pd.DataFrame(
            {
                "class": self.class_name,
                "attribute": self.attribute,
                "bin_lo": list(self.edges[:-1]),
                "bin_hi": list(self.edges[1:]),
                "count": list(self.counts),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (an infinite edge is written as ``null``)."""
        return {
            "class": self.class_name,
            "attribute": self.attribute,
            "edges": [e if math.isfinite(e) else None for e in self.edges],
            "counts": list(self.counts),
        }


@dataclass(frozen=True, eq=False)
class CountResult:
    """Everything :func:`count` found.

    Attributes:
        classes: the classes counted, in column order.
        per_scene: one row per (scene, class) with columns ``scene``, ``class``, ``count``,
            ``mean_score``, ``mean_length_m``, ``total_area_m2`` (NaN where no object).
        zones: the AOI polygons (in the AOI's own CRS) with their attributes plus ``zone_id``
            (row number), ``zone`` (the zone's name, see ``zone_field``), ``area_km2``,
            ``count_<class>``, ``count_total``, ``density_<class>_km2`` and
            ``density_total_km2``; ``None`` without an AOI.
        grid: square cells of one grid in a projected CRS (the data's, or the local UTM zone)
            with ``cell_id``, ``row`` (0 = north), ``col``, ``area_km2`` and the same count and
            density columns; only the cells over each scene's objects and over the AOI exist.
            ``None`` without ``grid_m``.
        histograms: size distributions (ship length, vehicle length...).
        grid_m: the grid cell size in metres, or ``None``.
        min_score: the score filter applied, or ``None``.
        skipped: result files that could not be read and were skipped, with the reason.
        zone_field: the AOI column the zones are named by (``None``: by row number).
    """

    classes: tuple[str, ...]
    per_scene: pd.DataFrame
    zones: gpd.GeoDataFrame | None = None
    grid: gpd.GeoDataFrame | None = None
    histograms: tuple[SizeHistogram, ...] = ()
    grid_m: float | None = None
    min_score: float | None = None
    skipped: tuple[str, ...] = field(default=())
    zone_field: str | None = None

    @property
    def total(self) -> int:
        """Number of objects counted (after the filters)."""
        return int(self.per_scene["count"].sum()) if len(self.per_scene) else 0

    @property
    def per_class(self) -> dict[str, int]:
        """Objects per class over all scenes, in ``classes`` order."""
        sums = self.per_scene.groupby("class")["count"].sum() if len(self.per_scene) else {}
        return {c: int(sums.get(c, 0)) for c in self.classes}

    @property
    def scenes(self) -> tuple[str, ...]:
        """Scene names in the table, sorted."""
        return tuple(sorted(self.per_scene["scene"].unique())) if len(self.per_scene) else ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: totals, the per-scene table, histograms, zone and cell counts.

        Zones are written without geometry; grid cells only where at least one object lies.
        """
        out: dict[str, Any] = {
            "classes": list(self.classes),
            "total": self.total,
            "per_class": self.per_class,
            "min_score": self.min_score,
            "per_scene": _records(self.per_scene),
            "histograms": [h.to_dict() for h in self.histograms],
            "skipped": list(self.skipped),
            "zone_field": self.zone_field,
        }
        if self.zones is not None:
            out["zones"] = _records(pd.DataFrame(self.zones.drop(columns="geometry")))
        if self.grid is not None:
            nonempty = self.grid[self.grid["count_total"] > 0]
            out["grid"] = {
                "cell_m": self.grid_m,
                "crs": self.grid.crs.to_string() if self.grid.crs is not None else None,
                "cells": len(self.grid),
                "nonempty_cells": _records(pd.DataFrame(nonempty.drop(columns="geometry"))),
            }
        return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame -> list of JSON-safe dicts (NaN -> None, numpy scalars -> Python)."""
    text = frame.to_json(orient="records", double_precision=10)
    records: list[dict[str, Any]] = json.loads(text)
    return records


# --------------------------------------------------------------------------------------------
# reading


def read_results(results: ResultsLike) -> list[gpd.GeoDataFrame]:
    """Read result vectors into GeoDataFrames, one per input file (or per GeoDataFrame given).

    Args:
        results: a vector file (``.gpkg``, ``.geojson``, ``.json``, ``.shp``, ``.fgb``,
            ``.parquet``), a folder (every such file in it, not recursive; a batch folder's
            ``manifest.json`` / ``summary.*`` and JSON or Parquet files that are not result
            vectors are skipped), a GeoDataFrame, or a sequence of these.

    Returns:
        GeoDataFrames in their own CRS, each with a ``scene`` column (filled from the file
        name where missing) and a ``class`` column (str).

    Raises:
        LabelError: a file cannot be read or has no ``class`` column, or a folder holds no
            result file.
    """
    return _read_results(results)[0]


def _read_results(results: ResultsLike) -> tuple[list[gpd.GeoDataFrame], list[str]]:
    """:func:`read_results`, also returning the folder files skipped (``"path: reason"``)."""
    items: list[str | os.PathLike[str] | gpd.GeoDataFrame]
    skipped: list[str] = []
    if isinstance(results, gpd.GeoDataFrame | str | os.PathLike):
        items = [results]
    else:
        items = list(results)
    frames: list[gpd.GeoDataFrame] = []
    for item in items:
        if isinstance(item, gpd.GeoDataFrame):
            frames.append(_normalise(item.copy(), source="<GeoDataFrame>", default_scene="scene"))
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in RESULT_SUFFIXES
                and p.name.lower() not in _BATCH_SIDE_FILES
            )
            read = 0
            for p in files:
                try:
                    frames.append(_read_one(p))
                    read += 1
                except LabelError as err:
                    if p.suffix.lower() in _MAYBE_NOT_VECTOR:  # e.g. COCO JSON, a table
                        logger.info("skipping %s: %s", p, err)
                        skipped.append(f"{p}: {err}")
                        continue
                    raise
            if read == 0:
                raise LabelError(
                    f"{path}: no result files in this folder; expected vector files with one of "
                    f"the extensions {', '.join(RESULT_SUFFIXES)} (as written by geoseg batch)"
                )
        elif path.is_file():
            frames.append(_read_one(path))
        else:
            raise LabelError(f"{path}: no such file or folder; give a result file or folder")
    return frames, skipped


def _read_one(path: Path) -> gpd.GeoDataFrame:
    """Read one result file."""
    gdf = read_vectors(path, what="results")
    return _normalise(gdf, source=str(path), default_scene=path.stem)


def _normalise(gdf: gpd.GeoDataFrame, *, source: str, default_scene: str) -> gpd.GeoDataFrame:
    """Check the columns, fill ``scene``, make ``class`` a str column."""
    if "class" not in gdf.columns:
        raise LabelError(
            f"{source}: no 'class' column (columns: {', '.join(map(str, gdf.columns))}); "
            "give geoseg results, which have class, score and size columns"
        )
    gdf = gdf[~(gdf.geometry.is_empty | gdf.geometry.isna())].copy()
    gdf["class"] = gdf["class"].astype(str)
    if "scene" not in gdf.columns:
        gdf["scene"] = default_scene
    else:
        gdf["scene"] = gdf["scene"].fillna(default_scene).astype(str)
    gdf.attrs["geoseg_default_scene"] = default_scene
    return gdf


def check_result_classes(classes: Sequence[str], frames: Sequence[gpd.GeoDataFrame]) -> None:
    """Refuse a class asked of results that none of them holds and no bundled preset knows.

    The known classes are those of ``frames`` (as :func:`read_results` returns them) and of
    the bundled presets (ship, vehicle, building), which count 0 when absent. Shared by
    :func:`count` and :func:`geoseg.viz.web_map`.

    Raises:
        ConfigError: an unknown class (:func:`geoseg.config.check_class_names`).
    """
    found = sorted({str(c) for g in frames for c in g["class"].unique()})
    check_class_names(
        classes,
        [*found, *(c for c in preset_classes() if c not in found)],
        option="--classes",
        known_as="classes in the results, or of geoseg's presets",
    )


def _scene_names(gdf: gpd.GeoDataFrame) -> list[str]:
    """Scenes named in ``gdf`` (its file name when it has no rows)."""
    if len(gdf):
        return [str(s) for s in gdf["scene"].unique()]
    return [str(gdf.attrs.get("geoseg_default_scene", "scene"))]


def filter_results(
    gdf: gpd.GeoDataFrame, *, min_score: float | None, classes: Sequence[str] | None
) -> gpd.GeoDataFrame:
    """The rows of ``gdf`` with ``score >= min_score`` and ``class in classes`` (``None``: all).

    Raises:
        LabelError: ``min_score`` given but ``gdf`` has no ``score`` column.
    """
    keep = np.ones(len(gdf), dtype=bool)
    if min_score is not None:
        if "score" not in gdf.columns:
            raise LabelError(
                "min_score was given but the results have no 'score' column; drop --min-score"
            )
        keep &= gdf["score"].to_numpy(dtype=float) >= min_score
    if classes is not None:
        keep &= gdf["class"].isin(list(classes)).to_numpy()
    return gdf[keep]


def _projected(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` in metres: its own CRS if metric, else the local UTM zone (no CRS: as is)."""
    if gdf.crs is None or is_metric_crs(gdf.crs):
        return gdf
    if len(gdf) == 0:
        return gdf.to_crs(EQUAL_AREA_CRS)
    return gdf.to_crs(metric_crs(gdf.crs, gdf.total_bounds))


def _with_lengths(gdf: gpd.GeoDataFrame, proj: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Add ``length_m`` (long side of the minimum rotated rectangle) where the column is missing."""
    if "length_m" in gdf.columns or len(gdf) == 0 or proj.crs is None:
        return gdf
    length, _, _ = rectangle_axes(proj.geometry.to_numpy())
    gdf = gdf.copy()
    gdf["length_m"] = length
    return gdf


# --------------------------------------------------------------------------------------------
# the zone rule


def zone_points(gdf: gpd.GeoDataFrame) -> gpd.GeoSeries:
    """The point that places each object in a zone or grid cell: its centroid, in metres.

    The centroid is computed in the objects' own CRS when its unit is the metre, else in the
    UTM zone of their bounds (:func:`geoseg.geometry.metric_crs`; geographic or Web Mercator
    data), and returned in that CRS. Without a CRS, in the objects' own frame.
    """
    return _projected(gdf).geometry.centroid


def in_zones(gdf: gpd.GeoDataFrame, zones: gpd.GeoDataFrame) -> npt.NDArray[np.bool_]:
    """Which objects :func:`count` would count in at least one of ``zones``.

    An object is in when its :func:`zone_points` point lies inside a zone or on its border.

    Args:
        gdf: objects (polygons), in any CRS.
        zones: polygons in any CRS (points are reprojected to it); without CRSs both are
            taken to be in one frame.

    Returns:
        bool ``[len(gdf)]``.
    """
    inside = np.zeros(len(gdf), dtype=np.bool_)
    if len(gdf) == 0 or len(zones) == 0:
        return inside
    points = zone_points(gdf)
    if points.crs is not None and zones.crs is not None:
        points = points.to_crs(zones.crs)
    pi, _ = _assign(points.to_numpy(), zones.geometry.to_numpy())
    inside[pi] = True
    return inside


# --------------------------------------------------------------------------------------------
# counting


def count(
    results: ResultsLike,
    *,
    aoi: str | os.PathLike[str] | gpd.GeoDataFrame | None = None,
    grid_m: float | None = None,
    min_score: float | None = None,
    classes: Sequence[str] | None = None,
    size_bins: Mapping[str, Sequence[float]] | None = None,
    aoi_field: str | None = None,
) -> CountResult:
    """Count objects per scene and class, per AOI zone and per grid cell.

    Args:
        results: result vectors (see :func:`read_results`).
        aoi: zones to count in: a vector file or GeoDataFrame of polygons in any CRS (it must
            have one); each row is a zone.
        grid_m: grid cell size in metres; cells are square in the data's projected CRS (the
            local UTM zone when the data is geographic) and cover every object and the AOI.
        min_score: keep objects with ``score >= min_score``.
        classes: keep only these classes (and report them, in this order, even when absent).
            Each must be a class of some result or of a bundled preset.
        size_bins: ``length_m`` histogram edges per class; defaults to
            :data:`DEFAULT_SIZE_BINS` (ships and vehicles).
        aoi_field: the AOI column naming the zones; ``None``: found by
            :func:`zone_name_field` (row numbers when none fits).

    Returns:
        A :class:`CountResult`.

    Raises:
        LabelError: unreadable results or AOI, an AOI without CRS or polygons, or results
            without CRS when zones or a grid are asked for.
        ConfigError: ``grid_m`` not positive, or so small that the grid would exceed
            :data:`MAX_GRID_CELLS` cells; a class in ``classes`` that no result holds and no
            preset knows; ``aoi_field`` not a column of the AOI (or given without an AOI).
    """
    if aoi_field is not None and aoi is None:
        raise ConfigError(f"--aoi-field {aoi_field}: it names a column of the AOI; give --aoi")
    if grid_m is not None and not (math.isfinite(grid_m) and grid_m > 0):
        raise ConfigError(f"grid_m={grid_m!r}: the grid cell size must be a positive number of m")
    if classes is not None:
        classes = tuple(dict.fromkeys(str(c) for c in classes))
    raw, skipped = _read_results(results)
    if classes is not None:
        check_result_classes(classes, raw)
    # a file without objects still names a scene (its file name)
    all_scenes = sorted({s for g in raw for s in _scene_names(g)})
    frames = [filter_results(g, min_score=min_score, classes=classes) for g in raw]
    projected = [_projected(g) for g in frames]
    frames = [_with_lengths(g, p) for g, p in zip(frames, projected, strict=True)]
    present = sorted({c for g in frames for c in g["class"].unique()})
    class_order = tuple(classes) if classes is not None else tuple(present)

    table = _per_scene_table(frames, all_scenes, class_order)
    histograms = _histograms(frames, class_order, size_bins)

    need_space = aoi is not None or grid_m is not None
    centroids: list[gpd.GeoSeries] = []
    labels: list[npt.NDArray[np.object_]] = []
    scenes: list[npt.NDArray[np.object_]] = []
    if need_space:
        for g, p in zip(frames, projected, strict=True):
            if len(g) == 0:
                continue
            if p.crs is None:
                raise LabelError(
                    f"results of scene(s) {', '.join(sorted(g['scene'].unique()))} have no CRS; "
                    "zones and grids need georeferenced results (re-export them with a CRS)"
                )
            centroids.append(zone_points(p))
            labels.append(g["class"].to_numpy(dtype=object))
            scenes.append(g["scene"].to_numpy(dtype=object))

    zones = None
    aoi_gdf = None
    zone_field = None
    if aoi is not None:
        aoi_gdf = read_aoi(aoi)
        zone_field = check_zone_field(aoi_gdf, aoi_field, aoi)
        zones = _count_zones(aoi_gdf, centroids, labels, class_order, zone_field)
    grid = None
    if grid_m is not None:
        grid = _count_grid(float(grid_m), centroids, labels, scenes, class_order, aoi_gdf)
    return CountResult(
        classes=class_order,
        per_scene=table,
        zones=zones,
        grid=grid,
        histograms=histograms,
        grid_m=float(grid_m) if grid_m is not None else None,
        min_score=min_score,
        skipped=tuple(skipped),
        zone_field=zone_field,
    )


def _per_scene_table(
    frames: Sequence[gpd.GeoDataFrame], scenes: Sequence[str], classes: Sequence[str]
) -> pd.DataFrame:
    """(scene x class) rows with count, mean score, mean length and total area."""
    cols = ["scene", "class", "count", "mean_score", "mean_length_m", "total_area_m2"]
    parts = []
    for g in frames:
        if len(g) == 0:
            continue
        d = pd.DataFrame({"scene": g["scene"].to_numpy(), "class": g["class"].to_numpy()})
        for src, name in (("score", "score"), ("length_m", "length_m"), ("area_m2", "area_m2")):
            d[name] = g[src].to_numpy(dtype=float) if src in g.columns else np.nan
        parts.append(d)
    index = pd.MultiIndex.from_product([list(scenes), list(classes)], names=["scene", "class"])
    if not parts:
        out = pd.DataFrame(index=index).reset_index()
        out["count"] = 0
        for c in cols[3:]:
            out[c] = np.nan
        return out[cols]
    data = pd.concat(parts, ignore_index=True)
    grouped = data.groupby(["scene", "class"])
    agg = pd.DataFrame(
        {
            "count": grouped.size(),
            "mean_score": grouped["score"].mean(),
            "mean_length_m": grouped["length_m"].mean(),
            "total_area_m2": grouped["area_m2"].sum(min_count=1),
        }
    )
    agg = agg.reindex(index)
    agg["count"] = agg["count"].fillna(0).astype(np.int64)
    return agg.reset_index()[cols]


def _histograms(
    frames: Sequence[gpd.GeoDataFrame],
    classes: Sequence[str],
    size_bins: Mapping[str, Sequence[float]] | None,
) -> tuple[SizeHistogram, ...]:
    """``length_m`` histograms for the classes that have bins."""
    bins = DEFAULT_SIZE_BINS if size_bins is None else size_bins
    out = []
    for cls, edges_seq in bins.items():
        if cls not in classes:
            continue
        edges = tuple(float(e) for e in edges_seq)
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ConfigError(f"size_bins[{cls!r}]={edges_seq!r}: give >= 2 increasing edges")
        values = np.concatenate(
            [
                g.loc[g["class"] == cls, "length_m"].to_numpy(dtype=float)
                for g in frames
                if "length_m" in g.columns
            ]
            or [np.zeros(0)]
        )
        values = values[np.isfinite(values)]
        idx = np.searchsorted(np.asarray(edges), values, side="right") - 1
        idx = idx[(idx >= 0) & (idx < len(edges) - 1)]
        counts = np.bincount(idx, minlength=len(edges) - 1)
        out.append(SizeHistogram(cls, "length_m", edges, tuple(int(c) for c in counts)))
    return tuple(out)


def read_aoi(aoi: str | os.PathLike[str] | gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Read and check AOI zones (a CRS, at least one feature, polygons only), index 0..n-1.

    Raises:
        LabelError: unreadable, no CRS, no features, or geometries other than polygons.
    """
    gdf = read_vectors(aoi, what="AOI", require_crs=True, allow_empty=False, polygons=True)
    return gdf.reset_index(drop=True)


#: Column names that name a zone, after ``name`` and ``*name*`` (compared in lower case).
_ID_LIKE = ("id", "zone", "label", "title", "code")


def zone_name_field(aoi: gpd.GeoDataFrame) -> str | None:
    """The AOI column that names its zones, or ``None`` (zones are then named by row number).

    The first column, in this order of preference, whose values are all present and
    distinct: ``name`` (any case); a text column whose name contains ``name`` (``NAME_EN``,
    ``zone_name``); a text or integer column called ``id``, ``zone``, ``label``, ``title``,
    ``code`` or ending in ``_id``.
    """
    columns = [c for c in aoi.columns if c != aoi.geometry.name]

    def usable(col: str, *, integers: bool) -> bool:
        values = aoi[col]
        kind_ok = pd.api.types.is_string_dtype(values) or (
            integers and pd.api.types.is_integer_dtype(values)
        )
        return bool(kind_ok and values.notna().all() and values.is_unique)

    ranked = [
        [c for c in columns if str(c).lower() == "name"],
        [c for c in columns if "name" in str(c).lower() and str(c).lower() != "name"],
        [c for c in columns if str(c).lower() in _ID_LIKE or str(c).lower().endswith("_id")],
    ]
    for rank, group in enumerate(ranked):
        for col in group:
            if usable(col, integers=rank == 2):
                return str(col)
    return None


def check_zone_field(
    aoi: gpd.GeoDataFrame, field: str | None, source: str | os.PathLike[str] | gpd.GeoDataFrame
) -> str | None:
    """``field`` if it is a column of the AOI, else :func:`zone_name_field`'s choice.

    Args:
        aoi: the zones.
        field: the column asked for (``--aoi-field``), or ``None``.
        source: the AOI as given (named in the message).

    Raises:
        ConfigError: ``field`` is not a column of the AOI.
    """
    if field is None:
        return zone_name_field(aoi)
    if field not in aoi.columns or field == aoi.geometry.name:
        where = source if not isinstance(source, gpd.GeoDataFrame) else "the AOI"
        columns = [str(c) for c in aoi.columns if c != aoi.geometry.name]
        raise ConfigError(
            f"--aoi-field {field}: {where} has no such column; its columns: "
            f"{', '.join(columns) or 'none'}"
        )
    return field


def _assign(
    points: npt.NDArray[np.object_], zones: npt.NDArray[np.object_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Pairs ``(point index, zone index)``: interior hits, border points to their first zone."""
    tree = shapely.STRtree(zones)
    pi, zi = tree.query(points, predicate="intersects")
    if len(pi) == 0:
        return pi.astype(np.intp), zi.astype(np.intp)
    interior = shapely.within(points[pi], zones[zi])
    in_pi, in_zi = pi[interior], zi[interior]
    border = ~np.isin(pi, in_pi) & ~interior
    b_pi, b_zi = pi[border], zi[border]
    if len(b_pi):
        order = np.lexsort((b_zi, b_pi))
        b_pi, b_zi = b_pi[order], b_zi[order]
        first = np.concatenate([[True], b_pi[1:] != b_pi[:-1]])
        b_pi, b_zi = b_pi[first], b_zi[first]
    return (
        np.concatenate([in_pi, b_pi]).astype(np.intp),
        np.concatenate([in_zi, b_zi]).astype(np.intp),
    )


def _add_count_columns(
    target: gpd.GeoDataFrame,
    zone_idx: npt.NDArray[np.intp],
    cls_of: npt.NDArray[np.object_],
    classes: Sequence[str],
) -> gpd.GeoDataFrame:
    """Add ``area_km2``, ``count_*`` and ``density_*_km2`` columns (equal-area km²)."""
    n = len(target)
    area_km2 = target.geometry.to_crs(EQUAL_AREA_CRS).area.to_numpy() / 1e6
    target["area_km2"] = area_km2
    total = np.bincount(zone_idx, minlength=n).astype(np.int64)
    safe = np.where(area_km2 > 0, area_km2, np.nan)
    for cls in classes:
        c = np.bincount(zone_idx[cls_of == cls], minlength=n).astype(np.int64)
        target[f"count_{cls}"] = c
    target["count_total"] = total
    for cls in classes:
        target[f"density_{cls}_km2"] = target[f"count_{cls}"].to_numpy() / safe
    target["density_total_km2"] = total / safe
    return target


def zone_membership(
    aoi: gpd.GeoDataFrame,
    centroids: Sequence[gpd.GeoSeries],
    *,
    name_field: str | None = None,
) -> tuple[gpd.GeoDataFrame, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Which AOI zone holds each centroid: the counting rule of :func:`count`, for reuse.

    Args:
        aoi: the zones (polygons with a CRS, as :func:`read_aoi` returns them).
        centroids: points in any CRS (reprojected to the AOI's); their concatenation is
            indexed by the returned point indexes.
        name_field: the AOI column naming the zones (see :func:`check_zone_field`), or
            ``None`` (zones named by row number).

    Returns:
        ``(zones, point_index, zone_index)``: a copy of ``aoi`` with ``zone_id`` (row number)
        and ``zone`` (the text of ``name_field``, else the row number) as first columns, AOI
        columns clashing with count columns kept as ``aoi_<name>``; and ``[K]`` pairs: point
        ``point_index[k]`` lies in zone ``zone_index[k]`` (a point inside several overlapping
        zones appears once per zone; one on a shared border goes to the first zone; a point
        outside every zone appears in none).
    """
    if centroids:
        pts = np.concatenate([c.to_crs(aoi.crs).to_numpy() for c in centroids])
    else:
        pts = np.zeros(0, dtype=object)
    pi, zi = _assign(pts, aoi.geometry.to_numpy())
    zones = aoi.copy()
    ids = np.arange(len(zones), dtype=np.int64)
    names = zones[name_field].astype(str).to_numpy() if name_field else ids.astype(str)
    ours = {"zone_id", "zone", "area_km2", "count_total", "density_total_km2"}
    clash = {
        c: f"aoi_{c}"
        for c in zones.columns
        if c != zones.geometry.name and (c in ours or str(c).startswith(("count_", "density_")))
    }
    if clash:
        logger.info("AOI columns renamed to keep them beside the counts: %s", clash)
        zones = zones.rename(columns=clash)
    zones.insert(0, "zone", names)
    zones.insert(0, "zone_id", ids)
    return zones, pi, zi


def _count_zones(
    aoi: gpd.GeoDataFrame,
    centroids: Sequence[gpd.GeoSeries],
    labels: Sequence[npt.NDArray[np.object_]],
    classes: Sequence[str],
    name_field: str | None = None,
) -> gpd.GeoDataFrame:
    """Count centroids per AOI zone (see :func:`zone_membership`)."""
    cls = np.concatenate(labels) if labels else np.zeros(0, dtype=object)
    zones, pi, zi = zone_membership(aoi, centroids, name_field=name_field)
    return _add_count_columns(zones, zi, cls[pi], classes)


def common_metric_crs(
    centroids: Sequence[gpd.GeoSeries], aoi: gpd.GeoDataFrame | None = None
) -> CRS:
    """The data's metric CRS if all inputs share one, else the UTM zone of their centre.

    Args:
        centroids: geometries (points or any others) with a CRS, one GeoSeries per input.
        aoi: zones whose centre is taken into account, or ``None``.
    """
    crss = {c.crs for c in centroids}
    if len(crss) == 1:
        only = next(iter(crss))
        if only is not None and is_metric_crs(only):
            return CRS.from_user_input(only)
    parts = [c.to_crs("EPSG:4326") for c in centroids]
    if aoi is not None:
        b = aoi.geometry.to_crs("EPSG:4326").total_bounds
        mid = shapely.Point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        parts.append(gpd.GeoSeries([mid], crs="EPSG:4326"))
    lonlat = gpd.GeoSeries(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    x0, y0, x1, y1 = lonlat.total_bounds
    return CRS.from_user_input(utm_crs((x0 + x1) / 2.0, (y0 + y1) / 2.0))


def _count_grid(
    cell: float,
    centroids: Sequence[gpd.GeoSeries],
    labels: Sequence[npt.NDArray[np.object_]],
    scenes: Sequence[npt.NDArray[np.object_]],
    classes: Sequence[str],
    aoi: gpd.GeoDataFrame | None,
) -> gpd.GeoDataFrame:
    """Count centroids per square grid cell (see :func:`grid_membership`)."""
    cls = np.concatenate(labels) if labels else np.zeros(0, dtype=object)
    grid, where = grid_membership(cell, centroids, scenes, aoi)
    return _add_count_columns(grid, where, cls, classes)


def grid_membership(
    cell: float,
    centroids: Sequence[gpd.GeoSeries],
    groups: Sequence[npt.NDArray[np.object_]],
    aoi: gpd.GeoDataFrame | None,
) -> tuple[gpd.GeoDataFrame, npt.NDArray[np.intp]]:
    """The grid cells of :func:`count` and the cell of each centroid, for reuse.

    The cells form one grid (corners on multiples of ``cell`` metres in the grid CRS: the
    data's metric CRS when all inputs share one, else the UTM zone of their centre) but only
    the cells over each group's objects (their bounding box; a group is a scene in
    :func:`count`) and over the AOI are built, so scenes far apart do not fill the space
    between them with empty cells.

    Args:
        cell: cell size in metres.
        centroids: points in any CRS, one GeoSeries per input frame.
        groups: ``[len(centroids[i])]`` group labels of each frame's points.
        aoi: the zones, whose extent is covered too, or ``None``.

    Returns:
        ``(grid, where)``: the cells (``cell_id``, ``row`` with 0 = north, ``col``, geometry in
        the grid CRS) and ``[N]`` cell indexes (rows of ``grid``) of the concatenated points.

    Raises:
        ConfigError: the grid would have more than :data:`MAX_GRID_CELLS` cells.
    """
    if not centroids and aoi is None:
        logger.warning("no objects and no AOI: the grid is empty")
        empty = gpd.GeoDataFrame(
            {"cell_id": [], "row": [], "col": []}, geometry=[], crs=EQUAL_AREA_CRS
        )
        return empty, np.zeros(0, dtype=np.intp)
    crs = common_metric_crs(centroids, aoi)
    if centroids:
        xy = np.concatenate([shapely.get_coordinates(c.to_crs(crs).to_numpy()) for c in centroids])
        scene = np.concatenate(groups)
    else:
        xy = np.zeros((0, 2))
        scene = np.zeros(0, dtype=object)
    boxes = [(*xy[scene == s].min(axis=0), *xy[scene == s].max(axis=0)) for s in np.unique(scene)]
    if aoi is not None:
        boxes.append(tuple(aoi.to_crs(crs).total_bounds))
    lo = np.min([b[:2] for b in boxes], axis=0)
    hi = np.max([b[2:] for b in boxes], axis=0)
    x0, y0 = math.floor(lo[0] / cell) * cell, math.floor(lo[1] / cell) * cell
    ncols = math.floor((hi[0] - x0) / cell) + 1
    nrows = math.floor((hi[1] - y0) / cell) + 1

    def index(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], ...]:
        """(row, col) of points; row 0 is the northernmost."""
        col = np.floor((np.asarray(x) - x0) / cell).astype(np.int64)
        row = nrows - 1 - np.floor((np.asarray(y) - y0) / cell).astype(np.int64)
        return row, col

    blocks = []
    n_cells = 0
    for bx0, by0, bx1, by1 in boxes:
        (r1, r0), (c0, c1) = index([bx0, bx1], [by0, by1])
        n_cells += int((r1 - r0 + 1) * (c1 - c0 + 1))
        if n_cells > MAX_GRID_CELLS:
            raise ConfigError(
                f"grid_m={cell:g}: the grid would have more than {MAX_GRID_CELLS} cells; "
                "choose a larger cell size (it is in metres)"
            )
        rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
        blocks.append((rr * ncols + cc).ravel())
    flat_ids = np.unique(np.concatenate(blocks))
    row, col = index(xy[:, 0], xy[:, 1])
    where = np.searchsorted(flat_ids, row * ncols + col).astype(np.intp)
    rr, cc = np.divmod(flat_ids, ncols)
    minx = x0 + cc * cell
    maxy = y0 + (nrows - rr) * cell
    grid = gpd.GeoDataFrame(
        {"cell_id": np.arange(len(flat_ids), dtype=np.int64), "row": rr, "col": cc},
        geometry=shapely.box(minx, maxy - cell, minx + cell, maxy),
        crs=crs,
    )
    return grid, where


# --------------------------------------------------------------------------------------------
# output


def write_counts(result: CountResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` atomically; the format follows the extension (see :class:`CountsFormat`).

    ``.csv``: the per scene / class table. ``.gpkg``: layer ``zones`` and/or ``grid`` (polygons
    with count and density columns). ``.json``: :meth:`CountResult.to_dict`.

    Raises:
        ExportError: unknown extension, a ``.gpkg`` for a result without zones or grid, or the
            file cannot be written.
    """
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    try:
        fmt = CountsFormat(suffix)
    except ValueError as err:
        raise ExportError(
            f"{out}: unknown counts format {suffix!r}; use one of "
            f"{', '.join('.' + f.value for f in CountsFormat)}"
        ) from err
    if fmt is CountsFormat.GPKG and result.zones is None and result.grid is None:
        raise ExportError(
            f"{out}: a GeoPackage holds zones or grid cells, and this result has neither; "
            "pass an AOI (--aoi) or a grid (--grid), or write .csv/.json"
        )
    if not out.parent.exists():
        raise ExportError(f"{out}: the folder {out.parent} does not exist; create it first")

    def write(tmp: Path) -> None:
        if fmt is CountsFormat.CSV:
            result.per_scene.to_csv(tmp, index=False)
        elif fmt is CountsFormat.JSON:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            driver = VectorFormat.GPKG.driver
            layers = [("zones", result.zones), ("grid", result.grid)]
            written = [(name, gdf) for name, gdf in layers if gdf is not None]
            for k, (name, gdf) in enumerate(written):
                gdf.to_file(tmp, layer=name, driver=driver, mode="a" if k else "w")

    try:
        atomic_write(out, write, make_parents=False)
    except OSError as err:
        raise ExportError(f"{out}: cannot write the counts ({err})") from err
    logger.info("wrote counts to %s", out)
    return out


def format_counts(result: CountResult, *, max_rows: int = 30) -> str:
    """A plain-text table: counts per scene and class, totals, and the busiest zones/cells.

    Args:
        result: what :func:`count` returned.
        max_rows: at most this many scene rows and zone rows are listed.
    """
    classes = list(result.classes)
    lines: list[str] = []
    if result.per_scene.empty or not classes:
        lines.append("no objects counted")
    else:
        pivot = result.per_scene.pivot_table(
            index="scene", columns="class", values="count", aggfunc="sum", fill_value=0
        ).reindex(columns=classes, fill_value=0)
        pivot["total"] = pivot.sum(axis=1)
        rows = [
            [str(s), *(str(int(v)) for v in r)]
            for s, r in zip(pivot.index, pivot.to_numpy(), strict=True)
        ]
        shown = rows[:max_rows]
        totals = ["TOTAL", *(str(result.per_class[c]) for c in classes), str(result.total)]
        header = ["scene", *classes, "total"]
        lines += _table(header, shown, totals)
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more scenes")
    for h in result.histograms:
        bins = ", ".join(
            f"{_edge(lo)}-{_edge(hi)} m: {c}"
            for lo, hi, c in zip(h.edges[:-1], h.edges[1:], h.counts, strict=True)
        )
        lines.append(f"{h.class_name} {h.attribute}: {bins}")
    if result.zones is not None:
        z = result.zones.sort_values("count_total", ascending=False).head(max_rows)
        header = ["zone", "area_km2", *classes, "total", "per_km2"]
        label = "zone" if result.zones["zone"].is_unique else "zone_id"  # explicit field, dupes
        if label == "zone_id":
            header = ["zone_id", "zone", *header[1:]]
        rows = [
            [
                *([str(r["zone_id"])] if label == "zone_id" else []),
                str(r["zone"]),
                f"{r['area_km2']:.3f}",
                *(str(int(r[f"count_{c}"])) for c in classes),
                str(int(r["count_total"])),
                f"{r['density_total_km2']:.2f}",
            ]
            for _, r in z.iterrows()
        ]
        lines.append("")
        lines += _table(header, rows, None)
    if result.grid is not None:
        g = result.grid
        nonempty = int((g["count_total"] > 0).sum())
        peak = float(g["density_total_km2"].max()) if len(g) else 0.0
        lines.append("")
        lines.append(
            f"grid {result.grid_m:g} m: {len(g)} cells ({nonempty} with objects), "
            f"{int(g['count_total'].sum())} objects, peak {peak:.2f} per km2"
        )
    return "\n".join(lines)


def _edge(v: float) -> str:
    return f"{v:g}" if math.isfinite(v) else "inf"


def _table(header: list[str], rows: list[list[str]], footer: list[str] | None) -> list[str]:
    """Align columns: first left, others right."""
    allrows = [header, *rows, *([footer] if footer else [])]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    out = [fmt(header), rule, *(fmt(r) for r in rows)]
    if footer:
        out += [rule, fmt(footer)]
    return out
