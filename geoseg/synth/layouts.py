"""Per-layout parameters: how much water, how much town, what harbours and town lots hold.

Each :class:`~geoseg.synth.spec.Layout` maps to one :class:`_LayoutParams` in
:data:`_LAYOUTS`; the world (:mod:`geoseg.synth.world`) and the cell planners
(:mod:`geoseg.synth.planners`) read them through ``world.params``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from geoseg.synth.spec import Layout


class _Range(NamedTuple):
    """A closed interval ``[low, high]`` that a value is drawn from uniformly."""

    low: float
    high: float


class _LotWeights(NamedTuple):
    """Relative frequencies of the kinds of lot inside a town cell (need not sum to 1)."""

    buildings: float
    parking: float
    park: float
    containers: float  # container yards; only in cells next to a quay


@dataclass(frozen=True, slots=True)
class _LayoutParams:
    """What a layout makes of the world.

    Attributes:
        water_frac: share of the scene's extent across the coastline (along its normal) that
            lies on the water side, before the coastline's wiggle.
        urban_threshold: land cells whose urban field (smooth noise, higher near the coast)
            exceeds this are town, the others rural (-1: all land is town).
        p_marina: a water cell next to land that is not a quay is a marina when a uniform
            draw ``r < p_quay + p_marina`` (else open water).
        p_quay: a water cell next to a town cell is a quay when that draw ``r < p_quay``.
        ships_per_cell: mean number of ships in an open-water cell (times the density).
        lot_weights: relative frequencies of the lot kinds in town cells.
        p_dense_parking: probability that a parking lot is packed with touching cars (no stall
            lines) rather than parked in stalls.
    """

    water_frac: _Range
    urban_threshold: float
    p_marina: float
    p_quay: float
    ships_per_cell: float
    lot_weights: _LotWeights
    p_dense_parking: float


_LAYOUTS = {
    Layout.MIXED: _LayoutParams(
        water_frac=_Range(low=0.30, high=0.45),
        urban_threshold=0.52,
        p_marina=0.45,
        p_quay=0.30,
        ships_per_cell=0.9,
        lot_weights=_LotWeights(buildings=0.55, parking=0.27, park=0.18, containers=0.0),
        p_dense_parking=0.45,
    ),
    Layout.MARINA: _LayoutParams(
        water_frac=_Range(low=0.50, high=0.62),
        urban_threshold=0.30,
        p_marina=0.85,
        p_quay=0.35,
        ships_per_cell=1.1,
        lot_weights=_LotWeights(buildings=0.46, parking=0.28, park=0.12, containers=0.14),
        p_dense_parking=0.5,
    ),
    Layout.TOWN: _LayoutParams(
        water_frac=_Range(low=0.06, high=0.14),
        urban_threshold=-1.0,
        p_marina=0.40,
        p_quay=0.40,
        ships_per_cell=0.6,
        lot_weights=_LotWeights(buildings=0.56, parking=0.30, park=0.14, containers=0.0),
        p_dense_parking=0.5,
    ),
}
