"""Synthetic georeferenced scenes with exact instance labels.

:func:`generate_scene` writes a tiled, compressed GeoTIFF with overviews and, beside it, a
GeoPackage with one polygon per object (column ``class`` in ``ship``, ``vehicle``,
``building``) in the scene CRS. Every object's footprint is drawn by rasterising the very
polygon that is written as its label (pixel-centre rule), so rasterising a label with the scene
transform reproduces the drawn footprint.

How a scene is made:

* **Plan, globally and lazily.** The plane is cut into square *cells* (160 m, on a grid rotated
  by a per-scene angle: the town grid). Each cell's kind (open water, marina, quay, rural land,
  town) follows from smooth noise functions of *scene metres* evaluated at its centre; its
  content (roads with vehicles, parking lots, building lots, parks, piers with moored boats,
  ships with wakes, trees, rocks, containers...) comes from an RNG seeded by
  ``(seed, layout, cell index)``. Objects never leave their cell, so cells are planned
  independently and objects of the same class never overlap (touching is common: rows of
  parked cars, boats side by side at piers, tugs alongside ships).
* **Render, block by block.** Each block (``block_size`` scene pixels plus a small halo) is
  rendered from noise functions of global coordinates (seamless across blocks) and the plans of
  the cells around it, so memory is bounded by the block size whatever the scene size.

Coordinate frames: *scene pixels* (col, row; see :mod:`geoseg.types`), *scene metres*
(``col * gsd``, ``row * gsd``; y down), the *town frame* (scene metres rotated by the scene's
grid angle, in which cells are axis-aligned squares) and the *scene CRS* (a projected CRS in
metres, reached from scene pixels by the scene's affine transform).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.errors import ConfigError, ExportError
from geoseg.types import PixelWindow

__all__ = [
    "CLASSES",
    "BandSet",
    "Layout",
    "SceneSpec",
    "SynthScene",
    "generate_scene",
    "render_object_ids",
    "render_window",
    "scene_labels",
]

logger = logging.getLogger(__name__)

#: Class names written to the ``class`` column, in the order used by the demo model.
CLASSES: tuple[str, ...] = ("ship", "vehicle", "building")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Colour = tuple[float, float, float, float]  # red, green, blue, near-infrared reflectance-like


class BandSet(StrEnum):
    """Bands written to the scene: ``rgb`` (red, green, blue) or ``rgbn`` (+ near-infrared)."""

    RGB = "rgb"
    RGBN = "rgbn"


class Layout(StrEnum):
    """What a scene mostly shows.

    * ``mixed``: a coastline with a town (roads, parking lots, buildings), countryside, open
      water with ships and a few marinas -- all three classes in most scenes.
    * ``marina``: mostly water: marinas with piers and densely packed touching boats, quays
      with large ships and tugs alongside, container yards, a waterfront town.
    * ``town``: mostly town: streets with traffic, parking lots with rows of touching cars,
      buildings of varied shapes, parks; a little water at one side.
    """

    MIXED = "mixed"
    MARINA = "marina"
    TOWN = "town"


class _Kind(IntEnum):
    """Kind of a planning cell."""

    WATER = 0
    MARINA = 1
    QUAY = 2
    RURAL = 3
    TOWN = 4


_DTYPES = ("uint8", "uint16")
_MIN_GSD, _MAX_GSD = 0.1, 5.0
_MAX_SIDE = 200_000
_CELL = 160.0  # cell pitch in metres (town frame)
_HALF_ROAD = 5.0  # each town cell owns a 5 m lane along each of its edges
_SIDEWALK = 2.5
_HALO = 3  # pixels rendered around each block so that blur and rims are seamless
_U16_OFFSET, _U16_SCALE, _U16_MAX = 40.0, 1960.0, 2047  # 11-bit DN range for uint16 output


# --------------------------------------------------------------------------------------------
# Public values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """Everything that determines a synthetic scene (same spec -> identical pixels and labels).

    Attributes:
        width, height: scene size in pixels.
        seed: random seed (any non-negative integer).
        gsd: ground sample distance in metres per pixel (square pixels).
        epsg: EPSG code of a projected CRS in metres (default UTM 33N).
        bands: :class:`BandSet`.
        dtype: ``"uint8"`` (0-255) or ``"uint16"`` (11-bit values, at most 2047).
        nodata_collar: whether the valid footprint is a ragged, rotated strip surrounded by
            nodata (0 in every band); no object lies outside the valid footprint.
        density: multiplier of object counts (0 = no objects, 1 = default, at most 4).
            Objects narrower than one pixel at ``gsd`` (e.g. cars at a 2 m GSD) are left out.
        layout: :class:`Layout`.
        block_size: side of the square blocks rendered at a time (memory scales with its
            square); a multiple of the 256 px output tiling.
    """

    width: int
    height: int
    seed: int
    gsd: float = 0.5
    epsg: int = 32633
    bands: BandSet = BandSet.RGB
    dtype: str = "uint8"
    nodata_collar: bool = False
    density: float = 1.0
    layout: Layout = Layout.MIXED
    block_size: int = 1024

    @classmethod
    def create(
        cls,
        *,
        size: int | tuple[int, int],
        seed: int,
        gsd: float = 0.5,
        epsg: int = 32633,
        bands: BandSet | str = BandSet.RGB,
        dtype: str = "uint8",
        nodata_collar: bool = False,
        density: float = 1.0,
        layout: Layout | str = Layout.MIXED,
        block_size: int = 1024,
    ) -> SceneSpec:
        """Validate arguments and build a spec.

        Args:
            size: ``N`` for an ``N x N`` scene or ``(width, height)`` in pixels.
            seed: non-negative random seed.
            gsd: metres per pixel, in [0.1, 5].
            epsg: EPSG code of a projected CRS whose unit is the metre.
            bands: ``"rgb"`` or ``"rgbn"``.
            dtype: ``"uint8"`` or ``"uint16"``.
            nodata_collar: ragged valid footprint surrounded by nodata.
            density: object-count multiplier in [0, 4].
            layout: ``"mixed"``, ``"marina"`` or ``"town"``.
            block_size: render block side in pixels (multiple of 256).

        Raises:
            ConfigError: naming the argument at fault and the accepted values.
        """
        if isinstance(size, bool):
            raise ConfigError(f"size: expected an integer or (width, height), got {size!r}")
        if isinstance(size, int | np.integer):
            width = height = int(size)
        else:
            try:
                width, height = (int(v) for v in size)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"size: expected an integer or (width, height), got {size!r}"
                ) from err
        if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
            raise ConfigError(
                f"size: width and height must be between 1 and {_MAX_SIDE} pixels, "
                f"got {width} x {height}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
        gsd = float(gsd)
        if not (math.isfinite(gsd) and _MIN_GSD <= gsd <= _MAX_GSD):
            raise ConfigError(
                f"gsd: expected metres per pixel between {_MIN_GSD} and {_MAX_GSD}, got {gsd}"
            )
        try:
            band_set = BandSet(str(bands).lower())
        except ValueError as err:
            raise ConfigError(
                f"bands: expected one of {[b.value for b in BandSet]}, got {bands!r}"
            ) from err
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype: expected one of {list(_DTYPES)}, got {dtype!r}")
        density = float(density)
        if not (math.isfinite(density) and 0.0 <= density <= 4.0):
            raise ConfigError(f"density: expected a number between 0 and 4, got {density}")
        try:
            lay = Layout(str(layout).lower())
        except ValueError as err:
            raise ConfigError(
                f"layout: expected one of {[v.value for v in Layout]}, got {layout!r}"
            ) from err
        if block_size < 256 or block_size % 256:
            raise ConfigError(f"block_size: expected a multiple of 256, got {block_size}")
        _check_epsg(int(epsg))
        return cls(
            width=width,
            height=height,
            seed=int(seed),
            gsd=gsd,
            epsg=int(epsg),
            bands=band_set,
            dtype=dtype,
            nodata_collar=bool(nodata_collar),
            density=density,
            layout=lay,
            block_size=int(block_size),
        )

    @property
    def count(self) -> int:
        """Number of bands written (3 or 4)."""
        return 4 if self.bands is BandSet.RGBN else 3

    @property
    def nodata(self) -> float | None:
        """The nodata value (0) when the scene has a collar, else ``None``."""
        return 0.0 if self.nodata_collar else None

    @property
    def transform(self) -> Affine:
        """Affine from scene pixels (col, row) to the scene CRS (x, y); north up."""
        x0, y0 = _scene_origin(self.epsg, self.seed, self.width, self.height, self.gsd)
        return Affine(self.gsd, 0.0, x0, 0.0, -self.gsd, y0)

    @property
    def crs_wkt(self) -> str:
        """WKT of the scene CRS."""
        from pyproj import CRS

        return str(CRS.from_epsg(self.epsg).to_wkt())


@dataclass(frozen=True, slots=True)
class SynthScene:
    """A written synthetic scene.

    Attributes:
        raster_path: the GeoTIFF.
        labels_path: the GeoPackage beside it (same stem), layer ``labels``.
        counts: objects per class (every class in :data:`CLASSES` present, possibly 0).
        spec: the :class:`SceneSpec` it was made from (e.g. for :func:`render_object_ids`).
        transform: scene pixels -> scene CRS.
        crs_wkt: WKT of the scene CRS.
        nodata: nodata value, or ``None`` without a collar.
    """

    raster_path: Path
    labels_path: Path
    counts: dict[str, int]
    spec: SceneSpec
    transform: Affine
    crs_wkt: str
    nodata: float | None = None


# --------------------------------------------------------------------------------------------
# CRS helpers
# --------------------------------------------------------------------------------------------


def _check_epsg(epsg: int) -> None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_epsg(epsg)
    except CRSError as err:
        raise ConfigError(f"epsg: {epsg} is not a known EPSG code; try 32633 (UTM 33N)") from err
    units = {a.unit_name.lower() for a in crs.axis_info}
    if not crs.is_projected or not units <= {"metre", "meter"}:
        raise ConfigError(
            f"epsg: {epsg} ({crs.name}) is not a projected CRS in metres; the ground sample "
            "distance is in metres, so pick e.g. a UTM zone such as 32633"
        )


@functools.lru_cache(maxsize=64)
def _scene_origin(epsg: int, seed: int, width: int, height: int, gsd: float) -> tuple[float, float]:
    """Upper-left corner (x, y) in the scene CRS: near the centre of the CRS's area of use."""
    from pyproj import CRS, Transformer

    crs = CRS.from_epsg(epsg)
    xc, yc = 500_000.0, 5_000_000.0
    area = crs.area_of_use
    if area is not None:
        lon = (area.west + area.east) / 2.0
        lat = (area.south + area.north) / 2.0
        try:
            tr = Transformer.from_crs(4326, crs, always_xy=True)
            x, y = tr.transform(lon, lat)
            if math.isfinite(x) and math.isfinite(y):
                xc, yc = float(x), float(y)
        except Exception:  # pragma: no cover - pyproj edge cases
            logger.debug("could not project the area-of-use centre of EPSG:%d", epsg)
    rng = np.random.default_rng([seed, 424242])
    xc += 1000.0 * float(rng.integers(-20, 21))
    yc += 1000.0 * float(rng.integers(-20, 21))
    x0 = round((xc - width * gsd / 2.0) / gsd) * gsd
    y0 = round((yc + height * gsd / 2.0) / gsd) * gsd
    return float(x0), float(y0)


# --------------------------------------------------------------------------------------------
# Noise: value noise on integer lattices hashed from global coordinates (seamless everywhere)
# --------------------------------------------------------------------------------------------

_H1 = np.uint64(0x9E3779B97F4A7C15)
_H2 = np.uint64(0xC2B2AE3D27D4EB4F)
_H3 = np.uint64(0xBF58476D1CE4E5B9)
_H4 = np.uint64(0x94D049BB133111EB)


