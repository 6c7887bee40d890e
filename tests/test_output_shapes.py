"""What predict writes: kept classes, class-agnostic merging, one Polygon per object, boxes,
points and the instance-id raster (run_scene with connected-components predictors on the
small scene of test_pipeline: 180 x 120 px, 12 tiles of 64 px, objects across seams)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import rasterize
from test_pipeline import OBJECTS, TRANSFORM, H, ThresholdPredictor, W, truth_counts, write_scene

import geoseg.tiling
from geoseg.cli import cli
from geoseg.count import count
from geoseg.errors import ConfigError, ExportError
from geoseg.export import write_id_raster
from geoseg.pipeline import run_scene
from geoseg.types import TileDetections


def predictor(cls=ThresholdPredictor):
    p = cls()
    p.tile_size = 64
    return p


def px_box(x, y, w, h):
    """An object's pixel box as a polygon in the scene CRS."""
    (x0, y1), (x1, y0) = TRANSFORM @ (x, y), TRANSFORM @ (x + w, y + h)
    return shapely.box(x0, y0, x1, y1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("shapes") / "scene.tif")


class SpecklePredictor(ThresholdPredictor):
    """Each mask gets a 1-pixel speckle 2 px right of it (inside its widened mask box)."""

    def predict_tiles(self, tiles):
        out = []
        for d in super().predict_tiles(tiles):
            masks, mboxes = [], []
            for m, (x1, y1, x2, y2) in zip(d.masks, d.mask_boxes.tolist(), strict=True):
                wide = np.zeros((m.shape[0], m.shape[1] + 3), bool)
                wide[:, : m.shape[1]] = m
                wide[0, -1] = True
                masks.append(wide)
                mboxes.append((x1, y1, x2 + 3, y2))
            box = np.asarray(mboxes, np.int32).reshape(-1, 4)
            out.append(
                TileDetections(
                    boxes=box.astype(np.float32),
                    scores=d.scores,
                    labels=d.labels,
                    mask_boxes=box,
                    masks=tuple(masks),
                    classes=d.classes,
                    tile=d.tile,
                )
            )
        return out


class TwoClassPredictor(ThresholdPredictor):
    """Also reports every ship as a vehicle (score 0.4, the mask one pixel lower): the same
    object outlined as two classes, as a real model's per-class NMS leaves it."""

    def predict_tiles(self, tiles):
        out = []
        for d in super().predict_tiles(tiles):
            ships = np.flatnonzero(d.labels == 0)
            shift = d.mask_boxes[ships] + np.array([0, 1, 0, 1], np.int32)
            out.append(
                TileDetections(
                    boxes=np.concatenate([d.boxes, shift.astype(np.float32)]),
                    scores=np.concatenate([d.scores, np.full(len(ships), 0.4, np.float32)]),
                    labels=np.concatenate([d.labels, np.ones(len(ships), np.int64)]),
                    mask_boxes=np.concatenate([d.mask_boxes, shift]),
                    masks=d.masks + tuple(d.masks[int(k)] for k in ships),
                    classes=d.classes,
                    tile=d.tile,
                )
            )
        return out


# --------------------------------------------------------------------------------- classes


def test_classes_keep_only_those_classes(scene, tmp_path):
    result = run_scene(scene, predictor(), output=tmp_path / "v.gpkg", classes=("vehicle",))
    assert result.counts == {"vehicle": truth_counts()["vehicle"]}
    assert set(gpd.read_file(tmp_path / "v.gpkg")["class"]) == {"vehicle"}


