"""Tests for geoseg.export: round trips per format, RFC 7946, shapefile names, atomicity."""

from __future__ import annotations

import json
import os

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from affine import Affine
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pyproj import CRS
from scipy import ndimage

from geoseg.coco import encode_rle_crop
from geoseg.errors import ExportError
from geoseg.export import (
    SHAPEFILE_FIELD_NAMES,
    VectorFormat,
    check_writable,
    format_for_path,
    write_vectors,
)
from geoseg.types import Detections, SceneInfo
from geoseg.vectorize import vectorize

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

UTM = CRS.from_epsg(32633).to_wkt()
TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)
W, H = 90, 70


def scene_info(path="scene.tif"):
    return SceneInfo(
        path=path, width=W, height=H, count=3, dtype="uint8", crs_wkt=UTM, transform=TRANSFORM
    )


@pytest.fixture(scope="module")
def objects():
    rng = np.random.default_rng(1)
    items = []
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(3, 14, 2))
        m = rng.random((h, w)) > 0.2
        m[h // 2, :] = True
        parts, _ = ndimage.label(m)  # one object, one part (vectorize keeps the largest)
        m = parts == 1 + np.argmax(np.bincount(parts.ravel())[1:])
        x1, y1 = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
        items.append((x1, y1, m))
    ring = np.ones((12, 12), bool)
    ring[4:8, 4:8] = False
    items.append((70, 50, ring))
    n = len(items)
    boxes = np.asarray([(x, y, x + m.shape[1], y + m.shape[0]) for x, y, m in items], np.int32)
    det = Detections(
        boxes=boxes.astype(np.float32),
        scores=rng.uniform(0.3, 1, n).astype(np.float32),
        labels=rng.integers(0, 3, n),
        mask_boxes=boxes,
        masks=tuple(m for _, _, m in items),
        classes=("ship", "vehicle", "building"),
    )
    gdf = vectorize(det, transform=TRANSFORM, crs_wkt=UTM, scene="scene.tif")
    assert len(gdf) == n
    return det, gdf


def test_format_for_path():
    assert format_for_path("a/b.GPKG") is VectorFormat.GPKG
    assert format_for_path("x.geojson") is VectorFormat.GEOJSON
    assert format_for_path("x.json") is VectorFormat.COCO  # .json is COCO, everywhere
    assert format_for_path("x.coco.json") is VectorFormat.COCO
    assert format_for_path("x.shp") is VectorFormat.SHAPEFILE
    assert format_for_path("x.parquet") is VectorFormat.PARQUET
    assert format_for_path("x.geoparquet") is VectorFormat.PARQUET
    assert format_for_path("x.fgb") is VectorFormat.FLATGEOBUF
    with pytest.raises(ExportError, match=r"x\.kml.*\.gpkg"):
        format_for_path("x.kml")


@pytest.mark.parametrize("name", ["out.gpkg", "out.parquet", "out.fgb", "sub/dir/out.shp"])
def test_round_trip_keeps_crs_count_attributes(tmp_path, objects, name):
    _, gdf = objects
    path = write_vectors(gdf, tmp_path / name)
    assert path == tmp_path / name and path.exists()
    back = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    if path.suffix == ".shp":
        back = back.rename(columns={v: k for k, v in SHAPEFILE_FIELD_NAMES.items()})
    assert len(back) == len(gdf)
    assert CRS.from_user_input(back.crs).equals(CRS.from_wkt(UTM))
    if path.suffix == ".fgb":  # FlatGeobuf stores features in its spatial index's order
        back = back.sort_values("score").reset_index(drop=True)
        gdf = gdf.sort_values("score").reset_index(drop=True)
    for col in ("class", "scene"):
        assert back[col].tolist() == gdf[col].tolist()
    for col in ("score", "area_m2", "length_m", "width_m", "heading_deg"):
        np.testing.assert_allclose(back[col].to_numpy(), gdf[col].to_numpy(), rtol=1e-6)
    for a, b in zip(back.geometry, gdf.geometry, strict=True):
        assert a.symmetric_difference(b).area < 1e-6
    # only the output (and its sidecars) are left in the folder
    leftovers = [p.name for p in path.parent.iterdir() if p.stem != "out"]
    assert leftovers == []


def test_geojson_is_rfc7946_wgs84(tmp_path, objects):
    _, gdf = objects
    path = write_vectors(gdf, tmp_path / "out.geojson")
    doc = json.loads(path.read_text())
    assert "crs" not in doc  # RFC 7946 has no crs member: always WGS84
    assert {f["geometry"]["type"] for f in doc["features"]} == {"Polygon"}  # one object, one
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0][:2]
    assert 14 < lon < 16 and 35 < lat < 37  # UTM 33N, 4000 km north
    back = gpd.read_file(path)
    assert back.crs.to_epsg() == 4326
    assert len(back) == len(gdf)
    ref = gdf.to_crs(4326)
    for a, b in zip(back.geometry, ref.geometry, strict=True):
        assert a.hausdorff_distance(b) < 1e-6  # RFC 7946 keeps 7 decimals (~1 cm)


