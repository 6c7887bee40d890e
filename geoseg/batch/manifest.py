"""What a batch run records: per-scene records, the resumable manifest, the summary tables.

``OUTDIR/manifest.json`` holds the latest :class:`SceneRecord` of every scene ever run into the
folder; it is rewritten atomically after each batch of completed tasks, so a killed run keeps
what finished. ``OUTDIR/summary.csv`` and ``OUTDIR/summary.parquet`` have one row per scene of
a run with its object count per class. :func:`is_done` is the resume rule.

The per-scene output formats (:data:`OUTPUT_FORMATS`) are listed here, in one place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoseg.errors import ConfigError
from geoseg.io import VectorFormat, atomic_write
from geoseg.storage import Target, as_target, join, read_bytes, write_output
from geoseg.storage import exists as target_exists
from geoseg.storage import file_sha256 as target_sha256
from geoseg.storage import size as target_size

__all__ = [
    "FORMAT_ALIASES",
    "MANIFEST_NAME",
    "OUTPUT_FORMATS",
    "SUMMARY_CSV",
    "SUMMARY_PARQUET",
    "Manifest",
    "SceneRecord",
    "SceneStatus",
    "atomic_write",
    "file_sha256",
    "is_done",
    "output_format",
    "output_intact",
    "summary_frame",
    "utc_now",
    "write_summary",
]

MANIFEST_NAME = "manifest.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
_MANIFEST_FORMAT = "geoseg-batch-manifest"
_MANIFEST_VERSION = 1

#: Per-scene output formats of a batch (short name -> extension), from the one format table
#: :class:`geoseg.io.VectorFormat`. COCO JSON is not offered: a batch folder is read back as
#: georeferenced vectors (``geoseg count``, notebooks), and COCO holds scene-pixel outlines;
#: ``geoseg predict`` writes COCO for one scene.
OUTPUT_FORMATS: Mapping[str, str] = {
    f.value: f.extension for f in VectorFormat if f is not VectorFormat.COCO
}
#: Other names accepted for :data:`OUTPUT_FORMATS` (``shp``, ``fgb``, ``geoparquet``...).
FORMAT_ALIASES: Mapping[str, str] = {
    alias: f.value for f in VectorFormat if f is not VectorFormat.COCO for alias in f.aliases
}


def output_format(fmt: str) -> tuple[str, str]:
    """``(format name, file extension)`` for a vector format name such as ``gpkg``.

    Raises:
        ConfigError: a format batch does not write (the message lists those it does).
    """
    name = FORMAT_ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if name not in OUTPUT_FORMATS:
        raise ConfigError(
            f"format {fmt!r} is not supported by batch; use one of {sorted(OUTPUT_FORMATS)} "
            "(COCO JSON: geoseg predict, one scene at a time)"
        )
    return name, OUTPUT_FORMATS[name]


class SceneStatus(enum.StrEnum):
    """Outcome of one scene in the manifest."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SceneRecord:
    """One scene's entry in the run manifest.

    Attributes:
        scene: the scene's unique name (:attr:`SceneInput.name`).
        path: the GDAL path it was read from.
        status: ``ok`` or ``failed``.
        output: the vector file written (``None`` when failed).
        output_bytes: its size in bytes when written; output_sha256: its SHA-256 (the main
            file of a multi-file format). Resume re-runs a scene whose output no longer
            matches both (:func:`is_done`).
        quicklook: the quicklook PNG written, if asked for.
        counts: objects per class name.
        n_tiles: tiles the scene was cut into; n_objects: objects found.
        seconds: wall time of the scene on its worker(s), model loading included.
        error: ``"ExceptionType: message"`` when failed, else ``None``.
        model_sha256: SHA-256 of the checkpoint file.
        config_hash: SHA-256 of the run settings' digest
            (:meth:`~geoseg.settings.RunSettings.digest`) and the checkpoint's sidecar.
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
    output_bytes: int = 0
    output_sha256: str = ""
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's (or, for a URL, an object's) bytes, read in 1 MiB blocks."""
    return target_sha256(as_target(path))


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Manifest:
    """``OUTDIR/manifest.json``: the latest record per scene name, rewritten atomically.

    On an object store (``path`` a URL) each flush uploads the whole manifest as one new
    object (:func:`geoseg.storage.write_output`).

    Attributes:
        path: the manifest file (a ``Path`` or a URL string).
        header: run-level fields written before the records (model, hashes, settings).
        records: scene name -> latest record (read from an existing manifest first).

    Raises:
        ConfigError: ``path`` exists but is not a geoseg batch manifest.
    """

    def __init__(self, path: Target, header: Mapping[str, Any]) -> None:
        self.path = path
        self.header = dict(header)
        self.records: dict[str, SceneRecord] = {}
        self._dirty = False
        if target_exists(path):
            try:
                data = json.loads(read_bytes(path).decode("utf-8"))
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
        """Record (or replace) one scene's outcome; written by the next :meth:`flush`."""
        self.records[record.scene] = record
        self._dirty = True

    def flush(self) -> None:
        """Rewrite the file (atomically) if a record was added since the last flush."""
        if not self._dirty and target_exists(self.path):
            return
        data = {
            "format": _MANIFEST_FORMAT,
            "version": _MANIFEST_VERSION,
            "updated": utc_now(),
            **self.header,
            "scenes": {name: r.to_dict() for name, r in sorted(self.records.items())},
        }
        text = json.dumps(data, indent=1, sort_keys=False) + "\n"
        write_output(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        self._dirty = False


def output_intact(record: SceneRecord, output: Target) -> bool:
    """Whether ``output`` is still the file ``record`` wrote: same size and same SHA-256.

    A 0-byte, truncated, replaced or missing file fails; so does a record without a size and
    hash (written by a geoseg before they were recorded), so that such a scene is run again
    rather than trusted. Reads the file once (vector outputs are small next to their scenes).
    """
    if not record.output_sha256 or record.output_bytes <= 0:
        return False
    try:
        if target_size(output) != record.output_bytes:
            return False
        return target_sha256(output) == record.output_sha256
    except OSError:
        return False


def is_done(
    record: SceneRecord | None,
    *,
    path: str,
    output: Target,
    model_sha256: str,
    config_hash: str,
    quicklook: Target | None,
) -> bool:
    """Whether a scene's manifest record lets it be skipped on resume.

    It must be ``ok``, made from the same ``path`` with the same model and config hashes, and
    its output must still be the file it wrote under the same name (:func:`output_intact`:
    size and SHA-256); when a quicklook is asked for (``quicklook`` is its path), the record's
    quicklook must exist and be non-empty.
    """
    return (
        record is not None
        and record.status is SceneStatus.OK
        and record.model_sha256 == model_sha256
        and record.config_hash == config_hash
        and record.path == path
        and record.output == str(output)
        and output_intact(record, output)
        and (
            quicklook is None
            or (
                record.quicklook == str(quicklook)
                and target_exists(quicklook)
                and target_size(quicklook) > 0
            )
        )
    )


def summary_frame(records: Sequence[SceneRecord], classes: Sequence[str]) -> Any:
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


def write_summary(out_dir: Target, records: Sequence[SceneRecord], classes: Sequence[str]) -> None:
    """Write ``summary.csv`` and ``summary.parquet`` (see :func:`summary_frame`) atomically.

    ``out_dir`` may be an object-store URL: each table is then uploaded once, complete.
    """
    frame = summary_frame(records, classes)
    write_output(join(out_dir, SUMMARY_CSV), lambda tmp: frame.to_csv(tmp, index=False))
    write_output(join(out_dir, SUMMARY_PARQUET), lambda tmp: frame.to_parquet(tmp, index=False))
