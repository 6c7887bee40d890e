"""The planning context of one cell: its frame, RNG and plan, and how things are added to it.

Planners work in *cell-local* town-frame metres (``(0, 0)`` to ``(_CELL, _CELL)``);
:class:`_CellCtx` converts to absolute town-frame metres and on to scene pixels, numbers the
objects (ids unique per scene, stable per cell) and records features and shadows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.synth.cells import _CELL, _CellPlan, _Feat, _geojson, _Obj, _RoofUnit, _Shadow, _Style
from geoseg.synth.noise import F64
from geoseg.synth.palette import Colour

if TYPE_CHECKING:
    from geoseg.synth.world import _World


class _CellCtx:
    """Helper bound to one cell while it is planned (local town-frame coordinates in metres)."""

    def __init__(
        self, w: _World, i: int, j: int, plan: _CellPlan, rng: np.random.Generator
    ) -> None:
        self.w = w
        self.i = i
        self.j = j
        self.plan = plan
        self.rng = rng
        self.u0 = i * _CELL
        self.v0 = j * _CELL
        self.next_id = w.oid_base(i, j) + 1
        self.density = w.spec.density

    def rect_pts(self, cu: float, cv: float, length: float, width: float, alpha: float) -> Any:
        """Corners (town frame, absolute) of a rectangle centred at local (cu, cv)."""
        ca, sa = math.cos(alpha), math.sin(alpha)
        hl, hw = length / 2.0, width / 2.0
        cu += self.u0
        cv += self.v0
        return [
            (cu + ca * a - sa * b, cv + sa * a + ca * b)
            for a, b in ((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw))
        ]

    def local_pts(self, pts: Any) -> Any:
        return [(self.u0 + u, self.v0 + v) for u, v in pts]

    def feature(self, pts: Any, colour: Colour, texture: float, layer: int) -> Any:
        poly = self.w.poly_uv(self.local_pts(pts))
        self.plan.features.append(_Feat(poly, colour, texture, layer))
        return poly

    def box_feature(
        self, u0: float, v0: float, u1: float, v1: float, colour: Colour, texture: float, layer: int
    ) -> Any:
        return self.feature([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], colour, texture, layer)

    def shadow(self, poly: Any, height_m: float, darkening: float) -> None:
        """Shadow of a convex footprint ``poly`` (scene px) raised ``height_m`` metres."""
        import shapely

        d = height_m * self.w.shadow_per_m / self.w.g
        dx, dy = self.w.shx * d, self.w.shy * d
        pts = np.asarray(poly.exterior.coords)
        allp = np.vstack([pts, pts + np.array([dx, dy])])
        hull = shapely.MultiPoint(allp).convex_hull
        shadow = _Shadow(gj=_geojson(hull), darkening=darkening, bounds=tuple(hull.bounds))
        self.plan.shadows.append(shadow)

    def add_object(
        self,
        cls: str,
        style: _Style,
        pts: Any,
        cu: float,
        cv: float,
        alpha: float,
        length: float,
        width: float,
        colours: tuple[Colour, ...],
        *,
        holes: Any = None,
        extras: tuple[_RoofUnit, ...] = (),
        moving: bool = False,
    ) -> _Obj | None:
        """Register an object (town-frame absolute vertices).

        Returns ``None`` (nothing drawn, no label) when the object is narrower than one pixel
        at the scene's GSD or does not lie wholly inside the scene and its valid footprint.
        """
        oid = self.next_id
        self.next_id += 1
        if width < self.w.g:
            return None
        poly = self.w.poly_uv(pts, holes)
        if not self.w.accept(poly):
            return None
        obj = _Obj(
            oid=oid,
            cls=cls,
            style=style,
            poly=poly,
            cu=cu + self.u0,
            cv=cv + self.v0,
            alpha=alpha,
            length=length,
            width=width,
            colours=colours,
            extras=extras,
            moving=moving,
        )
        self.plan.objects.append(obj)
        return obj

    def land_at_local(self, pts: Any) -> F64:
        p = np.asarray(pts, np.float64)
        mx, my = self.w.uv_to_m(p[:, 0] + self.u0, p[:, 1] + self.v0)
        return self.w.land_fn(mx, my)