def test_shapefile_field_names_fit(tmp_path, objects):
    _, gdf = objects
    extra = gdf.assign(a_very_long_name=1, a_very_long_other=2)
    path = write_vectors(extra, tmp_path / "out.shp")
    fields = pyogrio.read_info(path)["fields"].tolist()
    assert all(len(f) <= 10 for f in fields)
    assert "heading" in fields and "heading_deg" not in fields
    assert len(set(fields)) == len(fields) == len(extra.columns) - 1
    for ext in (".shx", ".dbf", ".prj"):
        assert path.with_suffix(ext).exists()


def test_gpkg_layers(tmp_path, objects):
    _, gdf = objects
    path = tmp_path / "out.gpkg"
    write_vectors(gdf, path)
    assert pyogrio.list_layers(path)[:, 0].tolist() == ["out"]
    write_vectors(gdf.iloc[:3], path, layer="ships")
    layers = sorted(pyogrio.list_layers(path)[:, 0].tolist())
    assert layers == ["out", "ships"]
    assert len(gpd.read_file(path, layer="ships")) == 3
    assert len(gpd.read_file(path, layer="out")) == len(gdf)


def test_coco_round_trip_in_scene_pixels(tmp_path, objects):
    det, gdf = objects
    path = write_vectors(gdf, tmp_path / "out.coco.json", scene_info=scene_info())
    coco = COCO(str(path))
    assert coco.imgs[1]["width"] == W and coco.imgs[1]["height"] == H
    assert coco.imgs[1]["file_name"] == "scene.tif"
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == len(det)
    for k, ann in enumerate(anns):
        full = np.zeros((H, W), np.uint8)
        x1, y1, x2, y2 = det.mask_boxes[k].tolist()
        full[y1:y2, x1:x2] = det.masks[k]
        assert (coco.annToMask(ann) == full).all()  # pixel exact, holes kept
        assert ann["area"] == int(full.sum())
        assert names[ann["category_id"]] == det.classes[int(det.labels[k])]
        assert ann["score"] == pytest.approx(float(det.scores[k]), rel=1e-6)
        bx, by, bw, bh = ann["bbox"]
        ys, xs = np.nonzero(full)
        assert (bx, by, bw, bh) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)


