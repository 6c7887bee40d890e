import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from pycocotools.coco import COCO
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import LineString, Point, Polygon, box

from geoseg.chips import format_class_balance, make_chips
from geoseg.cli import cli
from geoseg.errors import ExportError, LabelError
from geoseg.tiling import make_grid
from geoseg.types import NormStats

UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 4000000.0, 0.5
W, H = 300, 260
SIZE, OVERLAP = 128, 16


def px(x, y):
    """Scene pixel (col, row) -> scene CRS (x, y)."""
    return (X0 + RES * x, Y0 - RES * y)


def poly_px(coords, holes=()):
    return Polygon([px(*c) for c in coords], [[px(*c) for c in h] for h in holes])


def box_px(x0, y0, x1, y1):
    return box(*px(x0, y1), *px(x1, y0))


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 3000, (3, H, W), dtype=np.uint16)
    data[:, :, 270:] = 0  # nodata strip on the right
    path = str(tmp_path / "scene.tif")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=3,
        dtype="uint16",
        crs=UTM,
        transform=from_origin(X0, Y0, RES, RES),
        nodata=0,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as ds:
        ds.write(data)
    return path, data


def label_frame():
    rows = [
        # (class, geometry)
        ("building", box_px(10.3, 10.2, 60.7, 50.9)),
        # courtyard building: a hole in the middle
        (
            "building",
            poly_px(
                [(150.2, 20.1), (230.6, 20.1), (230.6, 100.4), (150.2, 100.4)],
                [[(175.3, 45.2), (205.1, 45.2), (205.1, 75.3), (175.3, 75.3)]],
            ),
        ),
        # cut by chip borders: x 120..180 -> a 8-px wide sliver in chip col 0 and col 2
        ("ship", box_px(120.4, 130.3, 179.6, 170.2)),
        ("ship", poly_px([(30.1, 200.3), (70.2, 190.4), (80.3, 230.2), (40.4, 240.1)])),
        ("ship", poly_px([(240.2, 200.3), (262.1, 205.4), (250.3, 250.2)])),
        ("vehicle", box_px(90.2, 60.3, 96.7, 66.1)),
    ]
    return gpd.GeoDataFrame({"class": [r[0] for r in rows]}, geometry=[r[1] for r in rows], crs=UTM)


def chip_reference_mask(chip_path, geom_crs):
    """Independent footprint: rasterise the label (scene CRS) on the chip's own grid."""
    with rasterio.open(chip_path) as c:
        return rasterize(
            [(geom_crs, 1)], out_shape=(c.height, c.width), transform=c.transform, dtype="uint8"
        ).astype(bool)


