"""Comparing dates: :func:`compare`, the object and track tables, the timelines."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
from pyproj import CRS

from geoseg.compare.dates import _input_date, _parse_option_dates
from geoseg.compare.matching import match_objects
from geoseg.compare.result import ChangeResult, ChangeStatus, PairShift
from geoseg.count import (
    ResultsLike,
    check_result_classes,
    check_zone_field,
    common_metric_crs,
    filter_results,
    grid_membership,
    read_aoi,
    read_results,
    zone_membership,
)
from geoseg.errors import ConfigError, LabelError

__all__ = ["compare"]

logger = logging.getLogger(__name__)


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
    aoi_field: str | None = None,
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
            results' date column, their scene names or the file names (see
            :mod:`geoseg.compare`), else the order given.
        aoi: zones (any polygon vector file or GeoDataFrame with a CRS): a timeline per zone.
        aoi_field: the AOI column naming the zones (default: as ``geoseg count`` chooses, see
            :func:`geoseg.count.zone_name_field`).
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
            ``min_iou`` outside (0, 1], ``max_shift_m`` negative, ``grid_m`` not positive, a
            class no input holds and no preset knows, an ``aoi_field`` the AOI lacks.
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
    if class_filter is not None:
        check_result_classes(class_filter, [g for frames in raw for g in frames])

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
        name_field = check_zone_field(aoi_gdf, aoi_field, aoi)
        zone_gdf, pi, zi = zone_membership(aoi_gdf, centroids, name_field=name_field)
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
    clash = {c: f"aoi_{c}" for c in attrs.columns if c in table.columns and c != "geometry"}
    attrs = attrs.rename(columns=clash)  # an AOI column "date" or "arrived_ship" is kept aside
    joined = table.join(attrs, on="_row").drop(columns="_row")
    first = [id_col, *[c for c in attrs.columns if c not in (id_col, "geometry")]]
    ordered = joined[[*first, *[c for c in table.columns if c != "_row"], "geometry"]]
    return gpd.GeoDataFrame(ordered.reset_index(drop=True), geometry="geometry", crs=units.crs)