def _mix(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point
        h = h ^ (h >> np.uint64(30))
        h = h * _H3
        h = h ^ (h >> np.uint64(27))
        h = h * _H4
        return h ^ (h >> np.uint64(31))


def _hash2(ix: npt.ArrayLike, iy: npt.ArrayLike, key: int) -> npt.NDArray[np.uint64]:
    """64-bit hash of integer lattice coordinates (any shapes that broadcast) and a key."""
    a = np.asarray(ix, dtype=np.int64).astype(np.uint64)
    b = np.asarray(iy, dtype=np.int64).astype(np.uint64)
    k = np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return _mix(_mix(a * _H1 + k) ^ (b * _H2))


def _u01(h: npt.NDArray[np.uint64]) -> F64:
    """Uniform floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _fade(t: F64) -> F64:
    return t * t * (3.0 - 2.0 * t)


def _noise_grid(xs: F64, ys: F64, scale: float, key: int) -> F32:
    """Value noise in [0, 1] on the grid ``ys x xs`` (scene metres), shape ``[len(ys), len(xs)]``.

    The lattice value at integer point ``(i, j)`` is a hash of ``(i, j, key)``, so the field is
    the same function of global coordinates whatever window it is evaluated on.
    """
    gx = xs / scale
    gy = ys / scale
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    tx = _fade(gx - ix).astype(np.float32)
    ty = _fade(gy - iy).astype(np.float32)
    bx, by = int(ix.min()), int(iy.min())
    nx, ny = int(ix.max()) - bx + 2, int(iy.max()) - by + 2
    lat = _u01(
        _hash2(np.arange(bx, bx + nx)[None, :], np.arange(by, by + ny)[:, None], key)
    ).astype(np.float32)
    lx = ix - bx
    rows = lat[:, lx] * (1.0 - tx) + lat[:, lx + 1] * tx  # [ny, W]
    ly = iy - by
    out: F32 = rows[ly, :] * (1.0 - ty)[:, None] + rows[ly + 1, :] * ty[:, None]
    return out


def _noise_points(x: npt.ArrayLike, y: npt.ArrayLike, scale: float, key: int) -> F64:
    """Value noise in [0, 1] at arbitrary points (scene metres), same field as the grid form."""
    gx = np.asarray(x, dtype=np.float64) / scale
    gy = np.asarray(y, dtype=np.float64) / scale
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    tx = _fade(gx - ix)
    ty = _fade(gy - iy)
    v00 = _u01(_hash2(ix, iy, key))
    v10 = _u01(_hash2(ix + 1, iy, key))
    v01 = _u01(_hash2(ix, iy + 1, key))
    v11 = _u01(_hash2(ix + 1, iy + 1, key))
    a0 = v00 * (1.0 - tx) + v10 * tx
    a1 = v01 * (1.0 - tx) + v11 * tx
    out: F64 = a0 * (1.0 - ty) + a1 * ty
    return out


def _fbm_grid(xs: F64, ys: F64, scale: float, octaves: int, key: int) -> F32:
    total = np.zeros((len(ys), len(xs)), np.float32)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += np.float32(amp) * _noise_grid(xs, ys, scale / 2**k, key + 7919 * k)
        norm += amp
        amp *= 0.5
    total *= np.float32(1.0 / norm)
    return total


def _fbm_points(x: npt.ArrayLike, y: npt.ArrayLike, scale: float, octaves: int, key: int) -> F64:
    total = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape, np.float64)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * _noise_points(x, y, scale / 2**k, key + 7919 * k)
        norm += amp
        amp *= 0.5
    out: F64 = total / norm
    return out


# Field keys (combined with the seed).
_K_COAST, _K_URBAN, _K_VEG, _K_FINE, _K_MID, _K_LIGHT, _K_HAZE, _K_WAVE, _K_PIX = range(101, 110)


# --------------------------------------------------------------------------------------------
# Plan values (private)
# --------------------------------------------------------------------------------------------


class _Style(IntEnum):
    CAR = 0
    VAN = 1
    TRUCK = 2
    BOAT = 10
    WORKBOAT = 11
    CARGO = 12
    TANKER = 13
    ROOF_FLAT = 20
    ROOF_GABLE = 21
    ROOF_HIP = 22


_SUBTYPE = {
    _Style.CAR: "car",
    _Style.VAN: "van",
    _Style.TRUCK: "truck",
    _Style.BOAT: "boat",
    _Style.WORKBOAT: "workboat",
    _Style.CARGO: "cargo",
    _Style.TANKER: "tanker",
    _Style.ROOF_FLAT: "flat_roof",
    _Style.ROOF_GABLE: "gable_roof",
    _Style.ROOF_HIP: "hip_roof",
}


def _geojson(poly: Any) -> dict[str, Any]:
    """GeoJSON-like mapping of a polygon (computed once; rasterize is fast on mappings)."""
    import shapely

    rings = [poly.exterior, *poly.interiors]
    return {"type": "Polygon", "coordinates": [shapely.get_coordinates(r).tolist() for r in rings]}


@dataclass(frozen=True, slots=True, eq=False)
class _Obj:
    """A labelled object. Geometry in scene pixels; local frame in the town frame (metres)."""

    oid: int
    cls: str
    style: _Style
    poly: Any  # shapely Polygon, scene pixels
    cu: float  # centre, town frame metres
    cv: float
    alpha: float  # direction of the long ("front") axis in the town frame, radians
    length: float  # metres
    width: float
    colours: tuple[Colour, ...]
    extras: tuple[tuple[float, ...], ...] = ()  # e.g. rooftop units (a0, a1, b0, b1), metres
    moving: bool = False
    gj: dict[str, Any] = field(init=False, repr=False)
    bounds: tuple[float, float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gj", _geojson(self.poly))
        object.__setattr__(self, "bounds", tuple(self.poly.bounds))


@dataclass(frozen=True, slots=True, eq=False)
class _Feat:
    """An unlabelled background feature (pavement, marking, pier, tree, rock, container)."""

    poly: Any  # scene pixels
    colour: Colour
    texture: float  # relative texture amplitude
    layer: int  # 0 ground patches, 1 markings, 2 piers: under shadows; 3 trees etc.: above
    gj: dict[str, Any] = field(init=False, repr=False)
    bounds: tuple[float, float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gj", _geojson(self.poly))
        object.__setattr__(self, "bounds", tuple(self.poly.bounds))


@dataclass(frozen=True, slots=True, eq=False)
class _Wake:
    """A moving ship's wake: stern point and heading in scene metres."""

    sx: float
    sy: float
    dx: float
    dy: float
    length: float
    width: float
    strength: float


_Shadow = tuple[dict[str, Any], float, tuple[float, ...]]


@dataclass(slots=True)
class _CellPlan:
    objects: list[_Obj] = field(default_factory=list)
    features: list[_Feat] = field(default_factory=list)
    # (GeoJSON-like polygon in scene px, darkening factor, bounds)
    shadows: list[_Shadow] = field(default_factory=list)
    wakes: list[_Wake] = field(default_factory=list)


# Palettes (display reflectance, with a near-infrared value).
_CAR_COLOURS: tuple[tuple[Colour, float], ...] = (
    ((0.88, 0.88, 0.87, 0.70), 0.28),  # white
    ((0.68, 0.69, 0.70, 0.55), 0.16),  # silver
    ((0.08, 0.08, 0.09, 0.10), 0.16),  # black
    ((0.55, 0.55, 0.57, 0.45), 0.08),  # light grey
    ((0.62, 0.12, 0.10, 0.40), 0.10),  # red
    ((0.12, 0.22, 0.55, 0.30), 0.10),  # blue
    ((0.10, 0.14, 0.30, 0.20), 0.05),  # dark blue
    ((0.80, 0.70, 0.20, 0.55), 0.03),  # yellow
    ((0.25, 0.40, 0.22, 0.35), 0.04),  # green
)
_GLASS: Colour = (0.06, 0.07, 0.09, 0.06)
_ROOF_COLOURS: tuple[Colour, ...] = (
    (0.62, 0.30, 0.22, 0.50),  # terracotta
    (0.55, 0.26, 0.20, 0.45),  # dark terracotta
    (0.30, 0.30, 0.33, 0.28),  # dark grey
    (0.72, 0.72, 0.70, 0.62),  # light grey
    (0.86, 0.86, 0.84, 0.75),  # white membrane
    (0.47, 0.35, 0.27, 0.40),  # brown
    (0.34, 0.38, 0.44, 0.33),  # slate
    (0.30, 0.46, 0.38, 0.40),  # green metal
    (0.74, 0.66, 0.52, 0.62),  # beige
)
_HULL_COLOURS: tuple[Colour, ...] = (
    (0.88, 0.88, 0.87, 0.72),
    (0.84, 0.85, 0.86, 0.70),
    (0.58, 0.58, 0.60, 0.48),
    (0.60, 0.14, 0.11, 0.40),
    (0.14, 0.20, 0.42, 0.25),
    (0.80, 0.42, 0.10, 0.50),
)
_BIG_HULL_COLOURS: tuple[Colour, ...] = (
    (0.55, 0.14, 0.11, 0.38),
    (0.20, 0.22, 0.26, 0.20),
    (0.16, 0.24, 0.42, 0.25),
    (0.60, 0.60, 0.62, 0.50),
)
_DECK_COLOURS: tuple[Colour, ...] = (
    (0.80, 0.78, 0.72, 0.66),
    (0.58, 0.44, 0.30, 0.48),
    (0.70, 0.72, 0.74, 0.60),
)
_CONTAINER_COLOURS: tuple[Colour, ...] = (
    (0.62, 0.16, 0.12, 0.40),
    (0.16, 0.30, 0.58, 0.32),
    (0.20, 0.48, 0.28, 0.38),
    (0.82, 0.46, 0.12, 0.52),
    (0.82, 0.82, 0.80, 0.68),
    (0.45, 0.45, 0.47, 0.38),
    (0.70, 0.60, 0.20, 0.50),
)
_C_ROAD: Colour = (0.30, 0.30, 0.31, 0.26)
_C_SIDEWALK: Colour = (0.60, 0.59, 0.56, 0.50)
_C_PARKING: Colour = (0.35, 0.35, 0.36, 0.30)
_C_LAWN: Colour = (0.32, 0.44, 0.22, 0.56)
_C_PAVED: Colour = (0.54, 0.52, 0.49, 0.46)
_C_MARKING: Colour = (0.86, 0.86, 0.82, 0.70)
_C_STALL: Colour = (0.70, 0.70, 0.67, 0.58)
_C_PIER: Colour = (0.58, 0.48, 0.36, 0.46)
_C_QUAY: Colour = (0.62, 0.61, 0.58, 0.52)
_C_TREE: Colour = (0.13, 0.27, 0.11, 0.62)
_C_ROCK: Colour = (0.46, 0.44, 0.41, 0.40)
_C_SAND: tuple[float, float, float, float] = (0.74, 0.68, 0.52, 0.48)
_C_SOIL = np.array([0.46, 0.38, 0.28, 0.32], np.float32)
_C_DRY = np.array([0.54, 0.51, 0.34, 0.42], np.float32)
_C_GRASS = np.array([0.29, 0.41, 0.19, 0.56], np.float32)
_C_FOREST = np.array([0.11, 0.20, 0.09, 0.48], np.float32)
_C_DEEP = np.array([0.035, 0.11, 0.15, 0.02], np.float32)
_C_SHALLOW = np.array([0.09, 0.25, 0.27, 0.05], np.float32)
_C_HARBOUR_WATER = np.array([0.05, 0.13, 0.14, 0.02], np.float32)
_C_HAZE = np.array([0.78, 0.80, 0.84, 0.60], np.float32)
_C_FOAM = np.array([0.86, 0.88, 0.88, 0.35], np.float32)


def _pick(rng: np.random.Generator, items: tuple[Any, ...]) -> Any:
    return items[int(rng.integers(len(items)))]


def _pick_weighted(rng: np.random.Generator, items: tuple[tuple[Any, float], ...]) -> Any:
    w = np.array([p for _, p in items], np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))][0]


def _jitter(rng: np.random.Generator, c: Colour, amount: float = 0.04) -> Colour:
    f = 1.0 + float(rng.uniform(-amount, amount))
    return (
        min(c[0] * f, 0.97),
        min(c[1] * f, 0.97),
        min(c[2] * f, 0.97),
        min(c[3] * f, 0.97),
    )


# --------------------------------------------------------------------------------------------
# The world: global scene parameters, cell kinds and cell plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LayoutParams:
    water_frac: tuple[float, float]
    urban_threshold: float
    p_marina: float
    p_quay: float
    ships_per_cell: float
    lot_weights: tuple[float, float, float, float]  # buildings, parking, park, containers
    p_dense_parking: float


_LAYOUTS = {
    Layout.MIXED: _LayoutParams((0.30, 0.45), 0.52, 0.45, 0.30, 0.9, (0.55, 0.27, 0.18, 0.0), 0.45),
    Layout.MARINA: _LayoutParams(
        (0.50, 0.62), 0.30, 0.85, 0.35, 1.1, (0.46, 0.28, 0.12, 0.14), 0.5
    ),
    Layout.TOWN: _LayoutParams((0.06, 0.14), -1.0, 0.40, 0.40, 0.6, (0.56, 0.30, 0.14, 0.0), 0.5),
}


