"""Many scenes on dask.distributed: one task per scene, a resumable manifest, a run summary.

:func:`run_batch` resolves its inputs (:mod:`geoseg.batch.inputs`: a glob, a text file of
paths, a STAC ItemCollection or plain paths), resolves the run settings once with
:func:`geoseg.settings.resolve` (options > preset > checkpoint > defaults, as ``geoseg
predict`` and :func:`~geoseg.pipeline.run_scene` do), submits the scenes to a dask.distributed
cluster (:mod:`geoseg.batch.cluster`: a local cluster of processes sized to the machine, or an
existing scheduler) and, as each task completes, records a
:class:`~geoseg.batch.manifest.SceneRecord` in ``OUTDIR/manifest.json``
(:mod:`geoseg.batch.manifest`), rewritten atomically after each batch of completed tasks. At
the end it writes ``OUTDIR/summary.csv`` and ``OUTDIR/summary.parquet``: one row per scene
with the number of objects per class.

Design points:

* **The pipeline's own steps** (:mod:`geoseg.batch.tasks`): a scene is processed with
  :func:`~geoseg.pipeline.run_scene`, or, with ``split_tiles``, with
  :func:`~geoseg.pipeline.plan_scene`, :func:`~geoseg.pipeline.predict_tiles` on chunks of
  tiles spread over the workers, and :func:`~geoseg.pipeline.finish_scene`; the result equals
  the unsplit run.
* **The model is loaded once per worker process**, not per scene, on ``settings.device``
  (``auto``: the worker's pinned GPU, else the CPU).
* **Fault isolation**: an input problem (a corrupt or unreadable scene, wrong bands...) ends
  the task with a failed record carrying the error message; other scenes go on. Unexpected
  errors are retried (``retries``) and a lost worker's tasks are rescheduled by dask; if a
  scene still cannot be processed it is recorded as failed. Outputs, the manifest and the
  summaries are written atomically: a killed run never leaves a partial file under its final
  name.
* **Resume**: a scene whose manifest record is ``ok`` with the same model hash and the same
  config hash (:meth:`~geoseg.settings.RunSettings.digest` + the checkpoint's sidecar), and
  whose output (and quicklook, when one is asked for) still exists, is skipped; failed and
  missing scenes run. ``force=True`` redoes all of them.
* **Processing extent** (``settings.extent``): one AOI or bbox for every scene (a scene it
  misses gives an empty output), or, when the AOI file has a ``scene`` column, each scene's
  own features (:meth:`geoseg.extent.Extent.for_scene`; every scene must have some).
* **Quicklooks** are drawn by a function the caller passes (``geoseg batch --quicklook``
  passes one that calls :func:`geoseg.viz.quicklook`); this package does not import
  :mod:`geoseg.viz`.

Paths must be readable by the workers: on a multi-machine cluster use a shared file system or
URLs GDAL reads (``s3://``, ``/vsicurl/``, ``/vsis3/``...) for the scenes, and an object-store
output folder (``s3://bucket/run/``): outputs, the manifest, the summaries and the quicklooks
are then uploaded whole, each once (:mod:`geoseg.storage`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import queue
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.batch.cluster import connect, dashboard_link
from geoseg.batch.inputs import InputKind, SceneInput, resolve_inputs
from geoseg.batch.manifest import (
    MANIFEST_NAME,
    SUMMARY_CSV,
    SUMMARY_PARQUET,
    Manifest,
    SceneRecord,
    SceneStatus,
    file_sha256,
    is_done,
    output_format,
    write_summary,
)
from geoseg.batch.tasks import (
    Job,
    PlannedScene,
    QuicklookWriter,
    chunk_indexes,
    error_text,
    failed_record,
    finish_split,
    plan_split,
    predict_chunk,
    process_scene,
    worker_cache_info,
)
from geoseg.errors import CheckpointError, ConfigError
from geoseg.io import check_no_overwrite
from geoseg.settings import CUDA_BATCH_SIZE, NormSource, RunSettings, resolve
from geoseg.storage import Target, as_target, check_folder_writable, join

if TYPE_CHECKING:
    from geoseg.config import PresetConfig

__all__ = [
    "BatchProgress",
    "BatchReport",
    "InputKind",
    "ProgressCallback",
    "QuicklookWriter",
    "SceneInput",
    "SceneRecord",
    "SceneStatus",
    "file_sha256",
    "resolve_inputs",
    "run_batch",
    "worker_cache_info",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """A snapshot passed to the ``progress`` callback of :func:`run_batch`.

    Attributes:
        total: scenes this run processes (skipped ones excluded).
        done: scenes finished so far (ok + failed).
        ok, failed: finished scenes by outcome.
        skipped: scenes skipped because already done (resume).
        tiles: tiles processed by finished scenes and finished chunks of split scenes.
        objects: objects found so far.
        counts: objects per class so far.
        record: the record that triggered this update (``None`` for the initial call, for
            chunk updates of split scenes and for tile updates).
        scene_tiles: scenes being predicted now -> ``(tiles done, tiles in the scene)``,
            reported by the tasks tile batch by tile batch (several workers' chunks of a
            split scene added up); a scene leaves it when its record arrives.
    """

    total: int
    done: int
    ok: int
    failed: int
    skipped: int
    tiles: int
    objects: int
    counts: Mapping[str, int]
    record: SceneRecord | None = None
    scene_tiles: Mapping[str, tuple[int, int]] = field(default_factory=dict)


#: ``progress(snapshot)``: called at the start, after each scene (and chunk) and as tiles of
#: the running scenes are predicted.
ProgressCallback = Callable[[BatchProgress], None]


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What :func:`run_batch` did.

    Attributes:
        out_dir: the output folder (a ``Path``, or a URL string for an object store).
        records: one record per input scene, in input order (for skipped scenes, the record
            kept from the earlier run).
        skipped: names of scenes skipped because they were already done.
        manifest: path of ``manifest.json``.
        summary_csv, summary_parquet: paths of the summary tables.
        model_sha256: SHA-256 of the checkpoint.
        config_hash: hash of the settings' digest and the checkpoint's sidecar (the resume
            key, with ``model_sha256``).
        settings: the run settings every scene was predicted with.
        dashboard: the dask dashboard address (``None`` when nothing ran).
        seconds: wall time of the whole run.
    """

    out_dir: Target
    records: tuple[SceneRecord, ...]
    skipped: tuple[str, ...]
    manifest: Target
    summary_csv: Target
    summary_parquet: Target
    model_sha256: str
    config_hash: str
    settings: RunSettings
    dashboard: str | None
    seconds: float

    @property
    def failed(self) -> tuple[SceneRecord, ...]:
        """Records of the scenes that failed."""
        return tuple(r for r in self.records if r.status is SceneStatus.FAILED)

    @property
    def n_failed(self) -> int:
        """Number of failed scenes."""
        return len(self.failed)

    @property
    def n_ok(self) -> int:
        """Number of scenes done (this run or skipped)."""
        return sum(r.status is SceneStatus.OK for r in self.records)

    @property
    def ran(self) -> tuple[str, ...]:
        """Names of the scenes processed by this run (not skipped)."""
        skipped = set(self.skipped)
        return tuple(r.scene for r in self.records if r.scene not in skipped)


