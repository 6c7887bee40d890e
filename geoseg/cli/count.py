"""``geoseg count``: objects per scene and class, per AOI zone and per grid cell."""

from __future__ import annotations

import re
from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error, parse_classes

__all__ = ["command", "parse_distance"]

_DISTANCE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(m|km)?\s*$", re.IGNORECASE)


def parse_distance(value: str | None) -> float | None:
    """Parse ``250m``, ``250``, ``1.5km`` into metres (``None`` stays ``None``)."""
    if value is None or value == "":
        return None
    match = _DISTANCE.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r}: give a positive size in metres, e.g. 250m or 1km")
    metres = float(match.group(1))
    return metres * 1000.0 if (match.group(2) or "m").lower() == "km" else metres


@click.command("count")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--aoi",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Vector file of zones (polygons, any CRS): count per zone.",
)
@click.option(
    "--aoi-field",
    metavar="COLUMN",
    help="AOI column naming the zones [default: a 'name' column, else one like *name*, id, "
    "zone, label, *_id with distinct values, else the row number].",
)
@click.option("--grid", "grid", metavar="SIZE", help="Count per square grid cell, e.g. 250m, 1km.")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), help="Keep objects with score >= S.")
@click.option("--classes", metavar="LIST", help="Only these classes, e.g. ship,vehicle.")
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write counts: .csv (table), .gpkg (zones/grid cells), .json (all). Repeatable.",
)
@fail_on_geoseg_error
def command(
    results: tuple[Path, ...],
    aoi: Path | None,
    aoi_field: str | None,
    grid: str | None,
    min_score: float | None,
    classes: str | None,
    outputs: tuple[Path, ...],
) -> None:
    """Count objects in RESULTS (result files or batch output folders).

    Counts per scene and class; with --aoi per zone and with --grid per cell, with densities
    per km2 (equal-area). An object counts in the zone or cell holding its centroid. Zones
    are named by --aoi-field (or a name-like column of the AOI). --classes must name classes
    found in RESULTS or of geoseg's presets (ship, vehicle, building).
    """
    from geoseg.cli._common import inputs_of
    from geoseg.count import count, format_counts, write_counts
    from geoseg.io import check_no_overwrite

    check_no_overwrite(
        [*inputs_of("RESULTS", results), ("--aoi", aoi)], [("-o", out) for out in outputs]
    )
    grid_m = parse_distance(grid)
    class_list = parse_classes(classes)
    result = count(
        list(results),
        aoi=aoi,
        aoi_field=aoi_field,
        grid_m=grid_m,
        min_score=min_score,
        classes=class_list,
    )
    echo(format_counts(result), result=not outputs)  # -q: the result, unless written to -o
    for out in outputs:
        written = write_counts(result, out)
        echo(f"wrote {written}", err=True)
