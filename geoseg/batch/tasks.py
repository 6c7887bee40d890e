"""The dask tasks of a batch, run on the workers, and each worker's model cache.

Every task is built from :mod:`geoseg.pipeline`'s steps, so a scene gives in a batch exactly
what :func:`~geoseg.pipeline.run_scene` gives with the same settings:

* :func:`process_scene`: a whole scene with :func:`~geoseg.pipeline.run_scene`;
* a split scene: :func:`plan_split` (:func:`~geoseg.pipeline.plan_scene` on one worker; a
  scene too small to split is finished right there), then :func:`predict_chunk` per chunk of
  tile indexes on all workers (:func:`~geoseg.pipeline.predict_tiles`), then
  :func:`finish_split` (:func:`~geoseg.pipeline.finish_scene`: stitch, vectorize, count,
  write).

Input errors (a corrupt or unreadable scene, wrong bands, a bad setting: any
:class:`~geoseg.errors.GeosegError` or rasterio error) end a task with a failed
:class:`~geoseg.batch.manifest.SceneRecord`; anything else propagates, so that dask retries it.

The model is loaded once per worker process, not per scene: :func:`predictor_for` keeps the
last models used in a process-wide cache keyed by the checkpoint's SHA-256, the lowest score
threshold and the device (:func:`worker_cache_info` reports it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.batch.cluster import worker_name
from geoseg.batch.inputs import SceneInput
from geoseg.batch.manifest import SceneRecord, SceneStatus, file_sha256, utc_now
from geoseg.errors import CheckpointError, GeosegError
from geoseg.settings import RunSettings
from geoseg.storage import Target, as_target, join, write_output
from geoseg.storage import size as target_size

if TYPE_CHECKING:
    import geopandas as gpd

    from geoseg.pipeline import ScenePlan, SceneResult
    from geoseg.predict import Predictor
    from geoseg.types import TileDetections

__all__ = [
    "ChunkResult",
    "Job",
    "PlannedScene",
    "QuicklookWriter",
    "chunk_indexes",
    "error_text",
    "failed_record",
    "finish_split",
    "plan_split",
    "predict_chunk",
    "predictor_for",
    "process_scene",
    "tile_reporter",
    "worker_cache_info",
]

logger = logging.getLogger(__name__)

#: ``writer(scene_path, gdf, png_path)``: draws one scene's objects into ``png_path``. Called
#: on the worker after each scene; it must pickle (a module-level function, or a
#: :func:`functools.partial` of one).
QuicklookWriter = Callable[[str, "gpd.GeoDataFrame", Path], object]

_MAX_CACHED_MODELS = 2


@dataclass(frozen=True, slots=True)
class Job:
    """What every task of a run needs besides its scene (small, pickled with each task).

    Attributes:
        model: the checkpoint's weights file (readable by every worker).
        model_sha256: its SHA-256; a worker refuses a checkpoint that changed since.
        settings: the run settings (``settings.device`` is where each worker loads the model).
        config_hash: the manifest's config hash (settings digest + checkpoint sidecar).
        out_dir: the output folder (a local path or an object-store URL).
        ext: the per-scene output extension (``.gpkg``...).
        quicklook: the quicklook writer, or ``None`` for no quicklooks.
        progress_topic: the dask event topic tasks report their tiles on
            (:func:`tile_reporter`); ``None``: no per-tile reports.
    """

    model: str
    model_sha256: str
    settings: RunSettings
    config_hash: str
    out_dir: str
    ext: str
    quicklook: QuicklookWriter | None = None
    progress_topic: str | None = None

    def settings_for(self, scene: SceneInput) -> RunSettings:
        """The settings of one scene: the run's, with its own area of a per-scene AOI."""
        s = self.settings
        if s.extent is None or not s.extent.by_scene:
            return s
        return s.replace(extent=s.extent.for_scene(scene.name))

    def output_for(self, scene: SceneInput) -> Target:
        """``OUTDIR/<scene>.<ext>`` (a URL string when the output folder is one)."""
        return join(as_target(self.out_dir), f"{scene.name}{self.ext}")

    def quicklook_for(self, scene: SceneInput) -> Target | None:
        """``OUTDIR/quicklooks/<scene>.png`` when quicklooks are asked for, else ``None``."""
        if self.quicklook is None:
            return None
        return join(as_target(self.out_dir), "quicklooks", f"{scene.name}.png")