class _World:
    """Scene-wide parameters plus lazily planned, cached cells (all deterministic)."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.g = spec.gsd
        self.params = _LAYOUTS[spec.layout]
        rng = np.random.default_rng([spec.seed, 31337, list(Layout).index(spec.layout)])
        self.key = (spec.seed * 1_000_003) & 0xFFFFFFFF
        theta = 0.0 if rng.random() < 0.35 else float(rng.uniform(-0.75, 0.75))
        self.cos_t, self.sin_t = math.cos(theta), math.sin(theta)
        wm, hm = spec.width * self.g, spec.height * self.g
        uc, vc = self._rot(wm / 2.0, hm / 2.0)
        self.u_off = uc - _CELL / 2.0 + float(rng.uniform(-0.15, 0.15)) * _CELL
        self.v_off = vc - _CELL / 2.0 + float(rng.uniform(-0.15, 0.15)) * _CELL
        # coastline: f = (p . n - c) + wiggle; f > 0 is land
        phi = float(rng.uniform(0, 2 * math.pi))
        self.nx, self.ny = math.cos(phi), math.sin(phi)
        proj = [x * self.nx + y * self.ny for x in (0.0, wm) for y in (0.0, hm)]
        dmin, dmax = min(proj), max(proj)
        wf = float(rng.uniform(*self.params.water_frac))
        self.coast_c = dmin + wf * (dmax - dmin)
        extent = max(dmax - dmin, 200.0)
        self.coast_amp = min(0.12 * extent, 400.0)
        self.coast_scale = max(250.0, 0.35 * extent)
        # sun: direction in which shadows fall (scene metres, y down), elevation
        psi = float(rng.uniform(-2.6, -0.55))
        self.shx, self.shy = math.cos(psi), math.sin(psi)
        self.sun_elev = float(rng.uniform(math.radians(38), math.radians(62)))
        self.shadow_per_m = 1.0 / math.tan(self.sun_elev)
        # atmosphere, water
        self.haze_max = float(rng.uniform(0.02, 0.16))
        self.light_amp = float(rng.uniform(0.04, 0.12))
        self.wave_dir = float(rng.uniform(0, 2 * math.pi))
        self.wave_amp = float(rng.uniform(0.008, 0.02))
        self.glint = float(rng.uniform(0.0, 1.0))
        # cell index range covering the scene
        corners = [self._uv(x, y) for x in (0.0, wm) for y in (0.0, hm)]
        self.i_min = math.floor(min(c[0] for c in corners) / _CELL)
        self.i_max = math.floor(max(c[0] for c in corners) / _CELL)
        self.j_min = math.floor(min(c[1] for c in corners) / _CELL)
        self.j_max = math.floor(max(c[1] for c in corners) / _CELL)
        self.n_j = self.j_max - self.j_min + 1
        self.valid = _collar_polygon(spec) if spec.nodata_collar else None
        from shapely import box
        from shapely.prepared import prep

        self.scene_box = box(0.0, 0.0, float(spec.width), float(spec.height))
        self.valid_prepared = prep(self.valid) if self.valid is not None else None
        self._plan = functools.lru_cache(maxsize=256)(self._plan_cell)
        self._kind = functools.lru_cache(maxsize=16384)(self._cell_kind)

    # ---- frames -------------------------------------------------------------------------
    def _rot(self, mx: float, my: float) -> tuple[float, float]:
        return self.cos_t * mx + self.sin_t * my, -self.sin_t * mx + self.cos_t * my

    def _uv(self, mx: float, my: float) -> tuple[float, float]:
        u, v = self._rot(mx, my)
        return u - self.u_off, v - self.v_off

    def uv_to_m(self, u: Any, v: Any) -> tuple[Any, Any]:
        """Town frame -> scene metres (arrays or scalars)."""
        uu = np.asarray(u) + self.u_off
        vv = np.asarray(v) + self.v_off
        return self.cos_t * uu - self.sin_t * vv, self.sin_t * uu + self.cos_t * vv

    def poly_uv(self, pts: Any, holes: Any = None) -> Any:
        """Polygon from town-frame vertices (metres) -> shapely Polygon in scene pixels."""
        from shapely import Polygon

        p = np.asarray(pts, np.float64)
        mx, my = self.uv_to_m(p[:, 0], p[:, 1])
        shell = np.column_stack([mx / self.g, my / self.g])
        rings = None
        if holes is not None:
            rings = []
            for h in holes:
                q = np.asarray(h, np.float64)
                hx, hy = self.uv_to_m(q[:, 0], q[:, 1])
                rings.append(np.column_stack([hx / self.g, hy / self.g]))
        return Polygon(shell, rings)

    # ---- fields at points ---------------------------------------------------------------
    def land_fn(self, mx: Any, my: Any) -> F64:
        """Signed land function at points (scene metres): > 0 land, < 0 water (about metres)."""
        x = np.asarray(mx, np.float64)
        y = np.asarray(my, np.float64)
        wig = _fbm_points(x, y, self.coast_scale, 3, self.key + _K_COAST) * 2.0 - 1.0
        out: F64 = x * self.nx + y * self.ny - self.coast_c + self.coast_amp * wig
        return out

    def cell_centre_m(self, i: int, j: int) -> tuple[float, float]:
        mx, my = self.uv_to_m((i + 0.5) * _CELL, (j + 0.5) * _CELL)
        return float(mx), float(my)

    def _is_land(self, i: int, j: int) -> bool:
        mx, my = self.cell_centre_m(i, j)
        return bool(self.land_fn(mx, my) > 0.0)

    def cell_rng(self, i: int, j: int, salt: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.spec.seed, list(Layout).index(self.spec.layout), i + 2**31, j + 2**31, salt]
        )

    def kind(self, i: int, j: int) -> _Kind:
        return self._kind(i, j)

    def _cell_kind(self, i: int, j: int) -> _Kind:
        mx, my = self.cell_centre_m(i, j)
        f = float(self.land_fn(mx, my))
        if f > 0.0:
            urban = float(_fbm_points(mx, my, 1500.0, 2, self.key + _K_URBAN))
            urban += 0.3 * math.exp(-f / 500.0)
            return _Kind.TOWN if urban > self.params.urban_threshold else _Kind.RURAL
        rng = self.cell_rng(i, j, 1)
        nbrs = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
        land = [n for n in nbrs if self._is_land(*n)]
        if not land:
            return _Kind.WATER
        town = [n for n in land if self._cell_kind(*n) is _Kind.TOWN]
        r = rng.random()
        if town and r < self.params.p_quay:
            return _Kind.QUAY
        if r < self.params.p_quay + self.params.p_marina:
            return _Kind.MARINA
        return _Kind.WATER

    def plan(self, i: int, j: int) -> _CellPlan:
        return self._plan(i, j)

    # ---- object acceptance --------------------------------------------------------------
    def accept(self, poly: Any) -> bool:
        """Whether an object polygon lies wholly inside the scene and its valid footprint."""
        x0, y0, x1, y1 = poly.bounds
        if x0 < 0.0 or y0 < 0.0 or x1 > self.spec.width or y1 > self.spec.height:
            return False
        return self.valid_prepared is None or bool(self.valid_prepared.contains(poly))

    def cell_box_px(self, i: int, j: int, pad_m: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (scene pixels) of a cell, padded by ``pad_m`` metres."""
        us = np.array([i * _CELL - pad_m, (i + 1) * _CELL + pad_m])
        vs = np.array([j * _CELL - pad_m, (j + 1) * _CELL + pad_m])
        uu, vv = np.meshgrid(us, vs)
        mx, my = self.uv_to_m(uu.ravel(), vv.ravel())
        return (
            float(mx.min()) / self.g,
            float(my.min()) / self.g,
            float(mx.max()) / self.g,
            float(my.max()) / self.g,
        )

    def cells_for_window(self, win: PixelWindow, pad_cells: int) -> Iterator[tuple[int, int]]:
        g = self.g
        corners = [
            self._uv(c * g, r * g)
            for c in (win.col_off, win.col_end)
            for r in (win.row_off, win.row_end)
        ]
        i0 = math.floor(min(c[0] for c in corners) / _CELL) - pad_cells
        i1 = math.floor(max(c[0] for c in corners) / _CELL) + pad_cells
        j0 = math.floor(min(c[1] for c in corners) / _CELL) - pad_cells
        j1 = math.floor(max(c[1] for c in corners) / _CELL) + pad_cells
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                yield i, j

    def scene_cells(self) -> Iterator[tuple[int, int]]:
        """Cells whose area meets the scene, in a fixed order."""
        for i in range(self.i_min, self.i_max + 1):
            for j in range(self.j_min, self.j_max + 1):
                x0, y0, x1, y1 = self.cell_box_px(i, j)
                if x1 <= 0 or y1 <= 0 or x0 >= self.spec.width or y0 >= self.spec.height:
                    continue
                yield i, j

    def oid_base(self, i: int, j: int) -> int:
        return ((i - self.i_min + 1) * (self.n_j + 2) + (j - self.j_min + 1)) * 8192

    # ---- planning -----------------------------------------------------------------------
    def _plan_cell(self, i: int, j: int) -> _CellPlan:
        kind = self.kind(i, j)
        plan = _CellPlan()
        ctx = _CellCtx(self, i, j, plan, self.cell_rng(i, j, 2))
        if kind is _Kind.TOWN:
            _plan_town(ctx)
        elif kind is _Kind.RURAL:
            _plan_rural(ctx)
        elif kind is _Kind.MARINA:
            _plan_marina(ctx)
        elif kind is _Kind.QUAY:
            _plan_quay(ctx)
        else:
            _plan_open_water(ctx)
        return plan


class _CellCtx:
    """Helper bound to one cell while it is planned (local town-frame coordinates in metres)."""

    def __init__(
        self, w: _World, i: int, j: int, plan: _CellPlan, rng: np.random.Generator
    ) -> None:
        self.w = w
        self.i = i
        self.j = j
        self.plan = plan
        self.rng = rng
        self.u0 = i * _CELL
        self.v0 = j * _CELL
        self.next_id = w.oid_base(i, j) + 1
        self.density = w.spec.density

    def rect_pts(self, cu: float, cv: float, length: float, width: float, alpha: float) -> Any:
        """Corners (town frame, absolute) of a rectangle centred at local (cu, cv)."""
        ca, sa = math.cos(alpha), math.sin(alpha)
        hl, hw = length / 2.0, width / 2.0
        cu += self.u0
        cv += self.v0
        return [
            (cu + ca * a - sa * b, cv + sa * a + ca * b)
            for a, b in ((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw))
        ]

    def local_pts(self, pts: Any) -> Any:
        return [(self.u0 + u, self.v0 + v) for u, v in pts]

    def feature(self, pts: Any, colour: Colour, texture: float, layer: int) -> Any:
        poly = self.w.poly_uv(self.local_pts(pts))
        self.plan.features.append(_Feat(poly, colour, texture, layer))
        return poly

    def box_feature(
        self, u0: float, v0: float, u1: float, v1: float, colour: Colour, texture: float, layer: int
    ) -> Any:
        return self.feature([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], colour, texture, layer)

    def shadow(self, poly: Any, height_m: float, darkening: float) -> None:
        """Shadow of a convex footprint ``poly`` (scene px) raised ``height_m`` metres."""
        import shapely

        d = height_m * self.w.shadow_per_m / self.w.g
        dx, dy = self.w.shx * d, self.w.shy * d
        pts = np.asarray(poly.exterior.coords)
        allp = np.vstack([pts, pts + np.array([dx, dy])])
        hull = shapely.MultiPoint(allp).convex_hull
        self.plan.shadows.append((_geojson(hull), darkening, tuple(hull.bounds)))

    def add_object(
        self,
        cls: str,
        style: _Style,
        pts: Any,
        cu: float,
        cv: float,
        alpha: float,
        length: float,
        width: float,
        colours: tuple[Colour, ...],
        *,
        holes: Any = None,
        extras: tuple[tuple[float, ...], ...] = (),
        moving: bool = False,
    ) -> _Obj | None:
        """Register an object (town-frame absolute vertices).

        Returns ``None`` (nothing drawn, no label) when the object is narrower than one pixel
        at the scene's GSD or does not lie wholly inside the scene and its valid footprint.
        """
        oid = self.next_id
        self.next_id += 1
        if width < self.w.g:
            return None
        poly = self.w.poly_uv(pts, holes)
        if not self.w.accept(poly):
            return None
        obj = _Obj(
            oid=oid,
            cls=cls,
            style=style,
            poly=poly,
            cu=cu + self.u0,
            cv=cv + self.v0,
            alpha=alpha,
            length=length,
            width=width,
            colours=colours,
            extras=extras,
            moving=moving,
        )
        self.plan.objects.append(obj)
        return obj

    def land_at_local(self, pts: Any) -> F64:
        p = np.asarray(pts, np.float64)
        mx, my = self.w.uv_to_m(p[:, 0] + self.u0, p[:, 1] + self.v0)
        return self.w.land_fn(mx, my)


# ---- vehicles --------------------------------------------------------------------------------


def _vehicle_dims(rng: np.random.Generator, style: _Style) -> tuple[float, float]:
    if style is _Style.CAR:
        return float(rng.uniform(4.1, 4.9)), float(rng.uniform(1.70, 1.90))
    if style is _Style.VAN:
        return float(rng.uniform(5.0, 6.2)), float(rng.uniform(1.95, 2.15))
    return float(rng.uniform(8.0, 12.0)), float(rng.uniform(2.40, 2.55))


