"""YOLO-OBB (and YOLO segment) labels + images -> a geoseg chip folder.

One label file per image, one object per line, coordinates **normalised** to [0, 1] by the
image width (x) and height (y)::

    class x1 y1 x2 y2 x3 y3 x4 y4          YOLO-OBB (Ultralytics): an oriented box
    class x1 y1 x2 y2 ... xn yn            YOLO segment: a polygon of n >= 3 points
    class xc yc w h                        YOLO detect: an axis-aligned box (see below)

Rules:

* **Layout** (Ultralytics): ``SRC/images/**/NAME.ext`` with ``SRC/labels/**/NAME.txt`` at the
  same relative path, or a ``data.yaml`` as ``SRC``: its ``path`` (relative to the YAML file)
  is the root and its ``split`` entry (``train`` by default; a folder or a list of folders) the
  image folders, each ``.../images/...`` folder's labels in the matching ``.../labels/...``.
  An image without a label file has no object.
* **Class names**: ``names`` (a list, or a file), else ``SRC/data.yaml`` / ``SRC/*.yaml`` /
  ``SRC/classes.txt``; a YAML ``names`` may be a list or ``{index: name}``; a ``.txt`` file
  has one name per line. A class index outside the names is an error naming the file and line.
* **Oriented boxes and polygons** become polygon masks (scaled to image pixels, pixel-edge
  coordinates). **Plain boxes** (5 fields) are refused, naming the file, unless
  ``box_masks=True`` (then they become rectangular masks).
* Coordinates above 1.5 are refused (the file is not normalised).
* **GSD**: YOLO carries none: ``gsd`` is required unless the images are georeferenced.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from shapely.geometry import Polygon, box

from geoseg.errors import LabelError, RasterReadError
from geoseg.importers.classes import ClassMapping
from geoseg.importers.writer import (
    IMAGE_SUFFIXES,
    ImportSummary,
    Instance,
    SourceImage,
    write_dataset,
)

__all__ = ["import_yolo_obb", "read_names", "read_yolo_dataset", "read_yolo_file"]

logger = logging.getLogger(__name__)


def read_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a ``data.yaml`` (``names`` list or ``{index: name}``) or a text file.

    Raises:
        LabelError: unreadable, no ``names``, or indexes that are not 0..n-1.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{p}: cannot read the class names ({err})") from err
    if p.suffix.lower() not in (".yaml", ".yml"):
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise LabelError(f"{p}: holds no class name (one per line)")
        return names
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LabelError(f"{p}: not valid YAML ({err})") from err
    raw = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    if isinstance(raw, dict) and raw:
        try:
            by_index = {int(k): str(v) for k, v in raw.items()}
        except (TypeError, ValueError) as err:
            raise LabelError(f"{p}: names keys must be class indexes ({err})") from err
        if sorted(by_index) != list(range(len(by_index))):
            raise LabelError(f"{p}: names indexes must be 0..{len(by_index) - 1}")
        return [by_index[i] for i in range(len(by_index))]
    raise LabelError(f"{p}: no 'names' list or mapping of class names")


def read_yolo_file(
    path: str | os.PathLike[str],
    names: Sequence[str],
    width: int,
    height: int,
    *,
    box_masks: bool = False,
) -> tuple[list[Instance], int]:
    """Parse one YOLO label file for a ``width x height`` image.

    Returns:
        ``(objects in image pixels, boxes turned into box masks)``.

    Raises:
        LabelError: a malformed line, an unknown class index, coordinates that are not
            normalised, or a plain box without ``box_masks``; naming the file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{p}: cannot read the label file ({err})") from err
    objects: list[Instance] = []
    n_boxes = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{p}:{number}"
        try:
            index = int(float(fields[0]))
            values = [float(v) for v in fields[1:]]
        except ValueError as err:
            raise LabelError(f"{where}: not a YOLO label line: {line.strip()[:80]!r}") from err
        if not 0 <= index < len(names):
            raise LabelError(
                f"{where}: class index {index} but only {len(names)} names are known; check the "
                "names file (--names)"
            )
        if any(abs(v) > 1.5 for v in values):
            raise LabelError(f"{where}: coordinates above 1 -- YOLO labels must be normalised")
        if len(values) == 4:
            if not box_masks:
                raise LabelError(
                    f"{where}: an axis-aligned box (class xc yc w h) has no outline; pass "
                    "--box-masks (box_masks=True) to train on box-shaped masks"
                )
            xc, yc, w, h = values
            geom: Any = box(
                (xc - w / 2) * width,
                (yc - h / 2) * height,
                (xc + w / 2) * width,
                (yc + h / 2) * height,
            )
            n_boxes += 1
        elif len(values) >= 6 and len(values) % 2 == 0:
            pts = [(x * width, y * height) for x, y in zip(values[0::2], values[1::2], strict=True)]
            geom = Polygon(pts)
        else:
            raise LabelError(
                f"{where}: expected 'class x1 y1 x2 y2 x3 y3 x4 y4' (or a polygon), got "
                f"{len(fields)} fields"
            )
        objects.append(Instance(names[index], geom, f"{p.name}:{number}"))
    return objects, n_boxes


def _labels_for(image: Path, images_root: Path, labels_root: Path) -> Path:
    rel = image.relative_to(images_root).with_suffix(".txt")
    return labels_root / rel


