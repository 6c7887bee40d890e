"""``geoseg predict``: find and outline the objects of one scene with a trained model."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from geoseg.cli._common import (
    device_option,
    echo,
    fail_on_geoseg_error,
    output_options,
    progress_disabled,
    resolve_cli_settings,
    run_settings_options,
    set_interrupt_note,
)
from geoseg.settings import BACKENDS, NormSource
from geoseg.storage import Target, as_target

if TYPE_CHECKING:
    from geoseg.pipeline import SceneResult
    from geoseg.predict import Predictor
    from geoseg.settings import RunSettings

__all__ = ["command", "format_summary", "load_for_scene", "predict_options"]


def format_summary(result: SceneResult) -> str:
    """A short human summary: objects per class, tiles and speed."""
    width = max([len(c) for c in result.counts] + [5])
    lines = [f"{name:<{width}}  {n:>7d}" for name, n in result.counts.items()]
    lines.append(f"{'total':<{width}}  {sum(result.counts.values()):>7d}")
    lines.append(
        f"{result.n_tiles} tiles"
        + (f" ({result.resumed_tiles} from partial results)" if result.resumed_tiles else "")
        + f" in {result.seconds:.1f} s "
        f"({result.megapixels_per_second:.2f} Mpx/s)"
        + (f"; wrote {result.output}" if result.output is not None else "")
    )
    return "\n".join(lines)


def _check_png_path(path: Target) -> None:
    """Fail early when the quicklook PNG cannot be written."""
    import os

    from geoseg.storage import check_folder_writable

    if not str(path).lower().endswith(".png"):
        raise click.BadParameter(
            f"{path}: the quicklook must be a .png file", param_hint="--quicklook"
        )
    if isinstance(path, str):  # a URL: the bucket must exist
        check_folder_writable(path.rsplit("/", 1)[0])
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise click.BadParameter(
            f"{path}: folder {folder} does not exist or is not writable", param_hint="--quicklook"
        )


def _quicklook(scene: str, result: SceneResult, path: Target, bands: tuple[int, ...]) -> Target:
    """Draw the result over the scene (RGB from the first three model bands, or grey)."""
    from geoseg.storage import write_output
    from geoseg.viz import quicklook

    shown = bands[:3] if len(bands) >= 3 else bands[:1]
    if isinstance(path, Path):
        return quicklook(scene, result.gdf, path, bands=shown)
    return write_output(path, lambda tmp: quicklook(scene, result.gdf, tmp, bands=shown))


F = TypeVar("F", bound=Callable[..., Any])


def predict_options(func: F) -> F:
    """How a model runs over one scene: shared by ``geoseg predict`` and ``geoseg label``.

    :func:`~geoseg.cli._common.run_settings_options` plus ``--device``, ``--backend``,
    ``--prescreen``, ``--norm``, ``--batch-size`` and ``--workers``.
    """
    options = [
        device_option("Where the model runs (auto: CUDA, else MPS, else the CPU)."),
        click.option(
            "--backend",
            type=click.Choice(list(BACKENDS)),
            default="auto",
            show_default=True,
            help="What runs the model: torch, onnx (ONNX Runtime, CPU only; exported at the "
            "first load, then cached in $GEOSEG_CACHE_DIR or ~/.cache/geoseg; faster on CPU, "
            "see README Speed), or auto (onnx on the CPU when onnxruntime is installed, "
            "else torch).",
        ),
        click.option(
            "--prescreen",
            type=click.FloatRange(0.0, 1.0, max_open=True),
            metavar="P",
            help="Skip the detection heads of tiles whose best RPN objectness is below P "
            "(faster on sparse scenes; may lose objects).",
        ),
        click.option(
            "--norm",
            type=click.Choice([s.value for s in NormSource]),
            default=NormSource.SCENE.value,
            show_default=True,
            help="Normalise with this scene's statistics or the model's training statistics.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            help="Tiles per model call [default: 8 on CUDA, 1 elsewhere: batching only pays on "
            "a GPU].",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Tile-reading processes (0: a reading thread).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return run_settings_options(func)


def load_for_scene(
    scene: str,
    model: str,
    *,
    output: Target,
    other_outputs: Sequence[tuple[str, Target | None]] = (),
    options: Mapping[str, Any],
    adjust: Callable[[RunSettings, tuple[str, ...]], RunSettings] | None = None,
    check_outputs: Callable[[], None] | None = None,
    interrupt_note: str | None = None,
) -> tuple[RunSettings, Predictor]:
    """Check a predict-like command's inputs cheaply, then resolve its settings and load the model.

    Everything that can fail on bad input fails before the model is loaded: an output over an
    input, an unwritable output, a scene that is not a raster, a threshold, ``--classes`` or
    ``--regularize`` class the model lacks, an area (``--aoi``/``--bbox``) off the scene, a
    band count the model does not take, tiles too large. Shared by ``geoseg predict`` and
    ``geoseg label``.

    Args:
        scene: the raster.
        model: the checkpoint.
        output: the vector file the command writes (role ``-o``; a path or a URL).
        other_outputs: more ``(role, target)`` the command writes (``None`` ignored).
        options: the :func:`~geoseg.cli._common.resolve_cli_settings` keyword arguments.
        adjust: ``adjust(settings, classes)`` changes the resolved settings before the model
            is loaded with them (``geoseg label --candidates`` lowers the score thresholds).
        check_outputs: more checks of the command's outputs, run right after the output checks
            (``predict``'s quicklook and id-raster paths).
        interrupt_note: what Ctrl-C says was kept (default: nothing was written).

    Returns:
        ``(settings, predictor)``.
    """
    from geoseg.checkpoint import check_compatible, checkpoint_paths, read_meta
    from geoseg.errors import ConfigError
    from geoseg.export import check_scene_output, check_writable
    from geoseg.extent import check_overlap
    from geoseg.io import check_no_overwrite
    from geoseg.pipeline import check_output_geometry, scene_grid
    from geoseg.predict import load_predictor
    from geoseg.raster import open_scene, validate_bands

    # Cheap checks first, so that bad input fails before the model is loaded.
    check_no_overwrite(
        [("SCENE", scene), ("MODEL", checkpoint_paths(model)[0]), ("--aoi", options.get("aoi"))],
        [("-o", output), *other_outputs],
    )
    check_writable(output)
    if check_outputs is not None:
        check_outputs()
    info = open_scene(scene)
    check_scene_output(output, info)
    meta = read_meta(model)
    settings = resolve_cli_settings(meta, **options, checkpoint=model)
    check_output_geometry(output, settings)
    if settings.extent is not None:
        check_overlap(settings.extent, info)
        echo(settings.extent.describe(), err=True)
    if settings.regularize:
        from geoseg.regularize import regularize_classes

        try:
            regularize_classes(settings.regularize, meta.classes)
        except ConfigError as err:
            raise ConfigError(f"{model}: {err}") from err
    if adjust is not None:
        settings = adjust(settings, tuple(meta.classes))
    sel = validate_bands(info, settings.bands or meta.bands)
    check_compatible(meta, band_count=len(sel), checkpoint=model, scene=scene)
    if settings.norm is NormSource.MODEL and meta.norm_stats is None:
        raise click.BadParameter(
            f"{model}: the checkpoint has no normalisation statistics; use --norm scene",
            param_hint="--norm",
        )
    # the same decision plan_scene makes; fails early on no CRS or tiles too large
    grid = scene_grid(info, settings, model_gsd=meta.gsd, n_bands=len(sel))
    echo(grid.describe(), err=True)
    if settings.class_min_score:
        per_class = ", ".join(f"{k} {v:g}" for k, v in sorted(settings.class_min_score.items()))
        echo(f"score thresholds: {per_class}; other classes {settings.min_score:g}", err=True)
    set_interrupt_note(
        interrupt_note
        or f"nothing was written ({output} is written whole at the end, or not at all); run the "
        "same command again"
    )
    return settings, load_predictor(model, settings)


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
    metavar="OUT",
    callback=lambda ctx, param, value: as_target(value),
    help="Vector output; the format follows the extension: .gpkg .geojson .shp .parquet .fgb, "
    "or .json for COCO. A URL such as s3://bucket/run/out.gpkg is uploaded once, complete.",
)
@output_options
@click.option(
    "--mask-raster",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="TIF",
    help="Also write the objects' instance ids (uint32, 0 = background, the output's id "
    "column) as a Cloud-Optimized GeoTIFF on the scene's grid.",
)
@click.option(
    "--quicklook",
    metavar="PNG",
    callback=lambda ctx, param, value: None if value is None else as_target(value),
    help="Also write a quicklook PNG of the results over the scene (a path or a URL).",
)
@click.option(
    "--no-resume",
    is_flag=True,
    help="Start over: ignore and do not keep OUT.partial, the per-tile results an interrupted "
    "run leaves for the next run with the same scene, model and settings.",
)
@predict_options
@fail_on_geoseg_error
def command(
    scene: str,
    model: str,
    output: Target,
    mask_raster: Path | None,
    quicklook: Target | None,
    no_resume: bool,
    workers: int,
    **options: Any,
) -> None:
    """Find and outline the objects of SCENE with MODEL; write polygons to OUT.

    SCENE is any raster GDAL reads (GeoTIFF, COG, VRT, /vsicurl/ URL). Objects cut by tile
    borders are merged; polygons are in the scene's CRS (GeoJSON: WGS84). A scene whose
    ground resolution differs from the model's by more than 10 % is read at the model's
    (each tile resampled while it is read, no copy on disk); --gsd sets another working
    GSD, --no-resample reads the scene as it is. --aoi/--bbox predict only an area;
    --classes keeps some classes; each object is one Polygon (--geometry box/point for boxes
    or centroids); --regularize buildings gives building outlines right angles.

    Each batch of predicted tiles is kept in OUT.partial until OUT is written: after an
    interrupt, the same command predicts only the missing tiles (--no-resume starts over).
    """
    import hashlib

    from tqdm import tqdm

    from geoseg.checkpoint import checkpoint_paths
    from geoseg.export import check_id_raster_path
    from geoseg.partial import partial_path
    from geoseg.pipeline import run_scene

    def check_outputs() -> None:
        if mask_raster is not None:
            check_id_raster_path(mask_raster)
        if quicklook is not None:
            _check_png_path(quicklook)

    resume = not no_resume
    sidecar_file = partial_path(output)
    note = None
    if resume:
        note = (
            f"{output} was not written; the tiles predicted so far are kept in {sidecar_file}: "
            "run the same command again to predict only the others (--no-resume starts over)"
        )
    settings, predictor = load_for_scene(
        scene,
        model,
        output=output,
        other_outputs=[("--quicklook", quicklook), ("--mask-raster", mask_raster)],
        check_outputs=check_outputs,
        interrupt_note=note,
        options=options,
    )
    if resume and sidecar_file.exists():
        echo(
            f"found partial results in {sidecar_file}: tiles predicted with the same scene, "
            "model and settings are not predicted again (--no-resume starts over)",
            err=True,
        )
    model_id = hashlib.sha256(checkpoint_paths(model)[1].read_bytes()).hexdigest()

    with tqdm(
        total=None, unit="tile", desc=Path(scene).name, leave=False, disable=progress_disabled()
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = run_scene(
            scene,
            predictor,
            settings,
            num_workers=workers,
            progress=progress,
            output=output,
            mask_raster=mask_raster,
            resume=resume,
            model_id=model_id,
        )
    echo(format_summary(result))
    if quicklook is not None:
        written = _quicklook(scene, result, quicklook, result.bands)
        echo(f"wrote {written}", err=True)
    if result.mask_raster is not None:
        echo(f"wrote {result.mask_raster}", err=True)
