"""Ground resolution is part of the model contract.

A scene's GSD is read from its transform in metres (UTM, EPSG:4326 at any latitude, non-square
pixels); a scene whose GSD differs from the model's is read at the model's, tile by tile with
GDAL resampling, and its objects come back in the scene's own pixels and CRS; chips are cut at
a model's GSD. The last tests run the bundled demo model on one synthetic scene rendered at
0.5 m and warped to 0.3 m and 0.25 m.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.warp import Resampling, reproject
from scipy import ndimage
from shapely.geometry import box

from geoseg.errors import ConfigError
from geoseg.pipeline import finish_scene, plan_scene, predict_tiles, run_scene
from geoseg.predict import PredictorBase
from geoseg.raster import (
    GSD_TOLERANCE,
    ground_sample_distance_m,
    gsd_scale,
    open_scene,
    read_window,
    read_window_raw,
)
from geoseg.settings import RunSettings, resolve
from geoseg.tiling import (
    detections_to_window,
    iter_tiles,
    make_grid,
    plan_working_grid,
    tile_transform,
)
from geoseg.types import PixelWindow, SceneInfo, TileDetections, TileSpec

UTM = "EPSG:32633"


def write(path, data, transform, crs=UTM, nodata=None):
    """Write ``data`` ``[C, H, W]`` as a GeoTIFF."""
    c, h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=c,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def info_for(transform, crs=UTM, size=(1000, 1000)):
    wkt = None if crs is None else rasterio.crs.CRS.from_string(crs).to_wkt()
    return SceneInfo("s.tif", size[0], size[1], 3, "uint8", wkt, transform)


# ------------------------------------------------------------------- scene GSD in metres


def wgs84_metres_per_degree(lat_deg):
    """(east, north) metres per degree on WGS84 at a latitude (radii of curvature)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    s = math.sin(math.radians(lat_deg))
    n = a / math.sqrt(1 - e2 * s * s)  # prime vertical
    m = a * (1 - e2) / (1 - e2 * s * s) ** 1.5  # meridian
    return n * math.cos(math.radians(lat_deg)) * math.pi / 180, m * math.pi / 180


def test_gsd_of_a_utm_scene_and_non_square_pixels():
    assert ground_sample_distance_m(info_for(Affine(0.3, 0, 5e5, 0, -0.3, 4e6))) == (
        pytest.approx(0.3),
        pytest.approx(0.3),
    )
    gx, gy = ground_sample_distance_m(info_for(Affine(0.25, 0, 5e5, 0, -0.5, 4e6)))
    assert (gx, gy) == (pytest.approx(0.25), pytest.approx(0.5))


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_gsd_of_an_epsg4326_scene_in_metres(lat):
    """SpaceNet-style EPSG:4326 scenes: one pixel of 4.5e-6 degrees, at the equator and 60 N."""
    deg = 4.5e-6
    size = 1000
    top = lat + deg * size / 2  # the scene centre lies at ``lat``
    info = info_for(Affine(deg, 0, -43.0, 0, -deg, top), crs="EPSG:4326", size=(size, size))
    east, north = wgs84_metres_per_degree(lat)
    gx, gy = ground_sample_distance_m(info)
    assert gx == pytest.approx(deg * east, rel=1e-3)
    assert gy == pytest.approx(deg * north, rel=1e-3)
    # degrees of longitude shrink with latitude: square in degrees, not in metres
    assert gx == pytest.approx(gy * math.cos(math.radians(lat)), rel=1e-2)
    grid = plan_working_grid(info, tile_size=256, overlap=64, model_gsd=0.5)
    if lat == 0.0:  # 0.50 x 0.50 m: within tolerance, read as it is
        assert not grid.resampled and grid.scene_tile == (256, 256)
    else:  # 0.25 x 0.50 m: resampled along x, about as it is along y
        assert grid.resampled
        assert grid.scene_tile == (round(256 * 0.5 / gx), round(256 * 0.5 / gy))
        assert grid.scene_tile[0] > 500 and abs(grid.scene_tile[1] - 256) <= 2