def _vehicle_colours(rng: np.random.Generator, style: _Style) -> tuple[Colour, ...]:
    body = _jitter(rng, _pick_weighted(rng, _CAR_COLOURS))
    if style is _Style.VAN and rng.random() < 0.6:
        body = _jitter(rng, _CAR_COLOURS[0][0])
    if style is _Style.TRUCK:
        box = _jitter(rng, _pick(rng, ((0.86, 0.86, 0.85, 0.70), (0.66, 0.67, 0.68, 0.55))))
        return (body, box)
    return (body,)


def _add_vehicle(
    ctx: _CellCtx, style: _Style, cu: float, cv: float, alpha: float, length: float, width: float
) -> None:
    pts = ctx.rect_pts(cu, cv, length, width, alpha)
    obj = ctx.add_object(
        "vehicle", style, pts, cu, cv, alpha, length, width, _vehicle_colours(ctx.rng, style)
    )
    if obj is not None:
        ctx.shadow(obj.poly, 1.6 if style is _Style.CAR else 2.6, 0.55)


# ---- town ---------------------------------------------------------------------------------------


def _plan_town(ctx: _CellCtx) -> None:
    w, rng = ctx.w, ctx.rng
    i, j = ctx.i, ctx.j
    hw = _HALF_ROAD
    # Road markings: dashed centre line on the cell's left (u = 0) and top (v = 0) edges when
    # the neighbour across that edge is also town.
    for axis, nb in ((0, (i - 1, j)), (1, (i, j - 1))):
        if w.kind(*nb) is not _Kind.TOWN:
            continue
        s = hw + 2.0
        while s + 3.0 < _CELL - hw:
            if axis == 0:
                ctx.box_feature(-0.28, s, 0.28, s + 3.0, _C_MARKING, 0.03, 1)
            else:
                ctx.box_feature(s, -0.28, s + 3.0, 0.28, _C_MARKING, 0.03, 1)
            s += 9.0
    # Traffic in the four half-road lanes owned by this cell.
    mean_gap = 14.0 / max(ctx.density, 0.05)
    for lane in range(4):
        if ctx.density <= 0:
            break
        sign = 1.0 if rng.random() < 0.5 else -1.0
        s = hw + float(rng.uniform(0.5, 10.0))
        while True:
            r = rng.random()
            style = _Style.CAR if r < 0.82 else (_Style.VAN if r < 0.94 else _Style.TRUCK)
            length, width = _vehicle_dims(rng, style)
            if s + length > _CELL - hw - 0.5:
                break
            along = s + length / 2.0
            lat = hw / 2.0 + float(rng.uniform(-0.3, 0.3))
            dev = float(rng.normal(0.0, 0.02))
            if lane == 0:
                cu, cv, alpha = lat, along, math.pi / 2
            elif lane == 1:
                cu, cv, alpha = _CELL - lat, along, math.pi / 2
            elif lane == 2:
                cu, cv, alpha = along, lat, 0.0
            else:
                cu, cv, alpha = along, _CELL - lat, 0.0
            alpha = alpha + (0.0 if sign > 0 else math.pi) + dev
            _add_vehicle(ctx, style, cu, cv, alpha, length, width)
            queue = rng.random() < 0.35
            s += length + (
                float(rng.uniform(1.5, 3.0)) if queue else 1.5 + float(rng.exponential(mean_gap))
            )
    # Interior lots.
    a0 = hw + _SIDEWALK
    a1 = _CELL - hw - _SIDEWALK
    lots: list[tuple[float, float, float, float]] = []
    pattern = rng.random()
    mid_u = float(rng.uniform(0.4, 0.6)) * (a1 - a0) + a0
    mid_v = float(rng.uniform(0.4, 0.6)) * (a1 - a0) + a0
    gap = 1.5
    if pattern < 0.15:
        lots = [(a0, a0, a1, a1)]
    elif pattern < 0.45:
        if rng.random() < 0.5:
            lots = [(a0, a0, mid_u - gap, a1), (mid_u + gap, a0, a1, a1)]
        else:
            lots = [(a0, a0, a1, mid_v - gap), (a0, mid_v + gap, a1, a1)]
    elif pattern < 0.7:
        lots = [
            (a0, a0, mid_u - gap, a1),
            (mid_u + gap, a0, a1, mid_v - gap),
            (mid_u + gap, mid_v + gap, a1, a1),
        ]
    else:
        lots = [
            (a0, a0, mid_u - gap, mid_v - gap),
            (mid_u + gap, a0, a1, mid_v - gap),
            (a0, mid_v + gap, mid_u - gap, a1),
            (mid_u + gap, mid_v + gap, a1, a1),
        ]
    weights = list(w.params.lot_weights)
    if weights[3] > 0:
        near_quay = any(
            w.kind(*n) is _Kind.QUAY for n in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
        )
        if not near_quay:
            weights[3] = 0.0
    wsum = sum(weights)
    for lot in lots:
        kind = int(rng.choice(4, p=np.array(weights) / wsum))
        if kind == 0:
            _plan_building_lot(ctx, lot)
        elif kind == 1:
            _plan_parking_lot(ctx, lot)
        elif kind == 2:
            _plan_park(ctx, lot)
        else:
            _plan_container_yard(ctx, lot)


def _plan_parking_lot(ctx: _CellCtx, lot: tuple[float, float, float, float]) -> None:
    rng = ctx.rng
    u0, v0, u1, v1 = lot
    rows_along_u = rng.random() < 0.5
    # at most a few double rows; the rest of the lot gets buildings
    depth, aisle = 5.5, float(rng.uniform(6.0, 7.5))
    keep = int(rng.integers(1, 4)) * (2 * depth + aisle) + 2.0 - aisle + 1.0
    if rows_along_u and v1 - v0 > keep + 20.0:
        _plan_building_lot(ctx, (u0, v0 + keep + 3.0, u1, v1))
        v1 = v0 + keep
    elif not rows_along_u and u1 - u0 > keep + 20.0:
        _plan_building_lot(ctx, (u0 + keep + 3.0, v0, u1, v1))
        u1 = u0 + keep
    ctx.box_feature(u0, v0, u1, v1, _jitter(rng, _C_PARKING, 0.08), 0.05, 0)
    # "along" runs along the rows; "across" is the stall depth direction.
    a_lo, a_hi = (u0, u1) if rows_along_u else (v0, v1)
    c_lo, c_hi = (v0, v1) if rows_along_u else (u0, u1)
    dense = rng.random() < ctx.w.params.p_dense_parking
    occ = min(
        0.98,
        (float(rng.uniform(0.85, 1.0)) if dense else float(rng.uniform(0.45, 0.9))) * ctx.density,
    )
    pitch = float(rng.uniform(2.4, 2.8))

    def place(along: float, across: float, alpha_sign: float) -> tuple[float, float, float]:
        if rows_along_u:
            return along, across, (math.pi / 2 if alpha_sign > 0 else -math.pi / 2)
        return across, along, (0.0 if alpha_sign > 0 else math.pi)

    c = c_lo + 1.0
    row_index = 0
    while c + depth <= c_hi - 1.0:
        facing = 1.0 if row_index % 2 == 0 else -1.0
        a = a_lo + 1.0
        if not dense:
            # stall lines
            s = a
            while s + pitch <= a_hi - 1.0 + 1e-9:
                if rows_along_u:
                    ctx.box_feature(s - 0.15, c, s + 0.15, c + depth, _C_STALL, 0.05, 1)
                else:
                    ctx.box_feature(c, s - 0.15, c + depth, s + 0.15, _C_STALL, 0.05, 1)
                s += pitch
            if rows_along_u:
                ctx.box_feature(s - 0.15, c, s + 0.15, c + depth, _C_STALL, 0.05, 1)
            else:
                ctx.box_feature(c, s - 0.15, c + depth, s + 0.15, _C_STALL, 0.05, 1)
        while True:
            style = _Style.CAR if rng.random() < 0.88 else _Style.VAN
            length, width = _vehicle_dims(rng, style)
            length = min(length, depth - 0.2)
            step = width + float(rng.uniform(0.0, 0.25)) if dense else pitch
            if a + (width if dense else pitch) > a_hi - 1.0:
                break
            if rng.random() < occ:
                lat = a + (width / 2.0 if dense else pitch / 2.0 + float(rng.uniform(-0.2, 0.2)))
                inset = float(rng.uniform(0.05, depth - length - 0.05))
                across = c + inset + length / 2.0
                sign = facing if rng.random() < 0.8 else -facing
                cu, cv, alpha = place(lat, across, sign)
                _add_vehicle(ctx, style, cu, cv, alpha, length, width)
                a += step
            else:
                a += step if not dense else float(rng.uniform(2.0, 3.0))
        c += depth
        row_index += 1
        if row_index % 2 == 0:
            c += aisle


def _building_shape(
    rng: np.random.Generator, bw: float, bh: float
) -> tuple[
    list[tuple[float, float]],
    list[tuple[float, float]] | None,
    list[tuple[float, float, float, float]],
    str,
]:
    """Footprint of a rectilinear building in its parcel frame (origin at a corner, metres).

    Returns (shell, hole, convex parts, shape name).
    """
    r = rng.random()
    if r < 0.14 and bw >= 30 and bh >= 30:
        t = float(rng.uniform(8.0, min(14.0, (min(bw, bh) - 8.0) / 2.0)))
        shell = [(0.0, 0.0), (bw, 0.0), (bw, bh), (0.0, bh)]
        hole = [(t, t), (t, bh - t), (bw - t, bh - t), (bw - t, t)]
        parts = [(0, 0, bw, t), (0, bh - t, bw, bh), (0, t, t, bh - t), (bw - t, t, bw, bh - t)]
        return shell, hole, parts, "courtyard"
    if r < 0.34 and bw >= 14 and bh >= 14:
        cw = float(rng.uniform(0.35, 0.6)) * bw
        ch = float(rng.uniform(0.35, 0.6)) * bh
        shell = [(0.0, 0.0), (bw, 0.0), (bw, bh - ch), (bw - cw, bh - ch), (bw - cw, bh), (0.0, bh)]
        parts = [(0, 0, bw, bh - ch), (0, bh - ch, bw - cw, bh)]
        return shell, None, parts, "L"
    if r < 0.44 and bw >= 20 and bh >= 16:
        nw = float(rng.uniform(0.3, 0.45)) * bw
        nd = float(rng.uniform(0.4, 0.6)) * bh
        xa, xb = (bw - nw) / 2.0, (bw + nw) / 2.0
        shell = [
            (0.0, 0.0),
            (bw, 0.0),
            (bw, bh),
            (xb, bh),
            (xb, bh - nd),
            (xa, bh - nd),
            (xa, bh),
            (0.0, bh),
        ]
        parts = [(0, 0, bw, bh - nd), (0, bh - nd, xa, bh), (xb, bh - nd, bw, bh)]
        return shell, None, parts, "U"
    shell = [(0.0, 0.0), (bw, 0.0), (bw, bh), (0.0, bh)]
    return shell, None, [(0, 0, bw, bh)], "rect"


def _split_parcels(
    rng: np.random.Generator, rect: tuple[float, float, float, float], depth: int = 0
) -> list[tuple[float, float, float, float]]:
    u0, v0, u1, v1 = rect
    wu, wv = u1 - u0, v1 - v0
    target = float(rng.uniform(22.0, 70.0))
    if depth > 6 or (max(wu, wv) < target and max(wu, wv) < 86.0):
        return [rect]
    if wu >= wv:
        m = u0 + float(rng.uniform(0.35, 0.65)) * wu
        return _split_parcels(rng, (u0, v0, m, v1), depth + 1) + _split_parcels(
            rng, (m, v0, u1, v1), depth + 1
        )
    m = v0 + float(rng.uniform(0.35, 0.65)) * wv
    return _split_parcels(rng, (u0, v0, u1, m), depth + 1) + _split_parcels(
        rng, (u0, m, u1, v1), depth + 1
    )


