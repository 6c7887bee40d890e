"""Many scenes on dask.distributed: one task per scene, a resumable manifest, a run summary.

:func:`run_batch` resolves its inputs (a glob, a text file of paths, a STAC ItemCollection or
plain paths) into :class:`SceneInput` values, submits one task per scene to a dask.distributed
cluster (a :class:`distributed.LocalCluster`-like cluster of processes sized to the machine, or
an existing scheduler) and, as each task completes, records a :class:`SceneRecord` in
``OUTDIR/manifest.json``, rewritten atomically after each batch of completed tasks (so a
killed run keeps what finished, and thousands of short scenes do not rewrite it thousands of
times). At the end it writes ``OUTDIR/summary.csv`` and ``OUTDIR/summary.parquet``: one row per
scene with the number of objects per class.

Design points:

* **The model is loaded once per worker process**, not per scene: tasks look it up in a
  worker-local cache keyed by the checkpoint's SHA-256 (:func:`worker_cache_info` reports it).
* **Fault isolation**: an input problem (a corrupt or unreadable scene, wrong bands...) ends
  the task with a failed record carrying the error message; other scenes go on. Unexpected
  errors are retried (``retries``) and a lost worker's tasks are rescheduled by dask; if a scene
  still cannot be processed it is recorded as failed. Outputs, the manifest and the summaries
  are written atomically (temporary file, then ``os.replace``): a killed run never leaves a
  partial output under its final name (at most a hidden temporary beside it).
* **Resume**: a scene whose manifest record is ``ok`` with the same model hash and the same
  config hash, and whose output file still exists, is skipped; failed and missing scenes run.
  ``force=True`` redoes all of them.
* **One huge scene**: with ``split_tiles=N`` a scene of at least ``N`` tiles is spread over
  the workers (chunks of tile indexes predicted in parallel, then stitched, vectorized and
  written by one task); the result equals the unsplit run.

Paths must be readable by the workers: on a multi-machine cluster use a shared file system or
GDAL URLs (``/vsicurl/``, ``/vsis3/``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import glob
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from geoseg.config import CUDA_BATCH_SIZE, RunSettings, resolve_run_settings
from geoseg.errors import ConfigError, ExportError, GeosegError

if TYPE_CHECKING:
    from geoseg.config import PresetConfig
    from geoseg.predict import Predictor
    from geoseg.types import NormStats, SceneInfo, TileDetections, TileSpec

__all__ = [
    "BatchProgress",
    "BatchReport",
    "InputKind",
    "SceneInput",
    "SceneRecord",
    "SceneStatus",
    "file_sha256",
    "resolve_inputs",
    "resolve_settings",
    "run_batch",
    "worker_cache_info",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
_MANIFEST_FORMAT = "geoseg-batch-manifest"
_MANIFEST_VERSION = 1
_MAX_CACHED_MODELS = 2
_RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2", ".ntf", ".nitf"})
_LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_STAC_SUFFIXES = frozenset({".json", ".geojson"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_REMOTE_SCHEMES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}


class InputKind(enum.StrEnum):
    """How one ``INPUTS`` argument was read (see :func:`resolve_inputs`)."""

    PATH = "path"
    GLOB = "glob"
    LIST = "list"
    STAC = "stac"


class SceneStatus(enum.StrEnum):
    """Outcome of one scene in the manifest."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SceneInput:
    """One scene of a batch.

    Attributes:
        name: unique name in the run; the output is ``OUTDIR/<name>.<ext>``. The file stem
            (the STAC item id for STAC inputs); stems that occur twice get a short hash of the
            path appended.
        path: the GDAL path (local file, ``/vsicurl/...``).
        source: the ``INPUTS`` argument it came from (glob, list file, STAC JSON or path).
        kind: how that argument was read.
    """

    name: str
    path: str
    source: str = ""
    kind: InputKind = InputKind.PATH


