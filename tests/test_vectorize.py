"""Tests for geoseg.vectorize: pixel-edge fidelity, attributes in metres, CRS handling."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod
from rasterio.features import rasterize
from scipy import ndimage

from geoseg.types import Detections
from geoseg.vectorize import COLUMNS, PIXEL_COLUMNS, mask_to_geometry, vectorize

CLASSES = ("ship", "vehicle", "building")
UTM = CRS.from_epsg(32633).to_wkt()
UTM_TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)


def dets(items, classes=CLASSES):
    """Detections from (x1, y1, mask, label, score) in scene pixels."""
    boxes, masks, labels, scores = [], [], [], []
    for x1, y1, m, lab, sc in items:
        h, w = m.shape
        boxes.append((x1, y1, x1 + w, y1 + h))
        masks.append(m)
        labels.append(lab)
        scores.append(sc)
    n = len(items)
    arr = np.asarray(boxes, np.int32).reshape(n, 4)
    return Detections(
        boxes=arr.astype(np.float32),
        scores=np.asarray(scores, np.float32),
        labels=np.asarray(labels, np.int64),
        mask_boxes=arr,
        masks=tuple(masks),
        classes=classes,
    )


def rotated_rect_mask(length, width, angle_deg, pad=3):
    """A rasterised rectangle whose long axis points ``angle_deg`` clockwise from image up."""
    t = math.radians(angle_deg)
    ux, uy = math.sin(t), -math.cos(t)  # image coordinates: y down
    vx, vy = -uy, ux
    size = int(length + width) + 2 * pad
    c = size / 2
    pts = [
        (
            c + sx * ux * length / 2 + sy * vx * width / 2,
            c + sx * uy * length / 2 + sy * vy * width / 2,
        )
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    poly = shapely.Polygon(pts)
    return rasterize([poly], out_shape=(size, size), transform=Affine.identity()).astype(bool)


def paste(mask, x1, y1, shape):
    out = np.zeros(shape, np.uint8)
    out[y1 : y1 + mask.shape[0], x1 : x1 + mask.shape[1]] = mask
    return out


def test_pixel_edge_outline_rasterises_back_exactly():
    rng = np.random.default_rng(0)
    m = rng.random((23, 31)) > 0.35  # ragged, several parts, holes
    ring = np.ones((12, 12), bool)
    ring[4:8, 4:8] = False
    items = [(7, 5, m, 0, 0.9), (40, 30, ring, 2, 0.8)]
    gdf = vectorize(dets(items), transform=UTM_TRANSFORM, crs_wkt=UTM)
    assert list(gdf.columns) == list(COLUMNS)
    assert gdf.geometry.is_valid.all()
    shape = (60, 70)
    for row, (x1, y1, mask, _, _) in zip(gdf.itertuples(), items, strict=True):
        back = rasterize([row.geometry], out_shape=shape, transform=UTM_TRANSFORM)
        # one object, one Polygon: the mask's largest 4-connected part, exactly
        parts, _ = ndimage.label(mask)
        main = parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])
        assert row.geometry.geom_type == "Polygon"
        assert (back == paste(main, x1, y1, shape)).all()
    assert ndimage.label(m)[1] > 1  # the ragged mask had several parts
    # holes kept
    ring_geom = gdf.geometry.iloc[1]
    assert ring_geom.geom_type == "Polygon" and len(ring_geom.interiors) == 1
    assert gdf.area_m2.iloc[1] == pytest.approx(ring.sum() * 0.25)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_shifted_matches_affine_composition():
    from geoseg.vectorize import shifted

    t = Affine(0.5, 0.1, 100.0, -0.2, -0.5, 50.0)
    for col, row in ((0, 0), (2, 3), (-1, 5.5)):
        assert shifted(t, 7, 9) * (col, row) == pytest.approx(t * (col + 7, row + 9))


def test_corner_touching_parts_become_a_valid_multipolygon():
    m = np.zeros((4, 4), bool)
    m[0:2, 0:2] = True
    m[2:4, 2:4] = True
    g = mask_to_geometry(m, Affine.identity())
    assert g.geom_type == "MultiPolygon" and g.is_valid and len(g.geoms) == 2
    assert g.area == 8


@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 120.0, 165.0])
def test_length_width_heading_in_projected_crs(angle):
    m = rotated_rect_mask(40, 12, angle)
    gdf = vectorize(dets([(10, 10, m, 0, 0.9)]), transform=UTM_TRANSFORM, crs_wkt=UTM)
    row = gdf.iloc[0]
    assert row.area_m2 == pytest.approx(m.sum() * 0.25)
    assert row.length_m == pytest.approx(40 * 0.5, abs=1.0)
    assert row.width_m == pytest.approx(12 * 0.5, abs=1.0)
    diff = abs((row.heading_deg - angle + 90) % 180 - 90)
    assert diff < 3.0
    assert 0.0 <= row.heading_deg < 180.0


def test_axis_aligned_rectangle_exact_metres():
    m = np.ones((10, 40), bool)  # 40 px east-west, 10 px north-south
    gdf = vectorize(dets([(0, 0, m, 1, 0.5)]), transform=UTM_TRANSFORM, crs_wkt=UTM, scene="s.tif")
    row = gdf.iloc[0]
    assert (row.area_m2, row.length_m, row.width_m) == pytest.approx((100.0, 20.0, 5.0))
    assert row.heading_deg == pytest.approx(90.0)
    assert row["class"] == "vehicle" and row.scene == "s.tif"
    assert row.score == pytest.approx(0.5)
    assert gdf.crs == CRS.from_wkt(UTM)


def test_projected_crs_in_feet_gives_metres():
    feet = CRS.from_epsg(2263)  # NAD83 / New York Long Island (ftUS)
    t = Affine(2.0, 0, 980_000, 0, -2.0, 200_000)
    m = np.ones((10, 40), bool)
    row = vectorize(dets([(0, 0, m, 0, 0.9)]), transform=t, crs_wkt=feet.to_wkt()).iloc[0]
    ft = 1200 / 3937
    assert row.length_m == pytest.approx(80 * ft, rel=1e-6)
    assert row.area_m2 == pytest.approx(400 * 4 * ft**2, rel=1e-6)


@pytest.mark.parametrize("lat", [0.5, 45.0, 65.0])
def test_geographic_crs_gives_true_metres(lat):
    geod = Geod(ellps="WGS84")
    # about 0.5 m pixels at this latitude
    dlat = 0.5 / 111_000
    dlon = dlat / math.cos(math.radians(lat))
    t = Affine(dlon, 0, 10.0, 0, -dlat, lat)
    m = np.ones((20, 60), bool)
    wkt = CRS.from_epsg(4326).to_wkt()
    gdf = vectorize(dets([(100, 100, m, 0, 0.9)]), transform=t, crs_wkt=wkt)
    row = gdf.iloc[0]
    geom = gdf.geometry.iloc[0]
    area, _ = geod.geometry_area_perimeter(geom)
    assert row.area_m2 == pytest.approx(abs(area), rel=2e-3)
    x0, y0, x1, y1 = geom.bounds
    ym = (y0 + y1) / 2
    _, _, ew = geod.inv(x0, ym, x1, ym)
    _, _, ns = geod.inv((x0 + x1) / 2, y0, (x0 + x1) / 2, y1)
    assert row.length_m == pytest.approx(ew, rel=2e-3)
    assert row.width_m == pytest.approx(ns, rel=2e-3)
    assert row.heading_deg == pytest.approx(90.0, abs=0.5)
    # degrees would be absurd as metres
    assert row.length_m > 10


def test_web_mercator_metres_are_corrected():
    lat = 60.0
    # a 0.5 m (true) pixel is 1 m in Web Mercator units at 60 degrees
    y = 6_000_000 * 1.0
    from pyproj import Transformer

    y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, lat)[1]
    t = Affine(1.0, 0, 1_113_000, 0, -1.0, y)
    m = np.ones((10, 40), bool)
    row = vectorize(dets([(0, 0, m, 0, 0.9)]), transform=t, crs_wkt=CRS.from_epsg(3857).to_wkt())
    assert row.iloc[0].length_m == pytest.approx(40 * math.cos(math.radians(lat)), rel=5e-3)


def test_no_crs_is_pixel_space_throughout(caplog):
    """No CRS: pixel geometries and sizes in pixels, in columns that say so (never NaN metres)."""
    m = np.ones((6, 20), bool)
    with caplog.at_level(logging.WARNING, logger="geoseg.vectorize"):
        gdf = vectorize(dets([(3, 4, m, 0, 0.9)]), transform=Affine.identity(), crs_wkt=None)
    assert "no CRS" in caplog.text and "scene pixels" in caplog.text
    assert gdf.crs is None
    assert list(gdf.columns) == list(PIXEL_COLUMNS)
    assert gdf.geometry.iloc[0].bounds == (3.0, 4.0, 23.0, 10.0)
    row = gdf.iloc[0]
    assert (row.area_px, row.length_px, row.width_px) == pytest.approx((120.0, 20.0, 6.0))
    assert row.heading_deg == pytest.approx(90.0)
    # a frame without CRS but with a geotransform (2 units per pixel): sizes still in pixels
    scaled = vectorize(dets([(3, 4, m, 0, 0.9)]), transform=Affine.scale(2.0), crs_wkt=None)
    assert scaled.geometry.iloc[0].bounds == (6.0, 8.0, 46.0, 20.0)
    assert (scaled.iloc[0].area_px, scaled.iloc[0].length_px) == pytest.approx((120.0, 20.0))
    empty = vectorize(Detections.empty(CLASSES), transform=Affine.identity(), crs_wkt=None)
    assert len(empty) == 0 and list(empty.columns) == list(PIXEL_COLUMNS)


def test_min_area_and_simplify():
    yy, xx = np.mgrid[0:40, 0:40] + 0.5
    disc = (xx - 20) ** 2 + (yy - 20) ** 2 <= 18**2
    tiny = np.ones((2, 2), bool)  # 1 m2
    d = dets([(0, 0, disc, 2, 0.9), (50, 50, tiny, 0, 0.9)])
    gdf = vectorize(d, transform=UTM_TRANSFORM, crs_wkt=UTM, min_area_m2=5.0)
    assert len(gdf) == 1 and gdf["class"].iloc[0] == "building"
    simple = vectorize(
        d, transform=UTM_TRANSFORM, crs_wkt=UTM, min_area_m2=5.0, simplify_tolerance=0.5
    )
    g0, g1 = gdf.geometry.iloc[0], simple.geometry.iloc[0]
    assert shapely.get_num_coordinates(g1) < shapely.get_num_coordinates(g0) / 2
    assert g1.is_valid
    assert g0.intersection(g1).area / g0.union(g1).area > 0.93
    # attributes come from the exact outline
    assert simple.area_m2.iloc[0] == gdf.area_m2.iloc[0]


def test_empty_inputs():
    gdf = vectorize(Detections.empty(CLASSES), transform=UTM_TRANSFORM, crs_wkt=UTM)
    assert len(gdf) == 0 and list(gdf.columns) == list(COLUMNS)
    assert gdf.crs == CRS.from_wkt(UTM)
    empty_mask = dets([(0, 0, np.zeros((3, 3), bool), 0, 0.9)])
    assert len(vectorize(empty_mask, transform=UTM_TRANSFORM, crs_wkt=UTM)) == 0
    with pytest.raises(ValueError, match="min_area"):
        vectorize(empty_mask, transform=UTM_TRANSFORM, crs_wkt=UTM, min_area_m2=-1)


def test_unknown_class_names_fall_back_to_label_text():
    d = dets([(0, 0, np.ones((3, 3), bool), 4, 0.9)], classes=())
    assert vectorize(d, transform=UTM_TRANSFORM, crs_wkt=UTM)["class"].iloc[0] == "4"


# --------------------------------------------------------------------------------------------
# the batched tracer against the per-mask trace it replaced


def reference_vectorize(detections, *, transform, crs_wkt):
    """geoseg 0.x's vectorize before the batched tracer: one GDAL trace per mask (main part)."""
    from geoseg.geometry import main_polygon, rectangle_axes, to_metric
    from geoseg.vectorize import shifted

    geoms, keep = [], []
    for k in range(len(detections)):
        x1, y1 = int(detections.mask_boxes[k, 0]), int(detections.mask_boxes[k, 1])
        g = main_polygon(mask_to_geometry(detections.masks[k], shifted(transform, x1, y1)))
        if g is not None:
            geoms.append(g)
            keep.append(k)
    garr = np.empty(len(geoms), dtype=object)
    garr[:] = geoms
    if crs_wkt is None:  # sizes in scene pixels
        _, _, heading = rectangle_axes(garr, y_up=transform.e < 0)
        inv = ~transform
        pixels = shapely.transform(garr, lambda xy: np.column_stack(inv @ (xy[:, 0], xy[:, 1])))
        length, width, _ = rectangle_axes(pixels, y_up=False)
        return keep, garr, shapely.area(pixels), length, width, heading
    metric, factor = to_metric(garr, crs_wkt)
    length, width, heading = rectangle_axes(metric, y_up=True)
    return keep, garr, shapely.area(metric) * factor**2, length * factor, width * factor, heading


