"""Open-water cells: ships under way or at anchor, buoys, and rocks near the shore.

Ships keep about 4 m clear of each other and of land (sampled along the hull); cell-local
town-frame metres.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geoseg.synth.cells import _CELL
from geoseg.synth.palette import _pick
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.nature import _add_rock
from geoseg.synth.planners.ships import _add_ship, _ship_length, _ship_style


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
