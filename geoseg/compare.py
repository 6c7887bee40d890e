"""What changed between dates: objects matched across results of the same area.

Input: two or more results of the same place at different dates, each a result file, a
folder of them (a ``geoseg batch`` output folder: all its scenes are one date) or a
GeoDataFrame, with the columns :func:`geoseg.count.read_results` reads (``geometry``,
``class``, optionally ``score`` and ``scene``).

**Dates.** In this order: the ``dates`` argument; else a date column of the results
(``acquired``, ``acquisition_date``, ``datetime`` or ``date``: one date per input); else a
date in the ``scene`` names (``20230415``, ``2023-04-15``, ``2023_04_15``), the same for all
the input's scenes; else a date in the file or folder name (for a file, else in the name of
the folder holding it). Inputs are then sorted by date.
When an input has no date, the inputs stay in the order given and are labelled by their
names (``date_source == "order"``).

**Matching**, for each pair of consecutive dates, in one metric CRS (the data's own when all
inputs share a CRS in metres, else the local UTM zone; see
:func:`geoseg.count.common_metric_crs`):

1. *Georeferencing shift.* Two acquisitions are often offset by a few pixels. The shift is
   estimated once per pair of dates: every same-class pair of objects whose centroids are at
   most ``max_shift_m`` apart votes for its displacement; the strongest few vote peaks are
   tried, and the one under which the earlier objects overlap the later ones most (sum over
   objects of the best IoU) wins; it is refined to the median displacement of the pairs it
   matches. With fewer than :data:`MIN_SHIFT_PAIRS` such pairs the shift is zero.
2. *Candidates.* After removing the shift, two objects of the same class are candidates
   when their IoU is at least ``min_iou`` or when their centroids are closer than half the
   smaller object's width (short side of its minimum rotated rectangle; this keeps small
   objects, whose IoU a one-pixel outline difference halves, while two objects side by side
   are never closer than one width).
3. *One-to-one.* The Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`)
   maximises the summed score ``max(IoU, 1 - distance / width)`` over the candidates of
   each connected group.

An earlier object with a partner is ``persisted``; without one ``departed``; a later object
without a partner ``arrived``. An object that moved further than its tolerance (a boat that
left its berth for another one) is a departure at its old place and an arrival at the new one.

**Ids**: the value of ``id_column`` when given, else the object's row number in its file
(0-based; GeoPackages written by geoseg have ``fid`` = row + 1).

**Zones and cells**: the zones of an AOI and the grid cells of ``geoseg count``
(:func:`geoseg.count.zone_membership`, :func:`geoseg.count.grid_membership`: an object
belongs to the zone or cell holding its centroid). For each zone or cell and date: objects per
class, arrivals (counted at the later date, where the arriving object is) and departures
(counted at the later date, where the departed object was at the earlier one) and the change
of the count since the previous date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS

from geoseg.count import (
    ResultsLike,
    common_metric_crs,
    filter_results,
    grid_membership,
    read_aoi,
    read_results,
    zone_membership,
)
from geoseg.errors import ConfigError, ExportError, LabelError
from geoseg.geometry import rectangle_axes
from geoseg.io import VectorFormat, atomic_write

__all__ = [
    "DATE_COLUMNS",
    "MIN_SHIFT_PAIRS",
    "ChangeFormat",
    "ChangeResult",
    "ChangeStatus",
    "PairShift",
    "change_map",
    "compare",
    "date_in_name",
    "format_changes",
    "match_objects",
    "plot_timelines",
    "write_changes",
]

logger = logging.getLogger(__name__)

#: Columns read as an input's acquisition date, in this order.
DATE_COLUMNS = ("acquired", "acquisition_date", "datetime", "date")

#: Fewest candidate pairs from which a georeferencing shift is estimated (else no shift).
MIN_SHIFT_PAIRS = 3

#: Vote peaks tried as the shift of a pair of dates.
_SHIFT_PEAKS = 8

_DATE_IN_NAME = re.compile(
    r"(?<!\d)((?:19|20|21)\d\d)([-_]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])(?!\d)"
)


class ChangeStatus(StrEnum):
    """What happened to an object between two consecutive dates."""

    PERSISTED = "persisted"  # on both dates (matched)
    ARRIVED = "arrived"  # on the later date only
    DEPARTED = "departed"  # on the earlier date only


#: Map colours (RGB) of the statuses.
STATUS_COLOURS: dict[ChangeStatus, tuple[int, int, int]] = {
    ChangeStatus.PERSISTED: (66, 133, 244),
    ChangeStatus.ARRIVED: (52, 168, 83),
    ChangeStatus.DEPARTED: (219, 68, 55),
}


class ChangeFormat(StrEnum):
    """Output formats of :func:`write_changes`, chosen by the file extension."""

    GPKG = "gpkg"  # layers objects, tracks, zones, grid
    CSV = "csv"  # the timeline table (whole area, zones, cells)
    JSON = "json"  # dates, shifts, totals and the timeline, without geometries


@dataclass(frozen=True, slots=True)
class PairShift:
    """The georeferencing shift found between two consecutive dates.

    Attributes:
        date_from: the earlier date's label. date_to: the later date's label.
        dx_m: east shift in metres of the later date's objects relative to the earlier's.
        dy_m: north shift in metres.
        pairs: same-class candidate pairs that voted (0: the shift is 0 by default).
        matched: pairs matched one-to-one (``persisted``).
    """

    date_from: str
    date_to: str
    dx_m: float
    dy_m: float
    pairs: int
    matched: int


@dataclass(frozen=True, eq=False)
class ChangeResult:
    """Everything :func:`compare` found.

    Attributes:
        dates: the date labels in time order (ISO dates, or input names for ``"order"``).
        date_source: where the dates came from: ``"option"``, ``"column"``, ``"scene"``,
            ``"name"`` (file or folder names), a mix joined by ``+``, or ``"order"``.
        inputs: the inputs' names, in the order of ``dates``.
        classes: the classes compared.
        crs: the metric CRS of all geometries below.
        objects: one row per object and pair of consecutive dates: ``date_from``,
            ``date_to``, ``status`` (:class:`ChangeStatus`), ``class``, ``id_from``,
            ``id_to`` (null where the object is absent), ``scene_from``, ``scene_to``,
            ``track_id``, ``iou`` (after removing the shift), ``distance_m`` (centroids,
            after removing the shift); geometry at ``date_to`` (at ``date_from`` for
            ``departed``).
        tracks: one row per chain of matched objects: ``track_id``, ``class``,
            ``first_date``, ``last_date``, ``dates_seen``, ``id_<date>`` per date (null where
            absent); geometry where it was last seen.
        shifts: the georeferencing shift of each pair of dates.
        timeline: the whole area per date: ``date``, ``count_<class>``, ``count_total``,
            ``arrived_<class>``, ``arrived_total``, ``departed_<class>``, ``departed_total``,
            ``change_<class>``, ``change_total`` (arrivals, departures and change are null at
            the first date).
        zones: the same columns per AOI zone and date, with ``zone_id``, the AOI's own
            attributes and geometry (its CRS); ``None`` without an AOI.
        grid: the same per grid cell and date, with ``cell_id``, ``row``, ``col``; only cells
            holding an object on some date; ``None`` without ``grid_m``.
        grid_m: the grid cell size in metres, or ``None``.
        min_iou: the IoU a match needs (besides the centroid rule).
        max_shift_m: the largest georeferencing shift searched, in metres.
    """

    dates: tuple[str, ...]
    date_source: str
    inputs: tuple[str, ...]
    classes: tuple[str, ...]
    crs: CRS
    objects: gpd.GeoDataFrame
    tracks: gpd.GeoDataFrame
    shifts: tuple[PairShift, ...]
    timeline: pd.DataFrame
    zones: gpd.GeoDataFrame | None = None
    grid: gpd.GeoDataFrame | None = None
    grid_m: float | None = None
    min_iou: float = 0.3
    max_shift_m: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    def status_counts(self) -> pd.DataFrame:
        """Objects per pair of dates, class and status (columns ``persisted``, ...)."""
        table = (
            self.objects.groupby(["date_from", "date_to", "class", "status"], sort=False)
            .size()
            .unstack("status", fill_value=0)
            .reindex(columns=[s.value for s in ChangeStatus], fill_value=0)
        )
        return table.reset_index()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: dates, shifts, status counts and the timeline tables."""
        out: dict[str, Any] = {
            "dates": list(self.dates),
            "date_source": self.date_source,
            "inputs": list(self.inputs),
            "classes": list(self.classes),
            "crs": self.crs.to_string(),
            "min_iou": self.min_iou,
            "max_shift_m": self.max_shift_m,
            "shifts": [
                {
                    "date_from": s.date_from,
                    "date_to": s.date_to,
                    "dx_m": s.dx_m,
                    "dy_m": s.dy_m,
                    "pairs": s.pairs,
                    "matched": s.matched,
                }
                for s in self.shifts
            ],
            "status_counts": _records(self.status_counts()),
            "timeline": _records(self.timeline),
        }
        if self.zones is not None:
            out["zones"] = _records(pd.DataFrame(self.zones.drop(columns="geometry")))
        if self.grid is not None:
            out["grid"] = {
                "cell_m": self.grid_m,
                "crs": self.grid.crs.to_string() if self.grid.crs is not None else None,
                "cells": _records(pd.DataFrame(self.grid.drop(columns="geometry"))),
            }
        return out

    def table(self) -> pd.DataFrame:
        """The timelines of the whole area, the zones and the cells in one long table.

        Columns ``unit`` (``all``, ``zone`` or ``cell``), ``unit_id`` (-1 for ``all``),
        ``date`` and the count columns of :attr:`timeline`.
        """
        parts = [self.timeline.assign(unit="all", unit_id=-1)]
        if self.zones is not None:
            parts.append(_units(self.zones, "zone", "zone_id", self.timeline.columns))
        if self.grid is not None:
            parts.append(_units(self.grid, "cell", "cell_id", self.timeline.columns))
        table = pd.concat(parts, ignore_index=True)
        return table[["unit", "unit_id", *self.timeline.columns]]