class _Tally:
    """Running totals for the progress callback."""

    def __init__(self, total: int, skipped: int, callback: ProgressCallback | None) -> None:
        self.total, self.skipped, self.callback = total, skipped, callback
        self.done = self.ok = self.failed = self.tiles = self.objects = 0
        self.counts: dict[str, int] = {}
        self.parts: dict[str, dict[int, int]] = {}  # running scene -> part -> tiles done
        self.scene_total: dict[str, int] = {}
        self.finished: set[str] = set()

    def scene_tiles(self) -> dict[str, tuple[int, int]]:
        return {
            name: (sum(parts.values()), self.scene_total[name])
            for name, parts in self.parts.items()
        }

    def tile_event(self, msg: Mapping[str, Any]) -> None:
        """A task's tile report (:func:`geoseg.batch.tasks.tile_reporter`)."""
        name = str(msg["scene"])
        if name in self.finished:
            return  # a late report of a scene already recorded
        self.parts.setdefault(name, {})[int(msg["part"])] = int(msg["done"])
        self.scene_total[name] = int(msg["total"])
        self.emit()

    def emit(self, record: SceneRecord | None = None) -> None:
        if self.callback is None:
            return
        self.callback(
            BatchProgress(
                total=self.total,
                done=self.done,
                ok=self.ok,
                failed=self.failed,
                skipped=self.skipped,
                tiles=self.tiles,
                objects=self.objects,
                counts=dict(self.counts),
                record=record,
                scene_tiles=self.scene_tiles(),
            )
        )

    def add(self, record: SceneRecord, *, tiles_counted: int = 0) -> None:
        self.done += 1
        if record.status is SceneStatus.OK:
            self.ok += 1
        else:
            self.failed += 1
        self.tiles += record.n_tiles - tiles_counted  # chunks counted their grid tiles
        self.objects += record.n_objects
        self.finished.add(record.scene)
        self.parts.pop(record.scene, None)
        self.scene_total.pop(record.scene, None)
        for k, v in record.counts.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)
        self.emit(record)

    def add_tiles(self, n: int) -> None:
        self.tiles += n
        self.emit()


