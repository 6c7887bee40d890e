"""One scene end to end: raster → tiling → predict → stitch → vectorize (→ export).

:func:`run_scene` is the library form of ``geoseg predict``. It checks the output path before
any work, opens and validates the scene, settles the bands and the scene-wide normalisation,
reads tiles in a background reader (a :class:`torch.utils.data.DataLoader` with worker
processes, or a reader thread when ``num_workers == 0``) so that reading overlaps with model
compute, sends batches to any :class:`~geoseg.predict.Predictor`, stitches the per-tile
detections into scene objects, turns them into polygons in the scene CRS and, when ``output``
is given, writes them atomically in the format its extension names.

Memory does not grow with the scene's pixel count: only ``prefetch`` batches of tiles are in
memory at once, and detections keep their masks cropped to their boxes.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from geoseg.config import check_class_scores
from geoseg.errors import BandError, ConfigError
from geoseg.predict import Predictor
from geoseg.types import Detections, NormStats, SceneInfo, TileDetections

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "ProgressCallback",
    "SceneResult",
    "filter_scores",
    "run_scene",
    "score_thresholds",
    "stitch_tiles",
    "vectorize_scene",
]

logger = logging.getLogger(__name__)

#: ``progress(tiles_done, tiles_total)``; called after every batch and once at the end.
ProgressCallback = Callable[[int, int], None]

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class SceneResult:
    """What :func:`run_scene` produced for one scene.

    Attributes:
        detections: the stitched objects, boxes and masks in **scene pixels**.
        gdf: the objects as polygons in the **scene CRS** with their attributes (``class``,
            ``score``, ``area_m2``, ``length_m``, ``width_m``, ``heading_deg``, ``scene``).
        scene: the scene's description.
        n_tiles: tiles sent to the predictor (all-invalid tiles are skipped).
        seconds: wall time of the whole run.
        counts: objects per class name (every class of the predictor, zeros included), as in
            ``gdf``.
        tiles_total: tiles in the grid, including skipped all-invalid ones.
        stats: the normalisation the tiles were stretched with.
        bands: the 1-based bands read, in model-input order.
        output: the file written, or ``None``.
        timings: wall seconds per stage (``setup``, ``predict`` (reading included),
            ``stitch``, ``vectorize``, ``write``).
    """

    detections: Detections
    gdf: gpd.GeoDataFrame
    scene: SceneInfo
    n_tiles: int
    seconds: float
    counts: dict[str, int]
    tiles_total: int = 0
    stats: NormStats | None = None
    bands: tuple[int, ...] = ()
    output: Path | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def megapixels_per_second(self) -> float:
        """Scene megapixels processed per wall-clock second (whole run)."""
        return self.scene.width * self.scene.height / 1e6 / max(self.seconds, 1e-9)


class _Prefetcher(Iterator[T]):
    """Iterate ``source`` in a daemon thread, ``depth`` items ahead of the consumer.

    GDAL reads and torch kernels release the GIL, so a reader thread overlaps with compute.
    Exceptions raised by the source are re-raised in the consumer; :meth:`close` stops the
    thread early.
    """

    _DONE = object()

    def __init__(self, source: Iterable[T], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(iter(source),), name="geoseg-tile-reader", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator[T]) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as err:  # forwarded to the consumer
            self._put(err)

    def __next__(self) -> T:
        item = self._queue.get()
        if item is self._DONE:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the reader thread."""
        self._stop.set()
        self._thread.join(timeout=5)


def _resolve_bands(
    predictor: Predictor, bands: Sequence[int] | None, stats: NormStats | None
) -> tuple[int, ...] | None:
    """Bands to read: explicit ``bands``, else the stats', else the predictor's, else all."""
    if bands is not None:
        return tuple(int(b) for b in bands)
    if stats is not None:
        return tuple(stats.bands)
    model_bands = getattr(predictor, "bands", None)
    return None if model_bands is None else tuple(int(b) for b in model_bands)


def _check_band_count(predictor: Predictor, bands: tuple[int, ...], scene: SceneInfo) -> None:
    """Refuse a band selection whose size differs from what the predictor expects."""
    model_bands = getattr(predictor, "bands", None)
    if model_bands is not None and len(model_bands) != len(bands):
        raise BandError(
            f"{scene.path}: the model expects {len(model_bands)} band(s) (it was trained on "
            f"bands {list(model_bands)}) but {len(bands)} band(s) {list(bands)} are selected; "
            f"choose {len(model_bands)} bands with --bands/bands=..."
        )