def test_coco_needs_scene_info(tmp_path, objects):
    _, gdf = objects
    with pytest.raises(ExportError, match="scene_info"):
        write_vectors(gdf, tmp_path / "out.coco.json")
    with pytest.raises(ExportError, match=r"out\.json.*scene_info.*\.geojson"):
        write_vectors(gdf, tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


def test_json_is_coco_and_geojson_is_geojson(tmp_path, objects):
    _, gdf = objects
    coco = json.loads(write_vectors(gdf, tmp_path / "a.json", scene_info=scene_info()).read_text())
    assert {"images", "annotations", "categories"} <= set(coco)
    assert "type" not in coco
    assert coco["images"] == [{"id": 1, "file_name": "scene.tif", "width": W, "height": H}]
    assert len(coco["annotations"]) == len(gdf)
    geo = json.loads(write_vectors(gdf, tmp_path / "a.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(gdf)
    assert "annotations" not in geo


def test_coco_category_ids_follow_model_class_order(tmp_path, objects):
    det, gdf = objects
    assert gdf.attrs["classes"] == det.classes  # vectorize records the model's classes
    doc = json.loads(write_vectors(gdf, tmp_path / "a.json", scene_info=scene_info()).read_text())
    assert [(c["id"], c["name"]) for c in doc["categories"]] == [
        (1, "ship"),
        (2, "vehicle"),
        (3, "building"),
    ]
    for ann, (_, row) in zip(doc["annotations"], gdf.iterrows(), strict=True):
        assert ann["category_id"] == det.classes.index(row["class"]) + 1
    # an explicit class list wins; classes missing from it are appended
    doc = json.loads(
        write_vectors(
            gdf, tmp_path / "b.json", scene_info=scene_info(), classes=("building", "ship")
        ).read_text()
    )
    assert [c["name"] for c in doc["categories"]] == ["building", "ship", "vehicle"]
    # without a class list (plain GeoDataFrame): sorted names
    plain = gdf.copy()
    plain.attrs = {}
    doc = json.loads(write_vectors(plain, tmp_path / "c.json", scene_info=scene_info()).read_text())
    assert [c["name"] for c in doc["categories"]] == ["building", "ship", "vehicle"]


def test_fmt_by_name(tmp_path, objects):
    _, gdf = objects
    path = write_vectors(gdf, tmp_path / "out.dat", fmt="fgb")
    assert len(gpd.read_file(path, driver="FlatGeobuf")) == len(gdf)
    with pytest.raises(ExportError, match="unknown vector format 'kml'"):
        write_vectors(gdf, tmp_path / "out.kml", fmt="kml")


@pytest.mark.parametrize("name", ["v.gpkg", "v.geojson", "v.shp", "v.parquet", "v.fgb", "v.json"])
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_vector_files_follow_umask(tmp_path, objects, name, umask):
    _, gdf = objects
    old = os.umask(umask)
    try:
        path = write_vectors(gdf, tmp_path / name, scene_info=scene_info())
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for f in tmp_path.iterdir():  # the .shp and its sidecars alike
        assert f.stat().st_mode & 0o777 == want, f.name
    assert path.exists()


def test_coco_rle_matches_pycocotools():
    rng = np.random.default_rng(5)
    m = rng.random((7, 9)) > 0.5
    full = np.zeros((20, 30), np.uint8, order="F")
    full[4:11, 13:22] = m
    ref = mask_utils.encode(full)
    got = encode_rle_crop(m, 13, 4, 30, 20)
    assert got["counts"] == ref["counts"].decode("ascii")
    assert got["size"] == [20, 30]


def test_failing_write_leaves_no_partial_file_and_keeps_old_one(tmp_path, objects, monkeypatch):
    _, gdf = objects
    path = tmp_path / "out.gpkg"
    write_vectors(gdf.iloc[:2], path)
    before = path.read_bytes()

    def broken(df, target, **kwargs):
        with open(target, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(pyogrio, "write_dataframe", broken)
    with pytest.raises(ExportError, match="disk full") as info:
        write_vectors(gdf, path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]
    with pytest.raises(ExportError):
        write_vectors(gdf, tmp_path / "new.shp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]


def test_check_writable(tmp_path):
    check_writable(tmp_path / "a.gpkg")
    check_writable(tmp_path / "not" / "yet" / "a.gpkg")  # created on write
    assert list(tmp_path.iterdir()) == []  # the check leaves nothing behind
    with pytest.raises(ExportError, match="unknown output format"):
        check_writable(tmp_path / "a.txt")
    with pytest.raises(ExportError, match="is a folder"):
        check_writable(tmp_path)
    (tmp_path / "d.gpkg").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        check_writable(tmp_path / "d.gpkg")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_writable(tmp_path / "file" / "a.gpkg")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_writable_unwritable_file_system():
    # not even root may create files in /proc
    with pytest.raises(ExportError, match=r"/proc/out\.gpkg: cannot write in /proc"):
        check_writable("/proc/out.gpkg")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ExportError, match=str(ro)):
            check_writable(ro / "a.gpkg")
    finally:
        ro.chmod(0o700)


@pytest.mark.filterwarnings("ignore:'crs' was not provided", "ignore:No SRS set")
def test_no_crs_geojson_is_refused_other_formats_keep_pixels(tmp_path, caplog):
    """GeoJSON is longitude/latitude: pixel coordinates are refused there (GDAL's RFC 7946
    writer turned those beyond 180/90 into EMPTY geometries), kept with a warning elsewhere."""
    det = Detections(
        boxes=np.asarray([[2, 3, 6, 8]], np.float32),
        scores=np.asarray([0.9], np.float32),
        labels=np.asarray([0]),
        mask_boxes=np.asarray([[2, 3, 6, 8]], np.int32),
        masks=(np.ones((5, 4), bool),),
        classes=("ship",),
    )
    gdf = vectorize(det, transform=Affine.identity(), crs_wkt=None)
    with pytest.raises(ExportError, match=r"px\.geojson.*no CRS.*\.gpkg"):
        write_vectors(gdf, tmp_path / "px.geojson")
    assert not list(tmp_path.iterdir())
    with caplog.at_level("WARNING", logger="geoseg.export"):
        path = write_vectors(gdf, tmp_path / "px.gpkg")
    assert "no CRS" in caplog.text
    back = gpd.read_file(path)
    assert back.geometry.iloc[0].bounds == (2.0, 3.0, 6.0, 8.0)


def test_empty_layer_round_trip(tmp_path, objects):
    _, gdf = objects
    path = write_vectors(gdf.iloc[:0], tmp_path / "empty.gpkg")
    assert len(gpd.read_file(path)) == 0
