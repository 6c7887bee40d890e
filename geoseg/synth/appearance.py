"""What labelled objects look like: per-pixel colours from positions in the object's frame.

Each ``_colour_*`` function takes the ``n`` pixels of one object as coordinates ``a`` (along
its front axis) and ``b`` (across it), in metres from its centre, and returns float32 colours
of shape ``[4, n]`` (red, green, blue, near-infrared) in [0, 1]: windows and cargo boxes of
vehicles, decks, cabins and containers of ships, sun-shaded gable and hip roofs and rooftop
units of buildings (which also take cell-local town-frame ``u, v`` and a rim mask).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from geoseg.synth.cells import _Obj, _Style
from geoseg.synth.noise import F32, F64, _hash2, _u01
from geoseg.synth.palette import _CONTAINER_COLOURS, _GLASS

if TYPE_CHECKING:
    from geoseg.synth.world import _World


def _colour_vehicle(o: _Obj, a: F64, b: F64) -> F32:
    an = a / (o.length / 2.0)
    bn = np.abs(b) / (o.width / 2.0)
    body = np.asarray(o.colours[0], np.float32)
    col = np.repeat(body[:, None], a.size, axis=1)
    if o.style is _Style.TRUCK:
        box = np.asarray(o.colours[1], np.float32)
        cargo = an < 0.52
        col[:, cargo] = box[:, None]
        col[:, (an >= 0.52) & (an < 0.58)] = np.asarray(_GLASS, np.float32)[:, None] * 2.0
        glass = (an > 0.80) & (an < 0.92)
        col[:, glass] = np.asarray(_GLASS, np.float32)[:, None]
        ribs = cargo & (np.mod(a, 1.2) < 0.25)
        col[:, ribs] *= np.float32(0.92)
    else:
        glass_c = np.asarray(_GLASS, np.float32)[:, None]
        if o.style is _Style.VAN:
            front = (an > 0.56) & (an < 0.74) & (bn < 0.8)
            col[:, front] = 0.35 * col[:, front] + 0.65 * glass_c
            col[:, (an > -0.93) & (an < 0.56)] *= np.float32(1.05)
        else:
            front = (an > 0.18) & (an < 0.38) & (bn < 0.8)
            rear = (an > -0.70) & (an < -0.58) & (bn < 0.8)
            col[:, front] = 0.45 * col[:, front] + 0.55 * glass_c
            col[:, rear] = 0.6 * col[:, rear] + 0.4 * glass_c
            col[:, (an >= -0.58) & (an <= 0.18)] *= np.float32(1.05)
    col[:, bn > 0.88] *= np.float32(0.88)
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _colour_ship(o: _Obj, a: F64, b: F64) -> F32:
    hull = np.asarray(o.colours[0], np.float32)
    deck = np.asarray(o.colours[1], np.float32)
    cabin = np.asarray(o.colours[2], np.float32)
    an = a / (o.length / 2.0)
    bn = np.abs(b) / (o.width / 2.0)
    rim = 0.22 if o.length < 40 else 0.12
    col = np.repeat(deck[:, None], a.size, axis=1)
    # taper: the hull's half width shrinks towards the bow, keep a rim all around
    half = np.where(an > 0.5, np.clip((1.0 - an) / 0.5, 0.05, 1.0), 1.0)
    is_rim = (bn > half * (1.0 - rim)) | (an < -1.0 + rim * o.width / o.length)
    if o.style in (_Style.CARGO, _Style.TANKER):
        mid = (an > -0.62) & (an < 0.72) & ~is_rim
        if o.style is _Style.CARGO:
            ia = np.floor(a / 6.2).astype(np.int64)
            ib = np.floor(b / 2.5).astype(np.int64)
            pick = (_u01(_hash2(ia, ib, o.oid)) * len(_CONTAINER_COLOURS)).astype(np.int64)
            pal = np.asarray(_CONTAINER_COLOURS, np.float32).T
            filled = _u01(_hash2(ia, ib, o.oid + 1)) < 0.85
            sel = mid & filled
            col[:, sel] = pal[:, pick[sel]]
        else:
            pipe = mid & (bn < 0.08)
            col[:, pipe] = np.float32(0.7)
        bridge = (an > -0.86) & (an < -0.66) & (bn < 0.85)
        col[:, bridge] = cabin[:, None]
    elif o.style is _Style.WORKBOAT:
        house = (an > -0.1) & (an < 0.35) & (bn < 0.62)
        col[:, house] = cabin[:, None]
        col[:, house & (an > 0.28)] = np.asarray(_GLASS, np.float32)[:, None]
    else:
        house = (an > -0.35) & (an < 0.25) & (bn < 0.58)
        col[:, house] = cabin[:, None]
        screen = house & (an > 0.15)
        col[:, screen] = np.asarray(_GLASS, np.float32)[:, None] * 1.5
        cockpit = (an > -0.8) & (an <= -0.35) & (bn < 0.55)
        col[:, cockpit] *= np.float32(0.8)
    col[:, is_rim] = hull[:, None]
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _colour_building(
    o: _Obj, w: _World, a: F64, b: F64, u: F64, v: F64, rim: npt.NDArray[np.bool_]
) -> F32:
    roof = np.asarray(o.colours[0], np.float32)
    col = np.repeat(roof[:, None], a.size, axis=1)
    # sun direction in the building frame (towards the sun = minus shadow direction)
    sa, sb = _sun_in_frame(w, o.alpha)
    k = np.float32(0.22)
    if o.style in (_Style.ROOF_GABLE, _Style.ROOF_HIP):
        half_l, half_w = o.length / 2.0, o.width / 2.0
        shade = np.where(b >= 0, sb, -sb).astype(np.float32)
        if o.style is _Style.ROOF_HIP:
            end = (half_l - np.abs(a)) < (half_w - np.abs(b))
            shade = np.where(end, np.where(a >= 0, sa, -sa), shade).astype(np.float32)
        col *= 1.0 + k * shade
        ridge = np.abs(b) < 0.25
        if o.style is _Style.ROOF_HIP:
            ridge &= np.abs(a) < half_l - half_w
        col[:, ridge] *= np.float32(1.12)
    else:
        for unit in o.extras:
            inside = (u >= unit.u0) & (u < unit.u1) & (v >= unit.v0) & (v < unit.v1)
            col[:, inside] *= np.float32(unit.brightness)
        col[:, rim] *= np.float32(0.8)
    np.clip(col, 0.0, 1.0, out=col)
    return col


def _sun_in_frame(w: _World, alpha: float) -> tuple[float, float]:
    # the shadow direction in the town frame, negated (towards the sun)
    su, sv = w._rot(-w.shx, -w.shy)
    ca, sa = math.cos(alpha), math.sin(alpha)
    return su * ca + sv * sa, -su * sa + sv * ca
