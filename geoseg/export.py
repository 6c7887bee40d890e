"""Writers for the vectorised objects: the format follows the output file's extension.

=================  =====================================  =======================================
format             extensions                             notes
=================  =====================================  =======================================
GeoPackage         ``.gpkg`` (the default)                 scene CRS; ``layer`` (default: the
                                                          file stem) replaces only that layer
GeoJSON            ``.geojson``                            RFC 7946: reprojected to WGS84
                                                          longitude/latitude, right-hand rings
ESRI Shapefile     ``.shp``                                field names cut to 10 characters
                                                          (:data:`SHAPEFILE_FIELD_NAMES`)
GeoParquet         ``.parquet``, ``.geoparquet``           scene CRS, GeoParquet metadata
FlatGeobuf         ``.fgb``                                scene CRS, with a spatial index
                                                          (features come back in its order)
COCO JSON          ``.json``, ``.coco.json``               scene **pixels**; needs ``scene_info``
=================  =====================================  =======================================

``.json`` is COCO instance JSON (one image: the scene; category ids follow the model's class
order, see :mod:`geoseg.coco`); GeoJSON is written only for ``.geojson``. The format table
itself (:class:`~geoseg.io.VectorFormat`, :func:`~geoseg.io.format_for_path`) lives in
:mod:`geoseg.io` and is re-exported here.

Writes are atomic (:func:`geoseg.io.atomic_write`): everything is written into a temporary
file next to the output, then moved into place with :func:`os.replace` (same file system), so
a failed write leaves no partial file and keeps an earlier file intact; the result gets the
usual ``0o666 & ~umask`` permissions. A Shapefile's sidecars are moved first and the ``.shp``
last. Call :func:`check_writable` before starting a long job: it fails at once, with
:class:`~geoseg.errors.ExportError`, on an unknown extension or an output that cannot be
written; :func:`check_output_crs` fails at once on a format that cannot hold the scene's
coordinates (GeoJSON of a scene without a CRS, or with one that has no way to longitude and
latitude). A scene without a CRS is written to the other formats in its own (pixel)
coordinates, with a warning; GeoJSON refuses it rather than write empty geometries.

A layer has one geometry type: ``gdf.attrs["geometry_type"]`` (set by
:func:`geoseg.pipeline.keep_objects` and ``output_geometry``: ``Polygon``, or ``Point``) is
declared to the OGR formats (GeoPackage, Shapefile, FlatGeobuf, GeoJSON), also for a layer
without features; without it, mixed ``Polygon``/``MultiPolygon`` columns are written as
``MultiPolygon``.

:func:`write_id_raster` writes the objects' instance ids as a Cloud-Optimized GeoTIFF on the
scene's grid (``--mask-raster``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.errors import ExportError, GeosegError
from geoseg.io import VectorFormat, atomic_write, check_writable, format_by_name, format_for_path
from geoseg.storage import Target, as_target, write_output
from geoseg.types import SceneInfo

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "SHAPEFILE_FIELD_NAMES",
    "VectorFormat",
    "check_id_raster_path",
    "check_output_crs",
    "check_scene_output",
    "check_writable",
    "format_for_path",
    "write_id_raster",
    "write_vectors",
]

logger = logging.getLogger(__name__)


#: Shapefile (dBASE) field names are at most 10 characters: the standard columns that are
#: longer get these names; other long names are cut to 10 characters (and numbered if two
#: collide).
SHAPEFILE_FIELD_NAMES: dict[str, str] = {"heading_deg": "heading"}


def _shapefile_columns(columns: list[str]) -> dict[str, str]:
    """Old -> new names so that every non-geometry column fits in 10 characters, uniquely."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for col in columns:
        new = SHAPEFILE_FIELD_NAMES.get(col, col)[:10]
        base, n = new, 1
        while new.lower() in used:
            suffix = f"_{n}"
            new = base[: 10 - len(suffix)] + suffix
            n += 1
        used.add(new.lower())
        if new != col:
            out[col] = new
    return out


def _write_ogr(
    gdf: geopandas.GeoDataFrame, tmp: Path, *, driver: str, layer: str | None, **opts: Any
) -> None:
    import warnings

    import pyogrio

    gtype = gdf.attrs.get("geometry_type")
    if gtype is not None:
        opts.setdefault("geometry_type", gtype)
    with warnings.catch_warnings():  # no CRS: check_output_crs has said so, once
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.write_dataframe(gdf, os.fspath(tmp), layer=layer, driver=driver, **opts)


