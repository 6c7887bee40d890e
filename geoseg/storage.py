"""Where outputs go: a local path, or an object-store URL such as ``s3://bucket/run/out.gpkg``.

Local outputs keep :func:`geoseg.io.atomic_write` (temporary file beside the target, then
rename). An object store has no rename, so an object is **written once, complete**: the writer
fills a file in a local temporary folder (GeoPackage and Shapefile drivers need a real file),
and the finished file is uploaded with one request (:meth:`fsspec` ``put_file``: one PUT, or a
multipart upload that the store only shows once it is completed). A writer that fails, or an
interrupt before the upload ends, leaves no object and removes the local copy; an earlier
object under the same name stays as it was. Multi-file formats upload their sidecars first and
the main file last.

URLs go through `fsspec <https://filesystem-spec.readthedocs.io>`_ (``s3://`` needs
``s3fs``: the ``cloud`` extra). The usual AWS settings apply (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an S3-compatible server, profiles...).
Rasters are read by GDAL itself (``s3://`` paths are read through ``/vsis3/``), with the same
environment variables.

Paths are passed around as :data:`Target`: a :class:`~pathlib.Path` for a local file, a
``str`` for a URL (``Path("s3://b/k")`` would fold the ``//``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import ExportError

__all__ = [
    "Target",
    "as_target",
    "check_folder_writable",
    "exists",
    "file_sha256",
    "filesystem",
    "is_url",
    "join",
    "read_bytes",
    "size",
    "write_output",
]

#: A local file (:class:`~pathlib.Path`) or an object-store URL (``str``).
Target = Path | str


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL (``s3://...``, ``memory://...``), not a GDAL ``/vsi`` path."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("/vsi")


def as_target(path: str | os.PathLike[str]) -> Target:
    """``path`` as a :data:`Target`: a URL string (no trailing ``/``) or a local ``Path``."""
    text = os.fspath(path)
    return text.rstrip("/") if is_url(text) else Path(text)


def join(base: Target, *names: str) -> Target:
    """``base / name / ...`` for a folder that is a local path or a URL."""
    if isinstance(base, Path):
        return base.joinpath(*names)
    return "/".join([base.rstrip("/"), *names])


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a URL.

    Raises:
        MissingExtraError: ``s3://`` without ``s3fs`` (the ``cloud`` extra).
        ExportError: a protocol fsspec does not know.
    """
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        from geoseg._extras import extra_error

        raise extra_error("cloud", f"{url}: object storage") from err
    except ValueError as err:
        raise ExportError(f"{url}: unknown storage protocol ({err})") from err


def exists(path: Target) -> bool:
    """Whether the file or object exists."""
    if isinstance(path, Path):
        return path.exists()
    fs, key = filesystem(path)
    return bool(fs.exists(key))


def size(path: Target) -> int:
    """Size in bytes (``OSError`` / ``FileNotFoundError`` when missing)."""
    if isinstance(path, Path):
        return path.stat().st_size
    fs, key = filesystem(path)
    return int(fs.size(key))


def read_bytes(path: Target) -> bytes:
    """The whole file or object."""
    if isinstance(path, Path):
        return path.read_bytes()
    fs, key = filesystem(path)
    return bytes(fs.cat_file(key))


def file_sha256(path: Target) -> str:
    """SHA-256 (hex) of a file's or object's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        if isinstance(path, Path):
            fh: Any = stack.enter_context(open(path, "rb"))
        else:
            fs, key = filesystem(path)
            fh = stack.enter_context(fs.open(key, "rb"))
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_folder_writable(folder: Target) -> None:
    """Fail early when outputs cannot go into ``folder`` (local: created if missing).

    For a URL, the bucket must exist and be listable with the credentials in force; nothing
    is written to check.

    Raises:
        ExportError: naming the folder and what to do.
    """
    if isinstance(folder, Path):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".geoseg-write-test-"):
                pass
        except OSError as err:
            raise ExportError(f"{folder}: the output folder cannot be written ({err})") from err
        return
    fs, key = filesystem(folder)
    bucket = key.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except Exception as err:  # botocore/aiohttp raise many kinds (no credentials, no endpoint)
        raise ExportError(
            f"{folder}: cannot reach the object store ({type(err).__name__}: {err}); check "
            "the credentials and AWS_ENDPOINT_URL"
        ) from err
    if not found:
        raise ExportError(f"{folder}: bucket {bucket!r} does not exist; create it first")


def write_output(
    path: Target,
    write: Callable[[Path], object],
    *,
    sidecars: Sequence[str] = (),
) -> Target:
    """Write one output, whole or not at all, locally or to an object store.

    Local paths: :func:`geoseg.io.atomic_write` (missing folders created). URLs: ``write``
    fills a file of the same name in a local temporary folder; the finished file (sidecars
    first, then the main file) is uploaded once; a stale sidecar object of an earlier output
    is deleted. On any error, including ``KeyboardInterrupt``, the local copy is removed and
    no new object exists.

    Args:
        path: the target (see :data:`Target`).
        write: called once with the local file to fill (it exists, empty).
        sidecars: extensions of files ``write`` may create beside it (``.shx``, ``.dbf``...).

    Returns:
        ``path``.

    Raises:
        OSError, ExportError: the file cannot be written or uploaded; whatever ``write`` raises.
    """
    from geoseg.io import atomic_write

    if isinstance(path, Path):
        return atomic_write(path, write, sidecars=sidecars)
    fs, key = filesystem(path)
    name = key.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory(prefix="geoseg-upload-") as folder:
        tmp = Path(folder) / name
        tmp.touch()
        write(tmp)
        if not tmp.exists():
            raise ExportError(f"{path}: the writer left no file to upload")
        stem = key[: len(key) - len(tmp.suffix)] if tmp.suffix else key
        for ext in sidecars:
            side = tmp.with_suffix(ext)
            if side.exists():
                fs.put_file(str(side), stem + ext)
            else:
                with contextlib.suppress(FileNotFoundError):
                    if fs.exists(stem + ext):
                        fs.rm_file(stem + ext)
        fs.put_file(str(tmp), key)
    return path