def score_thresholds(
    classes: Sequence[str],
    min_score: float = 0.0,
    class_min_score: Mapping[str, float] | None = None,
) -> npt.NDArray[np.float32]:
    """Per-label score thresholds: float32 ``[len(classes)]``, ``min_score`` where no class entry.

    Raises:
        ConfigError: a score outside [0, 1], or a ``class_min_score`` name that is not one of
            ``classes`` (the message lists them).
    """
    if not 0.0 <= min_score <= 1.0:
        raise ConfigError(f"min_score must be in [0, 1], got {min_score}")
    per_class = check_class_scores(class_min_score or {}, "class_min_score")
    unknown = sorted(set(per_class) - set(classes))
    if unknown:
        raise ConfigError(
            f"per-class score threshold for unknown class(es) {', '.join(unknown)}; "
            f"the model's classes are {', '.join(classes)}"
        )
    return np.array([per_class.get(c, min_score) for c in classes], np.float32)


def filter_scores(dets: TileDetections, thresholds: npt.NDArray[np.float32]) -> TileDetections:
    """Keep detections whose score reaches their class's threshold (``thresholds[label]``)."""
    if len(dets) == 0 or not (thresholds > 0.0).any():
        return dets
    return dets[dets.scores >= thresholds[dets.labels]]


def stitch_tiles(
    per_tile: Iterable[TileDetections],
    info: SceneInfo,
    *,
    stitch_options: Mapping[str, Any] | None = None,
    min_area_px: int = 0,
) -> Detections:
    """Stitch one scene's per-tile detections (any order) into scene objects.

    Tiles are put in grid order first so the result does not depend on the order in which
    tiles (or chunks of tiles from several workers) arrived. Objects with fewer than
    ``min_area_px`` mask pixels are dropped.

    Returns:
        Detections in **scene pixels**.
    """
    from geoseg.stitch import stitch

    ordered = sorted(per_tile, key=lambda d: -1 if d.tile is None else d.tile.index)
    detections = stitch(
        ordered,
        scene_width=info.width,
        scene_height=info.height,
        **dict(stitch_options or {}),
    )
    if min_area_px > 0 and len(detections):
        detections = detections[detections.mask_areas() >= min_area_px]
    return detections


def vectorize_scene(
    detections: Detections,
    info: SceneInfo,
    *,
    simplify_tolerance: float = 0.0,
    min_area: float = 0.0,
) -> gpd.GeoDataFrame:
    """Polygons in the scene CRS for a scene's stitched detections (``scene`` = file stem)."""
    from geoseg.vectorize import vectorize

    return vectorize(
        detections,
        transform=info.transform,
        crs_wkt=info.crs_wkt,
        scene=Path(info.path).stem,
        simplify_tolerance=simplify_tolerance,
        min_area=min_area,
    )


def _count(gdf: gpd.GeoDataFrame, detections: Detections, classes: Sequence[str]) -> dict[str, int]:
    counts = dict.fromkeys(classes, 0)
    if "class" in gdf.columns:
        for name, n in gdf["class"].value_counts().items():
            counts[str(name)] = int(n)
    else:
        for label in detections.labels:
            name = classes[int(label)] if 0 <= int(label) < len(classes) else str(int(label))
            counts[name] = counts.get(name, 0) + 1
    return counts


