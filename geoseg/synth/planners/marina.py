"""Harbour cells: marinas (piers lined with touching boats) and quays (ships moored alongside).

At a quay, tugs or barges often lie alongside a ship, touching it. Both kinds are planned in
a *shore frame* of the cell: ``p`` runs along the shore and ``q`` towards it (the shore at
``q = _CELL``), on the side of a land (for quays, town) neighbour; :func:`_pq_to_uv` maps it to
cell-local town-frame metres.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.synth.cells import _CELL, _Kind, _Style
from geoseg.synth.palette import _C_PIER, _jitter
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.planners.ships import _add_ship


def _land_side(ctx: _CellCtx, want_town: bool) -> int:
    """Side (0: -u, 1: +u, 2: -v, 3: +v) of a land (or town) neighbour, chosen at random."""
    w, i, j = ctx.w, ctx.i, ctx.j
    nbrs = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
    sides = [
        s
        for s, n in enumerate(nbrs)
        if (w.kind(*n) is _Kind.TOWN if want_town else w.kind(*n) in (_Kind.TOWN, _Kind.RURAL))
    ]
    if not sides:
        return int(ctx.rng.integers(4))
    return int(sides[int(ctx.rng.integers(len(sides)))])


def _pq_to_uv(side: int, p: float, q: float) -> tuple[float, float]:
    """Cell-local (p along the shore, q towards the shore at q = CELL) -> local (u, v)."""
    if side == 0:
        return _CELL - q, p
    if side == 1:
        return q, p
    if side == 2:
        return p, _CELL - q
    return p, q


def _alpha_pq(side: int, along_p: bool) -> float:
    """Town-frame angle of the +p (along_p) or +q axis for a side."""
    q_dir = (math.pi, 0.0, -math.pi / 2, math.pi / 2)[side]
    p_dir = (math.pi / 2, math.pi / 2, 0.0, 0.0)[side]
    return p_dir if along_p else q_dir


def _plan_marina(ctx: _CellCtx) -> None:
    rng = ctx.rng
    side = _land_side(ctx, want_town=False)
    nbrs = [(ctx.i - 1, ctx.j), (ctx.i + 1, ctx.j), (ctx.i, ctx.j - 1), (ctx.i, ctx.j + 1)]
    ext = 0.0 if ctx.w.kind(*nbrs[side]) is _Kind.TOWN else 12.0
    pw = float(rng.uniform(2.0, 3.0))
    lmax = float(rng.uniform(11.0, 20.0))
    fairway = float(rng.uniform(8.0, 16.0))
    spacing = pw + 2 * (lmax + 0.6) + fairway
    p = float(rng.uniform(2.0, 6.0)) + lmax + 0.6
    occ = min(0.98, float(rng.uniform(0.75, 0.97)) * ctx.density)
    q_start = float(rng.uniform(10.0, 35.0))

    def quad(p0: float, q0: float, p1: float, q1: float) -> list[tuple[float, float]]:
        return [_pq_to_uv(side, pp, qq) for pp, qq in ((p0, q0), (p1, q0), (p1, q1), (p0, q1))]

    while p + pw / 2 + lmax + 1.0 <= _CELL:
        ctx.feature(
            quad(p - pw / 2, q_start, p + pw / 2, _CELL + ext), _jitter(rng, _C_PIER, 0.08), 0.12, 2
        )
        for sgn in (-1.0, 1.0):
            q = q_start + float(rng.uniform(0.3, 1.5))
            while True:
                length = float(rng.uniform(7.5, lmax))
                width = max(2.5, length / float(rng.uniform(2.8, 3.6)))
                if q + width > _CELL - 4.0:
                    break
                if rng.random() < occ:
                    gap = float(rng.uniform(0.0, 0.3))
                    pc = p + sgn * (pw / 2 + gap + length / 2)
                    qc = q + width / 2
                    u, v = _pq_to_uv(side, pc, qc)
                    alpha = _alpha_pq(side, along_p=True) + (math.pi if sgn > 0 else 0.0)
                    style = _Style.BOAT if rng.random() < 0.9 else _Style.WORKBOAT
                    _add_ship(ctx, u, v, alpha, length, width, style, moving=False)
                    q += width + float(rng.uniform(0.0, 0.2))
                else:
                    q += float(rng.uniform(2.5, 4.5))
        p += spacing


def _plan_quay(ctx: _CellCtx) -> None:
    rng = ctx.rng
    side = _land_side(ctx, want_town=True)
    alpha_p = _alpha_pq(side, along_p=True)
    p = float(rng.uniform(2.0, 12.0))
    while p < _CELL - 30:
        length = float(min(rng.uniform(35.0, 150.0), _CELL - 3.0 - p))
        if length < 25:
            break
        width = length / float(rng.uniform(5.5, 7.5))
        style = (
            _Style.CARGO
            if length > 60 and rng.random() < 0.55
            else (_Style.TANKER if length > 60 else _Style.WORKBOAT)
        )
        gap = float(rng.uniform(0.0, 0.4))
        qc = _CELL - gap - width / 2
        pc = p + length / 2
        u, v = _pq_to_uv(side, pc, qc)
        heading = alpha_p + (math.pi if rng.random() < 0.5 else 0.0)
        if rng.random() < min(0.95, 0.8 * ctx.density):
            _add_ship(ctx, u, v, heading, length, width, style, moving=False)
            if rng.random() < 0.45:  # a tug or barge alongside, touching
                l2 = float(rng.uniform(14.0, min(40.0, length * 0.7)))
                w2 = l2 / float(rng.uniform(3.0, 4.0))
                q2 = qc - width / 2 - float(rng.uniform(0.0, 0.25)) - w2 / 2
                p2 = pc + float(rng.uniform(-(length - l2) / 2, (length - l2) / 2))
                u2, v2 = _pq_to_uv(side, p2, q2)
                _add_ship(ctx, u2, v2, heading, l2, w2, _Style.WORKBOAT, moving=False)
        p += length + float(rng.uniform(3.0, 20.0))
    # a few boats further out
    for _ in range(int(rng.poisson(0.8 * ctx.density))):
        length = float(np.clip(rng.normal(14, 4), 8, 25))
        width = length / 3.3
        pc = float(rng.uniform(length, _CELL - length))
        qc = float(rng.uniform(length, 60.0))
        u, v = _pq_to_uv(side, pc, qc)
        _add_ship(
            ctx,
            u,
            v,
            float(rng.uniform(0, 2 * math.pi)),
            length,
            width,
            _Style.BOAT,
            moving=rng.random() < 0.5,
        )
