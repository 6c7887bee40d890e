"""Vehicles: sizes, colours, and adding one (with its shadow) to a cell.

Cars, vans and trucks are rectangles (length along the front axis, width across, metres);
their colours are drawn here and their windows and cargo boxes painted at render time.
"""

from __future__ import annotations

import numpy as np

from geoseg.synth.cells import _Style
from geoseg.synth.palette import _CAR_COLOURS, Colour, _jitter, _pick, _pick_weighted
from geoseg.synth.planners.context import _CellCtx


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
