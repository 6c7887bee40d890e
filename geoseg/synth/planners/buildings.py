"""Buildings: rectilinear footprints (rectangles, L, U, courtyards) on parcels of a lot.

Footprints are drawn in a parcel frame (origin at a parcel corner, metres), mirrored at random
and placed in cell-local town-frame metres; flat roofs get rooftop units, every building casts
the shadows of its convex parts. Rural cells reuse :func:`_add_building` for farm buildings.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from geoseg.synth.cells import _Rect, _RoofUnit, _Style
from geoseg.synth.palette import _C_LAWN, _C_PAVED, _ROOF_COLOURS, _jitter, _pick
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.nature import _add_trees


class _Footprint(NamedTuple):
    """A rectilinear building footprint in its parcel frame (origin at a corner, metres)."""

    shell: list[tuple[float, float]]
    hole: list[tuple[float, float]] | None  # the courtyard, if any
    parts: list[_Rect]  # convex (rectangular) parts covering the footprint, for shadows
    shape: str  # "courtyard", "L", "U" or "rect"


def _building_shape(rng: np.random.Generator, bw: float, bh: float) -> _Footprint:
    """Footprint of a rectilinear building of ``bw x bh`` metres, in its parcel frame."""
    r = rng.random()
    if r < 0.14 and bw >= 30 and bh >= 30:
        t = float(rng.uniform(8.0, min(14.0, (min(bw, bh) - 8.0) / 2.0)))
        shell = [(0.0, 0.0), (bw, 0.0), (bw, bh), (0.0, bh)]
        hole = [(t, t), (t, bh - t), (bw - t, bh - t), (bw - t, t)]
        parts = [
            _Rect(0, 0, bw, t),
            _Rect(0, bh - t, bw, bh),
            _Rect(0, t, t, bh - t),
            _Rect(bw - t, t, bw, bh - t),
        ]
        return _Footprint(shell, hole, parts, "courtyard")
    if r < 0.34 and bw >= 14 and bh >= 14:
        cw = float(rng.uniform(0.35, 0.6)) * bw
        ch = float(rng.uniform(0.35, 0.6)) * bh
        shell = [(0.0, 0.0), (bw, 0.0), (bw, bh - ch), (bw - cw, bh - ch), (bw - cw, bh), (0.0, bh)]
        parts = [_Rect(0, 0, bw, bh - ch), _Rect(0, bh - ch, bw - cw, bh)]
        return _Footprint(shell, None, parts, "L")
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
        parts = [_Rect(0, 0, bw, bh - nd), _Rect(0, bh - nd, xa, bh), _Rect(xb, bh - nd, bw, bh)]
        return _Footprint(shell, None, parts, "U")
    shell = [(0.0, 0.0), (bw, 0.0), (bw, bh), (0.0, bh)]
    return _Footprint(shell, None, [_Rect(0, 0, bw, bh)], "rect")


def _split_parcels(rng: np.random.Generator, rect: _Rect, depth: int = 0) -> list[_Rect]:
    """Split a lot in two across its longer side (at 35-65 %), recursively, into parcels.

    A rectangle is kept whole once its longer side is below a random 22-70 metre target, or
    after seven levels of splitting.
    """
    u0, v0, u1, v1 = rect
    wu, wv = u1 - u0, v1 - v0
    target = float(rng.uniform(22.0, 70.0))
    if depth > 6 or (max(wu, wv) < target and max(wu, wv) < 86.0):
        return [rect]
    if wu >= wv:
        m = u0 + float(rng.uniform(0.35, 0.65)) * wu
        return _split_parcels(rng, _Rect(u0, v0, m, v1), depth + 1) + _split_parcels(
            rng, _Rect(m, v0, u1, v1), depth + 1
        )
    m = v0 + float(rng.uniform(0.35, 0.65)) * wv
    return _split_parcels(rng, _Rect(u0, v0, u1, m), depth + 1) + _split_parcels(
        rng, _Rect(u0, m, u1, v1), depth + 1
    )


def _add_building(ctx: _CellCtx, parcel: _Rect, setback: float) -> bool:
    """Add a building (and its shadows) inside a parcel; whether one was added."""
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
    extras: list[_RoofUnit] = []
    if style is _Style.ROOF_FLAT:
        for _ in range(int(rng.integers(0, 6))):
            su, sv = float(rng.uniform(1.2, 3.5)), float(rng.uniform(1.2, 3.5))
            pu = float(rng.uniform(1.5, max(1.6, bw - su - 1.5)))
            pv = float(rng.uniform(1.5, max(1.6, bh - sv - 1.5)))
            extras.append(
                _RoofUnit(
                    ou + pu, ou + pu + su, ov + pv, ov + pv + sv, float(rng.uniform(0.75, 1.3))
                )
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


def _plan_building_lot(ctx: _CellCtx, lot: _Rect) -> None:
    """Lawn or paving, split into parcels that each get a building or trees."""
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
