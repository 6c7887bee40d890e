"""Tile grids over a scene (pure arithmetic) and tile iteration.

The grid arithmetic here touches no pixels: :func:`make_grid` turns a scene size, a tile size and
an overlap into :class:`~geoseg.types.TileSpec` cells whose read windows cover the whole scene
(the last row/column is shifted inward, never cut short) and whose *cores* partition it exactly.

The I/O half reads those cells as :class:`~geoseg.types.Tile` values: :func:`iter_tiles` in the
calling process, :class:`TileDataset` / :func:`tile_loader` in a multi-worker
:class:`torch.utils.data.DataLoader`. Each worker opens its own GDAL handle (handles never cross a
fork) and reads its share of the grid window by window; tiles whose pixels are all invalid
(nodata, masked or padding) are skipped by default. Images are normalised with one scene-wide
:class:`~geoseg.types.NormStats`: the scene's own percentiles unless a saved one is passed in.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import rasterio
import rasterio.windows
import torch.utils.data
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
    "TileDataset",
    "collate_tiles",
    "iter_tiles",
    "make_grid",
    "metres_to_pixels",
    "tile_loader",
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


def _prepare(
    scene: str | os.PathLike[str] | SceneInfo,
    bands: Sequence[int] | None,
    stats: NormStats | None,
) -> tuple[SceneInfo, tuple[int, ...], NormStats]:
    """Open the scene, check bands against it and settle the statistics."""
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


def _read_tiles(
    info: SceneInfo,
    specs: Sequence[TileSpec],
    *,
    bands: tuple[int, ...],
    stats: NormStats,
    skip_empty: bool,
    num_threads: int | Literal["ALL_CPUS"] | None,
    cache_mb: int | None,
) -> Iterator[Tile]:
    """Open one handle and read ``specs`` in order (the handle lives in the calling process)."""
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


def _check_grid_args(tile_size: int, overlap: int) -> None:
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
    _check_grid_args(tile_size, overlap)
    info, sel, norm = _prepare(scene, bands, stats)
    specs = make_grid(info.width, info.height, tile_size=tile_size, overlap=overlap)
    return _read_tiles(
        info,
        specs,
        bands=sel,
        stats=norm,
        skip_empty=skip_empty,
        num_threads=num_threads,
        cache_mb=cache_mb,
    )


class TileDataset(torch.utils.data.IterableDataset[Tile]):
    r"""A torch ``IterableDataset`` of a scene's tiles, for multi-worker ``DataLoader``\ s.

    Construction (in the main process) opens and validates the scene, settles the bands and
    statistics and plans the grid, then closes the file: the dataset holds no GDAL handle, so it
    is safe to fork or pickle. Each iteration opens its own handle in the process that iterates.
    In a ``DataLoader`` worker the grid is sharded by grid row: worker ``k`` of ``n`` reads the
    tile rows ``r`` with ``r % n == k`` in row-major order, so all workers together yield every
    (non-empty) tile exactly once and each worker reuses cached blocks along its rows.

    Attributes:
        scene: the scene's description.
        bands: the band indexes read.
        stats: the statistics tiles are normalised with.
        specs: the grid cells to read (the whole grid unless ``indexes`` was given), including
            tiles that will be skipped as empty.
    """

    def __init__(
        self,
        scene: str | os.PathLike[str] | SceneInfo,
        *,
        tile_size: int,
        overlap: int,
        bands: Sequence[int] | None = None,
        stats: NormStats | None = None,
        skip_empty: bool = True,
        num_threads: int | Literal["ALL_CPUS"] | None = None,
        cache_mb: int | None = DEFAULT_CACHE_MB,
        indexes: Sequence[int] | None = None,
    ) -> None:
        """Plan the tiles; arguments as in :func:`iter_tiles`.

        ``indexes`` keeps only those grid cells (row-major grid indexes), in that order.
        """
        super().__init__()
        _check_grid_args(tile_size, overlap)
        self.scene, self.bands, self.stats = _prepare(scene, bands, stats)
        self.tile_size = tile_size
        self.overlap = overlap
        self.skip_empty = skip_empty
        self.num_threads = num_threads
        self.cache_mb = cache_mb
        grid = make_grid(self.scene.width, self.scene.height, tile_size=tile_size, overlap=overlap)
        self.specs: tuple[TileSpec, ...] = (
            tuple(grid) if indexes is None else tuple(grid[int(i)] for i in indexes)
        )

    def shard(self, worker_id: int, num_workers: int) -> tuple[TileSpec, ...]:
        """The grid cells worker ``worker_id`` of ``num_workers`` reads (by grid row)."""
        return tuple(s for s in self.specs if s.row % num_workers == worker_id)

    def __iter__(self) -> Iterator[Tile]:
        worker = torch.utils.data.get_worker_info()
        specs = self.specs if worker is None else self.shard(worker.id, worker.num_workers)
        return _read_tiles(
            self.scene,
            specs,
            bands=self.bands,
            stats=self.stats,
            skip_empty=self.skip_empty,
            num_threads=self.num_threads,
            cache_mb=self.cache_mb,
        )


def collate_tiles(batch: list[Tile]) -> list[Tile]:
    """``DataLoader`` collate function that keeps tiles as a list of typed values."""
    return list(batch)


def tile_loader(
    scene: str | os.PathLike[str] | SceneInfo | TileDataset,
    *,
    tile_size: int,
    overlap: int,
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    skip_empty: bool = True,
    num_threads: int | Literal["ALL_CPUS"] | None = None,
    cache_mb: int | None = DEFAULT_CACHE_MB,
    prefetch_factor: int | None = None,
    multiprocessing_context: Any = None,
) -> torch.utils.data.DataLoader[Tile]:
    """A ``DataLoader`` yielding batches (``list[Tile]``) of a scene's tiles.

    Args:
        scene: a raster path, its ``SceneInfo``, or a ready :class:`TileDataset` (then the grid
            arguments below are ignored).
        tile_size: side of the read windows in pixels, as in :func:`iter_tiles`.
        overlap: pixels shared by neighbouring windows, as in :func:`iter_tiles`.
        bands: 1-based band indexes, as in :func:`iter_tiles`.
        stats: statistics, as in :func:`iter_tiles`; computed once, in this process.
        skip_empty: skip all-invalid tiles.
        num_threads: ``GDAL_NUM_THREADS`` of each reading process.
        cache_mb: GDAL block cache of each reading process, in MiB.
        batch_size: tiles per batch (batches never mix workers; the last one may be short).
        num_workers: reading processes (0 = read in this process).
        prefetch_factor: batches each worker reads ahead (torch's default when ``None``).
        multiprocessing_context: e.g. ``"forkserver"``; torch's default when ``None``.

    Returns:
        The loader; each item is a ``list[Tile]`` (see :func:`collate_tiles`). Tile order
        across workers is not row-major; use ``tile.spec.index``.
    """
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(
            f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}"
        )
    dataset = (
        scene
        if isinstance(scene, TileDataset)
        else TileDataset(
            scene,
            tile_size=tile_size,
            overlap=overlap,
            bands=bands,
            stats=stats,
            skip_empty=skip_empty,
            num_threads=num_threads,
            cache_mb=cache_mb,
        )
    )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            extra["multiprocessing_context"] = multiprocessing_context
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_tiles,
        **extra,
    )
