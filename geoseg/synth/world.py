"""The world: scene-wide parameters, the frames, cell kinds and lazily planned cells.

:class:`_World` is everything deterministic about a scene beyond its spec: the town grid's
angle and offset, the coastline, the sun, atmosphere and water parameters, each cell's
:class:`~geoseg.synth.cells._Kind` and its plan (made by :mod:`geoseg.synth.planners` and
cached). Frames: *scene pixels* (col, row), *scene metres* (``col * gsd``, ``row * gsd``; y
down) and the *town frame* (scene metres rotated by the grid angle and offset so that cell
``(i, j)`` covers ``[i, i + 1) x [j, j + 1)`` times ``_CELL`` metres). :func:`_collar_polygon`
is the valid footprint of a scene with a nodata collar.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from geoseg.synth.cells import _CELL, _CellPlan, _Kind
from geoseg.synth.layouts import _LAYOUTS
from geoseg.synth.noise import _K_COAST, _K_URBAN, F64, _fbm_points
from geoseg.synth.planners import _PLANNERS
from geoseg.synth.planners.context import _CellCtx
from geoseg.synth.spec import Layout, SceneSpec
from geoseg.types import PixelWindow


class _World:
    """Scene-wide parameters plus lazily planned, cached cells (all deterministic)."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.g = spec.gsd
        self.params = _LAYOUTS[spec.layout]
        rng = np.random.default_rng([spec.seed, 31337, list(Layout).index(spec.layout)])
        self.key = (spec.seed * 1_000_003) & 0xFFFFFFFF
        theta = 0.0 if rng.random() < 0.35 else float(rng.uniform(-0.75, 0.75))
        self.cos_t, self.sin_t = math.cos(theta), math.sin(theta)
        wm, hm = spec.width * self.g, spec.height * self.g
        uc, vc = self._rot(wm / 2.0, hm / 2.0)
        self.u_off = uc - _CELL / 2.0 + float(rng.uniform(-0.15, 0.15)) * _CELL
        self.v_off = vc - _CELL / 2.0 + float(rng.uniform(-0.15, 0.15)) * _CELL
        # coastline: f = (p . n - c) + wiggle; f > 0 is land
        phi = float(rng.uniform(0, 2 * math.pi))
        self.nx, self.ny = math.cos(phi), math.sin(phi)
        proj = [x * self.nx + y * self.ny for x in (0.0, wm) for y in (0.0, hm)]
        dmin, dmax = min(proj), max(proj)
        wf = float(rng.uniform(self.params.water_frac.low, self.params.water_frac.high))
        self.coast_c = dmin + wf * (dmax - dmin)
        extent = max(dmax - dmin, 200.0)
        self.coast_amp = min(0.12 * extent, 400.0)
        self.coast_scale = max(250.0, 0.35 * extent)
        # sun: direction in which shadows fall (scene metres, y down), elevation
        psi = float(rng.uniform(-2.6, -0.55))
        self.shx, self.shy = math.cos(psi), math.sin(psi)
        self.sun_elev = float(rng.uniform(math.radians(38), math.radians(62)))
        self.shadow_per_m = 1.0 / math.tan(self.sun_elev)
        # atmosphere, water
        self.haze_max = float(rng.uniform(0.02, 0.16))
        self.light_amp = float(rng.uniform(0.04, 0.12))
        self.wave_dir = float(rng.uniform(0, 2 * math.pi))
        self.wave_amp = float(rng.uniform(0.008, 0.02))
        self.glint = float(rng.uniform(0.0, 1.0))
        # cell index range covering the scene
        corners = [self._uv(x, y) for x in (0.0, wm) for y in (0.0, hm)]
        self.i_min = math.floor(min(c[0] for c in corners) / _CELL)
        self.i_max = math.floor(max(c[0] for c in corners) / _CELL)
        self.j_min = math.floor(min(c[1] for c in corners) / _CELL)
        self.j_max = math.floor(max(c[1] for c in corners) / _CELL)
        self.n_j = self.j_max - self.j_min + 1
        self.valid = _collar_polygon(spec) if spec.nodata_collar else None
        from shapely import box
        from shapely.prepared import prep

        self.scene_box = box(0.0, 0.0, float(spec.width), float(spec.height))
        self.valid_prepared = prep(self.valid) if self.valid is not None else None
        self._plan = functools.lru_cache(maxsize=256)(self._plan_cell)
        self._kind = functools.lru_cache(maxsize=16384)(self._cell_kind)

    # ---- frames -------------------------------------------------------------------------
    def _rot(self, mx: float, my: float) -> tuple[float, float]:
        return self.cos_t * mx + self.sin_t * my, -self.sin_t * mx + self.cos_t * my

    def _uv(self, mx: float, my: float) -> tuple[float, float]:
        u, v = self._rot(mx, my)
        return u - self.u_off, v - self.v_off

    def uv_to_m(self, u: Any, v: Any) -> tuple[Any, Any]:
        """Town frame -> scene metres (arrays or scalars)."""
        uu = np.asarray(u) + self.u_off
        vv = np.asarray(v) + self.v_off
        return self.cos_t * uu - self.sin_t * vv, self.sin_t * uu + self.cos_t * vv

    def poly_uv(self, pts: Any, holes: Any = None) -> Any:
        """Polygon from town-frame vertices (metres) -> shapely Polygon in scene pixels."""
        from shapely import Polygon

        p = np.asarray(pts, np.float64)
        mx, my = self.uv_to_m(p[:, 0], p[:, 1])
        shell = np.column_stack([mx / self.g, my / self.g])
        rings = None
        if holes is not None:
            rings = []
            for h in holes:
                q = np.asarray(h, np.float64)
                hx, hy = self.uv_to_m(q[:, 0], q[:, 1])
                rings.append(np.column_stack([hx / self.g, hy / self.g]))
        return Polygon(shell, rings)

    # ---- fields at points ---------------------------------------------------------------
    def land_fn(self, mx: Any, my: Any) -> F64:
        """Signed land function at points (scene metres): > 0 land, < 0 water (about metres)."""
        x = np.asarray(mx, np.float64)
        y = np.asarray(my, np.float64)
        wig = _fbm_points(x, y, self.coast_scale, 3, self.key + _K_COAST) * 2.0 - 1.0
        out: F64 = x * self.nx + y * self.ny - self.coast_c + self.coast_amp * wig
        return out

    def cell_centre_m(self, i: int, j: int) -> tuple[float, float]:
        mx, my = self.uv_to_m((i + 0.5) * _CELL, (j + 0.5) * _CELL)
        return float(mx), float(my)

    def _is_land(self, i: int, j: int) -> bool:
        mx, my = self.cell_centre_m(i, j)
        return bool(self.land_fn(mx, my) > 0.0)

    def cell_rng(self, i: int, j: int, salt: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.spec.seed, list(Layout).index(self.spec.layout), i + 2**31, j + 2**31, salt]
        )

    def kind(self, i: int, j: int) -> _Kind:
        return self._kind(i, j)

    def _cell_kind(self, i: int, j: int) -> _Kind:
        mx, my = self.cell_centre_m(i, j)
        f = float(self.land_fn(mx, my))
        if f > 0.0:
            urban = float(_fbm_points(mx, my, 1500.0, 2, self.key + _K_URBAN))
            urban += 0.3 * math.exp(-f / 500.0)
            return _Kind.TOWN if urban > self.params.urban_threshold else _Kind.RURAL
        rng = self.cell_rng(i, j, 1)
        nbrs = [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]
        land = [n for n in nbrs if self._is_land(*n)]
        if not land:
            return _Kind.WATER
        town = [n for n in land if self._cell_kind(*n) is _Kind.TOWN]
        r = rng.random()
        if town and r < self.params.p_quay:
            return _Kind.QUAY
        if r < self.params.p_quay + self.params.p_marina:
            return _Kind.MARINA
        return _Kind.WATER

    def plan(self, i: int, j: int) -> _CellPlan:
        return self._plan(i, j)

    # ---- object acceptance --------------------------------------------------------------
    def accept(self, poly: Any) -> bool:
        """Whether an object polygon lies wholly inside the scene and its valid footprint."""
        x0, y0, x1, y1 = poly.bounds
        if x0 < 0.0 or y0 < 0.0 or x1 > self.spec.width or y1 > self.spec.height:
            return False
        return self.valid_prepared is None or bool(self.valid_prepared.contains(poly))

    def cell_box_px(self, i: int, j: int, pad_m: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned bounds (scene pixels) of a cell, padded by ``pad_m`` metres."""
        us = np.array([i * _CELL - pad_m, (i + 1) * _CELL + pad_m])
        vs = np.array([j * _CELL - pad_m, (j + 1) * _CELL + pad_m])
        uu, vv = np.meshgrid(us, vs)
        mx, my = self.uv_to_m(uu.ravel(), vv.ravel())
        return (
            float(mx.min()) / self.g,
            float(my.min()) / self.g,
            float(mx.max()) / self.g,
            float(my.max()) / self.g,
        )

    def cells_for_window(self, win: PixelWindow, pad_cells: int) -> Iterator[tuple[int, int]]:
        g = self.g
        corners = [
            self._uv(c * g, r * g)
            for c in (win.col_off, win.col_end)
            for r in (win.row_off, win.row_end)
        ]
        i0 = math.floor(min(c[0] for c in corners) / _CELL) - pad_cells
        i1 = math.floor(max(c[0] for c in corners) / _CELL) + pad_cells
        j0 = math.floor(min(c[1] for c in corners) / _CELL) - pad_cells
        j1 = math.floor(max(c[1] for c in corners) / _CELL) + pad_cells
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                yield i, j

    def scene_cells(self) -> Iterator[tuple[int, int]]:
        """Cells whose area meets the scene, in a fixed order."""
        for i in range(self.i_min, self.i_max + 1):
            for j in range(self.j_min, self.j_max + 1):
                x0, y0, x1, y1 = self.cell_box_px(i, j)
                if x1 <= 0 or y1 <= 0 or x0 >= self.spec.width or y0 >= self.spec.height:
                    continue
                yield i, j

    def oid_base(self, i: int, j: int) -> int:
        return ((i - self.i_min + 1) * (self.n_j + 2) + (j - self.j_min + 1)) * 8192

    # ---- planning -----------------------------------------------------------------------
    def _plan_cell(self, i: int, j: int) -> _CellPlan:
        kind = self.kind(i, j)
        plan = _CellPlan()
        ctx = _CellCtx(self, i, j, plan, self.cell_rng(i, j, 2))
        _PLANNERS[kind](ctx)
        return plan


def _collar_polygon(spec: SceneSpec) -> Any:
    """A ragged, rotated valid footprint in scene pixels (about 70-85 % of the scene)."""
    from shapely import Polygon

    rng = np.random.default_rng([spec.seed, 555])
    w, h = float(spec.width), float(spec.height)
    t = rng.uniform(0.08, 0.22, 4)
    corners = [(w * t[0], 0.0), (w, h * t[1]), (w * (1 - t[2]), h), (0.0, h * (1 - t[3]))]
    pts: list[tuple[float, float]] = []
    amp = 0.006 * max(w, h)
    for k in range(4):
        (x0, y0), (x1, y1) = corners[k], corners[(k + 1) % 4]
        n = 24
        nx, ny = -(y1 - y0), x1 - x0
        norm = math.hypot(nx, ny) or 1.0
        for s in range(n):
            f = s / n
            off = 0.0 if s == 0 else float(rng.uniform(-amp, amp))
            pts.append((x0 + f * (x1 - x0) + off * nx / norm, y0 + f * (y1 - y0) + off * ny / norm))
    poly = Polygon(pts).buffer(0)
    return poly.intersection(Polygon([(1, 1), (w - 1, 1), (w - 1, h - 1), (1, h - 1)]))
