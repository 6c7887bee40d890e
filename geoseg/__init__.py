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
    "BandSet": "geoseg.synth",
    "BatchReport": "geoseg.batch",
    "CheckpointError": "geoseg.errors",
    "ConfigError": "geoseg.errors",
    "CountResult": "geoseg.count",
    "Device": "geoseg.predict",
    "Detections": "geoseg.types",
    "ExportError": "geoseg.errors",
    "GeosegError": "geoseg.errors",
    "LabelError": "geoseg.errors",
    "Layout": "geoseg.synth",
    "MaskRCNNPredictor": "geoseg.predict",
    "NormStats": "geoseg.types",
    "PixelWindow": "geoseg.types",
    "Predictor": "geoseg.predict",
    "RasterReadError": "geoseg.errors",
    "SceneInfo": "geoseg.types",
    "SceneResult": "geoseg.pipeline",
    "SceneSpec": "geoseg.synth",
    "SynthScene": "geoseg.synth",
    "Tile": "geoseg.types",
    "TileDataset": "geoseg.tiling",
    "TileDetections": "geoseg.types",
    "TileSpec": "geoseg.types",
    "UnsupportedTransformError": "geoseg.errors",
    "compute_norm_stats": "geoseg.raster",
    "count": "geoseg.count",
    "generate_scene": "geoseg.synth",
    "iter_tiles": "geoseg.tiling",
    "make_grid": "geoseg.tiling",
    "open_scene": "geoseg.raster",
    "pick_device": "geoseg.predict",
    "quicklook": "geoseg.viz",
    "read_window": "geoseg.raster",
    "render_object_ids": "geoseg.synth",
    "run_batch": "geoseg.batch",
    "run_scene": "geoseg.pipeline",
    "tile_loader": "geoseg.tiling",
    "web_map": "geoseg.viz",
    "write_counts": "geoseg.count",
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