# ------------------------------------------------------------------ the working grid


def test_gsd_scale_and_its_tolerance():
    assert gsd_scale((0.3, 0.3), 0.5) == (pytest.approx(0.6), pytest.approx(0.6))
    assert gsd_scale((0.5 * (1 + GSD_TOLERANCE) - 1e-9,) * 2, 0.5) is None
    assert gsd_scale((0.56, 0.5), 0.5) is not None  # one axis beyond is enough
    with pytest.raises(ConfigError):
        gsd_scale((0.3, 0.3), 0.0)


def test_working_grid_decisions(caplog):
    scene = info_for(Affine(0.3, 0, 5e5, 0, -0.3, 4e6))
    grid = plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=0.5)
    assert grid.resampled and grid.out_size == 256
    assert grid.scene_tile == (427, 427) and grid.scene_overlap == (107, 107)
    assert grid.scale == (pytest.approx(427 / 256),) * 2
    assert "scene 0.30 m, model 0.50 m: tiles resampled by 0.6" in grid.describe()

    off = plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=0.5, resample=False)
    assert not off.resampled and off.out_size is None and "switched off" in off.describe()
    # an explicit working GSD wins over the model's; here it is the scene's own
    own = plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=0.5, gsd=0.3)
    assert not own.resampled and own.working_gsd == 0.3
    coarse = plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=None, gsd=0.6)
    assert coarse.scene_tile == (512, 512)
    unknown = plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=None)
    assert not unknown.resampled
    with pytest.raises(ConfigError, match="contradict"):
        plan_working_grid(scene, tile_size=256, overlap=64, model_gsd=0.5, gsd=1, resample=False)

    no_crs = info_for(Affine(1, 0, 0, 0, 1, 0), crs=None)
    assert not plan_working_grid(no_crs, tile_size=64, overlap=8, model_gsd=0.5).resampled
    with pytest.raises(ConfigError, match="no CRS"):
        plan_working_grid(no_crs, tile_size=64, overlap=8, model_gsd=0.5, gsd=0.5)

    far = info_for(Affine(5.0, 0, 5e5, 0, -5.0, 4e6))
    with caplog.at_level("WARNING", logger="geoseg.tiling"):
        plan_working_grid(far, tile_size=256, overlap=64, model_gsd=0.5)
    assert "poorer results" in caplog.text


def test_grids_with_rectangular_windows_partition_the_scene():
    specs = make_grid(1000, 300, tile_size=(512, 256), overlap=(128, 64))
    assert {(s.window.width, s.window.height) for s in specs} == {(512, 256)}
    cover = np.zeros((300, 1000), np.int64)
    for s in specs:
        c = s.core
        cover[c.row_off : c.row_end, c.col_off : c.col_end] += 1
    assert (cover == 1).all()


# ------------------------------------------------------------------- resampled reads


