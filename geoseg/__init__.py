"""geoseg: find and outline individual objects in large satellite and aerial scenes.

The public API is re-exported here lazily (importing :mod:`geoseg` does not import torch).
Each pipeline stage lives in its own module: :mod:`geoseg.raster`, :mod:`geoseg.tiling`,
:mod:`geoseg.predict`, :mod:`geoseg.stitch`, :mod:`geoseg.vectorize`, :mod:`geoseg.export`.
Torch-backed names (``build_model``, ``TileDataset``, ``MaskRCNNPredictor``...) and reading
weights (``load_checkpoint``) need the ``ml`` extra (``pip install 'geoseg[ml]'``); without it
they raise :class:`~geoseg.errors.MissingExtraError` (``read_meta`` never needs it). The demo
model and a sample scene ship as package data: :func:`demo_model_path`,
:func:`sample_scene_path`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from geoseg._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it. Keep sorted by name. A name here never equals a
# submodule's name (``geoseg.stitch`` is the module; its function is ``geoseg.stitch.stitch``).
_EXPORTS: dict[str, str] = {
    "Backbone": "geoseg.config",
    "BandError": "geoseg.errors",
    "BandSet": "geoseg.synth",
    "BatchReport": "geoseg.batch",
    "CalibrationResult": "geoseg.calibrate",
    "ChangeResult": "geoseg.compare",
    "CheckpointError": "geoseg.errors",
    "ClassMapping": "geoseg.importers",
    "ConfigError": "geoseg.errors",
    "CountResult": "geoseg.count",
    "Detections": "geoseg.types",
    "Device": "geoseg.predict",
    "EvaluationResult": "geoseg.evaluate",
    "ExportError": "geoseg.errors",
    "GeosegError": "geoseg.errors",
    "ImportSummary": "geoseg.importers",
    "LabelError": "geoseg.errors",
    "Layout": "geoseg.synth",
    "MaskRCNNPredictor": "geoseg.predict",
    "ModelConfig": "geoseg.config",
    "ModelMeta": "geoseg.checkpoint",
    "NormStats": "geoseg.types",
    "PixelWindow": "geoseg.types",
    "Predictor": "geoseg.predict",
    "PresetConfig": "geoseg.config",
    "RasterReadError": "geoseg.errors",
    "SceneInfo": "geoseg.types",
    "SceneResult": "geoseg.pipeline",
    "SceneSpec": "geoseg.synth",
    "ScoreMode": "geoseg.stitch",
    "StitchConfig": "geoseg.config",
    "SynthScene": "geoseg.synth",
    "Tile": "geoseg.types",
    "TileDataset": "geoseg.datasets",
    "TileDetections": "geoseg.types",
    "TileSpec": "geoseg.types",
    "TilingConfig": "geoseg.config",
    "TrainConfig": "geoseg.config",
    "TrainResult": "geoseg.train",
    "UnsupportedTransformError": "geoseg.errors",
    "VectorFormat": "geoseg.export",
    "build_model": "geoseg.models",
    "calibrate_checkpoint": "geoseg.calibrate",
    "calibrate_thresholds": "geoseg.calibrate",
    "check_writable": "geoseg.export",
    "compute_norm_stats": "geoseg.raster",
    "demo_model_path": "geoseg.samples",
    "generate_scene": "geoseg.synth",
    "import_dataset": "geoseg.importers",
    "iter_tiles": "geoseg.tiling",
    "load_checkpoint": "geoseg.checkpoint",
    "load_config": "geoseg.config",
    "load_train_config": "geoseg.config",
    "make_chips": "geoseg.chips",
    "make_grid": "geoseg.tiling",
    "make_split_chips": "geoseg.chips",
    "open_scene": "geoseg.raster",
    "pick_device": "geoseg.predict",
    "quicklook": "geoseg.viz",
    "read_meta": "geoseg.checkpoint",
    "read_window": "geoseg.raster",
    "render_object_ids": "geoseg.synth",
    "run_batch": "geoseg.batch",
    "run_scene": "geoseg.pipeline",
    "sample_labels_path": "geoseg.samples",
    "sample_scene_path": "geoseg.samples",
    "save_checkpoint": "geoseg.checkpoint",
    "tile_loader": "geoseg.datasets",
    "web_map": "geoseg.viz",
    "write_changes": "geoseg.compare",
    "write_counts": "geoseg.count",
    "write_vectors": "geoseg.export",
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
