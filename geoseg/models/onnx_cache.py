"""A disk cache for the ONNX graphs the ``onnx`` engine exports (:mod:`geoseg.models.runtime`).

Exporting a Mask R-CNN's three convolutional parts with ``torch.onnx.export`` takes seconds
(2.5-14 s per model load on a 2-core CPU), so each exported graph is kept as
``<folder>/onnx/<key>.onnx`` and the next load of the same weights reads it back.

**Folder**: ``$GEOSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/geoseg``, else ``~/.cache/geoseg``;
``GEOSEG_CACHE_DIR=""`` (or :func:`cache_dir_override` with ``None``) turns the cache off.

**Key**: the SHA-256 of everything the exported graph depends on: every tensor of the module's
state dict (name, dtype, shape and bytes), the module's structure (``str(module)``), the
example input's shape and dtype, the opset, the torch and torchvision versions, the caller's
export-format version and any other export options the caller passes (output names, dynamic
axes). A retrained checkpoint, another architecture or another torch gives another key; stale
files are never read again (delete the folder to reclaim the space).

**Failures never fail a run**: a cached file ONNX Runtime cannot load (truncated, corrupt) is
exported again and overwritten, with a warning; a folder that cannot be created or written
gives one warning per folder and the graph is exported in memory, as without a cache. Files are
written atomically (:func:`geoseg.io.atomic_write_bytes`), so concurrent loads of the same model
(batch workers) at worst export twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["cache_dir_override", "cached_graph", "graph_key", "onnx_cache_dir"]

logger = logging.getLogger(__name__)

#: Environment variable naming the cache folder (empty: no cache).
CACHE_ENV = "GEOSEG_CACHE_DIR"

T = TypeVar("T")

_UNSET = object()
#: A folder set by :func:`cache_dir_override` (``None``: off), or ``_UNSET``: the environment.
_override: ContextVar[object] = ContextVar("geoseg_cache_dir", default=_UNSET)
_warned: set[Path] = set()
_warned_lock = threading.Lock()


def cache_root() -> Path | None:
    """The geoseg cache folder, ``None`` when caching is off (see the module docstring)."""
    override = _override.get()
    if override is not _UNSET:
        return None if override is None else Path(str(override)).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "geoseg"


def onnx_cache_dir() -> Path | None:
    """The folder of cached ONNX graphs (``<cache root>/onnx``), ``None`` when caching is off."""
    root = cache_root()
    return None if root is None else root / "onnx"


@contextlib.contextmanager
def cache_dir_override(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """Use ``folder`` as the cache root (``None``: no cache) inside the ``with`` block.

    Takes precedence over ``GEOSEG_CACHE_DIR``; per thread / asyncio context. Example::

        with cache_dir_override(None):  # always export, write nothing
            predictor = load_predictor(path, settings)
    """
    token = _override.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _override.reset(token)


def graph_key(
    module: nn.Module,
    example: Tensor,
    *,
    opset: int,
    version: int,
    extra: Any = None,
) -> str:
    """The cache key (64 hex digits) of ``module`` exported with ``example`` as input.

    Args:
        module: the module to export; its state dict (parameters and buffers) and ``str()``
            are hashed, so any change of a weight or of the structure changes the key.
        example: the example input (only its shape and dtype count).
        opset: the ONNX opset of the export.
        version: the caller's export-format version (bumped when its export code changes).
        extra: other export options, JSON-serialisable (``str()`` for the rest).
    """
    import torchvision

    h = hashlib.sha256()

    def put(text: str) -> None:
        data = text.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    put(f"geoseg-onnx:{int(version)}:opset{int(opset)}")
    put(f"torch {torch.__version__}; torchvision {torchvision.__version__}")
    put(f"input {tuple(example.shape)} {example.dtype}")
    put(json.dumps(extra, sort_keys=True, default=str))
    put(str(module))
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        put(f"{name} {t.dtype} {tuple(t.shape)}")
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _warn_once(folder: Path, err: OSError) -> None:
    with _warned_lock:
        if folder in _warned:
            return
        _warned.add(folder)
    logger.warning(
        "the ONNX cache folder %s cannot be written (%s): exporting the model in memory at "
        "each load; set %s to a writable folder, or to '' to turn the cache off",
        folder,
        err,
        CACHE_ENV,
    )


def cached_graph(
    module: nn.Module,
    example: Tensor,
    *,
    export: Callable[[], bytes],
    load: Callable[[bytes], T],
    opset: int,
    version: int,
    extra: Any = None,
    label: str | None = None,
) -> T:
    """``load(graph)`` of ``module``'s ONNX graph: from the cache, else ``export()``-ed and cached.

    Args:
        module: the module ``export`` exports (hashed into the key: :func:`graph_key`).
        example: the example input of the export.
        export: exports ``module`` and returns the ONNX graph's bytes.
        load: turns a graph's bytes into what the caller needs (an ONNX Runtime session);
            an exception from it on a cached graph means the file is corrupt.
        opset: the ONNX opset of the export (part of the key).
        version: the caller's export-format version (part of the key).
        extra: other export options (part of the key).
        label: names the graph in log messages (default: the module's class name).

    Returns:
        ``load``'s result.

    Raises:
        Whatever ``export`` raises, or ``load`` on a freshly exported graph.
    """
    folder = onnx_cache_dir()
    part = label or type(module).__name__
    if folder is None:
        logger.debug("ONNX cache off: exporting %s in memory", part)
        return load(export())
    key = graph_key(module, example, opset=opset, version=version, extra=extra)
    path = folder / f"{key}.onnx"
    try:
        cached: bytes | None = path.read_bytes()
    except OSError as err:  # not cached yet, or an unusable folder (the write then warns)
        logger.debug("no cached ONNX graph for %s (%s)", part, err)
        cached = None
    if cached is not None:
        try:
            result = load(cached)
        except Exception as err:  # ORT raises its own error types for a bad graph
            logger.warning(
                "the cached ONNX graph %s cannot be loaded (%s: %s): exporting it again",
                path,
                type(err).__name__,
                str(err)[:200],
            )
        else:
            logger.debug("ONNX cache hit for %s: %s", part, path)
            return result
    start = time.perf_counter()
    graph = export()
    seconds = time.perf_counter() - start
    from geoseg.io import atomic_write_bytes

    try:
        atomic_write_bytes(path, graph, fsync=False)
    except OSError as err:
        _warn_once(folder, err)
        logger.info("exported %s to ONNX in %.1f s (not cached)", part, seconds)
    else:
        logger.info("exported %s to ONNX in %.1f s; cached as %s", part, seconds, path)
    return load(graph)