def _to_pixels(gdf: geopandas.GeoDataFrame, scene_info: SceneInfo) -> npt.NDArray[Any]:
    """Geometries of ``gdf`` in scene pixels (via the inverse of the scene transform)."""
    import shapely

    g = gdf
    if gdf.crs is not None and scene_info.crs_wkt is not None:
        from pyproj import CRS

        if not CRS.from_user_input(gdf.crs).equals(CRS.from_wkt(scene_info.crs_wkt)):
            g = gdf.to_crs(scene_info.crs_wkt)
    inv = ~scene_info.transform

    def to_px(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f])

    return np.asarray(shapely.transform(np.asarray(g.geometry.values), to_px), dtype=object)


def _json_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


def _coco_classes(gdf: geopandas.GeoDataFrame, classes: Sequence[str] | None) -> list[str]:
    """Category names in id order: ``classes`` (or ``gdf.attrs["classes"]``), then the rest."""
    present = sorted({str(c) for c in gdf["class"]}) if "class" in gdf else []
    given = classes if classes is not None else gdf.attrs.get("classes")
    if given is None:
        if present:
            logger.info(
                "COCO category ids follow the sorted class names %s; pass classes= (the "
                "model's classes) for ids in model order",
                present,
            )
        return present or ["object"]
    names = [str(c) for c in given]
    missing = [c for c in present if c not in names]
    if missing:
        logger.warning("classes %s are not in %s; appended after them", missing, names)
    return names + missing or ["object"]


def _write_coco(
    gdf: geopandas.GeoDataFrame,
    tmp: Path,
    scene_info: SceneInfo,
    classes: Sequence[str] | None,
) -> None:
    """COCO instance JSON in scene pixels: one image, RLE masks (holes kept), scores."""
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from geoseg.coco import category_ids, encode_rle_crop, write_coco

    width, height = scene_info.width, scene_info.height
    names = _coco_classes(gdf, classes)
    cat_id = category_ids(names)
    has_class = "class" in gdf
    sizes = ("area_m2", "length_m", "width_m", "area_px", "length_px", "width_px")
    extra = [c for c in (*sizes, "heading_deg") if c in gdf]
    annotations: list[dict[str, Any]] = []
    identity = Affine.identity()
    for i, geom in enumerate(_to_pixels(gdf, scene_info)):
        if geom is None or geom.is_empty:
            continue
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = max(math.floor(x0 + 1e-6), 0), max(math.floor(y0 + 1e-6), 0)
        c1, r1 = min(math.ceil(x1 - 1e-6), width), min(math.ceil(y1 - 1e-6), height)
        if c1 <= c0 or r1 <= r0:
            continue
        # rasterising pixel-edge outlines by pixel centre reproduces the original mask
        window = Window(c0, r0, c1 - c0, r1 - r0)
        crop = rasterize(
            [geom], out_shape=(r1 - r0, c1 - c0), transform=window_transform(window, identity)
        )
        crop = crop.astype(bool)
        if not crop.any():
            continue
        ys, xs = np.nonzero(crop)
        row = gdf.iloc[i]
        ann: dict[str, Any] = {
            "id": len(annotations) + 1,
            "image_id": 1,
            "category_id": cat_id[str(row["class"])] if has_class else 1,
            "segmentation": encode_rle_crop(crop, c0, r0, width, height),
            "area": int(crop.sum()),
            "bbox": [
                float(c0 + xs.min()),
                float(r0 + ys.min()),
                float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1),
            ],
            "iscrowd": 0,
        }
        if "score" in gdf:
            ann["score"] = _json_value(row["score"])
        if extra:
            ann["attributes"] = {c: _json_value(row[c]) for c in extra}
        annotations.append(ann)
    image = {"id": 1, "file_name": Path(scene_info.path).name, "width": width, "height": height}
    info = {"description": "geoseg predictions", "crs_wkt": scene_info.crs_wkt}
    write_coco(tmp, [image], annotations, names, info=info, fsync=False)


