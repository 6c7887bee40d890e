"""geoseg.batch / ``geoseg batch`` on a real dask LocalCluster of 2 worker processes.

One cluster and one tiny random-weight checkpoint are shared by the module; scenes are
240 x 240 px seeded GeoTIFFs cut into 128 px tiles (4 tiles each).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg import batch
from geoseg.batch import (
    InputKind,
    SceneStatus,
    resolve_inputs,
    run_batch,
    worker_cache_info,
)
from geoseg.batch.cluster import worker_specs
from geoseg.batch.tasks import chunk_indexes
from geoseg.checkpoint import read_meta
from geoseg.cli import cli
from geoseg.cli.batch import write_quicklook
from geoseg.errors import CheckpointError, ConfigError
from geoseg.settings import resolve

TILE = dict(tile_size=128, overlap=16, min_score=0.3)
TUNED = {"ship": 0.3, "vehicle": 0.25}
CLI_TILE = ["--tile-size", "128", "--overlap", "16", "--min-score", "0.3"]
GOOD = ["alpha", "bravo", "charlie", "delta"]


def write_scene(path: Path, *, seed: int, width: int = 240, height: int = 240) -> Path:
    """A 3-band uint8 scene: dark water with bright seeded rectangles, UTM 33N, 0.5 m."""
    rng = np.random.default_rng(seed)
    data = rng.integers(10, 40, size=(3, height, width), dtype=np.uint8)
    for _ in range(12):
        h, w = rng.integers(4, 14, size=2)
        r, c = rng.integers(0, height - h), rng.integers(0, width - w)
        data[:, r : r + h, c : c + w] = rng.integers(150, 255, size=(3, 1, 1), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": from_origin(500000.0 + seed * 1000, 4000000.0, 0.5, 0.5),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def write_corrupt(path: Path, good: Path) -> Path:
    """A truncated copy of a good GeoTIFF (the header survives, the pixels do not)."""
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 3])
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint_factory):
    return tiny_checkpoint_factory(
        "tiny",
        tile_size=128,
        fpn_out_channels=32,
        box_head_size=64,
        mask_head_channels=16,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_detections_per_img=8,
    )


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as lc,
        Client(lc) as client,
    ):
        yield lc, client


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    paths = [write_scene(folder / f"{n}.tif", seed=i + 1) for i, n in enumerate(GOOD)]
    write_corrupt(folder / "broken.tif", paths[0])
    return folder


@pytest.fixture(scope="module")
def tuned_model(tiny_model, tmp_path_factory):
    """The tiny model with recommended per-class score thresholds in its sidecar."""
    ckpt = tmp_path_factory.mktemp("tuned") / "tuned"
    shutil.copyfile(tiny_model, ckpt.with_suffix(".safetensors"))
    raw = json.loads(tiny_model.with_suffix(".json").read_text())
    raw["score_thresholds"] = TUNED
    ckpt.with_suffix(".json").write_text(json.dumps(raw))
    return ckpt.with_suffix(".safetensors")


def cpu_predictor(model, settings=None):
    """The model loaded in this process as a worker loads it (on the CPU, as the workers here)."""
    from geoseg.predict import load_predictor

    return load_predictor(model, None if settings is None else settings.replace(device="cpu"))


@pytest.fixture(scope="module")
def reference(tiny_model, scenes, tmp_path_factory):
    """Sequential run_scene on each good scene, in this process, with the batch's settings."""
    from geoseg.pipeline import run_scene

    settings = resolve(read_meta(tiny_model), **TILE)
    predictor = cpu_predictor(tiny_model, settings)
    out = tmp_path_factory.mktemp("reference")
    refs = {}
    for name in GOOD:
        res = run_scene(scenes / f"{name}.tif", predictor, settings, output=out / f"{name}.gpkg")
        refs[name] = (out / f"{name}.gpkg", res)
    assert sum(len(r.gdf) for _, r in refs.values()) > 0, "the tiny model should find something"
    return refs


