"""Planning cells and what their plans hold.

The plane is cut into square cells of :data:`_CELL` metres on a grid in the *town frame*
(scene metres rotated by the scene's grid angle; cell ``(i, j)`` covers
``[i * _CELL, (i + 1) * _CELL) x [j * _CELL, (j + 1) * _CELL)`` in town-frame metres). A cell
has a :class:`_Kind` and a :class:`_CellPlan`: labelled objects (:class:`_Obj`), unlabelled
background features (:class:`_Feat`), shadows (:class:`_Shadow`) and ship wakes
(:class:`_Wake`). Plan geometries are in *scene pixels*; object frames in town-frame metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

from geoseg.synth.palette import Colour


class _Kind(IntEnum):
    """Kind of a planning cell."""

    WATER = 0
    MARINA = 1
    QUAY = 2
    RURAL = 3
    TOWN = 4


_CELL = 160.0  # cell pitch in metres (town frame)
_HALF_ROAD = 5.0  # each town cell owns a 5 m lane along each of its edges
_SIDEWALK = 2.5


class _Rect(NamedTuple):
    """An axis-aligned rectangle ``[u0, u1] x [v0, v1]`` in metres along the town-frame axes.

    Lots and parcels are cell-local; the parts of a building footprint are in its parcel frame.
    """

    u0: float
    v0: float
    u1: float
    v1: float


class _RoofUnit(NamedTuple):
    """A rooftop unit on a flat roof: a rectangle in cell-local town-frame metres."""

    u0: float
    u1: float
    v0: float
    v1: float
    brightness: float  # factor applied to the roof colour inside the rectangle


class _Style(IntEnum):
    """What an object looks like (its ``subtype`` label, see :data:`_SUBTYPE`)."""

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
    extras: tuple[_RoofUnit, ...] = ()  # flat roofs only
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


class _Shadow(NamedTuple):
    """A cast shadow: a polygon in scene pixels and the factor it multiplies pixels by."""

    gj: dict[str, Any]  # GeoJSON-like polygon, scene pixels
    darkening: float
    bounds: tuple[float, ...]  # (x0, y0, x1, y1), scene pixels


@dataclass(slots=True)
class _CellPlan:
    """Everything planned in one cell (all geometries in scene pixels)."""

    objects: list[_Obj] = field(default_factory=list)
    features: list[_Feat] = field(default_factory=list)
    shadows: list[_Shadow] = field(default_factory=list)
    wakes: list[_Wake] = field(default_factory=list)