@dataclass(frozen=True, eq=False)
class PlannedScene:
    """A split scene's plan, made on a worker by :func:`plan_split` and sent to the others.

    Attributes:
        plan: the :class:`~geoseg.pipeline.ScenePlan` (statistics, grid, output).
        seconds: wall time of the planning task.
        model_loaded: whether the planning task loaded the model.
    """

    plan: ScenePlan
    seconds: float
    model_loaded: bool


@dataclass(frozen=True, eq=False)
class ChunkResult:
    """Detections of one chunk of a split scene's tiles (tile pixels, cropped masks).

    Attributes:
        detections: kept detections of each tile read.
        n_tiles: tiles read (all-invalid tiles are skipped).
        seconds: wall time of the chunk task.
        model_loaded: whether the chunk task loaded the model.
    """

    detections: tuple[TileDetections, ...]
    n_tiles: int
    seconds: float
    model_loaded: bool


# --------------------------------------------------------------------------------------------
# model cache

_CACHE_LOCK = threading.Lock()
_PREDICTORS: OrderedDict[tuple[str, float, str], Predictor] = OrderedDict()
_LOADS: dict[str, int] = {}


def worker_cache_info() -> dict[str, Any]:
    """What this process's model cache holds (run it on workers with ``client.run``).

    Returns:
        ``{"pid": ..., "cached": [model sha256, ...], "loads": {sha256: times loaded}}``.
    """
    with _CACHE_LOCK:
        return {
            "pid": os.getpid(),
            "cached": [key[0] for key in _PREDICTORS],
            "loads": dict(_LOADS),
        }


def predictor_for(job: Job) -> tuple[Predictor, bool]:
    """The job's predictor from this process's cache, loading it on first use.

    It is loaded with :func:`geoseg.predict.load_predictor` for ``job.settings``: on
    ``settings.device`` (``auto``: the worker's pinned GPU, else the CPU), reporting
    detections down to the lowest score threshold.

    Returns:
        ``(predictor, loaded)`` where ``loaded`` says whether this call loaded the model.

    Raises:
        CheckpointError: the checkpoint changed since the run started, or cannot be loaded.
        ConfigError: the settings' device is not available on this worker.
    """
    from geoseg.predict import load_predictor

    s = job.settings
    key = (job.model_sha256, s.lowest_score(), s.device)
    with _CACHE_LOCK:
        cached = _PREDICTORS.get(key)
        if cached is not None:
            _PREDICTORS.move_to_end(key)
            return cached, False
        try:
            digest = file_sha256(job.model)
        except OSError as err:
            raise CheckpointError(
                f"{job.model}: cannot be read on worker {worker_name()} ({err}); the checkpoint "
                "must be readable by every worker (use a shared file system)"
            ) from err
        if digest != job.model_sha256:
            raise CheckpointError(
                f"{job.model}: the checkpoint changed since the batch started (SHA-256 "
                "differs); rerun the batch"
            )
        t0 = time.perf_counter()
        predictor = load_predictor(job.model, s)
        _PREDICTORS[key] = predictor
        _LOADS[job.model_sha256] = _LOADS.get(job.model_sha256, 0) + 1
        while len(_PREDICTORS) > _MAX_CACHED_MODELS:
            _PREDICTORS.popitem(last=False)
        logger.info(
            "worker %s (pid %d) loaded model %s on %s in %.1f s",
            worker_name(),
            os.getpid(),
            job.model_sha256[:12],
            predictor.device_type,
            time.perf_counter() - t0,
        )
        return predictor, True


# --------------------------------------------------------------------------------------------
# per-tile progress

#: Least seconds between two tile reports of one task (the last report is always sent).
TILE_REPORT_INTERVAL = 0.2


