"""Torch datasets over a scene's tile grid, for multi-worker data loaders (``ml`` extra).

:class:`TileDataset` is a :class:`torch.utils.data.IterableDataset` of
:class:`~geoseg.types.Tile` values over the grid of :func:`geoseg.tiling.make_grid`;
:func:`tile_loader` wraps it in a ``DataLoader`` whose batches are ``list[Tile]`` (raw pixels
``[C, h, w]`` in the scene's dtype with their statistics, ``image`` float32 ``[C, h, w]`` in
[0, 1] computed from them on first access, valid masks bool ``[h, w]``, transforms from the
image's pixels to the scene CRS; ``h, w`` the window's size in scene pixels, or ``out_size``
when a scene is read at a model's GSD). Workers send the raw pixels (a quarter of the float32
bytes for uint8). Each worker opens its own GDAL handle (handles never cross a fork) and reads its
share of the grid window by window with :func:`geoseg.tiling.read_tiles`; tiles whose pixels
are all invalid are skipped by default. Images are normalised with one scene-wide
:class:`~geoseg.types.NormStats`, settled once in the main process.

Everything here needs torch (``pip install 'geoseg[ml]'``); the torch-free grid arithmetic and
single-process tile iteration are in :mod:`geoseg.tiling`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from geoseg._extras import extra_error
from geoseg.errors import ConfigError
from geoseg.tiling import (
    DEFAULT_CACHE_MB,
    check_grid_args,
    make_grid,
    prepare_scene,
    read_tiles,
)
from geoseg.types import NormStats, SceneInfo, Tile, TileSpec

try:
    import torch.utils.data
except ImportError as _err:  # pragma: no cover - depends on the install
    raise extra_error("ml", "geoseg.datasets") from _err

__all__ = ["TileDataset", "collate_tiles", "die_with_parent", "tile_loader"]


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
        tile_size: int | tuple[int, int],
        overlap: int | tuple[int, int],
        bands: Sequence[int] | None = None,
        stats: NormStats | None = None,
        skip_empty: bool = True,
        num_threads: int | Literal["ALL_CPUS"] | None = None,
        cache_mb: int | None = DEFAULT_CACHE_MB,
        indexes: Sequence[int] | None = None,
        out_size: int | None = None,
    ) -> None:
        """Plan the tiles; arguments as in :func:`geoseg.tiling.iter_tiles`.

        ``tile_size`` and ``overlap`` are in scene pixels; ``out_size`` resamples each window
        to ``out_size x out_size`` pixels while reading it (a scene read at a model's GSD, see
        :func:`geoseg.tiling.plan_working_grid`). ``indexes`` keeps only those grid cells
        (row-major grid indexes), in that order.
        """
        super().__init__()
        check_grid_args(tile_size, overlap)
        self.scene, self.bands, self.stats = prepare_scene(scene, bands, stats)
        self.tile_size = tile_size
        self.overlap = overlap
        self.skip_empty = skip_empty
        self.num_threads = num_threads
        self.cache_mb = cache_mb
        self.out_size = out_size
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
        return read_tiles(
            self.scene,
            specs,
            bands=self.bands,
            stats=self.stats,
            skip_empty=self.skip_empty,
            num_threads=self.num_threads,
            cache_mb=self.cache_mb,
            out_size=self.out_size,
        )


def die_with_parent(worker_id: int = 0, *, parent: int | None = None) -> None:
    """``worker_init_fn`` of geoseg's reader processes: end with the process that started them.

    On Linux the kernel sends the worker ``SIGTERM`` when its parent dies, however it dies
    (``SIGKILL`` included), so no reader outlives an interrupted command; elsewhere this does
    nothing (torch's own watchdog ends orphaned workers within seconds).

    Args:
        worker_id: the DataLoader worker's number (unused).
        parent: the pid of the process that started the worker; when it is no longer the
            parent (it died before the request took effect), the worker exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def collate_tiles(batch: list[Tile]) -> list[Tile]:
    """``DataLoader`` collate function that keeps tiles as a list of typed values."""
    return list(batch)


def tile_loader(
    scene: str | os.PathLike[str] | SceneInfo | TileDataset,
    *,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    skip_empty: bool = True,
    num_threads: int | Literal["ALL_CPUS"] | None = None,
    cache_mb: int | None = DEFAULT_CACHE_MB,
    prefetch_factor: int | None = None,
    multiprocessing_context: Any = None,
    out_size: int | None = None,
) -> torch.utils.data.DataLoader[Tile]:
    """A ``DataLoader`` yielding batches (``list[Tile]``) of a scene's tiles.

    Args:
        scene: a raster path, its ``SceneInfo``, or a ready :class:`TileDataset` (then the grid
            arguments below are ignored).
        tile_size: side of the read windows in scene pixels (or ``(width, height)``), as in
            :func:`~geoseg.tiling.iter_tiles`.
        overlap: scene pixels shared by neighbouring windows, as in
            :func:`~geoseg.tiling.iter_tiles`.
        bands: 1-based band indexes, as in :func:`~geoseg.tiling.iter_tiles`.
        stats: statistics, as in :func:`~geoseg.tiling.iter_tiles`; computed once, in this process.
        skip_empty: skip all-invalid tiles.
        num_threads: ``GDAL_NUM_THREADS`` of each reading process.
        cache_mb: GDAL block cache of each reading process, in MiB.
        batch_size: tiles per batch (batches never mix workers; the last one may be short).
        num_workers: reading processes (0 = read in this process).
        prefetch_factor: batches each worker reads ahead (torch's default when ``None``).
        multiprocessing_context: e.g. ``"forkserver"``; torch's default when ``None``.
        out_size: resample each window to ``out_size x out_size`` pixels, as in
            :func:`~geoseg.tiling.iter_tiles`.

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
            out_size=out_size,
        )
    )
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra["worker_init_fn"] = functools.partial(die_with_parent, parent=os.getpid())
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