def run_batch(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: RunSettings | None = None,
    preset: str | os.PathLike[str] | PresetConfig | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    fmt: str = "gpkg",
    force: bool = False,
    quicklook: QuicklookWriter | None = None,
    asset: str | None = None,
    split_tiles: int | None = None,
    retries: int = 1,
    progress: ProgressCallback | None = None,
    on_dashboard: Callable[[str], None] | None = None,
    **overrides: Any,
) -> BatchReport:
    """Run the whole pipeline on many scenes, one dask task per scene.

    The run settings are ``settings`` when given (with ``overrides`` applied), else
    :func:`geoseg.settings.resolve` of the checkpoint's sidecar, ``preset`` and ``overrides``:
    with no settings options, each scene gives what ``run_scene(scene, predictor)`` gives.

    Args:
        inputs: glob(s), text file(s) of paths, STAC ItemCollection JSON(s) or scene paths
            (see :func:`resolve_inputs`).
        model: checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.json``); it must be
            readable by every worker.
        out_dir: output folder: ``<scene>.<ext>`` per scene, ``manifest.json`` (the latest
            record of every scene ever run into this folder), ``summary.csv`` and
            ``summary.parquet`` (this call's scenes), and ``quicklooks/<scene>.png``. It may
            be an object-store URL (``s3://bucket/run/``): every file is then written once,
            complete (:mod:`geoseg.storage`), and resume reads the manifest from there, so
            workers on several machines need no shared file system for their outputs.
        settings: the run settings (:func:`geoseg.settings.resolve`); ``None``: resolved from
            the checkpoint, ``preset`` and ``overrides``.
        preset: preset name, YAML path or :class:`~geoseg.config.PresetConfig` (only without
            ``settings``).
        scheduler: address of an existing dask scheduler (``tcp://host:8786``); ``None``
            starts a local cluster of processes (one per GPU, else one per CPU core).
        n_workers: workers of the local cluster (ignored with ``scheduler``); never more than
            there are tasks to run.
        fmt: vector format of the outputs: gpkg, geojson, shapefile (shp), parquet
            (geoparquet) or flatgeobuf (fgb). COCO JSON is not offered (``geoseg predict``
            writes it for one scene).
        force: redo every scene, even those already done with the same model and config.
        quicklook: ``quicklook(scene_path, gdf, png_path)`` draws each scene's objects into
            ``OUTDIR/quicklooks/<scene>.png`` on the worker (e.g.
            :func:`geoseg.viz.quicklook`); it must pickle. ``None``: no quicklooks. A scene
            done without one is redone when one is asked for.
        asset: STAC asset key (default: the first GeoTIFF asset of each item).
        split_tiles: spread any scene of at least this many tiles over all workers (chunks of
            tiles predicted in parallel, stitched by one task); ``None`` never splits.
        retries: extra attempts of a task that failed for an unexpected (non-input) reason.
            A worker that dies is replaced and its tasks rescheduled by dask.
        progress: called with a :class:`BatchProgress` at the start and after each scene
            (and each chunk of a split scene).
        on_dashboard: called with the dask dashboard address once the cluster is up.
        **overrides: :class:`~geoseg.settings.RunSettings` fields (``tile_size=256``,
            ``min_score=0.3``, ``class_min_score={...}``, ``norm="model"``, ``bands=(3, 2,
            1)``, ``batch_size=8``, ``device="cpu"``...); ``None`` values are ignored.

    Returns:
        The report; failed scenes are in ``report.failed`` (the call does not raise for them).

    Raises:
        ConfigError: no inputs, invalid arguments or settings (a score threshold or a kept
            class the model lacks, ``norm="model"`` for a model without statistics, a
            per-scene AOI without a feature for some scene...), or an unreadable manifest in
            ``out_dir``.
        CheckpointError: the checkpoint is missing or unreadable.
        ExportError: ``out_dir`` cannot be written.
        InputOverwriteError: an output (a scene's vector file, the manifest, a summary) would
            be one of the inputs (a scene, the checkpoint).
    """
    t_start = time.perf_counter()
    if split_tiles is not None and split_tiles < 1:
        raise ConfigError(f"split_tiles must be >= 1 (tiles), got {split_tiles}")
    if n_workers is not None and n_workers < 1:
        raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if quicklook is not None and not callable(quicklook):
        raise ConfigError(
            "quicklook must be a function (scene_path, gdf, png_path), e.g. geoseg.viz.quicklook"
        )
    from geoseg.checkpoint import checkpoint_paths, read_meta
    from geoseg.pipeline import check_classes, score_thresholds

    fmt_value, ext = output_format(fmt)
    scenes = resolve_inputs(inputs, asset=asset)
    weights, sidecar = (p.resolve() for p in checkpoint_paths(Path(model).expanduser()))
    if not weights.is_file() or not sidecar.is_file():
        raise CheckpointError(
            f"{model}: checkpoint not found (need {weights.name} and {sidecar.name}); check -m"
        )
    meta = read_meta(sidecar)
    if settings is None:
        settings = resolve(
            meta, Path(preset) if isinstance(preset, os.PathLike) else preset, **overrides
        )
    elif preset is not None:
        raise ConfigError("give either settings or a preset, not both")
    else:
        settings = settings.replace(**{k: v for k, v in overrides.items() if v is not None})
    score_thresholds(meta.classes, settings.min_score, settings.class_min_score)
    check_classes(meta.classes, settings.classes)
    if settings.extent is not None:
        settings.extent.check_scenes([s.name for s in scenes])
    if settings.norm is NormSource.MODEL and meta.norm_stats is None:
        raise ConfigError(
            f"{model}: the checkpoint has no normalisation statistics to normalise with; "
            "use the scene's own (norm='scene', --norm scene)"
        )
    out = as_target(out_dir)
    if isinstance(out, Path):
        out = out.expanduser().resolve()
    written = [("--out-dir", join(out, n)) for n in (MANIFEST_NAME, SUMMARY_CSV, SUMMARY_PARQUET)]
    written += [("--out-dir", join(out, f"{s.name}{ext}")) for s in scenes]
    if quicklook is not None:
        written += [("--out-dir", join(out, "quicklooks", f"{s.name}.png")) for s in scenes]
    check_no_overwrite([*(("INPUTS", s.path) for s in scenes), ("--model", weights)], written)
    check_folder_writable(out)
    model_sha = file_sha256(weights)
    config_hash = hashlib.sha256((settings.digest() + file_sha256(sidecar)).encode()).hexdigest()
    job = Job(
        model=str(weights),
        model_sha256=model_sha,
        settings=settings,
        config_hash=config_hash,
        out_dir=str(out),
        ext=ext,
        quicklook=quicklook,
    )
    manifest = Manifest(
        join(out, MANIFEST_NAME),
        {
            "model": str(weights),
            "model_sha256": model_sha,
            "config_hash": config_hash,
            "config": settings.to_dict(),
            "output_format": fmt_value,
        },
    )
    skipped = (
        []
        if force
        else [
            s.name
            for s in scenes
            if is_done(
                manifest.records.get(s.name),
                path=s.path,
                output=job.output_for(s),
                model_sha256=model_sha,
                config_hash=config_hash,
                quicklook=job.quicklook_for(s),
            )
        ]
    )
    if skipped:
        logger.info(
            "skipping %d of %d scene(s) already done with the same model and config "
            "(force=True redoes them)",
            len(skipped),
            len(scenes),
        )
    skip_set = set(skipped)
    todo = [s for s in scenes if s.name not in skip_set]
    tally = _Tally(len(todo), len(skipped), progress)
    tally.emit()
    dashboard: str | None = None
    try:
        if todo:
            dashboard = _run_tasks(
                todo,
                job,
                manifest,
                tally,
                scheduler=scheduler,
                n_workers=n_workers,
                split_tiles=split_tiles,
                retries=retries,
                on_dashboard=on_dashboard,
            )
    finally:
        manifest.flush()
        records = tuple(manifest.records[s.name] for s in scenes if s.name in manifest.records)
        write_summary(out, records, meta.classes)
    report = BatchReport(
        out_dir=out,
        records=records,
        skipped=tuple(skipped),
        manifest=manifest.path,
        summary_csv=join(out, SUMMARY_CSV),
        summary_parquet=join(out, SUMMARY_PARQUET),
        model_sha256=model_sha,
        config_hash=config_hash,
        settings=settings,
        dashboard=dashboard,
        seconds=time.perf_counter() - t_start,
    )
    logger.info(
        "batch done: %d ok, %d failed, %d skipped in %.1f s",
        report.n_ok - len(skipped),
        report.n_failed,
        len(skipped),
        report.seconds,
    )
    return report


