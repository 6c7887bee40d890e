"""Tests of geoseg.synth and `geoseg synth`: exact labels, determinism, georeference, formats."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio import features

from geoseg.errors import ConfigError, GeosegError
from geoseg.synth import (
    CLASSES,
    BandSet,
    Layout,
    SceneSpec,
    generate_scene,
    render_object_ids,
    scene_labels,
)
from geoseg.types import PixelWindow


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def marina(tmp_path_factory):
    out = tmp_path_factory.mktemp("marina") / "marina.tif"
    return generate_scene(out, size=512, seed=5, layout="marina")


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    out = tmp_path_factory.mktemp("town") / "town.tif"
    return generate_scene(out, size=512, seed=2, layout=Layout.TOWN)


@pytest.fixture(scope="module")
def multiband(tmp_path_factory):
    out = tmp_path_factory.mktemp("mb") / "mb.tif"
    return generate_scene(
        out,
        size=(448, 384),
        seed=9,
        layout="marina",
        bands="rgbn",
        dtype="uint16",
        nodata_collar=True,
    )


# ---- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_pixels_and_labels(tmp_path, marina):
    again = generate_scene(tmp_path / "again.tif", size=512, seed=5, layout="marina")
    a, b = _read(marina.raster_path), _read(again.raster_path)
    assert a.tobytes() == b.tobytes()
    la, lb = gpd.read_file(marina.labels_path), gpd.read_file(again.labels_path)
    assert list(la.object_id) == list(lb.object_id)
    assert all(ga.equals_exact(gb, 0.0) for ga, gb in zip(la.geometry, lb.geometry, strict=True))
    assert again.counts == marina.counts


def test_different_seed_gives_different_pixels(tmp_path, marina):
    other = generate_scene(tmp_path / "other.tif", size=512, seed=6, layout="marina")
    a, b = _read(marina.raster_path), _read(other.raster_path)
    assert a.shape == b.shape
    assert np.mean(a != b) > 0.5


def test_blocks_are_seamless(tmp_path):
    """Rendering in 256 px blocks gives the same pixels as 512 px blocks (global noise)."""
    a = generate_scene(tmp_path / "a.tif", size=(600, 520), seed=4, block_size=256)
    b = generate_scene(tmp_path / "b.tif", size=(600, 520), seed=4, block_size=512)
    assert _read(a.raster_path).tobytes() == _read(b.raster_path).tobytes()


# ---- exact labels --------------------------------------------------------------------------------


def _per_object_iou(scene):
    ids = render_object_ids(scene.spec)
    labels = gpd.read_file(scene.labels_path)
    with rasterio.open(scene.raster_path) as ds:
        transform, shape = ds.transform, (ds.height, ds.width)
    assert ids.shape == shape
    ious = {}
    for oid, geom in zip(labels.object_id, labels.geometry, strict=True):
        drawn = ids == oid
        burnt = features.rasterize([(geom, 1)], out_shape=shape, transform=transform).astype(bool)
        union = (drawn | burnt).sum()
        ious[int(oid)] = (drawn & burnt).sum() / union if union else 1.0
    return ids, labels, ious


@pytest.mark.parametrize("name", ["marina", "town", "multiband"])
def test_rasterised_labels_reproduce_drawn_footprints(name, request):
    scene = request.getfixturevalue(name)
    ids, labels, ious = _per_object_iou(scene)
    assert len(labels) > 20
    assert min(ious.values()) >= 0.95
    # every drawn object has a label, and every label was drawn
    drawn = set(np.unique(ids)) - {0}
    assert drawn == set(labels.object_id.astype(int))


def test_labels_columns_classes_and_counts(town):
    labels = gpd.read_file(town.labels_path)
    assert {"object_id", "class", "subtype", "length_m", "width_m", "heading_deg"} <= set(
        labels.columns
    )
    assert set(labels["class"]) <= set(CLASSES)
    assert labels.object_id.is_unique
    assert town.counts == {c: int((labels["class"] == c).sum()) for c in CLASSES}
    assert town.counts["vehicle"] > 0 and town.counts["building"] > 0
    assert (labels.geometry.geom_type == "Polygon").all() and labels.geometry.is_valid.all()


def test_scene_labels_match_written_labels(town):
    in_memory = scene_labels(town.spec)
    written = gpd.read_file(town.labels_path)
    assert list(in_memory.object_id) == list(written.object_id)


def test_same_class_objects_never_overlap(marina, town):
    for scene in (marina, town):
        labels = gpd.read_file(scene.labels_path)
        for cls in CLASSES:
            geoms = labels.geometry[labels["class"] == cls].to_numpy()
            tree = shapely.STRtree(geoms)
            left, right = tree.query(geoms, predicate="intersects")
            pairs = left < right
            if pairs.any():
                inter = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
                assert inter.max() < 1e-6


def _touching_pairs(ids, labels, cls):
    keep = set(labels.object_id[labels["class"] == cls].astype(int))
    n = 0
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs = {(int(x), int(y)) for x, y in zip(a[touch], b[touch], strict=True)}
        n += sum(1 for x, y in pairs if x in keep and y in keep)
    return n


def test_marina_has_touching_boats(marina):
    ids = render_object_ids(marina.spec)
    labels = gpd.read_file(marina.labels_path)
    assert _touching_pairs(ids, labels, "ship") >= 5


def test_town_has_touching_cars(town):
    ids = render_object_ids(town.spec)
    labels = gpd.read_file(town.labels_path)
    assert _touching_pairs(ids, labels, "vehicle") >= 5


def test_ships_on_water_vehicles_and_buildings_on_land(marina):
    import math

    from geoseg.synth.cells import _CELL, _Kind
    from geoseg.synth.world import _World

    world = _World(marina.spec)
    labels = scene_labels(marina.spec)
    inv = ~marina.transform
    water_kinds = {_Kind.WATER, _Kind.MARINA, _Kind.QUAY}
    for cls, geom in zip(labels["class"], labels.geometry, strict=True):
        col, row = inv @ (geom.representative_point().x, geom.representative_point().y)
        mx, my = col * marina.spec.gsd, row * marina.spec.gsd
        u, v = world._uv(mx, my)
        kind = world.kind(math.floor(u / _CELL), math.floor(v / _CELL))
        assert (kind in water_kinds) == (cls == "ship"), (cls, kind)
        if kind is _Kind.WATER:
            assert world.land_fn(mx, my) < 0


def test_render_object_ids_window_matches_full_scene(town):
    full = render_object_ids(town.spec)
    win = PixelWindow(100, 130, 200, 150)
    part = render_object_ids(town.spec, window=win)
    assert np.array_equal(part, full[130:280, 100:300])


def test_objects_stand_out_from_their_surroundings(town):
    """Footprints are visible: their mean colour differs from a 2-pixel ring around them."""
    from scipy import ndimage

    img = _read(town.raster_path).astype(np.float32)
    ids = render_object_ids(town.spec)
    labels = gpd.read_file(town.labels_path)
    contrasts = {c: [] for c in CLASSES}
    for oid, cls in zip(labels.object_id, labels["class"], strict=True):
        inside = ids == oid
        ring = ndimage.binary_dilation(inside, iterations=2) & (ids == 0)
        if inside.sum() < 4 or ring.sum() < 4:
            continue
        diff = np.abs(img[:, inside].mean(axis=1) - img[:, ring].mean(axis=1)).max()
        contrasts[cls].append(diff)
    assert np.median(contrasts["vehicle"]) > 20
    assert np.median(contrasts["building"]) > 20


def test_real_world_sizes(town, marina):
    labels = gpd.read_file(town.labels_path)
    veh = labels[labels["class"] == "vehicle"]
    assert veh.length_m.between(4.0, 12.0).all() and veh.width_m.between(1.6, 2.6).all()
    labels = gpd.read_file(marina.labels_path)
    ships = labels[labels["class"] == "ship"]
    assert ships.length_m.between(7.5, 150.0).all()
    # the label polygon's extent agrees with the stated length
    rect = ships.geometry.minimum_rotated_rectangle()
    for geom, length in zip(rect, ships.length_m, strict=True):
        xy = np.asarray(geom.exterior.coords)
        sides = np.hypot(*np.diff(xy[:3], axis=0).T)
        assert abs(sides.max() - length) < 0.05 * length + 0.1


# ---- georeference --------------------------------------------------------------------------------


def test_crs_transform_and_gsd(tmp_path):
    scene = generate_scene(tmp_path / "g.tif", size=(320, 256), seed=1, gsd=0.3, epsg=32631)
    with rasterio.open(scene.raster_path) as ds:
        assert ds.crs.to_epsg() == 32631
        assert (ds.width, ds.height) == (320, 256)
        t = ds.transform
        assert t.a == pytest.approx(0.3) and t.e == pytest.approx(-0.3)
        assert t.b == 0 and t.d == 0
        assert t == scene.transform == scene.spec.transform
        bounds = ds.bounds
    labels = gpd.read_file(scene.labels_path)
    assert labels.crs.to_epsg() == 32631
    if len(labels):
        x0, y0, x1, y1 = labels.total_bounds
        assert bounds.left <= x0 and x1 <= bounds.right
        assert bounds.bottom <= y0 and y1 <= bounds.top


def test_gsd_scales_objects_in_pixels(tmp_path):
    """Objects have sizes in metres: their pixel count is their area / gsd**2 at any GSD."""
    for gsd in (0.5, 0.25):
        scene = generate_scene(tmp_path / f"g{gsd}.tif", size=384, seed=3, layout="town", gsd=gsd)
        labels = gpd.read_file(scene.labels_path)
        assert len(labels) > 5
        drawn = int((render_object_ids(scene.spec) > 0).sum())
        expected = labels.geometry.area.sum() / gsd**2
        assert drawn == pytest.approx(expected, rel=0.03)


def test_coarse_gsd_leaves_out_sub_pixel_objects(tmp_path):
    scene = generate_scene(tmp_path / "c.tif", size=160, seed=2, layout="town", gsd=2.0)
    labels = gpd.read_file(scene.labels_path)
    assert len(labels) > 0 and (labels.width_m >= 2.0).all()
    assert "car" not in set(labels.subtype)
    drawn = set(np.unique(render_object_ids(scene.spec))) - {0}
    assert drawn == set(labels.object_id.astype(int))


# ---- formats -------------------------------------------------------------------------------------


def test_tiled_compressed_with_overviews(marina):
    with rasterio.open(marina.raster_path) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint8"
        assert ds.profile["tiled"]
        assert ds.block_shapes[0] in ((256, 256), (512, 512))
        assert ds.compression is not None
        assert ds.overviews(1)[:2] == [2, 4]
        assert ds.nodata is None


def test_nodata_collar(multiband):
    labels = gpd.read_file(multiband.labels_path)
    with rasterio.open(multiband.raster_path) as ds:
        assert ds.nodata == 0
        data = ds.read()
        transform = ds.transform
    invalid = (data == 0).all(axis=0)
    assert 0.05 < invalid.mean() < 0.5
    # not a rectangle: the valid pixels fill clearly less than their bounding box
    rows, cols = np.nonzero(~invalid)
    bbox = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert (~invalid).sum() < 0.9 * bbox
    # valid pixels never hold the nodata value in any band
    assert not (data[:, ~invalid] == 0).any()
    # no label reaches into the nodata area
    burnt = features.rasterize(
        [(g, 1) for g in labels.geometry], out_shape=invalid.shape, transform=transform
    ).astype(bool)
    assert burnt.any() and not (burnt & invalid).any()


def test_uint16_uses_11_bits(multiband):
    data = _read(multiband.raster_path)
    assert data.dtype == np.uint16 and data.shape[0] == 4
    valid = data[:, (data > 0).all(axis=0)]
    assert 255 < valid.max() <= 2047


def test_rgbn_vegetation_bright_and_water_dark_in_nir(tmp_path):
    from geoseg.synth.world import _World

    scene = generate_scene(tmp_path / "n.tif", size=512, seed=12, bands=BandSet.RGBN)
    data = _read(scene.raster_path).astype(np.float32)
    world = _World(scene.spec)
    g = scene.spec.gsd
    cols, rows = np.meshgrid(np.arange(512) + 0.5, np.arange(512) + 0.5)
    f = world.land_fn(cols * g, rows * g)
    r, gr, b, nir = data
    water = (f < -30) & (b > r)
    veg = (f > 5) & (gr > r) & (gr > b)
    assert water.sum() > 100 and veg.sum() > 100
    assert nir[veg].mean() > 2.5 * nir[water].mean()
    assert nir[veg].mean() > r[veg].mean()


# ---- errors and CLI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"size": 0}, "size"),
        ({"gsd": -1.0}, "gsd"),
        ({"epsg": 4326}, "epsg"),
        ({"bands": "rgbx"}, "bands"),
        ({"dtype": "float32"}, "dtype"),
        ({"density": 9.0}, "density"),
        ({"layout": "desert"}, "layout"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs, word):
    args = {"size": 64, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=word):
        generate_scene(tmp_path / "x.tif", **args)
    assert not list(tmp_path.iterdir())


def test_missing_output_folder_is_a_geoseg_error(tmp_path):
    with pytest.raises(GeosegError, match="does not exist"):
        generate_scene(tmp_path / "nope" / "x.tif", size=64, seed=0)


def test_spec_create_accepts_width_height():
    spec = SceneSpec.create(size=(300, 200), seed=1, layout="TOWN")
    assert (spec.width, spec.height, spec.layout) == (300, 200, Layout.TOWN)


def test_density_zero_gives_no_objects(tmp_path):
    scene = generate_scene(tmp_path / "z.tif", size=256, seed=1, density=0.0, layout="town")
    assert sum(scene.counts.values()) == 0
    assert len(gpd.read_file(scene.labels_path)) == 0


def test_cli_writes_scene_and_prints_counts(tmp_path):
    from geoseg.cli import cli

    out = tmp_path / "cli.tif"
    result = CliRunner().invoke(
        cli,
        [
            *("synth", "-o", str(out), "--size", "256", "--seed", "3", "--layout", "marina"),
            *("--bands", "rgbn", "--dtype", "uint16", "--nodata-collar", "--density", "1.5"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".gpkg").exists()
    labels = gpd.read_file(out.with_suffix(".gpkg"))
    line = result.output.strip().splitlines()[-1]
    for cls in CLASSES:
        assert f"{int((labels['class'] == cls).sum())} {cls}" in line
    with rasterio.open(out) as ds:
        assert ds.count == 4 and ds.dtypes[0] == "uint16" and ds.nodata == 0


@pytest.mark.parametrize(
    ("extra", "word"),
    [
        (["--size", "abc"], "size"),
        (["--size", "0"], "size"),
        (["--size", "64", "--bands", "rgbx"], "bands"),
        (["--size", "64", "--epsg", "4326"], "epsg"),
        (["--size", "64", "--gsd", "100"], "gsd"),
        (["--size", "64", "--density", "-1"], "density"),
        (["--size", "64", "--layout", "moon"], "layout"),
    ],
)
def test_cli_bad_arguments_are_usage_errors(tmp_path, extra, word):
    from geoseg.cli import cli

    out = tmp_path / "bad.tif"
    result = CliRunner().invoke(cli, ["synth", "-o", str(out), "--seed", "1", *extra])
    assert result.exit_code == 2, result.output
    assert word in result.output.lower()
    assert not out.exists()