def _units(gdf: gpd.GeoDataFrame, unit: str, id_col: str, cols: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(gdf.drop(columns="geometry"))
    return frame[[id_col, *cols]].rename(columns={id_col: "unit_id"}).assign(unit=unit)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame -> list of JSON-safe dicts (NaN/NA -> None)."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", double_precision=10))
    return records


# --------------------------------------------------------------------------------------------
# dates


def date_in_name(name: str) -> dt.date | None:
    """The one calendar date written in ``name`` (``20230415``, ``2023-04-15``, ``2023_04_15``).

    Returns ``None`` when there is none, or several different ones.
    """
    found: set[dt.date] = set()
    for m in _DATE_IN_NAME.finditer(name):
        try:
            found.add(dt.date(int(m.group(1)), int(m.group(3)), int(m.group(4))))
        except ValueError:  # 2023-02-30
            continue
    return found.pop() if len(found) == 1 else None


def _parse_date(value: Any) -> dt.date | None:
    """A date from a column value (date, datetime, ISO text, 8-digit text), else ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.date()
    text = str(value).strip()
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        return date_in_name(text)


def _input_date(
    frames: Sequence[gpd.GeoDataFrame], item: Any, name: str
) -> tuple[dt.date | None, str]:
    """The date of one input and where it came from (``column``, ``scene``, ``name``).

    ``name`` is the file's stem or the folder's name; for a file whose stem has no date, the
    name of the folder holding it is tried (``batch/2023-04-01/harbour.gpkg``).
    """
    for col in DATE_COLUMNS:
        values = [v for g in frames if col in g.columns for v in g[col].unique()]
        parsed = {_parse_date(v) for v in values}
        parsed.discard(None)
        if len(parsed) == 1:
            return parsed.pop(), "column"
    scenes = {str(s) for g in frames if "scene" in g.columns for s in g["scene"].unique()}
    in_scenes = {date_in_name(s) for s in scenes}
    if scenes and len(in_scenes) == 1 and None not in in_scenes:
        return in_scenes.pop(), "scene"
    found = date_in_name(name)
    if found is None and isinstance(item, str | os.PathLike) and Path(item).is_file():
        found = date_in_name(Path(item).resolve().parent.name)
    return found, "name"


def _parse_option_dates(dates: Sequence[str | dt.date], n: int) -> list[dt.date]:
    if len(dates) != n:
        raise ConfigError(f"dates: {len(dates)} dates for {n} inputs; give one date per input")
    out = []
    for d in dates:
        parsed = _parse_date(d)
        if parsed is None:
            raise ConfigError(f"dates: {d!r} is not a date; give ISO dates such as 2023-04-15")
        out.append(parsed)
    return out


# --------------------------------------------------------------------------------------------
# matching


def _widths(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
    """Short side of each geometry's minimum rotated rectangle (metric CRS)."""
    if len(geoms) == 0:
        return np.zeros(0)
    _, short, _ = rectangle_axes(geoms)
    return np.asarray(short, dtype=float)


