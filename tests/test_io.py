"""Tests for geoseg.io: atomic writes and their permissions, the format table, the vector reader."""

from __future__ import annotations

import json
import os
import stat
import threading

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import LineString, Point, box

from geoseg.errors import ExportError, GeosegError, LabelError
from geoseg.io import (
    VectorFormat,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    current_umask,
    format_by_name,
    format_for_path,
    formats_help,
    read_vectors,
)

UTM = "EPSG:32633"
X0, Y0, RES = 500_000.0, 4_000_000.0, 0.5


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


# ------------------------------------------------------------------------ atomic writes


def test_current_umask_reads_without_changing(umask):
    assert current_umask() == umask
    assert current_umask() == umask  # unchanged by reading


def test_atomic_write_helpers_follow_umask(tmp_path, umask):
    want = 0o666 & ~umask
    paths = [
        atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01"),
        atomic_write_text(tmp_path / "a.txt", "x\r\ny\n"),
        atomic_write_json(tmp_path / "a.json", {"a": [1, 2]}),
        atomic_write(tmp_path / "sub" / "a.dat", lambda p: p.write_text("z")),
    ]
    for p in paths:
        assert mode_of(p) == want, p.name
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").read_bytes() == b"x\r\ny\n"  # newlines as given
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.json", "a.txt", "sub"]


def test_atomic_write_explicit_mode(tmp_path):
    p = atomic_write_text(tmp_path / "secret", "s", mode=0o600)
    assert mode_of(p) == 0o600


def test_atomic_write_failure_keeps_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_interrupt_cleans_up(tmp_path):
    def interrupted(tmp):
        tmp.with_suffix(".dbf").write_text("side")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.shp", interrupted, sidecars=(".dbf",))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_sidecars_moved_and_stale_removed(tmp_path):
    (tmp_path / "x.cpg").write_text("stale")

    def write(tmp):
        tmp.write_text("main")
        tmp.with_suffix(".dbf").write_text("dbf")

    atomic_write(tmp_path / "x.shp", write, sidecars=(".dbf", ".cpg"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dbf", "x.shp"]
    assert (tmp_path / "x.dbf").read_text() == "dbf"


def test_atomic_write_temp_name_keeps_extension(tmp_path):
    seen = []
    atomic_write(tmp_path / "out.gpkg", lambda p: (seen.append(p), p.write_text("g")))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".out.gpkg.")
    assert seen[0].suffix == ".gpkg"


def test_concurrent_writes_are_whole(tmp_path):
    target = tmp_path / "c.txt"
    texts = [str(i) * 10_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["c.txt"]


# --------------------------------------------------- each writer kind follows the umask


def _tiny_scene(path):
    data = np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(X0, Y0, RES, RES),
    ) as ds:
        ds.write(data)
    labels = gpd.GeoDataFrame(
        {"class": ["ship", "building"]},
        geometry=[box(X0 + 2, Y0 - 10, X0 + 8, Y0 - 3), box(X0 + 15, Y0 - 25, X0 + 22, Y0 - 14)],
        crs=UTM,
    )
    return labels


def _write_checkpoint(out):
    from torch import nn

    from geoseg.checkpoint import ModelMeta, save_checkpoint

    meta = ModelMeta(
        classes=("ship",), bands=(1, 2, 3), norm_stats=None, tile_size=64, gsd=None, config={}
    )
    save_checkpoint(out / "ckpt", nn.Linear(2, 2), meta)
    return [out / "ckpt.safetensors", out / "ckpt.json"]


def _write_chips(out):
    from geoseg.chips import make_chips

    labels = _tiny_scene(out / "scene.tif")
    s = make_chips(out / "scene.tif", labels, out / "chips", size=32, overlap=0)
    return [s.annotations_path, s.class_balance_path, *sorted((out / "chips/images").iterdir())]


def _write_evaluate(out):
    from geoseg.evaluate import evaluate, write_json

    truth = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(0, 0, 10, 10)], crs=UTM)
    return [write_json(evaluate(truth, truth), out / "metrics.json")]


