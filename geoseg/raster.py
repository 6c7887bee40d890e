"""Opening, validating and reading scenes: the first stage of the pipeline.

:func:`open_scene` opens any path GDAL reads (GeoTIFF, COG, VRT, ``/vsicurl/`` URLs...), checks
that it can be used and describes it as a :class:`~geoseg.types.SceneInfo` without reading its
pixels. :func:`compute_norm_stats` computes the scene-wide per-band percentile stretch once per
scene, and :func:`read_window` reads one boundless window of pixels plus its valid-pixel mask.

Decisions:

* **Rotated or sheared geotransforms are refused** with :class:`UnsupportedTransformError`
  (tiles, stitching and vectorisation assume axis-aligned pixels). Resample the scene to
  north-up first, e.g. ``gdalwarp in.tif out.tif``. Rasters georeferenced only by GCPs are
  refused the same way.
* **No CRS** is allowed: a :class:`NoCRSWarning` is issued and logged, ``SceneInfo.crs_wkt`` is
  ``None``, and later stages mark their outputs as scene-pixel coordinates.
* **Geographic CRS** is allowed; :func:`ground_sample_distance_m` converts degrees to metres at
  the scene centre so that metre-based sizes are right.
* **Resampled reads**: :func:`read_window` and :func:`read_window_raw` take an ``out_shape`` and
  let GDAL resample the window while reading it (average when shrinking, bilinear when
  enlarging, the valid mask nearest; nodata and masked pixels are left out of the averages), so
  a scene is read at a model's ground resolution tile by tile, without warping it whole or
  writing a copy (GDAL may serve such a read from an overview of at least the requested
  resolution). :func:`gsd_scale` decides whether a scene needs it (more than
  :data:`GSD_TOLERANCE` from the working GSD).
* **Normalisation** is a per-band linear stretch between two percentiles of the *whole scene*
  (from overviews or a sample of windows, nodata and NaN excluded), never per tile. Every scene
  gets its own statistics by default; pass a saved :class:`~geoseg.types.NormStats` (e.g. the one
  stored with a model) to normalise prediction exactly as training did.
* **Valid pixels** follow GDAL's dataset-mask convention: with a nodata value a pixel is invalid
  when *all* selected bands equal it; internal masks/alpha bands are used when present; NaN in
  any band makes a pixel invalid; padding outside the scene is invalid.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geoseg.errors import (
    BandError,
    ConfigError,
    RasterReadError,
    UnsupportedTransformError,
)
from geoseg.types import NormStats, PixelWindow, SceneInfo

__all__ = [
    "FROM_DATASET",
    "GSD_TOLERANCE",
    "BufferPool",
    "NoCRSWarning",
    "StatsSource",
    "compute_norm_stats",
    "gdal_env",
    "ground_sample_distance_m",
    "gsd_scale",
    "open_scene",
    "read_window",
    "read_window_raw",
    "resampling_for",
    "validate_bands",
]

logger = logging.getLogger(__name__)

#: Default sample budget of :func:`compute_norm_stats`, in pixels per band.
DEFAULT_STATS_PIXELS: Final = 1 << 20

#: Relative difference between a scene's pixel size and the working one (the model's) up to
#: which the scene is read as it is (:func:`gsd_scale`): 10 %, less than the spread of the
#: nominal GSDs of one sensor's products, and a scale the models take in their stride.
GSD_TOLERANCE: Final = 0.10


class NoCRSWarning(UserWarning):
    """The scene has no CRS: outputs will be in scene-pixel coordinates."""


class StatsSource(enum.StrEnum):
    """Where :func:`compute_norm_stats` takes its pixels from.

    ``AUTO`` reads the whole scene when it is small, else the best fitting overview when the
    scene has overviews, else a seeded sample of windows spread over the scene.
    """

    AUTO = "auto"
    OVERVIEWS = "overviews"
    SAMPLE = "sample"
    FULL = "full"


class _FromDataset(enum.Enum):
    TOKEN = 0


#: Default of :func:`read_window`'s ``nodata``: use the dataset's own nodata value.
FROM_DATASET: Final = _FromDataset.TOKEN


def _is_remote(path: str) -> bool:
    return path.startswith("/vsi") or "://" in path


def gdal_env(
    *, num_threads: int | Literal["ALL_CPUS"] | None = None, cache_mb: int | None = None
) -> rasterio.Env:
    """Return a :class:`rasterio.Env` with geoseg's reading options.

    Args:
        num_threads: ``GDAL_NUM_THREADS`` for multithreaded decoding of compressed blocks
            (an int or ``"ALL_CPUS"``); ``None`` leaves GDAL's default (one thread).
        cache_mb: ``GDAL_CACHEMAX`` in MiB; bounding the block cache keeps memory independent of
            the scene size. ``None`` leaves GDAL's default (5 % of RAM).

    Returns:
        A context manager; use as ``with gdal_env(num_threads=4): ...``.
    """
    options: dict[str, Any] = {}
    if num_threads is not None:
        options["GDAL_NUM_THREADS"] = str(num_threads)
    if cache_mb is not None:
        options["GDAL_CACHEMAX"] = int(cache_mb) * 1024 * 1024
    return rasterio.Env(**options)


def _check_transform(ds: Any, path: str) -> None:
    t = ds.transform
    if t.b != 0.0 or t.d != 0.0:
        raise UnsupportedTransformError(
            f"{path}: the geotransform is rotated or sheared ({tuple(t)[:6]}); geoseg needs "
            "north-up, axis-aligned pixels. Resample it first, e.g. "
            f"`gdalwarp {path} north_up.tif`."
        )
    if t.a == 0.0 or t.e == 0.0:
        raise UnsupportedTransformError(f"{path}: the geotransform has a zero pixel size ({t}).")
    gcps, _ = ds.gcps
    if ds.crs is None and gcps:
        raise UnsupportedTransformError(
            f"{path}: georeferenced only by ground control points; warp it to a regular grid "
            f"first, e.g. `gdalwarp {path} north_up.tif`."
        )


def _probe_last_block(ds: Any, path: str) -> None:
    """Read the last block of the last band: a truncated file fails here, not mid-run."""
    rows, cols = ds.block_shapes[-1]
    r0 = ((ds.height - 1) // rows) * rows
    c0 = ((ds.width - 1) // cols) * cols
    window = Window(c0, r0, min(cols, ds.width - c0), min(rows, ds.height - r0))
    ds.read(ds.count, window=window)


def open_scene(path: str | os.PathLike[str], *, check_readable: bool = True) -> SceneInfo:
    """Open, validate and describe a raster without reading its pixels.

    Args:
        path: anything GDAL opens: a GeoTIFF/COG/VRT file, a ``/vsicurl/https://...`` URL, ...
        check_readable: also read the last block of the last band, so that a truncated or
            corrupt file fails here with a clear message instead of in the middle of a run.

    Returns:
        The scene's description (size, bands, dtype, CRS, transform from scene pixels to scene
        CRS, nodata, internal block shape, overviews, driver).

    Raises:
        RasterReadError: the path does not exist, is not a raster, has no bands, or is
            truncated/unreadable.
        UnsupportedTransformError: the geotransform is rotated/sheared or GCP-only.

    Warns:
        NoCRSWarning: the raster has no CRS (outputs will be in scene-pixel coordinates).
    """
    path_str = os.fspath(path)
    if not _is_remote(path_str) and not os.path.exists(path_str):
        raise RasterReadError(f"{path_str}: no such file; check the path.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path_str) as ds:
                if ds.count == 0:
                    raise RasterReadError(
                        f"{path_str}: has no raster bands (is it a vector file or a container "
                        "of subdatasets? open one subdataset instead)."
                    )
                _check_transform(ds, path_str)
                if check_readable:
                    _probe_last_block(ds, path_str)
                dtypes = set(ds.dtypes)
                dtype = (
                    ds.dtypes[0]
                    if len(dtypes) == 1
                    else np.result_type(*[np.dtype(d) for d in ds.dtypes]).name
                )
                info = SceneInfo(
                    path=path_str,
                    width=int(ds.width),
                    height=int(ds.height),
                    count=int(ds.count),
                    dtype=str(dtype),
                    crs_wkt=ds.crs.to_wkt() if ds.crs is not None else None,
                    transform=ds.transform,
                    nodata=None if ds.nodata is None else float(ds.nodata),
                    block_shape=(int(ds.block_shapes[0][0]), int(ds.block_shapes[0][1])),
                    overviews=tuple(int(f) for f in ds.overviews(1)),
                    driver=str(ds.driver),
                )
    except RasterioError as err:
        cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
        raise RasterReadError(
            f"{path_str}: cannot be read as a raster: {err}{cause}. Check that it is a complete "
            "GeoTIFF/COG/VRT (or another format GDAL reads) and that the URL is reachable."
        ) from err
    if info.crs_wkt is None:
        msg = (
            f"{path_str}: the raster has no CRS; outputs will be in scene-pixel coordinates. "
            "Assign one with `gdal_edit.py -a_srs EPSG:xxxx` if it should be georeferenced."
        )
        logger.warning(msg)
        warnings.warn(msg, NoCRSWarning, stacklevel=2)
    logger.debug("opened %s: %s", path_str, info)
    return info


def validate_bands(info: SceneInfo, bands: Sequence[int] | None) -> tuple[int, ...]:
    """Check 1-based band indexes against a scene.

    Args:
        info: the scene.
        bands: 1-based band indexes in model-input order (e.g. ``(3, 2, 1)``), or ``None`` for
            all bands in file order.

    Returns:
        The band indexes as a tuple.

    Raises:
        BandError: an index does not exist in the scene, or ``bands`` is empty.
    """
    if bands is None:
        return tuple(range(1, info.count + 1))
    sel = tuple(int(b) for b in bands)
    if not sel:
        raise BandError(f"{info.path}: no bands selected; give at least one band, e.g. 1")
    bad = [b for b in sel if not 1 <= b <= info.count]
    if bad:
        # as many bands as asked for (the model's count), from those the scene has: a one-band
        # scene for a 3-band model gives 1,1,1 (the grey band fed as each input band)
        have = list(range(1, info.count + 1))[: len(sel)]
        example = have + have[-1:] * (len(sel) - len(have))
        raise BandError(
            f"{info.path}: band(s) {bad} do not exist; the scene has {info.count} band(s), "
            f"numbered 1..{info.count}. Choose {len(sel)} band(s) in that range (e.g. --bands "
            f"{','.join(map(str, example))})."
        )
    return sel


def ground_sample_distance_m(info: SceneInfo) -> tuple[float, float]:
    """Pixel size ``(x, y)`` in metres.

    Projected CRS: the transform's pixel size times the CRS unit in metres. Geographic CRS and
    Web Mercator (whose units are metres only at the equator, see
    :func:`geoseg.geometry.metres_per_unit`): the geodesic length of one pixel step at the
    scene centre.

    Raises:
        ConfigError: the scene has no CRS, so metres are unknown (give sizes in pixels).
    """
    if info.crs_wkt is None:
        raise ConfigError(
            f"{info.path}: the scene has no CRS, so its pixel size in metres is unknown; "
            "give sizes in pixels instead."
        )
    from pyproj import CRS, Transformer

    from geoseg.geometry import metres_per_unit

    crs = CRS.from_wkt(info.crs_wkt)
    gx, gy = info.gsd
    factor = metres_per_unit(crs)
    if factor is None:  # geographic or Web Mercator: measure on the ellipsoid
        geod = crs.get_geod()
        if geod is None:  # pragma: no cover - every such CRS has an ellipsoid
            raise ConfigError(f"{info.path}: the CRS has no ellipsoid; cannot measure metres")
        t = info.transform
        x = t.a * info.width / 2.0 + t.b * info.height / 2.0 + t.c
        y = t.d * info.width / 2.0 + t.e * info.height / 2.0 + t.f
        to_geo = Transformer.from_crs(crs, crs.geodetic_crs or crs, always_xy=True)
        lon, lat = to_geo.transform([x, x + gx, x], [y, y, y + gy])
        _, _, dx = geod.inv(lon[0], lat[0], lon[1], lat[1])
        _, _, dy = geod.inv(lon[0], lat[0], lon[2], lat[2])
        return (float(dx), float(dy))
    return (gx * factor, gy * factor)


def _all_equal(data: npt.NDArray[Any], value: float) -> npt.NDArray[np.bool_] | None:
    """Bool ``[h, w]``: all bands equal ``value``; ``None`` when no pixel does (cheap exit)."""
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        if not (info.min <= value <= info.max and float(value).is_integer()):
            return None  # nodata not representable in this dtype: no pixel can equal it
    v = data.dtype.type(value)
    if math.isnan(value):
        out = np.isnan(data[0])
        if not out.any():
            return None
        for band in data[1:]:
            out &= np.isnan(band)
        return out
    out = data[0] == v
    if not out.any():
        return None
    for band in data[1:]:
        out &= band == v
    return out


def _valid_from_data(data: npt.NDArray[Any], nodata: float | None) -> npt.NDArray[np.bool_] | None:
    """Valid mask ``[h, w]`` from nodata/NaN, or ``None`` when every pixel is valid."""
    invalid: npt.NDArray[np.bool_] | None = None
    if nodata is not None and (data.dtype.kind == "f" or not math.isnan(nodata)):
        invalid = _all_equal(data, nodata)
    if data.dtype.kind == "f":
        nan = np.isnan(data).any(axis=0)
        if nan.any():
            invalid = nan if invalid is None else invalid | nan
    if invalid is None or not invalid.any():
        return None
    return ~invalid


def _uses_mask_band(ds: Any, bands: Sequence[int]) -> bool:
    flags = ds.mask_flag_enums[bands[0] - 1]
    return MaskFlags.per_dataset in flags or MaskFlags.alpha in flags


def _stretch(data: npt.NDArray[Any], stats: NormStats, out: npt.NDArray[np.float32]) -> None:
    """``out[:] = stats.apply(data)`` without intermediate copies (:meth:`NormStats.stretch`)."""
    stats.stretch(data, out)


def gsd_scale(
    scene_gsd: tuple[float, float], working_gsd: float, *, tolerance: float = GSD_TOLERANCE
) -> tuple[float, float] | None:
    """Working pixels per scene pixel along x and y, or ``None`` when no resampling is due.

    Args:
        scene_gsd: the scene's pixel size ``(x, y)`` in metres
            (:func:`ground_sample_distance_m`).
        working_gsd: the pixel size to work at, in metres (e.g. the model's).
        tolerance: relative difference up to which the scene is read as it is.

    Returns:
        ``(scene_gsd[0] / working_gsd, scene_gsd[1] / working_gsd)``: e.g. ``(0.6, 0.6)`` for a
        0.3 m scene and a 0.5 m model (a window of 100 scene pixels becomes 60 working pixels);
        ``None`` when both ratios are within ``tolerance`` of 1.

    Raises:
        ConfigError: a pixel size that is not a positive number.

    Example:
        >>> gsd_scale((0.3, 0.3), 0.5)
        (0.6, 0.6)
        >>> gsd_scale((0.52, 0.48), 0.5) is None
        True
    """
    if not (working_gsd > 0 and math.isfinite(working_gsd)):
        raise ConfigError(f"a GSD must be a positive number of metres, got {working_gsd}")
    if not all(g > 0 and math.isfinite(g) for g in scene_gsd):
        raise ConfigError(f"a scene pixel size must be positive, got {scene_gsd}")
    rx, ry = scene_gsd[0] / working_gsd, scene_gsd[1] / working_gsd
    if abs(rx - 1.0) <= tolerance and abs(ry - 1.0) <= tolerance:
        return None
    return (rx, ry)


def resampling_for(window_shape: tuple[int, int], out_shape: tuple[int, int]) -> Resampling:
    """GDAL resampling for reading a window of ``window_shape`` into ``out_shape`` pixels.

    ``average`` when the output is smaller along both axes (every source pixel counts, no
    aliasing), else ``bilinear``. Shapes are ``(height, width)``.
    """
    if out_shape[0] < window_shape[0] and out_shape[1] < window_shape[1]:
        return Resampling.average
    return Resampling.bilinear


class BufferPool:
    """Arrays for tile reads, reused once nothing outside the pool refers to them any more.

    A reader hands each tile out in a buffer from the pool; when the consumer has dropped the
    tile (and every view of its arrays, or tensor made with ``torch.from_numpy``, which all
    hold a reference), the buffer's reference count falls back to the pool's own and the next
    read writes into it. So a loop that consumes tiles one by one (or a batch at a time) keeps
    reusing the same few arrays, whose pages stay mapped, instead of paying the allocator and
    the page faults of a fresh 3 MiB float32 array per 512 px tile; a consumer that keeps
    every tile simply gets fresh arrays. The reuse test is CPython's reference count
    (:func:`sys.getrefcount`), exact there.

    Args:
        size: at most this many arrays are kept (per pool); beyond them arrays are fresh.
    """

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._arrays: list[npt.NDArray[Any]] = []

    def get(self, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """An array of ``shape`` and ``dtype``, uninitialised, that no one else references."""
        dt = np.dtype(dtype)
        for buf in self._arrays:
            # references: the list, ``buf`` and getrefcount's argument
            if buf.shape == shape and buf.dtype == dt and sys.getrefcount(buf) <= 3:
                return buf
        buf = np.empty(shape, dtype=dt)
        if len(self._arrays) < self._size:
            self._arrays.append(buf)
        return buf


def _read_inner(
    dataset: Any,
    source: Window,
    sel: tuple[int, ...],
    nodata: float | None,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling = Resampling.nearest,
    pool: BufferPool | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_] | None]:
    """Raw pixels ``[C, h, w]`` of an in-scene window and its valid mask (``None``: all valid).

    ``source`` is in scene pixels (fractional offsets and sizes allowed when resampling);
    ``out_shape`` ``(h, w)`` resamples it with ``resampling`` (``None``: the window's own size).
    GDAL's resampling skips nodata and masked source pixels; the mask is resampled nearest.
    With a ``pool`` the pixels are read into one of its buffers.
    """
    try:
        if out_shape is None:
            if pool is None:
                data = dataset.read(sel, window=source)
            else:
                shape = (len(sel), round(source.height), round(source.width))
                data = pool.get(shape, dataset.dtypes[sel[0] - 1])
                data = dataset.read(sel, window=source, out=data)
        else:
            data = dataset.read(
                sel, window=source, out_shape=(len(sel), *out_shape), resampling=resampling
            )
        mask_valid: npt.NDArray[np.bool_] | None
        if _uses_mask_band(dataset, sel):
            extra = {} if out_shape is None else {"out_shape": out_shape}
            mask_valid = (
                dataset.read_masks(sel[0], window=source, resampling=Resampling.nearest, **extra)
                > 0
            )
        else:
            mask_valid = _valid_from_data(data, nodata)
    except RasterioError as err:
        raise RasterReadError(
            f"{dataset.name}: reading window {source} failed: {err} ({err.__cause__}). The file "
            "may be truncated or corrupt, or the connection was lost."
        ) from err
    return data, mask_valid


def _axis_placement(
    off: int, size: int, out: int, length: int
) -> tuple[int, int, float, float] | None:
    """One axis of :func:`_placement`: output pixels ``[i0, i1)`` and source span ``[s0, s1)``.

    The output pixels kept are those whose centres lie inside ``[0, length)``; their source
    span is clamped to the scene (at most half an output pixel at a scene edge).
    """
    step = size / out
    a, b = max(0, off) - off, min(length, off + size) - off
    if b <= a:
        return None
    i0 = min(out, max(0, math.ceil(a / step - 0.5)))
    i1 = min(out, max(0, math.ceil(b / step - 0.5)))
    if i1 <= i0:
        return None
    return i0, i1, max(0.0, off + i0 * step), min(float(length), off + i1 * step)


def _placement(
    window: PixelWindow, out_shape: tuple[int, int] | None, width: int, height: int
) -> tuple[slice, slice, Window, tuple[int, int] | None] | None:
    """Where the in-scene part of ``window`` lands in the output, and what is read to fill it.

    Returns:
        ``(ys, xs, source, sub_shape)``: the output rows and columns that get scene pixels, the
        source window in scene pixels (fractional when resampling) and the shape it is read
        into (``None``: its own size); ``None`` when no output pixel lies inside the scene.
    """
    if out_shape is None:
        inner = window.intersection(PixelWindow(0, 0, width, height))
        if inner.area == 0:
            return None
        ys = slice(inner.row_off - window.row_off, inner.row_end - window.row_off)
        xs = slice(inner.col_off - window.col_off, inner.col_end - window.col_off)
        return ys, xs, inner.to_rasterio(), None
    y = _axis_placement(window.row_off, window.height, out_shape[0], height)
    x = _axis_placement(window.col_off, window.width, out_shape[1], width)
    if y is None or x is None:
        return None
    source = Window(x[2], y[2], x[3] - x[2], y[3] - y[2])
    return slice(y[0], y[1]), slice(x[0], x[1]), source, (y[1] - y[0], x[1] - x[0])


def _out_shape(
    window: PixelWindow, out_shape: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(output shape, out_shape or None when it equals the window's own size)``."""
    if out_shape is None:
        return (window.height, window.width), None
    shape = (int(out_shape[0]), int(out_shape[1]))
    if min(shape) < 1:
        raise ConfigError(f"out_shape must be positive, got {out_shape}")
    return shape, (None if shape == (window.height, window.width) else shape)


def _read_placed(
    dataset: Any,
    window: PixelWindow,
    sel: tuple[int, ...],
    nd: float | None,
    out_shape: tuple[int, int] | None,
    resampling: Resampling | None,
    pool: BufferPool | None = None,
) -> tuple[
    tuple[int, int],
    tuple[slice, slice, npt.NDArray[Any], npt.NDArray[np.bool_] | None] | None,
]:
    """The part of ``window`` that lies on the scene, read (and resampled), for both readers.

    Returns:
        ``((h, w), read)``: the output size (the window's, or ``out_shape``) and either
        ``None`` (the window misses the scene) or ``(ys, xs, data, mask_valid)``: where the
        read pixels go in the ``[h, w]`` output, the raw pixels ``[C, len(ys), len(xs)]`` in
        the dataset's dtype, and their valid mask (``None``: all valid).
    """
    (h, w), rs_shape = _out_shape(window, out_shape)
    if rs_shape is not None and resampling is None:
        resampling = resampling_for((window.height, window.width), rs_shape)
    rs = Resampling.nearest if resampling is None else resampling
    place = _placement(window, rs_shape, int(dataset.width), int(dataset.height))
    if place is None:
        return (h, w), None
    ys, xs, source, sub_shape = place
    data, mask_valid = _read_inner(dataset, source, sel, nd, sub_shape, rs, pool)
    return (h, w), (ys, xs, data, mask_valid)


def read_window_raw(
    dataset: Any,
    window: PixelWindow,
    *,
    bands: Sequence[int],
    nodata: float | Literal[_FromDataset.TOKEN] | None = FROM_DATASET,
    fill: float | None = None,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling | None = None,
    pool: BufferPool | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Read one window of an open dataset in its own dtype, boundless.

    What training chips are cut from, and what :func:`geoseg.tiling.read_tiles` puts in a
    :class:`~geoseg.types.Tile` (``raw``, normalised later, e.g. in the model's batch).

    Args:
        dataset: an open :class:`rasterio.DatasetReader`.
        window: the window in scene pixels; it may extend past the scene (padding).
        bands: 1-based band indexes, in output-channel order.
        nodata: the nodata value; by default the dataset's own. ``None`` = no nodata value.
        fill: value of padding pixels; by default the nodata value, else 0.
        out_shape: ``(h, w)`` to resample the window to (see :func:`read_window`); ``None``:
            the window's own size.
        resampling: GDAL resampling of the pixels; ``None``: :func:`resampling_for`.
        pool: read into (and return) buffers of this :class:`BufferPool` when the window lies
            inside the scene, reused once the caller has dropped earlier results (a padded
            window gets fresh arrays); ``None``: fresh arrays.

    Returns:
        ``(data, valid)``: data ``[C, h, w]`` (the window's size, or ``out_shape``) in the
        dataset's dtype, raw (nodata pixels keep their value); valid bool ``[h, w]`` as in
        :func:`read_window`.

    Raises:
        RasterReadError: the read failed.
    """
    sel = tuple(bands)
    nd = dataset.nodata if nodata is FROM_DATASET else nodata
    if fill is None:
        fill = 0.0 if nd is None else nd
    dtype = np.dtype(dataset.dtypes[sel[0] - 1])
    (h, w), read = _read_placed(dataset, window, sel, nd, out_shape, resampling, pool)
    if read is None:
        return np.full((len(sel), h, w), fill, dtype=dtype), np.zeros((h, w), dtype=np.bool_)
    ys, xs, data, mask_valid = read
    if (ys.start, ys.stop, xs.start, xs.stop) == (0, h, 0, w):
        if mask_valid is not None:
            return data, mask_valid
        if pool is None:
            return data, np.ones((h, w), np.bool_)
        valid_all = pool.get((h, w), np.bool_)
        valid_all.fill(True)
        return data, valid_all
    out = np.full((len(sel), h, w), fill, dtype=dtype)
    valid = np.zeros((h, w), dtype=np.bool_)
    out[:, ys, xs] = data
    valid[ys, xs] = True if mask_valid is None else mask_valid
    return out, valid


def read_window(
    dataset: Any,
    window: PixelWindow,
    *,
    bands: Sequence[int],
    stats: NormStats | None,
    nodata: float | Literal[_FromDataset.TOKEN] | None = FROM_DATASET,
    out_shape: tuple[int, int] | None = None,
    resampling: Resampling | None = None,
    pool: BufferPool | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Read one window of an open dataset, boundless, optionally resampled.

    With ``out_shape``, GDAL resamples the window while reading it (no full-resolution copy):
    output pixel ``(i, j)`` covers scene pixels ``[window.col_off + j * sx, ... + (j + 1) *
    sx)`` with ``sx = window.width / out_shape[1]`` (``sy`` likewise), so the window's
    transform composed with ``Affine.scale(sx, sy)`` georeferences the output. The valid mask
    is resampled nearest; nodata and masked source pixels are left out of the resampling.
    Output pixels whose centres lie outside the scene are padding.

    Args:
        dataset: an open :class:`rasterio.DatasetReader`.
        window: the window in scene pixels; it may extend past the scene (padding).
        bands: 1-based band indexes, in output-channel order.
        stats: scene-wide statistics to stretch the pixels to [0, 1] (``stats.bands`` must equal
            ``bands``), or ``None`` to return raw values as float32.
        nodata: the nodata value; by default the dataset's own. ``None`` = no nodata value.
        out_shape: ``(h, w)`` of the output in resampled pixels; ``None``: the window's size.
        resampling: GDAL resampling of the pixels; ``None``: :func:`resampling_for` (average
            when shrinking, bilinear when enlarging).
        pool: read into (and return) buffers of this :class:`BufferPool`, reused once the
            caller has dropped earlier results; ``None``: fresh arrays.

    Returns:
        ``(image, valid)``: image float32 ``[C, h, w]`` (C = len(bands); ``h, w`` the window's
        height and width, or ``out_shape``), normalised when ``stats`` is given; valid bool
        ``[h, w]``, True where the pixel lies inside the scene and is not nodata/masked/NaN.
        Invalid pixels are 0 in ``image``.

    Raises:
        BandError: ``stats`` belongs to other bands.
        ConfigError: a non-positive ``out_shape``.
        RasterReadError: the read failed (corrupt block, lost connection...).
    """
    sel = tuple(bands)
    if stats is not None and tuple(stats.bands) != sel:
        raise BandError(
            f"{dataset.name}: normalisation statistics are for bands {stats.bands} but bands "
            f"{sel} were requested; pass matching bands or recompute the statistics."
        )
    nd = dataset.nodata if nodata is FROM_DATASET else nodata
    (h, w), read = _read_placed(dataset, window, sel, nd, out_shape, resampling, pool)
    if read is None:
        return np.zeros((len(sel), h, w), dtype=np.float32), np.zeros((h, w), dtype=np.bool_)
    ys, xs, data, mask_valid = read
    if (ys.start, ys.stop, xs.start, xs.stop) == (0, h, 0, w):  # common: no padding
        if pool is None:
            image = np.empty((len(sel), h, w), dtype=np.float32)
        else:
            image = pool.get((len(sel), h, w), np.float32)
        if stats is not None:
            _stretch(data, stats, image)
        else:
            image[...] = data
        if mask_valid is None:
            if pool is None:
                return image, np.ones((h, w), dtype=np.bool_)
            valid = pool.get((h, w), np.bool_)
            valid.fill(True)
            return image, valid
        image[:, ~mask_valid] = 0.0
        return image, mask_valid
    image = np.zeros((len(sel), h, w), dtype=np.float32)
    valid = np.zeros((h, w), dtype=np.bool_)
    sub = image[:, ys, xs]
    if stats is not None:
        _stretch(data, stats, sub)
    else:
        sub[...] = data
    if mask_valid is None:
        valid[ys, xs] = True
    else:
        valid[ys, xs] = mask_valid
        sub[:, ~mask_valid] = 0.0
    return image, valid


def _stats_window_grid(
    info: SceneInfo, *, n_windows: int, size: int, seed: int
) -> list[PixelWindow]:
    """Seeded, jittered, block-aligned windows spread evenly over the scene (scene pixels)."""
    rng = np.random.default_rng(seed)
    side = max(1, math.ceil(math.sqrt(n_windows)))
    bh, bw = info.block_shape
    windows: list[PixelWindow] = []
    for i in range(side):
        for j in range(side):
            y0 = int((i + rng.random()) * info.height / side) - size // 2
            x0 = int((j + rng.random()) * info.width / side) - size // 2
            if bw > 1 and bw <= size:
                x0 = (x0 // bw) * bw
            if bh > 1 and bh <= size:
                y0 = (y0 // bh) * bh
            x0 = min(max(x0, 0), max(info.width - size, 0))
            y0 = min(max(y0, 0), max(info.height - size, 0))
            windows.append(
                PixelWindow(x0, y0, min(size, info.width - x0), min(size, info.height - y0))
            )
    return sorted(set(windows), key=lambda w: (w.row_off, w.col_off))


def _valid_values(
    data: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None
) -> list[npt.NDArray[Any]]:
    out = []
    for band in data:
        v = band if valid is None else band[valid]
        if v.dtype.kind == "f":
            v = v[np.isfinite(v)]
        out.append(v.ravel())
    return out


def _read_decimated(
    ds: Any, sel: tuple[int, ...], nodata: float | None, max_pixels: int
) -> list[npt.NDArray[Any]]:
    """Whole scene at a resolution of at most ``max_pixels`` (GDAL picks an overview)."""
    factor = max(1.0, math.sqrt(ds.width * ds.height / max_pixels))
    oh = max(1, round(ds.height / factor))
    ow = max(1, round(ds.width / factor))
    data = ds.read(sel, out_shape=(len(sel), oh, ow), resampling=Resampling.nearest)
    if _uses_mask_band(ds, sel):
        valid = ds.read_masks(sel[0], out_shape=(oh, ow), resampling=Resampling.nearest) > 0
    else:
        valid = _valid_from_data(data, nodata)
    return _valid_values(data, valid)


def compute_norm_stats(
    path_or_info: str | os.PathLike[str] | SceneInfo,
    *,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    source: StatsSource = StatsSource.AUTO,
    max_pixels: int = DEFAULT_STATS_PIXELS,
    window_size: int = 256,
    seed: int = 0,
) -> NormStats:
    """Scene-wide per-band percentile stretch, computed once per scene.

    The pixels come from the scene itself when it has at most ``max_pixels`` pixels, else from
    the overview GDAL picks for a read of ``max_pixels`` (when the scene has overviews), else
    from about ``max_pixels / window_size**2`` seeded windows spread evenly over the scene
    (``source`` forces one of these). Nodata, masked and non-finite pixels are excluded. If a
    window sample finds no valid pixel in some band, a decimated read of the whole scene is
    tried before giving up. A constant band gets ``high = low + 1`` (it maps to 0).

    Args:
        path_or_info: a raster path (opened with :func:`open_scene`) or its ``SceneInfo``.
        bands: 1-based band indexes in model-input order; ``None`` = all bands.
        percentiles: ``(low, high)`` percentiles in [0, 100] mapped to 0 and 1.
        source: where the pixels come from (see :class:`StatsSource`).
        max_pixels: pixel budget per band.
        window_size: side of the sample windows in pixels.
        seed: seed of the window sample.

    Returns:
        The statistics, with ``source_dtype`` set to the scene's dtype.

    Raises:
        ConfigError: invalid ``percentiles``/``max_pixels``.
        BandError: a band does not exist.
        RasterReadError: the scene cannot be read, or a band has no valid pixel at all.
    """
    p_lo, p_hi = float(percentiles[0]), float(percentiles[1])
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if max_pixels < 1 or window_size < 1:
        raise ConfigError("max_pixels and window_size must be positive")
    info = path_or_info if isinstance(path_or_info, SceneInfo) else open_scene(path_or_info)
    sel = validate_bands(info, bands)
    source = StatsSource(source)
    if source is StatsSource.AUTO:
        if info.width * info.height <= max_pixels:
            source = StatsSource.FULL
        elif info.overviews:
            source = StatsSource.OVERVIEWS
        else:
            source = StatsSource.SAMPLE
    try:
        with rasterio.open(info.path) as ds:
            if source is StatsSource.SAMPLE:
                n_windows = max(1, max_pixels // (window_size * window_size))
                chunks: list[list[npt.NDArray[Any]]] = []
                for win in _stats_window_grid(
                    info, n_windows=n_windows, size=window_size, seed=seed
                ):
                    rio_win = win.to_rasterio()
                    data = ds.read(sel, window=rio_win)
                    if _uses_mask_band(ds, sel):
                        valid = ds.read_masks(sel[0], window=rio_win) > 0
                    else:
                        valid = _valid_from_data(data, info.nodata)
                    chunks.append(_valid_values(data, valid))
                values = [np.concatenate([c[i] for c in chunks]) for i in range(len(sel))]
                if any(v.size == 0 for v in values):
                    logger.info(
                        "%s: window sample found no valid pixels; reading decimated", info.path
                    )
                    values = _read_decimated(ds, sel, info.nodata, max_pixels)
            else:
                budget = info.width * info.height if source is StatsSource.FULL else max_pixels
                values = _read_decimated(ds, sel, info.nodata, budget)
    except RasterioError as err:
        raise RasterReadError(f"{info.path}: reading pixels for statistics failed: {err}") from err
    lows: list[float] = []
    highs: list[float] = []
    for b, v in zip(sel, values, strict=True):
        if v.size == 0:
            raise RasterReadError(
                f"{info.path}: band {b} has no valid pixel (all nodata/masked); nothing to "
                "normalise. Check --bands and the raster's nodata value."
            )
        lo, hi = np.percentile(v.astype(np.float64, copy=False), [p_lo, p_hi])
        lo, hi = float(lo), float(hi)
        if hi <= lo:
            hi = lo + 1.0
        lows.append(lo)
        highs.append(hi)
    stats = NormStats(
        bands=sel,
        low=tuple(lows),
        high=tuple(highs),
        percentiles=(p_lo, p_hi),
        source_dtype=info.dtype,
    )
    logger.info("%s: normalisation statistics from %s: %s", info.path, source.value, stats)
    return stats