def _swap_images_labels(folder: Path) -> Path:
    """Ultralytics' rule: the last ``images`` component of the path becomes ``labels``."""
    parts = list(folder.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return folder.parent / "labels"


def _default_names(root: Path) -> list[str]:
    for candidate in [root / "data.yaml", *sorted(root.glob("*.yaml")), root / "classes.txt"]:
        if candidate.is_file():
            return read_names(candidate)
    raise LabelError(
        f"{root}: no class names (data.yaml or classes.txt); pass --names FILE or the names"
    )


def read_yolo_dataset(
    src: str | os.PathLike[str],
    *,
    names: Sequence[str] | str | os.PathLike[str] | None = None,
    split: str = "train",
    box_masks: bool = False,
) -> tuple[list[SourceImage], list[str], dict[str, int]]:
    """Parse a YOLO-OBB dataset (a folder or a ``data.yaml``, see the module docstring).

    Returns:
        ``(images, class names, counts)``; counts holds ``n_box_masks``.

    Raises:
        LabelError: no names, no images, or a malformed label file.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    src_path = Path(src)
    pairs: list[tuple[Path, Path]] = []  # (images folder, labels folder)
    yaml_names: list[str] | None = None
    if src_path.is_file() and src_path.suffix.lower() in (".yaml", ".yml"):
        try:
            doc = yaml.safe_load(src_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise LabelError(f"{src_path}: cannot read the dataset YAML ({err})") from err
        if not isinstance(doc, dict):
            raise LabelError(f"{src_path}: not a YOLO dataset YAML (no mapping)")
        root = src_path.parent / str(doc.get("path") or ".")
        entry = doc.get(split)
        if not entry:
            raise LabelError(f"{src_path}: no {split!r} entry; choose one with --split")
        for item in entry if isinstance(entry, list) else [entry]:
            folder = root / str(item)
            if folder.suffix.lower() == ".txt":
                raise LabelError(f"{src_path}: image lists ({folder.name}) are not supported")
            pairs.append((folder, _swap_images_labels(folder)))
        if "names" in doc:
            yaml_names = read_names(src_path)
        names_root = src_path.parent
    elif src_path.is_dir():
        pairs.append((src_path / "images", src_path / "labels"))
        names_root = src_path
    else:
        raise LabelError(f"{src_path}: give a YOLO dataset folder or its data.yaml")

    if isinstance(names, str | os.PathLike):
        name_list = read_names(names)
    elif names is not None:
        name_list = [str(n) for n in names]
    elif yaml_names is not None:
        name_list = yaml_names
    else:
        name_list = _default_names(names_root)

    images: list[SourceImage] = []
    n_boxes = 0
    for images_root, labels_root in pairs:
        if not images_root.is_dir():
            raise LabelError(f"{src_path}: no image folder {images_root}")
        files = sorted(
            p for p in images_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        for image in files:
            label = _labels_for(image, images_root, labels_root)
            objects: list[Instance] = []
            if label.is_file():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", NotGeoreferencedWarning)
                        with rasterio.open(image) as ds:
                            width, height = ds.width, ds.height
                except RasterioError as err:
                    raise RasterReadError(f"{image}: cannot read the image ({err})") from err
                objects, boxes = read_yolo_file(
                    label, name_list, width, height, box_masks=box_masks
                )
                n_boxes += boxes
            rel = image.relative_to(images_root).with_suffix("")
            images.append(SourceImage(image, tuple(objects), str(label), "_".join(rel.parts)))
    if not images:
        raise LabelError(f"{src_path}: no image found under {[str(p[0]) for p in pairs]}")
    return images, name_list, {"n_box_masks": n_boxes}


def import_yolo_obb(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    names: Sequence[str] | str | os.PathLike[str] | None = None,
    split: str = "train",
    mapping: ClassMapping | Any = None,
    classes: Sequence[str] | None = None,
    gsd: float | None = None,
    box_masks: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ImportSummary:
    """Import a YOLO-OBB dataset as a geoseg chip folder.

    Args:
        src: the dataset folder (``images/`` + ``labels/``) or its ``data.yaml``.
        out_dir: the chip folder to write.
        names: class names (a list, or a ``data.yaml`` / ``.txt`` file); default: found in
            the dataset (see the module docstring).
        split: the ``data.yaml`` entry to import (``train``, ``val``, ``test``).
        mapping: class mapping (``None`` = every class as is).
        classes: the folder's class order (others dropped).
        gsd: metres per pixel of the images (required unless they are georeferenced).
        box_masks: turn plain boxes into box masks instead of refusing them.
        progress: ``progress(done, total)`` per image.
        **options: :func:`~geoseg.importers.writer.write_dataset` options.

    Returns:
        An :class:`~geoseg.importers.writer.ImportSummary`.
    """
    images, name_list, counts = read_yolo_dataset(
        src, names=names, split=split, box_masks=box_masks
    )
    return write_dataset(
        images,
        out_dir,
        fmt="yolo-obb",
        source=src,
        source_classes=name_list,
        mapping=ClassMapping.coerce(mapping),
        classes=classes,
        gsd=gsd,
        counts=counts,
        progress=progress,
        **options,
    )