def _write_vectors(out):
    from geoseg.export import write_vectors

    gdf = gpd.GeoDataFrame({"class": ["a"]}, geometry=[box(0, 0, 10, 10)], crs=UTM)
    return [write_vectors(gdf, out / "v.gpkg"), write_vectors(gdf, out / "v.geojson")]


def _write_train_metrics(out):
    from geoseg.train import _write_metrics

    _write_metrics(out, [{"epoch": 0, "loss": 1.0}])
    return [out / "metrics.csv", out / "metrics.json"]


def _write_counts(out):
    from geoseg.count import count, write_counts

    gdf = gpd.GeoDataFrame(
        {"class": ["a"], "scene": ["s"]}, geometry=[box(X0, Y0, X0 + 10, Y0 + 10)], crs=UTM
    )
    r = count(gdf, grid_m=100)
    return [write_counts(r, out / "c.csv"), write_counts(r, out / "c.gpkg")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
@pytest.mark.parametrize(
    "writer",
    [
        _write_checkpoint,
        _write_chips,
        _write_evaluate,
        _write_vectors,
        _write_train_metrics,
        _write_counts,
    ],
    ids=["checkpoint", "chips", "evaluate-json", "vectors", "train-metrics", "counts"],
)
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_writer_permissions_follow_umask(tmp_path, writer, mask):
    old = os.umask(mask)
    try:
        written = writer(tmp_path)
    finally:
        os.umask(old)
    assert written
    for p in written:
        assert mode_of(p) == 0o666 & ~mask, p
    hidden = [p for p in tmp_path.rglob(".*") if p.is_file()]
    assert hidden == []  # no temporary file left anywhere


# ------------------------------------------------------------------------ format table


def test_format_table():
    assert [f.value for f in VectorFormat] == [
        "gpkg",
        "geojson",
        "shapefile",
        "parquet",
        "flatgeobuf",
        "coco",
    ]
    assert VectorFormat.GPKG.driver == "GPKG" and VectorFormat.GPKG.extension == ".gpkg"
    assert VectorFormat.SHAPEFILE.driver == "ESRI Shapefile"
    assert {".shx", ".dbf", ".prj", ".cpg"} <= set(VectorFormat.SHAPEFILE.sidecars)
    assert VectorFormat.SHAPEFILE.multi_file and not VectorFormat.GPKG.multi_file
    assert VectorFormat.FLATGEOBUF.extension == ".fgb"
    assert VectorFormat.PARQUET.driver is None and VectorFormat.COCO.driver is None
    assert VectorFormat("gpkg") is VectorFormat.GPKG and str(VectorFormat.COCO) == "coco"


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a/b.GPKG", VectorFormat.GPKG),
        ("x.geojson", VectorFormat.GEOJSON),
        ("x.json", VectorFormat.COCO),
        ("x.coco.json", VectorFormat.COCO),
        ("x.shp", VectorFormat.SHAPEFILE),
        ("x.parquet", VectorFormat.PARQUET),
        ("x.geoparquet", VectorFormat.PARQUET),
        ("x.fgb", VectorFormat.FLATGEOBUF),
        ("dir.json/x.GeoJSON", VectorFormat.GEOJSON),
    ],
)
def test_format_for_path(path, fmt):
    assert format_for_path(path) is fmt


def test_format_for_path_unknown_lists_extensions():
    with pytest.raises(ExportError, match=r"x\.kml: unknown output format.*\.gpkg.*\.json"):
        format_for_path("x.kml")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("gpkg", VectorFormat.GPKG),
        ("GeoJSON", VectorFormat.GEOJSON),
        ("shp", VectorFormat.SHAPEFILE),
        ("shapefile", VectorFormat.SHAPEFILE),
        ("geoparquet", VectorFormat.PARQUET),
        ("fgb", VectorFormat.FLATGEOBUF),
        ("flatgeobuf", VectorFormat.FLATGEOBUF),
        ("coco", VectorFormat.COCO),
        ("json", VectorFormat.COCO),
        (VectorFormat.GPKG, VectorFormat.GPKG),
    ],
)
def test_format_by_name(name, fmt):
    assert format_by_name(name) is fmt


