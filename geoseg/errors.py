"""Exception hierarchy.

Every error geoseg raises on purpose is a :class:`GeosegError`. Subclasses also inherit the
matching built-in exception (as rasterio's ``RasterioIOError(RasterioError, OSError)`` does), so
callers that catch ``OSError`` or ``ValueError`` keep working. Messages name the file or argument
at fault and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BandError",
    "CheckpointError",
    "ConfigError",
    "ExportError",
    "GeosegError",
    "InputOverwriteError",
    "LabelError",
    "MissingExtraError",
    "RasterReadError",
    "UnsupportedTransformError",
]


class GeosegError(Exception):
    """Base class of all geoseg errors."""


class RasterReadError(GeosegError, OSError):
    """A raster could not be opened or read (not a raster, truncated, unreachable)."""


class UnsupportedTransformError(GeosegError, ValueError):
    """A raster's geotransform cannot be handled (e.g. rotated or sheared)."""


class BandError(GeosegError, IndexError):
    """A requested band does not exist, or band counts do not match."""


class LabelError(GeosegError, ValueError):
    """Vector labels are unusable: no CRS, no overlap with the scene, unknown classes."""


class ConfigError(GeosegError, ValueError):
    """A configuration file or value is invalid."""


class CheckpointError(GeosegError, ValueError):
    """A model checkpoint is missing, unsafe, corrupt, or does not fit the input."""


class ExportError(GeosegError, OSError):
    """An output cannot be written (unknown format, unwritable path)."""


class InputOverwriteError(ExportError):
    """An output of a command is one of its own inputs (same path, same file, or a sidecar)."""


class MissingExtraError(GeosegError, ImportError):
    """An optional dependency group (``pip install 'geoseg[EXTRA]'``) is not installed."""
