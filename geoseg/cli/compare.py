"""``geoseg compare``: what changed between results of the same area at several dates."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error, parse_classes
from geoseg.cli.count import parse_distance

__all__ = ["command"]


@click.command("compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "outputs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write changes: .gpkg (layers objects, tracks, zones, grid), .csv (counts per date "
    "of the area, zones and cells), .json (all but geometries). Repeatable.",
)
@click.option(
    "--dates",
    metavar="LIST",
    help="One date per input, e.g. 2023-04-01,2023-05-01 (default: from the results' date "
    "column, scene names or file names, else the order given).",
)
@click.option(
    "--aoi",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Vector file of zones (polygons, any CRS): a timeline per zone.",
)
@click.option(
    "--aoi-field",
    metavar="COLUMN",
    help="AOI column naming the zones [default: as geoseg count chooses].",
)
@click.option("--grid", "grid", metavar="SIZE", help="A timeline per grid cell, e.g. 250m, 1km.")
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), help="Keep objects with score >= S.")
@click.option("--classes", metavar="LIST", help="Only these classes, e.g. ship,vehicle.")
@click.option(
    "--min-iou",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.3,
    show_default=True,
    help="IoU (after removing the georeferencing shift) that matches two objects.",
)
@click.option(
    "--max-shift",
    type=click.FloatRange(0.0),
    default=5.0,
    show_default=True,
    metavar="METRES",
    help="Largest georeferencing shift between two dates searched (0: none).",
)
@click.option(
    "--id-column", metavar="NAME", help="Column holding object ids (default: row number)."
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for one PNG chart per zone (and all.png for the whole area) over time.",
)
@click.option(
    "--map",
    "map_html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Offline HTML map with one layer per status (needs the 'maps' extra).",
)
@click.option(
    "--scene",
    "scenes",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GeoTIFF shown under the map's polygons (e.g. each date's scene); repeatable, each "
    "scene is its own layer.",
)
@fail_on_geoseg_error
def command(
    results: tuple[Path, ...],
    outputs: tuple[Path, ...],
    dates: str | None,
    aoi: Path | None,
    aoi_field: str | None,
    grid: str | None,
    min_score: float | None,
    classes: str | None,
    min_iou: float,
    max_shift: float,
    id_column: str | None,
    plots: Path | None,
    map_html: Path | None,
    scenes: tuple[Path, ...],
) -> None:
    """Match the objects of RESULTS (one result file or batch folder per date) across dates.

    Each object is persisted, arrived or departed between consecutive dates; matching is
    per class, one-to-one by overlap after removing the georeferencing shift between the
    dates. With --aoi / --grid: counts, arrivals and departures per zone / cell and date.
    """
    from geoseg._extras import extra_error, missing_modules
    from geoseg.cli._common import inputs_of
    from geoseg.compare import change_map, compare, format_changes, plot_timelines, write_changes
    from geoseg.io import check_no_overwrite

    if len(results) < 2:
        raise click.BadParameter("give results of at least two dates", param_hint="RESULTS")
    date_list = None
    if dates is not None:
        date_list = [d.strip() for d in dates.split(",") if d.strip()]
    if map_html is not None:
        missing = missing_modules("maps")
        if missing:
            raise click.ClickException(str(extra_error("maps", "geoseg compare --map", missing)))
    ins = [*inputs_of("RESULTS", results), ("--aoi", aoi), *(("--scene", s) for s in scenes)]
    outs = [*(("-o", out) for out in outputs), ("--map", map_html)]
    check_no_overwrite(ins, outs)
    result = compare(
        list(results),
        dates=date_list,
        aoi=aoi,
        aoi_field=aoi_field,
        grid_m=parse_distance(grid),
        min_score=min_score,
        classes=parse_classes(classes),
        min_iou=min_iou,
        max_shift_m=max_shift,
        id_column=id_column,
    )
    if plots is not None:
        names = (
            ["all", *(f"zone_{z}" for z in sorted(set(result.zones["zone_id"])))]
            if (result.zones is not None)
            else ["all"]
        )
        check_no_overwrite(ins, [("--plots", plots / f"{n}.png") for n in names])
    echo(format_changes(result))  # -o is required: the result is in the files under -q
    for out in outputs:
        echo(f"wrote {write_changes(result, out)}", err=True)
    if plots is not None:
        written = plot_timelines(result, plots)
        echo(f"wrote {len(written)} charts to {plots}", err=True)
    if map_html is not None:
        echo(f"wrote {change_map(result, map_html, scene=list(scenes))}", err=True)
