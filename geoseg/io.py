"""File input/output shared by every stage: atomic writes, the vector reader, the format table.

Three jobs live here so that each is done one way across geoseg:

* **Atomic writes** (:func:`atomic_write` and the ``_text`` / ``_bytes`` / ``_json`` helpers):
  the content goes to a temporary file in the destination folder (:func:`tempfile.mkstemp`),
  is flushed to disk, gets the permissions a plain ``open(path, "w")`` would give
  (``0o666 & ~umask``; ``mkstemp`` itself creates ``0o600``) and is moved onto the target with
  :func:`os.replace`. A failed write leaves no partial file and keeps an earlier file intact.
  Multi-file formats (a Shapefile's ``.shx``/``.dbf``/``.prj``...) move their sidecars first
  and the main file last. :func:`check_writable` fails early on an output that cannot be
  written.
* **Never over an input** (:func:`check_no_overwrite`): every command lists its inputs and the
  files (or folders it owns) it will write, and this one check refuses, before any work, an
  output that is one of the inputs: the same path, the same file by resolved path or inode (a
  symlink, a hard link), or a file of the same multi-file dataset (a Shapefile's ``.dbf``, a
  checkpoint's ``.json`` sidecar).
* **Reading vector files** (:func:`read_vectors`): labels, truth polygons, AOIs and result
  files are all read by one function (pyogrio through geopandas; GeoParquet with
  :func:`geopandas.read_parquet`) with one error style: a :class:`~geoseg.errors.LabelError`
  naming the file and saying what to do (missing file, unreadable file, no geometry, no CRS,
  no features, non-polygon geometry).
* **Output formats** (:class:`VectorFormat`, :func:`format_for_path`, :func:`format_by_name`):
  one table of the vector formats geoseg writes, with their extensions, OGR driver and
  sidecar files. ``.json`` is COCO instance JSON and ``.geojson`` is GeoJSON, everywhere.

=============  =======================================  ================  =====================
format         extensions                               OGR driver        sidecars
=============  =======================================  ================  =====================
gpkg           ``.gpkg``                                GPKG
geojson        ``.geojson``                             GeoJSON
shapefile      ``.shp``                                 ESRI Shapefile    ``.shx .dbf .prj``...
parquet        ``.parquet``, ``.geoparquet``            (geopandas)
flatgeobuf     ``.fgb``                                 FlatGeobuf
coco           ``.json``, ``.coco.json``                (geoseg.coco)
=============  =======================================  ================  =====================
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import ExportError, InputOverwriteError, LabelError

if TYPE_CHECKING:
    import geopandas

__all__ = [
    "VectorFormat",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_no_overwrite",
    "check_writable",
    "current_umask",
    "default_file_mode",
    "file_family",
    "format_by_name",
    "format_for_path",
    "formats_help",
    "read_vectors",
]


# --------------------------------------------------------------------------------------------
# the format table


class VectorFormat(StrEnum):
    """A vector output format; the value is its short name (``gpkg``, ``geojson``...).

    Attributes:
        long_name: human-readable name, e.g. ``"ESRI Shapefile"``.
        extensions: file name endings that select the format (lower case, with the dot); the
            first is the one geoseg gives new files.
        driver: the OGR driver that writes it, or ``None`` when geoseg writes it itself
            (GeoParquet through geopandas/pyarrow, COCO through :mod:`geoseg.coco`).
        sidecars: extensions of the files written next to the main one (Shapefile only).
        aliases: other names :func:`format_by_name` accepts (``shp``, ``fgb``...).
    """

    long_name: str
    extensions: tuple[str, ...]
    driver: str | None
    sidecars: tuple[str, ...]
    aliases: tuple[str, ...]

    def __new__(
        cls,
        value: str,
        long_name: str,
        extensions: tuple[str, ...],
        driver: str | None,
        sidecars: tuple[str, ...] = (),
        aliases: tuple[str, ...] = (),
    ) -> VectorFormat:
        """A member: its short name (the value) and its attributes, in class-body order."""
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.long_name = long_name
        obj.extensions = extensions
        obj.driver = driver
        obj.sidecars = sidecars
        obj.aliases = aliases
        return obj

    GPKG = ("gpkg", "GeoPackage", (".gpkg",), "GPKG", (), ("geopackage",))
    GEOJSON = ("geojson", "GeoJSON", (".geojson",), "GeoJSON")
    SHAPEFILE = (
        "shapefile",
        "ESRI Shapefile",
        (".shp",),
        "ESRI Shapefile",
        (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qpj"),
        ("shp", "esri shapefile"),
    )
    PARQUET = ("parquet", "GeoParquet", (".parquet", ".geoparquet"), None, (), ("geoparquet",))
    FLATGEOBUF = ("flatgeobuf", "FlatGeobuf", (".fgb",), "FlatGeobuf", (), ("fgb",))
    COCO = ("coco", "COCO instance JSON", (".json", ".coco.json"), None, (), ("json", "coco-json"))

    @property
    def extension(self) -> str:
        """The extension geoseg gives new files of this format, e.g. ``".shp"``."""
        return self.extensions[0]

    @property
    def multi_file(self) -> bool:
        """Whether the format writes sidecar files next to the main one."""
        return bool(self.sidecars)


def _suffix_table() -> tuple[tuple[str, VectorFormat], ...]:
    """``(extension, format)`` for every extension, longest first (``.coco.json`` first)."""
    pairs = [(ext, fmt) for fmt in VectorFormat for ext in fmt.extensions]
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def format_for_path(path: str | os.PathLike[str]) -> VectorFormat:
    """The format of an output path, from its extension (case-insensitive).

    ``x.json`` and ``x.coco.json`` are COCO instance JSON; ``x.geojson`` is GeoJSON.

    Raises:
        ExportError: an extension geoseg cannot write (the message lists the known ones).
    """
    name = Path(path).name.lower()
    for suffix, fmt in _suffix_table():
        if name.endswith(suffix):
            return fmt
    known = ", ".join(ext for fmt in VectorFormat for ext in fmt.extensions)
    raise ExportError(
        f"{os.fspath(path)}: unknown output format; use one of these extensions: {known}"
    )


def format_by_name(name: str | VectorFormat) -> VectorFormat:
    """The format called ``name`` (its value or an alias, case-insensitive: ``shp``, ``fgb``).

    Raises:
        ExportError: an unknown name (the message lists the known ones).
    """
    if isinstance(name, VectorFormat):
        return name
    key = str(name).strip().lower()
    for fmt in VectorFormat:
        if key == fmt.value or key in fmt.aliases:
            return fmt
    raise ExportError(
        f"unknown vector format {name!r}; use one of {', '.join(f.value for f in VectorFormat)}"
    )


def formats_help(formats: Sequence[VectorFormat] | None = None) -> str:
    """One line for command-line help, e.g. ``"gpkg (.gpkg), geojson (.geojson), ..."``."""
    chosen = list(VectorFormat) if formats is None else list(formats)
    return ", ".join(f"{f.value} ({' '.join(f.extensions)})" for f in chosen)


# --------------------------------------------------------------------------------------------
# atomic writes

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without a window in which files get wrong permissions.

    On Linux it is read from ``/proc/self/status``; elsewhere with two :func:`os.umask` calls
    under a lock, the first setting the most restrictive mask (``0o077``) so that a file
    another thread creates meanwhile is at worst too private, never too open.
    """
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as fh,
    ):
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Permissions of a newly created regular file: ``0o666 & ~umask`` (e.g. ``0o644``)."""
    return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk where the OS allows it (POSIX)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    sidecars: Sequence[str] = (),
    mode: int | None = None,
    fsync: bool = True,
    make_parents: bool = True,
) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` on a temporary file beside it, then rename.

    The temporary file is created with :func:`tempfile.mkstemp` in ``path``'s folder (same
    file system, so :func:`os.replace` is atomic), named ``.<name>.<random>.tmp<ext>`` so
    drivers that look at the extension see the right one. ``write`` may overwrite it or open
    it by name; it exists (empty) when ``write`` is called. On success the file is flushed
    (``fsync``), given ``mode`` and moved onto ``path``; on any error (including
    ``KeyboardInterrupt``) every temporary file is removed and the error propagates unchanged.

    Args:
        path: the target file.
        write: called once with the temporary path; its return value is ignored.
        sidecars: extensions (e.g. ``(".shx", ".dbf")``) of files ``write`` may create next to
            the temporary file (``tmp.with_suffix(ext)``); each one produced is moved onto
            ``path.with_suffix(ext)`` before the main file, and a stale target sidecar that was
            not produced this time is removed.
        mode: permission bits of the result; default ``0o666 & ~umask`` (what ``open(path,
            "w")`` gives a new file), read at write time.
        fsync: flush the file and the folder to disk (off for scratch files).
        make_parents: create missing parent folders.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: the folder cannot be created or written; whatever ``write`` raises.
    """
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    side_tmp = [(tmp.with_suffix(ext), target.with_suffix(ext)) for ext in sidecars]
    try:
        write(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"{target}: the writer left no file at {tmp}")
        bits = default_file_mode() if mode is None else mode
        for src, _ in side_tmp:
            if src.exists():
                os.chmod(src, bits)
                if fsync:
                    _fsync_file(src)
        os.chmod(tmp, bits)
        if fsync:
            _fsync_file(tmp)
        for src, dst in side_tmp:
            if src.exists():
                os.replace(src, dst)
            elif dst.exists():
                dst.unlink()  # stale sidecar of an earlier file
        os.replace(tmp, target)
    except BaseException:
        for leftover in (tmp, *(src for src, _ in side_tmp)):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise
    if fsync:
        _fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, **options: Any) -> Path:
    """Write ``data`` to ``path`` atomically (options as :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), **options)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", **options: Any
) -> Path:
    """Write ``text`` to ``path`` atomically, newlines as given (options: :func:`atomic_write`)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)

    return atomic_write(path, write, **options)


