"""Cell planners: what each kind of planning cell holds, in cell-local town-frame metres.

One module per part: :mod:`.town` (roads, traffic, lots), :mod:`.buildings`, :mod:`.vehicles`,
:mod:`.nature` (trees, rocks), :mod:`.rural`, :mod:`.ships`, :mod:`.water` (open water) and
:mod:`.marina` (marinas and quays); :mod:`.context` is the per-cell helper they share.
:data:`_PLANNERS` maps a cell kind to its planner. A planner draws everything from the cell's
RNG (seeded by seed, layout and cell index) in a fixed order, so a cell's plan never depends on
which cells were planned before it.
"""

from __future__ import annotations

from collections.abc import Callable

from geoseg.synth.cells import _Kind
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.marina import _plan_marina, _plan_quay
from geoseg.synth.planners.rural import _plan_rural
from geoseg.synth.planners.town import _plan_town
from geoseg.synth.planners.water import _plan_open_water

_PLANNERS: dict[_Kind, Callable[[_CellCtx], None]] = {
    _Kind.WATER: _plan_open_water,
    _Kind.MARINA: _plan_marina,
    _Kind.QUAY: _plan_quay,
    _Kind.RURAL: _plan_rural,
    _Kind.TOWN: _plan_town,
}
