"""Plain vector labels (GeoPackage, GeoJSON, Shapefile...) + their image -> a geoseg chip folder.

Two cases, told apart by the image:

* **A georeferenced image** (a GeoTIFF with a CRS): the labels are reprojected to it and cut
  with :func:`geoseg.chips.make_chips` (the same chips ``geoseg chips`` writes); the GSD comes
  from the image's transform (a stated ``gsd`` is ignored with a warning).
* **An image without georeference** (PNG, JPEG, plain TIFF): label coordinates are *image
  pixels*, x = column and y = row (down), pixel edges at integers. Labels drawn on such an image
  in QGIS have y = -row; when every y is <= 0 they are flipped (logged). A CRS on the labels is
  ignored (logged). ``gsd`` is required: the chips get the pixel frame of
  :func:`geoseg.chips.pixel_frame_transform` and the folder records the GSD in metres.

The class mapping applies to ``class_column`` (a file without it is labelled with the single
name in ``classes``). ``val_fraction`` / ``val_area`` split the scene by area into
``OUT/train`` and ``OUT/val`` (:func:`geoseg.chips.make_split_chips`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import shapely

from geoseg.chips import make_chips, make_split_chips
from geoseg.errors import ConfigError, LabelError
from geoseg.importers.classes import ClassMapping, output_classes
from geoseg.importers.writer import ImportSummary
from geoseg.io import read_vectors

__all__ = ["import_vectors"]

logger = logging.getLogger(__name__)


def import_vectors(
    labels: str | os.PathLike[str] | Any,
    image: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mapping: ClassMapping | Any = None,
    classes: Sequence[str] | None = None,
    class_column: str = "class",
    layer: str | int | None = None,
    gsd: float | None = None,
    val_fraction: float | None = None,
    val_area: str | os.PathLike[str] | Any = None,
    val_side: str = "end",
    gap: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> ImportSummary:
    """Import vector labels of one image as a geoseg chip folder (or a train/val pair).

    Args:
        labels: the vector file (or a GeoDataFrame) with polygons and ``class_column``.
        image: the image the labels belong to.
        out_dir: the chip folder to write (``OUT/train`` + ``OUT/val`` when split).
        mapping: class mapping (``None`` = every class as is).
        classes: the folder's class order (others dropped); a single name labels a file
            without ``class_column``.
        class_column: the labels' class attribute.
        layer: the layer of a multi-layer file.
        gsd: metres per pixel of an image without georeference (required for one).
        val_fraction: split by area, a validation strip (see
            :func:`geoseg.chips.make_split_chips`).
        val_area: split by area, a validation polygon instead.
        val_side: where the strip lies (``end`` or ``start``).
        gap: pixels between the validation area and the training chips (default: overlap).
        progress: ``progress(done, total)`` per chip cell.
        **options: :func:`geoseg.chips.make_chips` options (``size``, ``overlap``, ``bands``,
            ``keep_empty_fraction``, ``min_visible_fraction``, ``seed``, ``overwrite``...).

    Returns:
        An :class:`~geoseg.importers.writer.ImportSummary` (``val`` set when split).

    Raises:
        LabelError: unreadable labels, no class column, no object left after mapping (naming
            the file).
        ConfigError: an image without georeference and no ``gsd``.
    """
    import geopandas as gpd

    from geoseg.raster import NoCRSWarning, open_scene

    name = os.fspath(labels) if isinstance(labels, str | os.PathLike) else "labels"
    gdf = read_vectors(labels, what="labels", layer=layer, allow_empty=False)
    cmap = ClassMapping.coerce(mapping)
    if class_column in gdf.columns:
        values = [str(v) for v in gdf[class_column]]
    elif classes is not None and len(classes) == 1:
        values = [str(classes[0])] * len(gdf)
    else:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise LabelError(
            f"{name}: no class column {class_column!r} (columns: {cols}); pass --class-column, "
            "or a single class name (--classes NAME) to label every feature with it"
        )
    targets = [cmap.target(v) for v in values]
    present = Counter(t for t in targets if t is not None)
    order = output_classes(cmap, sorted(set(values)), present, classes)
    keep = np.asarray([t is not None and t in order for t in targets], dtype=bool)
    dropped = Counter(v for v, k in zip(values, keep, strict=True) if not k)
    kept = Counter(t for t, k in zip(targets, keep, strict=True) if k and t is not None)
    if not kept:
        found = ", ".join(f"{k} ({v})" for k, v in sorted(Counter(values).items()))
        raise LabelError(
            f"{name}: no usable object after the class mapping. Objects found per class: "
            f"{found}; mapping {cmap.to_dict()['map'] or 'none'}. Map classes with --map "
            "'SOURCE[,SOURCE]=TARGET' or keep them with --keep NAME."
        )
    if dropped:
        logger.warning(
            "%s: dropped objects of unmapped classes: %s",
            name,
            ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())),
        )
    geoms = np.asarray(gdf.geometry.values, dtype=object)[keep]
    picked = [t for t, k in zip(targets, keep, strict=True) if k]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        info = open_scene(image)
    georef = info.crs_wkt is not None
    crs = gdf.crs
    scene_gsd: float | None = None
    if georef:
        if gsd is not None:
            logger.warning("%s is georeferenced: --gsd %g is ignored", image, gsd)
        gsd_source = "georeference"
    else:
        if gsd is None:
            raise ConfigError(
                f"{image}: the image has no georeference, so the labels {name} are taken in its "
                "pixels and its ground resolution is unknown; pass --gsd METRES (gsd=... in "
                "Python), e.g. --gsd 0.3"
            )
        if crs is not None:
            logger.warning(
                "%s: the labels have a CRS (%s) but %s has none: coordinates are taken as image "
                "pixels (x = column, y = row)",
                name,
                crs,
                image,
            )
            crs = None
        bounds = shapely.total_bounds(geoms)
        if bounds[3] <= 0 and bounds[1] < 0:
            logger.warning("%s: every y is <= 0 (QGIS pixel frame): flipping y to rows", name)
            geoms = shapely.transform(geoms, lambda xy: xy * np.array([1.0, -1.0]))
        scene_gsd, gsd_source = float(gsd), "stated"
    frame = gpd.GeoDataFrame({"class": picked}, geometry=list(geoms), crs=crs)
    metadata = {
        "source": {
            "format": "vector",
            "path": name,
            "image": os.fspath(image),
            "class_column": class_column,
            "class_mapping": cmap.to_dict(),
            "instances": dict(sorted(kept.items())),
            "dropped": dict(sorted(dropped.items())),
        },
        "gsd_source": gsd_source,
    }
    common: dict[str, Any] = {
        "classes": order,
        "class_column": "class",
        "scene_gsd": scene_gsd,
        "metadata": metadata,
        "progress": progress,
        **options,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        if val_fraction is not None or val_area is not None:
            split = make_split_chips(
                image,
                frame,
                out_dir,
                val_fraction=val_fraction,
                val_area=val_area,
                val_side=val_side,
                gap=gap,
                **common,
            )
            chips, val = split.train, split.val
        else:
            chips, val = make_chips(image, frame, out_dir, **common), None
    warns = tuple(chips.warnings) + (tuple(val.warnings) if val is not None else ())
    return ImportSummary(
        format="vector",
        source=name,
        chips=chips,
        val=val,
        classes=order,
        n_images=1,
        instances=dict(kept),
        dropped=dict(dropped),
        n_invalid=chips.n_dropped_geometry,
        gsd=scene_gsd if scene_gsd is not None else _georef_gsd(info),
        gsd_source=gsd_source,
        warnings=warns,
    )


def _georef_gsd(info: Any) -> float | None:
    from geoseg.raster import ground_sample_distance_m

    try:
        gx, gy = ground_sample_distance_m(info)
    except ConfigError:
        return None
    return float((gx + gy) / 2)
