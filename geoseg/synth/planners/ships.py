"""Ships and boats: sizes, hull outlines, styles, colours, and adding one with shadow and wake.

The ship frame has ``a`` forward (towards the bow) and ``b`` to starboard, in metres; hull
outlines are pointed at the bow. Moving ships leave a :class:`~geoseg.synth.cells._Wake`
(stern point and heading in scene metres) that is painted on water at render time.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.synth.cells import _Obj, _Style, _Wake
from geoseg.synth.palette import (
    _BIG_HULL_COLOURS,
    _DECK_COLOURS,
    _HULL_COLOURS,
    Colour,
    _jitter,
    _pick,
)
from geoseg.synth.planners.context import _CellCtx


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