@pytest.fixture
def blocky(tmp_path):
    """A 0.25 m scene of 2 x 2 blocks of random values: its exact 0.5 m version is known."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 250, size=(3, 40, 40), dtype=np.uint8)
    fine = np.kron(coarse, np.ones((1, 2, 2), np.uint8))
    path = write(tmp_path / "blocky.tif", fine, Affine(0.25, 0, 5e5, 0, -0.25, 4e6))
    return path, coarse


def test_resampled_read_shape_values_and_transform(blocky):
    path, coarse = blocky
    window = PixelWindow(16, 8, 64, 48)
    with rasterio.open(path) as ds:
        image, valid = read_window(ds, window, bands=(1, 2, 3), stats=None, out_shape=(24, 32))
    assert image.shape == (3, 24, 32) and valid.shape == (24, 32) and valid.all()
    # averaging each 2 x 2 block gives the 0.5 m scene back exactly
    np.testing.assert_array_equal(image, coarse[:, 4:28, 8:40].astype(np.float32))
    t = tile_transform(open_scene(path).transform, window, (24, 32))
    assert (t.a, t.e) == (pytest.approx(0.5), pytest.approx(-0.5))
    assert t @ (0, 0) == open_scene(path).transform @ (16, 8)  # same corner
    assert t @ (32, 24) == pytest.approx(open_scene(path).transform @ (80, 56))


def test_resampled_read_enlarges_and_pads(blocky):
    path, _ = blocky
    with rasterio.open(path) as ds:
        image, valid = read_window(
            ds, PixelWindow(0, 0, 20, 20), bands=(1,), stats=None, out_shape=(50, 50)
        )
        assert image.shape == (1, 50, 50) and valid.all()
        # a window running past the 80 x 80 scene: output pixels whose centre is inside
        image, valid = read_window(
            ds, PixelWindow(48, 48, 64, 64), bands=(1,), stats=None, out_shape=(32, 32)
        )
    inside = (np.arange(32) + 0.5) * 2 < 32  # 32 scene pixels remain along each axis
    np.testing.assert_array_equal(valid, np.outer(inside, inside))
    assert (image[:, ~valid] == 0).all()


def test_resampled_read_keeps_nodata_out_of_the_average(tmp_path):
    data = np.full((1, 8, 8), 100, np.uint8)
    data[:, :, :3] = 0  # three columns of nodata
    path = write(tmp_path / "nd.tif", data, Affine(0.25, 0, 5e5, 0, -0.25, 4e6), nodata=0)
    with rasterio.open(path) as ds:
        image, valid = read_window(
            ds, PixelWindow(0, 0, 8, 8), bands=(1,), stats=None, out_shape=(4, 4)
        )
    assert valid[:, 0].sum() == 0 and valid[:, 1:].all()
    assert (image[0, :, 1:] == 100).all()  # column 1 mixes nodata and 100: 100, not 50

    t = Affine(0.25, 0, 5e5, 0, -0.25, 4e6)
    masked = write(tmp_path / "mask.tif", np.full((3, 8, 8), 100, np.uint8), t)
    with rasterio.open(masked, "r+") as ds:  # an internal mask instead of a nodata value
        ds.write_mask(np.where(np.arange(8) < 3, 0, 255).astype(np.uint8)[None, :].repeat(8, 0))
    with rasterio.open(masked) as ds:
        image, valid = read_window(
            ds, PixelWindow(0, 0, 8, 8), bands=(1, 2, 3), stats=None, out_shape=(4, 4)
        )
        chip, chip_valid = read_window_raw(  # raw, for chips; padded past the scene
            ds, PixelWindow(0, 0, 12, 12), bands=(1, 2, 3), out_shape=(6, 6)
        )
    assert valid[:, 0].sum() == 0 and valid[:, 1:].all() and (image[:, :, 1:] == 100).all()
    assert chip.shape == (3, 6, 6) and chip.dtype == np.uint8
    np.testing.assert_array_equal(chip_valid[:4, :4], valid)
    assert not chip_valid[4:].any() and not chip_valid[:, 4:].any()


def test_iter_tiles_at_another_gsd(blocky):
    path, _ = blocky
    tiles = list(iter_tiles(path, tile_size=(48, 48), overlap=(16, 16), out_size=24))
    assert len(tiles) == 4
    for t in tiles:
        assert t.image.shape == (3, 24, 24) and t.valid.shape == (24, 24)
        assert t.spec.window.width == 48  # the grid stays in scene pixels
        assert t.transform.a == pytest.approx(0.5)
        assert t.transform @ (0, 0) == open_scene(path).transform @ (
            t.spec.window.col_off,
            t.spec.window.row_off,
        )


# ---------------------------------------------------------------- detections mapped back


def tile_dets(window, boxes, masks):
    return TileDetections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.full(len(masks), 0.9, np.float32),
        labels=np.zeros(len(masks), np.int64),
        mask_boxes=np.asarray(boxes, np.int32).reshape(-1, 4),
        masks=tuple(masks),
        classes=("ship",),
        tile=TileSpec(0, 0, 0, window, window),
    )


def test_detections_mapped_back_exactly_for_integer_factors():
    rng = np.random.default_rng(1)
    mask = rng.random((5, 7)) > 0.4
    dets = tile_dets(PixelWindow(100, 40, 128, 128), [(3, 4, 10, 9)], [mask])
    up = detections_to_window(dets, (64, 64))  # 0.5 m model on a 0.25 m scene: x2
    np.testing.assert_array_equal(up.boxes, [[6, 8, 20, 18]])
    np.testing.assert_array_equal(up.mask_boxes, [[6, 8, 20, 18]])
    np.testing.assert_array_equal(up.masks[0], np.kron(mask, np.ones((2, 2), bool)))
    assert up.tile is dets.tile

    blocks = np.kron(mask, np.ones((2, 2), bool))  # a mask made of 2 x 2 blocks
    dets = tile_dets(PixelWindow(0, 0, 32, 32), [(4, 6, 18, 16)], [blocks])
    down = detections_to_window(dets, (64, 64))  # a 1 m scene: x0.5
    np.testing.assert_array_equal(down.mask_boxes, [[2, 3, 9, 8]])
    np.testing.assert_array_equal(down.masks[0], mask)

    same = tile_dets(PixelWindow(0, 0, 64, 64), [(1, 1, 3, 3)], [np.ones((2, 2), bool)])
    assert detections_to_window(same, (64, 64)) is same


def test_detections_mapped_back_for_other_factors():
    window = PixelWindow(0, 0, 427, 427)  # a 0.3 m scene, 256 px tiles of a 0.5 m model
    disk = np.hypot(*np.mgrid[-10:10, -10:10] + 0.5) < 9
    speck = np.ones((1, 1), bool)
    dets = tile_dets(window, [(100, 50, 120, 70), (250, 250, 251, 251)], [disk, speck])
    out = detections_to_window(dets, (256, 256))
    s = 427 / 256
    assert len(out) == 2  # enlarging never loses a mask
    assert out.masks[0].sum() == pytest.approx(disk.sum() * s * s, rel=0.08)
    np.testing.assert_allclose(out.boxes[0], np.array([100, 50, 120, 70]) * s, rtol=1e-5)
    x1, y1, x2, y2 = out.mask_boxes[1]
    assert x2 <= 427 and y2 <= 427 and out.masks[1].shape == (y2 - y1, x2 - x1)
    # shrinking may leave an object smaller than a scene pixel without pixels: dropped
    small = tile_dets(
        PixelWindow(0, 0, 16, 16), [(2, 2, 3, 3), (5, 5, 6, 6)], [speck, speck.copy()]
    )
    kept = detections_to_window(small, (64, 64))
    assert len(kept) == 1 and kept.masks[0].any()


# ------------------------------------------------------------- the pipeline, end to end

SQUARES_M = [(10.0, 10.0), (31.0, 14.0), (60.0, 30.0), (14.0, 47.0), (45.0, 60.0)]


class SquarePredictor(PredictorBase):
    """Bright connected components of band 1 as ``ship``: any GSD, no knowledge of tiles."""

    classes = ("ship",)
    gsd = 0.5
    tile_size = 64

    def __init__(self):
        self.shapes = set()

    def predict_tiles(self, tiles):
        out = []
        for t in tiles:
            self.shapes.add(t.image.shape)
            lab, _ = ndimage.label((t.image[0] > 0.5) & t.valid)
            boxes, masks = [], []
            for i, sl in enumerate(ndimage.find_objects(lab)):
                y, x = sl
                boxes.append((x.start, y.start, x.stop, y.stop))
                masks.append(lab[sl] == i + 1)
            out.append(
                TileDetections(
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    scores=np.full(len(boxes), 0.9, np.float32),
                    labels=np.zeros(len(boxes), np.int64),
                    mask_boxes=np.asarray(boxes, np.int32).reshape(-1, 4),
                    masks=tuple(masks),
                    classes=self.classes,
                    tile=t.spec,
                )
            )
        return out


def squares_scene(path, gsd, *, side_m=6.0, extent_m=80.0):
    """Squares of ``side_m`` metres at :data:`SQUARES_M` (top-left corners, metres)."""
    n = round(extent_m / gsd)
    data = np.full((3, n, n), 20, np.uint8)
    for x, y in SQUARES_M:
        c, r, k = round(x / gsd), round(y / gsd), round(side_m / gsd)
        data[:, r : r + k, c : c + k] = 230
    x0, y0 = 500000.0, 4000000.0
    write(path, data, Affine(gsd, 0, x0, 0, -gsd, y0))
    truth = [box(x0 + x, y0 - y - side_m, x0 + x + side_m, y0 - y) for x, y in SQUARES_M]
    return path, truth


@pytest.mark.parametrize("gsd", [0.25, 0.3, 1.0])
def test_run_scene_reads_at_the_model_gsd_and_answers_in_scene_pixels(tmp_path, gsd):
    path, truth = squares_scene(tmp_path / "sq.tif", gsd)
    predictor = SquarePredictor()
    result = run_scene(path, predictor, overlap=16)
    assert predictor.shapes == {(3, 64, 64)}  # the model saw its own tile size
    assert result.grid is not None and result.grid.resampled
    assert result.grid.scene_tile == (round(64 * 0.5 / gsd),) * 2
    assert len(result.gdf) == len(truth)
    assert result.gdf.crs.to_epsg() == 32633
    # scene pixels: masks have the squares' size at the scene's GSD, to a working pixel
    side = 6.0 / gsd
    for area in result.detections.mask_areas():
        assert abs(math.sqrt(area) - side) <= 0.5 / gsd, (gsd, area, side)
    for poly, want in zip(
        sorted(result.gdf.geometry, key=lambda g: g.bounds),
        sorted(truth, key=lambda g: g.bounds),
        strict=True,
    ):
        iou = poly.intersection(want).area / poly.union(want).area
        assert iou > 0.75, (gsd, iou)


def test_resampling_switched_off_reads_scene_pixels(tmp_path):
    path, truth = squares_scene(tmp_path / "sq.tif", 0.25)
    predictor = SquarePredictor()
    result = run_scene(path, predictor, resample=False, overlap=16)
    assert result.grid is not None and not result.grid.resampled
    assert predictor.shapes == {(3, 64, 64)}
    assert result.n_tiles == len(make_grid(320, 320, tile_size=64, overlap=16))
    assert len(result.gdf) == len(truth)


def test_split_scene_steps_give_the_run_scene_answer(tmp_path, caplog):
    """What batch does with a big scene: plan once, predict chunks, finish once."""
    path, _ = squares_scene(tmp_path / "sq.tif", 0.3)
    with caplog.at_level("INFO", logger="geoseg.pipeline"):
        plan = plan_scene(path, SquarePredictor(), overlap=16)
    assert caplog.text.count("tiles resampled by") == 1  # the choice is logged once
    n = len(plan.specs)
    chunks = [predict_tiles(plan, SquarePredictor(), range(k, n, 2)) for k in (0, 1)]
    split = finish_scene(plan, [d for c in chunks for d in c])
    whole = run_scene(path, SquarePredictor(), overlap=16)
    assert sorted(split.gdf.geometry.area.round(6)) == sorted(whole.gdf.geometry.area.round(6))


# ---------------------------------------------------------------------- settings and CLI


def test_settings_carry_the_working_gsd():
    base = RunSettings()
    assert base.gsd is None and base.resample
    assert resolve(None, gsd=0.3).gsd == 0.3
    assert resolve(None, resample=False).describe().count("no resampling") == 1
    assert "GSD 0.3 m" in RunSettings(gsd=0.3).describe()
    digests = {base.digest(), RunSettings(gsd=0.3).digest(), RunSettings(resample=False).digest()}
    assert len(digests) == 3
    assert RunSettings(gsd=0.3).to_dict()["gsd"] == 0.3
    with pytest.raises(ConfigError, match="contradict"):
        RunSettings(gsd=0.3, resample=False)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError):
            RunSettings(gsd=bad)


def test_cli_predict_gsd_options(tmp_path, tiny_checkpoint_factory):
    from geoseg.cli import cli

    model = tiny_checkpoint_factory("tiny_gsd", classes=("ship",), tile_size=64)
    scene, _ = squares_scene(tmp_path / "sq.tif", 0.25, extent_m=40.0)
    r = CliRunner().invoke(cli, ["predict", "--help"])
    assert "--gsd METRES" in r.output and "--no-resample" in r.output
    out = tmp_path / "out.geojson"
    r = CliRunner().invoke(cli, ["predict", str(scene), "-m", str(model), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "scene 0.25 m, model 0.50 m: tiles resampled by 0.5" in r.output
    r = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", str(model), "-o", str(out), "--no-resample"]
    )
    assert r.exit_code == 0 and "switched off" in r.output
    r = CliRunner().invoke(
        cli,
        ["predict", str(scene), "-m", str(model), "-o", str(out), "--gsd", "0.3", "--no-resample"],
    )
    assert r.exit_code == 2 and "contradict" in r.output
    r = CliRunner().invoke(cli, ["batch", "--help"])
    assert "--gsd METRES" in r.output and "--no-resample" in r.output


# ------------------------------------------------------------------------ chips at a GSD


def test_chips_cut_at_the_model_gsd(tmp_path):
    from geoseg.chips import make_chips

    path, truth = squares_scene(tmp_path / "sq.tif", 0.25)  # 320 x 320 px
    labels = gpd.GeoDataFrame({"class": ["ship"] * len(truth)}, geometry=truth, crs=UTM)
    summary = make_chips(
        path,
        labels,
        tmp_path / "chips",
        size=80,
        overlap=0,
        target_gsd=0.5,
        keep_empty_fraction=1.0,
    )
    assert summary.n_chips == 4  # 160 x 160 px at 0.5 m
    coco = json.loads((tmp_path / "chips" / "annotations.json").read_text())
    assert coco["geoseg"]["gsd"] == pytest.approx(0.5)
    assert coco["geoseg"]["gsd_source"] == "resampled"
    scene_t = open_scene(path).transform
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (80, 80) and im["window"][2:] == [160, 160]
        with rasterio.open(tmp_path / "chips" / im["file_name"]) as ds:
            assert (ds.width, ds.height) == (80, 80)
            assert ds.transform.a == pytest.approx(0.5)
            assert ds.transform @ (0, 0) == scene_t @ tuple(im["window"][:2])
            assert ds.read(1).max() == 230  # 2 x 2 averages of the flat squares
    # a 6 m square is 12 x 12 px at 0.5 m
    assert [a["area"] for a in coco["annotations"]] == [144] * len(truth)


def test_split_chips_and_unreferenced_scenes_at_a_target_gsd(tmp_path):
    from geoseg.chips import make_chips, make_split_chips

    path, truth = squares_scene(tmp_path / "sq.tif", 0.25)
    labels = gpd.GeoDataFrame({"class": ["ship"] * len(truth)}, geometry=truth, crs=UTM)
    split = make_split_chips(
        path, labels, tmp_path / "split", val_fraction=0.25, size=40, overlap=8, target_gsd=0.5
    )
    for part in (split.train, split.val):
        coco = json.loads(Path(part.annotations_path).read_text())
        assert coco["geoseg"]["gsd"] == pytest.approx(0.5)
        for im in coco["images"]:  # chips cropped to their part may be smaller
            assert im["width"] <= 40 and im["height"] <= 40
            assert im["window"][2] == pytest.approx(2 * im["width"], abs=1)
    # an image without georeference, its GSD stated: cut at the target GSD too
    with rasterio.open(path) as ds:
        pixels = ds.read()
    bare = tmp_path / "bare.tif"
    with rasterio.open(
        bare, "w", driver="GTiff", width=320, height=320, count=3, dtype="uint8"
    ) as dst:
        dst.write(pixels)
    px_labels = gpd.GeoDataFrame(  # labels in the image's pixels: 24 px = 6 m squares
        {"class": ["ship", "ship"]}, geometry=[box(40, 40, 64, 64), box(200, 100, 224, 124)]
    )
    with pytest.warns(UserWarning):
        summary = make_chips(
            bare, px_labels, tmp_path / "bare", size=80, overlap=0, scene_gsd=0.25, target_gsd=0.5
        )
    coco = json.loads(Path(summary.annotations_path).read_text())
    assert coco["geoseg"]["gsd"] == pytest.approx(0.5) and summary.n_chips >= 2
    assert sorted(a["area"] for a in coco["annotations"]) == [144, 144]
    with pytest.raises(ConfigError, match="no stated GSD"), pytest.warns(UserWarning):
        make_chips(bare, px_labels, tmp_path / "bare2", size=80, overlap=0, target_gsd=0.5)


# ------------------------------------------------------- real scales with the demo model


def warp_to(src_path, dst_path, gsd):
    """The scene resampled to ``gsd`` metres (bilinear, like ``gdalwarp -tr gsd gsd -r
    bilinear``), written as a new GeoTIFF."""
    with rasterio.open(src_path) as src:
        t = src.transform
        width, height = round(src.width * t.a / gsd), round(src.height * -t.e / gsd)
        dst_t = Affine(gsd, 0, t.c, 0, -gsd, t.f)
        profile = src.profile | {"width": width, "height": height, "transform": dst_t}
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, b),
                    rasterio.band(dst, b),
                    dst_transform=dst_t,
                    dst_crs=src.crs,
                    resampling=Resampling.bilinear,
                )
    return dst_path


@pytest.fixture(scope="module")
def town_at_three_gsds(tmp_path_factory):
    """One synthetic town (320 px at 0.5 m, about 150 objects) and its 0.3 m and 0.25 m
    versions."""
    from geoseg.synth import generate_scene

    folder = tmp_path_factory.mktemp("gsd_town")
    scene = generate_scene(folder / "town_0.5.tif", size=320, seed=7, layout="town", gsd=0.5)
    paths = {0.5: scene.raster_path}
    for gsd in (0.3, 0.25):
        paths[gsd] = warp_to(scene.raster_path, folder / f"town_{gsd}.tif", gsd)
    return paths, gpd.read_file(scene.labels_path)


@pytest.fixture(scope="module")
def demo_predictor(demo_model):
    from geoseg.predict import load_predictor

    return load_predictor(demo_model)


def f1(result, truth):
    from geoseg.evaluate import evaluate

    return evaluate(result.gdf, truth).overall.f1


def test_demo_model_finds_the_same_objects_at_0_3_and_0_25_m(town_at_three_gsds, demo_predictor):
    """F1 against the truth at 0.3 m and 0.25 m within 0.05 of the native 0.5 m run."""
    paths, truth = town_at_three_gsds
    native = run_scene(paths[0.5], demo_predictor)
    assert native.grid is not None and not native.grid.resampled
    f_native = f1(native, truth)
    assert f_native > 0.8
    for gsd in (0.3, 0.25):
        result = run_scene(paths[gsd], demo_predictor)
        assert result.grid is not None and result.grid.resampled
        assert result.n_tiles == native.n_tiles  # the same ground per tile
        assert result.gdf.crs == native.gdf.crs
        assert abs(f1(result, truth) - f_native) <= 0.05, (gsd, f1(result, truth), f_native)


@pytest.mark.slow
def test_demo_model_without_resampling_is_clearly_worse(town_at_three_gsds, demo_predictor):
    """What the previous test guards against: the 0.25 m scene read as it is."""
    paths, truth = town_at_three_gsds
    f_native = f1(run_scene(paths[0.5], demo_predictor), truth)
    f_off = f1(run_scene(paths[0.25], demo_predictor, resample=False), truth)
    assert f_off < f_native - 0.3, (f_off, f_native)