def _write(
    gdf: geopandas.GeoDataFrame,
    tmp: Path,
    fmt: VectorFormat,
    *,
    layer: str,
    scene_info: SceneInfo | None,
    classes: Sequence[str] | None,
) -> None:
    """Write ``gdf`` to the temporary file ``tmp`` in ``fmt`` (``layer``: the layer name)."""
    if fmt is VectorFormat.GPKG or fmt is VectorFormat.FLATGEOBUF:
        _write_ogr(gdf, tmp, driver=str(fmt.driver), layer=layer)
    elif fmt is VectorFormat.GEOJSON:
        if gdf.crs is None:  # write_vectors refuses this first (check_output_crs)
            raise ExportError(f"{tmp.name}: GeoJSON needs objects with a CRS")
        out = gdf.to_crs(4326)
        _write_ogr(out, tmp, driver=str(fmt.driver), layer=layer, layer_options={"RFC7946": "YES"})
    elif fmt is VectorFormat.SHAPEFILE:
        cols = [str(c) for c in gdf.columns if c != gdf.geometry.name]
        renamed = _shapefile_columns(cols)
        if renamed:
            logger.info("%s: shapefile field names %s", tmp.name, renamed)
        _write_ogr(gdf.rename(columns=renamed), tmp, driver=str(fmt.driver), layer=None)
    elif fmt is VectorFormat.PARQUET:
        gdf.to_parquet(tmp)
    elif fmt is VectorFormat.COCO:
        if scene_info is None:  # pragma: no cover - write_vectors checks this first
            raise ExportError(f"{tmp.name}: COCO JSON needs scene_info")
        _write_coco(gdf, tmp, scene_info, classes)
    else:  # pragma: no cover - exhaustive
        raise ExportError(f"{tmp.name}: no writer for format {fmt}")


def check_output_crs(
    path: str | os.PathLike[str],
    crs: Any,
    *,
    fmt: VectorFormat | str | None = None,
    source: str = "the scene",
    bounds: tuple[float, float, float, float] | None = None,
) -> None:
    """Fail before any work when ``path``'s format cannot hold coordinates in ``crs``.

    GeoJSON (RFC 7946) is longitude/latitude: ``crs`` must exist and convert to WGS84 (with
    ``bounds``, ``(minx, miny, maxx, maxy)`` in ``crs``, the corners must convert to finite
    values). The other formats keep any CRS; with ``crs=None`` they hold the source's own
    (pixel) coordinates and a warning says so.

    Args:
        path: the output file (its extension picks the format unless ``fmt`` is given).
        crs: anything :class:`pyproj.CRS` accepts (WKT, EPSG code), or ``None``.
        fmt: the format, when not the extension's.
        source: what the coordinates belong to, for the message (e.g. the scene's path).
        bounds: an extent in ``crs`` that must convert to longitude/latitude.

    Raises:
        ExportError: naming the output and the source, with what to do instead.
    """
    p = as_target(path)
    kind = format_by_name(fmt) if fmt is not None else format_for_path(p)
    if crs is None:
        if kind is VectorFormat.GEOJSON:
            raise ExportError(
                f"{p}: {source} has no CRS, so its objects are in pixel coordinates, which "
                "GeoJSON (longitude/latitude) cannot hold; give the raster a CRS (e.g. "
                "gdal_edit.py -a_srs EPSG:xxxx) or write .gpkg, .fgb or .parquet (pixel "
                "coordinates, no CRS) or .json (COCO, pixels)"
            )
        if kind is not VectorFormat.COCO:
            logger.warning(  # one text for the early check and the write: said once
                "%s: no CRS, so the output holds pixel coordinates (without a CRS)", p
            )
        return
    if kind is not VectorFormat.GEOJSON:
        return
    from pyproj import CRS, Transformer
    from pyproj.exceptions import ProjError

    try:
        transformer = Transformer.from_crs(CRS.from_user_input(crs), 4326, always_xy=True)
        if bounds is not None:
            x0, y0, x1, y1 = bounds
            xs, ys = transformer.transform([x0, x1, x0, x1], [y0, y0, y1, y1], errcheck=True)
            if not all(math.isfinite(v) for v in (*xs, *ys)):
                raise ProjError("non-finite longitude/latitude")
    except (ProjError, ValueError, TypeError) as err:
        raise ExportError(
            f"{p}: the coordinates of {source} cannot be converted to longitude/latitude "
            f"({err}), which GeoJSON requires; write .gpkg, .fgb or .parquet (they keep the "
            "scene's CRS)"
        ) from err