def assert_same_vectors(a: Path, b: Path) -> None:
    import geopandas as gpd

    ga, gb = gpd.read_file(a), gpd.read_file(b)
    assert len(ga) == len(gb)
    assert list(ga.columns) == list(gb.columns)
    assert ga.crs == gb.crs
    assert list(ga.geometry.to_wkb()) == list(gb.geometry.to_wkb())
    cols = [c for c in ga.columns if c != "geometry"]
    assert ga[cols].equals(gb[cols])


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# ------------------------------------------------------------------------------------------
# inputs (no cluster)


def test_resolve_inputs_glob_list_and_paths(tmp_path):
    a = write_scene(tmp_path / "a.tif", seed=1, width=32, height=32)
    sub = tmp_path / "sub"
    sub.mkdir()
    b = write_scene(sub / "a.tif", seed=2, width=32, height=32)  # same stem, other folder
    c = write_scene(sub / "c.tif", seed=3, width=32, height=32)
    scenes = resolve_inputs(str(tmp_path / "**" / "*.tif"))
    assert [s.kind for s in scenes] == [InputKind.GLOB] * 3
    assert sorted(s.path for s in scenes) == sorted(str(p.resolve()) for p in (a, b, c))
    names = [s.name for s in scenes]
    assert len(set(names)) == 3 and "c" in names
    assert all(n.startswith("a-") for n in names if n != "c")  # the stem clash is resolved
    assert resolve_inputs(str(tmp_path / "**" / "*.tif")) == scenes  # deterministic names

    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# my scenes\n\nsub/c.tif\n{a}  # absolute\n/vsicurl/https://x.org/d.tif\n")
    listed = resolve_inputs(listing)
    assert [s.path for s in listed] == [
        str(c.resolve()),
        str(a),
        "/vsicurl/https://x.org/d.tif",
    ]
    assert [s.name for s in listed] == ["c", "a", "d"]
    # a plain path + the same scene again via a list: processed once
    both = resolve_inputs([str(c), str(listing)])
    assert len(both) == 3


def test_resolve_inputs_stac(tmp_path):
    write_scene(tmp_path / "one.tif", seed=1, width=32, height=32)
    items = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "item-1",
                "assets": {
                    "thumbnail": {"href": "one.png", "type": "image/png"},
                    "visual": {
                        "href": "one.tif",
                        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    },
                },
            },
            {
                "type": "Feature",
                "id": "item/2",
                "assets": {
                    "meta": {"href": "two.xml"},
                    "data": {"href": "https://example.org/two.TIF"},
                    "other": {"href": "s3://bucket/two.tif"},
                },
            },
        ],
    }
    coll = tmp_path / "items.json"
    coll.write_text(json.dumps(items))
    scenes = resolve_inputs(coll)
    assert [s.name for s in scenes] == ["item-1", "item_2"]
    assert scenes[0].path == str((tmp_path / "one.tif").resolve())
    assert scenes[1].path == "/vsicurl/https://example.org/two.TIF"
    assert all(s.kind is InputKind.STAC for s in scenes)
    with pytest.raises(ConfigError, match="no asset 'other'"):
        resolve_inputs(coll, asset="other")
    items["features"] = items["features"][1:]
    coll.write_text(json.dumps(items))
    assert resolve_inputs(coll, asset="other")[0].path == "/vsis3/bucket/two.tif"


