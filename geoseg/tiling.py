"""Tile grids over a scene (pure arithmetic) and tile iteration, without torch.

The grid arithmetic here touches no pixels: :func:`make_grid` turns a scene size, a tile size and
an overlap into :class:`~geoseg.types.TileSpec` cells whose read windows cover the whole scene
(the last row/column is shifted inward, never cut short) and whose *cores* partition it exactly.
Windows and cores are in scene pixels (column/row offsets from the top-left corner);
:func:`tile_transform` maps a window's own pixels to the scene CRS.

A scene whose ground resolution differs from the model's is read at the model's
(:func:`plan_working_grid`): the grid stays in scene pixels, with windows of the scene size
that covers one model tile, and each window is resampled by GDAL while it is read
(``out_size``); :func:`detections_to_window` maps a tile's detections back to the scene
pixels of its window before stitching.

The I/O half reads those cells as :class:`~geoseg.types.Tile` values in the calling process:
:func:`iter_tiles` (row-major), or :func:`prepare_scene` + :func:`read_tiles` for any subset of
the grid. Tiles whose pixels are all invalid (nodata, masked or padding) are skipped by default.
A tile holds its pixels as read (``raw``: ``[C, h, w]`` in the scene's dtype, the window's size
or ``out_size``) with the scene-wide :class:`~geoseg.types.NormStats` that normalises them
(``norm``): the scene's own percentiles unless a saved one is passed in. ``tile.image``, float32
``[C, h, w]`` in [0, 1], is computed from them on first access; a model that normalises its own
batch (:class:`geoseg.predict.MaskRCNNPredictor`) never asks for it, so reading does no float
work.

This module imports neither torch nor any other ``ml`` extra; the torch ``IterableDataset`` /
``DataLoader`` over the same grid (one GDAL handle per worker) is in :mod:`geoseg.datasets`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.errors import RasterioError

from geoseg.errors import BandError, ConfigError, RasterReadError
from geoseg.raster import (
    GSD_TOLERANCE,
    BufferPool,
    compute_norm_stats,
    gdal_env,
    ground_sample_distance_m,
    gsd_scale,
    open_scene,
    read_window_raw,
    validate_bands,
)
from geoseg.types import NormStats, PixelWindow, SceneInfo, Tile, TileDetections, TileSpec

__all__ = [
    "DEFAULT_CACHE_MB",
    "MAX_GSD_FACTOR",
    "TILE_BYTES_PER_PIXEL",
    "TILE_MULTIPLE",
    "WorkingGrid",
    "check_grid_args",
    "check_tile_memory",
    "detections_to_window",
    "iter_tiles",
    "make_grid",
    "metres_to_pixels",
    "plan_working_grid",
    "prepare_scene",
    "read_tiles",
    "tile_transform",
]

logger = logging.getLogger(__name__)

#: GDAL block cache per reading process, in MiB. Fixed, so memory stays bounded whatever the
#: scene size; it holds the blocks of one row of 512 px tiles of a scene about 25,000 px wide
#: (3 bands, uint8), so overlapping rows are decoded once.
DEFAULT_CACHE_MB: Final = 64

#: Resampling factor (either way) beyond which :func:`plan_working_grid` warns: a scene that
#: far from the model's GSD has lost or lacks the detail the model learnt from.
MAX_GSD_FACTOR: Final = 4.0

#: A tile cut down to the scene it covers keeps a side that is a multiple of this (the model's
#: feature strides divide it).
TILE_MULTIPLE: Final = 32

#: Rough peak memory of a Mask R-CNN forward pass per input pixel and image, in bytes (the
#: stride-4 FPN level alone holds 256 float32 channels at 1/16 of the pixels: 64 bytes per
#: pixel; backbone activations and the other levels about as much again), used by
#: :func:`check_tile_memory` to refuse tiles no machine of this size can predict.
TILE_BYTES_PER_PIXEL: Final = 160


def check_tile_memory(
    tile_size: int,
    *,
    bands: int,
    batch_size: int = 1,
    available: int | None = None,
    source: str = "--tile-size",
) -> None:
    """Refuse a tile whose forward pass needs more memory than the machine has.

    The estimate is ``tile_size**2 * batch_size * (TILE_BYTES_PER_PIXEL + 4 * bands)`` bytes,
    against ``available`` (default: the machine's physical memory).

    Raises:
        ConfigError: naming ``source`` (the option or setting), the estimate and the largest
            tile that fits.
    """
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
    per_pixel = batch_size * (TILE_BYTES_PER_PIXEL + 4 * bands)
    need = tile_size * tile_size * per_pixel
    if need <= available:
        return
    fits = int((available / per_pixel) ** 0.5) // TILE_MULTIPLE * TILE_MULTIPLE
    raise ConfigError(
        f"{source} {tile_size}: one batch of {batch_size} tile(s) of {tile_size} x {tile_size} "
        f"px needs about {need / 2**30:.0f} GiB to predict, more than this machine's "
        f"{available / 2**30:.0f} GiB; use a tile size of at most {max(fits, 16)} (models see "
        "512 to 1024 px tiles best)"
    )


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


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """``(x, y)`` from one int (both axes) or a pair."""
    if isinstance(value, tuple):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def make_grid(
    width: int,
    height: int,
    *,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
) -> list[TileSpec]:
    """Cover a ``width x height`` scene with overlapping ``tile_size`` tiles.

    Args:
        width: scene width in pixels (> 0).
        height: scene height in pixels (> 0).
        tile_size: side of the square read window in pixels (> 0), or ``(width, height)`` of a
            rectangular one (a scene read at another GSD, see :func:`plan_working_grid`).
        overlap: pixels shared by neighbouring windows, ``0 <= overlap < tile_size``, or
            ``(x, y)``.

    Returns:
        Tiles in row-major order. Each ``window`` is ``tile_size`` in scene pixels; a scene
        smaller than a tile gets one window starting at (0, 0) that runs past the scene (the
        excess is padding). The ``core`` windows partition ``[0, width) x [0, height)``:
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
    (tw, th), (ox, oy) = _pair(tile_size), _pair(overlap)
    for tile, over in ((tw, ox), (th, oy)):
        if tile <= 0:
            raise ValueError(f"tile_size must be positive, got {tile_size}")
        if not 0 <= over < tile:
            raise ValueError(f"overlap must be in [0, tile_size={tile}), got {over}")
    cols = _axis(width, tw, ox)
    rows = _axis(height, th, oy)
    specs: list[TileSpec] = []
    for r, (y0, cy0, cy1) in enumerate(rows):
        for c, (x0, cx0, cx1) in enumerate(cols):
            specs.append(
                TileSpec(
                    index=len(specs),
                    row=r,
                    col=c,
                    window=PixelWindow(x0, y0, tw, th),
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


def tile_transform(
    scene_transform: Affine, window: PixelWindow, out_shape: tuple[int, int] | None = None
) -> Affine:
    """Affine from *tile pixels* of ``window`` to the scene CRS.

    :func:`rasterio.windows.transform` of the window: ``scene_transform`` composed with a
    translation by the window offset; with ``out_shape`` ``(h, w)`` (the window read into
    ``h x w`` resampled pixels, see :func:`geoseg.raster.read_window`), also with
    ``Affine.scale(window.width / w, window.height / h)``.
    """
    # rasterio.windows.transform's arithmetic, without its deprecated ``Affine * ...`` calls
    # (each one a warning: a measurable cost per tile)
    x, y = scene_transform @ (float(window.col_off), float(window.row_off))
    out: Affine = Affine.translation(x - scene_transform.c, y - scene_transform.f) @ scene_transform
    if out_shape is not None and out_shape != (window.height, window.width):
        out = out @ Affine.scale(window.width / out_shape[1], window.height / out_shape[0])
    return out


@dataclass(frozen=True, slots=True)
class WorkingGrid:
    """How a scene is tiled for a model: tile sizes in working pixels and in scene pixels.

    *Working pixels* are the pixels the model sees: the scene's own when the scene is read as
    it is, else pixels of the working GSD (the model's unless set explicitly). The grid itself
    is always in **scene pixels** (:attr:`scene_tile`, :attr:`scene_overlap`), so tile windows,
    stitching and outputs stay in the scene's own pixels; each window is resampled to
    ``tile_size x tile_size`` working pixels while it is read.

    Attributes:
        tile_size: tile side the model sees, in working pixels.
        overlap: overlap between tiles, in working pixels.
        scene_tile: ``(width, height)`` of each read window, in scene pixels.
        scene_overlap: ``(x, y)`` overlap, in scene pixels.
        scene_gsd: the scene's pixel size ``(x, y)`` in metres (``None``: no CRS).
        model_gsd: the model's training GSD in metres (``None``: unknown).
        working_gsd: the GSD tiles are read at, in metres (``None``: the scene's own, unknown).
        note: why the scene is (not) resampled, for the log.
    """

    tile_size: int
    overlap: int
    scene_tile: tuple[int, int]
    scene_overlap: tuple[int, int]
    scene_gsd: tuple[float, float] | None = None
    model_gsd: float | None = None
    working_gsd: float | None = None
    note: str = ""

    @property
    def resampled(self) -> bool:
        """Whether windows are resampled while read (scene tile differs from the model's)."""
        return self.scene_tile != (self.tile_size, self.tile_size)

    @property
    def out_size(self) -> int | None:
        """Side of the resampled tiles in working pixels, or ``None`` when read as they are."""
        return self.tile_size if self.resampled else None

    @property
    def scale(self) -> tuple[float, float]:
        """Scene pixels per working pixel ``(x, y)``: ``scene_tile / tile_size``."""
        return (self.scene_tile[0] / self.tile_size, self.scene_tile[1] / self.tile_size)

    def describe(self) -> str:
        """One line for the log, e.g. ``scene 0.30 m, model 0.50 m: tiles resampled by 0.6``."""
        scene = "scene GSD unknown"
        if self.scene_gsd is not None:
            x, y = f"{self.scene_gsd[0]:.2f}", f"{self.scene_gsd[1]:.2f}"
            scene = f"scene {x} m" if x == y else f"scene {x} x {y} m"
        model = "model GSD unknown" if self.model_gsd is None else f"model {self.model_gsd:.2f} m"
        if self.working_gsd is not None and self.working_gsd != self.model_gsd:
            model += f", working GSD {self.working_gsd:.2f} m"
        if not self.resampled:
            return f"{scene}, {model}: {self.note or 'tiles read as they are'}"
        fx, fy = (self.tile_size / self.scene_tile[0], self.tile_size / self.scene_tile[1])
        factor = f"{fx:.3g}" if self.scene_tile[0] == self.scene_tile[1] else f"{fx:.3g} x {fy:.3g}"
        return (
            f"{scene}, {model}: tiles resampled by {factor} "
            f"({self.scene_tile[0]} x {self.scene_tile[1]} scene px -> {self.tile_size} px)"
        )


def plan_working_grid(
    scene: SceneInfo,
    *,
    tile_size: int,
    overlap: int,
    model_gsd: float | None,
    gsd: float | None = None,
    resample: bool = True,
    tolerance: float = GSD_TOLERANCE,
) -> WorkingGrid:
    """Decide the GSD a scene is read at, and the tile grid that goes with it.

    The working GSD is ``gsd`` when given, else ``model_gsd``. The scene is resampled when
    ``resample`` is on, the scene's GSD (:func:`geoseg.raster.ground_sample_distance_m`, in
    metres also for geographic CRSs) and the working GSD are both known, and they differ by
    more than ``tolerance`` along an axis (:func:`geoseg.raster.gsd_scale`). Then each read
    window is ``round(tile_size * working / scene GSD)`` scene pixels along each axis (and the
    overlap likewise), so that it becomes ``tile_size`` working pixels when read.

    Args:
        scene: the scene.
        tile_size: tile side the model sees, in working pixels.
        overlap: overlap between tiles, in working pixels.
        model_gsd: the model's training GSD in metres (``None``: unknown).
        gsd: the working GSD in metres (``None``: the model's).
        resample: ``False`` reads the scene as it is whatever its GSD.
        tolerance: relative GSD difference read as it is.

    Returns:
        The :class:`WorkingGrid`; make the grid with ``make_grid(..., tile_size=
        grid.scene_tile, overlap=grid.scene_overlap)``.

    Raises:
        ConfigError: ``gsd`` is given but the scene has no CRS (its GSD is unknown), or
            ``gsd`` together with ``resample=False``, or an invalid size.

    Example:
        >>> from affine import Affine
        >>> from pyproj import CRS
        >>> from geoseg.types import SceneInfo
        >>> utm = CRS.from_epsg(32631).to_wkt()
        >>> info = SceneInfo("s.tif", 1000, 1000, 3, "uint8", utm, Affine(0.3, 0, 5e5, 0, -0.3, 0))
        >>> g = plan_working_grid(info, tile_size=256, overlap=64, model_gsd=0.5)
        >>> g.scene_tile, g.scene_overlap, g.tile_size
        ((427, 427), (107, 107), 256)
    """
    grid = _plan_grid(
        scene,
        tile_size=tile_size,
        overlap=overlap,
        model_gsd=model_gsd,
        gsd=gsd,
        resample=resample,
        tolerance=tolerance,
    )
    # a tile never larger than the scene needs: cut it to the (padded) scene at the working GSD
    rx, ry = grid.scale
    need = max(scene.width / rx, scene.height / ry)
    cut = max(TILE_MULTIPLE, -(-int(np.ceil(need)) // TILE_MULTIPLE) * TILE_MULTIPLE)
    if cut >= tile_size:
        return grid
    logger.info(
        "%s: tile size %d cut to %d px, which covers the whole scene", scene.path, tile_size, cut
    )
    smaller = _plan_grid(
        scene,
        tile_size=cut,
        overlap=min(overlap, cut // 4),
        model_gsd=model_gsd,
        gsd=gsd,
        resample=resample,
        tolerance=tolerance,
    )
    note = f"tile cut from {tile_size} to {cut} px (the whole scene)"
    return dataclasses.replace(smaller, note=f"{smaller.note}; {note}" if smaller.note else note)


def _plan_grid(
    scene: SceneInfo,
    *,
    tile_size: int,
    overlap: int,
    model_gsd: float | None,
    gsd: float | None,
    resample: bool,
    tolerance: float,
) -> WorkingGrid:
    """:func:`plan_working_grid` without the cut of a tile larger than the scene."""
    check_grid_args(tile_size, overlap)
    if gsd is not None and not resample:
        raise ConfigError("a working GSD and resampling switched off contradict each other")
    scene_gsd = None if scene.crs_wkt is None else ground_sample_distance_m(scene)
    target = model_gsd if gsd is None else float(gsd)
    same = WorkingGrid(
        tile_size=tile_size,
        overlap=overlap,
        scene_tile=(tile_size, tile_size),
        scene_overlap=(overlap, overlap),
        scene_gsd=scene_gsd,
        model_gsd=model_gsd,
        working_gsd=None,
    )
    if not resample:
        return dataclasses.replace(same, note="resampling switched off, tiles read as they are")
    if target is None:
        return dataclasses.replace(same, note="tiles read as they are")
    if scene_gsd is None:
        if gsd is not None:
            raise ConfigError(
                f"{scene.path}: the scene has no CRS, so its GSD is unknown and it cannot be "
                f"read at {gsd:g} m; georeference it or leave the GSD to the scene"
            )
        return dataclasses.replace(same, note="scene GSD unknown (no CRS), tiles read as they are")
    scale = gsd_scale(scene_gsd, target, tolerance=tolerance)
    if scale is None:
        return dataclasses.replace(
            same,
            working_gsd=target,
            note=f"within {tolerance:.0%}, tiles read as they are",
        )
    rx, ry = scale
    tiles = (max(1, round(tile_size / rx)), max(1, round(tile_size / ry)))
    overlaps = (
        min(round(overlap / rx), tiles[0] - 1),
        min(round(overlap / ry), tiles[1] - 1),
    )
    grid = WorkingGrid(
        tile_size=tile_size,
        overlap=overlap,
        scene_tile=tiles,
        scene_overlap=(max(0, overlaps[0]), max(0, overlaps[1])),
        scene_gsd=scene_gsd,
        model_gsd=model_gsd,
        working_gsd=target,
    )
    if max(rx, ry, 1.0 / rx, 1.0 / ry) > MAX_GSD_FACTOR:
        logger.warning(
            "%s: %s; a factor beyond %g, expect poorer results than at the model's own GSD",
            scene.path,
            grid.describe(),
            MAX_GSD_FACTOR,
        )
    return grid


def detections_to_window(dets: TileDetections, tile_shape: tuple[int, int]) -> TileDetections:
    """Map one tile's detections from working pixels to its window's scene pixels.

    For a tile read resampled (its window of ``W x H`` scene pixels into ``tile_shape``
    ``(h, w)`` working pixels), boxes are scaled by ``(W / w, H / h)``; each mask gets the
    integer box that covers its scaled mask box and is resampled onto it nearest (a scene
    pixel takes the value of the working pixel under its centre), so masks stay cropped and
    no full-tile array is made. Exact for integer factors. A mask left without any pixel
    (an object smaller than a scene pixel) is dropped with its detection.

    Args:
        dets: the predictor's detections of one tile (``dets.tile`` set), boxes and masks in
            working pixels of the tile.
        tile_shape: ``(h, w)`` of the image the predictor saw.

    Returns:
        The detections in **tile pixels** of ``dets.tile.window`` (scene pixels relative to
        the window), as :func:`geoseg.stitch.stitch` takes them; ``dets`` itself when the
        tile was not resampled.

    Raises:
        ValueError: ``dets.tile`` is not set.
    """
    if dets.tile is None:
        raise ValueError("detections_to_window needs TileDetections with their tile set")
    win = dets.tile.window
    h, w = tile_shape
    sx, sy = win.width / w, win.height / h
    if (sx, sy) == (1.0, 1.0) or len(dets) == 0:
        return dets
    eps = 1e-6
    mb = dets.mask_boxes.astype(np.float64)
    x1 = np.floor(mb[:, 0] * sx + eps).astype(np.int64)
    y1 = np.floor(mb[:, 1] * sy + eps).astype(np.int64)
    x2 = np.minimum(np.ceil(mb[:, 2] * sx - eps).astype(np.int64), win.width)
    y2 = np.minimum(np.ceil(mb[:, 3] * sy - eps).astype(np.int64), win.height)
    masks: list[npt.NDArray[np.bool_]] = []
    keep = np.zeros(len(dets), dtype=np.bool_)
    for i, m in enumerate(dets.masks):
        mh, mw = m.shape
        cols = np.floor((np.arange(x1[i], x2[i]) + 0.5) / sx).astype(np.int64) - int(
            dets.mask_boxes[i, 0]
        )
        rows = np.floor((np.arange(y1[i], y2[i]) + 0.5) / sy).astype(np.int64) - int(
            dets.mask_boxes[i, 1]
        )
        ok_c = (cols >= 0) & (cols < mw)
        ok_r = (rows >= 0) & (rows < mh)
        out = np.zeros((len(rows), len(cols)), dtype=np.bool_)
        if ok_c.any() and ok_r.any():
            out[np.ix_(ok_r, ok_c)] = m[np.ix_(rows[ok_r], cols[ok_c])]
        keep[i] = out.any()
        masks.append(out)
    boxes = dets.boxes.astype(np.float64) * np.array([sx, sy, sx, sy])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, win.width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, win.height)
    scaled = TileDetections(
        boxes=boxes.astype(np.float32),
        scores=dets.scores,
        labels=dets.labels,
        mask_boxes=np.stack([x1, y1, x2, y2], axis=1).astype(np.int32),
        masks=tuple(masks),
        classes=dets.classes,
        tile=dets.tile,
    )
    return scaled if keep.all() else scaled[keep]


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
    out_size: int | None = None,
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
            shape = None if out_size is None else (out_size, out_size)
            # a consumer that drops its tiles gets the same arrays back: raw pixels and valid
            # masks from one pool, the images normalised on demand from another
            pool, images = BufferPool(), BufferPool()
            for spec in specs:
                raw, valid = read_window_raw(
                    ds,
                    spec.window,
                    bands=bands,
                    nodata=info.nodata,
                    fill=0,
                    out_shape=shape,
                    pool=pool,
                )
                if skip_empty and not valid.any():
                    skipped += 1
                    continue
                yield Tile(
                    spec,
                    None,
                    valid,
                    tile_transform(info.transform, spec.window, shape),
                    info.crs_wkt,
                    raw=raw,
                    norm=stats,
                    alloc=images.get,
                )
    except RasterioError as err:
        raise RasterReadError(f"{info.path}: cannot be read: {err}") from err
    if skipped:
        logger.debug("%s: skipped %d all-invalid tiles", info.path, skipped)


def check_grid_args(tile_size: int | tuple[int, int], overlap: int | tuple[int, int]) -> None:
    """Check a tile size and overlap in pixels (one int, or ``(x, y)``).

    Raises:
        ConfigError: ``tile_size <= 0`` or ``overlap`` outside ``[0, tile_size)``.
    """
    for tile, over in zip(_pair(tile_size), _pair(overlap), strict=True):
        if tile <= 0:
            raise ConfigError(f"tile_size must be a positive number of pixels, got {tile_size}")
        if not 0 <= over < tile:
            raise ConfigError(f"overlap must be in [0, tile_size={tile}) pixels, got {overlap}")


def iter_tiles(
    scene: str | os.PathLike[str] | SceneInfo,
    *,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    skip_empty: bool = True,
    num_threads: int | Literal["ALL_CPUS"] | None = None,
    cache_mb: int | None = DEFAULT_CACHE_MB,
    out_size: int | None = None,
) -> Iterator[Tile]:
    """Read a scene tile by tile, in row-major grid order, in this process.

    The scene is opened and validated, the bands checked and the statistics settled when this
    function is called (errors surface immediately); pixels are read lazily, one window at a
    time, so memory does not depend on the scene size.

    Args:
        scene: a raster path or its :class:`~geoseg.types.SceneInfo`.
        tile_size: side of the square read windows in scene pixels (see
            :func:`metres_to_pixels`), or ``(width, height)``.
        overlap: scene pixels shared by neighbouring windows, ``0 <= overlap < tile_size``,
            or ``(x, y)``.
        bands: 1-based band indexes in model-input order; ``None`` = ``stats.bands`` if
            ``stats`` is given, else all bands.
        stats: scene-wide statistics to normalise with (e.g. those saved with a model); ``None``
            computes this scene's own with :func:`geoseg.raster.compute_norm_stats`.
        skip_empty: skip tiles without a single valid pixel (all nodata or masked).
        num_threads: ``GDAL_NUM_THREADS`` for multithreaded block decoding.
        cache_mb: GDAL block cache size in MiB (``None`` = GDAL's default).
        out_size: resample each window to ``out_size x out_size`` pixels while reading it
            (GDAL resampling, see :func:`geoseg.raster.read_window`); ``None``: as it is.
            :func:`plan_working_grid` gives the window size that reads a scene at a GSD.

    Returns:
        An iterator of tiles: ``raw`` ``[C, h, w]`` in the scene's dtype with ``norm`` (the
        statistics), ``image`` float32 ``[C, h, w]`` in [0, 1] computed from them on first
        access, and valid bool ``[h, w]`` (``h, w`` the window's size, or ``out_size``),
        ``transform`` from the image's pixels to the scene CRS; ``spec`` windows and cores in
        scene pixels. A consumer that drops each tile (or batch) before the next gets the
        same few arrays back (:class:`geoseg.raster.BufferPool`).

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
        out_size=out_size,
    )
