"""COCO instance JSON + an image folder -> a geoseg chip folder.

Rules:

* **Images** are found as ``images_dir / file_name``, else ``images_dir / basename``
  (``images_dir`` defaults to the JSON file's folder, then its ``images/`` sub-folder); a
  missing image is an error naming the JSON file and the image.
* **Segmentations**: polygons (``[[x0, y0, x1, y1, ...], ...]``, image pixel-edge coordinates;
  the parts of one object are merged) and RLE (compressed or not; decoded, then traced along
  pixel edges, so the imported mask is exactly the RLE's).
* **iscrowd = 1** objects are skipped and counted: they outline a group of objects as one
  region, which would teach the model wrong outlines (geoseg's own reader ignores them too).
* **Objects without a segmentation** (a ``bbox`` only) are refused, naming the file and the
  count, unless ``box_masks=True``: then each box ``[x, y, w, h]`` becomes a rectangular mask,
  the pixels whose centres lie inside it.
* **Classes** come from the category names (in category-id order), through the class mapping.
* **GSD**: images carry none in COCO, so ``gsd`` is required unless every image is a
  georeferenced GeoTIFF.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from geoseg.coco import decode_segmentation, read_coco
from geoseg.errors import LabelError
from geoseg.importers.classes import ClassMapping
from geoseg.importers.writer import ImportSummary, Instance, SourceImage, write_dataset

__all__ = ["import_coco", "mask_to_polygons", "read_coco_dataset"]

logger = logging.getLogger(__name__)


def mask_to_polygons(mask: np.ndarray[Any, Any]) -> BaseGeometry | None:
    """The pixel-edge outline of a bool mask ``[h, w]`` (image pixels), holes kept.

    Rasterising the result with the pixel-centre rule gives back ``mask`` exactly.
    """
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape

    m = np.asarray(mask).astype(bool)
    if not m.any():
        return None
    parts = [
        shape(g)
        for g, _ in shapes(m.astype(np.uint8), mask=m, connectivity=4, transform=Affine.identity())
    ]
    return shapely.union_all(np.asarray(parts, dtype=object))


def _find_image(images_dir: Path, file_name: str) -> Path:
    direct = images_dir / file_name
    if direct.is_file():
        return direct
    return images_dir / Path(file_name.replace("\\", "/")).name


def read_coco_dataset(
    annotations: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    *,
    box_masks: bool = False,
) -> tuple[list[SourceImage], list[str], dict[str, int]]:
    """Parse a COCO instance file into source images with pixel-space objects.

    Args:
        annotations: the COCO JSON file.
        images_dir: the folder ``file_name`` is relative to (see the module docstring).
        box_masks: turn objects that have only a ``bbox`` into box masks instead of refusing.

    Returns:
        ``(images, class names in category-id order, counts)``, counts holding ``n_crowd``,
        ``n_box_masks`` and ``n_invalid`` (unreadable segmentations).

    Raises:
        LabelError: the file is not COCO, an annotation names an unknown image or category, an
            image is missing, or objects have no segmentation (without ``box_masks``); the
            message names the file.
    """
    path = Path(annotations)
    coco = read_coco(path, hint="give a COCO instance JSON file")
    if images_dir is None:
        base = path.parent
        first = coco.images[0]["file_name"] if coco.images else ""
        if first and not (base / first).is_file() and (base / "images").is_dir():
            base = base / "images"
    else:
        base = Path(images_dir)
    cats = {int(c["id"]): str(c["name"]) for c in coco.categories}
    order = [cats[k] for k in sorted(cats)]
    by_image: dict[int, list[Instance]] = {}
    image_info: dict[int, dict[str, Any]] = {}
    for im in coco.images:
        try:
            image_info[int(im["id"])] = im
        except (KeyError, TypeError, ValueError) as err:
            raise LabelError(f"{path}: an image entry has no valid id ({im!r:.80})") from err
    counts = {"n_crowd": 0, "n_box_masks": 0, "n_invalid": 0}
    box_only: list[Any] = []
    for ann in coco.annotations:
        ref = ann.get("id")
        try:
            image_id = int(ann["image_id"])
            cat = int(ann["category_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise LabelError(
                f"{path}: annotation {ref} lacks a valid image_id / category_id"
            ) from err
        if image_id not in image_info:
            raise LabelError(f"{path}: annotation {ref} names image {image_id}, not in images")
        if cat not in cats:
            raise LabelError(f"{path}: annotation {ref} names category {cat}, not in categories")
        if ann.get("iscrowd", 0):
            counts["n_crowd"] += 1
            continue
        im = image_info[image_id]
        seg = ann.get("segmentation")
        geom: BaseGeometry | None
        if not seg:
            bbox = ann.get("bbox")
            if not box_masks or not bbox or len(bbox) != 4:
                box_only.append(ref)
                continue
            x, y, w, h = (float(v) for v in bbox)
            geom = box(x, y, x + w, y + h)
            counts["n_box_masks"] += 1
        elif isinstance(seg, list):
            rings = [r for r in seg if isinstance(r, list) and len(r) >= 6]
            if not rings:
                counts["n_invalid"] += 1
                continue
            polys = [Polygon(np.asarray(r, dtype=float).reshape(-1, 2)) for r in rings]
            polys = [p if p.is_valid else shapely.make_valid(p) for p in polys]
            geom = shapely.union_all(np.asarray(polys, dtype=object))
        elif isinstance(seg, dict):
            try:
                h, w = int(im["height"]), int(im["width"])
                size = seg.get("size")
                if size is not None and [int(size[0]), int(size[1])] != [h, w]:
                    raise LabelError(
                        f"{path}: annotation {ref}: RLE size {list(size)} differs from its "
                        f"image's height x width [{h}, {w}]"
                    )
                geom = mask_to_polygons(decode_segmentation(seg, h, w))
            except (KeyError, TypeError, ValueError) as err:
                if isinstance(err, LabelError):
                    raise
                raise LabelError(f"{path}: annotation {ref}: unreadable RLE ({err})") from err
        else:
            counts["n_invalid"] += 1
            continue
        if geom is None:
            counts["n_invalid"] += 1
            continue
        by_image.setdefault(image_id, []).append(Instance(cats[cat], geom, ref))
    if box_only:
        raise LabelError(
            f"{path}: {len(box_only)} object(s) have a bbox but no segmentation (annotation "
            f"ids {box_only[:5]}{'...' if len(box_only) > 5 else ''}); geoseg trains on "
            "outlines. Pass --box-masks (box_masks=True) to train on box-shaped masks."
        )
    images: list[SourceImage] = []
    for image_id, im in image_info.items():
        name = str(im.get("file_name", ""))
        if not name:
            raise LabelError(f"{path}: image {image_id} has no file_name")
        img_path = _find_image(base, name)
        if not img_path.is_file():
            raise LabelError(
                f"{path}: image {name!r} not found in {base}; pass the image folder "
                "(--images DIR, images_dir=...)"
            )
        images.append(
            SourceImage(
                path=img_path,
                instances=tuple(by_image.get(image_id, [])),
                label_file=str(path),
                name=Path(name).stem,
            )
        )
    if counts["n_crowd"]:
        logger.info("%s: skipped %d iscrowd objects", path, counts["n_crowd"])
    return images, order, counts


def import_coco(
    annotations: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    mapping: ClassMapping | Any = None,
    classes: Sequence[str] | None = None,
    gsd: float | None = None,
    box_masks: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ImportSummary:
    """Import a COCO instance dataset (JSON + images) as a geoseg chip folder.

    Args:
        annotations: the COCO JSON file.
        out_dir: the chip folder to write.
        images_dir: the image folder (see the module docstring).
        mapping: class mapping (:class:`~geoseg.importers.classes.ClassMapping`, a dict or rule
            strings; ``None`` = every class as is).
        classes: the folder's class order (others dropped).
        gsd: metres per pixel of the images (required unless they are georeferenced).
        box_masks: turn bbox-only objects into box masks instead of refusing them.
        progress: ``progress(done, total)`` per image.
        **options: :func:`~geoseg.importers.writer.write_dataset` options (``size``,
            ``overlap``, ``bands``, ``target_gsd``, ``keep_empty_fraction``, ``seed``,
            ``overwrite``...).

    Returns:
        An :class:`~geoseg.importers.writer.ImportSummary`.

    Example:
        ``import_coco("train.json", "chips/train", gsd=0.3, mapping=["car,truck=vehicle"])``
    """
    images, order, counts = read_coco_dataset(annotations, images_dir, box_masks=box_masks)
    return write_dataset(
        images,
        out_dir,
        fmt="coco",
        source=annotations,
        source_classes=order,
        mapping=ClassMapping.coerce(mapping),
        classes=classes,
        gsd=gsd,
        counts=counts,
        progress=progress,
        **options,
    )
