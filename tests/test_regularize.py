"""Right-angle regularisation of building outlines (geoseg.regularize)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box

from geoseg.config import load_config
from geoseg.errors import ConfigError
from geoseg.pipeline import vectorize_scene
from geoseg.regularize import (
    REGULARIZED_COLUMN,
    dominant_angle,
    iou,
    regularize,
    regularize_classes,
    regularize_polygon,
    vertex_count,
)
from geoseg.settings import RunSettings, resolve
from geoseg.types import Detections, SceneInfo

L_SHAPE = Polygon([(15, 15), (65, 15), (65, 35), (35, 35), (35, 65), (15, 65)])


def staircase(poly, size=80):
    """The pixel-edge outline of ``poly`` rasterised on a unit pixel grid (as vectorize makes)."""
    from geoseg.vectorize import mask_to_geometry

    mask = rasterize(
        [(poly, 1)], out_shape=(size, size), transform=Affine.identity(), dtype="uint8"
    ).astype(bool)
    return mask_to_geometry(mask, Affine.identity())


@pytest.mark.parametrize("angle", [0, 12, 30, 45, 71])
def test_rotated_roof_becomes_its_rectangle(angle):
    true = affinity.rotate(box(20, 25, 60, 50), angle, origin=(40, 40))
    mask = staircase(true)
    out = regularize_polygon(mask)
    assert out.kind == "rectangle"
    assert vertex_count(out.geometry) == 4
    assert iou(out.geometry, true) >= iou(mask, true) - 0.005
    assert iou(out.geometry, true) > 0.97
    corners = np.asarray(out.geometry.exterior.coords)[:4]
    edges = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    dots = [abs(np.dot(edges[i], edges[(i + 1) % 4])) for i in range(4)]
    assert max(dots) < 1e-6 * np.max(np.abs(edges)) ** 2  # right angles


@pytest.mark.parametrize("angle", [0, 20, 37])
def test_l_shape_becomes_an_orthogonal_hexagon(angle):
    true = affinity.rotate(L_SHAPE, angle, origin=(40, 40))
    mask = staircase(true)
    out = regularize_polygon(mask)
    assert out.kind == "orthogonal"
    assert vertex_count(out.geometry) == 6
    assert iou(out.geometry, true) > 0.97
    assert vertex_count(mask) > 6 or angle == 0


def test_dominant_angle_of_a_simplified_staircase():
    true = affinity.rotate(box(10, 10, 60, 40), 25, origin=(35, 25))
    simple = shapely.simplify(staircase(true), 1.0)
    angle = np.degrees(dominant_angle(np.asarray(simple.exterior.coords)[:-1]))
    assert angle == pytest.approx(25, abs=2.5)


def test_mask_kept_below_min_iou():
    disc = staircase(shapely.Point(40, 40).buffer(22))
    assert regularize_polygon(disc, min_iou=0.95).kind == ""
    assert regularize_polygon(disc, min_iou=0.95).geometry is disc
    assert regularize_polygon(disc, min_iou=0.5).kind != ""
    with pytest.raises(ValueError, match="min_iou"):
        regularize_polygon(disc, min_iou=0.0)


def test_multipolygon_part_by_part():
    a = staircase(affinity.rotate(box(5, 5, 30, 20), 30, origin=(17, 12)), size=100)
    b = staircase(affinity.rotate(box(50, 50, 90, 70), 30, origin=(70, 60)), size=100)
    out = regularize_polygon(MultiPolygon([a, b]))
    assert out.kind == "rectangle"
    assert out.geometry.geom_type == "MultiPolygon" and vertex_count(out.geometry) == 8


def test_regularize_frame_other_classes_untouched_and_anisotropic_pixels():
    # pixels 0.46 m wide, 0.5 m tall in a frame whose units are not square on the ground:
    # a rectangle rotated 30 degrees on the ground must come back with right angles there
    aspect = 0.46 / 0.5
    t = Affine(1e-5, 0, 10.0, 0, -1e-5, 50.0)  # degrees-like units
    ground = affinity.rotate(box(20, 20, 50, 40), 30, origin=(35, 30))  # square-pixel frame
    px = affinity.scale(ground, 1 / aspect, 1.0, origin=(0, 0))  # scene pixels
    mask = staircase(px, size=90)
    to_crs = [t.a, t.b, t.d, t.e, t.c, t.f]
    gdf = gpd.GeoDataFrame(
        {"class": ["building", "ship"], "score": [0.9, 0.8]},
        geometry=[affinity.affine_transform(mask, to_crs)] * 2,
    )
    out = regularize(gdf, classes=["building"], transform=t, pixel_aspect=aspect)
    assert out[REGULARIZED_COLUMN].tolist() == ["rectangle", ""]
    assert out.geometry.values[1].equals(gdf.geometry.values[1])
    back = affinity.affine_transform(out.geometry.values[0], list((~t).to_shapely()))
    on_ground = affinity.scale(back, aspect, 1.0, origin=(0, 0))
    corners = np.asarray(on_ground.exterior.coords)[:4]
    e = np.diff(np.vstack([corners, corners[:1]]), axis=0)
    cos = abs(np.dot(e[0], e[1])) / (np.linalg.norm(e[0]) * np.linalg.norm(e[1]))
    assert cos < 1e-6
    assert iou(on_ground, ground) > 0.95
    assert out["score"].tolist() == [0.9, 0.8]


def test_regularize_classes_plural_and_unknown():
    assert regularize_classes(["buildings"], ("ship", "building")) == ("building",)
    assert regularize_classes(["ship", "ships"], ("ship",)) == ("ship",)
    with pytest.raises(ConfigError, match="ship, building"):
        regularize_classes(["house"], ("ship", "building"))


def test_settings_preset_and_digest():
    assert RunSettings().digest() == RunSettings(regularize_min_iou=0.5).digest()
    assert RunSettings().digest() != RunSettings(regularize=("building",)).digest()
    s = resolve(None, "buildings", regularize=("buildings",), regularize_min_iou=0.7)
    assert s.regularize == ("buildings",) and s.regularize_min_iou == 0.7
    cfg = load_config("buildings")
    assert cfg.vectorize.regularize == () and cfg.vectorize.regularize_min_iou == 0.8
    with pytest.raises(ConfigError, match="regularize_min_iou"):
        RunSettings(regularize_min_iou=1.5)


def test_vectorize_scene_hook_regularizes_buildings_only():
    true = affinity.rotate(box(20, 25, 60, 50), 30, origin=(40, 40))
    mask = rasterize([(true, 1)], out_shape=(80, 80), dtype="uint8").astype(bool)
    dets = Detections(
        boxes=np.array([[0, 0, 80, 80]] * 2, np.float32),
        scores=np.array([0.9, 0.8], np.float32),
        labels=np.array([0, 1], np.int64),
        mask_boxes=np.array([[0, 0, 80, 80], [100, 0, 180, 80]], np.int32),
        masks=(mask, mask),
        classes=("building", "ship"),
    )
    info = SceneInfo(
        path="s.tif",
        width=200,
        height=100,
        count=3,
        dtype="uint8",
        crs_wkt=CRS.from_epsg(32633).to_wkt(),
        transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000),
        nodata=None,
    )
    plain = vectorize_scene(dets, info, settings=RunSettings())
    reg = vectorize_scene(dets, info, settings=RunSettings(regularize=("buildings",)))
    assert REGULARIZED_COLUMN not in plain.columns
    assert reg[REGULARIZED_COLUMN].tolist() == ["rectangle", ""]
    assert vertex_count(reg.geometry.values[0]) == 4 < vertex_count(plain.geometry.values[0])
    assert reg.geometry.values[1].equals(plain.geometry.values[1])