def check_scene_output(path: str | os.PathLike[str], info: SceneInfo) -> None:
    """:func:`check_output_crs` for the objects of the scene ``info`` (its CRS and extent).

    Raises:
        ExportError: the output's format cannot hold the scene's coordinates.
    """
    corners = [info.transform @ (c, r) for c in (0, info.width) for r in (0, info.height)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    check_output_crs(
        path,
        info.crs_wkt,
        source=f"the scene {info.path}",
        bounds=(min(xs), min(ys), max(xs), max(ys)),
    )


def write_vectors(
    gdf: geopandas.GeoDataFrame,
    path: str | os.PathLike[str],
    *,
    fmt: VectorFormat | str | None = None,
    layer: str | None = None,
    scene_info: SceneInfo | None = None,
    classes: Sequence[str] | None = None,
) -> Target:
    """Write objects (e.g. from :func:`geoseg.vectorize.vectorize`) to ``path``, atomically.

    Args:
        gdf: polygons in the scene CRS with their attribute columns.
        path: output file; its extension picks the format (see the module docstring) unless
            ``fmt`` is given: ``.json`` is COCO, ``.geojson`` GeoJSON. Missing parent folders
            are created. An object-store URL (``s3://bucket/run/out.gpkg``) is written to a
            local temporary file and uploaded once, complete (:mod:`geoseg.storage`).
        fmt: force a format regardless of the extension (a :class:`VectorFormat` or a name
            such as ``"gpkg"`` or ``"shp"``).
        layer: layer name (default: the file stem); writing a layer into an existing
            GeoPackage replaces that layer and keeps the others. Ignored by Shapefile,
            GeoParquet and COCO.
        scene_info: the scene the objects come from; required for COCO JSON (its transform
            maps the polygons back to scene pixels, its size and file name describe the
            image).
        classes: COCO only: the model's class names; category id = index + 1 (default:
            ``gdf.attrs["classes"]``, set by :func:`~geoseg.vectorize.vectorize`, else the
            sorted class names). Classes of ``gdf`` not in the list get the next ids.

    Returns:
        The path written (a ``Path``, or the URL string).

    Raises:
        ExportError: unknown format, unwritable path, missing ``scene_info`` for COCO, or a
            failure inside the writer (the original error is chained).
    """
    p = as_target(path)
    fmt = format_by_name(fmt) if fmt is not None else format_for_path(p)
    if fmt is VectorFormat.COCO and scene_info is None:
        raise ExportError(
            f"{p}: {Path(p).suffix or 'this'} output is COCO instance JSON, written in scene "
            "pixels; "
            "pass scene_info= (the SceneInfo of the scene: its transform maps the polygons to "
            "pixels, its size and file name describe the image), or use the .geojson "
            "extension for GeoJSON"
        )
    check_writable(p, fmt=fmt)
    check_output_crs(p, gdf.crs, fmt=fmt, source="the objects")

    def write(tmp: Path) -> None:
        if fmt is VectorFormat.GPKG and layer is not None and isinstance(p, Path) and p.exists():
            shutil.copy2(p, tmp)  # add/replace one layer, keep the others
        _write(gdf, tmp, fmt, layer=layer or Path(p).stem, scene_info=scene_info, classes=classes)

    try:
        write_output(p, write, sidecars=fmt.sidecars)
    except GeosegError:
        raise
    except Exception as err:
        raise ExportError(f"{p}: could not write {fmt} output: {err}") from err
    logger.info("wrote %d objects to %s (%s)", len(gdf), p, fmt)
    return p


#: Side of the square windows :func:`write_id_raster` rasterises one at a time, in pixels.
ID_RASTER_BLOCK = 1024


def check_id_raster_path(path: str | os.PathLike[str]) -> None:
    """Fail early when the id raster (``--mask-raster``) cannot be written.

    Raises:
        ExportError: not a ``.tif``/``.tiff`` name, or a folder that cannot be written.
    """
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        raise ExportError(f"{p}: the instance-id raster is a GeoTIFF (COG); give a .tif file name")
    check_writable(p, fmt=VectorFormat.GPKG)  # fmt given: only the folder is checked


def write_id_raster(
    gdf: geopandas.GeoDataFrame,
    path: str | os.PathLike[str],
    scene_info: SceneInfo,
    *,
    id_column: str = "id",
    block: int = ID_RASTER_BLOCK,
) -> Path:
    """Write the objects' ids as a uint32 Cloud-Optimized GeoTIFF aligned with the scene.

    The raster has the scene's size, transform and CRS; a pixel holds the ``id_column`` value
    of the object whose outline contains the pixel's centre (for pixel-edge outlines: exactly
    the object's mask pixels), 0 (also the nodata value) elsewhere. Where outlines overlap,
    the smaller object is on top. It is rasterised window by window (``block`` px squares,
    only the outlines meeting each window), so memory does not grow with the scene; the COG
    (DEFLATE, 512 px blocks, nearest-neighbour overviews) is made from a scratch GeoTIFF and
    moved into place atomically.

    Args:
        gdf: outlines (polygons) in the scene CRS (another CRS is reprojected) with an
            integer ``id_column`` (1, 2, ...).
        path: the ``.tif`` to write.
        scene_info: the scene whose grid the raster follows.
        id_column: the column whose values are burnt.
        block: window side in pixels.

    Returns:
        The path written.

    Raises:
        ExportError: a bad path, ids that do not fit uint32 (below 1 or above 2**32 - 1), or a
            failure while writing.
    """
    import rasterio
    import rasterio.shutil
    import shapely
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from rasterio.windows import transform as window_transform

    p = Path(path)
    check_id_raster_path(p)
    ids = gdf[id_column].to_numpy(dtype=np.int64) if len(gdf) else np.zeros(0, np.int64)
    if len(ids) and (ids.min() < 1 or ids.max() > np.iinfo(np.uint32).max):
        raise ExportError(f"{p}: ids must be in [1, 2**32 - 1] to fit a uint32 raster")
    g = gdf
    if gdf.crs is not None and scene_info.crs_wkt is not None:
        from pyproj import CRS

        if not CRS.from_user_input(gdf.crs).equals(CRS.from_wkt(scene_info.crs_wkt)):
            g = gdf.to_crs(scene_info.crs_wkt)
    geoms = np.asarray(g.geometry.to_numpy(), dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms, ids = geoms[present], ids[present]
    # larger first, so that a smaller object overlapping it is burnt on top
    order = np.argsort(-shapely.area(geoms), kind="stable")
    geoms, ids = geoms[order], ids[order]
    tree = shapely.STRtree(geoms)
    width, height, transform = scene_info.width, scene_info.height, scene_info.transform
    size = max(16, int(block))
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint32",
        "nodata": 0,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if scene_info.crs_wkt is not None:
        profile["crs"] = scene_info.crs_wkt

    def write(tmp: Path) -> None:
        scratch = tmp.with_name(tmp.name + ".scratch.tif")
        try:
            with rasterio.open(scratch, "w", **profile) as dst:
                for row in range(0, height, size):
                    for col in range(0, width, size):
                        win = Window(col, row, min(size, width - col), min(size, height - row))
                        hits = np.sort(tree.query(shapely.box(*window_bounds(win, transform))))
                        if len(hits) == 0:
                            continue  # the scratch file's blocks read back as 0
                        burnt = rasterize(
                            zip(geoms[hits], ids[hits].tolist(), strict=True),
                            out_shape=(int(win.height), int(win.width)),
                            transform=window_transform(win, transform),
                            fill=0,
                            dtype="uint32",
                        )
                        dst.write(burnt, 1, window=win)
            rasterio.shutil.copy(
                scratch,
                tmp,
                driver="COG",
                COMPRESS="DEFLATE",
                PREDICTOR="2",
                BLOCKSIZE="512",
                OVERVIEW_RESAMPLING="NEAREST",
                BIGTIFF="IF_SAFER",
            )
        finally:
            scratch.unlink(missing_ok=True)

    try:
        atomic_write(p, write)
    except GeosegError:
        raise
    except Exception as err:
        raise ExportError(f"{p}: could not write the instance-id raster: {err}") from err
    logger.info("wrote the ids of %d objects to %s", len(ids), p)
    return p
