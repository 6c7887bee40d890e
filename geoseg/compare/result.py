"""The values :func:`geoseg.compare.compare` returns and their tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from geoseg.viz import ARRIVED_COLOUR, DEPARTED_COLOUR, PERSISTED_COLOUR

__all__ = ["STATUS_COLOURS", "ChangeFormat", "ChangeResult", "ChangeStatus", "PairShift"]


class ChangeStatus(StrEnum):
    """What happened to an object between two consecutive dates."""

    PERSISTED = "persisted"  # on both dates (matched)
    ARRIVED = "arrived"  # on the later date only
    DEPARTED = "departed"  # on the earlier date only


#: Map colours (RGB) of the statuses.
STATUS_COLOURS: dict[ChangeStatus, tuple[int, int, int]] = {
    ChangeStatus.PERSISTED: PERSISTED_COLOUR,
    ChangeStatus.ARRIVED: ARRIVED_COLOUR,
    ChangeStatus.DEPARTED: DEPARTED_COLOUR,
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