def _pair_ious(
    a: npt.NDArray[np.object_],
    b: npt.NDArray[np.object_],
    a_cls: npt.NDArray[np.object_],
    b_cls: npt.NDArray[np.object_],
    shift: tuple[float, float],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Same-class pairs ``(i, j, IoU)`` of ``a`` moved by ``shift`` that intersect ``b``."""
    moved = shapely.transform(a, lambda xy: xy + np.asarray(shift)) if len(a) else a
    tree = shapely.STRtree(b)
    ai, bj = tree.query(moved, predicate="intersects")
    keep = a_cls[ai] == b_cls[bj]
    ai, bj = ai[keep], bj[keep]
    inter = shapely.area(shapely.intersection(moved[ai], b[bj]))
    union = shapely.area(moved[ai]) + shapely.area(b[bj]) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return ai.astype(np.intp), bj.astype(np.intp), iou


def _estimate_shift(
    a: npt.NDArray[np.object_],
    b: npt.NDArray[np.object_],
    a_cls: npt.NDArray[np.object_],
    b_cls: npt.NDArray[np.object_],
    ca: npt.NDArray[np.float64],
    cb: npt.NDArray[np.float64],
    *,
    max_shift_m: float,
    min_iou: float,
) -> tuple[tuple[float, float], int]:
    """The georeferencing shift ``(dx, dy)`` in metres of ``b`` relative to ``a``; pair count."""
    from scipy.spatial import cKDTree

    if max_shift_m <= 0 or len(a) == 0 or len(b) == 0:
        return (0.0, 0.0), 0
    near = cKDTree(cb).query_ball_point(ca, r=max_shift_m)
    ii = np.repeat(np.arange(len(ca)), [len(n) for n in near])
    jj = np.fromiter((j for n in near for j in n), dtype=np.intp, count=len(ii))
    same = a_cls[ii] == b_cls[jj]
    ii, jj = ii[same], jj[same]
    if len(ii) < MIN_SHIFT_PAIRS:
        return (0.0, 0.0), len(ii)
    disp = cb[jj] - ca[ii]
    radius = max_shift_m / 8.0
    votes = np.asarray(cKDTree(disp).query_ball_point(disp, r=radius, return_length=True))
    peaks: list[npt.NDArray[np.float64]] = [np.zeros(2)]
    for k in np.argsort(-votes, kind="stable"):
        if len(peaks) > _SHIFT_PEAKS:
            break
        if all(np.hypot(*(disp[k] - p)) > radius for p in peaks):
            peaks.append(disp[k])

    def total_iou(shift: npt.NDArray[np.float64]) -> float:
        ai, _, iou = _pair_ious(a, b, a_cls, b_cls, (float(shift[0]), float(shift[1])))
        if len(ai) == 0:
            return 0.0
        best = np.zeros(len(a))
        np.maximum.at(best, ai, iou)
        return float(best.sum())

    scores = [total_iou(p) for p in peaks]
    best = peaks[int(np.argmax(scores))]
    # refine: median displacement of the pairs that overlap well under the best peak
    ai, bj, iou = _pair_ious(a, b, a_cls, b_cls, (float(best[0]), float(best[1])))
    good = iou >= max(min_iou, 0.5)
    if good.sum() >= MIN_SHIFT_PAIRS:
        refined = np.median(cb[bj[good]] - ca[ai[good]], axis=0)
        if total_iou(refined) >= total_iou(best):
            best = refined
    return (float(best[0]), float(best[1])), len(ii)


def match_objects(
    a: gpd.GeoSeries | npt.NDArray[np.object_],
    b: gpd.GeoSeries | npt.NDArray[np.object_],
    a_classes: Sequence[str] | npt.NDArray[np.object_],
    b_classes: Sequence[str] | npt.NDArray[np.object_],
    *,
    min_iou: float = 0.3,
    max_shift_m: float = 5.0,
) -> tuple[
    npt.NDArray[np.intp],
    npt.NDArray[np.intp],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    tuple[float, float],
    int,
]:
    """Match the objects of two dates one-to-one, class-aware, shift-tolerant.

    See the module docstring for the rule (shift estimate, candidates, Hungarian).

    Args:
        a: ``[N]`` polygons of the earlier date in a metric CRS (metres).
        b: ``[M]`` polygons of the later date in the same CRS.
        a_classes: ``[N]`` class names of ``a``.
        b_classes: ``[M]`` class names of ``b``.
        min_iou: IoU (after removing the shift) that makes two objects candidates.
        max_shift_m: largest georeferencing shift searched, in metres (0: none).

    Returns:
        ``(ia, ib, iou, distance_m, shift, voters)``: ``[K]`` matched indexes into ``a`` and
        ``b``, their IoU and centroid distance after removing the shift, the shift
        ``(dx, dy)`` of ``b`` relative to ``a`` in metres, and the number of candidate pairs
        that voted for it.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    ga = np.asarray(a, dtype=object)
    gb = np.asarray(b, dtype=object)
    la = np.asarray(a_classes, dtype=object)
    lb = np.asarray(b_classes, dtype=object)
    if len(la) != len(ga) or len(lb) != len(gb):
        raise ValueError("one class per geometry is needed")
    empty = np.zeros(0, dtype=np.intp)
    if len(ga) == 0 or len(gb) == 0:
        return empty, empty, np.zeros(0), np.zeros(0), (0.0, 0.0), 0
    ca = shapely.get_coordinates(shapely.centroid(ga))
    cb = shapely.get_coordinates(shapely.centroid(gb))
    shift, voters = _estimate_shift(
        ga, gb, la, lb, ca, cb, max_shift_m=max_shift_m, min_iou=min_iou
    )
    wa, wb = _widths(ga), _widths(gb)
    # candidates: overlapping pairs, and pairs closer than half the smaller width
    ai, bj, iou = _pair_ious(ga, gb, la, lb, shift)
    moved = ca + np.asarray(shift)
    near = cKDTree(cb).query_ball_point(moved, r=max(float(np.max(wa)), float(np.max(wb))) / 2)
    ni = np.repeat(np.arange(len(ca)), [len(n) for n in near])
    nj = np.fromiter((j for n in near for j in n), dtype=np.intp, count=len(ni))
    sel = la[ni] == lb[nj]
    ni, nj = ni[sel], nj[sel]
    pi = np.concatenate([ai, ni])
    pj = np.concatenate([bj, nj])
    piou = np.concatenate([iou, np.zeros(len(ni))])
    key = pi.astype(np.int64) * len(gb) + pj
    key, first = np.unique(key, return_index=True)
    pi, pj = pi[first], pj[first]
    # the IoU of a pair found by both routes is the overlap route's (it comes first)
    piou = piou[first]
    dist = np.hypot(*(cb[pj] - moved[pi]).T)
    width = np.minimum(wa[pi], wb[pj])
    close = dist < width / 2
    ok = (piou >= min_iou) | close
    pi, pj, piou, dist, width = pi[ok], pj[ok], piou[ok], dist[ok], width[ok]
    score = np.maximum(piou, np.where(width > 0, 1.0 - dist / np.where(width > 0, width, 1), 0))
    score = np.maximum(score, 1e-6)
    if len(pi) == 0:
        return empty, empty, np.zeros(0), np.zeros(0), shift, voters
    n, m = len(ga), len(gb)
    graph = coo_matrix((np.ones(len(pi)), (pi, pj + n)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    out_i: list[int] = []
    out_j: list[int] = []
    pair_comp = comp[pi]
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
    for group in np.split(order, bounds):
        rows, ri = np.unique(pi[group], return_inverse=True)
        cols, ci = np.unique(pj[group], return_inverse=True)
        mat = np.zeros((len(rows), len(cols)))
        mat[ri, ci] = score[group]
        r, c = linear_sum_assignment(mat, maximize=True)
        keep = mat[r, c] > 0
        out_i += rows[r[keep]].tolist()
        out_j += cols[c[keep]].tolist()
    mi = np.asarray(out_i, dtype=np.intp)
    mj = np.asarray(out_j, dtype=np.intp)
    order = np.argsort(mi, kind="stable")
    mi, mj = mi[order], mj[order]
    pair_iou = dict(zip(zip(pi.tolist(), pj.tolist(), strict=True), piou.tolist(), strict=True))
    miou = np.asarray([pair_iou[(i, j)] for i, j in zip(mi.tolist(), mj.tolist(), strict=True)])
    mdist = np.hypot(*(cb[mj] - moved[mi]).T) if len(mi) else np.zeros(0)
    return mi, mj, miou.astype(float), np.asarray(mdist, dtype=float), shift, voters


# --------------------------------------------------------------------------------------------
# comparing


@dataclass(frozen=True, eq=False)
class _Date:
    """One date's objects in the metric CRS."""

    label: str
    name: str
    gdf: gpd.GeoDataFrame  # columns class, scene, _id; geometry metric
    centroids: gpd.GeoSeries


def _input_name(item: Any, k: int) -> str:
    if isinstance(item, gpd.GeoDataFrame):
        return f"input{k + 1}"
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        return path.name if path.is_dir() else path.stem
    return f"input{k + 1}"


def _ids(frames: Sequence[gpd.GeoDataFrame], id_column: str | None, name: str) -> pd.Series:
    """Each row's id: ``id_column``'s value, else its row number in its file."""
    parts = []
    for g in frames:
        if id_column is None:
            parts.append(pd.Series(np.arange(len(g), dtype=np.int64), index=g.index))
        elif id_column not in g.columns:
            raise LabelError(
                f"{name}: no column {id_column!r} to take ids from (columns: "
                f"{', '.join(map(str, g.columns))}); give another id column or none"
            )
        else:
            parts.append(g[id_column])
    return pd.concat(parts) if parts else pd.Series([], dtype=np.int64)


def compare(
    inputs: Sequence[ResultsLike],
    *,
    dates: Sequence[str | dt.date] | None = None,
    aoi: str | os.PathLike[str] | gpd.GeoDataFrame | None = None,
    grid_m: float | None = None,
    min_score: float | None = None,
    classes: Sequence[str] | None = None,
    min_iou: float = 0.3,
    max_shift_m: float = 5.0,
    id_column: str | None = None,
) -> ChangeResult:
    """Match the objects of results of one area at several dates; count what changed.

    Args:
        inputs: one entry per date: a result file, a folder of result files (e.g. a
            ``geoseg batch`` output folder; all its scenes are that date), a GeoDataFrame, or
            a sequence of these. At least two.
        dates: one date per input (ISO text or :class:`datetime.date`); default: from the
            results' date column, their scene names or the file names (see the module
            docstring), else the order given.
        aoi: zones (any polygon vector file or GeoDataFrame with a CRS): a timeline per zone.
        grid_m: grid cell size in metres: a timeline per cell (the cells of ``geoseg count``).
        min_score: compare only objects with ``score >= min_score``.
        classes: compare only these classes.
        min_iou: IoU, after removing the georeferencing shift, that makes a match.
        max_shift_m: largest georeferencing shift between two dates searched, in metres.
        id_column: the column holding the objects' ids (default: row number in the file).

    Returns:
        A :class:`ChangeResult` (geometries in one metric CRS).

    Raises:
        ConfigError: fewer than two inputs, bad ``dates`` (count, format, duplicates),
            ``min_iou`` outside (0, 1], ``max_shift_m`` negative, ``grid_m`` not positive.
        LabelError: unreadable results or AOI, results without CRS, a missing ``id_column``.
    """
    if len(inputs) < 2:
        raise ConfigError(f"compare needs results of at least two dates, got {len(inputs)}")
    if not 0.0 < min_iou <= 1.0:
        raise ConfigError(f"min_iou={min_iou!r}: give an IoU in (0, 1]")
    if not (math.isfinite(max_shift_m) and max_shift_m >= 0):
        raise ConfigError(f"max_shift_m={max_shift_m!r}: give a distance >= 0 in metres")
    if grid_m is not None and not (math.isfinite(grid_m) and grid_m > 0):
        raise ConfigError(f"grid_m={grid_m!r}: the grid cell size must be a positive number of m")
    class_filter = tuple(dict.fromkeys(str(c) for c in classes)) if classes is not None else None
    names = [_input_name(item, k) for k, item in enumerate(inputs)]
    raw = [read_results(item) for item in inputs]
    for name, frames in zip(names, raw, strict=True):
        for g in frames:
            if g.crs is None and len(g):
                raise LabelError(
                    f"{name}: results without a CRS cannot be compared in metres; give "
                    "georeferenced results"
                )

    # dates and order
    if dates is not None:
        found: list[dt.date | None] = list(_parse_option_dates(dates, len(inputs)))
        sources = {"option"}
    else:
        pairs = [_input_date(f, item, n) for f, item, n in zip(raw, inputs, names, strict=True)]
        found = [d for d, _ in pairs]
        sources = {s for d, s in pairs if d is not None}
    if all(d is not None for d in found):
        known = [d for d in found if d is not None]
        if len(set(known)) < len(known):
            dup = sorted({d for d in known if known.count(d) > 1})
            raise ConfigError(
                f"two inputs have the same date ({', '.join(map(str, dup))}); give one input "
                "per date (a folder for several scenes of one date) or --dates"
            )
        order = sorted(range(len(inputs)), key=lambda k: known[k])
        labels = [known[k].isoformat() for k in order]
        date_source = "+".join(sorted(sources))
    else:
        missing = [n for n, d in zip(names, found, strict=True) if d is None]
        logger.warning(
            "no date found for %s: comparing the inputs in the order given", ", ".join(missing)
        )
        order = list(range(len(inputs)))
        labels = names if len(set(names)) == len(names) else [f"t{k + 1}" for k in order]
        date_source = "order"

    # one metric CRS for all dates
    frames_by_date = []
    for k in order:
        frames = [filter_results(g, min_score=min_score, classes=class_filter) for g in raw[k]]
        ids = _ids(frames, id_column, names[k])
        frames_by_date.append((frames, ids))
    located = [
        g.geometry for frames, _ in frames_by_date for g in frames if len(g) and g.crs is not None
    ]
    aoi_gdf = read_aoi(aoi) if aoi is not None else None
    if not located and aoi_gdf is None:
        crs = CRS.from_user_input("EPSG:6933")
    else:
        crs = common_metric_crs(located, aoi_gdf)
    days: list[_Date] = []
    for (frames, ids), k, label in zip(frames_by_date, order, labels, strict=True):
        parts = [g.to_crs(crs) for g in frames if len(g)]
        if parts:
            gdf = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=crs)
        else:
            gdf = gpd.GeoDataFrame({"class": [], "scene": []}, geometry=[], crs=crs)
        gdf = gpd.GeoDataFrame(
            {
                "class": gdf["class"].astype(str).to_numpy(),
                "scene": gdf["scene"].astype(str).to_numpy(),
                "_id": ids.to_numpy(),
            },
            geometry=gdf.geometry.to_numpy(),
            crs=crs,
        )
        days.append(_Date(label, names[k], gdf, gdf.geometry.centroid))
    present = sorted({c for d in days for c in d.gdf["class"].unique()})
    class_order = class_filter if class_filter is not None else tuple(present)

    objects, tracks, shifts, status_in, status_out = _match_dates(
        days, min_iou=min_iou, max_shift_m=max_shift_m
    )
    point_date = np.concatenate([np.full(len(d.gdf), t) for t, d in enumerate(days)])
    point_cls = np.concatenate([d.gdf["class"].to_numpy(dtype=object) for d in days])
    events = _Events(point_date, point_cls, np.concatenate(status_in), np.concatenate(status_out))
    centroids = [d.centroids for d in days if len(d.gdf)]
    labels_t = tuple(labels)
    timeline = _timeline(events, np.zeros(len(point_date), dtype=np.intp), 1, labels_t, class_order)
    timeline = timeline.drop(columns="_unit")

    zones = None
    if aoi_gdf is not None:
        zone_gdf, pi, zi = zone_membership(aoi_gdf, centroids)
        table = _timeline(events.take(pi), zi, len(zone_gdf), labels_t, class_order)
        zones = _attach(zone_gdf, "zone_id", table, keep_all=True)
    grid = None
    if grid_m is not None:
        groups = [np.full(len(c), t, dtype=object) for t, c in enumerate(centroids)]
        cells, where = grid_membership(float(grid_m), centroids, groups, aoi_gdf)
        table = _timeline(events, where, len(cells), labels_t, class_order)
        grid = _attach(cells, "cell_id", table, keep_all=False)
    return ChangeResult(
        dates=labels_t,
        date_source=date_source,
        inputs=tuple(names[k] for k in order),
        classes=class_order,
        crs=CRS.from_user_input(crs),
        objects=objects,
        tracks=tracks,
        shifts=tuple(shifts),
        timeline=timeline,
        zones=zones,
        grid=grid,
        grid_m=float(grid_m) if grid_m is not None else None,
        min_iou=min_iou,
        max_shift_m=max_shift_m,
    )


def _match_dates(
    days: Sequence[_Date], *, min_iou: float, max_shift_m: float
) -> tuple[
    gpd.GeoDataFrame,
    gpd.GeoDataFrame,
    list[PairShift],
    list[npt.NDArray[np.object_]],
    list[npt.NDArray[np.object_]],
]:
    """Match consecutive dates; the object and track tables, shifts and per-object statuses.

    ``status_in[t][i]``: what object ``i`` of date ``t`` is relative to date ``t - 1``
    (``persisted``/``arrived``; ``None`` at the first date); ``status_out[t][i]`` relative to
    date ``t + 1`` (``persisted``/``departed``; ``None`` at the last date).
    """
    crs = days[0].gdf.crs
    track_of = [np.full(len(d.gdf), -1, dtype=np.int64) for d in days]
    track_of[0][:] = np.arange(len(days[0].gdf))
    next_track = len(days[0].gdf)
    status_in = [np.full(len(d.gdf), None, dtype=object) for d in days]
    status_out = [np.full(len(d.gdf), None, dtype=object) for d in days]
    rows: list[pd.DataFrame] = []
    geoms: list[npt.NDArray[np.object_]] = []
    shifts: list[PairShift] = []
    for t in range(1, len(days)):
        a, b = days[t - 1].gdf, days[t].gdf
        ia, ib, iou, dist, shift, voters = match_objects(
            a.geometry.to_numpy(),
            b.geometry.to_numpy(),
            a["class"].to_numpy(dtype=object),
            b["class"].to_numpy(dtype=object),
            min_iou=min_iou,
            max_shift_m=max_shift_m,
        )
        shifts.append(
            PairShift(days[t - 1].label, days[t].label, shift[0], shift[1], voters, len(ia))
        )
        logger.info(
            "%s -> %s: shift (%.2f, %.2f) m from %d pairs, %d matched",
            days[t - 1].label,
            days[t].label,
            shift[0],
            shift[1],
            voters,
            len(ia),
        )
        track_of[t][ib] = track_of[t - 1][ia]
        new = track_of[t] < 0
        track_of[t][new] = np.arange(next_track, next_track + int(new.sum()))
        next_track += int(new.sum())
        gone = np.setdiff1d(np.arange(len(a)), ia)
        came = np.flatnonzero(new)
        status_out[t - 1][:] = ChangeStatus.DEPARTED.value
        status_out[t - 1][ia] = ChangeStatus.PERSISTED.value
        status_in[t][:] = ChangeStatus.ARRIVED.value
        status_in[t][ib] = ChangeStatus.PERSISTED.value
        for status, ai, bj, ious, dists in (
            (ChangeStatus.PERSISTED, ia, ib, iou, dist),
            (ChangeStatus.DEPARTED, gone, None, None, None),
            (ChangeStatus.ARRIVED, None, came, None, None),
        ):
            n = len(ai) if ai is not None else len(bj)  # type: ignore[arg-type]
            frame = pd.DataFrame(
                {
                    "date_from": days[t - 1].label,
                    "date_to": days[t].label,
                    "status": status.value,
                    "class": (a if ai is not None else b)["class"].to_numpy()[
                        ai if ai is not None else bj
                    ],
                    "id_from": _pick(a["_id"], ai, n),
                    "id_to": _pick(b["_id"], bj, n),
                    "scene_from": _pick(a["scene"], ai, n),
                    "scene_to": _pick(b["scene"], bj, n),
                    "track_id": track_of[t - 1][ai] if ai is not None else track_of[t][bj],
                    "iou": ious if ious is not None else np.nan,
                    "distance_m": dists if dists is not None else np.nan,
                },
                index=pd.RangeIndex(n),
            )
            rows.append(frame)
            geoms.append(b.geometry.to_numpy()[bj] if bj is not None else a.geometry.to_numpy()[ai])
    if rows:
        table = pd.concat(rows, ignore_index=True)
        objects = gpd.GeoDataFrame(table, geometry=np.concatenate(geoms), crs=crs)
    else:
        objects = gpd.GeoDataFrame(geometry=[], crs=crs)
    for col in ("id_from", "id_to"):
        objects[col] = _id_dtype(objects[col])
    objects["track_id"] = objects["track_id"].astype(np.int64)
    return objects, _tracks(days, track_of, next_track), shifts, status_in, status_out


def _pick(column: pd.Series, idx: npt.NDArray[np.intp] | None, n: int) -> pd.Series:
    """``column``'s values at ``idx`` as objects (``n`` nulls when ``idx`` is ``None``)."""
    if idx is None:
        return pd.Series([None] * n, dtype=object)
    return pd.Series(np.asarray(column.to_numpy(dtype=object)[idx], dtype=object), dtype=object)


def _id_dtype(values: pd.Series) -> pd.Series:
    """Integer ids as nullable ``Int64``, others as text (null where absent)."""
    present = values.dropna()
    if len(present) == 0 or all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in present
    ):
        return values.astype("Int64")
    return values.map(lambda v: None if v is None or v is pd.NA else str(v)).astype(object)


def _tracks(
    days: Sequence[_Date], track_of: Sequence[npt.NDArray[np.int64]], n_tracks: int
) -> gpd.GeoDataFrame:
    """One row per track: class, first/last date, the id on each date, last geometry."""
    cls = np.full(n_tracks, None, dtype=object)
    first = np.full(n_tracks, None, dtype=object)
    last = np.full(n_tracks, None, dtype=object)
    seen = np.zeros(n_tracks, dtype=np.int64)
    geom = np.full(n_tracks, None, dtype=object)
    ids: dict[str, pd.Series] = {}
    for d, tr in zip(days, track_of, strict=True):
        cls[tr] = d.gdf["class"].to_numpy()
        unset = tr[np.asarray([f is None for f in first[tr]], dtype=bool)]
        first[unset] = d.label
        last[tr] = d.label
        seen[tr] += 1
        geom[tr] = d.gdf.geometry.to_numpy()
        col = pd.Series([None] * n_tracks, dtype=object)
        col.iloc[tr] = d.gdf["_id"].to_numpy()
        ids[f"id_{d.label}"] = _id_dtype(col)
    frame = pd.DataFrame(
        {
            "track_id": np.arange(n_tracks, dtype=np.int64),
            "class": cls,
            "first_date": first,
            "last_date": last,
            "dates_seen": seen,
            **ids,
        }
    )
    return gpd.GeoDataFrame(frame, geometry=list(geom), crs=days[0].gdf.crs)


@dataclass(frozen=True, eq=False)
class _Events:
    """Per object of every date: its date index, class, status in and status out."""

    date: npt.NDArray[np.int64]
    cls: npt.NDArray[np.object_]
    status_in: npt.NDArray[np.object_]
    status_out: npt.NDArray[np.object_]

    def take(self, idx: npt.NDArray[np.intp]) -> _Events:
        return _Events(self.date[idx], self.cls[idx], self.status_in[idx], self.status_out[idx])


def _timeline(
    ev: _Events,
    unit: npt.NDArray[np.intp],
    n_units: int,
    dates: Sequence[str],
    classes: Sequence[str],
) -> pd.DataFrame:
    """Counts, arrivals, departures and change per (unit, date); ``unit[k]`` for event ``k``.

    A departure between dates ``t - 1`` and ``t`` is attributed to date ``t`` (at the place
    the object had at ``t - 1``); an arrival to date ``t`` (where it is at ``t``).
    """
    n_dates = len(dates)
    shape = (n_units, n_dates)

    def tally(mask: npt.NDArray[np.bool_], shift: int = 0) -> npt.NDArray[np.int64]:
        out = np.zeros(shape, dtype=np.int64)
        np.add.at(out, (unit[mask], ev.date[mask] + shift), 1)
        return out

    arrived = ev.status_in == ChangeStatus.ARRIVED.value
    departed = ev.status_out == ChangeStatus.DEPARTED.value
    cols: dict[str, npt.NDArray[Any]] = {}
    total = {"count": tally(np.ones(len(ev.date), dtype=bool))}
    total["arrived"] = tally(arrived)
    total["departed"] = tally(departed, shift=1)  # nothing departs after the last date
    per_cls = {}
    for c in classes:
        is_c = ev.cls == c
        per_cls[c] = {
            "count": tally(is_c),
            "arrived": tally(is_c & arrived),
            "departed": tally(is_c & departed, shift=1),
        }
    for kind in ("count", "arrived", "departed"):
        for c in classes:
            cols[f"{kind}_{c}"] = per_cls[c][kind]
        cols[f"{kind}_total"] = total[kind]
    for c in [*classes, "total"]:
        counts = cols[f"count_{c}"]
        cols[f"change_{c}"] = np.diff(counts, axis=1, prepend=counts[:, :1])
    frame = pd.DataFrame({"_unit": np.repeat(np.arange(n_units), n_dates)})
    frame["date"] = np.tile(np.asarray(dates, dtype=object), n_units)
    first = frame["date"].to_numpy() == dates[0]
    for name, values in cols.items():
        series = pd.Series(values.reshape(-1), dtype="Int64")
        if not name.startswith("count_"):
            series[first] = pd.NA
        frame[name] = series
    return frame


def _attach(
    units: gpd.GeoDataFrame, id_col: str, table: pd.DataFrame, *, keep_all: bool
) -> gpd.GeoDataFrame:
    """Zones or cells x dates: the unit's columns and geometry joined to its timeline rows."""
    table = table.rename(columns={"_unit": "_row"})
    if not keep_all:
        busy = table.groupby("_row")["count_total"].sum()
        table = table[table["_row"].isin(busy.index[busy.to_numpy() > 0])]
    attrs = units.reset_index(drop=True)
    joined = table.join(attrs, on="_row").drop(columns="_row")
    first = [id_col, *[c for c in attrs.columns if c not in (id_col, "geometry")]]
    ordered = joined[[*first, *[c for c in table.columns if c != "_row"], "geometry"]]
    return gpd.GeoDataFrame(ordered.reset_index(drop=True), geometry="geometry", crs=units.crs)


# --------------------------------------------------------------------------------------------
# output


def write_changes(result: ChangeResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` atomically; the format follows the extension (:class:`ChangeFormat`).

    ``.gpkg``: layers ``objects`` (one row per object and pair of dates, with its status),
    ``tracks``, and ``zones`` / ``grid`` (one row per zone or cell and date) when computed.
    ``.csv``: :meth:`ChangeResult.table` (whole area, zones and cells per date). ``.json``:
    :meth:`ChangeResult.to_dict`.

    Raises:
        ExportError: unknown extension, missing folder, or the file cannot be written.
    """
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    try:
        fmt = ChangeFormat(suffix)
    except ValueError as err:
        raise ExportError(
            f"{out}: unknown format {suffix!r} for changes; use one of "
            f"{', '.join('.' + f.value for f in ChangeFormat)}"
        ) from err
    if not out.parent.exists():
        raise ExportError(f"{out}: the folder {out.parent} does not exist; create it first")

    def write(tmp: Path) -> None:
        if fmt is ChangeFormat.CSV:
            result.table().to_csv(tmp, index=False)
        elif fmt is ChangeFormat.JSON:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        else:
            layers = [
                ("objects", result.objects),
                ("tracks", result.tracks),
                ("zones", result.zones),
                ("grid", result.grid),
            ]
            written = [(name, gdf) for name, gdf in layers if gdf is not None]
            for k, (name, gdf) in enumerate(written):
                gdf.to_file(
                    tmp, layer=name, driver=VectorFormat.GPKG.driver, mode="a" if k else "w"
                )

    try:
        atomic_write(out, write, make_parents=False)
    except OSError as err:
        raise ExportError(f"{out}: cannot write the changes ({err})") from err
    logger.info("wrote changes to %s", out)
    return out


def plot_timelines(result: ChangeResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """One PNG chart per zone (and one for the whole area) of counts over time.

    Lines: objects per class and in total at each date; bars: arrivals (up) and departures
    (down) since the previous date. Files: ``all.png`` and ``zone_<zone_id>.png`` in
    ``out_dir`` (created if missing).

    Returns:
        The paths written.

    Raises:
        ExportError: a chart cannot be written.
    """
    from geoseg.viz import class_colour, timeline_chart

    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"{folder}: cannot create the plot folder ({err})") from err
    units: list[tuple[str, str, pd.DataFrame]] = [("all", "whole area", result.timeline)]
    if result.zones is not None:
        for zone_id, rows in result.zones.groupby("zone_id", sort=True):
            units.append((f"zone_{zone_id}", f"zone {zone_id}", pd.DataFrame(rows)))
    written = []
    for stem, caption, rows in units:
        rows = rows.set_index("date").reindex(list(result.dates))
        lines = [
            (c, class_colour(c, result.classes), rows[f"count_{c}"].to_numpy(dtype=float))
            for c in result.classes
        ]
        if len(result.classes) != 1:
            lines.append(("total", (40, 40, 40), rows["count_total"].to_numpy(dtype=float)))
        written.append(
            timeline_chart(
                folder / f"{stem}.png",
                dates=result.dates,
                lines=lines,
                arrived=rows["arrived_total"].to_numpy(dtype=float, na_value=np.nan),
                departed=rows["departed_total"].to_numpy(dtype=float, na_value=np.nan),
                title=f"{caption}: objects per date, arrivals and departures",
            )
        )
    return written


def change_map(
    result: ChangeResult,
    out_html: str | os.PathLike[str],
    *,
    scene: str | os.PathLike[str] | None = None,
    max_size: int = 2048,
) -> Path:
    """Write an offline HTML map with one layer per status (per pair of dates).

    Built with :func:`geoseg.viz.layered_map` (Leaflet inlined, no basemap). With more than two
    dates each pair of dates has its own three layers; only the last pair's are shown when the
    page opens. Popups give the status, class, dates, ids and IoU.

    Args:
        result: what :func:`compare` returned.
        out_html: the HTML file to write (atomically).
        scene: a raster shown under the polygons (e.g. the last date's scene).
        max_size: longest side of the scene image in pixels.

    Raises:
        ExportError: the ``maps`` extra is missing, or the file cannot be written.
    """
    from geoseg.viz import MapLayer, counts_table_html, layered_map

    fields: tuple[tuple[str, str, int | None], ...] = (
        ("status", "status", None),
        ("class", "class", None),
        ("date_from", "from", None),
        ("date_to", "to", None),
        ("id_from", "id then", None),
        ("id_to", "id now", None),
        ("track_id", "track", None),
        ("iou", "IoU", 2),
        ("distance_m", "moved (m)", 2),
    )
    objects = result.objects.copy()
    for col in ("id_from", "id_to"):
        objects[col] = objects[col].astype(object).where(objects[col].notna(), None)
    pairs = list(zip(result.dates[:-1], result.dates[1:], strict=True))
    layers = []
    for k, (d0, d1) in enumerate(pairs):
        pair = objects[(objects["date_from"] == d0) & (objects["date_to"] == d1)]
        for status in ChangeStatus:
            sub = pair[pair["status"] == status.value]
            suffix = f" {d0} → {d1}" if len(pairs) > 1 else ""
            layers.append(
                MapLayer(
                    f"{status.value}{suffix} ({len(sub)})",
                    sub,
                    STATUS_COLOURS[status],
                    fields=fields,
                    show=k == len(pairs) - 1,
                )
            )
    last = objects[objects["date_to"] == result.dates[-1]]
    rows = [
        (s.value, STATUS_COLOURS[s], int((last["status"] == s.value).sum())) for s in ChangeStatus
    ]
    title = f"changes {result.dates[-2]} → {result.dates[-1]}"
    return layered_map(
        layers,
        out_html=out_html,
        scene=scene,
        max_size=max_size,
        title=title,
        table_html=counts_table_html(rows, title, header=("status", "objects")),
    )


def format_changes(result: ChangeResult, *, max_rows: int = 30) -> str:
    """A plain-text summary: the shift and status counts per pair of dates, busiest zones."""
    lines = [f"dates ({result.date_source}): {', '.join(result.dates)}"]
    counts = result.status_counts()
    for s in result.shifts:
        lines.append("")
        lines.append(
            f"{s.date_from} -> {s.date_to}: shift {s.dx_m:+.2f} m E, {s.dy_m:+.2f} m N "
            f"({s.pairs} candidate pairs), {s.matched} matched"
        )
        pair = counts[(counts["date_from"] == s.date_from) & (counts["date_to"] == s.date_to)]
        header = ["class", *(st.value for st in ChangeStatus)]
        rows = [
            [str(r["class"]), *(str(int(r[st.value])) for st in ChangeStatus)]
            for _, r in pair.iterrows()
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    if result.zones is not None:
        z = result.zones[result.zones["date"] == result.dates[-1]]
        z = z.sort_values("count_total", ascending=False).head(max_rows)
        lines.append("")
        lines.append(f"zones at {result.dates[-1]}: count (arrived, departed, change)")
        for _, r in z.iterrows():
            lines.append(
                f"  zone {r['zone_id']}: {r['count_total']} "
                f"(+{r['arrived_total']}, -{r['departed_total']}, {r['change_total']:+d})"
            )
    if result.grid is not None:
        lines.append("")
        lines.append(
            f"grid {result.grid_m:g} m: {result.grid['cell_id'].nunique()} cells with objects"
        )
    return "\n".join(lines)