def test_resolve_inputs_errors(tmp_path):
    with pytest.raises(ConfigError, match="matches no file"):
        resolve_inputs(str(tmp_path / "*.tif"))
    with pytest.raises(ConfigError, match="no such file"):
        resolve_inputs(str(tmp_path / "missing.tif"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON"):
        resolve_inputs(bad)
    nogeo = tmp_path / "nogeo.json"
    nogeo.write_text(json.dumps({"type": "Feature", "id": "x", "assets": {"t": {"href": "a.png"}}}))
    with pytest.raises(ConfigError, match="no GeoTIFF asset"):
        resolve_inputs(nogeo)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_inputs(empty)


def test_worker_specs_pin_one_gpu_per_worker():
    specs = worker_specs(3, gpus=2, cpus=12, memory=12_000)
    assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1", "0"]
    assert {s["nthreads"] for s in specs.values()} == {1}
    assert {s["env"]["OMP_NUM_THREADS"] for s in specs.values()} == {"4"}
    assert {s["memory_limit"] for s in specs.values()} == {4000}
    cpu = worker_specs(2, gpus=0, cpus=2, memory=10)
    assert all("CUDA_VISIBLE_DEVICES" not in s["env"] for s in cpu.values())


def test_chunks_cover_all_tiles_in_batch_multiples():
    for n, k, m in [(1, 4, 4), (10, 3, 4), (17, 4, 1), (8, 2, 4), (5, 10, 2)]:
        parts = chunk_indexes(n, k, multiple=m)
        assert [i for p in parts for i in p] == list(range(n))
        assert len(parts) <= k
        assert all(len(p) % m == 0 for p in parts[:-1])


# ------------------------------------------------------------------------------------------
# on the cluster


def test_batch_cli_corrupt_scene_outputs_manifest_resume_force(
    cluster, tiny_model, scenes, reference, tmp_path
):
    lc, client = cluster
    out = tmp_path / "out"
    args = ["batch", str(scenes / "*.tif"), "-m", str(tiny_model), "-o", str(out)]
    args += ["--scheduler", lc.scheduler_address, *CLI_TILE]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert "1 of 5 scene(s) failed" in r.output
    assert "dask dashboard: http" in r.output

    man = read_manifest(out)
    recs = man["scenes"]
    assert sorted(recs) == sorted([*GOOD, "broken"])
    assert recs["broken"]["status"] == "failed"
    assert "broken.tif" in recs["broken"]["error"]
    assert recs["broken"]["output"] is None
    assert not (out / "broken.gpkg").exists()
    for name in GOOD:
        rec = recs[name]
        ref_path, ref = reference[name]
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["counts"] == ref.counts
        assert rec["n_objects"] == len(ref.gdf) and rec["n_tiles"] == ref.n_tiles
        assert rec["model_sha256"] == batch.file_sha256(tiny_model)
        assert_same_vectors(out / f"{name}.gpkg", ref_path)
    assert leftovers(out) == []

    # the model was loaded once per worker process, not once per scene
    loads_by_pid: dict[int, int] = {}
    for rec in recs.values():
        if rec["worker_pid"] is not None:
            loads_by_pid[rec["worker_pid"]] = loads_by_pid.get(rec["worker_pid"], 0)
            loads_by_pid[rec["worker_pid"]] += int(rec["model_loaded"])
    assert set(loads_by_pid.values()) <= {0, 1} and sum(loads_by_pid.values()) >= 1
    info = client.run(worker_cache_info)
    sha = batch.file_sha256(tiny_model)
    assert all(i["loads"].get(sha, 0) <= 1 for i in info.values())
    assert sum(i["loads"].get(sha, 0) for i in info.values()) == sum(loads_by_pid.values())

    # the summary: one row per scene, counts per class
    import pandas as pd

    csv = pd.read_csv(out / "summary.csv")
    pq = pd.read_parquet(out / "summary.parquet")
    assert sorted(csv["scene"]) == sorted(recs) and len(pq) == len(csv)
    for row in csv.itertuples():
        rec = recs[row.scene]
        assert row.n_ship == rec["counts"].get("ship", 0)
        assert row.n_vehicle == rec["counts"].get("vehicle", 0)
        assert row.status == rec["status"]

    # rerun the same command: the good scenes are skipped, the broken one runs again
    inodes = {n: (out / f"{n}.gpkg").stat().st_ino for n in GOOD}
    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 1
    assert "skipping 4 scene(s) already done" in r2.output
    assert {n: (out / f"{n}.gpkg").stat().st_ino for n in GOOD} == inodes
    recs2 = read_manifest(out)["scenes"]
    assert all(recs2[n] == recs[n] for n in GOOD)

    # --force redoes every scene (here a subset of the inputs)
    two = [str(scenes / "alpha.tif"), str(scenes / "bravo.tif")]
    forced = run_batch(
        two, model=tiny_model, out_dir=out, scheduler=lc.scheduler_address, force=True, **TILE
    )
    assert forced.skipped == () and forced.ran == ("alpha", "bravo") and forced.n_ok == 2
    assert (out / "alpha.gpkg").stat().st_ino != inodes["alpha"]
    assert (out / "charlie.gpkg").stat().st_ino == inodes["charlie"]
    # another config is not "the same config": the scene runs again
    changed = run_batch(
        two[:1],
        model=tiny_model,
        out_dir=out,
        scheduler=lc.scheduler_address,
        **{**TILE, "min_score": 0.4},
    )
    assert changed.skipped == () and changed.ran == ("alpha",)
    assert read_manifest(out)["scenes"]["alpha"]["config_hash"] != recs["alpha"]["config_hash"]


def test_batch_matches_geoseg_predict(cluster, tiny_model, scenes, tmp_path):
    """The batch output of a scene equals `geoseg predict` on it (same defaults)."""
    lc, _ = cluster
    out = tmp_path / "out"
    rep = run_batch(
        str(scenes / "bravo.tif"),
        model=tiny_model,
        out_dir=out,
        scheduler=lc.scheduler_address,
        min_score=0.3,
        fmt="geojson",
    )
    assert rep.n_ok == 1 and rep.records[0].output == str(out / "bravo.geojson")
    single = tmp_path / "bravo.geojson"
    r = CliRunner().invoke(
        cli,
        [
            *["predict", str(scenes / "bravo.tif"), "-m", str(tiny_model), "-o", str(single)],
            *["--min-score", "0.3", "--device", "cpu"],
        ],
    )
    assert r.exit_code == 0, r.output
    assert_same_vectors(out / "bravo.geojson", single)


def test_stac_item_collection_input(cluster, tiny_model, scenes, reference, tmp_path):
    lc, _ = cluster
    stac_dir = tmp_path / "stac"
    stac_dir.mkdir()
    features = []
    for name in GOOD[:2]:
        shutil.copy(scenes / f"{name}.tif", stac_dir / f"{name}.tif")
        features.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "id": f"scene-{name}",
                "assets": {
                    "thumbnail": {"href": f"{name}.png", "type": "image/png"},
                    "visual": {"href": f"./{name}.tif", "type": "image/tiff; application=geotiff"},
                },
            }
        )
    coll = stac_dir / "items.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    out = tmp_path / "out"
    rep = run_batch(coll, model=tiny_model, out_dir=out, scheduler=lc.scheduler_address, **TILE)
    assert rep.n_failed == 0 and [r.scene for r in rep.records] == ["scene-alpha", "scene-bravo"]
    for name in GOOD[:2]:
        assert_same_vectors(out / f"scene-{name}.gpkg", reference[name][0])
    assert not (out / "quicklooks").exists()
    # asking for quicklooks now: the scenes without one run again and get theirs
    again = dict(model=tiny_model, out_dir=out, scheduler=lc.scheduler_address, **TILE)
    rep = run_batch(coll, quicklook=write_quicklook, **again)
    assert rep.skipped == () and rep.n_ok == 2
    for rec in rep.records:
        assert rec.quicklook == str(out / "quicklooks" / f"{rec.scene}.png")
        assert Path(rec.quicklook).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a quicklook gone missing: only that scene runs again
    Path(rep.records[1].quicklook).unlink()
    rep = run_batch(coll, quicklook=write_quicklook, **again)
    assert rep.skipped == ("scene-alpha",) and rep.ran == ("scene-bravo",)
    assert Path(rep.records[1].quicklook).is_file()
    assert run_batch(coll, **again).ran == ()  # quicklooks not asked for: nothing to redo


