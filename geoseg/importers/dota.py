"""DOTA oriented-box labels (``labelTxt``) + images -> a geoseg chip folder.

A DOTA label file ``NAME.txt`` belongs to the image ``NAME.png`` (or ``.jpg``, ``.tif``...) and
holds optional header lines then one object per line::

    imagesource:GoogleEarth
    gsd:0.146343590398
    x1 y1 x2 y2 x3 y3 x4 y4 class difficult

Rules:

* **Layout**: ``SRC/images/`` and ``SRC/labelTxt/`` (or ``labels/``, or ``labelTxt-v*``), or the
  folders given as ``images_dir`` / ``labels_dir``. Every label file is imported; an image
  without a label file is skipped (logged); a label file without an image is an error.
* **Oriented boxes** become polygon masks: the four corners in image pixel-edge coordinates, in
  the order given (an invalid, self-crossing order is repaired with ``shapely.make_valid``).
  A line with 9 fields (no ``difficult``) is accepted.
* **difficult = 1** objects are kept unless ``skip_difficult=True`` (then counted as dropped).
* **GSD**: a ``gsd:`` header with a number is this image's GSD in metres (``null``/``None``
  count as absent); otherwise the stated ``gsd``; an image with neither is refused.
* **Classes** (DOTA names such as ``small-vehicle``) go through the class mapping; names
  compare case-insensitively with ``-``/``_``/space alike, so ``Small_Vehicle`` matches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shapely.geometry import Polygon

from geoseg.errors import LabelError
from geoseg.importers.classes import ClassMapping
from geoseg.importers.writer import (
    IMAGE_SUFFIXES,
    ImportSummary,
    Instance,
    SourceImage,
    write_dataset,
)

__all__ = ["import_dota", "read_dota_dataset", "read_dota_file"]

logger = logging.getLogger(__name__)

_LABEL_DIRS = ("labelTxt", "labels", "labelTxt-v1.5", "labelTxt-v1.0", "labelTxt-v2.0")


def read_dota_file(
    path: str | os.PathLike[str], *, skip_difficult: bool = False
) -> tuple[list[Instance], float | None, int]:
    """Parse one DOTA label file.

    Returns:
        ``(objects, gsd or None, difficult objects skipped)``; object geometries are the
        oriented boxes as polygons in image pixels, ``ref`` = ``"file:line"``.

    Raises:
        LabelError: a line that is neither a header nor ``8 numbers, class[, difficult]``,
            naming the file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{p}: cannot read the DOTA label file ({err})") from err
    gsd: float | None = None
    objects: list[Instance] = []
    skipped = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        key, colon, value = stripped.partition(":")
        if colon and " " not in key and not _is_number(key):
            if key.strip().casefold() == "gsd":
                v = value.strip()
                if v and v.casefold() not in ("null", "none", "nan"):
                    try:
                        gsd = float(v)
                    except ValueError as err:
                        raise LabelError(f"{p}:{number}: gsd {v!r} is not a number") from err
                    if not gsd > 0:
                        raise LabelError(f"{p}:{number}: gsd {v!r} is not positive")
            continue
        fields = stripped.split()
        if len(fields) not in (9, 10):
            raise LabelError(
                f"{p}:{number}: expected 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult', got "
                f"{stripped[:80]!r}"
            )
        try:
            xy = [float(v) for v in fields[:8]]
            difficult = len(fields) == 10 and int(float(fields[9])) != 0
        except ValueError as err:
            raise LabelError(f"{p}:{number}: not a DOTA object line: {stripped[:80]!r}") from err
        if difficult and skip_difficult:
            skipped += 1
            continue
        corners = list(zip(xy[0::2], xy[1::2], strict=True))
        objects.append(Instance(fields[8], Polygon(corners), f"{p.name}:{number}"))
    return objects, gsd, skipped


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _image_for(images_dir: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images_dir / f"{stem}{suffix}", images_dir / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _label_dir(root: Path) -> Path | None:
    for name in _LABEL_DIRS:
        if (root / name).is_dir():
            return root / name
    found = sorted(root.glob("labelTxt*"))
    return found[0] if found and found[0].is_dir() else None


def read_dota_dataset(
    src: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    labels_dir: str | os.PathLike[str] | None = None,
    skip_difficult: bool = False,
) -> tuple[list[SourceImage], dict[str, int]]:
    """Parse a DOTA dataset folder (see the module docstring for the layout).

    Returns:
        ``(images, counts)``; counts holds ``n_difficult`` (skipped difficult objects).

    Raises:
        LabelError: no label folder or no label file, an image missing, a malformed line.
    """
    root = Path(src)
    labels = Path(labels_dir) if labels_dir is not None else _label_dir(root)
    images = Path(images_dir) if images_dir is not None else root / "images"
    if labels is None or not labels.is_dir():
        raise LabelError(f"{root}: no DOTA label folder (labelTxt/ or labels/); pass --labels DIR")
    if not images.is_dir():
        raise LabelError(f"{root}: no image folder {images}; pass --images DIR")
    files = sorted(p for p in labels.iterdir() if p.suffix.lower() == ".txt")
    if not files:
        raise LabelError(f"{labels}: holds no DOTA label file (*.txt)")
    out: list[SourceImage] = []
    n_difficult = 0
    for f in files:
        objects, gsd, skipped = read_dota_file(f, skip_difficult=skip_difficult)
        n_difficult += skipped
        image = _image_for(images, f.stem)
        if image is None:
            raise LabelError(f"{f}: no image {f.stem}.png/.jpg/.tif in {images}")
        out.append(SourceImage(image, tuple(objects), str(f), f.stem, gsd))
    n_unlabelled = sum(1 for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) - len(out)
    if n_unlabelled > 0:
        logger.info("%s: %d images without a label file were skipped", images, n_unlabelled)
    return out, {"n_difficult": n_difficult}


def import_dota(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    labels_dir: str | os.PathLike[str] | None = None,
    mapping: ClassMapping | Any = None,
    classes: Sequence[str] | None = None,
    gsd: float | None = None,
    skip_difficult: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ImportSummary:
    """Import a DOTA dataset (images + ``labelTxt``) as a geoseg chip folder.

    Args:
        src: the dataset folder (``images/`` + ``labelTxt/``).
        out_dir: the chip folder to write.
        images_dir: the image folder (default ``SRC/images``).
        labels_dir: the label folder (default ``SRC/labelTxt``, ``SRC/labels``...).
        mapping: class mapping (``None`` = every class as is).
        classes: the folder's class order (others dropped).
        gsd: metres per pixel for images whose label file has no ``gsd:`` line.
        skip_difficult: drop objects marked difficult.
        progress: ``progress(done, total)`` per image.
        **options: :func:`~geoseg.importers.writer.write_dataset` options (``size``,
            ``overlap``, ``target_gsd``...).

    Returns:
        An :class:`~geoseg.importers.writer.ImportSummary`.
    """
    images, counts = read_dota_dataset(
        src, images_dir=images_dir, labels_dir=labels_dir, skip_difficult=skip_difficult
    )
    names = sorted({inst.name for img in images for inst in img.instances})
    return write_dataset(
        images,
        out_dir,
        fmt="dota",
        source=src,
        source_classes=names,
        mapping=ClassMapping.coerce(mapping),
        classes=classes,
        gsd=gsd,
        counts=counts,
        progress=progress,
        **options,
    )
