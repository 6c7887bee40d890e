"""``geoseg chips``: training chips (GeoTIFF) and COCO instance labels from a scene + labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from geoseg.cli._common import (
    echo,
    fail_on_geoseg_error,
    parse_bands,
    parse_classes,
    progress_disabled,
)

__all__ = ["command", "parse_length"]

_LENGTH = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(px|m)?\s*$", re.IGNORECASE)


def parse_length(value: str, *, name: str) -> tuple[float, bool]:
    """Parse ``512``, ``512px`` or ``150m`` into ``(number, is_metres)``."""
    match = _LENGTH.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r}: give pixels (512) or metres (150m)", param_hint=name)
    return float(match.group(1)), (match.group(2) or "px").lower() == "m"


@click.command("chips")
@click.argument("scene", type=str)
@click.argument("labels", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (one per scene): images/*.tif, annotations.json, class_balance.json.",
)
@click.option(
    "--size", default="512", show_default=True, help="Chip side: pixels, or metres (150m)."
)
@click.option(
    "--overlap", default="64", show_default=True, help="Chip overlap: pixels, or metres (10m)."
)
@click.option("--bands", metavar="LIST", help="1-based bands in model order, e.g. 3,2,1 (all).")
@click.option("--classes", metavar="LIST", help="Class names in category order (default: all).")
@click.option(
    "--class-column", default="class", show_default=True, help="Label attribute with the class."
)
@click.option(
    "--min-visible-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="Sliver rule: drop an object's clipped part that keeps less than this fraction of its "
    "area AND is smaller than --min-visible-pixels.",
)
@click.option(
    "--min-visible-pixels",
    type=click.FloatRange(0.0),
    default=1024.0,
    show_default=True,
    help="Sliver rule: clipped parts at least this large (chip pixels) are always kept.",
)
@click.option(
    "--keep-empty",
    "keep_empty_fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Fraction of chips without objects to keep (0 = skip them all).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the empty-chip draw.")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    help="Split by area: a validation strip of this fraction of the scene's longer side; writes "
    "OUTPUT/train, OUTPUT/val and OUTPUT/val_area.gpkg. No training chip overlaps it.",
)
@click.option(
    "--val-area",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Split by area: the validation area as polygons in a vector file (instead of a strip).",
)
@click.option(
    "--val-side",
    type=click.Choice(["end", "start"]),
    default="end",
    show_default=True,
    help="Where the --val-fraction strip lies: end = right/bottom, start = left/top.",
)
@click.option(
    "--gap",
    default=None,
    help="Pixels (or metres: 10m) kept free between the validation area and the training "
    "chips [default: the overlap].",
)
@click.option(
    "--gsd",
    "scene_gsd",
    type=click.FloatRange(0.0, min_open=True),
    help="Ground sample distance (metres/pixel) of a scene without georeference, whose labels "
    "are in its pixels.",
)
@click.option(
    "--target-gsd",
    type=click.FloatRange(0.0, min_open=True),
    metavar="METRES",
    help="Cut the chips at this ground sample distance, e.g. the model's: a scene more than "
    "10 % away is resampled window by window while it is read; --size and --overlap are then "
    "pixels at this GSD.",
)
@click.option(
    "--reviewed-area",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reviewed labels (pre-labels from `geoseg label` edited in QGIS): the area the "
    "person reviewed, as polygons [default: LABELS' reviewed_area layer, else the convex hull "
    "of its ok features]. Chips are cut only inside it.",
)
@click.option("--overwrite", is_flag=True, help="Replace chips already in the output directory.")
@fail_on_geoseg_error
def command(
    scene: str,
    labels: Path,
    out_dir: Path,
    size: str,
    overlap: str,
    bands: str | None,
    classes: str | None,
    class_column: str,
    min_visible_fraction: float,
    min_visible_pixels: float,
    keep_empty_fraction: float,
    seed: int,
    val_fraction: float | None,
    val_area: Path | None,
    val_side: str,
    gap: str | None,
    scene_gsd: float | None,
    target_gsd: float | None,
    reviewed_area: Path | None,
    overwrite: bool,
) -> None:
    """Cut SCENE into overlapping chips with the instance polygons of LABELS in COCO format.

    LABELS (any vector format) are reprojected to the scene CRS; invalid geometries are
    repaired. Chips keep the scene's dtype (not normalised); annotations.json also records the
    scene's normalisation statistics. Objects without holes are stored as polygons, objects
    with holes as RLE. The class balance is printed and written to class_balance.json.

    With --val-fraction or --val-area the scene is split by area into OUTPUT/train and
    OUTPUT/val (in the training run file: `train_chips: [OUTPUT/train]`, `val_chips:
    [OUTPUT/val]`): the training
    grid is cut away from the validation area, at least --gap pixels from it, so no training
    chip overlaps it. OUTPUT/val_area.gpkg holds the area in the scene CRS.
    """
    from tqdm import tqdm

    from geoseg.chips import chip_folder_outputs, format_class_balance, make_chips, make_split_chips
    from geoseg.io import check_no_overwrite
    from geoseg.raster import open_scene
    from geoseg.tiling import metres_to_pixels

    outs, trees = chip_folder_outputs(
        out_dir, split=val_fraction is not None or val_area is not None, role="--output"
    )
    check_no_overwrite(
        [
            ("SCENE", scene),
            ("LABELS", labels),
            ("--val-area", val_area),
            ("--reviewed-area", reviewed_area),
        ],
        outs,
        trees=trees,
    )
    band_list = parse_bands(bands)
    class_list = parse_classes(classes)
    size_v, size_m = parse_length(size, name="--size")
    overlap_v, overlap_m = parse_length(overlap, name="--overlap")
    gap_v, gap_m = parse_length(gap, name="--gap") if gap is not None else (None, False)
    if size_m or overlap_m or gap_m:
        info = open_scene(scene)
        if target_gsd is not None:  # chip pixels at the target GSD
            size_px = round(size_v / target_gsd) if size_m else round(size_v)
            overlap_px = round(overlap_v / target_gsd) if overlap_m else round(overlap_v)
        else:
            size_px = metres_to_pixels(info, size_v) if size_m else round(size_v)
            overlap_px = metres_to_pixels(info, overlap_v) if overlap_m else round(overlap_v)
        echo(f"chip size {size_px} px, overlap {overlap_px} px", err=True)
    else:
        size_px, overlap_px = round(size_v), round(overlap_v)
    gap_px = None
    if gap_v is not None:
        gap_px = metres_to_pixels(info, gap_v) if gap_m else round(gap_v)
    if val_fraction is not None and val_area is not None:
        raise click.UsageError("give --val-fraction or --val-area, not both")
    split = val_fraction is not None or val_area is not None
    if gap_px is not None and not split:
        raise click.UsageError("--gap only applies with --val-fraction or --val-area")
    if size_px < 1 or not 0 <= overlap_px < size_px:
        raise click.BadParameter(
            f"need 0 <= overlap < size, got size {size_px} px and overlap {overlap_px} px",
            param_hint="--overlap",
        )

    with tqdm(
        total=0, unit="chip", desc="chips", leave=False, disable=progress_disabled(None)
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        options: dict[str, Any] = {
            "size": size_px,
            "overlap": overlap_px,
            "bands": band_list,
            "classes": class_list,
            "class_column": class_column,
            "min_visible_fraction": min_visible_fraction,
            "min_visible_pixels": min_visible_pixels,
            "keep_empty_fraction": keep_empty_fraction,
            "seed": seed,
            "scene_gsd": scene_gsd,
            "target_gsd": target_gsd,
            "overwrite": overwrite,
            "progress": progress,
            "reviewed_area": reviewed_area,
        }
        if split:
            result = make_split_chips(
                scene,
                labels,
                out_dir,
                val_fraction=val_fraction,
                val_area=val_area,
                val_side=val_side,
                gap=gap_px,
                **options,
            )
            parts = [("train", result.train), ("val", result.val)]
        else:
            parts = [("", make_chips(scene, labels, out_dir, **options))]
    for name, summary in parts:
        if name:
            echo(f"{name}: {summary.out_dir}")
        echo(format_class_balance(summary.class_balance))
        for msg in summary.warnings:
            echo(f"warning: {msg}", err=True)
        echo(
            f"wrote {summary.n_chips} chips ({summary.n_empty_chips} without objects) and "
            f"{summary.n_annotations} annotations to {summary.out_dir}; labels used "
            f"{summary.n_labels}, repaired {summary.n_repaired}, dropped "
            f"{summary.n_dropped_geometry} (geometry) + {summary.n_dropped_class} (class), "
            f"slivers dropped {summary.n_slivers}",
            err=True,
        )
        if summary.review is not None:
            echo(
                f"reviewed labels: {summary.review['ok']} ok, {summary.n_not_reviewed} not "
                f"reviewed (never labels); reviewed area: {summary.review['reviewed_area']}; "
                f"{summary.n_chips_unreviewed} chips skipped (outside it or touching a todo "
                "feature)",
                err=True,
            )
    if split:
        echo(
            f"validation area: {result.val_area_path} (gap {result.gap} px); in the training "
            f"run file: train_chips: [{result.train.out_dir}], val_chips: [{result.val.out_dir}]",
            err=True,
        )