def atomic_write_json(
    path: str | os.PathLike[str],
    data: Any,
    *,
    indent: int | None = 1,
    allow_nan: bool = True,
    default: Callable[[Any], Any] | None = None,
    **options: Any,
) -> Path:
    """Write ``data`` as UTF-8 JSON (plus a final newline) to ``path`` atomically.

    Args:
        path: the target file.
        data: anything :func:`json.dumps` serialises (with ``default`` for the rest).
        indent: as :func:`json.dumps`.
        allow_nan: ``False`` refuses NaN/inf instead of writing non-standard ``NaN``.
        default: as :func:`json.dumps`.
        **options: as :func:`atomic_write`.
    """
    text = json.dumps(data, indent=indent, allow_nan=allow_nan, default=default) + "\n"
    return atomic_write_text(path, text, **options)


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: str | os.PathLike[str], *, fmt: VectorFormat | str | None = None) -> None:
    """Fail early if ``path`` cannot be written (call before any expensive work).

    Checks that the extension is a known vector format (unless ``fmt`` is given), that the path
    is not a folder, and that a file can be created in its folder (or, when the folder does not
    exist yet, in its nearest existing ancestor, where the writer would create it). Leaves
    nothing behind.

    An object-store URL (``s3://bucket/key.gpkg``) needs a known extension and a reachable,
    existing bucket (:func:`geoseg.storage.check_folder_writable`).

    Raises:
        ExportError: naming the path and what to do.
    """
    from geoseg.storage import check_folder_writable, is_url

    if is_url(path):
        if fmt is None:
            format_for_path(path)
        check_folder_writable(os.fspath(path).rsplit("/", 1)[0])
        return
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{p}: is a folder; give an output file name such as {p / 'out.gpkg'}")
    if fmt is None:
        format_for_path(p)
    folder = _existing_ancestor(p.parent.absolute())
    if not folder.is_dir():
        raise ExportError(f"{p}: {folder} is not a folder; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".geoseg-write-check-", dir=folder)
    except OSError as err:
        raise ExportError(
            f"{p}: cannot write in {folder} ({err.strerror or err}); choose a writable output path"
        ) from err
    os.close(fd)
    os.unlink(probe)


# --------------------------------------------------------------------------------------------
# outputs never over inputs

#: Files that travel with a main file, by the main file's extension (beyond the vector table):
#: a checkpoint's JSON sidecar, a raster's GDAL side files.
_OTHER_FAMILIES: dict[str, tuple[str, ...]] = {
    ".safetensors": (".json",),
    ".tif": (".tif.aux.xml", ".tif.ovr"),
    ".tiff": (".tiff.aux.xml", ".tiff.ovr"),
}

#: A path with a role, e.g. ``("TRUTH", "truth.gpkg")``; ``None`` paths are skipped.
Role = tuple[str, str | os.PathLike[str] | None]


def _is_local(path: str | os.PathLike[str]) -> bool:
    """Whether a path names a local file (not ``/vsicurl/...`` nor ``s3://...``)."""
    text = os.fspath(path)
    return bool(text) and not text.startswith("/vsi") and "://" not in text


def file_family(path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """``path`` and the files that belong to it as one dataset.

    A Shapefile's sidecars (``.shx .dbf .prj .cpg``...), a checkpoint's ``.json`` sidecar, a
    GeoTIFF's ``.aux.xml`` and ``.ovr``: writing any of them changes the dataset.
    """
    p = Path(path)
    name = p.name.lower()
    family = [p]
    for fmt in VectorFormat:
        if fmt.sidecars and any(name.endswith(ext) for ext in fmt.extensions):
            family += [p.with_suffix(ext) for ext in fmt.sidecars]
    for ext, sides in _OTHER_FAMILIES.items():
        if name.endswith(ext):
            stem = p.name[: len(p.name) - len(ext)]
            family += [p.with_name(stem + side) for side in sides]
    return tuple(family)


def _same_file(a: Path, b: Path) -> bool:
    """Same resolved path, or (both existing) the same inode: symlinks and hard links match."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _overlaps(folder: Path, other: Path) -> bool:
    """Whether ``other`` is ``folder``, lies inside it, or holds it (resolved paths)."""
    f, o = Path(os.path.realpath(folder)), Path(os.path.realpath(other))
    return f == o or f in o.parents or o in f.parents


def check_no_overwrite(
    inputs: Iterable[Role],
    outputs: Iterable[Role],
    *,
    trees: Iterable[Role] = (),
) -> None:
    """Refuse, before any work, a command whose output would write over one of its inputs.

    An output clashes with an input when any file of the output's :func:`file_family` is the
    same file as any file of the input's family: the same path, the same resolved path
    (symlinks, ``..``) or, both existing, the same inode (hard links). ``trees`` are folders
    whose contents the command may replace as a whole (a chip folder's ``images/``); an input
    inside such a folder, equal to it, or holding it clashes too. Remote inputs (``/vsi...``,
    URLs) are skipped. Call it from every command that writes files, with every input it reads.

    Args:
        inputs: ``(role, path)`` of each input, e.g. ``("TRUTH", "truth.gpkg")``; ``None``
            paths are ignored. A folder input stands for itself (see ``trees``).
        outputs: ``(role, path)`` of each file the command writes, e.g. ``("--json", p)``.
        trees: ``(role, folder)`` of each folder the command fills or empties wholesale.

    Raises:
        InputOverwriteError: naming the output, the input and both roles; nothing is written.
    """
    ins = [(role, Path(p)) for role, p in inputs if p is not None and _is_local(p)]
    for out_role, out in outputs:
        if out is None or not _is_local(out):
            continue
        out_family = file_family(out)
        for in_role, inp in ins:
            for written in out_family:
                for read in file_family(inp):
                    if _same_file(written, read):
                        part = "" if read == inp else f" ({read.name} belongs to it)"
                        raise InputOverwriteError(
                            f"{out}: the output {out_role} would overwrite the input "
                            f"{in_role} {inp}{part}; nothing was written: choose another "
                            "output path"
                        )
    for tree_role, tree in trees:
        if tree is None:
            continue
        for in_role, inp in ins:
            if _overlaps(Path(tree), inp):
                raise InputOverwriteError(
                    f"{tree}: the output {tree_role} would replace files of the input "
                    f"{in_role} {inp}; nothing was written: choose an output folder apart "
                    "from the inputs"
                )


# --------------------------------------------------------------------------------------------
# reading vectors

_POLYGON_TYPES = frozenset({"Polygon", "MultiPolygon"})


def _check_lonlat_range(gdf: geopandas.GeoDataFrame, name: str, noun: str) -> None:
    """Refuse coordinates a geographic CRS cannot have.

    A GeoJSON without a ``crs`` member is read as WGS84 whatever its coordinates: projected
    metres then land far outside longitude/latitude.
    """
    if gdf.crs is None or not gdf.crs.is_geographic or len(gdf) == 0:
        return
    geoms = gdf.geometry
    x0, y0, x1, y1 = (float(v) for v in geoms[~(geoms.isna() | geoms.is_empty)].total_bounds)
    if not all(map(_finite, (x0, y0, x1, y1))):
        return
    if x0 < -540 or x1 > 540 or y0 < -90.5 or y1 > 90.5:
        raise LabelError(
            f"{name}: the coordinates of {noun} (x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g}) "
            f"cannot be longitude/latitude, yet its CRS is {gdf.crs.name} (a GeoJSON without a "
            "crs member is read as WGS84); they look projected: set the real CRS, e.g. "
            "`ogr2ogr -a_srs EPSG:xxxx out.gpkg in.geojson`"
        )


def _finite(value: float) -> bool:
    """Whether ``value`` is neither NaN nor infinite."""
    return value == value and value not in (float("inf"), float("-inf"))


def read_vectors(
    source: str | os.PathLike[str] | geopandas.GeoDataFrame,
    *,
    what: str = "labels",
    layer: str | int | None = None,
    require_crs: bool = False,
    allow_empty: bool = True,
    polygons: bool = False,
) -> geopandas.GeoDataFrame:
    """Read a vector file (or check a GeoDataFrame) with geoseg's one error style.

    GeoPackage, GeoJSON, Shapefile, FlatGeobuf and anything else GDAL reads go through pyogrio;
    ``.parquet`` / ``.geoparquet`` through :func:`geopandas.read_parquet`. Paths starting with
    ``/vsi`` (``/vsicurl/``, ``/vsizip/``...) are passed to GDAL without an existence check.

    Args:
        source: a file path, or a GeoDataFrame (returned as is after the checks).
        what: what the file holds, used in messages (``"labels"``, ``"truth"``, ``"AOI"``...).
        layer: layer name or index for multi-layer files (default: the first layer).
        require_crs: refuse data without a CRS.
        allow_empty: accept a file without features.
        polygons: refuse geometries other than ``Polygon`` / ``MultiPolygon``.

    Returns:
        The features in their own CRS (not reprojected).

    Raises:
        LabelError: naming the file and what to do: no such file, unreadable, no geometry
            column, no CRS (``require_crs``), no features (``allow_empty=False``), non-polygon
            geometries (``polygons``). Read errors are chained (``raise ... from``).
    """
    import geopandas as gpd

    if isinstance(source, gpd.GeoDataFrame):
        gdf, name, noun = source, f"{what} (GeoDataFrame)", f"the {what}"
    elif isinstance(source, str | os.PathLike):
        name, noun = os.fspath(source), f"the {what} file"
        if not name.startswith("/vsi") and not os.path.exists(name):
            raise LabelError(
                f"{name}: the {what} file was not found (no such file); check the path"
            )
        try:
            if name.lower().endswith(VectorFormat.PARQUET.extensions):
                gdf = gpd.read_parquet(name)
            else:
                gdf = gpd.read_file(name, layer=layer)
        except Exception as err:  # pyogrio, pyarrow and GDAL raise many kinds
            raise LabelError(
                f"{name}: cannot read the {what} as a vector file ({err}); give a file GDAL "
                "reads (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet...)"
            ) from err
        if not isinstance(gdf, gpd.GeoDataFrame):
            raise LabelError(
                f"{name}: {noun} has no geometry column (an attribute table?); give a vector "
                "file with polygons"
            )
    else:
        raise LabelError(
            f"{what} must be a file path or a GeoDataFrame, got {type(source).__name__}"
        )
    if require_crs and gdf.crs is None:
        raise LabelError(
            f"{name}: {noun} has no CRS; set it, e.g. `ogr2ogr -a_srs EPSG:xxxx out.gpkg "
            "in.gpkg` or GeoDataFrame.set_crs(...)"
        )
    if not allow_empty and len(gdf) == 0:
        raise LabelError(f"{name}: {noun} holds no features")
    _check_lonlat_range(gdf, name, noun)
    if polygons:
        kinds = set(gdf.geometry.geom_type.dropna())
        if not kinds or not kinds <= _POLYGON_TYPES:
            raise LabelError(
                f"{name}: {noun} must hold polygons, got {sorted(kinds)}; keep only the "
                "polygon features (e.g. ogr2ogr -nlt MULTIPOLYGON)"
            )
    return gdf
