"""``geoseg import``: labelled data in COCO, DOTA, YOLO-OBB or vector form -> a chip folder."""

from __future__ import annotations

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

__all__ = ["command"]


@click.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(["coco", "dota", "yolo-obb", "vector"]))
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The chip folder to write (images/*.tif, annotations.json, class_balance.json).",
)
@click.option(
    "--gsd",
    type=click.FloatRange(0.0, min_open=True),
    help="Metres per pixel of images without georeference (required for them; DOTA files "
    "with a gsd: line and georeferenced images use their own).",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="SRC[,SRC]=DST",
    help="Class mapping, repeatable: 'Small_Vehicle,Large_Vehicle=vehicle'. With a mapping, "
    "unmapped classes are dropped (and counted) unless kept with --keep/--keep-all.",
)
@click.option("--keep", multiple=True, metavar="CLASS", help="Also import CLASS as it is.")
@click.option("--keep-all", is_flag=True, help="Import every unmapped class as it is.")
@click.option(
    "--classes",
    metavar="LIST",
    help="Class order of the folder (category id = position); other classes are dropped.",
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="coco/dota: the image folder (default: beside the JSON / SRC/images).",
)
@click.option(
    "--labels",
    "labels_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="dota: the label folder (default: SRC/labelTxt).",
)
@click.option(
    "--names",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="yolo-obb: class names (data.yaml or one name per line; default: found in SRC).",
)
@click.option(
    "--split",
    default="train",
    show_default=True,
    help="yolo-obb with a data.yaml: the entry to import (train, val, test).",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="vector: the image the labels belong to (georeferenced, or labels in its pixels).",
)
@click.option(
    "--class-column", default="class", show_default=True, help="vector: the class attribute."
)
@click.option(
    "--box-masks",
    is_flag=True,
    help="coco/yolo: turn objects that are only boxes into box-shaped masks instead of "
    "refusing them.",
)
@click.option("--skip-difficult", is_flag=True, help="dota: drop objects marked difficult.")
@click.option(
    "--target-gsd",
    type=click.FloatRange(0.0, min_open=True),
    help="coco/dota/yolo-obb: resample every image to this GSD (metres) while cutting chips.",
)
@click.option("--size", type=click.IntRange(min=1), default=512, show_default=True,
              help="Chip side in pixels (smaller images are one chip).")  # fmt: skip
@click.option("--overlap", type=click.IntRange(min=0), default=64, show_default=True,
              help="Overlap of the chips cut from larger images, pixels.")  # fmt: skip
@click.option("--bands", metavar="LIST", help="1-based bands written, e.g. 3,2,1 (all).")
@click.option(
    "--keep-empty",
    "keep_empty_fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.1,
    show_default=True,
    help="Fraction of chips without objects to keep.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    help="vector: split by area, a validation strip along the longer side (OUT/train, OUT/val).",
)
@click.option(
    "--val-area",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="vector: split by area, the validation polygons in a vector file.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draws.")
@click.option("--overwrite", is_flag=True, help="Replace chips already in the output folder.")
@fail_on_geoseg_error
def command(
    fmt: str,
    src: Path,
    out_dir: Path,
    gsd: float | None,
    maps: tuple[str, ...],
    keep: tuple[str, ...],
    keep_all: bool,
    classes: str | None,
    images_dir: Path | None,
    labels_dir: Path | None,
    names: Path | None,
    split: str,
    image: Path | None,
    class_column: str,
    box_masks: bool,
    skip_difficult: bool,
    target_gsd: float | None,
    size: int,
    overlap: int,
    bands: str | None,
    keep_empty_fraction: float,
    val_fraction: float | None,
    val_area: Path | None,
    seed: int,
    overwrite: bool,
) -> None:
    """Import the labelled dataset SRC, in FORMAT, as a chip folder `geoseg train` reads.

    \b
    FORMAT  SRC
    coco      a COCO instance JSON (polygons or RLE; iscrowd skipped)
    dota      a folder with images/ and labelTxt/ (oriented boxes; gsd: lines)
    yolo-obb  a folder with images/ and labels/, or its data.yaml
    vector    a GeoPackage/GeoJSON/Shapefile, with --image

    Images without georeference need --gsd (metres per pixel): their chips get a pixel
    frame (x = col * gsd, y = -row * gsd, no CRS). Example:

    \b
        geoseg import dota DOTA/train -o chips/dota --gsd 0.3 \\
            --map 'small-vehicle,large-vehicle=vehicle' --map ship=ship

    Prints the images read, the objects imported per class and those dropped per class.
    """  # noqa: D301 (click needs a real \b before a verbatim block)
    from tqdm import tqdm

    from geoseg.chips import chip_folder_outputs
    from geoseg.importers import ClassMapping, format_summary, import_dataset
    from geoseg.io import check_no_overwrite

    if (fmt == "vector") != (image is not None):
        raise click.UsageError(
            "--image is needed for the vector format" if fmt == "vector" else
            "--image only applies to the vector format"
        )  # fmt: skip
    if (val_fraction is not None or val_area is not None) and fmt != "vector":
        raise click.UsageError("--val-fraction/--val-area split one scene: vector format only")
    if val_fraction is not None and val_area is not None:
        raise click.UsageError("give --val-fraction or --val-area, not both")
    outs, trees = chip_folder_outputs(
        out_dir, split=val_fraction is not None or val_area is not None, role="--output"
    )
    sources = [("SRC", src), ("--images", images_dir), ("--labels", labels_dir)]
    sources += [("--names", names), ("--image", image), ("--val-area", val_area)]
    check_no_overwrite(sources, outs, trees=trees)
    mapping = ClassMapping.parse(maps, keep=keep, keep_all=keep_all)
    options: dict[str, Any] = {
        "mapping": mapping,
        "classes": parse_classes(classes),
        "gsd": gsd,
        "size": size,
        "overlap": overlap,
        "bands": parse_bands(bands),
        "keep_empty_fraction": keep_empty_fraction,
        "seed": seed,
        "overwrite": overwrite,
    }
    if fmt == "coco":
        options.update(images_dir=images_dir, box_masks=box_masks, target_gsd=target_gsd)
    elif fmt == "dota":
        options.update(
            images_dir=images_dir,
            labels_dir=labels_dir,
            skip_difficult=skip_difficult,
            target_gsd=target_gsd,
        )
    elif fmt == "yolo-obb":
        options.update(names=names, split=split, box_masks=box_masks, target_gsd=target_gsd)
    else:
        if target_gsd is not None:
            raise click.UsageError("--target-gsd applies to coco, dota and yolo-obb")
        options.update(
            image=image, class_column=class_column, val_fraction=val_fraction, val_area=val_area
        )
    with tqdm(
        total=0, unit="step", desc="import", leave=False, disable=progress_disabled(None)
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        summary = import_dataset(fmt, src, out_dir, progress=progress, **options)
    echo(format_summary(summary))
    for msg in summary.warnings:
        echo(f"warning: {msg}", err=True)
