"""Trees and rocks: unlabelled features drawn above shadows (layer 3), in town, country and water.

Cell-local town-frame metres.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.synth.cells import _Rect
from geoseg.synth.palette import _C_ROCK, _C_TREE, _jitter
from geoseg.synth.planners.context import _CellCtx


def _add_trees(ctx: _CellCtx, rect: _Rect, per_m2: float) -> None:
    """Scatter tree crowns (with shadows) over a rectangle, ``per_m2`` on average."""
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


def _add_rock(ctx: _CellCtx, cu: float, cv: float) -> None:
    """A rock (an irregular heptagon, 0.6-2.5 m) centred at cell-local ``(cu, cv)``."""
    rng = ctx.rng
    r = float(rng.uniform(0.6, 2.5))
    ang = np.sort(rng.uniform(0, 2 * math.pi, 7))
    rad = r * rng.uniform(0.6, 1.2, 7)
    pts = [
        (cu + float(a) * math.cos(t), cv + float(a) * math.sin(t))
        for a, t in zip(rad, ang, strict=True)
    ]
    ctx.feature(pts, _jitter(rng, _C_ROCK, 0.2), 0.3, 3)