def awkward_masks(rng, n):
    """Random masks with holes, diagonal contacts, one-pixel and empty masks, views."""
    out = []
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        kind = k % 8
        if kind == 0:
            m = np.zeros((h, w), bool)  # empty
        elif kind == 1:
            m = np.zeros((h, w), bool)
            m[rng.integers(h), rng.integers(w)] = True  # one pixel anywhere in the box
        elif kind == 2:
            m = np.indices((h, w)).sum(axis=0) % 2 == 0  # checkerboard: diagonal contacts only
        elif kind == 3:
            m = np.ones((h + 4, w + 4), bool)  # a frame with a hole holding an island
            m[2:-2, 2:-2] = False
            m[h // 2 + 2, w // 2 + 2] = True
        elif kind == 4:
            big = rng.random((h + 6, w + 6)) < 0.7
            m = big[3 : 3 + h, 2 : 2 + w]  # a non-contiguous view
        elif kind == 5:
            m = np.ones((h, w), bool)  # fills its box: touches every box edge
        else:
            m = rng.random((h, w)) < rng.uniform(0.3, 0.9)  # ragged: holes, diagonal parts
        out.append(m)
    return out


TRANSFORMS = [
    UTM_TRANSFORM,
    Affine(0.3, 0.1, 123.456, -0.07, -0.31, -45.6),  # rotated and sheared
    Affine.identity(),
    Affine(1e-5, 0, 10.0, 0, -1e-5, 45.0),  # degrees
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("atlas_pixels", [300, 1 << 22])
def test_trace_outlines_equals_the_per_mask_trace(transform, atlas_pixels):
    from geoseg.vectorize import shifted, trace_outlines

    rng = np.random.default_rng(7)
    masks = awkward_masks(rng, 120)
    origins = rng.integers(-100, 5000, (len(masks), 2))
    got = trace_outlines(masks, origins, transform, atlas_pixels=atlas_pixels)
    assert got.shape == (len(masks),)
    types = set()
    for k, m in enumerate(masks):
        want = mask_to_geometry(m, shifted(transform, int(origins[k, 0]), int(origins[k, 1])))
        if want is None:
            assert got[k] is None, k
            continue
        # the same vertices to the last bit (ring start and part order aside)
        assert shapely.normalize(got[k]).wkb == shapely.normalize(want).wkb, k
        types.add(want.geom_type)
    assert types == {"Polygon", "MultiPolygon"}


def test_trace_outlines_empty_inputs():
    from geoseg.vectorize import trace_outlines

    assert trace_outlines((), np.zeros((0, 2), int), UTM_TRANSFORM).shape == (0,)
    masks = (np.zeros((0, 3), bool), np.zeros((2, 2), bool))
    assert list(trace_outlines(masks, np.zeros((2, 2), int), UTM_TRANSFORM)) == [None, None]


@pytest.mark.parametrize(
    ("crs_wkt", "transform"),
    [
        (UTM, UTM_TRANSFORM),
        (CRS.from_epsg(4326).to_wkt(), Affine(5e-6, 0, 10.0, 0, -5e-6, 45.0)),
        (None, Affine.identity()),
    ],
)
def test_vectorize_matches_the_per_mask_implementation(crs_wkt, transform):
    rng = np.random.default_rng(11)
    masks = awkward_masks(rng, 160)
    items = [
        (int(x), int(y), m, int(lab), float(sc))
        for m, x, y, lab, sc in zip(
            masks,
            rng.integers(0, 3000, len(masks)),
            rng.integers(0, 3000, len(masks)),
            rng.integers(0, 3, len(masks)),
            rng.uniform(0.3, 1.0, len(masks)),
            strict=True,
        )
    ]
    d = dets(items)
    gdf = vectorize(d, transform=transform, crs_wkt=crs_wkt)
    keep, geoms, area, length, width, heading = reference_vectorize(
        d, transform=transform, crs_wkt=crs_wkt
    )
    assert len(gdf) == len(keep) == sum(m.any() for m in masks)
    got = shapely.normalize(np.asarray(gdf.geometry.values, dtype=object))
    assert [g.wkb for g in got] == [g.wkb for g in shapely.normalize(geoms)]
    assert gdf["class"].tolist() == [CLASSES[items[k][3]] for k in keep]
    assert np.allclose(gdf.score, [items[k][4] for k in keep])
    unit = "px" if crs_wkt is None else "m"
    area_col = "area_px" if crs_wkt is None else "area_m2"
    np.testing.assert_allclose(gdf[area_col], area, rtol=1e-9)
    np.testing.assert_allclose(gdf[f"length_{unit}"], length, rtol=1e-9)
    np.testing.assert_allclose(gdf[f"width_{unit}"], width, rtol=1e-9)
    # a heading is an axis: 0 and 180 are the same (a square may come out either way round)
    square = np.isclose(length, width, rtol=1e-9)
    diff = np.abs((gdf.heading_deg.to_numpy() - heading + 90.0) % 180.0 - 90.0)
    assert (diff[~square] < 1e-6).all()