def _add_building(ctx: _CellCtx, parcel: tuple[float, float, float, float], setback: float) -> bool:
    rng = ctx.rng
    u0, v0, u1, v1 = parcel
    bw = min(u1 - u0 - 2 * setback, 80.0)
    bh = min(v1 - v0 - 2 * setback, 80.0)
    if bw < 8.0 or bh < 8.0:
        return False
    if rng.random() < 0.3:  # not every building fills its parcel
        bw = max(8.0, bw * float(rng.uniform(0.6, 1.0)))
        bh = max(8.0, bh * float(rng.uniform(0.6, 1.0)))
    ou = u0 + setback + float(rng.uniform(0.0, (u1 - u0 - 2 * setback) - bw))
    ov = v0 + setback + float(rng.uniform(0.0, (v1 - v0 - 2 * setback) - bh))
    shell, hole, parts, shape = _building_shape(rng, bw, bh)
    # random mirror / transpose keeps the parcel box
    flip_u, flip_v = rng.random() < 0.5, rng.random() < 0.5

    def tr(p: tuple[float, float]) -> tuple[float, float]:
        x = bw - p[0] if flip_u else p[0]
        y = bh - p[1] if flip_v else p[1]
        return (ctx.u0 + ou + x, ctx.v0 + ov + y)

    shell_t = [tr(p) for p in shell]
    hole_t = [[tr(p) for p in hole]] if hole is not None else None
    if shape == "rect":
        r = rng.random()
        style = (
            _Style.ROOF_GABLE if r < 0.35 else (_Style.ROOF_HIP if r < 0.6 else _Style.ROOF_FLAT)
        )
    else:
        style = _Style.ROOF_FLAT
    roof = _jitter(rng, _pick(rng, _ROOF_COLOURS), 0.06)
    if style is _Style.ROOF_FLAT and roof[0] < 0.4 and rng.random() < 0.6:
        roof = _jitter(rng, _pick(rng, (_ROOF_COLOURS[3], _ROOF_COLOURS[4], _ROOF_COLOURS[8])))
    # local frame: a along the longer side of the bounding box
    if bw >= bh:
        alpha, length, width = 0.0, bw, bh
    else:
        alpha, length, width = math.pi / 2, bh, bw
    extras: list[tuple[float, ...]] = []
    if style is _Style.ROOF_FLAT:
        for _ in range(int(rng.integers(0, 6))):
            su, sv = float(rng.uniform(1.2, 3.5)), float(rng.uniform(1.2, 3.5))
            pu = float(rng.uniform(1.5, max(1.6, bw - su - 1.5)))
            pv = float(rng.uniform(1.5, max(1.6, bh - sv - 1.5)))
            extras.append(
                (ou + pu, ou + pu + su, ov + pv, ov + pv + sv, float(rng.uniform(0.75, 1.3)))
            )
    cu = ou + bw / 2.0
    cv = ov + bh / 2.0
    height = float(rng.uniform(4.0, 9.0)) if bw * bh < 400 else float(rng.uniform(6.0, 24.0))
    obj = ctx.add_object(
        "building",
        style,
        shell_t,
        cu,
        cv,
        alpha,
        length,
        width,
        (roof,),
        holes=hole_t,
        extras=tuple(extras),
    )
    if obj is None:
        return False
    for pu0, pv0, pu1, pv1 in parts:
        a = tr((pu0, pv0))
        b = tr((pu1, pv1))
        part = ctx.w.poly_uv([(a[0], a[1]), (b[0], a[1]), (b[0], b[1]), (a[0], b[1])])
        ctx.shadow(part, height, 0.42)
    return True


def _plan_building_lot(ctx: _CellCtx, lot: tuple[float, float, float, float]) -> None:
    rng = ctx.rng
    u0, v0, u1, v1 = lot
    ground = _jitter(rng, _C_LAWN if rng.random() < 0.55 else _C_PAVED, 0.06)
    ctx.box_feature(u0, v0, u1, v1, ground, 0.10, 0)
    p_build = min(1.0, 0.88 * max(ctx.density, 0.0) ** 0.5)
    for parcel in _split_parcels(rng, lot):
        if rng.random() < p_build:
            _add_building(ctx, parcel, float(rng.uniform(1.5, 4.5)))
        elif ground is not _C_PAVED:
            _add_trees(ctx, parcel, 0.02)


def _add_trees(ctx: _CellCtx, rect: tuple[float, float, float, float], per_m2: float) -> None:
    import shapely

    rng = ctx.rng
    u0, v0, u1, v1 = rect
    n = int(rng.poisson(per_m2 * max(u1 - u0, 0) * max(v1 - v0, 0)))
    for _ in range(n):
        r = float(rng.uniform(1.8, 4.5))
        if u1 - u0 < 2 * r or v1 - v0 < 2 * r:
            continue
        cu = float(rng.uniform(u0 + r, u1 - r))
        cv = float(rng.uniform(v0 + r, v1 - r))
        ang = np.linspace(0, 2 * math.pi, 10, endpoint=False) + float(rng.uniform(0, 1))
        rad = r * (1.0 + 0.12 * rng.standard_normal(10))
        pts = [
            (cu + float(a) * math.cos(t), cv + float(a) * math.sin(t))
            for a, t in zip(rad, ang, strict=True)
        ]
        poly = ctx.feature(pts, _jitter(rng, _C_TREE, 0.15), 0.35, 3)
        if poly.is_valid:
            ctx.shadow(shapely.convex_hull(poly), float(rng.uniform(5.0, 12.0)), 0.5)


def _plan_park(ctx: _CellCtx, lot: tuple[float, float, float, float]) -> None:
    u0, v0, u1, v1 = lot
    ctx.box_feature(u0, v0, u1, v1, _jitter(ctx.rng, _C_LAWN, 0.06), 0.12, 0)
    # a footpath across the park
    if ctx.rng.random() < 0.6:
        m = float(ctx.rng.uniform(u0 + 5, max(u0 + 6, u1 - 5)))
        ctx.box_feature(m - 1.2, v0, m + 1.2, v1, _C_PAVED, 0.08, 1)
    _add_trees(ctx, lot, 0.006)


def _plan_container_yard(ctx: _CellCtx, lot: tuple[float, float, float, float]) -> None:
    rng = ctx.rng
    u0, v0, u1, v1 = lot
    ctx.box_feature(u0, v0, u1, v1, _C_QUAY, 0.06, 0)
    clen = 12.2 if rng.random() < 0.6 else 6.1
    cw = 2.44
    v = v0 + 3.0
    while v + clen <= v1 - 3.0:
        u = u0 + 3.0
        while u + cw <= u1 - 3.0:
            if rng.random() < 0.9:
                col = _jitter(rng, _pick(rng, _CONTAINER_COLOURS), 0.05)
                poly = ctx.box_feature(
                    u + 0.05, v + 0.05, u + cw - 0.05, v + clen - 0.05, col, 0.05, 3
                )
                ctx.shadow(poly, 2.6 * int(rng.integers(1, 4)), 0.5)
            u += cw
        v += clen + float(rng.uniform(3.0, 6.0))


# ---- countryside --------------------------------------------------------------------------------


def _plan_rural(ctx: _CellCtx) -> None:
    rng = ctx.rng
    # rocks on the shore
    pts = rng.uniform(0, _CELL, size=(60, 2))
    f = ctx.land_at_local(pts)
    for (pu, pv), fv in zip(pts, f, strict=True):
        if abs(fv) < 4.0 and rng.random() < 0.5:
            _add_rock(ctx, float(pu), float(pv))
    # tree clumps on land
    for _ in range(int(rng.integers(1, 5))):
        cu, cv = (float(x) for x in rng.uniform(10, _CELL - 10, size=2))
        half = float(rng.uniform(6, 25))
        rect = (
            max(cu - half, 0.0),
            max(cv - half, 0.0),
            min(cu + half, _CELL),
            min(cv + half, _CELL),
        )
        if float(ctx.land_at_local([(cu, cv)])[0]) > half + 5:
            _add_trees(ctx, rect, 0.02)
    # farm buildings
    n = int(rng.poisson(0.8 * ctx.density))
    for _ in range(n):
        pu0, pv0 = (float(x) for x in rng.uniform(5, _CELL - 60, size=2))
        parcel = (pu0, pv0, pu0 + float(rng.uniform(16, 55)), pv0 + float(rng.uniform(16, 55)))
        corners = [
            (parcel[0], parcel[1]),
            (parcel[2], parcel[1]),
            (parcel[2], parcel[3]),
            (parcel[0], parcel[3]),
        ]
        if float(ctx.land_at_local(corners).min()) < 8.0:
            continue
        poly = ctx.w.poly_uv(ctx.local_pts(corners))
        overlap = any(o.poly.intersects(poly) for o in ctx.plan.objects)
        if not overlap:
            _add_building(ctx, parcel, 2.0)


def _add_rock(ctx: _CellCtx, cu: float, cv: float) -> None:
    rng = ctx.rng
    r = float(rng.uniform(0.6, 2.5))
    ang = np.sort(rng.uniform(0, 2 * math.pi, 7))
    rad = r * rng.uniform(0.6, 1.2, 7)
    pts = [
        (cu + float(a) * math.cos(t), cv + float(a) * math.sin(t))
        for a, t in zip(rad, ang, strict=True)
    ]
    ctx.feature(pts, _jitter(rng, _C_ROCK, 0.2), 0.3, 3)


# ---- water --------------------------------------------------------------------------------------


def _ship_length(rng: np.random.Generator, big_p: float = 0.08) -> float:
    if rng.random() < big_p:
        return float(rng.uniform(60.0, 150.0))
    return float(np.clip(math.exp(rng.normal(math.log(18.0), 0.55)), 8.0, 60.0))


def _ship_outline(length: float, width: float, style: _Style) -> list[tuple[float, float]]:
    """Hull outline in the ship frame (a forward, b to starboard), metres."""
    hl, hw = length / 2.0, width / 2.0
    bow = 0.28 * length if style in (_Style.BOAT, _Style.WORKBOAT) else 0.13 * length
    return [
        (-hl, -hw * 0.92),
        (-hl + 0.04 * length, -hw),
        (hl - bow, -hw),
        (hl - 0.45 * bow, -hw * 0.62),
        (hl, 0.0),
        (hl - 0.45 * bow, hw * 0.62),
        (hl - bow, hw),
        (-hl + 0.04 * length, hw),
        (-hl, hw * 0.92),
    ]


def _ship_style(rng: np.random.Generator, length: float) -> _Style:
    if length < 22:
        return _Style.BOAT if rng.random() < 0.8 else _Style.WORKBOAT
    if length < 60:
        return _Style.WORKBOAT if rng.random() < 0.6 else _Style.BOAT
    return _Style.CARGO if rng.random() < 0.6 else _Style.TANKER


def _ship_colours(rng: np.random.Generator, style: _Style) -> tuple[Colour, ...]:
    if style in (_Style.CARGO, _Style.TANKER):
        hull = _jitter(rng, _pick(rng, _BIG_HULL_COLOURS))
        deck = _jitter(
            rng,
            _pick(
                rng, ((0.42, 0.20, 0.16, 0.36), (0.30, 0.42, 0.34, 0.35), (0.55, 0.55, 0.56, 0.45))
            ),
        )
    else:
        hull = _jitter(rng, _pick(rng, _HULL_COLOURS))
        deck = _jitter(rng, _pick(rng, _DECK_COLOURS))
    cabin = _jitter(rng, (0.92, 0.92, 0.91, 0.75), 0.03)
    return (hull, deck, cabin)


def _add_ship(
    ctx: _CellCtx,
    cu: float,
    cv: float,
    alpha: float,
    length: float,
    width: float,
    style: _Style,
    moving: bool,
) -> _Obj | None:
    ca, sa = math.cos(alpha), math.sin(alpha)
    pts = [
        (ctx.u0 + cu + ca * a - sa * b, ctx.v0 + cv + sa * a + ca * b)
        for a, b in _ship_outline(length, width, style)
    ]
    obj = ctx.add_object(
        "ship",
        style,
        pts,
        cu,
        cv,
        alpha,
        length,
        width,
        _ship_colours(ctx.rng, style),
        moving=moving,
    )
    if obj is None:
        return None
    ctx.shadow(obj.poly, float(np.clip(0.08 * length, 1.0, 10.0)), 0.7)
    if moving:
        w = ctx.w
        su, sv = ctx.u0 + cu - ca * length / 2.0, ctx.v0 + cv - sa * length / 2.0
        sx, sy = w.uv_to_m(su, sv)
        hx, hy = w.uv_to_m(ctx.u0 + cu + ca, ctx.v0 + cv + sa)
        cx, cy = w.uv_to_m(ctx.u0 + cu, ctx.v0 + cv)
        dx, dy = float(hx - cx), float(hy - cy)
        ctx.plan.wakes.append(
            _Wake(float(sx), float(sy), dx, dy, length, width, float(ctx.rng.uniform(0.4, 0.9)))
        )
    return obj