def test_unknown_class_fails_before_any_tile_is_read(scene, tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(geoseg.tiling, "read_window_raw", lambda *a, **k: reads.append(a))
    pred = predictor()
    with pytest.raises(ConfigError, match=r"unknown class 'boat'.*ship, vehicle"):
        run_scene(scene, pred, output=tmp_path / "o.gpkg", classes=("ship", "boat"))
    assert pred.calls == 0 and reads == [] and not (tmp_path / "o.gpkg").exists()


def test_class_agnostic_merges_one_object_seen_as_two_classes(scene):
    truth = truth_counts()
    doubled = run_scene(scene, predictor(TwoClassPredictor))
    assert doubled.counts == {"ship": truth["ship"], "vehicle": truth["vehicle"] + truth["ship"]}
    merged = run_scene(scene, predictor(TwoClassPredictor), class_agnostic=True)
    assert merged.counts == truth  # each ship once, with its best class
    ships = merged.gdf[merged.gdf["class"] == "ship"]
    assert np.allclose(ships["score"], 0.9)
    # the classes are kept after the merge: the merged ships are not vehicles
    only = run_scene(scene, predictor(TwoClassPredictor), class_agnostic=True, classes=["vehicle"])
    assert only.counts == {"vehicle": truth["vehicle"]}


# ------------------------------------------------------------------------------ geometry


def test_one_polygon_per_object_and_one_layer_type(scene, tmp_path):
    out = tmp_path / "o.gpkg"
    result = run_scene(scene, predictor(SpecklePredictor), output=out)
    assert result.counts == truth_counts()
    assert set(result.gdf.geom_type) == {"Polygon"}
    assert pyogrio.read_info(out)["geometry_type"] == "Polygon"
    back = gpd.read_file(out)
    assert set(back.geom_type) == {"Polygon"}
    # the speckles are gone: every object is exactly its rectangle, and measured as such
    want = sorted(px_box(x, y, w, h).wkb for x, y, w, h, _ in OBJECTS)
    assert sorted(shapely.normalize(g).wkb for g in back.geometry) == sorted(
        shapely.normalize(shapely.from_wkb(w)).wkb for w in want
    )
    areas = sorted(w * h * 0.25 for *_, w, h, _ in [(0, 0, *o[2:]) for o in OBJECTS])
    assert sorted(back["area_m2"]) == pytest.approx(areas)
    # an empty result keeps the layer type
    empty = tmp_path / "empty.fgb"
    run_scene(scene, predictor(), output=empty, min_score=1.0)
    assert pyogrio.read_info(empty)["geometry_type"] == "Polygon"


def test_box_geometry_is_the_pixel_box_in_the_scene_crs(scene, tmp_path):
    out = tmp_path / "boxes.gpkg"
    result = run_scene(scene, predictor(SpecklePredictor), output=out, geometry="box")
    back = gpd.read_file(out)
    assert back.crs == result.scene.crs_wkt or back.crs.to_epsg() == 32633
    want = sorted(tuple(px_box(x, y, w, h).bounds) for x, y, w, h, _ in OBJECTS)
    got = sorted(tuple(g.bounds) for g in back.geometry)
    np.testing.assert_allclose(got, want)
    assert all(g.equals(shapely.box(*g.bounds)) for g in back.geometry)  # rectangles
    # attributes are the object's, not the box's
    mask_run = run_scene(scene, predictor(SpecklePredictor))
    assert sorted(back["area_m2"]) == pytest.approx(sorted(mask_run.gdf["area_m2"]))


def test_point_geometry_is_where_count_places_the_object(scene, tmp_path):
    polys, points = tmp_path / "polys.gpkg", tmp_path / "points.gpkg"
    run_scene(scene, predictor(), output=polys)
    run_scene(scene, predictor(), output=points, geometry="point")
    assert pyogrio.read_info(points)["geometry_type"] == "Point"
    got = sorted((round(p.x, 6), round(p.y, 6)) for p in gpd.read_file(points).geometry)
    want = sorted(
        (round(c.x, 6), round(c.y, 6)) for c in (px_box(*o[:4]).centroid for o in OBJECTS)
    )
    assert got == want
    # zones of 40 x 40 m: both layers give every zone the same counts
    zones = tmp_path / "zones.gpkg"
    x0, y0 = TRANSFORM @ (0, H)
    gpd.GeoDataFrame(
        geometry=[
            shapely.box(x0 + i, y0 + j, x0 + i + 40, y0 + j + 40)
            for i in (0, 40, 80)
            for j in (0, 40)
        ],
        crs=32633,
    ).to_file(zones)
    a = count(polys, aoi=zones).zones["count_total"].tolist()
    b = count(points, aoi=zones).zones["count_total"].tolist()
    assert a == b and sum(a) > 0


def test_point_geometry_for_coco_is_refused(scene, tmp_path):
    pred = predictor()
    with pytest.raises(ConfigError, match="COCO"):
        run_scene(scene, pred, output=tmp_path / "o.json", geometry="point")
    assert pred.calls == 0


# ------------------------------------------------------------------------- id raster


def test_mask_raster_is_an_aligned_cog_whose_ids_match_the_vectors(scene, tmp_path):
    out, ids = tmp_path / "o.gpkg", tmp_path / "ids.tif"
    result = run_scene(scene, predictor(SpecklePredictor), output=out, mask_raster=ids)
    assert result.mask_raster == ids
    with rasterio.open(scene) as src, rasterio.open(ids) as r:
        assert (r.width, r.height, r.transform, r.crs) == (
            src.width,
            src.height,
            src.transform,
            src.crs,
        )
        assert r.dtypes == ("uint32",) and r.nodata == 0
        assert r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        raster = r.read(1)
    back = gpd.read_file(out)
    assert sorted(back["id"]) == list(range(1, len(OBJECTS) + 1))
    assert set(np.unique(raster)) == {0, *back["id"]}
    for row in back.itertuples():
        burnt = rasterize([row.geometry], out_shape=(H, W), transform=TRANSFORM).astype(bool)
        assert ((raster == row.id) == burnt).all()  # exactly the object's pixels
    # and those are the objects' true pixels (no one-pixel shift, no speckles)
    truth = np.zeros((H, W), bool)
    for x, y, w, h, _ in OBJECTS:
        truth[y : y + h, x : x + w] = True
    assert ((raster > 0) == truth).all()
    # only the outputs are left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.tif", "o.gpkg"]


def test_mask_raster_windows_join_without_seams(scene, tmp_path):
    result = run_scene(scene, predictor())
    gdf = result.gdf
    whole = write_id_raster(gdf, tmp_path / "whole.tif", result.scene, block=4096)
    small = write_id_raster(gdf, tmp_path / "small.tif", result.scene, block=17)
    with rasterio.open(whole) as a, rasterio.open(small) as b:
        assert (a.read(1) == b.read(1)).all() and a.read(1).any()
    none = write_id_raster(gdf.iloc[:0], tmp_path / "none.tif", result.scene)
    with rasterio.open(none) as ds:
        assert (ds.width, ds.height) == (W, H) and not ds.read(1).any()


def test_mask_raster_mistakes(scene, tmp_path):
    result = run_scene(scene, predictor())
    with pytest.raises(ExportError, match=r"ids\.png.*\.tif"):
        write_id_raster(result.gdf, tmp_path / "ids.png", result.scene)
    bad = result.gdf.assign(id=0)
    with pytest.raises(ExportError, match="uint32"):
        write_id_raster(bad, tmp_path / "ids.tif", result.scene)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_classes_and_outputs(scene, tmp_path, tiny_checkpoint_factory, monkeypatch):
    ckpt = tiny_checkpoint_factory("tiny_shapes", classes=("ship", "vehicle"), tile_size=64)
    args = ["predict", str(scene), "-m", str(ckpt), "-o", str(tmp_path / "o.gpkg")]
    import geoseg.predict

    real = geoseg.predict.load_predictor

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(geoseg.predict, "load_predictor", boom)
    r = CliRunner().invoke(cli, [*args, "--classes", "boat"])
    assert r.exit_code == 1 and "boat" in r.output and "ship, vehicle" in r.output
    assert "--classes" in r.output
    r = CliRunner().invoke(cli, [*args, "--geometry", "point", "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 1 and "COCO" in r.output
    r = CliRunner().invoke(cli, [*args, "--mask-raster", str(tmp_path / "ids.png")])
    assert r.exit_code == 1 and "ids.png" in r.output
    r = CliRunner().invoke(cli, [*args, "--mask-raster", str(scene)])  # the input itself
    assert r.exit_code == 1 and "scene.tif" in r.output
    monkeypatch.setattr(geoseg.predict, "load_predictor", real)
    r = CliRunner().invoke(
        cli,
        [
            *args,
            "--classes",
            "ship",
            "--class-agnostic",
            "--geometry",
            "box",
            "--mask-raster",
            str(tmp_path / "ids.tif"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert pyogrio.read_info(tmp_path / "o.gpkg")["geometry_type"] == "Polygon"
    with rasterio.open(tmp_path / "ids.tif") as ds:
        assert (ds.width, ds.height) == (W, H)
