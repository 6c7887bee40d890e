"""``geoseg predict``: find and outline the objects of one scene with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoseg.cli._common import (
    fail_on_geoseg_error,
    resolve_cli_settings,
    run_settings_options,
    set_interrupt_note,
)
from geoseg.predict import Device
from geoseg.settings import BACKENDS, NormSource

if TYPE_CHECKING:
    from geoseg.pipeline import SceneResult

__all__ = ["command", "format_summary"]


def format_summary(result: SceneResult) -> str:
    """A short human summary: objects per class, tiles and speed."""
    width = max([len(c) for c in result.counts] + [5])
    lines = [f"{name:<{width}}  {n:>7d}" for name, n in result.counts.items()]
    lines.append(f"{'total':<{width}}  {sum(result.counts.values()):>7d}")
    lines.append(
        f"{result.n_tiles} tiles in {result.seconds:.1f} s "
        f"({result.megapixels_per_second:.2f} Mpx/s)"
        + (f"; wrote {result.output}" if result.output is not None else "")
    )
    return "\n".join(lines)


def _check_png_path(path: Path) -> None:
    """Fail early when the quicklook PNG cannot be written."""
    import os

    if path.suffix.lower() != ".png":
        raise click.BadParameter(
            f"{path}: the quicklook must be a .png file", param_hint="--quicklook"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise click.BadParameter(
            f"{path}: folder {folder} does not exist or is not writable", param_hint="--quicklook"
        )


def _quicklook(scene: str, result: SceneResult, path: Path, bands: tuple[int, ...]) -> Path:
    """Draw the result over the scene (RGB from the first three model bands, or grey)."""
    from geoseg.viz import quicklook

    shown = bands[:3] if len(bands) >= 3 else bands[:1]
    return quicklook(scene, result.gdf, path, bands=shown)


@click.command("predict")
@click.argument("scene", metavar="SCENE")
@click.option(
    "-m",
    "--model",
    required=True,
    metavar="MODEL",
    help="Checkpoint NAME.safetensors (with its NAME.json sidecar).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Vector output; the format follows the extension: .gpkg .geojson .shp .parquet .fgb, "
    "or .json for COCO.",
)
@run_settings_options
@click.option(
    "--quicklook",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PNG",
    help="Also write a quicklook PNG of the results over the scene.",
)
@click.option(
    "--device",
    type=click.Choice([d.value for d in Device]),
    default=Device.AUTO.value,
    show_default=True,
    help="Where the model runs.",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="torch",
    show_default=True,
    help="What runs the model: torch, or onnx (ONNX Runtime, CPU only; exported at load).",
)
@click.option(
    "--prescreen",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    metavar="P",
    help="Skip the detection heads of tiles whose best RPN objectness is below P "
    "(faster on sparse scenes; may lose objects).",
)
@click.option(
    "--norm",
    type=click.Choice([s.value for s in NormSource]),
    default=NormSource.SCENE.value,
    show_default=True,
    help="Normalise with this scene's statistics or the model's training statistics.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Tiles per model call [default: 8 on CUDA, 1 elsewhere: batching only pays on a GPU].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Tile-reading processes (0: a reading thread).",
)
@fail_on_geoseg_error
def command(
    scene: str,
    model: str,
    output: Path,
    config: str | None,
    bands: str | None,
    min_score: tuple[float | tuple[str, float], ...],
    tile_size: int | None,
    overlap: int | None,
    gsd: float | None,
    no_resample: bool,
    quicklook: Path | None,
    device: str,
    backend: str,
    prescreen: float | None,
    norm: str,
    batch_size: int | None,
    workers: int,
) -> None:
    """Find and outline the objects of SCENE with MODEL; write polygons to OUT.

    SCENE is any raster GDAL reads (GeoTIFF, COG, VRT, /vsicurl/ URL). Objects cut by tile
    borders are merged; polygons are in the scene's CRS (GeoJSON: WGS84). A scene whose
    ground resolution differs from the model's by more than 10 % is read at the model's
    (each tile resampled while it is read, no copy on disk); --gsd sets another working
    GSD, --no-resample reads the scene as it is.
    """
    from tqdm import tqdm

    from geoseg.checkpoint import check_compatible, checkpoint_paths, read_meta
    from geoseg.errors import ConfigError
    from geoseg.export import check_scene_output, check_writable
    from geoseg.io import check_no_overwrite
    from geoseg.pipeline import run_scene, scene_grid, score_thresholds
    from geoseg.predict import load_predictor
    from geoseg.raster import open_scene, validate_bands

    # Cheap checks first, so that bad input fails before the model is loaded.
    check_no_overwrite(
        [("SCENE", scene), ("MODEL", checkpoint_paths(model)[0])],
        [("-o", output), ("--quicklook", quicklook)],
    )
    check_writable(output)
    if quicklook is not None:
        _check_png_path(quicklook)
    info = open_scene(scene)
    check_scene_output(output, info)
    meta = read_meta(model)
    settings = resolve_cli_settings(
        meta,
        config=config,
        bands=bands,
        min_score=min_score,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        norm=norm,
        gsd=gsd,
        no_resample=no_resample,
        backend=backend,
        prescreen=prescreen,
    )
    try:  # a threshold for a class the model lacks fails here, not after loading it
        score_thresholds(meta.classes, settings.min_score, settings.class_min_score)
    except ConfigError as err:
        raise ConfigError(f"{model}: {err}; fix --min-score CLASS=S") from err
    sel = validate_bands(info, settings.bands or meta.bands)
    check_compatible(meta, band_count=len(sel), checkpoint=model, scene=scene)
    if settings.norm is NormSource.MODEL and meta.norm_stats is None:
        raise click.BadParameter(
            f"{model}: the checkpoint has no normalisation statistics; use --norm scene",
            param_hint="--norm",
        )
    # the same decision plan_scene makes; fails early on no CRS or tiles too large
    grid = scene_grid(info, settings, model_gsd=meta.gsd, n_bands=len(sel))
    click.echo(grid.describe(), err=True)
    if settings.class_min_score:
        per_class = ", ".join(f"{k} {v:g}" for k, v in sorted(settings.class_min_score.items()))
        click.echo(f"score thresholds: {per_class}; other classes {settings.min_score:g}", err=True)
    set_interrupt_note(
        f"nothing was written ({output} is written whole at the end, or not at all); run the "
        "same command again"
    )
    predictor = load_predictor(model, settings)

    with tqdm(total=None, unit="tile", desc=Path(scene).name, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = run_scene(
            scene, predictor, settings, num_workers=workers, progress=progress, output=output
        )
    click.echo(format_summary(result))
    if quicklook is not None:
        written = _quicklook(scene, result, quicklook, result.bands)
        click.echo(f"wrote {written}", err=True)