def test_split_scene_equals_unsplit(cluster, tiny_model, scenes, tmp_path):
    """A scene spread over the workers gives exactly run_scene's objects (same settings)."""
    from geoseg.pipeline import run_scene

    lc, _ = cluster
    big = write_scene(tmp_path / "big.tif", seed=7, width=460, height=240)  # 8 tiles
    small = scenes / "alpha.tif"  # 4 tiles: below split_tiles, done whole by its plan task
    settings = resolve(read_meta(tiny_model), **TILE, batch_size=2)
    predictor = cpu_predictor(tiny_model, settings)
    refs = {
        p.stem: run_scene(p, predictor, settings, output=tmp_path / "ref" / f"{p.stem}.gpkg")
        for p in (big, small)
    }
    assert len(refs["big"].gdf) > 0
    assert (refs["big"].tiles_total, refs["alpha"].tiles_total) == (8, 4)  # split_tiles=5
    progress = []
    rep = run_batch(
        [big, small],
        model=tiny_model,
        out_dir=tmp_path / "out",
        scheduler=lc.scheduler_address,
        settings=settings,
        split_tiles=5,
        progress=progress.append,
    )
    rec, rec_small = rep.records
    assert rec.status is SceneStatus.OK, rec.error
    assert rec.split_chunks >= 2 and rec_small.split_chunks == 0
    for r in rep.records:
        ref = refs[r.scene]
        assert r.n_tiles == ref.n_tiles and r.counts == ref.counts
        assert r.n_objects == len(ref.gdf)
        assert_same_vectors(
            tmp_path / "out" / f"{r.scene}.gpkg", tmp_path / "ref" / f"{r.scene}.gpkg"
        )
    # tile progress arrives chunk by chunk before the scene completes
    assert [p.tiles for p in progress] == sorted(p.tiles for p in progress)
    assert progress[-1].tiles == sum(r.n_tiles for r in refs.values()) and progress[-1].done == 2
    assert sum(p.record is None for p in progress) >= 1 + rec.split_chunks


