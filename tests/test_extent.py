"""Processing extent (geoseg.extent, settings.extent, predict/batch --aoi/--bbox).

A 640 x 640 px scene (169 tiles of 64 px) predicted with a connected-components predictor:
an AOI of 100 x 100 px reads and predicts only the tiles whose window meets it, and keeps the
objects ``geoseg count --aoi`` counts in it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer
from test_pipeline import ThresholdPredictor

import geoseg.tiling
from geoseg.cli import cli
from geoseg.count import count, in_zones
from geoseg.errors import ConfigError, LabelError
from geoseg.extent import Extent, bbox_extent, parse_bbox, read_aoi, select_tiles
from geoseg.pipeline import plan_scene, run_scene
from geoseg.settings import resolve
from geoseg.tiling import make_grid

GSD = 0.5
X0, Y0 = 500_000.0, 4_000_000.0
TRANSFORM = Affine(GSD, 0, X0, 0, -GSD, Y0)
SIZE = 640
# ships: 8 x 8 px squares every 40 px; two wider ones straddle the AOI's edges
GRID_SHIPS = [(x, y, 8, 8) for x in range(12, 620, 40) for y in range(12, 620, 40)]
STRADDLE_IN = (192, 236, 20, 8)  # centre column 202: inside the AOI [200, 300)
STRADDLE_OUT = (292, 276, 24, 8)  # centre column 304: outside, though 8 columns lie inside
SHIPS = [*GRID_SHIPS, STRADDLE_IN, STRADDLE_OUT]
AOI_PX = (200, 200, 300, 300)  # col0, row0, col1, row1 in scene pixels


def px_to_crs(col, row):
    return TRANSFORM @ (col, row)


def write_scene(path):
    data = np.full((3, SIZE, SIZE), 20, np.uint8)
    for x, y, w, h in SHIPS:
        data[0, y : y + h, x : x + w] = 230
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=TRANSFORM,
    ) as dst:
        dst.write(data)
    return path


def aoi_lonlat(path):
    """The AOI square as a lon/lat polygon (another CRS than the scene's), written to a file."""
    c0, r0, c1, r1 = AOI_PX
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    corners = [px_to_crs(c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
    ll = [to_ll.transform(x, y) for x, y in corners]
    gdf = gpd.GeoDataFrame({"name": ["harbour"]}, geometry=[shapely.Polygon(ll)], crs=4326)
    gdf.to_file(path)
    return path


def expected_tiles():
    """Grid windows that meet the AOI square, by plain interval arithmetic."""
    c0, r0, c1, r1 = AOI_PX
    grid = make_grid(SIZE, SIZE, tile_size=64, overlap=16)
    return {
        _key(s.window)
        for s in grid
        if s.window.col_off < c1
        and s.window.col_end > c0
        and s.window.row_off < r1
        and s.window.row_end > r0
    }


def _key(w):
    return (w.col_off, w.row_off, w.width, w.height)


def predictor():
    p = ThresholdPredictor()
    p.tile_size = 64
    return p


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("extent") / "big.tif")


@pytest.fixture
def reads(monkeypatch):
    """Record every window read from the scene (tiles are read with tiling.read_window_raw)."""
    seen = []
    real = geoseg.tiling.read_window_raw

    def spy(ds, window, **kw):
        seen.append(_key(window))
        return real(ds, window, **kw)

    monkeypatch.setattr(geoseg.tiling, "read_window_raw", spy)
    return seen


def test_small_aoi_in_another_crs_reads_only_its_tiles(scene, tmp_path, reads):
    aoi = aoi_lonlat(tmp_path / "aoi.gpkg")
    pred = predictor()
    out = tmp_path / "aoi_run.gpkg"
    result = run_scene(scene, pred, output=out, extent=read_aoi(aoi))
    want = expected_tiles()
    assert len(want) == 16 and len(make_grid(SIZE, SIZE, tile_size=64, overlap=16)) == 169
    assert set(reads) == want and len(reads) == 16  # each tile read once, no other
    assert pred.tiles_seen == 16 and result.tiles_total == 16 and result.n_tiles == 16
    # objects: those whose centroid lies in the AOI (9 grid ships + the inner straddler)
    c0, r0, c1, r1 = AOI_PX
    inside = [s for s in SHIPS if c0 <= s[0] + s[2] / 2 < c1 and r0 <= s[1] + s[3] / 2 < r1]
    assert STRADDLE_IN in inside and STRADDLE_OUT not in inside and len(inside) == 10
    assert result.counts["ship"] == len(inside) == len(result.gdf)
    got = sorted(tuple(np.round(g.bounds, 6)) for g in result.gdf.geometry)
    want_boxes = sorted((*px_to_crs(x, y + h), *px_to_crs(x + w, y)) for x, y, w, h in inside)
    np.testing.assert_allclose(got, want_boxes)
    assert result.gdf["id"].tolist() == list(range(1, len(inside) + 1))


def test_aoi_rule_is_count_rule(scene, tmp_path):
    """What predict --aoi keeps is what count --aoi counts in the AOI over a whole-scene run."""
    aoi = aoi_lonlat(tmp_path / "aoi.geojson")
    full = run_scene(scene, predictor(), output=tmp_path / "full.gpkg")
    part = run_scene(scene, predictor(), output=tmp_path / "part.gpkg", extent=read_aoi(aoi))
    assert len(full.gdf) == len(SHIPS)
    zones_full = count(tmp_path / "full.gpkg", aoi=aoi).zones
    zones_part = count(tmp_path / "part.gpkg", aoi=aoi).zones
    assert zones_full["count_total"].tolist() == [len(part.gdf)]
    assert zones_part["count_total"].tolist() == [len(part.gdf)]  # nothing kept outside
    kept = full.gdf[in_zones(full.gdf, gpd.read_file(aoi))]
    assert sorted(g.wkb for g in kept.geometry) == sorted(g.wkb for g in part.gdf.geometry)


def test_bbox_in_scene_crs_and_in_lonlat_agree(scene, tmp_path):
    c0, r0, c1, r1 = AOI_PX
    (x0, y1), (x1, y0) = px_to_crs(c0, r0), px_to_crs(c1, r1)
    in_scene = run_scene(scene, predictor(), extent=bbox_extent((x0, y0, x1, y1)))
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_ll.transform(x0, y0)
    lon1, lat1 = to_ll.transform(x1, y1)
    # a lon/lat box is not the same square in UTM, but close enough to keep the same objects
    in_ll = run_scene(scene, predictor(), extent=bbox_extent((lon0, lat0, lon1, lat1), "EPSG:4326"))
    assert in_scene.counts == in_ll.counts == {"ship": 10, "vehicle": 0}
    assert in_scene.tiles_total == 16
    # the same numbers read as scene-CRS metres miss the scene: nothing to read, an empty
    # Polygon layer (a user who forgot --bbox-crs gets an error from the CLI, below)
    empty = run_scene(
        scene,
        predictor(),
        output=tmp_path / "none.gpkg",
        extent=bbox_extent((lon0, lat0, lon1, lat1)),
    )
    assert empty.tiles_total == 0 and len(empty.gdf) == 0
    assert pyogrio.read_info(tmp_path / "none.gpkg")["geometry_type"] == "Polygon"


def test_select_tiles_uses_windows_not_cores():
    """A tile whose core misses the area but whose overlap meets it is read."""
    from geoseg.types import SceneInfo

    info = SceneInfo(
        path="x.tif",
        width=SIZE,
        height=SIZE,
        count=3,
        dtype="uint8",
        crs_wkt=None,
        transform=Affine.identity(),
        nodata=None,
    )
    specs = make_grid(SIZE, SIZE, tile_size=64, overlap=16)
    picked = select_tiles(specs, shapely.box(50, 50, 52, 52), info)
    # columns/rows 50-52 lie in the windows starting at 0 (0-64) and 48 (48-112)
    assert {(specs[i].window.col_off, specs[i].window.row_off) for i in picked} == {
        (0, 0),
        (48, 0),
        (0, 48),
        (48, 48),
    }


def test_bbox_mistakes_are_refused():
    with pytest.raises(ConfigError, match="minx must be below maxx"):
        bbox_extent((10, 0, 5, 3))
    with pytest.raises(ConfigError, match="four numbers"):
        parse_bbox("1,2,3")
    with pytest.raises(ConfigError, match="four numbers"):
        parse_bbox("1,2,x,4")
    with pytest.raises(ConfigError, match="unknown CRS"):
        bbox_extent((0, 0, 1, 1), "EPSG:999999")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_aoi_without_crs_or_polygons_is_refused(tmp_path):
    path = tmp_path / "nocrs.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]).to_file(path)
    with pytest.raises(LabelError, match=r"nocrs\.gpkg"):
        read_aoi(path)
    pts = tmp_path / "points.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326).to_file(pts)
    with pytest.raises(LabelError, match=r"points\.gpkg"):
        read_aoi(pts)


def test_extent_is_part_of_the_digest(scene, tmp_path):
    a = resolve(None)
    b = a.replace(extent=bbox_extent((0, 0, 1, 1)))
    c = a.replace(extent=bbox_extent((0, 0, 1, 2)))
    assert len({a.digest(), b.digest(), c.digest()}) == 3
    assert a.digest() == resolve(None, geometry="mask").digest()  # defaults leave it as it was
    with pytest.raises(ConfigError, match="Extent"):
        a.replace(extent="aoi.gpkg")


def test_per_scene_aoi(tmp_path):
    path = tmp_path / "zones.gpkg"
    gpd.GeoDataFrame(
        {"scene": ["a", "b", "a"]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6), shapely.box(1, 0, 2, 1)],
        crs=32633,
    ).to_file(path)
    ext = read_aoi(path)
    assert ext.for_scene("a").geometry().equals(shapely.box(0, 0, 2, 1))
    assert ext.for_scene("b").geometry().equals(shapely.box(5, 5, 6, 6))
    ext.check_scenes(["a", "b"])
    with pytest.raises(ConfigError, match=r"no feature for scene\(s\) c"):
        ext.check_scenes(["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"features for scene\(s\) b that are not inputs"):
        ext.check_scenes(["a"])
    with pytest.raises(ConfigError, match="no feature for scene 'c'"):
        ext.for_scene("c")
    plain = Extent(wkt=shapely.box(0, 0, 1, 1).wkt)
    assert plain.for_scene("anything") is plain


def test_batch_job_gives_each_scene_its_area(tmp_path):
    from geoseg.batch.inputs import SceneInput
    from geoseg.batch.tasks import Job

    path = tmp_path / "zones.gpkg"
    gpd.GeoDataFrame(
        {"scene": ["a", "b"]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(5, 5, 6, 6)],
        crs=32633,
    ).to_file(path)
    settings = resolve(None, extent=read_aoi(path))
    job = Job("m", "0" * 64, settings, "h", str(tmp_path), ".gpkg")
    got = job.settings_for(SceneInput(name="b", path="b.tif")).extent
    assert got is not None and got.geometry().equals(shapely.box(5, 5, 6, 6))


def test_plan_only_touches_the_extent(scene):
    plan = plan_scene(scene, predictor(), extent=bbox_extent((X0, Y0 - 10, X0 + 10, Y0)))
    assert plan.tiles == (0,) and plan.tile_indexes == (0,) and len(plan.specs) == 169


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_checkpoint_factory):
    return tiny_checkpoint_factory("tiny_extent", classes=("ship", "vehicle"), tile_size=64)


def test_cli_bbox_that_misses_the_scene_fails_before_the_model(
    scene, tmp_path, tiny_checkpoint, monkeypatch
):
    import geoseg.predict

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(geoseg.predict, "load_predictor", boom)
    out = tmp_path / "o.gpkg"
    args = ["predict", str(scene), "-m", str(tiny_checkpoint), "-o", str(out)]
    r = CliRunner().invoke(cli, [*args, "--bbox", "15.0,36.1,15.01,36.11"])
    assert r.exit_code == 1 and "does not overlap the scene" in r.output
    assert "--bbox-crs EPSG:4326" in r.output and not out.exists()
    r = CliRunner().invoke(cli, [*args, "--bbox", "1,2,3"])
    assert r.exit_code == 1 and "four numbers" in r.output
    r = CliRunner().invoke(cli, [*args, "--bbox", "0,0,1,1", "--aoi", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 2 and "give one" in r.output
    r = CliRunner().invoke(cli, [*args, "--aoi", str(out)])  # the AOI is an input
    assert r.exit_code == 1 and "o.gpkg" in r.output
    r = CliRunner().invoke(cli, [*args, "--bbox-crs", "EPSG:4326"])
    assert r.exit_code == 2 and "--bbox" in r.output


def test_cli_predict_with_aoi_runs(scene, tmp_path, tiny_checkpoint):
    aoi = aoi_lonlat(tmp_path / "aoi.gpkg")
    out = tmp_path / "o.gpkg"
    r = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", str(tiny_checkpoint), "-o", str(out), "--aoi", str(aoi)]
    )
    assert r.exit_code == 0, r.output
    assert "16 tiles" in r.output  # of 169
    assert pyogrio.read_info(out)["geometry_type"] == "Polygon"


# ---------------------------------------------------------------------------------- batch


@pytest.fixture(scope="module")
def local_cluster():
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as lc:
        yield lc


def test_batch_per_scene_aoi_split_and_classes(scene, tmp_path, tiny_checkpoint, local_cluster):
    """Each scene reads only the tiles of its own AOI features, also when split over chunks,
    and gives what run_scene gives with that area."""
    import json
    import shutil

    from geoseg.predict import load_predictor

    other = tmp_path / "other.tif"
    shutil.copyfile(scene, other)
    big = tmp_path / "big.tif"
    shutil.copyfile(scene, big)
    c0, r0, c1, r1 = AOI_PX
    (x0, y1), (x1, y0) = px_to_crs(c0, r0), px_to_crs(c1, r1)
    zones = tmp_path / "zones.gpkg"
    gpd.GeoDataFrame(
        {"scene": ["big", "other", "other"]},
        geometry=[
            shapely.box(x0, y0, x1, y1),  # 16 tiles
            shapely.box(X0 + 1, Y0 - 20, X0 + 10, Y0 - 1),  # the top-left tile
            shapely.box(X0 + 300, Y0 - 20, X0 + 301, Y0 - 1),  # and the top-right one
        ],
        crs=32633,
    ).to_file(zones)
    base = ["batch", str(big), str(other), "-m", str(tiny_checkpoint), "-o", str(tmp_path / "o")]
    base += ["--scheduler", local_cluster.scheduler_address, "--min-score", "0.05"]
    # mistakes first: nothing runs
    r = CliRunner().invoke(cli, [*base, "--aoi", str(zones), "--classes", "boat"])
    assert r.exit_code == 1 and "ship, vehicle" in r.output
    lone = tmp_path / "lone.gpkg"
    gpd.read_file(zones).iloc[:1].to_file(lone)
    r = CliRunner().invoke(cli, [*base, "--aoi", str(lone)])
    assert r.exit_code == 1 and "no feature for scene(s) other" in r.output
    assert not (tmp_path / "o").exists()
    args = [*base, "--aoi", str(zones), "--classes", "ship", "--split-tiles", "4"]
    r = CliRunner().invoke(cli, [*args, "--geometry", "point"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    records = manifest["scenes"]
    assert records["big"]["n_tiles"] == 16 and records["other"]["n_tiles"] == 2
    assert records["big"]["split_chunks"] >= 2
    # the same as run_scene with each scene's area
    settings = resolve(None, tile_size=64, min_score=0.05, classes=("ship",), geometry="point")
    pred = load_predictor(tiny_checkpoint, settings.replace(device="cpu"))
    for name in ("big", "other"):
        ref = run_scene(
            tmp_path / f"{name}.tif",
            pred,
            settings.replace(extent=read_aoi(zones).for_scene(name)),
            output=tmp_path / f"ref_{name}.gpkg",
        )
        assert records[name]["counts"] == ref.counts == {"ship": ref.counts["ship"]}
        out = tmp_path / "o" / f"{name}.gpkg"
        assert pyogrio.read_info(out)["geometry_type"] == "Point"
        a, b = gpd.read_file(out), gpd.read_file(tmp_path / f"ref_{name}.gpkg")
        assert sorted(g.wkb for g in a.geometry) == sorted(g.wkb for g in b.geometry)