def test_chips_coco_round_trip(scene, tmp_path):
    path, data = scene
    labels = label_frame()
    lab_path = tmp_path / "labels.gpkg"
    labels.to_file(lab_path)
    out = tmp_path / "chips"
    summary = make_chips(path, lab_path, out, size=SIZE, overlap=OVERLAP, keep_empty_fraction=1.0)
    coco_json = json.loads((out / "annotations.json").read_text())
    coco = COCO(str(out / "annotations.json"))
    assert summary.classes == ("building", "ship", "vehicle")
    assert [c["name"] for c in coco_json["categories"]] == list(summary.classes)
    meta = coco_json["geoseg"]
    assert meta["tile_size"] == SIZE and meta["overlap"] == OVERLAP and meta["bands"] == [1, 2, 3]
    assert meta["gsd"] == pytest.approx(RES) and meta["scene"] == path
    assert NormStats.from_dict(meta["norm_stats"]).bands == (1, 2, 3)
    assert rasterio.crs.CRS.from_wkt(meta["crs_wkt"]) == rasterio.crs.CRS.from_string(UTM)

    # every chip: raw dtype, its window's pixels, georeferenced on the scene grid
    specs = {(s.row, s.col): s for s in make_grid(W, H, tile_size=SIZE, overlap=OVERLAP)}
    assert len(coco_json["images"]) == summary.n_chips > 0
    for im in coco_json["images"]:
        c0, r0, w, h = im["window"]
        assert im["file_name"].startswith("images/") and (w, h) == (SIZE, SIZE)
        with rasterio.open(out / im["file_name"]) as c:
            assert c.dtypes[0] == "uint16" and c.nodata == 0 and c.count == 3
            np.testing.assert_array_equal(c.read(), data[:, r0 : r0 + h, c0 : c0 + w])
            assert c.transform.almost_equals(from_origin(*px(c0, r0), RES, RES))
        assert specs[tuple(im["grid"])].window.col_off == c0

    # every annotation reproduces the label's footprint in its chip (pycocotools decoding)
    ids = set()
    for ann in coco_json["annotations"]:
        assert ann["id"] not in ids and ann["iscrowd"] == 0
        ids.add(ann["id"])
        im = coco.imgs[ann["image_id"]]
        ref = chip_reference_mask(out / im["file_name"], labels.geometry[ann["source_index"]])
        got = coco.annToMask(ann).astype(bool)
        np.testing.assert_array_equal(got, ref)
        assert ann["area"] == ref.sum()
        assert labels["class"][ann["source_index"]] == summary.classes[ann["category_id"] - 1]
        ys, xs = np.nonzero(ref)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]

    # the courtyard is RLE and keeps its hole; hole-free objects are polygons
    court = [a for a in coco_json["annotations"] if a["source_index"] == 1]
    assert court and all(isinstance(a["segmentation"], dict) for a in court)
    simple = [a for a in coco_json["annotations"] if a["source_index"] in (0, 3)]
    assert simple and all(isinstance(a["segmentation"], list) for a in simple)

    # completeness: each (chip, label) pair is annotated unless it is a sliver or empty
    by_pair = {(a["image_id"], a["source_index"]) for a in coco_json["annotations"]}
    for im in coco_json["images"]:
        for i, geom in enumerate(labels.geometry):
            ref = chip_reference_mask(out / im["file_name"], geom)
            c0, r0, w, h = im["window"]
            visible = geom.intersection(box_px(c0, r0, c0 + w, r0 + h)).area / geom.area
            if ref.any() and visible >= 0.25:
                assert (im["id"], i) in by_pair
            if visible < 0.25 and ref.sum() < 1024:
                assert (im["id"], i) not in by_pair
    assert summary.n_slivers >= 2  # the ship cut into 8-px slivers in two chips


def test_sliver_rule_thresholds(scene, tmp_path):
    path, _ = scene
    labels = label_frame()
    strict = make_chips(path, labels, tmp_path / "a", size=SIZE, overlap=OVERLAP)
    lenient = make_chips(
        path, labels, tmp_path / "b", size=SIZE, overlap=OVERLAP, min_visible_pixels=100
    )
    gained = lenient.n_annotations - strict.n_annotations
    assert gained >= 2 and gained == strict.n_slivers - lenient.n_slivers

    def chips_of(out, source):
        coco = json.loads((out / "annotations.json").read_text())
        return sorted(
            tuple(coco["images"][a["image_id"] - 1]["grid"])
            for a in coco["annotations"]
            if a["source_index"] == source
        )

    # the ship spanning x 120..180 px: only its middle chip when strict, all three when lenient
    strict_cells, lenient_cells = chips_of(tmp_path / "a", 2), chips_of(tmp_path / "b", 2)
    rows = sorted({r for r, _ in strict_cells})
    assert strict_cells == [(r, 1) for r in rows]
    assert lenient_cells == [(r, c) for r in rows for c in (0, 1, 2)]


def test_empty_chips_fraction_and_nodata(tmp_path, scene):
    path, _ = scene
    labels = gpd.GeoDataFrame(
        {"class": ["car"]}, geometry=[box_px(10.2, 10.1, 20.3, 20.4)], crs=UTM
    )
    none = make_chips(path, labels, tmp_path / "a", size=64, overlap=0, keep_empty_fraction=0.0)
    assert none.n_empty_chips == 0 and none.n_chips == 1
    every = make_chips(path, labels, tmp_path / "b", size=64, overlap=0, keep_empty_fraction=1.0)
    coco = json.loads((tmp_path / "b" / "annotations.json").read_text())
    # chips whose window is entirely nodata (x >= 270) are never written
    n_grid_valid = sum(
        1 for s in make_grid(W, H, tile_size=64, overlap=0) if s.window.col_off < 270
    )
    assert every.n_chips == n_grid_valid and every.n_empty_chips == n_grid_valid - 1
    assert all(im["window"][0] < 270 for im in coco["images"])
    half = make_chips(path, labels, tmp_path / "c", size=64, overlap=0, keep_empty_fraction=0.5)
    assert 0 < half.n_empty_chips < every.n_empty_chips
    again = make_chips(
        path, labels, tmp_path / "c", size=64, overlap=0, keep_empty_fraction=0.5, overwrite=True
    )
    assert again.n_empty_chips == half.n_empty_chips  # seeded