def _plan_open_water(ctx: _CellCtx) -> None:
    rng = ctx.rng
    n = int(rng.poisson(ctx.w.params.ships_per_cell * ctx.density))
    placed: list[Any] = []
    for _ in range(n):
        for _attempt in range(12):
            length = _ship_length(rng)
            style = _ship_style(rng, length)
            width = max(
                2.4, length / float(rng.uniform(3.2, 4.5) if length < 40 else rng.uniform(5.5, 7.5))
            )
            alpha = float(rng.uniform(0, 2 * math.pi))
            r = length / 2.0 + 2.0
            if 2 * r >= _CELL:
                continue
            cu, cv = (float(x) for x in rng.uniform(r, _CELL - r, size=2))
            ca, sa = math.cos(alpha), math.sin(alpha)
            samples = [
                (cu + ca * a - sa * b, cv + sa * a + ca * b)
                for a in np.linspace(-length / 2, length / 2, 7)
                for b in (-width / 2, 0.0, width / 2)
            ]
            if float(ctx.land_at_local(samples).max()) > -4.0:
                continue
            poly = ctx.w.poly_uv(ctx.rect_pts(cu, cv, length, width, alpha))
            clear = 4.0 / ctx.w.g
            if any(p.distance(poly) < clear for p in placed):
                continue
            placed.append(poly)
            _add_ship(ctx, cu, cv, alpha, length, width, style, moving=rng.random() < 0.65)
            break
    # buoys and rocks (unlabelled distractors)
    for _ in range(int(rng.integers(0, 3))):
        cu, cv = (float(x) for x in rng.uniform(5, _CELL - 5, size=2))
        if float(ctx.land_at_local([(cu, cv)])[0]) < -3:
            col = _pick(rng, ((0.85, 0.25, 0.12, 0.45), (0.90, 0.80, 0.15, 0.6)))
            ctx.box_feature(cu - 0.45, cv - 0.45, cu + 0.45, cv + 0.45, col, 0.0, 3)
    pts = rng.uniform(0, _CELL, size=(40, 2))
    f = ctx.land_at_local(pts)
    for (pu, pv), fv in zip(pts, f, strict=True):
        if -3.0 < fv < 2.0 and rng.random() < 0.5:
            _add_rock(ctx, float(pu), float(pv))


def _land_side(ctx: _CellCtx, want_town: bool) -> int:
    """Side (0: -u, 1: +u, 2: -v, 3: +v) of a land (or town) neighbour, chosen at random."""
    w, i, j = ctx.w, ctx.i, ctx.j
    nbrs = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
    sides = [
        s
        for s, n in enumerate(nbrs)
        if (w.kind(*n) is _Kind.TOWN if want_town else w.kind(*n) in (_Kind.TOWN, _Kind.RURAL))
    ]
    if not sides:
        return int(ctx.rng.integers(4))
    return int(sides[int(ctx.rng.integers(len(sides)))])


def _pq_to_uv(side: int, p: float, q: float) -> tuple[float, float]:
    """Cell-local (p along the shore, q towards the shore at q = CELL) -> local (u, v)."""
    if side == 0:
        return _CELL - q, p
    if side == 1:
        return q, p
    if side == 2:
        return p, _CELL - q
    return p, q


def _alpha_pq(side: int, along_p: bool) -> float:
    """Town-frame angle of the +p (along_p) or +q axis for a side."""
    q_dir = (math.pi, 0.0, -math.pi / 2, math.pi / 2)[side]
    p_dir = (math.pi / 2, math.pi / 2, 0.0, 0.0)[side]
    return p_dir if along_p else q_dir


def _plan_marina(ctx: _CellCtx) -> None:
    rng = ctx.rng
    side = _land_side(ctx, want_town=False)
    nbrs = [(ctx.i - 1, ctx.j), (ctx.i + 1, ctx.j), (ctx.i, ctx.j - 1), (ctx.i, ctx.j + 1)]
    ext = 0.0 if ctx.w.kind(*nbrs[side]) is _Kind.TOWN else 12.0
    pw = float(rng.uniform(2.0, 3.0))
    lmax = float(rng.uniform(11.0, 20.0))
    fairway = float(rng.uniform(8.0, 16.0))
    spacing = pw + 2 * (lmax + 0.6) + fairway
    p = float(rng.uniform(2.0, 6.0)) + lmax + 0.6
    occ = min(0.98, float(rng.uniform(0.75, 0.97)) * ctx.density)
    q_start = float(rng.uniform(10.0, 35.0))

    def quad(p0: float, q0: float, p1: float, q1: float) -> list[tuple[float, float]]:
        return [_pq_to_uv(side, pp, qq) for pp, qq in ((p0, q0), (p1, q0), (p1, q1), (p0, q1))]

    while p + pw / 2 + lmax + 1.0 <= _CELL:
        ctx.feature(
            quad(p - pw / 2, q_start, p + pw / 2, _CELL + ext), _jitter(rng, _C_PIER, 0.08), 0.12, 2
        )
        for sgn in (-1.0, 1.0):
            q = q_start + float(rng.uniform(0.3, 1.5))
            while True:
                length = float(rng.uniform(7.5, lmax))
                width = max(2.5, length / float(rng.uniform(2.8, 3.6)))
                if q + width > _CELL - 4.0:
                    break
                if rng.random() < occ:
                    gap = float(rng.uniform(0.0, 0.3))
                    pc = p + sgn * (pw / 2 + gap + length / 2)
                    qc = q + width / 2
                    u, v = _pq_to_uv(side, pc, qc)
                    alpha = _alpha_pq(side, along_p=True) + (math.pi if sgn > 0 else 0.0)
                    style = _Style.BOAT if rng.random() < 0.9 else _Style.WORKBOAT
                    _add_ship(ctx, u, v, alpha, length, width, style, moving=False)
                    q += width + float(rng.uniform(0.0, 0.2))
                else:
                    q += float(rng.uniform(2.5, 4.5))
        p += spacing


def _plan_quay(ctx: _CellCtx) -> None:
    rng = ctx.rng
    side = _land_side(ctx, want_town=True)
    alpha_p = _alpha_pq(side, along_p=True)
    p = float(rng.uniform(2.0, 12.0))
    while p < _CELL - 30:
        length = float(min(rng.uniform(35.0, 150.0), _CELL - 3.0 - p))
        if length < 25:
            break
        width = length / float(rng.uniform(5.5, 7.5))
        style = (
            _Style.CARGO
            if length > 60 and rng.random() < 0.55
            else (_Style.TANKER if length > 60 else _Style.WORKBOAT)
        )
        gap = float(rng.uniform(0.0, 0.4))
        qc = _CELL - gap - width / 2
        pc = p + length / 2
        u, v = _pq_to_uv(side, pc, qc)
        heading = alpha_p + (math.pi if rng.random() < 0.5 else 0.0)
        if rng.random() < min(0.95, 0.8 * ctx.density):
            _add_ship(ctx, u, v, heading, length, width, style, moving=False)
            if rng.random() < 0.45:  # a tug or barge alongside, touching
                l2 = float(rng.uniform(14.0, min(40.0, length * 0.7)))
                w2 = l2 / float(rng.uniform(3.0, 4.0))
                q2 = qc - width / 2 - float(rng.uniform(0.0, 0.25)) - w2 / 2
                p2 = pc + float(rng.uniform(-(length - l2) / 2, (length - l2) / 2))
                u2, v2 = _pq_to_uv(side, p2, q2)
                _add_ship(ctx, u2, v2, heading, l2, w2, _Style.WORKBOAT, moving=False)
        p += length + float(rng.uniform(3.0, 20.0))
    # a few boats further out
    for _ in range(int(rng.poisson(0.8 * ctx.density))):
        length = float(np.clip(rng.normal(14, 4), 8, 25))
        width = length / 3.3
        pc = float(rng.uniform(length, _CELL - length))
        qc = float(rng.uniform(length, 60.0))
        u, v = _pq_to_uv(side, pc, qc)
        _add_ship(
            ctx,
            u,
            v,
            float(rng.uniform(0, 2 * math.pi)),
            length,
            width,
            _Style.BOAT,
            moving=rng.random() < 0.5,
        )


# --------------------------------------------------------------------------------------------
# Nodata collar
# --------------------------------------------------------------------------------------------


def _collar_polygon(spec: SceneSpec) -> Any:
    """A ragged, rotated valid footprint in scene pixels (about 70-85 % of the scene)."""
    from shapely import Polygon

    rng = np.random.default_rng([spec.seed, 555])
    w, h = float(spec.width), float(spec.height)
    t = rng.uniform(0.08, 0.22, 4)
    corners = [(w * t[0], 0.0), (w, h * t[1]), (w * (1 - t[2]), h), (0.0, h * (1 - t[3]))]
    pts: list[tuple[float, float]] = []
    amp = 0.006 * max(w, h)
    for k in range(4):
        (x0, y0), (x1, y1) = corners[k], corners[(k + 1) % 4]
        n = 24
        nx, ny = -(y1 - y0), x1 - x0
        norm = math.hypot(nx, ny) or 1.0
        for s in range(n):
            f = s / n
            off = 0.0 if s == 0 else float(rng.uniform(-amp, amp))
            pts.append((x0 + f * (x1 - x0) + off * nx / norm, y0 + f * (y1 - y0) + off * ny / norm))
    poly = Polygon(pts).buffer(0)
    return poly.intersection(Polygon([(1, 1), (w - 1, 1), (w - 1, h - 1), (1, h - 1)]))


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _rasterize(
    shapes: list[tuple[Any, int]], win: PixelWindow, dtype: str = "int32"
) -> npt.NDArray[Any]:
    from rasterio import features

    out_shape = (win.height, win.width)
    if not shapes:
        return np.zeros(out_shape, dtype)
    return features.rasterize(
        shapes,
        out_shape=out_shape,
        transform=Affine.translation(win.col_off, win.row_off),
        fill=0,
        dtype=dtype,
    )


def _expand(win: PixelWindow, halo: int) -> PixelWindow:
    return PixelWindow(
        win.col_off - halo, win.row_off - halo, win.width + 2 * halo, win.height + 2 * halo
    )


def _intersects(bounds: tuple[float, ...], win: PixelWindow) -> bool:
    x0, y0, x1, y1 = bounds
    return x1 > win.col_off and x0 < win.col_end and y1 > win.row_off and y0 < win.row_end


def _gather(
    w: _World, win: PixelWindow, pad_cells: int
) -> tuple[list[_Obj], list[_Feat], list[_Shadow], list[_Wake]]:
    objs: list[_Obj] = []
    feats: list[_Feat] = []
    shadows: list[_Shadow] = []
    wakes: list[_Wake] = []
    for i, j in w.cells_for_window(win, pad_cells):
        plan = w.plan(i, j)
        objs.extend(o for o in plan.objects if _intersects(o.bounds, win))
        feats.extend(f for f in plan.features if _intersects(f.bounds, win))
        shadows.extend(s for s in plan.shadows if _intersects(s[2], win))
        wakes.extend(plan.wakes)
    return objs, feats, shadows, wakes


def _object_id_raster(w: _World, win: PixelWindow) -> tuple[npt.NDArray[np.int32], list[_Obj]]:
    """Local index raster (1-based into the returned list; 0 = no object) over ``win``."""
    objs, _, _, _ = _gather(w, win, 1)
    order = {"building": 0, "vehicle": 1, "ship": 2}
    objs.sort(key=lambda o: (order[o.cls], o.oid))
    ids = _rasterize([(o.gj, k + 1) for k, o in enumerate(objs)], win)
    return ids, objs


def render_object_ids(spec: SceneSpec, *, window: PixelWindow | None = None) -> I64:
    """The object-id raster that the scene's pixels were drawn with.

    Args:
        spec: the scene (e.g. ``SynthScene.spec``).
        window: part of the scene, in scene pixels (default: the whole scene; keep it small for
            big scenes).

    Returns:
        int64 ``[window.height, window.width]``: the ``object_id`` of the labelled object
        drawn at each pixel, 0 where none is.
    """
    w = _World(spec)
    win = window or PixelWindow(0, 0, spec.width, spec.height)
    ids, objs = _object_id_raster(w, win)
    lut = np.zeros(len(objs) + 1, np.int64)
    lut[1:] = [o.oid for o in objs]
    out: I64 = lut[ids]
    return out


