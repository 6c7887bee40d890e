"""The COCO instance schema geoseg writes and reads: one writer, one reader, RLE, category ids.

Used by :mod:`geoseg.chips` (training chips, writer), :mod:`geoseg.train` (chip folders,
reader), :mod:`geoseg.export` (COCO output of predictions) and :mod:`geoseg.evaluate`
(:func:`~geoseg.evaluate.coco_evaluate`).

**Category ids follow the model's class order**: the class at index ``i`` of a ``classes``
tuple (the model's, a chip folder's, a checkpoint's) has COCO category id ``i + 1``, in every
file geoseg writes (:func:`category_ids`, :func:`categories`). Readers match categories by
*name* (:func:`label_map`), so files written with another order still load correctly.

A chip folder (``DIR``) holds::

    DIR/images/<scene-stem>_r<row>_c<col>.tif   chip GeoTIFFs (IMAGES_DIR)
    DIR/annotations.json                        COCO + a "geoseg" block (ANNOTATIONS_FILE)

Segmentations are COCO polygons (``[[x0, y0, x1, y1, ...], ...]`` in pixel-edge coordinates
of the image) or compressed RLE (``{"size": [height, width], "counts": str}``, column-major
runs as pycocotools defines them); ``bbox`` is ``[x, y, width, height]`` in pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from geoseg.errors import LabelError
from geoseg.io import atomic_write_json

__all__ = [
    "ANNOTATIONS_FILE",
    "IMAGES_DIR",
    "CocoFile",
    "categories",
    "category_ids",
    "coco_document",
    "decode_segmentation",
    "encode_rle",
    "encode_rle_crop",
    "label_map",
    "mask_bbox",
    "read_coco",
    "segmentation_from_mask",
    "write_coco",
]

#: The COCO file of a chip folder.
ANNOTATIONS_FILE: Final = "annotations.json"
#: The sub-folder of a chip folder holding the chip GeoTIFFs.
IMAGES_DIR: Final = "images"


# --------------------------------------------------------------------------------------------
# categories


def category_ids(classes: Sequence[str]) -> dict[str, int]:
    """Class name -> COCO category id (``index + 1`` in ``classes``, the model's order)."""
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise LabelError(f"duplicate class names in {names}")
    return {name: i + 1 for i, name in enumerate(names)}


def categories(classes: Sequence[str]) -> list[dict[str, Any]]:
    """The COCO ``categories`` list of ``classes``: ``{"id": i + 1, "name", "supercategory"}``."""
    return [
        {"id": cid, "name": name, "supercategory": "object"}
        for name, cid in category_ids(classes).items()
    ]


def label_map(
    cats: Sequence[Mapping[str, Any]], classes: Sequence[str]
) -> tuple[dict[int, int], list[str]]:
    """Match a file's categories to ``classes`` by name.

    Returns:
        ``(mapping, unknown)``: COCO category id -> 1-based model label (position in
        ``classes`` + 1), and the names of the file's categories not in ``classes``.
    """
    index = category_ids(classes)
    mapping: dict[int, int] = {}
    unknown: list[str] = []
    for cat in cats:
        name = str(cat["name"])
        if name in index:
            mapping[int(cat["id"])] = index[name]
        else:
            unknown.append(name)
    return mapping, unknown


# --------------------------------------------------------------------------------------------
# masks <-> segmentations


def mask_bbox(mask: npt.NDArray[Any]) -> list[float]:
    """COCO ``bbox`` ``[x, y, width, height]`` (pixel edges) of a non-empty mask ``[h, w]``."""
    rows = np.flatnonzero(np.asarray(mask).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] + 1 - cols[0]),
        float(rows[-1] + 1 - rows[0]),
    ]


def encode_rle(mask: npt.NDArray[Any]) -> dict[str, Any]:
    """Compressed COCO RLE of a whole-image mask ``[h, w]``: ``{"size", "counts": str}``."""
    from pycocotools import mask as mask_utils

    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(m)
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": rle["counts"].decode("ascii")}


