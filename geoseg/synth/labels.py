"""Labels: one polygon per labelled object, in the scene CRS, with its attributes.

Objects come from the plans of the cells meeting the scene, in a fixed order; their polygons
(scene pixels, exactly the ones rasterised when rendering) are mapped to the scene CRS by the
scene transform.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from geoseg.synth.cells import _SUBTYPE, _Obj
from geoseg.synth.spec import SceneSpec
from geoseg.synth.world import _World


def _iter_objects(w: _World) -> Iterator[_Obj]:
    for i, j in w.scene_cells():
        yield from w.plan(i, j).objects


def _label_frame(w: _World, objs: list[_Obj]) -> Any:
    import geopandas as gpd
    import shapely

    tr = w.spec.transform
    geoms = [
        shapely.transform(
            o.poly, lambda c: np.column_stack([tr.c + c[:, 0] * tr.a, tr.f + c[:, 1] * tr.e])
        )
        for o in objs
    ]
    heading = []
    for o in objs:
        dmx, dmy = w.uv_to_m(o.cu + math.cos(o.alpha), o.cv + math.sin(o.alpha))
        cmx, cmy = w.uv_to_m(o.cu, o.cv)
        dx, dy = float(dmx - cmx), -float(dmy - cmy)
        heading.append(math.degrees(math.atan2(dx, dy)) % 360.0)
    data = {
        "object_id": np.array([o.oid for o in objs], np.int64),
        "class": [o.cls for o in objs],
        "subtype": [_SUBTYPE[o.style] for o in objs],
        "length_m": np.array([round(o.length, 2) for o in objs], np.float64),
        "width_m": np.array([round(o.width, 2) for o in objs], np.float64),
        "heading_deg": np.array([round(h, 1) for h in heading], np.float64),
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=w.spec.crs_wkt))


def scene_labels(spec: SceneSpec) -> Any:
    """All labels of a scene as a GeoDataFrame in the scene CRS (no pixels rendered).

    Columns: ``object_id`` (int64, as in :func:`render_object_ids`), ``class``, ``subtype``,
    ``length_m``, ``width_m``, ``heading_deg`` (azimuth of the front/bow, clockwise from grid
    north) and ``geometry`` (polygons in the scene CRS).
    """
    w = _World(spec)
    return _label_frame(w, list(_iter_objects(w)))