#: Seconds between two looks at the futures and tile reports while nothing is ready.
_POLL_SECONDS = 0.05


def _drain_tile_events(events: queue.SimpleQueue[Any], tally: _Tally) -> None:
    """Pass the tile reports received so far (``(timestamp, msg)`` events) to the tally."""
    while True:
        try:
            _, msg = events.get_nowait()
        except queue.Empty:
            return
        with contextlib.suppress(KeyError, TypeError, ValueError):
            tally.tile_event(msg)


# future -> (role, scene, tiles): "scene" gives a record, "plan" a PlannedScene or a record,
# "chunk" a chunk of a split scene (only counted here; its result goes to the finish task)
_Role = tuple[str, SceneInput, int]


def _submit_split(
    client: Any,
    scene: SceneInput,
    job: Job,
    planned: PlannedScene,
    n_workers: int,
    run_id: str,
    retries: int,
) -> list[tuple[Any, _Role]]:
    """Submit a split scene's chunk tasks (2 per worker) and its finish task.

    Returns:
        ``(future, (role, scene, tiles))`` for each chunk (role ``"chunk"``, its grid tiles)
        and for the finish task (role ``"scene"``).
    """
    # chunk lengths are multiples of the batch size, so batches match an unsplit run's
    multiple = job.settings.batch_size or CUDA_BATCH_SIZE  # (8 is a multiple of CPU's 1 too)
    grid = planned.plan.tile_indexes  # the whole grid, or the tiles meeting the extent
    n_tiles = len(grid)
    parts = [
        tuple(grid[i] for i in part)
        for part in chunk_indexes(n_tiles, max(2, 2 * n_workers), multiple=multiple)
    ]
    logger.info("%s: spreading %d tiles over %d chunks", scene.path, n_tiles, len(parts))
    chunk_futs = [
        client.submit(
            predict_chunk,
            job,
            planned,
            part,
            scene,
            i,
            key=f"geoseg-chunk-{scene.name}-{i}-{run_id}",
            pure=False,
            retries=retries,
        )
        for i, part in enumerate(parts)
    ]
    fin = client.submit(
        finish_split,
        scene,
        job,
        planned,
        *chunk_futs,
        key=f"geoseg-finish-{scene.name}-{run_id}",
        pure=False,
        retries=retries,
    )
    out: list[tuple[Any, _Role]] = [
        (f, ("chunk", scene, len(part))) for f, part in zip(chunk_futs, parts, strict=True)
    ]
    out.append((fin, ("scene", scene, 0)))
    return out


