"""Per-tile results of an unfinished scene, kept on disk so that a rerun continues.

``geoseg predict`` (and :func:`geoseg.pipeline.run_scene` with ``resume=True``) records each
batch of predicted tiles in a *partial-results file* next to the output, ``OUT.partial``
(:func:`partial_path`; for an object-store output, a file in the local cache folder), and
removes it once the output is written. An interrupted run (Ctrl-C, a crash, a lost machine)
leaves the file behind; the next run with the same scene, model and settings reads it back,
predicts only the missing tiles and gives the same result as an uninterrupted run.

The file is one SQLite database (standard library; every batch committed as one transaction,
without waiting for the disk: a killed process loses at most the batch in flight, and a file
left damaged by a power cut fails SQLite's check when it is opened and is started over):

* table ``meta``: ``key`` / ``value`` text pairs: ``format``, ``version``, ``key`` (the
  :func:`resume_key` digest the tiles were predicted under), ``scene``, ``tiles_total``;
* table ``tiles``: ``idx`` (the tile's grid index) and ``data``: the tile's kept detections
  as an uncompressed ``.npz`` (boxes, scores, labels, mask boxes, the masks' bits packed
  into one array, class names) in **tile pixels**, exactly as
  :func:`geoseg.pipeline.predict_tiles` returned them.

A file made under another key (other settings, model, scene or scene statistics) is not
used: :meth:`PartialResults.open` logs a warning and starts it over.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.types import NormStats, SceneInfo, TileDetections, TileSpec

__all__ = [
    "PARTIAL_SUFFIX",
    "PartialResults",
    "cache_folder",
    "decode_tile",
    "encode_tile",
    "partial_path",
    "resume_key",
]

logger = logging.getLogger(__name__)

#: Appended to the output's name: ``out.gpkg`` -> ``out.gpkg.partial``.
PARTIAL_SUFFIX = ".partial"
_FORMAT = "geoseg-partial-results"
_VERSION = 1


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/geoseg/partial`` (default ``~/.cache/geoseg/partial``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoseg" / "partial"


def partial_path(output: str | os.PathLike[str]) -> Path:
    """Where the partial results of a run writing ``output`` are kept.

    ``OUT.partial`` next to a local output; for an object-store URL (``s3://...``), which
    cannot be appended to, a file in :func:`cache_folder` named after the URL's digest.
    """
    text = os.fspath(output)
    if "://" in text:
        name = text.rstrip("/").rsplit("/", 1)[-1]
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return cache_folder() / f"{digest}-{name}{PARTIAL_SUFFIX}"
    p = Path(text)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def _scene_identity(info: SceneInfo) -> dict[str, Any]:
    """The scene's path, georeference and, for a local file, its size and modification time."""
    ident: dict[str, Any] = {
        "path": info.path,
        "size": [info.width, info.height, info.count],
        "dtype": info.dtype,
        "transform": list(info.transform)[:6],
        "crs": info.crs_wkt,
        "nodata": info.nodata,
    }
    if os.path.isfile(info.path):
        st = os.stat(info.path)
        ident.update(path=os.path.abspath(info.path), bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    return ident


def resume_key(
    *,
    settings_digest: str,
    model_id: str,
    info: SceneInfo,
    stats: NormStats,
    bands: Sequence[int],
    classes: Sequence[str],
    specs: Sequence[TileSpec],
) -> str:
    """SHA-256 of everything that decides a tile's detections.

    The settings' :meth:`~geoseg.settings.RunSettings.digest`, the model's identity, the
    scene (path, size, georeference; a local file's byte size and modification time), the
    normalisation, the bands, the classes and the tile grid (every window, scene pixels).
    """
    data = {
        "settings": settings_digest,
        "model": model_id,
        "scene": _scene_identity(info),
        "stats": [list(stats.bands), list(stats.low), list(stats.high)],
        "bands": list(bands),
        "classes": list(classes),
        "grid": [
            (s.window.col_off, s.window.row_off, s.window.width, s.window.height) for s in specs
        ],
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def encode_tile(dets: TileDetections) -> bytes:
    """One tile's detections as ``.npz`` bytes (masks bit-packed; see :func:`decode_tile`)."""
    shapes = np.array([m.shape for m in dets.masks], np.int32).reshape(-1, 2)
    bits = (
        np.packbits(np.concatenate([m.reshape(-1) for m in dets.masks]))
        if dets.masks
        else np.zeros(0, np.uint8)
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        boxes=dets.boxes,
        scores=dets.scores,
        labels=dets.labels,
        mask_boxes=dets.mask_boxes,
        mask_shapes=shapes,
        mask_bits=bits,
        classes=np.array(dets.classes, dtype=str),
    )
    return buf.getvalue()


def decode_tile(data: bytes, tile: TileSpec) -> TileDetections:
    """Inverse of :func:`encode_tile` (``tile``: the grid cell the detections belong to)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        shapes = z["mask_shapes"]
        sizes = [int(h) * int(w) for h, w in shapes]
        flat = np.unpackbits(z["mask_bits"], count=sum(sizes)).astype(bool)
        ends = np.cumsum(sizes)
        masks = tuple(
            flat[end - n : end].reshape(int(h), int(w))
            for n, end, (h, w) in zip(sizes, ends, shapes, strict=True)
        )
        return TileDetections(
            boxes=z["boxes"],
            scores=z["scores"],
            labels=z["labels"],
            mask_boxes=z["mask_boxes"],
            masks=masks,
            classes=tuple(str(c) for c in z["classes"]),
            tile=tile,
        )


class PartialResults:
    """An open partial-results file (see the module docstring); use :meth:`open`.

    Attributes:
        path: the SQLite file.
        key: the :func:`resume_key` its tiles were predicted under.
        done: grid indexes already stored.
    """

    def __init__(self, path: Path, key: str, conn: sqlite3.Connection, done: set[int]) -> None:
        self.path, self.key, self._conn, self.done = path, key, conn, done

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], key: str, *, scene: str, tiles_total: int
    ) -> PartialResults:
        """Open (or create) the file at ``path`` for ``key``.

        A file made under another key, or one that is not a partial-results file (a crash
        while it was created), is replaced, with a warning in the log.

        Raises:
            OSError: the file cannot be created (a read-only folder...).
        """
        p = Path(path)
        if p.exists():
            stale = _read_key(p)
            if stale != key:
                why = "unreadable" if stale is None else "made with other settings, model or scene"
                logger.warning("%s: partial results %s; starting over", p, why)
                _remove(p)
            elif not _intact(p):
                logger.warning("%s: partial results damaged; starting over", p)
                _remove(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(p, isolation_level=None)  # explicit transactions below
        try:
            # no fsync per commit: a killed process loses nothing committed (the OS has it);
            # a file damaged by a power cut fails the quick_check in open() and starts over
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS tiles (idx INTEGER PRIMARY KEY, data BLOB)")
            info = {
                "format": _FORMAT,
                "version": str(_VERSION),
                "key": key,
                "scene": scene,
                "tiles_total": str(tiles_total),
            }
            with conn:
                conn.execute("BEGIN")
                conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", info.items())
            done = {int(r[0]) for r in conn.execute("SELECT idx FROM tiles")}
        except BaseException:
            conn.close()
            raise
        return cls(p, key, conn, done)

    def load(self, specs: Sequence[TileSpec]) -> list[TileDetections]:
        """The stored tiles' detections (``specs``: the plan's grid, indexed by grid index)."""
        rows = self._conn.execute("SELECT idx, data FROM tiles ORDER BY idx")
        return [decode_tile(bytes(data), specs[int(idx)]) for idx, data in rows]

    def add(self, per_tile: Iterable[TileDetections]) -> None:
        """Store a batch of tiles' detections in one transaction (each must have ``tile``)."""
        rows = []
        for d in per_tile:
            if d.tile is None:
                raise ValueError("partial results need each tile's grid cell (tile=None)")
            rows.append((d.tile.index, encode_tile(d)))
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO tiles VALUES (?, ?)", rows)
        self.done.update(i for i, _ in rows)

    def close(self) -> None:
        """Close the file, keeping it (an unfinished run)."""
        self._conn.close()

    def remove(self) -> None:
        """Close and delete the file (the run finished)."""
        self._conn.close()
        _remove(self.path)

    def __repr__(self) -> str:
        return f"PartialResults({str(self.path)!r}, {len(self.done)} tiles)"


def _read_key(path: Path) -> str | None:
    """The key a partial-results file was made under, or ``None`` when it is not one."""
    try:
        conn = sqlite3.connect(path)  # read-write: a killed run's hot journal is rolled back
        try:
            meta: Mapping[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return meta.get("key") if meta.get("format") == _FORMAT else None


def _intact(path: Path) -> bool:
    """Whether SQLite's ``quick_check`` finds the file sound."""
    try:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return rows == [("ok",)]


def _remove(path: Path) -> None:
    """Delete a partial-results file and SQLite's journal beside it."""
    for p in (path, path.with_name(path.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
