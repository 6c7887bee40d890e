"""Outputs on object storage (geoseg.storage) against a real S3-compatible server process.

The ``s3_server`` fixture (conftest) starts moto's standalone server once per session; s3fs
(outputs) and GDAL's /vsis3/ (scene inputs) reach it through the usual AWS variables, the
same code path as real S3.
"""

from __future__ import annotations

import io
import json
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg.errors import ExportError
from geoseg.io import check_no_overwrite, check_writable
from geoseg.storage import as_target, exists, join, read_bytes, write_output

TILE = ["--tile-size", "64", "--overlap", "8", "--min-score", "0", "--device", "cpu"]


def write_scene(path: Path, *, seed: int, size: int = 120) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(10, 40, size=(3, size, size), dtype=np.uint8)
    for _ in range(10):
        h, w = rng.integers(4, 12, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        data[:, r : r + h, c : c + w] = rng.integers(150, 255, size=(3, 1, 1), dtype=np.uint8)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8")
    profile.update(crs="EPSG:32633", transform=from_origin(500000.0 + seed, 4e6, 0.5, 0.5))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture
def bucket(s3_server):
    import s3fs

    fs = s3fs.S3FileSystem()
    name = f"geoseg-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return fs, name


@pytest.fixture(scope="module")
def model(tiny_checkpoint_factory):
    return tiny_checkpoint_factory("s3", tile_size=64)


def read_gdf(data: bytes, suffix: str):
    import geopandas as gpd

    if suffix == ".parquet":
        return gpd.read_parquet(io.BytesIO(data))
    with tempfile.TemporaryDirectory() as folder:  # GDAL wants the extension of a GeoPackage
        path = Path(folder) / f"x{suffix}"
        path.write_bytes(data)
        return gpd.read_file(path)


def same_frames(a, b):
    assert len(a) == len(b) and list(a.columns) == list(b.columns) and a.crs == b.crs
    assert list(a.geometry.to_wkb()) == list(b.geometry.to_wkb())


def test_write_output_uploads_once_and_interrupts_leave_no_object(bucket):
    fs, name = bucket
    url = f"s3://{name}/run/out.csv"

    def half_then_ctrl_c(tmp: Path) -> None:
        tmp.write_text("a,b\n1,")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_output(url, half_then_ctrl_c)
    assert not fs.exists(f"{name}/run/out.csv")  # no partial object
    write_output(url, lambda tmp: tmp.write_text("a,b\n1,2\n"))
    assert read_bytes(url) == b"a,b\n1,2\n"
    with pytest.raises(RuntimeError):  # a failing rewrite keeps the earlier object intact
        write_output(url, lambda tmp: (tmp.write_text("x"), (_ for _ in ()).throw(RuntimeError)))
    assert read_bytes(url) == b"a,b\n1,2\n"
    # multi-file formats: sidecars uploaded with the main file, stale ones removed
    write_output(
        f"s3://{name}/run/o.shp",
        lambda tmp: [tmp.with_suffix(e).write_text(e) for e in (".shp", ".dbf", ".cpg")],
        sidecars=(".dbf", ".cpg"),
    )
    write_output(
        f"s3://{name}/run/o.shp",
        lambda tmp: [tmp.with_suffix(e).write_text(e) for e in (".shp", ".dbf")],
        sidecars=(".dbf", ".cpg"),
    )
    assert sorted(Path(k).name for k in fs.ls(f"{name}/run", refresh=True)) == [
        "o.dbf",
        "o.shp",
        "out.csv",
    ]


def test_checks_accept_urls(bucket):
    _, name = bucket
    url = f"s3://{name}/run/out.gpkg"
    assert as_target(url) == url and join(as_target(f"s3://{name}/run/"), "a.gpkg") == (
        f"s3://{name}/run/a.gpkg"
    )
    check_writable(url)
    check_no_overwrite([("SCENE", "scene.tif"), ("SCENE", url)], [("-o", url)])  # no crash
    with pytest.raises(ExportError, match="does not exist"):
        check_writable("s3://no-such-bucket-geoseg/out.gpkg")
    with pytest.raises(ExportError, match="extension"):
        check_writable(f"s3://{name}/out.txt")


def test_predict_s3_scene_to_s3_output(bucket, model, tmp_path, monkeypatch):
    """Scene read through /vsis3/, vectors and quicklook uploaded; same objects as locally."""
    from geoseg.cli import cli
    from geoseg.partial import cache_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fs, name = bucket
    scene = write_scene(tmp_path / "scene.tif", seed=3)
    fs.put_file(str(scene), f"{name}/in/scene.tif")
    local = tmp_path / "local.gpkg"
    res = CliRunner().invoke(
        cli, ["predict", str(scene), "-m", str(model), "-o", str(local), *TILE]
    )
    assert res.exit_code == 0, res.output
    out = f"s3://{name}/run/out.gpkg"
    args = ["predict", f"s3://{name}/in/scene.tif", "-m", str(model), "-o", out, *TILE]
    res = CliRunner().invoke(cli, [*args, "--quicklook", f"s3://{name}/run/q.png"])
    assert res.exit_code == 0, res.output
    import geopandas as gpd

    same_frames(read_gdf(read_bytes(out), ".gpkg"), gpd.read_file(local))
    assert read_bytes(f"s3://{name}/run/q.png").startswith(b"\x89PNG")
    assert sorted(Path(k).name for k in fs.ls(f"{name}/run", refresh=True)) == ["out.gpkg", "q.png"]
    assert not cache_folder().exists() or not list(cache_folder().iterdir())  # partial removed


@pytest.fixture(scope="module")
def cluster(s3_server):
    """A dask cluster started after the AWS variables are set (its workers inherit them)."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as lc:
        yield lc


def test_batch_to_s3_writes_objects_and_resumes(bucket, model, cluster, tmp_path):
    """geoseg batch -o s3://...: outputs, manifest, summaries, quicklooks; rerun skips."""
    from geoseg.cli import cli

    fs, name = bucket
    scenes = [write_scene(tmp_path / f"{n}.tif", seed=i + 1) for i, n in enumerate("ab")]
    out = f"s3://{name}/batch/"
    args = ["batch", *map(str, scenes), "-m", str(model), "-o", out]
    args += ["--scheduler", cluster.scheduler_address]
    args += [*TILE, "--format", "parquet", "--quicklook"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    keys = sorted(Path(k).name for k in fs.find(f"{name}/batch"))
    assert keys == [
        *("a.parquet", "a.png", "b.parquet", "b.png", "manifest.json"),
        *("summary.csv", "summary.parquet"),
    ]
    manifest = json.loads(read_bytes(f"s3://{name}/batch/manifest.json"))
    assert {k: v["status"] for k, v in manifest["scenes"].items()} == {"a": "ok", "b": "ok"}
    for scene, rec in manifest["scenes"].items():
        assert rec["output"] == f"s3://{name}/batch/{scene}.parquet"
        gdf = read_gdf(read_bytes(rec["output"]), ".parquet")
        assert len(gdf) == rec["n_objects"] and gdf.crs is not None
    first = {k: fs.info(f"{name}/batch/{k}")["LastModified"] for k in ("a.parquet", "b.parquet")}
    res = CliRunner().invoke(cli, args)  # resume: the manifest on S3 says both are done
    assert res.exit_code == 0, res.output
    assert "skipping 2 scene(s) already done" in res.output
    again = {k: fs.info(f"{name}/batch/{k}")["LastModified"] for k in first}
    assert again == first  # not rewritten
    fs.rm(f"{name}/batch/b.parquet")  # a lost output is redone
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "skipping 1 scene(s)" in res.output
    assert exists(f"s3://{name}/batch/b.parquet")
