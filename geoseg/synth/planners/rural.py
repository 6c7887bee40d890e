"""Rural cells: rocks along the shore, clumps of trees and scattered farm buildings.

Cell-local town-frame metres; the ground itself (soil, grass, forest) is rendered from noise.
"""

from __future__ import annotations

from geoseg.synth.cells import _CELL, _Rect
from geoseg.synth.planners.buildings import _add_building
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.nature import _add_rock, _add_trees


def _plan_rural(ctx: _CellCtx) -> None:
    """Plan a rural cell: shore rocks, tree clumps inland, a few farm buildings."""
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
        rect = _Rect(
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
        parcel = _Rect(pu0, pv0, pu0 + float(rng.uniform(16, 55)), pv0 + float(rng.uniform(16, 55)))
        corners = [
            (parcel.u0, parcel.v0),
            (parcel.u1, parcel.v0),
            (parcel.u1, parcel.v1),
            (parcel.u0, parcel.v1),
        ]
        if float(ctx.land_at_local(corners).min()) < 8.0:
            continue
        poly = ctx.w.poly_uv(ctx.local_pts(corners))
        overlap = any(o.poly.intersects(poly) for o in ctx.plan.objects)
        if not overlap:
            _add_building(ctx, parcel, 2.0)