def _run_tasks(
    todo: Sequence[SceneInput],
    job: Job,
    manifest: Manifest,
    tally: _Tally,
    *,
    scheduler: str | None,
    n_workers: int | None,
    split_tiles: int | None,
    retries: int,
    on_dashboard: Callable[[str], None] | None,
) -> str | None:
    """Submit the scenes, collect records as they complete; returns the dashboard link."""
    from distributed import as_completed

    cap = None if split_tiles is not None else len(todo)
    with connect(scheduler, n_workers=n_workers, cap=cap) as client:
        dashboard = dashboard_link(client)
        logger.info("dask dashboard: %s", dashboard)
        if on_dashboard is not None and dashboard:
            on_dashboard(dashboard)
        n_workers_now = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        run_id = hashlib.sha1(f"{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:8]
        topic = f"geoseg-tiles-{run_id}"
        job = dataclasses.replace(job, progress_topic=topic)
        tile_events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        client.subscribe_topic(topic, tile_events.put)  # called on the client's event loop
        roles: dict[Any, _Role] = {}
        for s in todo:
            if split_tiles is None:
                fut = client.submit(
                    process_scene,
                    s,
                    job,
                    key=f"geoseg-scene-{s.name}-{run_id}",
                    pure=False,
                    retries=retries,
                )
                roles[fut] = ("scene", s, 0)
            else:
                fut = client.submit(
                    plan_split,
                    s,
                    job,
                    split_tiles,
                    key=f"geoseg-plan-{s.name}-{run_id}",
                    pure=False,
                    retries=retries,
                )
                roles[fut] = ("plan", s, 0)
        pending = as_completed(list(roles))
        tiles_counted: dict[str, int] = {}
        try:
            while not pending.is_empty():
                _drain_tile_events(tile_events, tally)
                if not pending.has_ready():
                    time.sleep(_POLL_SECONDS)
                    continue
                for fut in pending.next_batch(block=False):
                    role, scene, n_tiles = roles.pop(fut)
                    if role == "chunk":
                        tiles_counted[scene.name] = tiles_counted.get(scene.name, 0) + n_tiles
                        tally.add_tiles(n_tiles)
                        continue
                    try:
                        value = fut.result()
                    except Exception as err:
                        logger.warning("%s failed on the cluster: %s", scene.path, error_text(err))
                        value = failed_record(scene, job, err)
                    if isinstance(value, PlannedScene):
                        for new_fut, new_role in _submit_split(
                            client, scene, job, value, n_workers_now, run_id, retries
                        ):
                            roles[new_fut] = new_role
                            pending.add(new_fut)
                        continue
                    manifest.add(value)
                    if value.status is SceneStatus.FAILED:
                        logger.warning("%s failed: %s", scene.name, value.error)
                    tally.add(value, tiles_counted=tiles_counted.pop(scene.name, 0))
                manifest.flush()  # once per batch of completed futures
        finally:
            client.unsubscribe_topic(topic)
        return dashboard
