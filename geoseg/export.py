"""Writers for the vectorised objects: the format follows the output file's extension.

=================  =====================================  =======================================
format             extensions                             notes
=================  =====================================  =======================================
GeoPackage         ``.gpkg`` (the default)                 scene CRS; ``layer`` (default: the
                                                          file stem) replaces only that layer
GeoJSON            ``.geojson``, ``.json``                 RFC 7946: reprojected to WGS84
                                                          longitude/latitude, right-hand rings
ESRI Shapefile     ``.shp``                                field names cut to 10 characters
                                                          (:data:`SHAPEFILE_FIELD_NAMES`)
GeoParquet         ``.parquet``, ``.geoparquet``           scene CRS, GeoParquet metadata
FlatGeobuf         ``.fgb``                                scene CRS, with a spatial index
                                                          (features come back in its order)
COCO JSON          ``.coco.json``                          scene **pixels**; needs ``scene_info``
=================  =====================================  =======================================

Writes are atomic: everything is written into a temporary folder next to the output, then moved
into place with :func:`os.replace` (same file system), so a failed write leaves no partial file
and keeps an earlier file intact. A Shapefile's sidecars are moved first and the ``.shp`` last.
Call :func:`check_writable` before starting a long job: it fails at once, with
:class:`~geoseg.errors.ExportError`, on an unknown extension or an output that cannot be
written.

Mixed ``Polygon``/``MultiPolygon`` columns are written as ``MultiPolygon`` by the OGR formats
(GeoPackage, Shapefile, FlatGeobuf) where a layer needs one geometry type.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import ExportError, GeosegError
from geoseg.types import SceneInfo

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "SHAPEFILE_FIELD_NAMES",
    "VectorFormat",
    "check_writable",
    "coco_rle",
    "format_for_path",
    "write_vectors",
]

logger = logging.getLogger(__name__)


class VectorFormat(StrEnum):
    """Output vector formats (the value is a short name usable on a command line)."""

    GPKG = "gpkg"
    GEOJSON = "geojson"
    SHAPEFILE = "shapefile"
    PARQUET = "parquet"
    FLATGEOBUF = "flatgeobuf"
    COCO = "coco"


#: Extension -> format, longest first (``.coco.json`` before ``.json``).
_SUFFIXES: tuple[tuple[str, VectorFormat], ...] = (
    (".coco.json", VectorFormat.COCO),
    (".geoparquet", VectorFormat.PARQUET),
    (".geojson", VectorFormat.GEOJSON),
    (".parquet", VectorFormat.PARQUET),
    (".gpkg", VectorFormat.GPKG),
    (".json", VectorFormat.GEOJSON),
    (".shp", VectorFormat.SHAPEFILE),
    (".fgb", VectorFormat.FLATGEOBUF),
)

#: Shapefile (dBASE) field names are at most 10 characters: the standard columns that are
#: longer get these names; other long names are cut to 10 characters (and numbered if two
#: collide).
SHAPEFILE_FIELD_NAMES: dict[str, str] = {"heading_deg": "heading"}

_SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qpj")


def format_for_path(path: str | os.PathLike[str]) -> VectorFormat:
    """The format of an output path, from its extension (case-insensitive).

    Raises:
        ExportError: an extension geoseg cannot write.
    """
    name = Path(path).name.lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    known = ", ".join(s for s, _ in _SUFFIXES)
    raise ExportError(
        f"{os.fspath(path)}: unknown output format; use one of these extensions: {known}"
    )


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: str | os.PathLike[str], *, fmt: VectorFormat | None = None) -> None:
    """Fail early if ``path`` cannot be written (call before any expensive work).

    Checks that the extension is known (unless ``fmt`` is given), that the path is not a
    folder, and that a file can be created in its folder (or, when the folder does not exist
    yet, in its nearest existing ancestor, where :func:`write_vectors` would create it).
    Leaves nothing behind.

    Raises:
        ExportError: naming the path and what to do.
    """
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{p}: is a folder; give an output file name such as {p / 'out.gpkg'}")
    if fmt is None:
        format_for_path(p)
    folder = _existing_ancestor(p.parent.absolute())
    if not folder.is_dir():
        raise ExportError(f"{p}: {folder} is not a folder; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".geoseg-write-check-", dir=folder)
    except OSError as err:
        raise ExportError(
            f"{p}: cannot write in {folder} ({err.strerror or err}); choose a writable output path"
        ) from err
    os.close(fd)
    os.unlink(probe)


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
    import pyogrio

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


def coco_rle(
    mask: npt.NDArray[np.bool_], col: int, row: int, width: int, height: int
) -> dict[str, Any]:
    """COCO compressed RLE of a box-cropped mask placed in a ``width x height`` image.

    Runs are computed from the crop (column-major over the whole image, as COCO defines them)
    without allocating an image-sized array.

    Args:
        mask: bool ``[h, w]`` cropped mask, inside the image.
        col: scene-pixel column of the mask's left edge.
        row: scene-pixel row of the mask's top edge.
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


def _json_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, np.integer):
        return int(v)
    return v