def encode_rle_crop(
    mask: npt.NDArray[np.bool_], col: int, row: int, width: int, height: int
) -> dict[str, Any]:
    """Compressed COCO RLE of a box-cropped mask placed in a ``width x height`` image.

    Runs are computed from the crop (column-major over the whole image, as COCO defines them)
    without allocating an image-sized array.

    Args:
        mask: bool ``[h, w]`` cropped mask, inside the image.
        col: image-pixel column of the mask's left edge.
        row: image-pixel row of the mask's top edge.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        ``{"size": [height, width], "counts": str}`` (pycocotools' compressed form).
    """
    from pycocotools import mask as mask_utils

    cc, rr = np.nonzero(np.asarray(mask, dtype=bool).T)  # column-major: by column, then row
    idx = (rr.astype(np.int64) + row) + (cc.astype(np.int64) + col) * height
    total = int(width) * int(height)
    if len(idx) == 0:
        counts = [total]
    else:
        brk = np.flatnonzero(np.diff(idx) != 1)
        starts = np.concatenate([idx[:1], idx[brk + 1]])
        ends = np.concatenate([idx[brk] + 1, idx[-1:] + 1])
        zeros = starts - np.concatenate([[0], ends[:-1]])
        ones = ends - starts
        counts = np.stack([zeros, ones], axis=1).ravel().tolist()
        counts.append(total - int(ends[-1]))
    rle = mask_utils.frPyObjects(
        {"size": [int(height), int(width)], "counts": counts}, height, width
    )
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def decode_segmentation(seg: Any, height: int, width: int) -> npt.NDArray[np.uint8]:
    """Rasterise one COCO segmentation (polygons, RLE or uncompressed RLE) to ``[h, w]`` uint8."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = dict(seg)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    out: npt.NDArray[np.uint8] = mask_utils.decode(rle).astype(np.uint8, copy=False)
    return out


def segmentation_from_mask(mask: npt.NDArray[np.bool_]) -> list[list[float]] | dict[str, Any]:
    """COCO segmentation that pycocotools decodes to exactly ``mask`` (bool ``[h, w]``).

    Polygons: the pixel-edge outlines of the footprint's 4-connected parts (image pixels,
    collinear vertices removed), used when no part has a hole and pycocotools' polygon
    rasteriser gives back ``mask`` exactly (it does for such axis-aligned outlines). Otherwise
    compressed RLE of ``mask``. Tracing the footprint, rather than storing a label's own
    vertices, is what makes the decoded mask exact: pycocotools' rasteriser does not follow the
    pixel-centre rule on slanted edges.
    """
    from affine import Affine
    from pycocotools import mask as mask_utils
    from rasterio.features import shapes
    from shapely.geometry import Polygon, shape

    h, w = mask.shape
    rings: list[list[float]] = []
    has_hole = False
    for geom, _ in shapes(
        mask.astype(np.uint8), mask=mask, connectivity=4, transform=Affine.identity()
    ):
        poly = shape(geom).simplify(0)
        if not isinstance(poly, Polygon) or len(poly.interiors) > 0:
            has_hole = True
            break
        rings.append([float(v) for v in np.asarray(poly.exterior.coords)[:-1].ravel()])
    if not has_hole and rings and all(len(r) >= 6 for r in rings):
        rle = mask_utils.merge(mask_utils.frPyObjects(rings, h, w))
        if np.array_equal(mask_utils.decode(rle).astype(bool), mask):
            return rings
    return encode_rle(mask)


# --------------------------------------------------------------------------------------------
# documents: the one writer and the one reader


def coco_document(
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    *,
    info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A COCO instance document: ``info``, ``images``, ``annotations``, ``categories``.

    Args:
        images: ``{"id", "file_name", "width", "height", ...}`` per image.
        annotations: ``{"id", "image_id", "category_id", "segmentation", "area", "bbox",
            "iscrowd", ...}`` per object, ``category_id`` from :func:`category_ids`.
        classes: class names in the model's order (category id = index + 1).
        info: the ``info`` block.
        extra: further top-level blocks (e.g. chips' ``"geoseg"`` block).
    """
    doc: dict[str, Any] = {
        "info": dict(info or {}),
        "images": list(images),
        "annotations": list(annotations),
        "categories": categories(classes),
    }
    for key, value in (extra or {}).items():
        if key in doc:
            raise ValueError(f"extra block {key!r} would replace a COCO key")
        doc[key] = value
    return doc


def write_coco(
    path: str | os.PathLike[str],
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    classes: Sequence[str],
    *,
    info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    indent: int | None = None,
    **options: Any,
) -> Path:
    """Write :func:`coco_document` to ``path`` as JSON, atomically.

    Args:
        path: the output file (``annotations.json`` of a chip folder, a ``.json`` export).
        images: as :func:`coco_document`.
        annotations: as :func:`coco_document`.
        classes: the model's class names (category id = index + 1).
        info: the ``info`` block.
        extra: further top-level blocks.
        indent: JSON indentation (``None``: one line).
        **options: as :func:`geoseg.io.atomic_write` (``fsync``, ``mode``...).

    Returns:
        ``path``.
    """
    doc = coco_document(images, annotations, classes, info=info, extra=extra)
    return atomic_write_json(path, doc, indent=indent, **options)


@dataclass(frozen=True)
class CocoFile:
    """A COCO instance file as read by :func:`read_coco`.

    Attributes:
        path: the file read.
        images: the ``images`` list.
        annotations: the ``annotations`` list.
        categories: the ``categories`` list (``{"id", "name"}``).
        extra: the other top-level blocks (``info``, chips' ``geoseg``...).
    """

    path: Path
    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Category names in category-id order."""
        return tuple(str(c["name"]) for c in sorted(self.categories, key=lambda c: int(c["id"])))

    def annotations_by_image(self, keep: Mapping[int, int] | None = None) -> dict[int, list[Any]]:
        """Non-crowd annotations per image id (only categories in ``keep`` when given)."""
        out: dict[int, list[Any]] = {}
        for ann in self.annotations:
            if ann.get("iscrowd", 0):
                continue
            if keep is not None and int(ann["category_id"]) not in keep:
                continue
            out.setdefault(int(ann["image_id"]), []).append(ann)
        return out


def read_coco(path: str | os.PathLike[str], *, hint: str | None = None) -> CocoFile:
    """Read a COCO instance JSON file.

    Args:
        path: the file.
        hint: what to do when it cannot be read, appended to the message.

    Raises:
        LabelError: the file cannot be read, is not JSON, or is not a COCO instance document
            (an object with ``images``/``annotations``/``categories`` lists); the message names
            the file.
    """
    p = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise LabelError(
            f"{p}: cannot read the COCO annotations ({err.strerror or err}){tail}"
        ) from err
    except ValueError as err:
        raise LabelError(f"{p}: not valid JSON ({err}){tail}") from err
    if not isinstance(doc, dict) or not all(
        isinstance(doc.get(k, []), list) for k in ("images", "annotations", "categories")
    ):
        raise LabelError(
            f"{p}: not a COCO instance file (needs images, annotations and categories lists){tail}"
        )
    extra = {k: v for k, v in doc.items() if k not in ("images", "annotations", "categories")}
    return CocoFile(
        path=p,
        images=list(doc.get("images", [])),
        annotations=list(doc.get("annotations", [])),
        categories=list(doc.get("categories", [])),
        extra=extra,
    )