def _colour_vehicle(o: _Obj, a: F64, b: F64) -> F32:
    an = a / (o.length / 2.0)
    bn = np.abs(b) / (o.width / 2.0)
    body = np.asarray(o.colours[0], np.float32)
    col = np.repeat(body[:, None], a.size, axis=1)
    if o.style is _Style.TRUCK:
        box = np.asarray(o.colours[1], np.float32)
        cargo = an < 0.52
        col[:, cargo] = box[:, None]
        col[:, (an >= 0.52) & (an < 0.58)] = np.asarray(_GLASS, np.float32)[:, None] * 2.0
        glass = (an > 0.80) & (an < 0.92)
        col[:, glass] = np.asarray(_GLASS, np.float32)[:, None]
        ribs = cargo & (np.mod(a, 1.2) < 0.25)
        col[:, ribs] *= np.float32(0.92)
    else:
        glass_c = np.asarray(_GLASS, np.float32)[:, None]
        if o.style is _Style.VAN:
            front = (an > 0.56) & (an < 0.74) & (bn < 0.8)
            col[:, front] = 0.35 * col[:, front] + 0.65 * glass_c
            col[:, (an > -0.93) & (an < 0.56)] *= np.float32(1.05)
        else:
            front = (an > 0.18) & (an < 0.38) & (bn < 0.8)
            rear = (an > -0.70) & (an < -0.58) & (bn < 0.8)
            col[:, front] = 0.45 * col[:, front] + 0.55 * glass_c
            col[:, rear] = 0.6 * col[:, rear] + 0.4 * glass_c
            col[:, (an >= -0.58) & (an <= 0.18)] *= np.float32(1.05)
    col[:, bn > 0.88] *= np.float32(0.88)
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _colour_ship(o: _Obj, a: F64, b: F64) -> F32:
    hull = np.asarray(o.colours[0], np.float32)
    deck = np.asarray(o.colours[1], np.float32)
    cabin = np.asarray(o.colours[2], np.float32)
    an = a / (o.length / 2.0)
    bn = np.abs(b) / (o.width / 2.0)
    rim = 0.22 if o.length < 40 else 0.12
    col = np.repeat(deck[:, None], a.size, axis=1)
    # taper: the hull's half width shrinks towards the bow, keep a rim all around
    half = np.where(an > 0.5, np.clip((1.0 - an) / 0.5, 0.05, 1.0), 1.0)
    is_rim = (bn > half * (1.0 - rim)) | (an < -1.0 + rim * o.width / o.length)
    if o.style in (_Style.CARGO, _Style.TANKER):
        mid = (an > -0.62) & (an < 0.72) & ~is_rim
        if o.style is _Style.CARGO:
            ia = np.floor(a / 6.2).astype(np.int64)
            ib = np.floor(b / 2.5).astype(np.int64)
            pick = (_u01(_hash2(ia, ib, o.oid)) * len(_CONTAINER_COLOURS)).astype(np.int64)
            pal = np.asarray(_CONTAINER_COLOURS, np.float32).T
            filled = _u01(_hash2(ia, ib, o.oid + 1)) < 0.85
            sel = mid & filled
            col[:, sel] = pal[:, pick[sel]]
        else:
            pipe = mid & (bn < 0.08)
            col[:, pipe] = np.float32(0.7)
        bridge = (an > -0.86) & (an < -0.66) & (bn < 0.85)
        col[:, bridge] = cabin[:, None]
    elif o.style is _Style.WORKBOAT:
        house = (an > -0.1) & (an < 0.35) & (bn < 0.62)
        col[:, house] = cabin[:, None]
        col[:, house & (an > 0.28)] = np.asarray(_GLASS, np.float32)[:, None]
    else:
        house = (an > -0.35) & (an < 0.25) & (bn < 0.58)
        col[:, house] = cabin[:, None]
        screen = house & (an > 0.15)
        col[:, screen] = np.asarray(_GLASS, np.float32)[:, None] * 1.5
        cockpit = (an > -0.8) & (an <= -0.35) & (bn < 0.55)
        col[:, cockpit] *= np.float32(0.8)
    col[:, is_rim] = hull[:, None]
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _colour_building(
    o: _Obj, w: _World, a: F64, b: F64, u: F64, v: F64, rim: npt.NDArray[np.bool_]
) -> F32:
    roof = np.asarray(o.colours[0], np.float32)
    col = np.repeat(roof[:, None], a.size, axis=1)
    # sun direction in the building frame (towards the sun = minus shadow direction)
    sa, sb = _sun_in_frame(w, o.alpha)
    k = np.float32(0.22)
    if o.style in (_Style.ROOF_GABLE, _Style.ROOF_HIP):
        half_l, half_w = o.length / 2.0, o.width / 2.0
        shade = np.where(b >= 0, sb, -sb).astype(np.float32)
        if o.style is _Style.ROOF_HIP:
            end = (half_l - np.abs(a)) < (half_w - np.abs(b))
            shade = np.where(end, np.where(a >= 0, sa, -sa), shade).astype(np.float32)
        col *= 1.0 + k * shade
        ridge = np.abs(b) < 0.25
        if o.style is _Style.ROOF_HIP:
            ridge &= np.abs(a) < half_l - half_w
        col[:, ridge] *= np.float32(1.12)
    else:
        for u0, u1, v0, v1, f in o.extras:
            inside = (u >= u0) & (u < u1) & (v >= v0) & (v < v1)
            col[:, inside] *= np.float32(f)
        col[:, rim] *= np.float32(0.8)
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _sun_in_frame(w: _World, alpha: float) -> tuple[float, float]:
    # the shadow direction in the town frame, negated (towards the sun)
    su, sv = w._rot(-w.shx, -w.shy)
    ca, sa = math.cos(alpha), math.sin(alpha)
    return su * ca + sv * sa, -su * sa + sv * ca


def render_window(spec: SceneSpec, window: PixelWindow, *, world: Any = None) -> tuple[F32, I64]:
    """Render one window of the scene before quantisation.

    Args:
        spec: the scene.
        window: the window in scene pixels (inside the scene).
        world: internal cache of scene planning (pass ``None``).

    Returns:
        ``(image, ids)``: float32 ``[4, h, w]`` reflectance-like values in [0, 1] for the bands
        red, green, blue, near-infrared, and int64 ``[h, w]`` object ids (0 = none), both for
        the window in scene pixels. Pixels outside the valid footprint are not masked here.
    """
    w: _World = world if world is not None else _World(spec)
    H = _HALO
    E = _expand(window, H)
    g = w.g
    key = w.key
    xs = (np.arange(E.col_off, E.col_end, dtype=np.float64) + 0.5) * g
    ys = (np.arange(E.row_off, E.row_end, dtype=np.float64) + 0.5) * g
    u = w.cos_t * xs[None, :] + w.sin_t * ys[:, None] - w.u_off
    v = -w.sin_t * xs[None, :] + w.cos_t * ys[:, None] - w.v_off
    ci = np.floor(u / _CELL).astype(np.int64)
    cj = np.floor(v / _CELL).astype(np.int64)
    i0, j0 = int(ci.min()), int(cj.min())
    table = np.array(
        [
            [int(w.kind(i, j)) for j in range(j0, int(cj.max()) + 1)]
            for i in range(i0, int(ci.max()) + 1)
        ],
        np.int8,
    )
    kind = table[ci - i0, cj - j0]
    lu = (u - ci * _CELL).astype(np.float32)
    lv = (v - cj * _CELL).astype(np.float32)
    del u, v, ci, cj
    # ---- fields
    f = (xs[None, :] * w.nx + ys[:, None] * w.ny - w.coast_c).astype(np.float32)
    f += np.float32(w.coast_amp) * (_fbm_grid(xs, ys, w.coast_scale, 3, key + _K_COAST) * 2.0 - 1.0)
    fine = _fbm_grid(xs, ys, 2.5, 3, key + _K_FINE)
    mid = _fbm_grid(xs, ys, 20.0, 3, key + _K_MID)
    veg = _fbm_grid(xs, ys, 140.0, 4, key + _K_VEG)
    forced_water = (kind == _Kind.MARINA) | (kind == _Kind.QUAY)
    town = kind == _Kind.TOWN
    land = town | (~forced_water & (f > 0))
    img = np.empty((4, E.height, E.width), np.float32)
    # ---- natural land: soil -> dry grass -> grass -> forest by the vegetation field
    t = np.clip((veg - 0.30) / 0.40, 0.0, 1.0)
    vv = veg + 0.25 * (mid - 0.5)
    for c in range(4):
        base = _C_SOIL[c] + (_C_GRASS[c] - _C_SOIL[c]) * t
        base = np.where(vv > 0.62, _C_FOREST[c] * (0.8 + 0.5 * fine), base)
        base = np.where(vv < 0.36, _C_DRY[c] + (_C_SOIL[c] - _C_DRY[c]) * mid, base)
        img[c] = base
    beach = ~town & ~forced_water & (f > 0) & (f < 6.0 + 4.0 * mid)
    for c in range(4):
        img[c][beach] = _C_SAND[c]
    tex = 1.0 + 0.22 * (fine - 0.5) + 0.25 * (mid - 0.5)
    img *= tex
    # ---- water with waves and glint
    water = ~land
    if water.any():
        depth = np.clip(-f / 25.0, 0.0, 1.0)
        ca, sa = math.cos(w.wave_dir), math.sin(w.wave_dir)
        ph = (xs[None, :] * ca + ys[:, None] * sa).astype(np.float32)
        ph2 = (
            xs[None, :] * math.cos(w.wave_dir + 0.5) + ys[:, None] * math.sin(w.wave_dir + 0.5)
        ).astype(np.float32)
        wave = np.sin(ph * np.float32(2 * math.pi / 9.0) + 6.0 * mid) + 0.6 * np.sin(
            ph2 * np.float32(2 * math.pi / 5.5) + 4.0 * fine
        )
        calm = np.where(forced_water, np.float32(0.4), np.float32(1.0))
        wave *= np.float32(w.wave_amp) * calm * (0.6 + 0.8 * veg)
        glint_field = np.float32(w.glint) * np.clip(
            _fbm_grid(xs, ys, 600.0, 2, key + _K_WAVE) * 2.2 - 0.8, 0.0, 1.0
        )
        pix = _u01(
            _hash2(
                np.arange(E.col_off, E.col_end)[None, :],
                np.arange(E.row_off, E.row_end)[:, None],
                key + _K_WAVE,
            )
        ).astype(np.float32)
        sparkle = (pix < 0.02 * glint_field) & (wave > 0)
        for c in range(4):
            deep = np.where(forced_water, _C_HARBOUR_WATER[c], _C_DEEP[c])
            wc = _C_SHALLOW[c] + (deep - _C_SHALLOW[c]) * depth
            wc = wc * (1.0 + 0.15 * (mid - 0.5)) + wave * (1.0 if c < 3 else 0.2)
            wc = np.where(sparkle, wc + (0.75 if c < 3 else 0.1) * glint_field, wc)
            img[c] = np.where(water, wc, img[c])
        del ph, ph2, wave, pix, sparkle, depth
    # ---- town ground: lanes, sidewalks, lawns
    if town.any():
        edge = np.minimum(np.minimum(lu, _CELL - lu), np.minimum(lv, _CELL - lv))
        road = town & (edge < _HALF_ROAD)
        walk = town & ~road & (edge < _HALF_ROAD + _SIDEWALK)
        rest = town & ~road & ~walk
        for c in range(4):
            img[c][road] = _C_ROAD[c] * (1.0 + 0.10 * (fine[road] - 0.5) + 0.06 * (mid[road] - 0.5))
            img[c][walk] = _C_SIDEWALK[c] * (1.0 + 0.08 * (fine[walk] - 0.5))
            img[c][rest] = (_C_LAWN[c] * 0.7 + _C_PAVED[c] * 0.3) * (1.0 + 0.2 * (mid[rest] - 0.5))
        del edge, road, walk, rest
    del lu, lv, kind
    # ---- background features and shadows
    objs, feats, shadows, wakes = _gather(w, E, 1)
    lower = [ft for ft in feats if ft.layer < 3]
    upper = [ft for ft in feats if ft.layer >= 3]
    lower.sort(key=lambda ft: ft.layer)
    _paint_features(img, lower, E, fine, mid)
    if lower:
        water &= _rasterize([(ft.gj, 1) for ft in lower if ft.layer == 2], E, "uint8") == 0
    if shadows:
        dark = np.array([1.0] + [s[1] for s in shadows], np.float32)
        sidx = _rasterize([(s[0], k + 1) for k, s in enumerate(shadows)], E)
        m = sidx > 0
        tint = np.array([1.0, 1.02, 1.12, 0.85], np.float32)
        for c in range(4):
            img[c][m] *= np.minimum(dark[sidx[m]] * tint[c], 1.0)
    _paint_features(img, upper, E, fine, mid)
    # ---- wakes (on water only)
    for wk in wakes:
        _paint_wake(img, wk, E, g, water, fine)
    # ---- labelled objects
    order = {"building": 0, "vehicle": 1, "ship": 2}
    objs.sort(key=lambda o: (order[o.cls], o.oid))
    ids = _rasterize([(o.gj, k + 1) for k, o in enumerate(objs)], E)
    if objs:
        from scipy import ndimage

        for k, o in enumerate(objs):
            x0, y0, x1, y1 = o.bounds
            c0 = max(math.floor(x0) - E.col_off, 0)
            r0 = max(math.floor(y0) - E.row_off, 0)
            c1 = min(math.ceil(x1) - E.col_off + 1, E.width)
            r1 = min(math.ceil(y1) - E.row_off + 1, E.height)
            if c1 <= c0 or r1 <= r0:
                continue
            sub = ids[r0:r1, c0:c1] == k + 1
            if not sub.any():
                continue
            rr, cc = np.nonzero(sub)
            px = (cc + c0 + E.col_off + 0.5) * g
            py = (rr + r0 + E.row_off + 0.5) * g
            pu = w.cos_t * px + w.sin_t * py - w.u_off
            pv = -w.sin_t * px + w.cos_t * py - w.v_off
            ca, sa = math.cos(o.alpha), math.sin(o.alpha)
            du, dv = pu - o.cu, pv - o.cv
            a = du * ca + dv * sa
            b = -du * sa + dv * ca
            if o.cls == "vehicle":
                col = _colour_vehicle(o, a, b)
            elif o.cls == "ship":
                col = _colour_ship(o, a, b)
            else:
                er = ndimage.binary_erosion(sub, iterations=1, border_value=1)
                rim = (sub & ~er)[rr, cc]
                ucell = pu - math.floor(o.cu / _CELL) * _CELL
                vcell = pv - math.floor(o.cv / _CELL) * _CELL
                col = _colour_building(o, w, a, b, ucell, vcell, rim)
            col *= 1.0 + 0.06 * (fine[rr + r0, cc + c0] - 0.5)
            img[:, rr + r0, cc + c0] = col
    # ---- illumination, haze, sensor blur and noise
    light = 1.0 + np.float32(w.light_amp) * (
        _fbm_grid(xs, ys, 2500.0, 2, key + _K_LIGHT) * 2.0 - 1.0
    )
    haze = np.float32(w.haze_max) * _fbm_grid(xs, ys, 1800.0, 2, key + _K_HAZE)
    from scipy import ndimage

    pixh = _hash2(
        np.arange(E.col_off, E.col_end)[None, :],
        np.arange(E.row_off, E.row_end)[:, None],
        key + _K_PIX,
    )
    for c in range(4):
        band = img[c] * light
        band += (_C_HAZE[c] * (0.4 if c == 3 else 1.0) - band) * haze
        band = ndimage.gaussian_filter(band, 0.55, truncate=3.0)
        nz = ((pixh >> np.uint64(16 * c)) & np.uint64(0xFFFF)).astype(np.float32) * np.float32(
            1.0 / 65535.0
        )
        band += np.float32(0.012) * (nz - 0.5)
        img[c] = band
    np.clip(img, 0.0, 1.0, out=img)
    core = (slice(None), slice(H, H + window.height), slice(H, H + window.width))
    lut = np.zeros(len(objs) + 1, np.int64)
    lut[1:] = [o.oid for o in objs]
    out_ids: I64 = lut[ids[H : H + window.height, H : H + window.width]]
    out_img: F32 = np.ascontiguousarray(img[core])
    return out_img, out_ids