def test_label_reprojection(scene, tmp_path):
    path, _ = scene
    labels = label_frame()
    a = make_chips(path, labels, tmp_path / "utm", size=SIZE, overlap=OVERLAP)
    geo_path = tmp_path / "labels_wgs84.geojson"
    labels.to_crs("EPSG:4326").to_file(geo_path)
    b = make_chips(path, geo_path, tmp_path / "wgs", size=SIZE, overlap=OVERLAP)
    ca = COCO(str(tmp_path / "utm" / "annotations.json"))
    cb = COCO(str(tmp_path / "wgs" / "annotations.json"))
    assert a.n_annotations == b.n_annotations > 0
    for ann_a, ann_b in zip(ca.dataset["annotations"], cb.dataset["annotations"], strict=True):
        assert ann_a["source_index"] == ann_b["source_index"]
        ma, mb = ca.annToMask(ann_a), cb.annToMask(ann_b)
        inter = np.logical_and(ma, mb).sum()
        assert inter / np.logical_or(ma, mb).sum() > 0.97


def test_label_errors(scene, tmp_path):
    path, _ = scene
    labels = label_frame()
    with pytest.raises(LabelError, match="no CRS"):
        make_chips(path, labels.set_crs(None, allow_override=True), tmp_path / "x")
    far = labels.copy()
    far["geometry"] = far.geometry.translate(50_000, 0)
    with pytest.raises(LabelError, match="overlaps the scene"):
        make_chips(path, far, tmp_path / "x")
    with pytest.raises(LabelError, match="class column"):
        make_chips(path, labels.rename(columns={"class": "kind"}), tmp_path / "x")
    with pytest.raises(LabelError, match="no such file"):
        make_chips(path, tmp_path / "missing.gpkg", tmp_path / "x")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(LabelError, match="cannot read"):
        make_chips(path, bad, tmp_path / "x")


def test_invalid_geometries_repaired_or_reported(scene, tmp_path):
    path, _ = scene
    bowtie = Polygon([px(20.2, 20.1), px(60.3, 60.2), px(60.3, 20.1), px(20.2, 60.2)])
    assert not bowtie.is_valid
    gdf = gpd.GeoDataFrame(
        {"class": ["building", "building", "ship", "ship", "plane"]},
        geometry=[
            bowtie,
            Point(px(100, 100)),
            LineString([px(10, 10), px(90, 90)]),
            box_px(150.2, 150.3, 190.1, 180.4),
            box_px(10.1, 150.3, 40.1, 180.4),
        ],
        crs=UTM,
    )
    s = make_chips(
        path, gdf, tmp_path / "o", size=SIZE, overlap=OVERLAP, classes=["building", "ship"]
    )
    assert s.n_repaired == 1
    assert s.n_dropped_geometry == 2  # the point and the line
    assert s.n_dropped_class == 1  # "plane" is not in classes
    assert s.n_labels == 2
    coco = COCO(str(tmp_path / "o" / "annotations.json"))
    repaired = [a for a in coco.dataset["annotations"] if a["source_index"] == 0]
    assert repaired
    for ann in repaired:
        im = coco.imgs[ann["image_id"]]
        # the intended shape: both lobes of the bow-tie (left and right triangles)
        c = (40.25, 40.15)
        lobes = poly_px([(20.2, 20.1), c, (20.2, 60.2)]).union(
            poly_px([c, (60.3, 60.2), (60.3, 20.1)])
        )
        ref = chip_reference_mask(tmp_path / "o" / im["file_name"], lobes)
        assert ref.any()
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), ref)


def test_output_dir_is_one_per_scene(scene, tmp_path):
    path, _ = scene
    labels = label_frame()
    out = tmp_path / "o"
    first = make_chips(path, labels, out, size=SIZE, overlap=OVERLAP)
    with pytest.raises(ExportError, match="one directory per scene"):
        make_chips(path, labels, out, size=SIZE, overlap=OVERLAP)
    second = make_chips(path, labels, out, size=64, overlap=8, overwrite=True)
    files = sorted(p.name for p in (out / "images").iterdir())
    coco = json.loads((out / "annotations.json").read_text())
    assert files == sorted(im["file_name"].split("/")[1] for im in coco["images"])
    assert second.n_chips != first.n_chips


