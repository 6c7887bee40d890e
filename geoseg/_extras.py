"""The optional dependency groups ("extras") and the error naming the one that is missing.

A core install (``pip install geoseg``) reads rasters, tiles them, stitches, vectorises,
exports, counts, evaluates, draws quicklooks and reads checkpoint sidecars. The rest needs:

========= ================================================ ================================
extra     packages (import names checked here)             for
========= ================================================ ================================
``ml``    torch, torchvision, timm, safetensors             predict, train, loading weights
``batch`` ``ml`` + dask, distributed                        ``geoseg batch`` / ``run_batch``
``maps``  folium, xstatic (XStatic-Leaflet)                 ``geoseg map`` / ``web_map``
``cloud`` fsspec, s3fs                                      outputs to ``s3://`` URLs
========= ================================================ ================================

``pip install 'geoseg[all]'`` installs them all. The check uses
:func:`importlib.util.find_spec`, so it imports nothing heavy.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from geoseg.errors import MissingExtraError

__all__ = ["EXTRA_MODULES", "extra_error", "missing_modules", "require_extra"]

_ML: Final = ("torch", "torchvision", "timm", "safetensors")

#: extra name -> top-level modules it provides (what is checked).
EXTRA_MODULES: Final[dict[str, tuple[str, ...]]] = {
    "ml": _ML,
    "batch": (*_ML, "dask", "distributed"),
    "maps": ("folium", "xstatic.pkg.leaflet"),
    "cloud": ("fsspec", "s3fs"),
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a blocked import
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` (a key of :data:`EXTRA_MODULES`) that cannot be imported."""
    return [m for m in EXTRA_MODULES[extra] if not _importable(m)]


def extra_error(extra: str, feature: str, missing: list[str] | None = None) -> MissingExtraError:
    """The error for ``feature`` (e.g. ``"geoseg predict"``) lacking ``extra``.

    The message names the extra and the command that installs it, e.g. ``geoseg predict needs
    the 'ml' extra: pip install 'geoseg[ml]' (not installed: torch, torchvision)``.
    """
    names = missing_modules(extra) if missing is None else missing
    detail = f" (not installed: {', '.join(names)})" if names else ""
    return MissingExtraError(
        f"{feature} needs the {extra!r} extra: pip install 'geoseg[{extra}]'{detail}"
    )


def require_extra(extra: str, feature: str) -> None:
    """Raise :class:`~geoseg.errors.MissingExtraError` unless all of ``extra`` is importable."""
    missing = missing_modules(extra)
    if missing:
        raise extra_error(extra, feature, missing)