def test_batch_without_settings_equals_run_scene_without_settings(
    cluster, tuned_model, scenes, tmp_path
):
    """No settings options: batch resolves what run_scene(scene, predictor) resolves.

    The checkpoint's tile size and its recommended per-class scores apply to both (one
    resolve), so the objects are the same.
    """
    from geoseg.pipeline import run_scene

    lc, _ = cluster
    scene = scenes / "charlie.tif"
    ref = run_scene(scene, cpu_predictor(tuned_model), output=tmp_path / "ref.gpkg")
    assert ref.settings is not None and dict(ref.settings.class_min_score) == TUNED
    assert len(ref.gdf) > 0
    rep = run_batch(
        scene, model=tuned_model, out_dir=tmp_path / "out", scheduler=lc.scheduler_address
    )
    assert rep.settings == ref.settings
    (rec,) = rep.records
    assert rec.status is SceneStatus.OK, rec.error
    assert rec.counts == ref.counts
    assert_same_vectors(tmp_path / "out" / "charlie.gpkg", tmp_path / "ref.gpkg")


def test_batch_package_does_not_import_viz():
    """Quicklooks are drawn by the caller's function: no module of geoseg.batch imports viz."""
    import ast

    package = Path(batch.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "inputs", "manifest", "cluster", "tasks"}
    for module in modules:  # any import, also inside functions
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            assert not [n for n in names if n.startswith("geoseg.viz")], module.name
    code = (
        "import sys, geoseg.batch, geoseg.batch.tasks, geoseg.batch.cluster; "
        "print('geoseg.viz' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "where", ["shared-cluster", pytest.param("own-local-cluster", marks=pytest.mark.slow)]
)
def test_killed_run_resumes_only_unfinished_scenes(cluster, tiny_model, scenes, tmp_path, where):
    """Kill a CLI run after its first manifest record; the rerun does only the rest.

    ``shared-cluster``: the CLI is a client of the module's cluster (its tasks are cancelled
    with it); ``own-local-cluster``: the CLI starts its own LocalCluster (killed with it).
    """
    lc, _ = cluster
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from geoseg.cli import main; main()", "batch"]
    cmd += [str(scenes / f"{n}.tif") for n in GOOD]
    cmd += ["-m", str(tiny_model), "-o", str(out), *CLI_TILE]
    if where == "shared-cluster":
        cmd += ["--scheduler", lc.scheduler_address]
    else:
        cmd += ["--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "manifest.json").exists() and read_manifest(out)["scenes"]:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI (and its own cluster's processes)
        proc.wait()
    done = {n for n, r in read_manifest(out)["scenes"].items() if r["status"] == "ok"}
    assert 1 <= len(done) < len(GOOD), "the run should have been killed midway"
    for name in GOOD:  # only complete outputs: each file there is readable
        if (out / f"{name}.gpkg").exists():
            import geopandas as gpd

            gpd.read_file(out / f"{name}.gpkg")
    rep = run_batch(
        [str(scenes / f"{n}.tif") for n in GOOD],
        model=tiny_model,
        out_dir=out,
        scheduler=lc.scheduler_address,
        **TILE,
    )
    assert set(rep.skipped) == done
    assert set(rep.ran) == set(GOOD) - done
    assert rep.n_ok == len(GOOD)


def test_bad_arguments_fail_before_any_work(tiny_model, scenes, tmp_path):
    r = CliRunner().invoke(
        cli, ["batch", str(tmp_path / "none*.tif"), "-m", str(tiny_model), "-o", str(tmp_path)]
    )
    assert r.exit_code == 1 and "matches no file" in r.output
    r = CliRunner().invoke(
        cli, ["batch", str(scenes / "alpha.tif"), "-m", str(tmp_path / "nope"), "-o", str(tmp_path)]
    )
    assert r.exit_code == 1 and "not found" in r.output
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        run_batch(scenes / "alpha.tif", model=tmp_path / "nope", out_dir=tmp_path)
    with pytest.raises(ConfigError, match="split_tiles"):
        run_batch(scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path, split_tiles=0)
    with pytest.raises(ConfigError, match="quicklook must be a function"):
        run_batch(scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path, quicklook=True)
    with pytest.raises(ConfigError, match="the model's classes are ship, vehicle"):
        run_batch(
            scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path, class_min_score={"boat": 0.2}
        )
    with pytest.raises(ConfigError, match="no normalisation statistics"):
        run_batch(scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path, norm="model")
    with pytest.raises(ConfigError, match="unknown run setting"):
        run_batch(scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path, tile=128)
    assert not (tmp_path / "manifest.json").exists()
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "manifest.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a geoseg batch manifest"):
        run_batch(scenes / "alpha.tif", model=tiny_model, out_dir=tmp_path / "o")