def _paint_features(img: F32, feats: list[_Feat], E: PixelWindow, fine: F32, mid: F32) -> None:
    if not feats:
        return
    idx = _rasterize([(ft.gj, k + 1) for k, ft in enumerate(feats)], E)
    m = idx > 0
    if not m.any():
        return
    lut = np.zeros((len(feats) + 1, 4), np.float32)
    lut[1:] = [ft.colour for ft in feats]
    amp = np.zeros(len(feats) + 1, np.float32)
    amp[1:] = [ft.texture for ft in feats]
    k = idx[m]
    t = 1.0 + amp[k] * ((fine[m] - 0.5) + 0.6 * (mid[m] - 0.5))
    for c in range(4):
        img[c][m] = lut[k, c] * t


def _paint_wake(
    img: F32, wk: _Wake, E: PixelWindow, g: float, water: npt.NDArray[np.bool_], fine: F32
) -> None:
    reach = min(3.0 * wk.length, 220.0)
    # bounding box of the wake in scene pixels
    ex = [wk.sx, wk.sx - wk.dx * reach]
    ey = [wk.sy, wk.sy - wk.dy * reach]
    spread = reach * 0.4 + wk.width
    x0 = (min(ex) - spread) / g
    x1 = (max(ex) + spread) / g
    y0 = (min(ey) - spread) / g
    y1 = (max(ey) + spread) / g
    c0 = max(math.floor(x0) - E.col_off, 0)
    c1 = min(math.ceil(x1) - E.col_off, E.width)
    r0 = max(math.floor(y0) - E.row_off, 0)
    r1 = min(math.ceil(y1) - E.row_off, E.height)
    if c1 <= c0 or r1 <= r0:
        return
    px = (np.arange(c0, c1) + E.col_off + 0.5) * g
    py = (np.arange(r0, r1) + E.row_off + 0.5) * g
    rx = px[None, :] - wk.sx
    ry = py[:, None] - wk.sy
    a = -(rx * wk.dx + ry * wk.dy)  # metres behind the stern
    b = np.abs(-rx * wk.dy + ry * wk.dx)
    behind = a > -wk.width * 0.3
    ap = np.maximum(a, 0.0)
    trail = np.exp(-ap / (0.7 * wk.length)) * np.exp(-((b / (0.45 * wk.width + 0.06 * ap)) ** 2))
    arm_d = b - ap * 0.354  # Kelvin half-angle 19.5 degrees
    arms = (
        0.45
        * np.exp(-((arm_d / (0.25 * wk.width + 0.02 * ap)) ** 2))
        * np.exp(-ap / (1.4 * wk.length))
    )
    foam = (wk.strength * np.where(behind, trail + arms, 0.0)).astype(np.float32)
    foam *= 0.7 + 0.6 * fine[r0:r1, c0:c1]
    foam = np.minimum(foam, 0.95) * water[r0:r1, c0:c1]
    for c in range(4):
        sub = img[c, r0:r1, c0:c1]
        sub += (_C_FOAM[c] - sub) * foam


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _iter_objects(w: _World) -> Iterator[_Obj]:
    for i, j in w.scene_cells():
        yield from w.plan(i, j).objects


def _label_frame(w: _World, objs: list[_Obj]) -> Any:
    import geopandas as gpd
    import shapely

    tr = w.spec.transform
    geoms = [
        shapely.transform(
            o.poly, lambda c: np.column_stack([tr.c + c[:, 0] * tr.a, tr.f + c[:, 1] * tr.e])
        )
        for o in objs
    ]
    heading = []
    for o in objs:
        dmx, dmy = w.uv_to_m(o.cu + math.cos(o.alpha), o.cv + math.sin(o.alpha))
        cmx, cmy = w.uv_to_m(o.cu, o.cv)
        dx, dy = float(dmx - cmx), -float(dmy - cmy)
        heading.append(math.degrees(math.atan2(dx, dy)) % 360.0)
    data = {
        "object_id": np.array([o.oid for o in objs], np.int64),
        "class": [o.cls for o in objs],
        "subtype": [_SUBTYPE[o.style] for o in objs],
        "length_m": np.array([round(o.length, 2) for o in objs], np.float64),
        "width_m": np.array([round(o.width, 2) for o in objs], np.float64),
        "heading_deg": np.array([round(h, 1) for h in heading], np.float64),
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=w.spec.crs_wkt))


def scene_labels(spec: SceneSpec) -> Any:
    """All labels of a scene as a GeoDataFrame in the scene CRS (no pixels rendered).

    Columns: ``object_id`` (int64, as in :func:`render_object_ids`), ``class``, ``subtype``,
    ``length_m``, ``width_m``, ``heading_deg`` (azimuth of the front/bow, clockwise from grid
    north) and ``geometry`` (polygons in the scene CRS).
    """
    w = _World(spec)
    return _label_frame(w, list(_iter_objects(w)))


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _quantise(img: F32, dtype: str) -> npt.NDArray[Any]:
    if dtype == "uint8":
        return np.clip(np.rint(img * 255.0), 1, 255).astype(np.uint8)
    return np.clip(np.rint(_U16_OFFSET + img * _U16_SCALE), 1, _U16_MAX).astype(np.uint16)


def _tmp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def generate_scene(
    out_path: str | Path,
    *,
    size: int | tuple[int, int],
    seed: int,
    gsd: float = 0.5,
    epsg: int = 32633,
    bands: BandSet | str = BandSet.RGB,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    density: float = 1.0,
    layout: Layout | str = Layout.MIXED,
    block_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> SynthScene:
    """Write a synthetic scene (GeoTIFF) and its labels (GeoPackage beside it).

    Args:
        out_path: the GeoTIFF to write; the labels go to the same path with suffix ``.gpkg``.
        size: ``N`` (an ``N x N`` scene) or ``(width, height)`` in pixels.
        seed: random seed; the same arguments give identical pixels and labels.
        gsd: metres per pixel.
        epsg: EPSG code of a projected CRS in metres.
        bands: ``rgb`` or ``rgbn`` (adds near-infrared: vegetation bright, water dark).
        dtype: ``uint8`` or ``uint16`` (11-bit values).
        nodata_collar: ragged valid footprint with nodata 0 around it.
        density: object-count multiplier in [0, 4].
        layout: ``mixed``, ``marina`` or ``town`` (see :class:`Layout`).
        block_size: pixels per render block side (memory grows with its square).
        progress: called as ``progress(blocks_done, blocks_total)`` after each block.

    Returns:
        The written :class:`SynthScene`.

    Raises:
        ConfigError: an argument is out of range (the message names it).
        ExportError: the outputs cannot be written.
    """
    spec = SceneSpec.create(
        size=size,
        seed=seed,
        gsd=gsd,
        epsg=epsg,
        bands=bands,
        dtype=dtype,
        nodata_collar=nodata_collar,
        density=density,
        layout=layout,
        block_size=block_size,
    )
    out = Path(out_path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"out_path: {out} should end in .tif or .tiff")
    if not out.parent.exists():
        raise ExportError(f"{out.parent}: output folder does not exist; create it first")
    labels = out.with_suffix(".gpkg")
    tmp_tif = _tmp_path(out, ".tif")
    tmp_gpkg = _tmp_path(labels, ".gpkg")
    try:
        w = _World(spec)
        _write_raster(spec, w, tmp_tif, progress)
        counts = _write_labels(w, tmp_gpkg)
        os.replace(tmp_tif, out)
        os.replace(tmp_gpkg, labels)
    except OSError as err:
        raise ExportError(f"{out}: could not write the scene ({err}); check the path") from err
    finally:
        for p in (tmp_tif, tmp_gpkg):
            if p.exists():
                p.unlink()
    logger.info("wrote %s (%d x %d px) and %s: %s", out, spec.width, spec.height, labels, counts)
    return SynthScene(
        raster_path=out,
        labels_path=labels,
        counts=counts,
        spec=spec,
        transform=spec.transform,
        crs_wkt=spec.crs_wkt,
        nodata=spec.nodata,
    )


def _blocks(spec: SceneSpec) -> list[PixelWindow]:
    bs = spec.block_size
    return [
        PixelWindow(c, r, min(bs, spec.width - c), min(bs, spec.height - r))
        for r in range(0, spec.height, bs)
        for c in range(0, spec.width, bs)
    ]


def _write_raster(
    spec: SceneSpec, w: _World, path: Path, progress: Callable[[int, int], None] | None
) -> None:
    import rasterio
    from rasterio.enums import ColorInterp, Resampling

    tile = 512 if min(spec.width, spec.height) >= 1024 else 256
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": spec.count,
        "dtype": spec.dtype,
        "crs": f"EPSG:{spec.epsg}",
        "transform": spec.transform,
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if spec.nodata_collar:
        profile["nodata"] = 0
    blocks = _blocks(spec)
    with rasterio.Env(GDAL_CACHEMAX=128, GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            names = ("red", "green", "blue", "nir")
            for b in range(spec.count):
                dst.set_band_description(b + 1, names[b])
            interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            if spec.count == 4:
                interp.append(ColorInterp.undefined)
            dst.colorinterp = interp
            dst.update_tags(
                generator="geoseg.synth",
                seed=str(spec.seed),
                layout=spec.layout.value,
                gsd=str(spec.gsd),
                density=str(spec.density),
            )
            for n, win in enumerate(blocks):
                img, _ = render_window(spec, win, world=w)
                data = _quantise(img[: spec.count], spec.dtype)
                if w.valid is not None:
                    valid = _rasterize([(w.valid, 1)], win, "uint8").astype(bool)
                    data[:, ~valid] = 0
                dst.write(data, window=win.to_rasterio())
                if progress is not None:
                    progress(n + 1, len(blocks))
        factors = []
        f = 2
        while max(spec.width, spec.height) / f >= 128:
            factors.append(f)
            f *= 2
        if factors:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews(factors, Resampling.average)
                dst.update_tags(ns="rio_overview", resampling="average")


def _write_labels(w: _World, path: Path) -> dict[str, int]:
    import pyogrio

    counts = dict.fromkeys(CLASSES, 0)
    batch: list[_Obj] = []
    wrote = False

    def flush() -> None:
        nonlocal wrote
        gdf = _label_frame(w, batch)
        pyogrio.write_dataframe(
            gdf, path, layer="labels", driver="GPKG", geometry_type="Polygon", append=wrote
        )
        wrote = True
        batch.clear()

    for o in _iter_objects(w):
        counts[o.cls] += 1
        batch.append(o)
        if len(batch) >= 50_000:
            flush()
    if batch or not wrote:
        flush()
    return counts
