"""``geoseg batch``: run a model over many scenes on dask.distributed, resumably."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoseg.batch.manifest import FORMAT_ALIASES, OUTPUT_FORMATS
from geoseg.cli._common import (
    describe_gsd,
    device_option,
    echo,
    fail_on_geoseg_error,
    is_quiet,
    output_options,
    progress_disabled,
    resolve_cli_settings,
    run_settings_options,
    set_interrupt_note,
)
from geoseg.settings import BACKENDS, NormSource
from geoseg.storage import Target, as_target

if TYPE_CHECKING:
    import geopandas as gpd

    from geoseg.batch import BatchProgress, BatchReport

__all__ = ["command", "format_report", "write_quicklook"]


def write_quicklook(
    scene: str, gdf: gpd.GeoDataFrame, png: Path, bands: Sequence[int] | None = None
) -> Path:
    """The quicklook ``geoseg batch --quicklook`` draws for each scene, on its worker.

    The scene (RGB from ``bands``, or grey from one band) with its objects outlined; see
    :func:`geoseg.viz.quicklook`. Module-level, so that it pickles to the workers.
    """
    from geoseg.viz import quicklook

    return quicklook(scene, gdf, png, bands=bands)


def format_report(report: BatchReport) -> str:
    """A short human summary: scenes by outcome, objects per class, where things are."""
    ran = [r for r in report.records if r.scene not in set(report.skipped)]
    counts: dict[str, int] = {}
    for r in report.records:
        for name, n in r.counts.items():
            counts[name] = counts.get(name, 0) + n
    width = max([len(c) for c in counts] + [5])
    lines = [f"{name:<{width}}  {n:>8d}" for name, n in counts.items()]
    lines.append(f"{'total':<{width}}  {sum(counts.values()):>8d}")
    lines.append(
        f"{len(ran) - report.n_failed} scene(s) done, {report.n_failed} failed, "
        f"{len(report.skipped)} skipped (already done) in {report.seconds:.1f} s"
    )
    for r in report.failed:
        lines.append(f"FAILED {r.scene}: {r.error}")
    lines.append(f"settings: {report.settings.describe()}")
    lines.append(f"manifest: {report.manifest}")
    lines.append(
        f"summary:  {report.summary_csv}, {str(report.summary_parquet).rsplit('/', 1)[-1]}"
    )
    return "\n".join(lines)


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUTS...")
@click.option(
    "-m",
    "--model",
    required=True,
    metavar="MODEL",
    help="Checkpoint NAME.safetensors (with its NAME.json sidecar); readable by all workers.",
)
@click.option(
    "-o",
    "--out-dir",
    "out_dir",
    required=True,
    metavar="OUTDIR",
    callback=lambda ctx, param, value: as_target(value),
    help="Output folder: one vector file per scene, manifest.json, summary.csv/.parquet; or "
    "an object-store URL such as s3://bucket/run/ (each file uploaded once, complete).",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    help="Use this existing dask scheduler instead of starting a local cluster.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes of the local cluster [default: one per GPU, else one per core].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*OUTPUT_FORMATS, *FORMAT_ALIASES]),
    default="gpkg",
    show_default=True,
    help="Vector format of the per-scene outputs. No COCO JSON here (a batch folder is read "
    "back as georeferenced vectors); geoseg predict writes COCO for one scene.",
)
@click.option("--force", is_flag=True, help="Redo every scene, even those already done.")
@click.option("--quicklook", is_flag=True, help="Also write OUTDIR/quicklooks/<scene>.png.")
@run_settings_options
@output_options
@click.option(
    "--norm",
    type=click.Choice([s.value for s in NormSource]),
    default=NormSource.SCENE.value,
    show_default=True,
    help="Normalise with each scene's statistics or the model's training statistics.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Tiles per forward pass on each worker [default: 8 on CUDA, 1 elsewhere].",
)
@click.option(
    "--asset",
    metavar="KEY",
    help="STAC asset to read [default: the first image/tiff asset of each item].",
)
@click.option(
    "--split-tiles",
    type=click.IntRange(min=1),
    metavar="N",
    help="Spread each scene of at least N tiles over all workers, then stitch.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Extra attempts for a scene that failed for a non-input reason.",
)
@device_option(
    "Where the model runs on each worker (auto: its pinned GPU, else MPS, else the CPU)."
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="auto",
    show_default=True,
    help="What runs the model on each worker: torch, onnx (ONNX Runtime, CPU only), or auto "
    "(onnx on a CPU worker when onnxruntime is installed, else torch).",
)
@fail_on_geoseg_error
def command(
    inputs: tuple[str, ...],
    model: str,
    out_dir: Target,
    scheduler: str | None,
    workers: int | None,
    fmt: str,
    force: bool,
    quicklook: bool,
    config: str | None,
    bands: str | None,
    min_score: tuple[float | tuple[str, float], ...],
    tile_size: int | None,
    overlap: int | None,
    gsd: float | None,
    no_resample: bool,
    regularize: str | None,
    regularize_min_iou: float | None,
    classes: str | None,
    class_agnostic: bool,
    aoi: str | None,
    bbox: str | None,
    bbox_crs: str | None,
    geometry: str,
    norm: str,
    batch_size: int | None,
    asset: str | None,
    split_tiles: int | None,
    retries: int,
    device: str,
    backend: str,
) -> None:
    """Find and outline the objects of many scenes with MODEL, one dask task per scene.

    INPUTS are scene paths, quoted globs ("scenes/**/*.tif"), text files of paths (.txt, one
    per line, # comments) or STAC ItemCollection JSONs (.json). Rerunning the same command
    skips the scenes already done with the same model and config; --force redoes them.
    Settings follow the same rule as geoseg predict: options > --config preset > the
    checkpoint's tile size and score thresholds > defaults; scenes are read at the model's
    ground resolution unless --gsd or --no-resample says otherwise. --aoi/--bbox predict only
    an area of each scene (an AOI with a "scene" column: each feature for the scene of that
    name).
    Exits with status 1 when any scene failed (see OUTDIR/manifest.json).
    """
    from tqdm import tqdm

    from geoseg.batch import resolve_inputs, run_batch
    from geoseg.checkpoint import read_meta

    n_scenes = len(resolve_inputs(inputs, asset=asset))  # bad INPUTS fail before any work
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
        backend=backend,
        norm=norm,
        gsd=gsd,
        no_resample=no_resample,
        regularize=regularize,
        regularize_min_iou=regularize_min_iou,
        checkpoint=model,
        classes=classes,
        class_agnostic=class_agnostic,
        aoi=aoi,
        bbox=bbox,
        bbox_crs=bbox_crs,
        geometry=geometry,
    )
    echo(describe_gsd(settings, meta.gsd), err=True)
    if settings.extent is not None:
        echo(settings.extent.describe(), err=True)
    shown = settings.bands or meta.bands
    writer = functools.partial(write_quicklook, bands=shown[:3] if len(shown) >= 3 else shown[:1])
    bar = tqdm(
        total=n_scenes, unit="scene", desc="batch", dynamic_ncols=True, disable=progress_disabled()
    )

    started: list[bool] = []

    def progress(p: BatchProgress) -> None:
        if not started:  # the first call: scenes to run, scenes skipped
            started.append(True)
            bar.reset(total=p.total)
            if p.skipped and not is_quiet():
                tqdm.write(
                    f"skipping {p.skipped} scene(s) already done with the same model and "
                    "config (--force redoes them)"
                )
            return
        bar.n = p.done
        top = sorted(p.counts.items(), key=lambda kv: -kv[1])[:4]
        running = [f"{name} {d}/{t} tiles" for name, (d, t) in list(p.scene_tiles.items())[:3]]
        bar.set_postfix_str(
            f"ok={p.ok} failed={p.failed} tiles={p.tiles} objects={p.objects} "
            + " ".join(f"{k}={v}" for k, v in top)
            + (f" | {', '.join(running)}" if running else ""),
            refresh=True,
        )

    def on_dashboard(link: str) -> None:
        if not is_quiet():
            tqdm.write(f"dask dashboard: {link}")

    set_interrupt_note(
        f"the scenes finished so far are kept in {out_dir} and recorded in its manifest.json; "
        "rerun the same command to process only the others"
    )
    try:
        report = run_batch(
            inputs,
            model=model,
            out_dir=out_dir,
            scheduler=scheduler,
            n_workers=workers,
            fmt=fmt,
            force=force,
            quicklook=writer if quicklook else None,
            settings=settings,
            asset=asset,
            split_tiles=split_tiles,
            retries=retries,
            progress=progress,
            on_dashboard=on_dashboard,
        )
    finally:
        bar.close()
    echo(format_report(report))
    if report.n_failed:
        raise click.ClickException(
            f"{report.n_failed} of {len(report.records)} scene(s) failed; their errors are in "
            f"{report.manifest}. Fix them and rerun the same command to process only those."
        )