def test_class_balance_written_and_warned(scene, tmp_path):
    path, _ = scene
    labels = label_frame()
    many = gpd.GeoDataFrame(
        {"class": ["ship"] * 40},
        geometry=[
            box_px(5 + 6 * (i % 20), 140 + 6 * (i // 20), 9 + 6 * (i % 20), 144 + 6 * (i // 20))
            for i in range(40)
        ],
        crs=UTM,
    )
    gdf = gpd.GeoDataFrame(
        {"class": ["vehicle", *many["class"]]},
        geometry=[labels.geometry[5], *many.geometry],
        crs=UTM,
    )
    s = make_chips(
        path, gdf, tmp_path / "o", size=SIZE, overlap=OVERLAP, classes=["ship", "vehicle", "tank"]
    )
    bal = json.loads((tmp_path / "o" / "class_balance.json").read_text())
    by = {b["name"]: b for b in bal["classes"]}
    coco = json.loads((tmp_path / "o" / "annotations.json").read_text())
    ships = [a for a in coco["annotations"] if a["category_id"] == 1]
    assert by["ship"]["instances"] == len(ships)
    assert by["ship"]["objects"] == len({a["source_index"] for a in ships})
    assert by["ship"]["chips"] == len({a["image_id"] for a in ships})
    assert by["ship"]["area_px"]["median"] == np.median([a["area"] for a in ships])
    assert by["ship"]["area_m2"]["max"] == pytest.approx(max(a["area"] for a in ships) * RES * RES)
    assert by["vehicle"]["under_represented"] and by["tank"]["instances"] == 0
    assert not by["ship"]["under_represented"]
    assert any("'vehicle'" in w for w in s.warnings) and any("'tank'" in w for w in s.warnings)
    table = format_class_balance(s.class_balance)
    assert "ship" in table and "under-represented" in table


def test_cli_chips(scene, tmp_path):
    path, _ = scene
    lab_path = tmp_path / "labels.geojson"
    label_frame().to_file(lab_path)
    out = tmp_path / "cli"
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "chips",
            path,
            str(lab_path),
            "-o",
            str(out),
            "--size",
            "64m",
            "--overlap",
            "8",
            "--bands",
            "3,1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "building" in r.output and "instances" in r.output
    coco = json.loads((out / "annotations.json").read_text())
    assert coco["geoseg"]["tile_size"] == 128 and coco["geoseg"]["bands"] == [3, 1]
    with rasterio.open(out / coco["images"][0]["file_name"]) as c:
        assert c.count == 2
    # errors: exit code 1 with a message, no traceback
    r = runner.invoke(cli, ["chips", path, str(lab_path), "-o", str(out)])
    assert r.exit_code == 1 and "one directory per scene" in r.output
    r = runner.invoke(
        cli, ["chips", path, str(lab_path), "-o", str(tmp_path / "z"), "--bands", "7"]
    )
    assert r.exit_code == 1 and "do not exist" in r.output
    r = runner.invoke(
        cli, ["chips", path, str(lab_path), "-o", str(tmp_path / "z"), "--size", "abc"]
    )
    assert r.exit_code == 2
    r = runner.invoke(cli, ["chips", "--help"])
    assert r.exit_code == 0 and "Sliver rule" in r.output


def test_scene_without_crs_and_labels_without_crs(tmp_path):
    data = np.random.default_rng(1).integers(1, 255, (1, 100, 100), dtype=np.uint8)
    p = str(tmp_path / "nocrs.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(
            p, "w", driver="GTiff", width=100, height=100, count=1, dtype="uint8"
        ) as ds:
            ds.write(data)
    gdf = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(10.2, 10.1, 30.3, 30.4)])
    with pytest.warns(UserWarning, match="no CRS"):
        s = make_chips(p, gdf, tmp_path / "o", size=64, overlap=8)
    coco = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert coco["geoseg"]["crs_wkt"] is None and s.n_annotations >= 1
    with pytest.warns(UserWarning), pytest.raises(LabelError, match="scene has no CRS"):
        make_chips(p, gdf.set_crs(UTM), tmp_path / "p", size=64, overlap=8)
