"""Dates of the inputs: given, from a date column, from scene names or file names."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from geoseg.errors import ConfigError

__all__ = ["DATE_COLUMNS", "date_in_name"]

#: Columns read as an input's acquisition date, in this order.
DATE_COLUMNS = ("acquired", "acquisition_date", "datetime", "date")

_DATE_IN_NAME = re.compile(
    r"(?<!\d)((?:19|20|21)\d\d)([-_]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])(?!\d)"
)


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
