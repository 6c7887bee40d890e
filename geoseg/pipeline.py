"""One scene end to end: plan → predict tiles → finish (stitch, vectorize, write).

:func:`run_scene` is the library form of ``geoseg predict`` and chains three steps that
``geoseg batch`` also calls on its own when it spreads a big scene over several workers:

1. :func:`plan_scene` checks the output path, opens and validates the scene, resolves the run
   settings (:mod:`geoseg.settings`: overrides > preset > checkpoint > defaults), settles the
   bands and the scene-wide normalisation, decides the ground resolution tiles are read at
   (:func:`geoseg.tiling.plan_working_grid`: the model's, unless the settings say otherwise)
   and plans the tile grid in scene pixels (a :class:`ScenePlan`);
2. :func:`predict_tiles` reads a set of tiles in a background reader so that reading overlaps
   with the model (each window resampled to the working GSD while it is read, when the
   scene's differs), sends batches to any :class:`~geoseg.predict.Predictor`, keeps the
   detections that pass the score filter and maps them back to the scene pixels of their
   window (boxes in **tile pixels**);
3. :func:`finish_scene` stitches the per-tile detections into scene objects (**scene
   pixels**), turns them into polygons in the **scene CRS**, counts them per class and writes
   them atomically in the format the output's extension names.

Memory does not grow with the scene's pixel count: only ``prefetch`` batches of tiles are in
memory at once, and detections keep their masks cropped to their boxes.
"""

from __future__ import annotations

import dataclasses
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

from geoseg.config import check_class_names, check_class_scores
from geoseg.errors import BandError, ConfigError
from geoseg.predict import Predictor, check_predictor
from geoseg.settings import NormSource, OutputGeometry, RunSettings, resolve
from geoseg.storage import as_target
from geoseg.tiling import (
    WorkingGrid,
    check_tile_memory,
    detections_to_window,
    make_grid,
    plan_working_grid,
)
from geoseg.types import Detections, NormStats, SceneInfo, TileDetections, TileSpec

if TYPE_CHECKING:
    import geopandas as gpd

    from geoseg.partial import PartialResults

