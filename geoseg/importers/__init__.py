"""Importers: the labelled data real datasets ship -> geoseg chip folders (no torch).

One module per format, each parsing its files into pixel-space objects and writing a chip
folder that :class:`geoseg.train.ChipDataset` trains on and :func:`geoseg.coco.read_coco` reads
(the layout of :mod:`geoseg.chips`, with the source, the class mapping and the GSD recorded in
the ``"geoseg"`` block of ``annotations.json``):

=============  ==============================================  ==============================
format         source                                          function
=============  ==============================================  ==============================
``coco``       COCO instance JSON + image folder               :func:`import_coco`
``dota``       DOTA ``images/`` + ``labelTxt/`` (oriented      :func:`import_dota`
               boxes, ``gsd:`` header)
``yolo-obb``   YOLO-OBB ``images/`` + ``labels/`` (normalised  :func:`import_yolo_obb`
               oriented boxes or polygons) + names
``vector``     a GeoPackage/GeoJSON/Shapefile + its image      :func:`import_vectors`
               (georeferenced, or labels in image pixels)
=============  ==============================================  ==============================

Shared rules (see :mod:`geoseg.importers.writer` and :mod:`geoseg.importers.classes`): the
class mapping (``Small_Vehicle,Large_Vehicle=vehicle``; unmapped classes dropped and counted),
the GSD of images without georeference stated once (``gsd``; refused without it), their pixel
frame (``x = col * gsd``, ``y = -row * gsd``, no CRS), and an error naming the file when
nothing usable remains.
"""

from __future__ import annotations

import os
from typing import Any, Final

from geoseg.importers.classes import ClassMapping, normalise_name, output_classes
from geoseg.importers.coco import import_coco, read_coco_dataset
from geoseg.importers.dota import import_dota, read_dota_dataset, read_dota_file
from geoseg.importers.vector import import_vectors
from geoseg.importers.writer import ImportSummary, Instance, SourceImage, write_dataset
from geoseg.importers.yolo import import_yolo_obb, read_names, read_yolo_dataset, read_yolo_file

__all__ = [
    "FORMATS",
    "ClassMapping",
    "ImportSummary",
    "Instance",
    "SourceImage",
    "format_summary",
    "import_coco",
    "import_dataset",
    "import_dota",
    "import_vectors",
    "import_yolo_obb",
    "normalise_name",
    "output_classes",
    "read_coco_dataset",
    "read_dota_dataset",
    "read_dota_file",
    "read_names",
    "read_yolo_dataset",
    "read_yolo_file",
    "write_dataset",
]

#: Format name -> what ``SRC`` is, for help texts.
FORMATS: Final = {
    "coco": "a COCO instance JSON file (images beside it, in images/, or --images DIR)",
    "dota": "a DOTA folder with images/ and labelTxt/",
    "yolo-obb": "a YOLO-OBB folder with images/ and labels/, or its data.yaml",
    "vector": "a vector file of polygons (with --image IMAGE)",
}


def import_dataset(
    fmt: str,
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    **options: Any,
) -> ImportSummary:
    """Import ``src`` in format ``fmt`` (a key of :data:`FORMATS`) as a chip folder.

    ``options`` go to the format's function; ``vector`` needs ``image=``.

    Raises:
        ConfigError: an unknown format, or ``vector`` without ``image``.
    """
    from geoseg.errors import ConfigError

    key = fmt.strip().lower().replace("_", "-")
    if key == "coco":
        return import_coco(src, out_dir, **options)
    if key == "dota":
        return import_dota(src, out_dir, **options)
    if key in ("yolo-obb", "yolo"):
        return import_yolo_obb(src, out_dir, **options)
    if key in ("vector", "vectors"):
        image = options.pop("image", None)
        if image is None:
            raise ConfigError("the vector format needs the image the labels belong to (image=)")
        return import_vectors(src, image, out_dir, **options)
    raise ConfigError(f"unknown import format {fmt!r}; choose one of {sorted(FORMATS)}")


def format_summary(summary: ImportSummary) -> str:
    """A plain-text report of an import (what ``geoseg import`` prints)."""
    from geoseg.chips import format_class_balance

    lines = [
        f"{summary.format} {summary.source}: {summary.n_images} image(s) -> "
        f"{summary.chips.n_chips} chips ({summary.chips.n_empty_chips} without objects), "
        f"{summary.chips.n_annotations} annotations in {summary.chips.out_dir}",
    ]
    if summary.val is not None:
        lines.append(
            f"validation: {summary.val.n_chips} chips, {summary.val.n_annotations} annotations "
            f"in {summary.val.out_dir}"
        )
    gsd = "unknown" if summary.gsd is None else f"{summary.gsd:.4g} m"
    lines.append(f"GSD {gsd} ({summary.gsd_source})")
    lines.append("objects imported per class:")
    for name in summary.classes:
        lines.append(f"  {name:<24} {summary.instances.get(name, 0):>8}")
    if summary.dropped:
        lines.append("objects dropped per source class (not mapped / not in the classes):")
        for name, n in sorted(summary.dropped.items()):
            lines.append(f"  {name:<24} {n:>8}")
    extra = [
        f"{label} {n}"
        for label, n in (
            ("crowd objects skipped", summary.n_crowd),
            ("boxes made box masks", summary.n_box_masks),
            ("invalid geometries dropped", summary.n_invalid),
            ("slivers dropped", summary.chips.n_slivers),
        )
        if n
    ]
    if extra:
        lines.append("; ".join(extra))
    lines.append(format_class_balance(summary.chips.class_balance))
    return "\n".join(lines)
