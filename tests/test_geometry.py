"""Tests for geoseg.geometry: polygonal parts, rectangle axes, metric frames (no 3857 metres)."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.affinity import rotate
from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiPolygon,
    Point,
    Polygon,
    box,
)

from geoseg.geometry import (
    is_metric_crs,
    is_web_mercator,
    local_metric_crs,
    metres_per_unit,
    metric_crs,
    polygonal,
    polygonal_array,
    rectangle_axes,
    to_metric,
    utm_crs,
)

# ------------------------------------------------------------------------ polygonal parts


def test_polygonal_keeps_polygons_as_they_are():
    p = box(0, 0, 2, 1)
    mp = MultiPolygon([box(0, 0, 1, 1), box(3, 3, 4, 4)])
    assert polygonal(p) is p and polygonal(mp) is mp


def test_polygonal_drops_points_lines_and_empties():
    gc = GeometryCollection([box(0, 0, 1, 1), LineString([(5, 5), (6, 6)]), Point(9, 9)])
    assert polygonal(gc).equals(box(0, 0, 1, 1))
    two = GeometryCollection([box(0, 0, 1, 1), box(3, 0, 4, 1), Point(9, 9)])
    out = polygonal(two)
    assert out.geom_type == "MultiPolygon" and out.area == pytest.approx(2.0)
    assert polygonal(GeometryCollection([Point(0, 0), LineString([(0, 0), (1, 1)])])) is None
    assert polygonal(None) is None and polygonal(Polygon()) is None
    assert polygonal(Point(0, 0)) is None


def test_polygonal_repairs_bow_tie():
    bow = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    assert not bow.is_valid
    out = polygonal(bow, repair=True)
    assert out.is_valid and out.area == pytest.approx(2.0)
    arr = polygonal_array([bow, Point(1, 1), None], repair=True)
    assert arr.dtype == object and arr[1] is None and arr[2] is None and arr[0].is_valid


# ------------------------------------------------------------------------ rectangle axes


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_rectangle_axes_of_rotated_rectangle(angle):
    rect = rotate(box(-5, -2, 5, 2), -angle, origin=(0, 0))  # long side east, turned clockwise
    length, width, heading = rectangle_axes([rect])
    assert length[0] == pytest.approx(10.0)
    assert width[0] == pytest.approx(4.0)
    assert heading[0] == pytest.approx((90.0 + angle) % 180.0, abs=1e-6)


def test_rectangle_axes_image_rows_point_down():
    tall = box(0, 0, 2, 10)  # long side along the rows
    _, _, up = rectangle_axes([tall], y_up=True)
    _, _, down = rectangle_axes([tall], y_up=False)
    assert up[0] == pytest.approx(0.0) and down[0] == pytest.approx(0.0)
    diag = LineString([(0, 0), (1, 1)])
    _, _, h_up = rectangle_axes([diag], y_up=True)
    _, _, h_down = rectangle_axes([diag], y_up=False)
    assert h_up[0] == pytest.approx(45.0) and h_down[0] == pytest.approx(135.0)


def test_rectangle_axes_degenerate_and_empty():
    length, width, heading = rectangle_axes(
        np.asarray([LineString([(0, 0), (3, 4)]), Point(1, 1), Polygon(), None], dtype=object)
    )
    assert length[0] == pytest.approx(5.0) and width[0] == pytest.approx(0.0)
    assert length[1] == 0.0 and width[1] == 0.0
    assert np.isnan(length[2:]).all() and np.isnan(width[2:]).all() and np.isnan(heading[2:]).all()
    z = rectangle_axes([])
    assert all(len(a) == 0 for a in z)


# ------------------------------------------------------------------------ metric frames


def test_crs_classification():
    assert is_web_mercator("EPSG:3857") and not is_web_mercator("EPSG:32633")
    assert not is_web_mercator("EPSG:4326")
    assert is_metric_crs("EPSG:32633") and is_metric_crs("EPSG:3035")
    assert not is_metric_crs("EPSG:3857")
    assert not is_metric_crs("EPSG:4326")
    assert not is_metric_crs("EPSG:2263")  # New York state plane, US survey feet
    assert metres_per_unit("EPSG:2263") == pytest.approx(0.3048006096)
    assert metres_per_unit("EPSG:3857") is None and metres_per_unit("EPSG:4326") is None


def _rect_3857(lat, length_m, width_m):
    """A length_m x width_m (true metres) rectangle, long side east, in EPSG:3857 at ``lat``."""
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, lat)
    k = 1.0 / math.cos(math.radians(lat))  # Web Mercator scale factor
    return box(x, y, x + length_m * k, y + width_m * k)


def test_web_mercator_at_60_degrees_is_not_metres():
    rect = _rect_3857(60.0, 10.0, 4.0)
    naive, _, _ = rectangle_axes([rect])
    assert naive[0] == pytest.approx(20.0, rel=1e-3)  # what treating 3857 as metres gives
    metric, factor = to_metric([rect], "EPSG:3857")
    length, width, heading = rectangle_axes(metric)
    assert factor == 1.0
    assert length[0] * factor == pytest.approx(10.0, rel=5e-3)
    assert width[0] * factor == pytest.approx(4.0, rel=5e-3)
    assert heading[0] == pytest.approx(90.0, abs=0.1)
    assert shapely.area(metric[0]) == pytest.approx(40.0, rel=1e-2)


def test_to_metric_keeps_metric_and_feet_frames():
    g = [box(0, 0, 10, 4)]
    out, factor = to_metric(g, "EPSG:32633")
    assert out[0] is g[0] and factor == 1.0
    _, factor = to_metric(g, "EPSG:2263")
    assert factor == pytest.approx(0.3048006096)
    empty, factor = to_metric([], "EPSG:4326")
    assert len(empty) == 0 and factor == 1.0


def test_to_metric_geographic():
    # 0.001 degree of longitude at the equator is ~111.32 m
    out, factor = to_metric([LineString([(15.0, 0.0), (15.001, 0.0)])], "EPSG:4326")
    assert out[0].length * factor == pytest.approx(111.32, rel=1e-3)


def test_metric_crs_and_utm():
    assert metric_crs("EPSG:32633", (0, 0, 1, 1)) == CRS.from_epsg(32633)
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(15.0, 60.0)
    assert metric_crs("EPSG:3857", (x, y, x + 10, y + 10)).to_epsg() == 32633
    assert metric_crs("EPSG:4326", (15.0, -40.0, 15.1, -39.9)).to_epsg() == 32733
    assert utm_crs(-3.7, 40.4).to_epsg() == 32630
    polar = utm_crs(0.0, 89.0)
    assert polar.to_epsg() is None and "Lambert Azimuthal Equal Area" in polar.to_wkt()
    assert is_metric_crs(polar) and is_metric_crs(local_metric_crs(10.0, 60.0))


def test_count_lengths_in_web_mercator_are_metres():
    from geoseg.count import count

    rect = _rect_3857(60.0, 10.0, 4.0)
    gdf = gpd.GeoDataFrame({"class": ["ship"], "scene": ["s"]}, geometry=[rect], crs=3857)
    r = count(gdf, size_bins={"ship": (0.0, 15.0, 30.0)})
    assert r.histograms[0].counts == (1, 0)  # ~10 m, not ~20
    assert r.per_scene["mean_length_m"].iloc[0] == pytest.approx(10.0, rel=5e-3)


def test_evaluate_web_mercator_truth_is_compared_in_utm():
    from geoseg.evaluate import evaluate

    rect = _rect_3857(60.0, 10.0, 4.0)
    truth = gpd.GeoDataFrame({"class": ["ship"]}, geometry=[rect], crs=3857)
    res = evaluate(truth, truth)
    assert res.overall.f1 == 1.0 and res.crs == "EPSG:32632"


# ------------------------------------------------------------ one object, one Polygon


def test_main_polygon_keeps_the_largest_part_with_its_holes():
    from geoseg.geometry import main_polygon

    ring = box(0, 0, 10, 10).difference(box(3, 3, 6, 6))
    island = box(4, 4, 5, 5)  # inside the hole: another part
    speckle = box(12, 0, 13, 1)
    out = main_polygon(MultiPolygon([speckle, ring, island]))
    assert out.geom_type == "Polygon" and out.equals(ring) and len(out.interiors) == 1
    assert main_polygon(box(0, 0, 1, 1)).equals(box(0, 0, 1, 1))
    assert main_polygon(None) is None and main_polygon(Point(0, 0)) is None
    # two equal parts: the first; a collection: its polygonal part
    two = MultiPolygon([box(0, 0, 1, 1), box(5, 5, 6, 6)])
    assert main_polygon(two).equals(box(0, 0, 1, 1))
    gc = GeometryCollection([LineString([(0, 0), (9, 9)]), box(0, 0, 2, 2), box(5, 5, 6, 6)])
    assert main_polygon(gc).equals(box(0, 0, 2, 2))
    bow = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])  # repaired into two triangles: one kept
    out = main_polygon(bow)
    assert out.geom_type == "Polygon" and out.is_valid and out.area == pytest.approx(1.0)


def test_pixel_boxes_are_whole_pixels_in_the_frame_of_the_transform():
    from affine import Affine

    from geoseg.geometry import pixel_boxes

    t = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)
    # an L-shaped outline over pixels cols 2-5, rows 3-8 (pixel-edge coordinates)
    px = Polygon([(2, 3), (6, 3), (6, 5), (4, 5), (4, 9), (2, 9)])
    geom = shapely.transform(px, lambda xy: np.array([t @ tuple(p) for p in xy]))
    diamond = shapely.transform(
        Polygon([(1.5, 0.5), (2.5, 1.5), (1.5, 2.5), (0.5, 1.5)]),
        lambda xy: np.array([t @ tuple(p) for p in xy]),
    )
    out = pixel_boxes([geom, diamond, None], t)
    x0, y1 = t @ (2, 3)
    x1, y0 = t @ (6, 9)
    assert out[0].equals(box(x0, y0, x1, y1))  # scene CRS, not pixels
    x0, y1 = t @ (0, 0)  # widened to whole pixels
    x1, y0 = t @ (3, 3)
    assert out[1].equals(box(x0, y0, x1, y1))
    assert out[2] is None
    assert len(pixel_boxes([], t)) == 0


def test_main_polygons_is_main_polygon_of_each():
    """The vectorised main part equals the one-by-one rule on every kind of entry."""
    import shapely

    from geoseg.geometry import main_polygon, main_polygons

    sq = shapely.box(0, 0, 4, 4)
    small = shapely.box(10, 10, 11, 11)
    holed = shapely.Polygon(sq.exterior.coords, [shapely.box(1, 1, 2, 2).exterior.coords])
    twins = shapely.MultiPolygon([shapely.box(20, 0, 22, 2), shapely.box(30, 0, 32, 2)])
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])  # invalid
    geoms = np.array(
        [sq, None, shapely.MultiPolygon([small, holed]), twins, bowtie, shapely.Point(0, 0)],
        dtype=object,
    )
    got = main_polygons(geoms)
    for g, want in zip(got, [main_polygon(g) for g in geoms], strict=True):
        assert (g is None and want is None) or (g is not None and g.equals_exact(want, 0))
    assert got[2].equals(holed) and len(got[2].interiors) == 1  # the big part, hole kept
    assert got[3].equals(shapely.box(20, 0, 22, 2))  # tie: the first part
    assert main_polygons(np.empty(0, dtype=object)).shape == (0,)
