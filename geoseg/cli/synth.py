"""``geoseg synth``: write a synthetic georeferenced scene and its exact labels."""

from __future__ import annotations

import re
from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error, progress_disabled
from geoseg.errors import ConfigError

__all__ = ["command"]

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*$")


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    """``N`` or ``WxH`` -> (width, height) in pixels."""
    m = _SIZE_RE.match(value)
    if m is None:
        raise click.BadParameter(f"{value!r}: give N (an N x N scene) or WIDTHxHEIGHT, e.g. 1024")
    width = int(m.group(1))
    height = int(m.group(2)) if m.group(2) else width
    if width < 1 or height < 1:
        raise click.BadParameter(f"{value!r}: width and height must be at least 1 pixel")
    return width, height


@click.command(name="synth")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="GeoTIFF to write (.tif); labels go beside it as .gpkg.",
)
@click.option(
    "--size", required=True, callback=_parse_size, help="N (N x N pixels) or WIDTHxHEIGHT."
)
@click.option("--seed", required=True, type=click.IntRange(min=0), help="Random seed.")
@click.option("--gsd", default=0.5, show_default=True, type=float, help="Metres per pixel.")
@click.option(
    "--epsg",
    default=32633,
    show_default=True,
    type=int,
    help="Projected CRS in metres (EPSG code).",
)
@click.option(
    "--bands",
    type=click.Choice(["rgb", "rgbn"], case_sensitive=False),
    default="rgb",
    show_default=True,
    help="rgbn adds a near-infrared band.",
)
@click.option(
    "--dtype",
    type=click.Choice(["uint8", "uint16"]),
    default="uint8",
    show_default=True,
    help="uint16 writes 11-bit values.",
)
@click.option(
    "--nodata-collar",
    is_flag=True,
    default=False,
    help="Ragged valid footprint surrounded by nodata (0).",
)
@click.option(
    "--density",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.0, 4.0),
    help="Object-count multiplier.",
)
@click.option(
    "--layout",
    type=click.Choice(["mixed", "marina", "town"], case_sensitive=False),
    default="mixed",
    show_default=True,
    help="What the scene mostly shows.",
)
@fail_on_geoseg_error
def command(
    output: Path,
    size: tuple[int, int],
    seed: int,
    gsd: float,
    epsg: int,
    bands: str,
    dtype: str,
    nodata_collar: bool,
    density: float,
    layout: str,
) -> None:
    """Write a synthetic scene (GeoTIFF) and its labels (GeoPackage, same stem).

    Prints one line with the number of objects per class.
    """
    from tqdm import tqdm

    from geoseg.synth import generate_scene

    if output.suffix.lower() not in (".tif", ".tiff"):
        raise click.BadParameter(f"{output}: the output should end in .tif", param_hint="-o")
    if not output.parent.exists():
        raise click.BadParameter(
            f"{output.parent}: folder does not exist; create it first", param_hint="-o"
        )
    with tqdm(
        total=None, unit="block", desc="synth", leave=False, disable=progress_disabled(None)
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:  # arguments are validated before anything is written
            scene = generate_scene(
                output,
                size=size,
                seed=seed,
                gsd=gsd,
                epsg=epsg,
                bands=bands,
                dtype=dtype,
                nodata_collar=nodata_collar,
                density=density,
                layout=layout,
                progress=progress,
            )
        except ConfigError as err:
            raise click.UsageError(str(err)) from err
    counts = ", ".join(f"{n} {cls}" for cls, n in scene.counts.items())
    echo(
        f"{scene.raster_path} ({size[0]} x {size[1]} px, {bands} {dtype}, EPSG:{epsg}, "
        f"{gsd:g} m) + {scene.labels_path.name}: {counts}"
    )