__all__ = [
    "ProgressCallback",
    "ScenePlan",
    "SceneResult",
    "check_classes",
    "check_output_geometry",
    "count_classes",
    "filter_scores",
    "finish_scene",
    "keep_objects",
    "model_identity",
    "output_geometry",
    "plan_scene",
    "predict_tiles",
    "run_scene",
    "scene_grid",
    "score_thresholds",
    "settings_for",
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
        tiles_total: tiles to predict: the grid's, or those meeting the extent
            (``settings.extent``), including skipped all-invalid ones.
        stats: the normalisation the tiles were stretched with.
        bands: the 1-based bands read, in model-input order.
        output: the file written (a URL string for an object-store output), or ``None``.
        mask_raster: the instance-id raster written, or ``None``.
        settings: the run settings used.
        timings: wall seconds per stage (``setup``, ``predict`` (reading included),
            ``stitch``, ``vectorize``, ``write``).
        grid: the GSD the scene was read at and its tile sizes in scene and working pixels.
        resumed_tiles: tiles taken from the partial results of an interrupted run
            (``run_scene(resume=True)``), not predicted again.
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
    output: Path | str | None = None
    settings: RunSettings | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    grid: WorkingGrid | None = None
    mask_raster: Path | None = None
    resumed_tiles: int = 0

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


@dataclass(frozen=True, eq=False)
class ScenePlan:
    """What :func:`plan_scene` settled for one scene before any tile is predicted.

    A plan holds no file handle and pickles small, so it can be sent to other processes (batch
    sends it to the workers that predict chunks of a big scene's tiles).

    Attributes:
        info: the scene's description (size, transform, CRS, nodata).
        settings: the run settings in force.
        bands: 1-based bands read, in model-input order.
        stats: the scene-wide normalisation tiles are stretched with.
        specs: the whole tile grid in row-major order (``specs[i].index == i``), **scene
            pixels** (windows of ``grid.scene_tile``).
        classes: the predictor's class names (labels index into them).
        output: the vector file :func:`finish_scene` writes (a local ``Path``, or a URL
            string such as ``s3://bucket/run/out.gpkg``), or ``None``.
        grid: the GSD tiles are read at: window and overlap sizes in scene pixels and the
            tile size the model sees (``None``: ``settings.tile_size``, read as it is).
        tiles: the grid indexes to predict (row-major): those whose window meets
            ``settings.extent`` (:func:`geoseg.extent.select_tiles`); ``None``: all of them.
        mask_raster: the instance-id GeoTIFF (COG) :func:`finish_scene` writes, or ``None``.
    """

    info: SceneInfo
    settings: RunSettings
    bands: tuple[int, ...]
    stats: NormStats
    specs: tuple[TileSpec, ...]
    classes: tuple[str, ...]
    output: Path | str | None = None
    grid: WorkingGrid | None = None
    tiles: tuple[int, ...] | None = None
    mask_raster: Path | None = None

    @property
    def thresholds(self) -> npt.NDArray[np.float32]:
        """Per-label score thresholds, float32 ``[len(classes)]``.

        A class left out by ``settings.classes`` gets ``inf`` (dropped in each tile), unless
        stitching is class-agnostic: then every class takes part in the merge and the
        classes are filtered after it (:func:`stitch_tiles`).
        """
        s = self.settings
        out = score_thresholds(self.classes, s.min_score, s.class_min_score)
        if s.classes is not None and not s.class_agnostic:
            out[[c not in s.classes for c in self.classes]] = np.inf
        return out

    @property
    def tile_indexes(self) -> tuple[int, ...]:
        """The grid indexes to predict: :attr:`tiles`, or the whole grid."""
        return tuple(range(len(self.specs))) if self.tiles is None else self.tiles

    @property
    def kept_classes(self) -> tuple[str, ...]:
        """The classes written: ``settings.classes`` in the model's order, or all of them."""
        keep = self.settings.classes
        return self.classes if keep is None else tuple(c for c in self.classes if c in keep)


def settings_for(
    predictor: Predictor, settings: RunSettings | None = None, **overrides: Any
) -> RunSettings:
    """The settings a run uses.

    ``settings`` with ``overrides`` applied, or, when ``settings`` is ``None``,
    :func:`geoseg.settings.resolve` from the predictor's checkpoint facts (its tile size and
    recommended score thresholds) and the overrides.

    Raises:
        ConfigError: an unknown setting name or an invalid value.
    """
    if settings is None:
        return resolve(predictor, **overrides)
    given = {k: v for k, v in overrides.items() if v is not None}
    return settings.replace(**given) if given else settings


def _model_stats(predictor: Predictor, bands: tuple[int, ...], info: SceneInfo) -> NormStats:
    """The predictor's training statistics, applied to the selected bands."""
    ns = predictor.norm_stats
    if ns is None:
        raise ConfigError(
            f"{info.path}: the model has no normalisation statistics to normalise with; "
            "use the scene's own (norm='scene', --norm scene)"
        )
    if len(ns.low) != len(bands):
        raise BandError(
            f"{info.path}: the model's statistics cover {len(ns.low)} band(s) but "
            f"{len(bands)} band(s) {list(bands)} are selected"
        )
    return NormStats(
        bands=bands,
        low=ns.low,
        high=ns.high,
        percentiles=ns.percentiles,
        source_dtype=ns.source_dtype,
    )


def scene_grid(
    info: SceneInfo, settings: RunSettings, *, model_gsd: float | None, n_bands: int
) -> WorkingGrid:
    """The working grid of a scene under ``settings``, refused when its tiles would not fit.

    :func:`geoseg.tiling.plan_working_grid` (tile size and overlap at the working GSD, the
    scene's own or the model's) followed by :func:`geoseg.tiling.check_tile_memory` for
    ``n_bands`` bands and the settings' batch size. :func:`plan_scene` and ``geoseg
    predict``'s early checks make the same decision through this function.

    Raises:
        ConfigError: no usable GSD, a bad tile size/overlap, or tiles too large for memory.
    """
    grid = plan_working_grid(
        info,
        tile_size=settings.tile_size,
        overlap=settings.overlap,
        model_gsd=model_gsd,
        gsd=settings.gsd,
        resample=settings.resample,
    )
    check_tile_memory(grid.tile_size, bands=n_bands, batch_size=settings.batch_size or 1)
    return grid


def plan_scene(
    scene: str | os.PathLike[str] | SceneInfo,
    predictor: Predictor,
    settings: RunSettings | None = None,
    *,
    stats: NormStats | None = None,
    output: str | os.PathLike[str] | None = None,
    mask_raster: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> ScenePlan:
    """Step 1 of :func:`run_scene`: check, open, choose bands and normalisation, plan the grid.

    Everything that can fail on bad input fails here, before any tile is read: an unwritable
    ``output``, a scene that is not a raster, a missing band, a band count the model does not
    take, an invalid setting, a score threshold or a kept class (``classes``) the model lacks.
    With ``settings.extent``, only the tiles whose window meets the extent are planned
    (:attr:`ScenePlan.tiles`; none when it misses the scene, with a warning).

    Args:
        scene: a raster GDAL opens (GeoTIFF, COG, VRT, ``/vsicurl/`` URL...), or its
            :class:`~geoseg.types.SceneInfo`.
        predictor: the model (its ``bands`` and ``norm_stats`` are used when the settings do
            not choose).
        settings: the run settings; ``None`` resolves them from the predictor's checkpoint
            (see :func:`settings_for`).
        stats: normalisation to apply, overriding ``settings.norm``; ``None`` computes the
            scene's own scene-wide statistics (``norm="scene"``) or takes the model's
            (``norm="model"``).
        output: the vector file to write at the end (format from its extension).
        mask_raster: a ``.tif`` to write at the end: the objects' instance ids (uint32, 0 =
            background, the output's ``id`` column) as a COG on the scene's grid.
        **overrides: :class:`~geoseg.settings.RunSettings` fields, e.g. ``tile_size=256``.

    Returns:
        The :class:`ScenePlan`.

    Raises:
        ExportError: ``output`` cannot be written or has an unknown extension.
        RasterReadError: the scene cannot be opened.
        BandError: a band does not exist, or the band count differs from the model's.
        ConfigError: an invalid setting, score threshold or class name, an extent that
            cannot be placed on the scene, or point geometry for a COCO output.
    """
    from geoseg.export import check_id_raster_path, check_scene_output, check_writable
    from geoseg.extent import extent_in_scene, select_tiles
    from geoseg.raster import compute_norm_stats, open_scene, validate_bands

    predictor = check_predictor(predictor)
    s = settings_for(predictor, settings, **overrides)
    out_path = None if output is None else as_target(output)
    if out_path is not None:
        check_writable(out_path)
        check_output_geometry(out_path, s)
    mask_path = None if mask_raster is None else Path(mask_raster)
    if mask_path is not None:
        check_id_raster_path(mask_path)
    classes = tuple(predictor.classes)
    score_thresholds(classes, s.min_score, s.class_min_score)  # validate before any work
    check_classes(classes, s.classes)
    if s.regularize:
        from geoseg.regularize import regularize_classes

        regularize_classes(s.regularize, classes)
    info = scene if isinstance(scene, SceneInfo) else open_scene(scene)
    if out_path is not None:
        check_scene_output(out_path, info)
    wanted = s.bands or (None if stats is None else tuple(stats.bands)) or predictor.bands
    sel = validate_bands(info, wanted)
    model_bands = predictor.bands
    if model_bands is not None and len(model_bands) != len(sel):
        raise BandError(
            f"{info.path}: the model expects {len(model_bands)} band(s) (it was trained on "
            f"bands {list(model_bands)}) but {len(sel)} band(s) {list(sel)} are selected; "
            f"choose {len(model_bands)} bands with --bands/bands=..."
        )
    if stats is not None:
        if tuple(stats.bands) != sel:
            raise BandError(
                f"{info.path}: the normalisation statistics are for bands {list(stats.bands)}, "
                f"not the selected bands {list(sel)}"
            )
        norm = stats
    elif s.norm is NormSource.MODEL:
        norm = _model_stats(predictor, sel, info)
    else:
        norm = compute_norm_stats(info, bands=sel)
    grid = scene_grid(info, s, model_gsd=predictor.gsd, n_bands=len(sel))
    specs = tuple(
        make_grid(info.width, info.height, tile_size=grid.scene_tile, overlap=grid.scene_overlap)
    )
    tiles = None
    if s.extent is not None:
        tiles = select_tiles(specs, extent_in_scene(s.extent, info), info)
        logger.info(
            "%s: %s; %d of %d tiles meet it", info.path, s.extent.describe(), len(tiles), len(specs)
        )
        if not tiles:
            logger.warning("%s: the extent misses the scene; nothing to predict", info.path)
    logger.info("%s: %s", info.path, grid.describe())
    logger.info(
        "%s: %d x %d px, %d tiles, bands %s; %s",
        info.path,
        info.width,
        info.height,
        len(specs),
        list(sel),
        s.describe(),
    )
    return ScenePlan(
        info=info,
        settings=s,
        bands=sel,
        stats=norm,
        specs=specs,
        classes=classes,
        output=out_path,
        grid=grid,
        tiles=tiles,
        mask_raster=mask_path,
    )


def check_output_geometry(path: Path | str, settings: RunSettings) -> None:
    """Refuse point geometry for a COCO output (COCO objects are polygons).

    Raises:
        ConfigError: naming the output and the formats that hold points.
    """
    from geoseg.io import VectorFormat, format_for_path

    if settings.geometry is OutputGeometry.POINT and format_for_path(path) is VectorFormat.COCO:
        raise ConfigError(
            f"{path}: COCO JSON holds object outlines, not points; write points to .gpkg, "
            ".geojson, .fgb, .parquet or .shp, or use --geometry mask/box"
        )


def check_classes(model_classes: Sequence[str], keep: Sequence[str] | None) -> None:
    """Refuse kept class names (``settings.classes``) the model does not have.

    :func:`geoseg.config.check_class_names`, the rule of every class option.

    Raises:
        ConfigError: naming the unknown classes and the model's classes.
    """
    if keep is not None:
        check_class_names(
            keep, model_classes, option="classes (--classes)", known_as="the model's classes"
        )


def predict_tiles(
    plan: ScenePlan,
    predictor: Predictor,
    indexes: Sequence[int] | None = None,
    *,
    num_workers: int = 0,
    prefetch: int = 2,
    progress: ProgressCallback | None = None,
    on_batch: Callable[[list[TileDetections]], None] | None = None,
) -> list[TileDetections]:
    """Step 2 of :func:`run_scene`: read and predict a set of the plan's tiles.

    Tiles are read in a background reader (a :class:`torch.utils.data.DataLoader` with worker
    processes, or a reader thread when ``num_workers == 0``) so that reading overlaps with the
    model; tiles without a valid pixel are skipped; detections below their class's score
    threshold are dropped here, so only kept detections (masks cropped to their boxes) travel.
    When the plan reads the scene at another GSD (``plan.grid.resampled``), the predictor sees
    ``tile_size`` working pixels per tile and its detections are mapped back to the scene
    pixels of the tile's window (:func:`geoseg.tiling.detections_to_window`) here.

    Args:
        plan: from :func:`plan_scene`.
        predictor: the model (the same one the plan was made with).
        indexes: grid indexes to predict (``None``: the plan's, :attr:`ScenePlan.tiles`:
            all, or those meeting the extent); batch predicts chunks of a big scene on
            several workers this way.
        num_workers: reader processes; 0 reads in a background thread of this process.
        prefetch: batches read ahead of the predictor (per worker).
        progress: ``progress(tiles_done, tiles_total)`` after each batch and at the end
            (counting the tiles of ``indexes``).
        on_batch: called with each batch's kept detections (tile pixels, ``tile`` set) as
            soon as it is predicted; :func:`run_scene` stores them in its partial results.

    Returns:
        One :class:`~geoseg.types.TileDetections` per tile read (boxes in **tile pixels**:
        scene pixels relative to the tile's window, whatever GSD the model saw; ``tile``
        set), in reading order.

    Raises:
        RasterReadError: the scene cannot be read.
        ConfigError: ``num_workers < 0``.
        ValueError: the predictor returned a wrong number of results.
    """
    from geoseg.datasets import TileDataset, tile_loader

    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    s = plan.settings
    if indexes is None:
        indexes = plan.tiles
    batch_size = s.batch_for(predictor.device_type)
    grid = plan.grid
    if grid is None:
        tile: int | tuple[int, int] = s.tile_size
        over: int | tuple[int, int] = s.overlap
        out_size = None
    else:
        tile, over, out_size = grid.scene_tile, grid.scene_overlap, grid.out_size
    dataset = TileDataset(
        plan.info,
        tile_size=tile,
        overlap=over,
        bands=plan.bands,
        stats=plan.stats,
        indexes=indexes,
        out_size=out_size,
    )
    total = len(dataset.specs)
    loader = tile_loader(
        dataset,
        tile_size=tile,
        overlap=over,
        batch_size=batch_size,
        num_workers=num_workers,
        prefetch_factor=max(1, prefetch) if num_workers > 0 else None,
    )
    batches: Iterator[list[Any]] = (
        _Prefetcher(loader, prefetch) if num_workers == 0 and prefetch > 0 else iter(loader)
    )
    thresholds = plan.thresholds
    per_tile: list[TileDetections] = []
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
            kept = [
                filter_scores(
                    p if p.tile is not None else dataclasses.replace(p, tile=t.spec), thresholds
                )
                for p, t in zip(preds, batch, strict=True)
            ]
            if out_size is not None:  # working pixels -> scene pixels of each tile's window
                kept = [detections_to_window(d, (out_size, out_size)) for d in kept]
            per_tile.extend(kept)
            if on_batch is not None:
                on_batch(kept)
            if progress is not None:
                progress(len(per_tile), total)
    finally:
        if isinstance(batches, _Prefetcher):
            batches.close()
        else:  # end the reader processes now, also on an interrupt (not at garbage collection)
            shutdown = getattr(batches, "_shutdown_workers", None)
            if callable(shutdown):
                shutdown()
    if progress is not None and len(per_tile) < total:
        progress(total, total)  # the rest were all-invalid tiles, skipped without reading twice
    return per_tile


def finish_scene(plan: ScenePlan, per_tile: Iterable[TileDetections]) -> SceneResult:
    """Step 3 of :func:`run_scene`: stitch, vectorize, count and write the plan's output.

    Objects are stitched (:func:`stitch_tiles`: kept classes only), outlined
    (:func:`vectorize_scene`: one ``Polygon`` each), kept by the extent and numbered
    (:func:`keep_objects`), and given the settings' geometry (:func:`output_geometry`); the
    id raster, when asked for, is rasterised from the outlines before they are turned into
    boxes or points.

    Args:
        plan: from :func:`plan_scene`.
        per_tile: every tile's detections (from one or several :func:`predict_tiles` calls,
            in any order).

    Returns:
        The :class:`SceneResult`; ``seconds`` and ``timings`` cover this step only
        (``stitch``, ``vectorize``, ``write``).

    Raises:
        ExportError: the output cannot be written.
    """
    from geoseg.export import write_id_raster, write_vectors

    t0 = time.perf_counter()
    s, info = plan.settings, plan.info
    tiles = list(per_tile)
    detections = stitch_tiles(tiles, info, settings=s)
    t_stitch = time.perf_counter()
    gdf = keep_objects(vectorize_scene(detections, info, settings=s), info, settings=s)
    if plan.mask_raster is not None:  # from the outlines, before boxes or points
        write_id_raster(gdf, plan.mask_raster, info)
    gdf = output_geometry(gdf, info, settings=s)
    t_vec = time.perf_counter()
    if plan.output is not None:
        write_vectors(gdf, plan.output, scene_info=info)
        logger.info("wrote %d objects to %s", len(gdf), plan.output)
    t_end = time.perf_counter()
    return SceneResult(
        detections=detections,
        gdf=gdf,
        scene=info,
        n_tiles=len(tiles),
        seconds=t_end - t0,
        counts=count_classes(gdf, plan.kept_classes),
        tiles_total=len(plan.tile_indexes),
        stats=plan.stats,
        bands=plan.bands,
        output=plan.output,
        settings=s,
        timings={"stitch": t_stitch - t0, "vectorize": t_vec - t_stitch, "write": t_end - t_vec},
        grid=plan.grid,
        mask_raster=plan.mask_raster,
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
    per_tile: Iterable[TileDetections], info: SceneInfo, *, settings: RunSettings
) -> Detections:
    """Stitch one scene's per-tile detections (any order) into scene objects.

    Tiles are put in grid order first so the result does not depend on the order in which
    tiles (or chunks of tiles from several workers) arrived. Objects with fewer than
    ``settings.min_area_px`` mask pixels are dropped, and so are objects of classes
    ``settings.classes`` leaves out (after a class-agnostic merge, the merged object's class).

    Returns:
        Detections in **scene pixels**.
    """
    from geoseg.stitch import stitch

    ordered = sorted(per_tile, key=lambda d: -1 if d.tile is None else d.tile.index)
    detections = stitch(
        ordered, scene_width=info.width, scene_height=info.height, **settings.stitch_kwargs()
    )
    if settings.min_area_px > 0 and len(detections):
        detections = detections[detections.mask_areas() >= settings.min_area_px]
    if settings.classes is not None and len(detections):
        keep = np.array([c in settings.classes for c in detections.classes], dtype=bool)
        detections = detections[keep[detections.labels]]
    return detections


def vectorize_scene(
    detections: Detections, info: SceneInfo, *, settings: RunSettings
) -> gpd.GeoDataFrame:
    """Polygons in the scene CRS for a scene's stitched detections (``scene`` = file stem).

    :func:`geoseg.vectorize.vectorize`, then, when ``settings.regularize`` names classes,
    :func:`geoseg.regularize.regularize` on their outlines (right angles measured on the
    ground: the pixel's ground aspect comes from :func:`geoseg.raster.ground_sample_distance_m`).
    """
    from geoseg.vectorize import vectorize

    gdf = vectorize(
        detections,
        transform=info.transform,
        crs_wkt=info.crs_wkt,
        scene=Path(info.path).stem,
        simplify_tolerance=settings.simplify_tolerance,
        min_area_m2=settings.min_area_m2,
    )
    if not settings.regularize:
        return gdf
    from geoseg.raster import ground_sample_distance_m
    from geoseg.regularize import regularize, regularize_classes

    names = (
        regularize_classes(settings.regularize, detections.classes)
        if detections.classes
        else settings.regularize
    )
    if info.crs_wkt is not None:
        gx, gy = ground_sample_distance_m(info)
    else:
        gx, gy = abs(info.transform.a), abs(info.transform.e)
    return regularize(
        gdf,
        classes=names,
        transform=info.transform,
        pixel_aspect=gx / gy,
        min_iou=settings.regularize_min_iou,
    )


def keep_objects(
    gdf: gpd.GeoDataFrame, info: SceneInfo, *, settings: RunSettings
) -> gpd.GeoDataFrame:
    """The objects the extent keeps, numbered: the rows of the output and of the id raster.

    Args:
        gdf: outlines in the **scene CRS** from :func:`vectorize_scene`.
        info: the scene.
        settings: its ``extent`` drops the objects whose centroid in metres lies outside
            (:func:`geoseg.extent.keep_in_extent`, ``geoseg count``'s zone rule).

    Returns:
        The kept objects with an ``id`` column first (1, 2, ... in row order; the values of
        the id raster) and ``attrs["geometry_type"] = "Polygon"`` (the layer's one type, also
        when there are no objects).
    """
    from geoseg.extent import extent_in_scene, keep_in_extent

    if settings.extent is not None and len(gdf):
        gdf = gdf[keep_in_extent(gdf, extent_in_scene(settings.extent, info))]
    gdf = gdf.reset_index(drop=True)
    gdf.insert(0, "id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    gdf.attrs["geometry_type"] = "Polygon"
    return gdf


def output_geometry(
    gdf: gpd.GeoDataFrame, info: SceneInfo, *, settings: RunSettings
) -> gpd.GeoDataFrame:
    """The objects in the geometry ``settings.geometry`` asks for (attributes unchanged).

    ``mask``: ``gdf`` as it is; ``box``: each outline's pixel box in the scene CRS
    (:func:`geoseg.geometry.pixel_boxes`); ``point``: the centroid ``geoseg count`` places
    the object by (:func:`geoseg.count.zone_points`), in the scene CRS, and
    ``attrs["geometry_type"] = "Point"``.
    """
    import geopandas

    from geoseg.geometry import pixel_boxes

    if settings.geometry is OutputGeometry.MASK:
        return gdf
    out = gdf.copy()
    if settings.geometry is OutputGeometry.BOX:
        geoms = pixel_boxes(gdf.geometry.to_numpy(), info.transform)
    else:
        from geoseg.count import zone_points

        points = zone_points(gdf)
        geoms = (points if gdf.crs is None else points.to_crs(gdf.crs)).to_numpy()
        out.attrs["geometry_type"] = "Point"
    out[gdf.geometry.name] = geopandas.GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
    return out


def count_classes(gdf: gpd.GeoDataFrame, classes: Sequence[str]) -> dict[str, int]:
    """Objects per class name.

    Every class of ``classes`` (zeros included), then any other class in ``gdf["class"]``.
    """
    counts = dict.fromkeys(classes, 0)
    if len(gdf) and "class" in gdf.columns:
        for name, n in gdf["class"].value_counts().items():
            counts[str(name)] = int(n)
    return counts


def run_scene(
    scene: str | os.PathLike[str],
    predictor: Predictor,
    settings: RunSettings | None = None,
    *,
    stats: NormStats | None = None,
    output: str | os.PathLike[str] | None = None,
    mask_raster: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    prefetch: int = 2,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    model_id: str | None = None,
    **overrides: Any,
) -> SceneResult:
    """Find and outline the objects of one scene.

    Chains :func:`plan_scene`, :func:`predict_tiles` and :func:`finish_scene`. With no
    settings, the run uses what ``geoseg predict`` would with the same model: the checkpoint's
    tile size and recommended per-class score thresholds, else the defaults (see
    :func:`geoseg.settings.resolve`). Keyword overrides change single settings.

    Args:
        scene: a raster GDAL opens (GeoTIFF, COG, VRT, ``/vsicurl/`` URL...).
        predictor: any :class:`~geoseg.predict.Predictor` (e.g.
            :func:`geoseg.predict.load_predictor`).
        settings: the run settings (:func:`geoseg.settings.resolve`); ``None``: from the
            predictor's checkpoint.
        stats: normalisation to apply instead of the one ``settings.norm`` chooses.
        output: vector file to write (format from its extension: ``.gpkg``, ``.geojson``,
            ``.shp``, ``.parquet``, ``.fgb``; ``.json`` is COCO); checked before any work. A
            URL (``s3://bucket/run/out.gpkg``) is written once, complete
            (:mod:`geoseg.storage`).
        mask_raster: also write the objects' instance ids (the output's ``id`` column) to
            this ``.tif``, a COG on the scene's grid (:func:`geoseg.export.write_id_raster`).
        num_workers: reader processes (``DataLoader`` workers); 0 reads in a thread.
        prefetch: batches read ahead of the predictor (per worker).
        progress: ``progress(tiles_done, tiles_total)`` after each batch and at the end
            (tiles taken from partial results count as done from the start).
        resume: keep each batch's detections in the partial-results file of ``output``
            (:func:`geoseg.partial.partial_path`: ``OUT.partial``) as they are predicted,
            predict only the tiles missing from it, and delete it once ``output`` is written.
            A file made with other settings, another model or another scene is started over
            (a warning is logged). The result equals an uninterrupted run's. Needs ``output``.
        model_id: what identifies the model's weights in the resume key (e.g. the SHA-256 of
            the checkpoint's sidecar, which records the weights' SHA-256); ``None``: taken
            from the predictor's checkpoint metadata (``predictor.meta``).
        **overrides: :class:`~geoseg.settings.RunSettings` fields (``tile_size=256``,
            ``min_score=0.3``, ``class_min_score={"vehicle": 0.4}``, ``norm="model"``,
            ``classes=("ship",)``, ``class_agnostic=True``, ``geometry="box"``,
            ``extent=read_aoi("harbour.gpkg")``...).

    Returns:
        The :class:`SceneResult`.

    Raises:
        ExportError: ``output`` cannot be written (raised before any work).
        RasterReadError: the scene cannot be opened or read.
        BandError: a band does not exist, or the band count differs from the model's.
        ConfigError: an invalid setting (including a per-class threshold for a class the
            model lacks); ``resume`` without ``output``, or without a model identity.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from geoseg.predict import load_predictor
        >>> from geoseg.samples import demo_model_path
        >>> from geoseg.synth import generate_scene
        >>> scene = generate_scene(Path(tempfile.mkdtemp()) / "s.tif", size=200, seed=3,
        ...                        layout="marina")
        >>> predictor = load_predictor(demo_model_path())
        >>> result = run_scene(scene.raster_path, predictor)
        >>> result.settings.tile_size == predictor.tile_size  # the checkpoint's choice
        True
        >>> sorted(result.counts), result.gdf.crs == scene.crs_wkt
        (['building', 'ship', 'vehicle'], True)
    """
    t0 = time.perf_counter()
    if resume and output is None:
        raise ConfigError("resume=True keeps partial results next to the output: give output=")
    plan = plan_scene(
        scene,
        predictor,
        settings,
        stats=stats,
        output=output,
        mask_raster=mask_raster,
        **overrides,
    )
    t_plan = time.perf_counter()
    store = _open_partial(plan, predictor, model_id) if resume else None
    try:
        kept = [] if store is None else store.load(plan.specs)
        wanted = plan.tile_indexes
        todo = None if store is None else [i for i in wanted if i not in store.done]
        if store is not None and kept:
            logger.info(
                "%s: resuming from %s: %d of %d tiles already predicted",
                plan.info.path,
                store.path,
                len(kept),
                len(wanted),
            )
        if todo == []:
            per_tile = kept
            if progress is not None:
                progress(len(wanted), len(wanted))
        else:
            offset = len(kept)

            def shifted(done: int, _total: int) -> None:
                if progress is not None:
                    progress(offset + done, len(wanted))

            if progress is not None and offset:
                progress(offset, len(wanted))
            per_tile = kept + predict_tiles(
                plan,
                predictor,
                todo,
                num_workers=num_workers,
                prefetch=prefetch,
                progress=shifted if progress is not None else None,
                on_batch=None if store is None else store.add,
            )
        t_pred = time.perf_counter()
        result = finish_scene(plan, per_tile)
    except BaseException:
        if store is not None and store.done:
            store.close()  # kept for the next run
        elif store is not None:
            store.remove()  # nothing worth keeping
        raise
    if store is not None:
        store.remove()
    t_end = time.perf_counter()
    logger.info(
        "%s: %d objects from %d tiles in %.1f s",
        plan.info.path,
        len(result.gdf),
        result.n_tiles,
        t_end - t0,
    )
    return dataclasses.replace(
        result,
        seconds=t_end - t0,
        timings={"setup": t_plan - t0, "predict": t_pred - t_plan, **result.timings},
        resumed_tiles=len(kept),
    )


def model_identity(predictor: Predictor) -> str | None:
    """A digest of the predictor's checkpoint metadata (``predictor.meta``), or ``None``."""
    import hashlib
    import json

    meta = getattr(predictor, "meta", None)
    to_dict = getattr(meta, "to_dict", None)
    if not callable(to_dict):
        return None
    text = json.dumps(to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _open_partial(plan: ScenePlan, predictor: Predictor, model_id: str | None) -> PartialResults:
    """The plan's partial-results file, opened under its resume key."""
    from geoseg.partial import PartialResults, partial_path, resume_key

    assert plan.output is not None  # checked by run_scene
    ident = model_id or model_identity(predictor)
    if ident is None:
        raise ConfigError(
            f"{type(predictor).__name__} has no checkpoint metadata to tell its weights apart; "
            "pass model_id= (e.g. the checkpoint's SHA-256) to resume, or resume=False"
        )
    key = resume_key(
        settings_digest=plan.settings.digest(),
        model_id=ident,
        info=plan.info,
        stats=plan.stats,
        bands=plan.bands,
        classes=plan.classes,
        specs=plan.specs,
    )
    return PartialResults.open(
        partial_path(plan.output), key, scene=plan.info.path, tiles_total=len(plan.tile_indexes)
    )
