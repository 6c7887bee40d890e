"""geoseg: find and outline individual objects in large satellite and aerial scenes.

The public API is re-exported here lazily (importing :mod:`geoseg` does not import torch).
Each pipeline stage lives in its own module: :mod:`geoseg.raster`, :mod:`geoseg.tiling`,
:mod:`geoseg.predict`, :mod:`geoseg.stitch`, :mod:`geoseg.vectorize`, :mod:`geoseg.export`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from geoseg._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it. Keep sorted by name.
_EXPORTS: dict[str, str] = {
    "BandError": "geoseg.errors",
    "CheckpointError": "geoseg.errors",
    "ConfigError": "geoseg.errors",
    "Detections": "geoseg.types",
    "ExportError": "geoseg.errors",
    "GeosegError": "geoseg.errors",
    "LabelError": "geoseg.errors",
    "NormStats": "geoseg.types",
    "PixelWindow": "geoseg.types",
    "RasterReadError": "geoseg.errors",
    "SceneInfo": "geoseg.types",
    "Tile": "geoseg.types",
    "TileDetections": "geoseg.types",
    "TileSpec": "geoseg.types",
    "UnsupportedTransformError": "geoseg.errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
