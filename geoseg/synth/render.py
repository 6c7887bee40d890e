"""Rendering: rasterising a window of the world into float bands and object ids.

:func:`render_window` renders one window of *scene pixels* (plus a halo of ``_HALO`` pixels, so
that blur and rims are seamless across blocks): the ground from noise fields of global
coordinates (land cover, beaches, water with waves and glint, town lanes and sidewalks), the
plans of the cells around it (background features, shadows, wakes, labelled objects), then
illumination, haze, sensor blur and noise. Labelled objects are drawn by rasterising their
label polygons (pixel-centre rule), so the drawn footprints are the labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.synth.appearance import _colour_building, _colour_ship, _colour_vehicle
from geoseg.synth.cells import _CELL, _HALF_ROAD, _SIDEWALK, _Feat, _Kind, _Obj, _Shadow, _Wake
from geoseg.synth.noise import (
    _K_COAST,
    _K_FINE,
    _K_HAZE,
    _K_LIGHT,
    _K_MID,
    _K_PIX,
    _K_VEG,
    _K_WAVE,
    F32,
    _fbm_grid,
    _hash2,
    _u01,
)
from geoseg.synth.palette import (
    _C_DEEP,
    _C_DRY,
    _C_FOAM,
    _C_FOREST,
    _C_GRASS,
    _C_HARBOUR_WATER,
    _C_HAZE,
    _C_LAWN,
    _C_PAVED,
    _C_ROAD,
    _C_SAND,
    _C_SHALLOW,
    _C_SIDEWALK,
    _C_SOIL,
)
from geoseg.synth.spec import SceneSpec
from geoseg.synth.world import _World
from geoseg.types import PixelWindow

I64 = npt.NDArray[np.int64]

_HALO = 3  # pixels rendered around each block so that blur and rims are seamless


def _rasterize(
    shapes: list[tuple[Any, int]], win: PixelWindow, dtype: str = "int32"
) -> npt.NDArray[Any]:
    from rasterio import features

    out_shape = (win.height, win.width)
    if not shapes:
        return np.zeros(out_shape, dtype)
    return features.rasterize(
        shapes,
        out_shape=out_shape,
        transform=Affine.translation(win.col_off, win.row_off),
        fill=0,
        dtype=dtype,
    )


def _expand(win: PixelWindow, halo: int) -> PixelWindow:
    return PixelWindow(
        win.col_off - halo, win.row_off - halo, win.width + 2 * halo, win.height + 2 * halo
    )


def _intersects(bounds: tuple[float, ...], win: PixelWindow) -> bool:
    x0, y0, x1, y1 = bounds
    return x1 > win.col_off and x0 < win.col_end and y1 > win.row_off and y0 < win.row_end


def _gather(
    w: _World, win: PixelWindow, pad_cells: int
) -> tuple[list[_Obj], list[_Feat], list[_Shadow], list[_Wake]]:
    objs: list[_Obj] = []
    feats: list[_Feat] = []
    shadows: list[_Shadow] = []
    wakes: list[_Wake] = []
    for i, j in w.cells_for_window(win, pad_cells):
        plan = w.plan(i, j)
        objs.extend(o for o in plan.objects if _intersects(o.bounds, win))
        feats.extend(f for f in plan.features if _intersects(f.bounds, win))
        shadows.extend(s for s in plan.shadows if _intersects(s.bounds, win))
        wakes.extend(plan.wakes)
    return objs, feats, shadows, wakes


def _object_id_raster(w: _World, win: PixelWindow) -> tuple[npt.NDArray[np.int32], list[_Obj]]:
    """Local index raster (1-based into the returned list; 0 = no object) over ``win``."""
    objs, _, _, _ = _gather(w, win, 1)
    order = {"building": 0, "vehicle": 1, "ship": 2}
    objs.sort(key=lambda o: (order[o.cls], o.oid))
    ids = _rasterize([(o.gj, k + 1) for k, o in enumerate(objs)], win)
    return ids, objs


def render_object_ids(spec: SceneSpec, *, window: PixelWindow | None = None) -> I64:
    """The object-id raster that the scene's pixels were drawn with.

    Args:
        spec: the scene (e.g. ``SynthScene.spec``).
        window: part of the scene, in scene pixels (default: the whole scene; keep it small for
            big scenes).

    Returns:
        int64 ``[window.height, window.width]``: the ``object_id`` of the labelled object
        drawn at each pixel, 0 where none is.
    """
    w = _World(spec)
    win = window or PixelWindow(0, 0, spec.width, spec.height)
    ids, objs = _object_id_raster(w, win)
    lut = np.zeros(len(objs) + 1, np.int64)
    lut[1:] = [o.oid for o in objs]
    out: I64 = lut[ids]
    return out


def render_window(spec: SceneSpec, window: PixelWindow, *, world: Any = None) -> tuple[F32, I64]:
    """Render one window of the scene before quantisation.

    Args:
        spec: the scene.
        window: the window in scene pixels (inside the scene).
        world: internal cache of scene planning (pass ``None``).

    Returns:
        ``(image, ids)``: float32 ``[4, h, w]`` reflectance-like values in [0, 1] for the bands
        red, green, blue, near-infrared, and int64 ``[h, w]`` object ids (0 = none), both for
        the window in scene pixels. Pixels outside the valid footprint are not masked here.
    """
    w: _World = world if world is not None else _World(spec)
    H = _HALO
    E = _expand(window, H)
    g = w.g
    key = w.key
    xs = (np.arange(E.col_off, E.col_end, dtype=np.float64) + 0.5) * g
    ys = (np.arange(E.row_off, E.row_end, dtype=np.float64) + 0.5) * g
    u = w.cos_t * xs[None, :] + w.sin_t * ys[:, None] - w.u_off
    v = -w.sin_t * xs[None, :] + w.cos_t * ys[:, None] - w.v_off
    ci = np.floor(u / _CELL).astype(np.int64)
    cj = np.floor(v / _CELL).astype(np.int64)
    i0, j0 = int(ci.min()), int(cj.min())
    table = np.array(
        [
            [int(w.kind(i, j)) for j in range(j0, int(cj.max()) + 1)]
            for i in range(i0, int(ci.max()) + 1)
        ],
        np.int8,
    )
    kind = table[ci - i0, cj - j0]
    lu = (u - ci * _CELL).astype(np.float32)
    lv = (v - cj * _CELL).astype(np.float32)
    del u, v, ci, cj
    # ---- fields
    f = (xs[None, :] * w.nx + ys[:, None] * w.ny - w.coast_c).astype(np.float32)
    f += np.float32(w.coast_amp) * (_fbm_grid(xs, ys, w.coast_scale, 3, key + _K_COAST) * 2.0 - 1.0)
    fine = _fbm_grid(xs, ys, 2.5, 3, key + _K_FINE)
    mid = _fbm_grid(xs, ys, 20.0, 3, key + _K_MID)
    veg = _fbm_grid(xs, ys, 140.0, 4, key + _K_VEG)
    forced_water = (kind == _Kind.MARINA) | (kind == _Kind.QUAY)
    town = kind == _Kind.TOWN
    land = town | (~forced_water & (f > 0))
    img = np.empty((4, E.height, E.width), np.float32)
    # ---- natural land: soil -> dry grass -> grass -> forest by the vegetation field
    t = np.clip((veg - 0.30) / 0.40, 0.0, 1.0)
    vv = veg + 0.25 * (mid - 0.5)
    for c in range(4):
        base = _C_SOIL[c] + (_C_GRASS[c] - _C_SOIL[c]) * t
        base = np.where(vv > 0.62, _C_FOREST[c] * (0.8 + 0.5 * fine), base)
        base = np.where(vv < 0.36, _C_DRY[c] + (_C_SOIL[c] - _C_DRY[c]) * mid, base)
        img[c] = base
    beach = ~town & ~forced_water & (f > 0) & (f < 6.0 + 4.0 * mid)
    for c in range(4):
        img[c][beach] = _C_SAND[c]
    tex = 1.0 + 0.22 * (fine - 0.5) + 0.25 * (mid - 0.5)
    img *= tex
    # ---- water with waves and glint
    water = ~land
    if water.any():
        depth = np.clip(-f / 25.0, 0.0, 1.0)
        ca, sa = math.cos(w.wave_dir), math.sin(w.wave_dir)
        ph = (xs[None, :] * ca + ys[:, None] * sa).astype(np.float32)
        ph2 = (
            xs[None, :] * math.cos(w.wave_dir + 0.5) + ys[:, None] * math.sin(w.wave_dir + 0.5)
        ).astype(np.float32)
        wave = np.sin(ph * np.float32(2 * math.pi / 9.0) + 6.0 * mid) + 0.6 * np.sin(
            ph2 * np.float32(2 * math.pi / 5.5) + 4.0 * fine
        )
        calm = np.where(forced_water, np.float32(0.4), np.float32(1.0))
        wave *= np.float32(w.wave_amp) * calm * (0.6 + 0.8 * veg)
        glint_field = np.float32(w.glint) * np.clip(
            _fbm_grid(xs, ys, 600.0, 2, key + _K_WAVE) * 2.2 - 0.8, 0.0, 1.0
        )
        pix = _u01(
            _hash2(
                np.arange(E.col_off, E.col_end)[None, :],
                np.arange(E.row_off, E.row_end)[:, None],
                key + _K_WAVE,
            )
        ).astype(np.float32)
        sparkle = (pix < 0.02 * glint_field) & (wave > 0)
        for c in range(4):
            deep = np.where(forced_water, _C_HARBOUR_WATER[c], _C_DEEP[c])
            wc = _C_SHALLOW[c] + (deep - _C_SHALLOW[c]) * depth
            wc = wc * (1.0 + 0.15 * (mid - 0.5)) + wave * (1.0 if c < 3 else 0.2)
            wc = np.where(sparkle, wc + (0.75 if c < 3 else 0.1) * glint_field, wc)
            img[c] = np.where(water, wc, img[c])
        del ph, ph2, wave, pix, sparkle, depth
    # ---- town ground: lanes, sidewalks, lawns
    if town.any():
        edge = np.minimum(np.minimum(lu, _CELL - lu), np.minimum(lv, _CELL - lv))
        road = town & (edge < _HALF_ROAD)
        walk = town & ~road & (edge < _HALF_ROAD + _SIDEWALK)
        rest = town & ~road & ~walk
        for c in range(4):
            img[c][road] = _C_ROAD[c] * (1.0 + 0.10 * (fine[road] - 0.5) + 0.06 * (mid[road] - 0.5))
            img[c][walk] = _C_SIDEWALK[c] * (1.0 + 0.08 * (fine[walk] - 0.5))
            img[c][rest] = (_C_LAWN[c] * 0.7 + _C_PAVED[c] * 0.3) * (1.0 + 0.2 * (mid[rest] - 0.5))
        del edge, road, walk, rest
    del lu, lv, kind
    # ---- background features and shadows
    objs, feats, shadows, wakes = _gather(w, E, 1)
    lower = [ft for ft in feats if ft.layer < 3]
    upper = [ft for ft in feats if ft.layer >= 3]
    lower.sort(key=lambda ft: ft.layer)
    _paint_features(img, lower, E, fine, mid)
    if lower:
        water &= _rasterize([(ft.gj, 1) for ft in lower if ft.layer == 2], E, "uint8") == 0
    if shadows:
        dark = np.array([1.0] + [s.darkening for s in shadows], np.float32)
        sidx = _rasterize([(s.gj, k + 1) for k, s in enumerate(shadows)], E)
        m = sidx > 0
        tint = np.array([1.0, 1.02, 1.12, 0.85], np.float32)
        for c in range(4):
            img[c][m] *= np.minimum(dark[sidx[m]] * tint[c], 1.0)
    _paint_features(img, upper, E, fine, mid)
    # ---- wakes (on water only)
    for wk in wakes:
        _paint_wake(img, wk, E, g, water, fine)
    # ---- labelled objects
    order = {"building": 0, "vehicle": 1, "ship": 2}
    objs.sort(key=lambda o: (order[o.cls], o.oid))
    ids = _rasterize([(o.gj, k + 1) for k, o in enumerate(objs)], E)
    if objs:
        from scipy import ndimage

        for k, o in enumerate(objs):
            x0, y0, x1, y1 = o.bounds
            c0 = max(math.floor(x0) - E.col_off, 0)
            r0 = max(math.floor(y0) - E.row_off, 0)
            c1 = min(math.ceil(x1) - E.col_off + 1, E.width)
            r1 = min(math.ceil(y1) - E.row_off + 1, E.height)
            if c1 <= c0 or r1 <= r0:
                continue
            sub = ids[r0:r1, c0:c1] == k + 1
            if not sub.any():
                continue
            rr, cc = np.nonzero(sub)
            px = (cc + c0 + E.col_off + 0.5) * g
            py = (rr + r0 + E.row_off + 0.5) * g
            pu = w.cos_t * px + w.sin_t * py - w.u_off
            pv = -w.sin_t * px + w.cos_t * py - w.v_off
            ca, sa = math.cos(o.alpha), math.sin(o.alpha)
            du, dv = pu - o.cu, pv - o.cv
            a = du * ca + dv * sa
            b = -du * sa + dv * ca
            if o.cls == "vehicle":
                col = _colour_vehicle(o, a, b)
            elif o.cls == "ship":
                col = _colour_ship(o, a, b)
            else:
                er = ndimage.binary_erosion(sub, iterations=1, border_value=1)
                rim = (sub & ~er)[rr, cc]
                ucell = pu - math.floor(o.cu / _CELL) * _CELL
                vcell = pv - math.floor(o.cv / _CELL) * _CELL
                col = _colour_building(o, w, a, b, ucell, vcell, rim)
            col *= 1.0 + 0.06 * (fine[rr + r0, cc + c0] - 0.5)
            img[:, rr + r0, cc + c0] = col
    # ---- illumination, haze, sensor blur and noise
    light = 1.0 + np.float32(w.light_amp) * (
        _fbm_grid(xs, ys, 2500.0, 2, key + _K_LIGHT) * 2.0 - 1.0
    )
    haze = np.float32(w.haze_max) * _fbm_grid(xs, ys, 1800.0, 2, key + _K_HAZE)
    from scipy import ndimage

    pixh = _hash2(
        np.arange(E.col_off, E.col_end)[None, :],
        np.arange(E.row_off, E.row_end)[:, None],
        key + _K_PIX,
    )
    for c in range(4):
        band = img[c] * light
        band += (_C_HAZE[c] * (0.4 if c == 3 else 1.0) - band) * haze
        band = ndimage.gaussian_filter(band, 0.55, truncate=3.0)
        nz = ((pixh >> np.uint64(16 * c)) & np.uint64(0xFFFF)).astype(np.float32) * np.float32(
            1.0 / 65535.0
        )
        band += np.float32(0.012) * (nz - 0.5)
        img[c] = band
    np.clip(img, 0.0, 1.0, out=img)
    core = (slice(None), slice(H, H + window.height), slice(H, H + window.width))
    lut = np.zeros(len(objs) + 1, np.int64)
    lut[1:] = [o.oid for o in objs]
    out_ids: I64 = lut[ids[H : H + window.height, H : H + window.width]]
    out_img: F32 = np.ascontiguousarray(img[core])
    return out_img, out_ids


def _paint_features(img: F32, feats: list[_Feat], E: PixelWindow, fine: F32, mid: F32) -> None:
    if not feats:
        return
    idx = _rasterize([(ft.gj, k + 1) for k, ft in enumerate(feats)], E)
    m = idx > 0
    if not m.any():
        return
    lut = np.zeros((len(feats) + 1, 4), np.float32)
    lut[1:] = [ft.colour for ft in feats]
    amp = np.zeros(len(feats) + 1, np.float32)
    amp[1:] = [ft.texture for ft in feats]
    k = idx[m]
    t = 1.0 + amp[k] * ((fine[m] - 0.5) + 0.6 * (mid[m] - 0.5))
    for c in range(4):
        img[c][m] = lut[k, c] * t


def _paint_wake(
    img: F32, wk: _Wake, E: PixelWindow, g: float, water: npt.NDArray[np.bool_], fine: F32
) -> None:
    reach = min(3.0 * wk.length, 220.0)
    # bounding box of the wake in scene pixels
    ex = [wk.sx, wk.sx - wk.dx * reach]
    ey = [wk.sy, wk.sy - wk.dy * reach]
    spread = reach * 0.4 + wk.width
    x0 = (min(ex) - spread) / g
    x1 = (max(ex) + spread) / g
    y0 = (min(ey) - spread) / g
    y1 = (max(ey) + spread) / g
    c0 = max(math.floor(x0) - E.col_off, 0)
    c1 = min(math.ceil(x1) - E.col_off, E.width)
    r0 = max(math.floor(y0) - E.row_off, 0)
    r1 = min(math.ceil(y1) - E.row_off, E.height)
    if c1 <= c0 or r1 <= r0:
        return
    px = (np.arange(c0, c1) + E.col_off + 0.5) * g
    py = (np.arange(r0, r1) + E.row_off + 0.5) * g
    rx = px[None, :] - wk.sx
    ry = py[:, None] - wk.sy
    a = -(rx * wk.dx + ry * wk.dy)  # metres behind the stern
    b = np.abs(-rx * wk.dy + ry * wk.dx)
    behind = a > -wk.width * 0.3
    ap = np.maximum(a, 0.0)
    trail = np.exp(-ap / (0.7 * wk.length)) * np.exp(-((b / (0.45 * wk.width + 0.06 * ap)) ** 2))
    arm_d = b - ap * 0.354  # Kelvin half-angle 19.5 degrees
    arms = (
        0.45
        * np.exp(-((arm_d / (0.25 * wk.width + 0.02 * ap)) ** 2))
        * np.exp(-ap / (1.4 * wk.length))
    )
    foam = (wk.strength * np.where(behind, trail + arms, 0.0)).astype(np.float32)
    foam *= 0.7 + 0.6 * fine[r0:r1, c0:c1]
    foam = np.minimum(foam, 0.95) * water[r0:r1, c0:c1]
    for c in range(4):
        sub = img[c, r0:r1, c0:c1]
        sub += (_C_FOAM[c] - sub) * foam