def run_scene(
    scene_path: str | os.PathLike[str],
    predictor: Predictor,
    *,
    tile_size: int,
    overlap: int,
    bands: Sequence[int] | None = None,
    stats: NormStats | None = None,
    min_score: float = 0.0,
    class_min_score: Mapping[str, float] | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    prefetch: int = 2,
    stitch_options: Mapping[str, Any] | None = None,
    min_area_px: int = 0,
    simplify_tolerance: float = 0.0,
    min_area: float = 0.0,
    progress: ProgressCallback | None = None,
    output: str | os.PathLike[str] | None = None,
) -> SceneResult:
    """Find and outline the objects of one scene.

    Args:
        scene_path: a raster GDAL opens (GeoTIFF, COG, VRT, ``/vsicurl/`` URL...).
        predictor: any :class:`~geoseg.predict.Predictor` (e.g.
            :class:`~geoseg.predict.MaskRCNNPredictor`).
        tile_size: side of the square tiles in pixels (the model's training tile size is a
            good choice).
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile_size``; at least
            the size of the largest object that must not be cut.
        bands: 1-based bands in model-input order; ``None`` = ``stats.bands``, else the
            predictor's ``bands`` attribute if it has one, else all bands.
        stats: normalisation to apply (e.g. the model's ``meta.norm_stats``); ``None``
            computes the scene's own scene-wide statistics.
        min_score: drop per-tile detections scoring below this before stitching.
        class_min_score: per-class thresholds (class name -> score) replacing ``min_score``
            for those classes. A predictor with its own score cut-off must report detections
            down to the lowest of these.
        batch_size: tiles per predictor call.
        num_workers: reader processes (``DataLoader`` workers); 0 reads in a background
            thread of this process.
        prefetch: batches read ahead of the predictor (per worker).
        stitch_options: extra keyword arguments for :func:`geoseg.stitch.stitch` (e.g.
            ``match_iou``, ``nms_iou``, ``class_aware``, ``score_mode``).
        min_area_px: drop stitched objects with fewer mask pixels than this.
        simplify_tolerance: polygon simplification tolerance in scene-CRS units (0 = none).
        min_area: drop polygons smaller than this, in square metres (0 = keep all).
        progress: ``progress(tiles_done, tiles_total)`` after each batch and at the end.
        output: vector file to write (format from its extension: ``.gpkg``, ``.geojson``,
            ``.shp``, ``.parquet``, ``.fgb``, ``.json`` for COCO); checked for writability
            before any work.

    Returns:
        The :class:`SceneResult`.

    Raises:
        ExportError: ``output`` cannot be written (raised before any work) or has an unknown
            extension.
        RasterReadError: the scene cannot be opened or read.
        BandError: a band does not exist, or the band count differs from the model's.
        ConfigError: invalid tile size, overlap, batch size, worker count or score
            thresholds (including a per-class threshold for a class the model lacks).
    """
    from geoseg.datasets import TileDataset, tile_loader
    from geoseg.export import check_writable, write_vectors
    from geoseg.raster import open_scene

    t0 = time.perf_counter()
    out_path = None if output is None else Path(output)
    if out_path is not None:
        check_writable(out_path)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    thresholds = score_thresholds(tuple(predictor.classes), min_score, class_min_score)

    info = open_scene(scene_path)
    sel = _resolve_bands(predictor, bands, stats)
    if sel is None:
        sel = tuple(range(1, info.count + 1))
    _check_band_count(predictor, sel, info)
    dataset = TileDataset(info, tile_size=tile_size, overlap=overlap, bands=sel, stats=stats)
    total = len(dataset.specs)
    classes = tuple(predictor.classes)
    logger.info(
        "%s: %d x %d px, %d tiles of %d px (overlap %d), bands %s",
        info.path,
        info.width,
        info.height,
        total,
        tile_size,
        overlap,
        list(dataset.bands),
    )
    t_setup = time.perf_counter()

    loader = tile_loader(
        dataset,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        num_workers=num_workers,
        prefetch_factor=max(1, prefetch) if num_workers > 0 else None,
    )
    batches: Iterator[list[Any]] = (
        _Prefetcher(loader, prefetch) if num_workers == 0 and prefetch > 0 else iter(loader)
    )
    per_tile: list[TileDetections] = []
    done = 0
    try:
        for batch in batches:
            if not batch:
                continue
            preds = predictor.predict_tiles(batch)
            if len(preds) != len(batch):
                raise ValueError(
                    f"{type(predictor).__name__}.predict_tiles returned {len(preds)} results "
                    f"for {len(batch)} tiles"
                )
            per_tile.extend(filter_scores(p, thresholds) for p in preds)
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        if isinstance(batches, _Prefetcher):
            batches.close()
    if progress is not None and done < total:
        progress(total, total)  # the rest were all-invalid tiles, skipped without reading twice
    t_pred = time.perf_counter()

    detections = stitch_tiles(
        per_tile, info, stitch_options=stitch_options, min_area_px=min_area_px
    )
    t_stitch = time.perf_counter()
    gdf = vectorize_scene(
        detections, info, simplify_tolerance=simplify_tolerance, min_area=min_area
    )
    t_vec = time.perf_counter()
    if out_path is not None:
        write_vectors(gdf, out_path, scene_info=info)
        logger.info("wrote %d objects to %s", len(gdf), out_path)
    t_end = time.perf_counter()
    counts = _count(gdf, detections, classes)
    logger.info("%s: %d objects from %d tiles in %.1f s", info.path, len(gdf), done, t_end - t0)
    return SceneResult(
        detections=detections,
        gdf=gdf,
        scene=info,
        n_tiles=done,
        seconds=t_end - t0,
        counts=counts,
        tiles_total=total,
        stats=dataset.stats,
        bands=tuple(dataset.bands),
        output=out_path,
        timings={
            "setup": t_setup - t0,
            "predict": t_pred - t_setup,
            "stitch": t_stitch - t_pred,
            "vectorize": t_vec - t_stitch,
            "write": t_end - t_vec,
        },
    )
