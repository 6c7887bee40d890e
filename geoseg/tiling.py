"""Tile grids over a scene (pure arithmetic) and tile iteration, without torch.

The grid arithmetic here touches no pixels: :func:`make_grid` turns a scene size, a tile size and
an overlap into :class:`~geoseg.types.TileSpec` cells whose read windows cover the whole scene
(the last row/column is shifted inward, never cut short) and whose *cores* partition it exactly.
Windows and cores are in scene pixels (column/row offsets from the top-left corner);
:func:`tile_transform` maps a window's own pixels to the scene CRS.

The I/O half reads those cells as :class:`~geoseg.types.Tile` values in the calling process:
:func:`iter_tiles` (row-major), or :func:`prepare_scene` + :func:`read_tiles` for any subset of
the grid. Tiles whose pixels are all invalid (nodata, masked or padding) are skipped by default.
Images are float32 ``[C, tile_size, tile_size]`` in [0, 1], normalised with one scene-wide
:class:`~geoseg.types.NormStats`: the scene's own percentiles unless a saved one is passed in.

This module imports neither torch nor any other ``ml`` extra; the torch ``IterableDataset`` /
``DataLoader`` over the same grid (one GDAL handle per worker) is in :mod:`geoseg.datasets`.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Final, Literal

import rasterio
import rasterio.windows
from affine import Affine
from rasterio.errors import RasterioError

from geoseg.errors import BandError, ConfigError, RasterReadError
from geoseg.raster import (
    compute_norm_stats,
    gdal_env,
    ground_sample_distance_m,
    open_scene,
    read_window,
    validate_bands,
)
from geoseg.types import NormStats, PixelWindow, SceneInfo, Tile, TileSpec

__all__ = [
    "DEFAULT_CACHE_MB",
    "check_grid_args",
    "iter_tiles",
    "make_grid",
    "metres_to_pixels",
    "prepare_scene",
    "read_tiles",
    "tile_transform",
]

logger = logging.getLogger(__name__)

#: GDAL block cache per reading process, in MiB. Fixed, so memory stays bounded whatever the
#: scene size; it holds the blocks of one row of 512 px tiles of a scene about 25,000 px wide
#: (3 bands, uint8), so overlapping rows are decoded once.
DEFAULT_CACHE_MB: Final = 64


def _axis(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Plan one axis: ``(window_start, core_start, core_end)`` per tile, in scene pixels.

    Windows are ``tile`` long, start at multiples of ``tile - overlap`` and the last one is
    shifted inward so it ends at ``length``. Core boundaries lie in the middle of each overlap,
    so consecutive cores touch and together cover ``[0, length)`` exactly.
    """
    if length <= tile:
        return [(0, 0, length)]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    bounds = [0]
    for prev, cur in itertools.pairwise(starts):
        bounds.append((cur + prev + tile) // 2)
    bounds.append(length)
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def make_grid(width: int, height: int, *, tile_size: int, overlap: int) -> list[TileSpec]:
    """Cover a ``width x height`` scene with overlapping ``tile_size`` tiles.

    Args:
        width: scene width in pixels (> 0).
        height: scene height in pixels (> 0).
        tile_size: side of the square read window in pixels (> 0).
        overlap: pixels shared by neighbouring windows, ``0 <= overlap < tile_size``.

    Returns:
        Tiles in row-major order. Each ``window`` is ``tile_size x tile_size`` in scene pixels;
        a scene smaller than a tile gets one window starting at (0, 0) that runs past the scene
        (the excess is padding). The ``core`` windows partition ``[0, width) x [0, height)``:
        every scene pixel lies in exactly one core.

    Raises:
        ValueError: for non-positive sizes or an overlap outside ``[0, tile_size)``.

    Example:
        >>> grid = make_grid(1000, 600, tile_size=512, overlap=64)
        >>> [(t.window.col_off, t.window.row_off) for t in grid]
        [(0, 0), (448, 0), (488, 0), (0, 88), (448, 88), (488, 88)]
        >>> sum(t.core.width * t.core.height for t in grid) == 1000 * 600
        True
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"scene size must be positive, got {width} x {height}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    cols = _axis(width, tile_size, overlap)
    rows = _axis(height, tile_size, overlap)
    specs: list[TileSpec] = []
    for r, (y0, cy0, cy1) in enumerate(rows):
        for c, (x0, cx0, cx1) in enumerate(cols):
            specs.append(
                TileSpec(
                    index=len(specs),
                    row=r,
                    col=c,
                    window=PixelWindow(x0, y0, tile_size, tile_size),
                    core=PixelWindow(cx0, cy0, cx1 - cx0, cy1 - cy0),
                )
            )
    return specs


def metres_to_pixels(scene: SceneInfo, metres: float) -> int:
    """Convert a length in metres to whole pixels with the scene's ground sample distance.

    Uses the mean of the x and y pixel sizes from
    :func:`geoseg.raster.ground_sample_distance_m` (for a geographic CRS: measured at the
    scene centre latitude).

    Args:
        scene: the scene whose pixel size is used.
        metres: a length >= 0, e.g. a tile size or overlap.

    Returns:
        ``round(metres / gsd)`` pixels.

    Raises:
        ConfigError: negative length, or the scene has no CRS (metres unknown).
    """
    if metres < 0:
        raise ConfigError(f"a length in metres must be >= 0, got {metres}")
    gx, gy = ground_sample_distance_m(scene)
    return round(metres / ((gx + gy) / 2.0))


def tile_transform(scene_transform: Affine, window: PixelWindow) -> Affine:
    """Affine from *tile pixels* of ``window`` to the scene CRS.

    :func:`rasterio.windows.transform` of the window: ``scene_transform`` composed with a
    translation by the window offset.
    """
    out: Affine = rasterio.windows.transform(window.to_rasterio(), scene_transform)
    return out


def prepare_scene(
    scene: str | os.PathLike[str] | SceneInfo,
    bands: Sequence[int] | None,
    stats: NormStats | None,
) -> tuple[SceneInfo, tuple[int, ...], NormStats]:
    """Open the scene, check bands against it and settle the statistics.

    Args:
        scene: a raster path or its :class:`~geoseg.types.SceneInfo`.
        bands: 1-based band indexes, as in :func:`iter_tiles`.
        stats: statistics, as in :func:`iter_tiles`; ``None`` computes the scene's own.

    Returns:
        ``(scene info, selected bands, statistics)``.

    Raises:
        BandError: a band does not exist, or ``stats`` is for other bands.
        RasterReadError: the scene cannot be opened or read.
    """
    info = scene if isinstance(scene, SceneInfo) else open_scene(scene)
    if bands is None and stats is not None:
        bands = stats.bands
    sel = validate_bands(info, bands)
    if stats is None:
        stats = compute_norm_stats(info, bands=sel)
    elif tuple(stats.bands) != sel:
        raise BandError(
            f"{info.path}: the normalisation statistics are for bands {stats.bands}, not the "
            f"requested bands {sel}; pass bands={stats.bands} or matching statistics."
        )
    if stats.source_dtype != info.dtype:
        logger.warning(
            "%s: normalisation statistics come from a %s raster but this scene is %s; check "
            "that the model was trained on imagery like this",
            info.path,
            stats.source_dtype,
            info.dtype,
        )
    return info, sel, stats


def read_tiles(
    info: SceneInfo,
    specs: Sequence[TileSpec],
    *,
    bands: tuple[int, ...],
    stats: NormStats,
    skip_empty: bool,
    num_threads: int | Literal["ALL_CPUS"] | None,
    cache_mb: int | None,
) -> Iterator[Tile]:
    """Open one GDAL handle and read ``specs`` in order; the handle lives in the calling process.

    ``bands`` and ``stats`` are those :func:`prepare_scene` settled; the other arguments are as
    in :func:`iter_tiles`. Used by :func:`iter_tiles` and by each worker of
    :class:`geoseg.datasets.TileDataset`.

    Raises:
        RasterReadError: the scene cannot be read.
    """
    skipped = 0
    try:
        with gdal_env(num_threads=num_threads, cache_mb=cache_mb), rasterio.open(info.path) as ds:
            for spec in specs:
                image, valid = read_window(
                    ds, spec.window, bands=bands, stats=stats, nodata=info.nodata
                )
                if skip_empty and not valid.any():
                    skipped += 1
                    continue
                yield Tile(
                    spec=spec,
                    image=image,
                    valid=valid,
                    transform=tile_transform(info.transform, spec.window),
                    crs_wkt=info.crs_wkt,
                )
    except RasterioError as err:
        raise RasterReadError(f"{info.path}: cannot be read: {err}") from err
    if skipped:
        logger.debug("%s: skipped %d all-invalid tiles", info.path, skipped)


def check_grid_args(tile_size: int, overlap: int) -> None:
    """Check a tile size and overlap in pixels.

    Raises:
        ConfigError: ``tile_size <= 0`` or ``overlap`` outside ``[0, tile_size)``.
    """
    if tile_size <= 0:
        raise ConfigError(f"tile_size must be a positive number of pixels, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ConfigError(f"overlap must be in [0, tile_size={tile_size}) pixels, got {overlap}")


def iter_tiles(
    scene: str | os.PathLike[str] | SceneInfo,
    *,
    tile_size: int,
    overlap: int,
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    skip_empty: bool = True,
    num_threads: int | Literal["ALL_CPUS"] | None = None,
    cache_mb: int | None = DEFAULT_CACHE_MB,
) -> Iterator[Tile]:
    """Read a scene tile by tile, in row-major grid order, in this process.

    The scene is opened and validated, the bands checked and the statistics settled when this
    function is called (errors surface immediately); pixels are read lazily, one window at a
    time, so memory does not depend on the scene size.

    Args:
        scene: a raster path or its :class:`~geoseg.types.SceneInfo`.
        tile_size: side of the square read windows, in pixels (see :func:`metres_to_pixels`).
        overlap: pixels shared by neighbouring windows, ``0 <= overlap < tile_size``.
        bands: 1-based band indexes in model-input order; ``None`` = ``stats.bands`` if
            ``stats`` is given, else all bands.
        stats: scene-wide statistics to normalise with (e.g. those saved with a model); ``None``
            computes this scene's own with :func:`geoseg.raster.compute_norm_stats`.
        skip_empty: skip tiles without a single valid pixel (all nodata or masked).
        num_threads: ``GDAL_NUM_THREADS`` for multithreaded block decoding.
        cache_mb: GDAL block cache size in MiB (``None`` = GDAL's default).

    Returns:
        An iterator of tiles: image float32 ``[C, tile_size, tile_size]`` in [0, 1], valid bool
        ``[tile_size, tile_size]``, ``transform`` from tile pixels to the scene CRS.

    Raises:
        ConfigError: invalid tile size / overlap.
        BandError: a band does not exist, or ``stats`` is for other bands.
        RasterReadError: the scene cannot be opened or read.
    """
    check_grid_args(tile_size, overlap)
    info, sel, norm = prepare_scene(scene, bands, stats)
    specs = make_grid(info.width, info.height, tile_size=tile_size, overlap=overlap)
    return read_tiles(
        info,
        specs,
        bands=sel,
        stats=norm,
        skip_empty=skip_empty,
        num_threads=num_threads,
        cache_mb=cache_mb,
    )
