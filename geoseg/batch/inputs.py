"""Batch inputs: globs, text files of paths, STAC ItemCollections and plain paths → scenes.

:func:`resolve_inputs` turns the ``INPUTS`` arguments of ``geoseg batch`` into unique
:class:`SceneInput` values (a name for the output file and a GDAL path for the workers).
URLs become GDAL virtual paths (``/vsicurl/``, ``/vsis3/``, ``/vsigs/``); relative paths in a
list or STAC file are resolved against that file's folder.
"""

from __future__ import annotations

import enum
import glob
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from geoseg.errors import ConfigError

__all__ = ["InputKind", "SceneInput", "resolve_inputs"]

logger = logging.getLogger(__name__)

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
