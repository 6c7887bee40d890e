"""``geoseg calibrate``: choose a checkpoint's per-class score thresholds on a labelled scene."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._common import (
    device_option,
    echo,
    fail_on_geoseg_error,
    parse_bands,
    progress_disabled,
)

__all__ = ["command"]


@click.command("calibrate")
@click.argument("model", metavar="MODEL")
@click.argument("scene", metavar="SCENE")
@click.argument("labels", metavar="LABELS")
@click.option(
    "--out-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the before/after scores and thresholds as JSON.",
)
@click.option(
    "--dry-run", is_flag=True, help="Measure and print, but leave the checkpoint unchanged."
)
@click.option("--config", "preset", metavar="C", help="Preset name or YAML (tiling, stitching).")
@click.option("--bands", metavar="B", help="1-based bands in model order, e.g. 3,2,1.")
@click.option("--tile-size", type=click.IntRange(min=16), help="Tile side in pixels.")
@click.option("--overlap", type=click.IntRange(min=0), help="Overlap between tiles in pixels.")
@click.option(
    "--iou",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="IoU at which a prediction matches a label.",
)
@click.option(
    "--floor",
    type=click.FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="Lowest threshold chosen.",
)
@click.option("--class-column", default="class", show_default=True, help="Labels' class column.")
@device_option("Where the model runs (auto: CUDA, else MPS, else the CPU).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@fail_on_geoseg_error
def command(
    model: str,
    scene: str,
    labels: str,
    out_json: Path | None,
    dry_run: bool,
    preset: str | None,
    bands: str | None,
    tile_size: int | None,
    overlap: int | None,
    iou: float,
    floor: float,
    class_column: str,
    device: str,
    no_progress: bool,
) -> None:
    """Calibrate MODEL's per-class score thresholds on SCENE with its LABELS.

    SCENE is predicted once with the settings `geoseg predict -m MODEL` would use, keeping
    detections down to a low score; each class then gets the threshold with the best F1 at
    --iou against LABELS (ties: the higher threshold; never below --floor). The thresholds
    are written into MODEL's JSON sidecar (`score_thresholds`, weights untouched), where
    `geoseg predict` and `geoseg batch` read them. A class without labels or without a single
    match keeps its threshold. Prints F1 per class before and after.
    """
    from tqdm import tqdm

    from geoseg.calibrate import calibrate_checkpoint
    from geoseg.checkpoint import checkpoint_paths
    from geoseg.io import atomic_write_json, check_no_overwrite

    check_no_overwrite(
        [("MODEL", checkpoint_paths(model)[0]), ("SCENE", scene), ("LABELS", labels)],
        [("--out-json", out_json)],
    )

    bar = tqdm(
        total=None,
        unit="tile",
        disable=progress_disabled(no_progress),
        dynamic_ncols=True,
        leave=False,
    )

    def on_progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        result = calibrate_checkpoint(
            model,
            scene,
            labels,
            preset=preset,
            floor=floor,
            iou_threshold=iou,
            class_column=class_column,
            write=not dry_run,
            progress=on_progress,
            bands=parse_bands(bands),
            tile_size=tile_size,
            overlap=overlap,
            device=device,
        )
    finally:
        bar.close()
    echo(result.format_table())
    if result.written:
        echo(f"score thresholds written to {result.checkpoint.with_suffix('.json')}")
    elif dry_run:
        echo("dry run: the checkpoint is unchanged")
    else:
        echo("no class could be calibrated: the checkpoint is unchanged")
    if out_json is not None:
        atomic_write_json(out_json, result.to_dict(), indent=2, allow_nan=False)
        echo(f"calibration written to {out_json}", err=True)