@pytest.mark.slow
def test_lost_worker_is_survived(cluster, tiny_model, scenes, tmp_path):
    """A worker process killed mid-run: its scenes are rescheduled and the run completes."""
    lc, client = cluster
    killed = []

    pids = client.run(os.getpid)

    def progress(p):
        if p.record is not None and not killed:
            # kill the worker process that did *not* just finish: it is busy with a scene
            victim = next(a for a in pids if pids[a] != p.record.worker_pid)
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(victim)

    rep = run_batch(
        [str(scenes / f"{n}.tif") for n in GOOD],
        model=tiny_model,
        out_dir=tmp_path / "out",
        scheduler=lc.scheduler_address,
        force=True,
        progress=progress,
        **TILE,
    )
    assert killed and rep.n_ok == len(GOOD) and rep.n_failed == 0


def test_progress_reports_tiles_inside_big_scenes(cluster, tiny_model, scenes, tmp_path):
    """Whole and split scenes report tiles done / total as workers predict them."""
    lc, _ = cluster
    big = write_scene(tmp_path / "big.tif", seed=9, width=460, height=350)  # 4 x 3 tiles
    settings = resolve(read_meta(tiny_model), **TILE, batch_size=1)
    for split, name in ((None, "whole"), (5, "split")):
        progress = []
        rep = run_batch(
            [big],
            model=tiny_model,
            out_dir=tmp_path / name,
            scheduler=lc.scheduler_address,
            settings=settings,
            split_tiles=split,
            progress=progress.append,
        )
        assert rep.n_ok == 1, rep.records[0].error
        seen = [p.scene_tiles["big"] for p in progress if "big" in p.scene_tiles]
        assert seen, f"{name}: no tile progress"
        assert {total for _, total in seen} == {12}
        done = [d for d, _ in seen]
        assert min(done) >= 1 and max(done) <= 12
        assert any(d < 12 for d in done), f"{name}: no report before the scene's last tile"
        if split is None:
            assert max(done) == 12 and done == sorted(done)  # one task: counts only grow
        assert "big" not in progress[-1].scene_tiles and progress[-1].done == 1
        assert progress[-1].tiles == 12