@dataclass(frozen=True, slots=True)
class SceneRecord:
    """One scene's entry in the run manifest.

    Attributes:
        scene: the scene's unique name (:attr:`SceneInput.name`).
        path: the GDAL path it was read from.
        status: ``ok`` or ``failed``.
        output: the vector file written (``None`` when failed).
        quicklook: the quicklook PNG written, if asked for.
        counts: objects per class name.
        n_tiles: tiles the scene was cut into; n_objects: objects found.
        seconds: wall time of the scene on its worker(s), model loading included.
        error: ``"ExceptionType: message"`` when failed, else ``None``.
        model_sha256: SHA-256 of the checkpoint file.
        config_hash: :meth:`RunSettings.digest` of the settings used.
        worker: address of the dask worker that ran it; worker_pid: its process id.
        model_loaded: whether this task loaded the model (False: it came from the worker's
            cache).
        split_chunks: number of tile chunks the scene was spread over (0: not split).
        finished: ISO 8601 UTC time the record was made.
    """

    scene: str
    path: str
    status: SceneStatus
    output: str | None = None
    quicklook: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    n_tiles: int = 0
    n_objects: int = 0
    seconds: float = 0.0
    error: str | None = None
    model_sha256: str = ""
    config_hash: str = ""
    worker: str | None = None
    worker_pid: int | None = None
    model_loaded: bool = False
    split_chunks: int = 0
    finished: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
        data["counts"] = {str(k): int(v) for k, v in self.counts.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneRecord:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["status"] = SceneStatus(kwargs.get("status", SceneStatus.FAILED))
        kwargs["counts"] = {str(k): int(v) for k, v in dict(kwargs.get("counts") or {}).items()}
        return cls(**kwargs)


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
        record: the record that triggered this update (``None`` for the initial call and for
            chunk updates of split scenes).
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


ProgressCallback = Callable[[BatchProgress], None]


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What :func:`run_batch` did.

    Attributes:
        out_dir: the output folder.
        records: one record per input scene, in input order (for skipped scenes, the record
            kept from the earlier run).
        skipped: names of scenes skipped because they were already done.
        manifest: path of ``manifest.json``.
        summary_csv, summary_parquet: paths of the summary tables.
        model_sha256: SHA-256 of the checkpoint.
        config_hash: :meth:`RunSettings.digest` of the settings used.
        dashboard: the dask dashboard address (``None`` when nothing ran).
        seconds: wall time of the whole run.
    """

    out_dir: Path
    records: tuple[SceneRecord, ...]
    skipped: tuple[str, ...]
    manifest: Path
    summary_csv: Path
    summary_parquet: Path
    model_sha256: str
    config_hash: str
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


# --------------------------------------------------------------------------------------------
# inputs


def _safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-``; others become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "scene"


def _stem_of(path: str) -> str:
    """File stem of a local path or of the last segment of a URL / GDAL virtual path."""
    parsed = urlparse(path)
    last = unquote(parsed.path if parsed.scheme not in ("", "file") else path)
    last = last.rstrip("/").rsplit("/", 1)[-1]
    return Path(last).stem if "." in last else last


def _gdal_path(href: str, base: Path) -> str:
    """Turn a STAC/list href into a GDAL path: URLs become ``/vsi...``, relative paths absolute."""
    if href.startswith("/vsi"):
        return href
    parsed = urlparse(href)
    if parsed.scheme in _REMOTE_SCHEMES:
        rest = href if parsed.scheme.startswith("http") else href.split("://", 1)[1]
        return _REMOTE_SCHEMES[parsed.scheme] + rest
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if len(parsed.scheme) > 1:  # some other URL scheme (one letter = a Windows drive)
        raise ConfigError(
            f"{href!r}: unsupported URL scheme {parsed.scheme!r}; use a local path, http(s)://, "
            "s3://, gs:// or a GDAL /vsi... path"
        )
    p = Path(href).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _is_geotiff_asset(asset: Mapping[str, Any]) -> bool:
    media = str(asset.get("type", "")).lower()
    if media:
        return media.startswith("image/tiff") or "geotiff" in media
    href = str(asset.get("href", "")).lower().split("?", 1)[0]
    return href.endswith((".tif", ".tiff"))


def _read_stac(path: Path, asset_key: str | None) -> list[tuple[str, str]]:
    """``(name, gdal_path)`` per item of a STAC ItemCollection (or single Item) JSON.

    Asset rule: ``asset_key`` when given (every item must have it); otherwise the first asset,
    in the JSON's order, whose media type is ``image/tiff`` (any profile, e.g. COG) or, when the
    asset has no media type, whose href ends in ``.tif``/``.tiff``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from err
    if isinstance(data, dict) and data.get("type") == "Feature":
        items = [data]
    elif isinstance(data, dict) and isinstance(data.get("features"), list):
        items = data["features"]
    else:
        raise ConfigError(
            f"{path}: not a STAC ItemCollection (expected a FeatureCollection with 'features' "
            "or a single Item)"
        )
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: feature {i} is not a JSON object")
        item_id = str(item.get("id") or f"item{i}")
        assets = item.get("assets") or {}
        if not isinstance(assets, dict) or not assets:
            raise ConfigError(f"{path}: item {item_id!r} has no assets")
        if asset_key is not None:
            if asset_key not in assets:
                raise ConfigError(
                    f"{path}: item {item_id!r} has no asset {asset_key!r} "
                    f"(it has {', '.join(sorted(assets))}); choose another --asset"
                )
            chosen = assets[asset_key]
        else:
            tiffs = [a for a in assets.values() if isinstance(a, dict) and _is_geotiff_asset(a)]
            if not tiffs:
                raise ConfigError(
                    f"{path}: item {item_id!r} has no GeoTIFF asset (media type image/tiff or "
                    f"a .tif href); name one with --asset (it has {', '.join(sorted(assets))})"
                )
            chosen = tiffs[0]
        href = chosen.get("href") if isinstance(chosen, dict) else None
        if not href:
            raise ConfigError(f"{path}: the chosen asset of item {item_id!r} has no href")
        out.append((item_id, _gdal_path(str(href), path.resolve().parent)))
    return out


def _read_list(path: Path) -> list[str]:
    """Paths listed one per line in ``path`` (blank lines and ``#`` comments skipped).

    Relative paths are resolved against the list file's folder; URLs become GDAL paths.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the list of scenes ({err})") from err
    base = path.resolve().parent
    out = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        text = re.split(r"\s+#", text, maxsplit=1)[0].strip()  # a trailing " # comment"
        out.append(_gdal_path(text, base))
    return out


def resolve_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    asset: str | None = None,
) -> list[SceneInput]:
    """Turn ``INPUTS`` arguments into a list of unique scenes.

    Each argument is read as:

    * an existing ``.json``/``.geojson`` file: a STAC ItemCollection (or one Item); one scene
      per item, named by the item id. The asset is ``asset`` when given, else the first
      GeoTIFF asset (media type ``image/tiff``, or an href ending in ``.tif``); hrefs may be
      local paths (relative ones resolved against the JSON's folder), ``http(s)://``,
      ``s3://``, ``gs://`` URLs (turned into ``/vsicurl/``, ``/vsis3/``, ``/vsigs/``) or GDAL
      ``/vsi...`` paths;
    * an existing ``.txt``/``.lst``/``.list`` file: one path per line, ``#`` comments;
    * any other existing file, a ``/vsi...`` path or a URL: one scene;
    * otherwise a glob pattern (``**`` recurses), expanded in sorted order.

    Args:
        inputs: one argument or several.
        asset: STAC asset key to use instead of the default rule.

    Returns:
        Scenes in input order, duplicates (same path) removed. Names are file stems (STAC:
        item ids), made unique by appending a short hash of the path when two collide.

    Raises:
        ConfigError: an argument matches nothing, or a list/STAC file is unusable.
    """
    args = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not args:
        raise ConfigError("no INPUTS given: pass a glob, a text file of paths or a STAC JSON")
    found: list[tuple[str, str, str, InputKind]] = []  # (name hint, path, source, kind)
    for arg in args:
        text = os.fspath(arg)
        p = Path(text).expanduser()
        suffix = p.suffix.lower()
        if p.is_file() and suffix in _STAC_SUFFIXES:
            found += [(n, g, text, InputKind.STAC) for n, g in _read_stac(p, asset)]
        elif p.is_file() and suffix in _LIST_SUFFIXES:
            paths = _read_list(p)
            if not paths:
                raise ConfigError(f"{text}: the list of scenes is empty")
            found += [(_stem_of(g), g, text, InputKind.LIST) for g in paths]
        elif p.exists() or text.startswith("/vsi") or urlparse(text).scheme in _REMOTE_SCHEMES:
            g = _gdal_path(text, Path.cwd())
            found.append((_stem_of(g), g, text, InputKind.PATH))
        elif _GLOB_CHARS.search(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                raise ConfigError(f"{text}: the pattern matches no file")
            found += [(_stem_of(m), str(Path(m).resolve()), text, InputKind.GLOB) for m in matches]
        else:
            raise ConfigError(
                f"{text}: no such file; give a scene path, a glob (quote it), a .txt list of "
                "paths or a STAC ItemCollection .json"
            )
    seen: set[str] = set()
    unique = []
    for item in found:
        if item[1] in seen:
            logger.info("%s is listed more than once; processing it once", item[1])
            continue
        seen.add(item[1])
        unique.append(item)
    stems = [_safe_name(hint) for hint, *_ in unique]
    dupes = {s for s in stems if stems.count(s) > 1}
    scenes = []
    for stem, (_, path, source, kind) in zip(stems, unique, strict=True):
        name = stem
        if stem in dupes:
            name = f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
        scenes.append(SceneInput(name=name, path=path, source=source, kind=kind))
    return scenes


# --------------------------------------------------------------------------------------------
# hashing, atomic writes, manifest


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path in ``path``'s folder, then move it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class _Manifest:
    """``OUTDIR/manifest.json``: the latest record per scene name, rewritten atomically."""

    def __init__(self, path: Path, header: Mapping[str, Any]) -> None:
        self.path = path
        self.header = dict(header)
        self.records: dict[str, SceneRecord] = {}
        self._dirty = False
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("format") != _MANIFEST_FORMAT:
                    raise ValueError(f"format is {data.get('format')!r}")
                for name, rec in dict(data.get("scenes", {})).items():
                    self.records[str(name)] = SceneRecord.from_dict(rec)
            except (OSError, ValueError, TypeError, AttributeError, KeyError) as err:
                raise ConfigError(
                    f"{path}: not a geoseg batch manifest ({err}); move it away or choose "
                    "another output folder"
                ) from err

    def add(self, record: SceneRecord) -> None:
        self.records[record.scene] = record
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty and self.path.exists():
            return
        data = {
            "format": _MANIFEST_FORMAT,
            "version": _MANIFEST_VERSION,
            "updated": _now(),
            **self.header,
            "scenes": {name: r.to_dict() for name, r in sorted(self.records.items())},
        }
        text = json.dumps(data, indent=1, sort_keys=False) + "\n"
        _atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        self._dirty = False


def _summary_frame(records: Sequence[SceneRecord], classes: Sequence[str]) -> Any:
    """One row per scene: status, tiles, objects, seconds, then ``n_<class>`` per class."""
    import pandas as pd

    all_classes = list(classes)
    for r in records:
        all_classes += [c for c in r.counts if c not in all_classes]
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "scene": r.scene,
            "status": str(r.status),
            "n_tiles": r.n_tiles,
            "n_objects": r.n_objects,
        }
        for c in all_classes:
            row[f"n_{c}"] = int(r.counts.get(c, 0))
        row.update(
            seconds=round(r.seconds, 3),
            path=r.path,
            output=r.output or "",
            worker=r.worker or "",
            error=r.error or "",
        )
        rows.append(row)
    columns = ["scene", "status", "n_tiles", "n_objects", *[f"n_{c}" for c in all_classes]]
    columns += ["seconds", "path", "output", "worker", "error"]
    return pd.DataFrame(rows, columns=columns)


def _write_summary(out_dir: Path, records: Sequence[SceneRecord], classes: Sequence[str]) -> None:
    frame = _summary_frame(records, classes)
    _atomic_write(out_dir / SUMMARY_CSV, lambda tmp: frame.to_csv(tmp, index=False))
    _atomic_write(out_dir / SUMMARY_PARQUET, lambda tmp: frame.to_parquet(tmp, index=False))


# --------------------------------------------------------------------------------------------
# worker side: model cache and tasks


@dataclass(frozen=True, slots=True)
class _Job:
    """What every task of a run needs besides its scene (small, pickled with each task)."""

    model: str
    model_sha256: str
    settings: RunSettings
    config_hash: str
    out_dir: str
    ext: str
    fmt: str
    quicklook: bool
    device: str | None

    def output_for(self, scene: SceneInput) -> Path:
        return Path(self.out_dir) / f"{scene.name}{self.ext}"

    def quicklook_for(self, scene: SceneInput) -> Path:
        return Path(self.out_dir) / "quicklooks" / f"{scene.name}.png"


@dataclass(frozen=True, slots=True)
class _ScenePlan:
    """A scene opened on a worker for splitting: its description, statistics and grid."""

    info: SceneInfo
    stats: NormStats
    specs: tuple[TileSpec, ...]
    seconds: float


@dataclass(frozen=True, slots=True)
class _ChunkResult:
    """Detections of one chunk of a split scene's tiles (tile pixels, cropped masks)."""

    detections: tuple[TileDetections, ...]
    n_tiles: int
    seconds: float
    model_loaded: bool


_CACHE_LOCK = threading.Lock()
_PREDICTORS: OrderedDict[tuple[str, float, str | None], Predictor] = OrderedDict()
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


def _predictor_for(job: _Job) -> tuple[Predictor, bool]:
    """The job's predictor from this process's cache, loading it on first use.

    Returns:
        ``(predictor, loaded)`` where ``loaded`` says whether this call loaded the model.

    Raises:
        CheckpointError: the checkpoint changed since the run started, or cannot be loaded.
    """
    from geoseg.errors import CheckpointError

    key = (job.model_sha256, job.settings.lowest_score(), job.device)
    with _CACHE_LOCK:
        cached = _PREDICTORS.get(key)
        if cached is not None:
            _PREDICTORS.move_to_end(key)
            return cached, False
        weights, _ = _checkpoint_files(job.model)
        try:
            digest = file_sha256(weights)
        except OSError as err:
            raise CheckpointError(
                f"{weights}: cannot be read on worker {_worker_name()} ({err}); the checkpoint "
                "must be readable by every worker (use a shared file system)"
            ) from err
        if digest != job.model_sha256:
            raise CheckpointError(
                f"{weights}: the checkpoint changed since the batch started (SHA-256 differs); "
                "rerun the batch"
            )
        t0 = time.perf_counter()
        predictor = _load_predictor(job)
        _PREDICTORS[key] = predictor
        _LOADS[job.model_sha256] = _LOADS.get(job.model_sha256, 0) + 1
        while len(_PREDICTORS) > _MAX_CACHED_MODELS:
            _PREDICTORS.popitem(last=False)
        logger.info(
            "worker %s (pid %d) loaded model %s in %.1f s",
            _worker_name(),
            os.getpid(),
            job.model_sha256[:12],
            time.perf_counter() - t0,
        )
        return predictor, True


def _load_predictor(job: _Job) -> Predictor:
    """Build the predictor for ``job`` (called once per worker process and model)."""
    from geoseg.predict import MaskRCNNPredictor

    return MaskRCNNPredictor.from_checkpoint(
        job.model, device=job.device, min_score=job.settings.lowest_score()
    )


def _device_type(predictor: Predictor) -> str:
    """``"cuda"``, ``"cpu"``... of a predictor with a ``device`` attribute (else ``"cpu"``)."""
    return str(getattr(getattr(predictor, "device", None), "type", "cpu"))


def _worker_name() -> str:
    """Address of the dask worker running this code (``host:pid`` outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _is_input_error(err: BaseException) -> bool:
    """Whether ``err`` is a problem of the scene itself (not retried) rather than transient."""
    if isinstance(err, GeosegError):
        return True
    try:
        from rasterio.errors import RasterioError
    except ImportError:  # pragma: no cover - rasterio is a dependency
        return False
    return isinstance(err, RasterioError)


def _error_text(err: BaseException) -> str:
    text = str(err).strip() or repr(err)
    return f"{type(err).__name__}: {text}"


def _failed_record(
    scene: SceneInput,
    job: _Job,
    err: BaseException | str,
    *,
    seconds: float = 0.0,
    worker: str | None = None,
    model_loaded: bool = False,
    n_tiles: int = 0,
    split_chunks: int = 0,
) -> SceneRecord:
    return SceneRecord(
        scene=scene.name,
        path=scene.path,
        status=SceneStatus.FAILED,
        n_tiles=n_tiles,
        seconds=round(seconds, 3),
        error=err if isinstance(err, str) else _error_text(err),
        model_sha256=job.model_sha256,
        config_hash=job.config_hash,
        worker=worker,
        worker_pid=os.getpid() if worker is not None else None,
        model_loaded=model_loaded,
        split_chunks=split_chunks,
        finished=_now(),
    )


def _write_quicklook(scene: SceneInput, job: _Job, gdf: Any) -> str | None:
    """Write the scene's quicklook PNG when asked for; return its path."""
    if not job.quicklook:
        return None
    from geoseg.viz import quicklook

    out = job.quicklook_for(scene)
    out.parent.mkdir(parents=True, exist_ok=True)
    quicklook(scene.path, gdf, out)
    return str(out)


def _ok_record(
    scene: SceneInput,
    job: _Job,
    *,
    counts: Mapping[str, int],
    n_tiles: int,
    n_objects: int,
    seconds: float,
    quicklook: str | None,
    model_loaded: bool,
    split_chunks: int = 0,
) -> SceneRecord:
    return SceneRecord(
        scene=scene.name,
        path=scene.path,
        status=SceneStatus.OK,
        output=str(job.output_for(scene)),
        quicklook=quicklook,
        counts={str(k): int(v) for k, v in counts.items()},
        n_tiles=int(n_tiles),
        n_objects=int(n_objects),
        seconds=round(seconds, 3),
        model_sha256=job.model_sha256,
        config_hash=job.config_hash,
        worker=_worker_name(),
        worker_pid=os.getpid(),
        model_loaded=model_loaded,
        split_chunks=split_chunks,
        finished=_now(),
    )


def _process_scene(scene: SceneInput, job: _Job) -> SceneRecord:
    """Task: run one whole scene on this worker with :func:`~geoseg.pipeline.run_scene`.

    Input errors (corrupt/unreadable scene, bad bands...) give a failed record; anything else
    propagates so that dask retries the task.
    """
    from geoseg.pipeline import run_scene

    t0 = time.perf_counter()
    loaded = False
    try:
        predictor, loaded = _predictor_for(job)
        result = run_scene(
            scene.path,
            predictor,
            **job.settings.scene_kwargs(_device_type(predictor)),
            num_workers=0,
            output=job.output_for(scene),
        )
        ql = _write_quicklook(scene, job, result.gdf)
    except Exception as err:
        if not _is_input_error(err):
            raise
        logger.info("%s failed: %s", scene.path, _error_text(err))
        return _failed_record(
            scene,
            job,
            err,
            seconds=time.perf_counter() - t0,
            worker=_worker_name(),
            model_loaded=loaded,
        )
    return _ok_record(
        scene,
        job,
        counts=result.counts,
        n_tiles=result.n_tiles,
        n_objects=len(result.gdf),
        seconds=time.perf_counter() - t0,
        quicklook=ql,
        model_loaded=loaded,
    )


# --------------------------------------------------------------------------------------------
# split scenes: plan on a worker, chunks of tiles on all workers, stitch on one.
# These steps mirror run_scene's (same statistics, batches, score filter, stitch, vectorize,
# write), so a split scene gives the same objects as an unsplit one; tests check that.


def _plan_scene(scene: SceneInput, job: _Job, split_tiles: int) -> _ScenePlan | SceneRecord:
    """Task: open a scene and plan its grid; statistics only when it is big enough to split.

    Returns:
        A plan when the scene has at least ``split_tiles`` tiles; otherwise the scene is
        processed whole right here and its record returned (also the record of an input
        error).
    """
    from geoseg.export import check_writable
    from geoseg.raster import compute_norm_stats, open_scene, validate_bands
    from geoseg.tiling import make_grid

    t0 = time.perf_counter()
    s = job.settings
    try:
        info = open_scene(scene.path)
        specs = tuple(make_grid(info.width, info.height, tile_size=s.tile_size, overlap=s.overlap))
        if len(specs) < split_tiles:
            return _process_scene(scene, job)
        check_writable(job.output_for(scene))
        predictor, _ = _predictor_for(job)
        bands = s.bands if s.bands is not None else getattr(predictor, "bands", None)
        sel = validate_bands(info, bands)
        model_bands = getattr(predictor, "bands", None)
        if model_bands is not None and len(model_bands) != len(sel):
            from geoseg.errors import BandError

            raise BandError(
                f"{info.path}: the model expects {len(model_bands)} band(s) but {len(sel)} "
                f"band(s) {list(sel)} are selected; choose {len(model_bands)} bands"
            )
        stats = compute_norm_stats(info, bands=sel)
    except Exception as err:
        if not _is_input_error(err):
            raise
        return _failed_record(
            scene, job, err, seconds=time.perf_counter() - t0, worker=_worker_name()
        )
    return _ScenePlan(info=info, stats=stats, specs=specs, seconds=time.perf_counter() - t0)


def _predict_chunk(
    scene: SceneInput, job: _Job, plan: _ScenePlan, indexes: tuple[int, ...]
) -> _ChunkResult:
    """Task: read and predict the tiles ``indexes`` of a split scene.

    Tiles without a valid pixel are skipped (as :func:`~geoseg.pipeline.run_scene` does);
    detections below ``min_score`` are dropped here, so only small cropped masks travel.
    """
    import rasterio

    from geoseg.errors import RasterReadError
    from geoseg.pipeline import filter_scores, score_thresholds
    from geoseg.raster import read_window
    from geoseg.tiling import tile_transform
    from geoseg.types import Tile

    t0 = time.perf_counter()
    predictor, loaded = _predictor_for(job)
    info, s = plan.info, job.settings
    tiles: list[Tile] = []
    try:
        with rasterio.open(info.path) as ds:
            for i in indexes:
                spec = plan.specs[i]
                image, valid = read_window(
                    ds, spec.window, bands=plan.stats.bands, stats=plan.stats, nodata=info.nodata
                )
                if valid.any():
                    tiles.append(
                        Tile(
                            spec=spec,
                            image=image,
                            valid=valid,
                            transform=tile_transform(info.transform, spec.window),
                            crs_wkt=info.crs_wkt,
                        )
                    )
    except rasterio.errors.RasterioError as err:
        raise RasterReadError(f"{info.path}: cannot be read: {err}") from err
    out: list[TileDetections] = []
    batch = s.batch_for(_device_type(predictor))
    thresholds = score_thresholds(tuple(predictor.classes), s.min_score, s.class_min_score)
    for start in range(0, len(tiles), batch):
        for dets in predictor.predict_tiles(tiles[start : start + batch]):
            out.append(filter_scores(dets, thresholds))
    return _ChunkResult(
        detections=tuple(out),
        n_tiles=len(tiles),
        seconds=time.perf_counter() - t0,
        model_loaded=loaded,
    )


def _finish_split(
    scene: SceneInput, job: _Job, plan: _ScenePlan, *chunks: _ChunkResult
) -> SceneRecord:
    """Task: stitch the chunks of a split scene, vectorize and write (as run_scene does)."""
    from geoseg.export import write_vectors
    from geoseg.pipeline import stitch_tiles, vectorize_scene

    t0 = time.perf_counter()
    s, info = job.settings, plan.info
    predictor, loaded = _predictor_for(job)
    per_tile = [d for chunk in chunks for d in chunk.detections]
    n_tiles = sum(c.n_tiles for c in chunks)
    busy = plan.seconds + sum(c.seconds for c in chunks)
    try:
        detections = stitch_tiles(
            per_tile, info, stitch_options=s.stitch_options, min_area_px=s.min_area_px
        )
        gdf = vectorize_scene(
            detections, info, simplify_tolerance=s.simplify_tolerance, min_area=s.min_area
        )
        write_vectors(gdf, job.output_for(scene))
        ql = _write_quicklook(scene, job, gdf)
    except Exception as err:
        if not _is_input_error(err):
            raise
        return _failed_record(
            scene,
            job,
            err,
            seconds=busy + time.perf_counter() - t0,
            worker=_worker_name(),
            n_tiles=n_tiles,
            split_chunks=len(chunks),
        )
    counts = dict.fromkeys(predictor.classes, 0)
    for name, n in gdf["class"].value_counts().items():
        counts[str(name)] = int(n)
    return _ok_record(
        scene,
        job,
        counts=counts,
        n_tiles=n_tiles,
        n_objects=len(gdf),
        seconds=busy + time.perf_counter() - t0,
        quicklook=ql,
        model_loaded=loaded or any(c.model_loaded for c in chunks),
        split_chunks=len(chunks),
    )


def _chunks(n: int, n_chunks: int, *, multiple: int = 1) -> list[tuple[int, ...]]:
    """Split ``range(n)`` into at most ``n_chunks`` contiguous runs (row-major order).

    Every run but the last has a length that is a multiple of ``multiple`` (the batch size),
    so the batches a split scene sends to the model are those of an unsplit run.
    """
    multiple = max(1, multiple)
    size = max(1, math.ceil(n / max(1, n_chunks) / multiple)) * multiple
    return [tuple(range(a, min(a + size, n))) for a in range(0, n, size)]


# --------------------------------------------------------------------------------------------
# client side


def _checkpoint_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` of a checkpoint given as ``NAME`` with any suffix."""
    p = Path(path).expanduser()
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def resolve_settings(
    model: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | PresetConfig | None = None,
    bands: Sequence[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    min_score: float | None = None,
    class_min_score: Mapping[str, float] | None = None,
    batch_size: int | None = None,
) -> RunSettings:
    """:func:`geoseg.config.resolve_run_settings` with settings from ``model``'s sidecar.

    The checkpoint gives the tile size and its recommended per-class scores.

    Raises:
        CheckpointError: the checkpoint's sidecar is missing or unreadable.
        ConfigError: the preset is unknown or invalid, or the overlap does not fit the tile.
    """
    from geoseg.checkpoint import read_meta

    meta = read_meta(Path(model))
    return resolve_run_settings(
        model_tile_size=int(meta.tile_size),
        config=Path(config) if isinstance(config, os.PathLike) else config,
        bands=bands,
        tile_size=tile_size,
        overlap=overlap,
        min_score=min_score,
        class_min_score=class_min_score,
        model_score_thresholds=meta.score_thresholds,
        batch_size=batch_size,
    )


#: Per-scene output formats and their extensions (COCO JSON needs a scene per file and is
#: written by ``geoseg predict``, not here).
_EXTENSIONS = {
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "shapefile": ".shp",
    "parquet": ".parquet",
    "flatgeobuf": ".fgb",
}
_FORMAT_ALIASES = {"shp": "shapefile", "fgb": "flatgeobuf", "geoparquet": "parquet"}


def _format_ext(fmt: str) -> tuple[str, str]:
    """``(format name, file extension)`` for a vector format name such as ``gpkg``."""
    name = _FORMAT_ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if name not in _EXTENSIONS:
        raise ConfigError(
            f"format {fmt!r} is not supported by batch; use one of {sorted(_EXTENSIONS)}"
        )
    return name, _EXTENSIONS[name]


def _gpu_count() -> int:
    """Number of CUDA devices visible to this process (0 without CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install counts as none
        return 0


def _worker_specs(n_workers: int, *, gpus: int, cpus: int, memory: int) -> dict[str, Any]:
    """Per-worker settings of the local cluster (pure; the ``Nanny`` options of each worker).

    Each worker is one process with one task thread, ``cpus // n_workers`` torch/BLAS threads
    and ``memory // n_workers`` bytes of memory; with GPUs, worker ``i`` sees only GPU
    ``i % gpus`` (``CUDA_VISIBLE_DEVICES``), so its ``cuda`` device is that GPU.
    """
    threads = str(max(1, cpus // n_workers))
    specs = {}
    for i in range(n_workers):
        env = {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        specs[f"geoseg-{i}"] = {
            "nthreads": 1,
            "env": env,
            "memory_limit": max(1, memory // n_workers),
            "host": "127.0.0.1",
        }
    return specs


def _start_local_cluster(n_workers: int | None, *, cap: int | None = None) -> Any:
    """A local cluster of single-threaded worker processes sized to this machine.

    One worker per GPU (pinned, see :func:`_worker_specs`), else one per CPU core; never more
    than ``cap``.
    """
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    gpus = _gpu_count()
    cpus = os.cpu_count() or 1
    n = n_workers if n_workers is not None else (gpus or cpus)
    n = max(1, min(n, cap) if cap is not None else n)
    specs = _worker_specs(n, gpus=gpus, cpus=cpus, memory=int(MEMORY_LIMIT))
    logger.info("starting a local dask cluster of %d worker process(es), %d GPU(s)", n, gpus)
    return SpecCluster(
        workers={
            name: {"cls": Nanny, "options": {**opts, "silence_logs": logging.ERROR}}
            for name, opts in specs.items()
        },
        scheduler={
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "dashboard_address": ":8787"},
        },
        silence_logs=logging.ERROR,
        name="geoseg-batch",
    )


def _dashboard(client: Any) -> str | None:
    link = getattr(client, "dashboard_link", None)
    if not link:
        return None
    if importlib.util.find_spec("bokeh") is None:
        return f"{link} (not served: install bokeh>=3.1 for the dashboard)"
    return str(link)


def _is_done(
    record: SceneRecord | None, job: _Job, scene: SceneInput, *, need_quicklook: bool
) -> bool:
    """Whether a manifest record lets ``scene`` be skipped on resume."""
    return (
        record is not None
        and record.status is SceneStatus.OK
        and record.model_sha256 == job.model_sha256
        and record.config_hash == job.config_hash
        and record.path == scene.path
        and record.output == str(job.output_for(scene))
        and job.output_for(scene).exists()
        and (
            not need_quicklook or (record.quicklook is not None and Path(record.quicklook).exists())
        )
    )


class _Tally:
    """Running totals for the progress callback."""

    def __init__(self, total: int, skipped: int, callback: ProgressCallback | None) -> None:
        self.total, self.skipped, self.callback = total, skipped, callback
        self.done = self.ok = self.failed = self.tiles = self.objects = 0
        self.counts: dict[str, int] = {}

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
    scheduler: str | None = None,
    n_workers: int | None = None,
    fmt: str = "gpkg",
    force: bool = False,
    quicklook: bool = False,
    config: str | os.PathLike[str] | PresetConfig | None = None,
    bands: Sequence[int] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    min_score: float | None = None,
    class_min_score: Mapping[str, float] | None = None,
    batch_size: int | None = None,
    asset: str | None = None,
    split_tiles: int | None = None,
    retries: int = 1,
    device: str | None = None,
    progress: ProgressCallback | None = None,
    on_dashboard: Callable[[str], None] | None = None,
) -> BatchReport:
    """Run the whole pipeline on many scenes, one dask task per scene.

    Args:
        inputs: glob(s), text file(s) of paths, STAC ItemCollection JSON(s) or scene paths
            (see :func:`resolve_inputs`).
        model: checkpoint (``NAME``, ``NAME.safetensors`` or ``NAME.json``); it must be
            readable by every worker.
        out_dir: output folder: ``<scene>.<ext>`` per scene, ``manifest.json`` (the latest
            record of every scene ever run into this folder), ``summary.csv`` and
            ``summary.parquet`` (this call's scenes), and ``quicklooks/<scene>.png``.
        scheduler: address of an existing dask scheduler (``tcp://host:8786``); ``None``
            starts a local cluster of processes (one per GPU, else one per CPU core).
        n_workers: workers of the local cluster (ignored with ``scheduler``); never more than
            there are tasks to run.
        fmt: vector format of the outputs (as in ``geoseg predict``: gpkg, geojson, ...).
        force: redo every scene, even those already done with the same model and config.
        quicklook: also write a quicklook PNG per scene.
        config: preset name / YAML path / :class:`~geoseg.config.PresetConfig` for tiling and
            thresholds (default: from the checkpoint, see :func:`resolve_settings`).
        bands: 1-based raster bands fed to the model (default: the checkpoint's).
        tile_size: tile side in pixels (default: preset, else checkpoint; see
            :func:`resolve_settings`).
        overlap: tile overlap in pixels (default: preset, else tile_size // 4).
        min_score: score threshold (default: preset, else the checkpoint's per-class
            scores over 0.5).
        class_min_score: per-class score thresholds applied on top (class name -> score).
        batch_size: tiles per forward pass on each worker (default: 8 on CUDA, else 1).
        asset: STAC asset key (default: the first GeoTIFF asset of each item).
        split_tiles: spread any scene of at least this many tiles over all workers (chunks of
            tiles predicted in parallel, stitched by one task); ``None`` never splits.
        retries: extra attempts of a task that failed for an unexpected (non-input) reason.
            A worker that dies is replaced and its tasks rescheduled by dask.
        device: inference device on the workers (``None``: each worker's best, i.e. its
            pinned GPU or the CPU).
        progress: called with a :class:`BatchProgress` at the start and after each scene
            (and each chunk of a split scene).
        on_dashboard: called with the dask dashboard address once the cluster is up.

    Returns:
        The report; failed scenes are in ``report.failed`` (the call does not raise for them).

    Raises:
        ConfigError: no inputs, invalid arguments, or an unreadable manifest in ``out_dir``.
        CheckpointError: the checkpoint is missing or unreadable.
        ExportError: ``out_dir`` cannot be written.
    """
    t_start = time.perf_counter()
    if split_tiles is not None and split_tiles < 1:
        raise ConfigError(f"split_tiles must be >= 1 (tiles), got {split_tiles}")
    if n_workers is not None and n_workers < 1:
        raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    from geoseg.checkpoint import read_meta
    from geoseg.errors import CheckpointError

    fmt_value, ext = _format_ext(fmt)
    scenes = resolve_inputs(inputs, asset=asset)
    weights, sidecar = (p.resolve() for p in _checkpoint_files(model))
    if not weights.is_file() or not sidecar.is_file():
        raise CheckpointError(
            f"{model}: checkpoint not found (need {weights.name} and {sidecar.name}); check -m"
        )
    classes = read_meta(sidecar).classes
    out = Path(out_dir).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".geoseg-write-test-"):
            pass
    except OSError as err:
        raise ExportError(f"{out}: the output folder cannot be written ({err})") from err
    settings = resolve_settings(
        weights,
        config=config,
        bands=bands,
        tile_size=tile_size,
        overlap=overlap,
        min_score=min_score,
        class_min_score=class_min_score,
        batch_size=batch_size,
    )
    model_sha = file_sha256(weights)
    config_hash = hashlib.sha256((settings.digest() + file_sha256(sidecar)).encode()).hexdigest()
    job = _Job(
        model=str(weights),
        model_sha256=model_sha,
        settings=settings,
        config_hash=config_hash,
        out_dir=str(out),
        ext=ext,
        fmt=fmt_value,
        quicklook=quicklook,
        device=device,
    )
    manifest = _Manifest(
        out / MANIFEST_NAME,
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
            if _is_done(manifest.records.get(s.name), job, s, need_quicklook=quicklook)
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
        _write_summary(out, records, classes)
    report = BatchReport(
        out_dir=out,
        records=records,
        skipped=tuple(skipped),
        manifest=manifest.path,
        summary_csv=out / SUMMARY_CSV,
        summary_parquet=out / SUMMARY_PARQUET,
        model_sha256=model_sha,
        config_hash=config_hash,
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


def _submit_split(
    client: Any,
    scene: SceneInput,
    job: _Job,
    plan: _ScenePlan,
    n_workers: int,
    run_id: str,
    retries: int,
) -> list[tuple[Any, tuple[str, SceneInput, int]]]:
    """Submit a split scene's chunk tasks (2 per worker) and its finish task.

    Returns:
        ``(future, (role, scene, tiles))`` for each chunk (role ``"chunk"``, its grid tiles)
        and for the finish task (role ``"scene"``).
    """
    # chunk lengths are multiples of the batch size, so batches match an unsplit run's
    multiple = job.settings.batch_size or CUDA_BATCH_SIZE  # (8 is a multiple of CPU's 1 too)
    parts = _chunks(len(plan.specs), max(2, 2 * n_workers), multiple=multiple)
    logger.info("%s: spreading %d tiles over %d chunks", scene.path, len(plan.specs), len(parts))
    chunk_futs = [
        client.submit(
            _predict_chunk,
            scene,
            job,
            plan,
            part,
            key=f"geoseg-chunk-{scene.name}-{i}-{run_id}",
            pure=False,
            retries=retries,
        )
        for i, part in enumerate(parts)
    ]
    fin = client.submit(
        _finish_split,
        scene,
        job,
        plan,
        *chunk_futs,
        key=f"geoseg-finish-{scene.name}-{run_id}",
        pure=False,
        retries=retries,
    )
    out: list[tuple[Any, tuple[str, SceneInput, int]]] = [
        (f, ("chunk", scene, len(part))) for f, part in zip(chunk_futs, parts, strict=True)
    ]
    out.append((fin, ("scene", scene, 0)))
    return out


def _run_tasks(
    todo: Sequence[SceneInput],
    job: _Job,
    manifest: _Manifest,
    tally: _Tally,
    *,
    scheduler: str | None,
    n_workers: int | None,
    split_tiles: int | None,
    retries: int,
    on_dashboard: Callable[[str], None] | None,
) -> str | None:
    """Submit the scenes, collect records as they complete; returns the dashboard link."""
    from distributed import Client, as_completed

    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as err:
                raise ConfigError(
                    f"cannot reach the dask scheduler at {scheduler!r} ({err}); check --scheduler"
                ) from err
        else:
            cap = None if split_tiles is not None else len(todo)
            cluster = stack.enter_context(_start_local_cluster(n_workers, cap=cap))
            client = stack.enter_context(Client(cluster))
        dashboard = _dashboard(client)
        logger.info("dask dashboard: %s", dashboard)
        if on_dashboard is not None and dashboard:
            on_dashboard(dashboard)
        n_workers_now = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        run_id = hashlib.sha1(f"{time.time_ns()}-{os.getpid()}".encode()).hexdigest()[:8]
        # future -> (role, scene, tiles): "scene" gives a record, "plan" a plan or a record,
        # "chunk" a chunk of a split scene (only counted, its result goes to the finish task)
        roles: dict[Any, tuple[str, SceneInput, int]] = {}
        for s in todo:
            if split_tiles is None:
                fut = client.submit(
                    _process_scene,
                    s,
                    job,
                    key=f"geoseg-scene-{s.name}-{run_id}",
                    pure=False,
                    retries=retries,
                )
                roles[fut] = ("scene", s, 0)
            else:
                fut = client.submit(
                    _plan_scene,
                    s,
                    job,
                    split_tiles,
                    key=f"geoseg-plan-{s.name}-{run_id}",
                    pure=False,
                    retries=retries,
                )
                roles[fut] = ("plan", s, 0)
        queue = as_completed(list(roles))
        tiles_counted: dict[str, int] = {}
        for done in queue.batches():
            for fut in done:
                role, scene, n_tiles = roles.pop(fut)
                if role == "chunk":
                    tiles_counted[scene.name] = tiles_counted.get(scene.name, 0) + n_tiles
                    tally.add_tiles(n_tiles)
                    continue
                try:
                    value = fut.result()
                except Exception as err:
                    logger.warning("%s failed on the cluster: %s", scene.path, _error_text(err))
                    value = _failed_record(scene, job, err)
                if isinstance(value, _ScenePlan):
                    for new_fut, new_role in _submit_split(
                        client, scene, job, value, n_workers_now, run_id, retries
                    ):
                        roles[new_fut] = new_role
                        queue.add(new_fut)
                    continue
                manifest.add(value)
                if value.status is SceneStatus.FAILED:
                    logger.warning("%s failed: %s", scene.name, value.error)
                tally.add(value, tiles_counted=tiles_counted.pop(scene.name, 0))
            manifest.flush()  # once per batch of completed futures
        return dashboard