def test_format_by_name_unknown():
    with pytest.raises(ExportError, match=r"unknown vector format 'kml'.*gpkg"):
        format_by_name("kml")


def test_formats_help_names_every_format():
    text = formats_help()
    for fmt in VectorFormat:
        assert fmt.value in text
        for ext in fmt.extensions:
            assert ext in text
    assert formats_help([VectorFormat.GPKG]) == "gpkg (.gpkg)"


# ------------------------------------------------------------------------ reading vectors


def _polys():
    return gpd.GeoDataFrame({"class": ["a", "b"]}, geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)])


def test_read_vectors_round_trip(tmp_path):
    gdf = _polys().set_crs(UTM)
    gdf.to_file(tmp_path / "a.gpkg")
    gdf.to_parquet(tmp_path / "a.parquet")
    for name in ("a.gpkg", "a.parquet"):
        back = read_vectors(tmp_path / name, require_crs=True, polygons=True, allow_empty=False)
        assert len(back) == 2 and back.crs == gdf.crs
    assert read_vectors(gdf) is gdf


def test_read_vectors_missing_file(tmp_path):
    path = tmp_path / "missing.gpkg"
    with pytest.raises(LabelError, match=rf"{path}: the truth file was not found") as info:
        read_vectors(path, what="truth")
    assert "no such file" in str(info.value)
    assert isinstance(info.value, GeosegError) and isinstance(info.value, ValueError)


def test_read_vectors_unreadable_names_file_and_chains(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(LabelError, match=rf"{bad}: cannot read the labels.*GeoPackage") as info:
        read_vectors(bad)
    assert info.value.__cause__ is not None
    table = tmp_path / "t.parquet"
    import pandas as pd

    pd.DataFrame({"x": [1]}).to_parquet(table)
    with pytest.raises(LabelError, match=rf"{table}: cannot read the results"):
        read_vectors(table, what="results")


def test_read_vectors_no_geometry(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(LabelError, match=rf"{csv}: the AOI file has no geometry column"):
        read_vectors(csv, what="AOI")


@pytest.mark.filterwarnings("ignore:'crs' was not provided", "ignore:No SRS set")
def test_read_vectors_checks(tmp_path):
    path = tmp_path / "nocrs.gpkg"
    _polys().to_file(path)
    assert read_vectors(path).crs is None
    with pytest.raises(LabelError, match=rf"{path}: the AOI file has no CRS.*ogr2ogr -a_srs"):
        read_vectors(path, what="AOI", require_crs=True)
    with pytest.raises(LabelError, match=r"AOI \(GeoDataFrame\): the AOI has no CRS"):
        read_vectors(_polys(), what="AOI", require_crs=True)
    empty = tmp_path / "empty.gpkg"
    _polys().set_crs(UTM).iloc[:0].to_file(empty)
    assert len(read_vectors(empty)) == 0
    with pytest.raises(LabelError, match=rf"{empty}: the labels file holds no features"):
        read_vectors(empty, allow_empty=False)
    mixed = gpd.GeoDataFrame(
        geometry=[box(0, 0, 1, 1), Point(0, 0), LineString([(0, 0), (1, 1)])], crs=UTM
    )
    with pytest.raises(LabelError, match=r"must hold polygons, got \['LineString', 'Point'"):
        read_vectors(mixed, what="AOI", polygons=True)
    with pytest.raises(LabelError, match="must be a file path or a GeoDataFrame"):
        read_vectors(42)
