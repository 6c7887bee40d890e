"""Town cells: roads with traffic, and lots of buildings, parking, parks or container yards.

A town cell owns a half-road lane of ``_HALF_ROAD`` metres along each of its edges (so two
neighbouring town cells make one two-lane road), a sidewalk inside that, and between one and
four lots inside the sidewalk, each planned as one kind of lot (see
:class:`~geoseg.synth.layouts._LotWeights`). Cell-local town-frame metres throughout.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.synth.cells import _CELL, _HALF_ROAD, _SIDEWALK, _Kind, _Rect, _Style
from geoseg.synth.palette import (
    _C_LAWN,
    _C_MARKING,
    _C_PARKING,
    _C_PAVED,
    _C_QUAY,
    _C_STALL,
    _CONTAINER_COLOURS,
    _jitter,
    _pick,
)
from geoseg.synth.planners.buildings import _plan_building_lot
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.nature import _add_trees
from geoseg.synth.planners.vehicles import _add_vehicle, _vehicle_dims


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
    lots: list[_Rect] = []
    pattern = rng.random()
    mid_u = float(rng.uniform(0.4, 0.6)) * (a1 - a0) + a0
    mid_v = float(rng.uniform(0.4, 0.6)) * (a1 - a0) + a0
    gap = 1.5
    if pattern < 0.15:
        lots = [_Rect(a0, a0, a1, a1)]
    elif pattern < 0.45:
        if rng.random() < 0.5:
            lots = [_Rect(a0, a0, mid_u - gap, a1), _Rect(mid_u + gap, a0, a1, a1)]
        else:
            lots = [_Rect(a0, a0, a1, mid_v - gap), _Rect(a0, mid_v + gap, a1, a1)]
    elif pattern < 0.7:
        lots = [
            _Rect(a0, a0, mid_u - gap, a1),
            _Rect(mid_u + gap, a0, a1, mid_v - gap),
            _Rect(mid_u + gap, mid_v + gap, a1, a1),
        ]
    else:
        lots = [
            _Rect(a0, a0, mid_u - gap, mid_v - gap),
            _Rect(mid_u + gap, a0, a1, mid_v - gap),
            _Rect(a0, mid_v + gap, mid_u - gap, a1),
            _Rect(mid_u + gap, mid_v + gap, a1, a1),
        ]
    weights = w.params.lot_weights
    if weights.containers > 0:
        near_quay = any(
            w.kind(*n) is _Kind.QUAY for n in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
        )
        if not near_quay:
            weights = weights._replace(containers=0.0)
    wsum = sum(weights)
    for lot in lots:
        # an index into the fields of _LotWeights: buildings, parking, park, containers
        kind = int(rng.choice(4, p=np.array(weights) / wsum))
        if kind == 0:
            _plan_building_lot(ctx, lot)
        elif kind == 1:
            _plan_parking_lot(ctx, lot)
        elif kind == 2:
            _plan_park(ctx, lot)
        else:
            _plan_container_yard(ctx, lot)


def _plan_parking_lot(ctx: _CellCtx, lot: _Rect) -> None:
    rng = ctx.rng
    u0, v0, u1, v1 = lot
    rows_along_u = rng.random() < 0.5
    # at most a few double rows; the rest of the lot gets buildings
    depth, aisle = 5.5, float(rng.uniform(6.0, 7.5))
    keep = int(rng.integers(1, 4)) * (2 * depth + aisle) + 2.0 - aisle + 1.0
    if rows_along_u and v1 - v0 > keep + 20.0:
        _plan_building_lot(ctx, _Rect(u0, v0 + keep + 3.0, u1, v1))
        v1 = v0 + keep
    elif not rows_along_u and u1 - u0 > keep + 20.0:
        _plan_building_lot(ctx, _Rect(u0 + keep + 3.0, v0, u1, v1))
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


def _plan_park(ctx: _CellCtx, lot: _Rect) -> None:
    u0, v0, u1, v1 = lot
    ctx.box_feature(u0, v0, u1, v1, _jitter(ctx.rng, _C_LAWN, 0.06), 0.12, 0)
    # a footpath across the park
    if ctx.rng.random() < 0.6:
        m = float(ctx.rng.uniform(u0 + 5, max(u0 + 6, u1 - 5)))
        ctx.box_feature(m - 1.2, v0, m + 1.2, v1, _C_PAVED, 0.08, 1)
    _add_trees(ctx, lot, 0.006)


def _plan_container_yard(ctx: _CellCtx, lot: _Rect) -> None:
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
