"""``geoseg map``: a self-contained, offline HTML map of results over their scene."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error, parse_bands, parse_classes

__all__ = ["command"]


@click.command("map")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--scene",
    "scenes",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="GeoTIFF shown under the polygons (downsampled from its overviews); repeatable, "
    "each scene is drawn as its own layer.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file to write (one file, works offline).",
)
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), help="Keep objects with score >= S.")
@click.option("--classes", metavar="LIST", help="Only these classes, e.g. ship,vehicle.")
@click.option("--bands", metavar="LIST", help="Scene bands shown as RGB (or one grey band).")
@click.option(
    "--max-size",
    type=click.IntRange(64, 8192),
    default=2048,
    show_default=True,
    help="Longest side of the scene image in pixels.",
)
@fail_on_geoseg_error
def command(
    results: tuple[Path, ...],
    scenes: tuple[Path, ...],
    output: Path,
    min_score: float | None,
    classes: str | None,
    bands: str | None,
    max_size: int,
) -> None:
    """Write an interactive map of RESULTS (result files or batch folders) to one HTML file.

    One layer per class, popups with class, score and size, a counts table, and each --scene
    as background. Leaflet is inlined: the file needs no internet. --classes must name
    classes found in RESULTS or of geoseg's presets (ship, vehicle, building).
    """
    from geoseg.cli._common import inputs_of
    from geoseg.io import check_no_overwrite
    from geoseg.viz import web_map

    check_no_overwrite(
        [*inputs_of("RESULTS", results), *(("--scene", s) for s in scenes)], [("-o", output)]
    )
    written = web_map(
        list(results),
        scene=list(scenes),
        out_html=output,
        min_score=min_score,
        classes=parse_classes(classes),
        bands=parse_bands(bands),
        max_size=max_size,
    )
    echo(f"wrote {written}", err=True)