def tile_reporter(
    job: Job, scene: SceneInput, part: int = -1, *, scene_total: int | None = None
) -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` callback that reports a task's tiles to the client.

    Each call logs a dask event on ``job.progress_topic`` (at most one per
    :data:`TILE_REPORT_INTERVAL` seconds, and always the last one) with the message ``{"scene":
    name, "part": part, "done": done, "total": total}``: ``part`` is the chunk number of a
    split scene (``-1``: the whole scene), ``done`` the tiles of that part predicted so far and
    ``total`` the scene's tiles (``scene_total``, else the callback's own ``total``).
    :func:`geoseg.batch.run_batch` turns them into
    :attr:`~geoseg.batch.BatchProgress.scene_tiles`.

    Returns:
        ``None`` outside a dask worker or without a topic.
    """
    if job.progress_topic is None:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    topic = job.progress_topic
    last = [-math.inf]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < TILE_REPORT_INTERVAL:
            return
        last[0] = now
        whole = int(total if scene_total is None else scene_total)
        msg = {"scene": scene.name, "part": part, "done": int(done), "total": whole}
        worker.log_event(topic, msg)

    return report


# --------------------------------------------------------------------------------------------
# records


def is_input_error(err: BaseException) -> bool:
    """Whether ``err`` is a problem of the scene itself (not retried) rather than transient."""
    if isinstance(err, GeosegError):
        return True
    try:
        from rasterio.errors import RasterioError
    except ImportError:  # pragma: no cover - rasterio is a dependency
        return False
    return isinstance(err, RasterioError)


def error_text(err: BaseException) -> str:
    """``"ExceptionType: message"`` for a manifest record."""
    text = str(err).strip() or repr(err)
    return f"{type(err).__name__}: {text}"


def failed_record(
    scene: SceneInput,
    job: Job,
    err: BaseException | str,
    *,
    seconds: float = 0.0,
    worker: str | None = None,
    model_loaded: bool = False,
    n_tiles: int = 0,
    split_chunks: int = 0,
) -> SceneRecord:
    """The record of a scene that failed with ``err`` (``worker``: where, if on a worker)."""
    return SceneRecord(
        scene=scene.name,
        path=scene.path,
        status=SceneStatus.FAILED,
        n_tiles=n_tiles,
        seconds=round(seconds, 3),
        error=err if isinstance(err, str) else error_text(err),
        model_sha256=job.model_sha256,
        config_hash=job.config_hash,
        worker=worker,
        worker_pid=os.getpid() if worker is not None else None,
        model_loaded=model_loaded,
        split_chunks=split_chunks,
        finished=utc_now(),
    )


def _ok_record(
    scene: SceneInput,
    job: Job,
    result: SceneResult,
    *,
    seconds: float,
    quicklook: str | None,
    model_loaded: bool,
    split_chunks: int = 0,
) -> SceneRecord:
    output = job.output_for(scene)
    return SceneRecord(
        scene=scene.name,
        path=scene.path,
        status=SceneStatus.OK,
        output=str(output),
        output_bytes=target_size(output),
        output_sha256=file_sha256(output),
        quicklook=quicklook,
        counts={str(k): int(v) for k, v in result.counts.items()},
        n_tiles=int(result.n_tiles),
        n_objects=len(result.gdf),
        seconds=round(seconds, 3),
        model_sha256=job.model_sha256,
        config_hash=job.config_hash,
        worker=worker_name(),
        worker_pid=os.getpid(),
        model_loaded=model_loaded,
        split_chunks=split_chunks,
        finished=utc_now(),
    )


def _write_quicklook(scene: SceneInput, job: Job, gdf: gpd.GeoDataFrame) -> str | None:
    """Call the job's quicklook writer for this scene, if any; return the PNG's path."""
    out = job.quicklook_for(scene)
    draw = job.quicklook
    if out is None or draw is None:
        return None
    if isinstance(out, Path):
        out.parent.mkdir(parents=True, exist_ok=True)
        draw(scene.path, gdf, out)
    else:  # drawn into a local file, uploaded once
        write_output(out, lambda tmp: draw(scene.path, gdf, tmp))
    return str(out)


# --------------------------------------------------------------------------------------------
# tasks


def process_scene(scene: SceneInput, job: Job) -> SceneRecord:
    """Task: run one whole scene on this worker with :func:`~geoseg.pipeline.run_scene`.

    Input errors give a failed record; anything else propagates so that dask retries the task.
    """
    from geoseg.pipeline import run_scene

    t0 = time.perf_counter()
    loaded = False
    try:
        predictor, loaded = predictor_for(job)
        result = run_scene(
            scene.path,
            predictor,
            job.settings_for(scene),
            output=job.output_for(scene),
            progress=tile_reporter(job, scene),
        )
        ql = _write_quicklook(scene, job, result.gdf)
    except Exception as err:
        if not is_input_error(err):
            raise
        logger.info("%s failed: %s", scene.path, error_text(err))
        return failed_record(
            scene,
            job,
            err,
            seconds=time.perf_counter() - t0,
            worker=worker_name(),
            model_loaded=loaded,
        )
    return _ok_record(
        scene,
        job,
        result,
        seconds=time.perf_counter() - t0,
        quicklook=ql,
        model_loaded=loaded,
    )


def plan_split(scene: SceneInput, job: Job, split_tiles: int) -> PlannedScene | SceneRecord:
    """Task: plan a scene with :func:`~geoseg.pipeline.plan_scene` for splitting.

    Returns:
        The plan when the scene has at least ``split_tiles`` tiles; otherwise the scene is
        predicted and finished right here (the same steps as ``run_scene``) and its record
        returned. Also the record of an input error.
    """
    from geoseg.pipeline import finish_scene, plan_scene, predict_tiles

    t0 = time.perf_counter()
    loaded = False
    try:
        predictor, loaded = predictor_for(job)
        plan = plan_scene(
            scene.path, predictor, job.settings_for(scene), output=job.output_for(scene)
        )
        if len(plan.tile_indexes) >= split_tiles:
            return PlannedScene(plan, time.perf_counter() - t0, loaded)
        per_tile = predict_tiles(plan, predictor, progress=tile_reporter(job, scene))
        result = finish_scene(plan, per_tile)
        ql = _write_quicklook(scene, job, result.gdf)
    except Exception as err:
        if not is_input_error(err):
            raise
        return failed_record(
            scene,
            job,
            err,
            seconds=time.perf_counter() - t0,
            worker=worker_name(),
            model_loaded=loaded,
        )
    return _ok_record(
        scene,
        job,
        result,
        seconds=time.perf_counter() - t0,
        quicklook=ql,
        model_loaded=loaded,
    )


def predict_chunk(
    job: Job,
    planned: PlannedScene,
    indexes: Sequence[int],
    scene: SceneInput | None = None,
    part: int = 0,
) -> ChunkResult:
    """Task: read and predict the tiles ``indexes`` of a split scene.

    :func:`~geoseg.pipeline.predict_tiles` skips all-invalid tiles and drops detections below
    their class's threshold here, so only kept detections (cropped masks) travel. With
    ``scene``, the chunk (number ``part``) reports its tiles as it goes (:func:`tile_reporter`).
    """
    from geoseg.pipeline import predict_tiles

    t0 = time.perf_counter()
    predictor, loaded = predictor_for(job)
    report = (
        None
        if scene is None
        else tile_reporter(job, scene, part, scene_total=len(planned.plan.specs))
    )
    per_tile = predict_tiles(planned.plan, predictor, indexes, progress=report)
    return ChunkResult(
        detections=tuple(per_tile),
        n_tiles=len(per_tile),
        seconds=time.perf_counter() - t0,
        model_loaded=loaded,
    )


def finish_split(
    scene: SceneInput, job: Job, planned: PlannedScene, *chunks: ChunkResult
) -> SceneRecord:
    """Task: stitch, vectorize, count and write a split scene with its chunks' detections.

    :func:`~geoseg.pipeline.finish_scene` puts the tiles in grid order first, so the result
    does not depend on which chunk finished first.
    """
    from geoseg.pipeline import finish_scene

    t0 = time.perf_counter()
    busy = planned.seconds + sum(c.seconds for c in chunks)
    loaded = planned.model_loaded or any(c.model_loaded for c in chunks)
    try:
        result = finish_scene(planned.plan, [d for c in chunks for d in c.detections])
        ql = _write_quicklook(scene, job, result.gdf)
    except Exception as err:
        if not is_input_error(err):
            raise
        return failed_record(
            scene,
            job,
            err,
            seconds=busy + time.perf_counter() - t0,
            worker=worker_name(),
            model_loaded=loaded,
            n_tiles=sum(c.n_tiles for c in chunks),
            split_chunks=len(chunks),
        )
    return _ok_record(
        scene,
        job,
        result,
        seconds=busy + time.perf_counter() - t0,
        quicklook=ql,
        model_loaded=loaded,
        split_chunks=len(chunks),
    )


def chunk_indexes(n: int, n_chunks: int, *, multiple: int = 1) -> list[tuple[int, ...]]:
    """Split ``range(n)`` into at most ``n_chunks`` contiguous runs (row-major order).

    Every run but the last has a length that is a multiple of ``multiple`` (the batch size),
    so the batches a split scene sends to the model are those of an unsplit run.
    """
    multiple = max(1, multiple)
    size = max(1, math.ceil(n / max(1, n_chunks) / multiple)) * multiple
    return [tuple(range(a, min(a + size, n))) for a in range(0, n, size)]