def _write_coco(gdf: geopandas.GeoDataFrame, tmp: Path, scene_info: SceneInfo) -> None:
    """COCO instance JSON in scene pixels: one image, RLE masks (holes kept), scores."""
    from rasterio.features import rasterize

    width, height = scene_info.width, scene_info.height
    names = sorted({str(c) for c in gdf["class"]}) if "class" in gdf else []
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    extra = [c for c in ("area_m2", "length_m", "width_m", "heading_deg") if c in gdf]
    annotations: list[dict[str, Any]] = []
    for i, geom in enumerate(_to_pixels(gdf, scene_info)):
        if geom is None or geom.is_empty:
            continue
        x0, y0, x1, y1 = geom.bounds
        c0, r0 = max(math.floor(x0 + 1e-6), 0), max(math.floor(y0 + 1e-6), 0)
        c1, r1 = min(math.ceil(x1 - 1e-6), width), min(math.ceil(y1 - 1e-6), height)
        if c1 <= c0 or r1 <= r0:
            continue
        # rasterising pixel-edge outlines by pixel centre reproduces the original mask
        crop = rasterize([geom], out_shape=(r1 - r0, c1 - c0), transform=_translation(c0, r0))
        crop = crop.astype(bool)
        if not crop.any():
            continue
        ys, xs = np.nonzero(crop)
        row = gdf.iloc[i]
        ann: dict[str, Any] = {
            "id": len(annotations) + 1,
            "image_id": 1,
            "category_id": cat_id[str(row["class"])] if names else 1,
            "segmentation": coco_rle(crop, c0, r0, width, height),
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
    doc = {
        "info": {"description": "geoseg predictions", "crs_wkt": scene_info.crs_wkt},
        "images": [
            {"id": 1, "file_name": Path(scene_info.path).name, "width": width, "height": height}
        ],
        "categories": [{"id": cat_id[n], "name": n} for n in names]
        or [{"id": 1, "name": "object"}],
        "annotations": annotations,
    }
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)


def _translation(col: int, row: int) -> Any:
    from affine import Affine

    return Affine(1.0, 0.0, float(col), 0.0, 1.0, float(row))


def _write(
    gdf: geopandas.GeoDataFrame,
    tmp: Path,
    fmt: VectorFormat,
    *,
    layer: str | None,
    scene_info: SceneInfo | None,
) -> None:
    if fmt is VectorFormat.GPKG:
        _write_ogr(gdf, tmp, driver="GPKG", layer=layer or tmp.stem)
    elif fmt is VectorFormat.GEOJSON:
        out = gdf
        if gdf.crs is None:
            logger.warning(
                "%s: the objects have no CRS, so the GeoJSON holds scene-pixel coordinates, "
                "not RFC 7946 longitude/latitude",
                tmp.name,
            )
        else:
            out = gdf.to_crs(4326)
        _write_ogr(out, tmp, driver="GeoJSON", layer=layer, layer_options={"RFC7946": "YES"})
    elif fmt is VectorFormat.SHAPEFILE:
        cols = [str(c) for c in gdf.columns if c != gdf.geometry.name]
        renamed = _shapefile_columns(cols)
        if renamed:
            logger.info("%s: shapefile field names %s", tmp.name, renamed)
        _write_ogr(gdf.rename(columns=renamed), tmp, driver="ESRI Shapefile", layer=None)
    elif fmt is VectorFormat.FLATGEOBUF:
        _write_ogr(gdf, tmp, driver="FlatGeobuf", layer=layer)
    elif fmt is VectorFormat.PARQUET:
        gdf.to_parquet(tmp)
    elif fmt is VectorFormat.COCO:
        if scene_info is None:
            raise ExportError(
                f"{tmp.name}: COCO JSON is written in scene pixels; pass scene_info= (the "
                "SceneInfo of the scene) so the polygons can be mapped back to pixels"
            )
        _write_coco(gdf, tmp, scene_info)
    else:  # pragma: no cover - exhaustive
        raise ExportError(f"{tmp.name}: no writer for format {fmt}")


def write_vectors(
    gdf: geopandas.GeoDataFrame,
    path: str | os.PathLike[str],
    *,
    fmt: VectorFormat | None = None,
    layer: str | None = None,
    scene_info: SceneInfo | None = None,
) -> Path:
    """Write objects (e.g. from :func:`geoseg.vectorize.vectorize`) to ``path``, atomically.

    Args:
        gdf: polygons in the scene CRS with their attribute columns.
        path: output file; its extension picks the format (see the module docstring) unless
            ``fmt`` is given. Missing parent folders are created.
        fmt: force a format regardless of the extension.
        layer: GeoPackage layer name (default: the file stem); writing a layer into an
            existing GeoPackage replaces that layer and keeps the others. Ignored by
            single-layer formats.
        scene_info: the scene the objects come from; required for COCO JSON (its transform
            maps the polygons back to scene pixels, its size sizes the image).

    Returns:
        The path written.

    Raises:
        ExportError: unknown format, unwritable path, missing ``scene_info`` for COCO, or a
            failure inside the writer (the original error is chained).
    """
    p = Path(path)
    fmt = VectorFormat(fmt) if fmt is not None else format_for_path(p)
    check_writable(p, fmt=fmt)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
    try:
        tmp = tmpdir / p.name
        if fmt is VectorFormat.GPKG and layer is not None and p.exists():
            shutil.copy2(p, tmp)  # add/replace one layer, keep the others
        _write(gdf, tmp, fmt, layer=layer, scene_info=scene_info)
        produced = sorted(tmpdir.iterdir(), key=lambda f: f.suffix.lower() == ".shp")
        if not produced:
            raise ExportError(f"{p}: the {fmt} writer produced no file")
        if fmt is VectorFormat.SHAPEFILE:
            names = {f.name for f in produced}
            for ext in _SHAPEFILE_SIDECARS:
                stale = p.with_suffix(ext)
                if stale.name not in names and stale.exists():
                    stale.unlink()
        for f in produced:
            os.replace(f, p.parent / f.name)
    except GeosegError:
        raise
    except Exception as err:
        raise ExportError(f"{p}: could not write {fmt} output: {err}") from err
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    logger.info("wrote %d objects to %s (%s)", len(gdf), p, fmt)
    return p
