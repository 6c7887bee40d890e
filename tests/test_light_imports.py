"""Counting, mapping and evaluating need no torch (the core install, without the 'ml' extra).

Each check runs in a fresh interpreter whose import system refuses torch, torchvision, timm,
safetensors and dask (as if the 'ml' and 'batch' extras were not installed): the light modules
import, read the demo checkpoint's sidecar, and do real work (tile a raster, vectorise, stitch,
export, count, evaluate, draw a quicklook); the CLI names the extra a command needs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKED = ("torch", "torchvision", "timm", "safetensors", "dask", "distributed")

LIGHT_MODULES = (
    "geoseg",
    "geoseg.calibrate",
    "geoseg.checkpoint",
    "geoseg.chips",
    "geoseg.cli",
    "geoseg.compare",
    "geoseg.config",
    "geoseg.count",
    "geoseg.errors",
    "geoseg.evaluate",
    "geoseg.export",
    "geoseg.extent",
    "geoseg.importers",
    "geoseg.partial",
    "geoseg.raster",
    "geoseg.regularize",
    "geoseg.review",
    "geoseg.samples",
    "geoseg.stitch",
    "geoseg.storage",
    "geoseg.tiling",
    "geoseg.types",
    "geoseg.vectorize",
    "geoseg.viz",
)

BLOCKER = f"""
import importlib.abc
import sys

BLOCKED = {BLOCKED!r}


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Refuse())


def assert_still_light():
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not leaked, f"imported without need: {{leaked}}"
"""


def run_blocked(body: str, tmp_path) -> str:
    script = BLOCKER + textwrap.dedent(body) + "\nassert_still_light()\nprint('OK')\n"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def test_blocker_really_blocks(tmp_path):
    out = run_blocked(
        """
        try:
            import torch  # noqa: F401
        except ImportError as err:
            print("refused:", err)
        """,
        tmp_path,
    )
    assert "refused: No module named 'torch'" in out


def test_light_modules_import_and_work_without_torch(tmp_path):
    run_blocked(
        f"""
        import importlib

        for name in {LIGHT_MODULES!r}:
            importlib.import_module(name)

        import numpy as np
        import rasterio
        from affine import Affine

        import geoseg
        from geoseg.checkpoint import check_compatible, read_meta
        from geoseg.count import count
        from geoseg.evaluate import evaluate
        from geoseg.export import write_vectors
        from geoseg.samples import demo_model_path, sample_scene_path
        from geoseg.stitch import stitch
        from geoseg.tiling import iter_tiles, make_grid
        from geoseg.types import Detections, TileDetections
        from geoseg.vectorize import vectorize
        from geoseg.viz import quicklook

        # the demo checkpoint's sidecar, and the compatibility check, without torch
        meta = read_meta(demo_model_path())
        assert meta.classes == ("ship", "vehicle", "building"), meta.classes
        check_compatible(meta, band_count=3, classes=meta.classes)
        assert geoseg.read_meta is read_meta

        # tile the sample scene (geoseg.tiling used to import torch)
        tiles = list(iter_tiles(sample_scene_path("marina"), tile_size=256, overlap=32))
        assert len(tiles) == 25 and tiles[0].image.shape == (3, 256, 256), len(tiles)

        # two tiles, one object each, one of them cut by the tile border: stitch + vectorise
        classes = ("ship", "vehicle")
        grid = make_grid(56, 32, tile_size=32, overlap=8)  # windows at x = 0 and 24
        def one(spec, x1, width):
            mask = np.ones((4, width), bool)
            box = np.array([[x1, 10, x1 + width, 14]], np.int32)
            return TileDetections(
                boxes=box.astype(np.float32), scores=np.array([0.9], np.float32),
                labels=np.array([0], np.int64), mask_boxes=box, masks=(mask,),
                classes=classes, tile=spec,
            )
        # an object over x = 20..36: tile 0 sees 20..32 (cut), tile 1 sees all of it
        dets = stitch(
            [one(grid[0], 20, 12), one(grid[1], 0, 12)], scene_width=56, scene_height=32
        )
        assert isinstance(dets, Detections)
        transform = Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)
        crs = rasterio.crs.CRS.from_epsg(32633).to_wkt()
        gdf = vectorize(dets, transform=transform, crs_wkt=crs, scene="tiny")
        assert len(gdf) == 1 and gdf["class"].tolist() == ["ship"], gdf
        out = write_vectors(gdf, "tiny.gpkg")

        counts = count(out)
        assert int(counts.per_scene["count"].sum()) == 1, counts.per_scene
        result = evaluate(gdf, gdf)
        assert result.per_class["ship"].f1 == 1.0, result.per_class
        from geoseg.calibrate import calibrate_thresholds
        assert list(calibrate_thresholds(gdf, gdf, ["ship"])) == ["ship"]

        png = quicklook(sample_scene_path("marina"), gdf, "q.png", max_size=128)
        assert png.stat().st_size > 0
        """,
        tmp_path,
    )


def test_torch_backed_names_say_which_extra(tmp_path):
    run_blocked(
        """
        import geoseg
        from geoseg.checkpoint import load_checkpoint
        from geoseg.errors import MissingExtraError
        from geoseg.samples import demo_model_path

        for attempt in (
            lambda: geoseg.build_model,
            lambda: geoseg.TileDataset,
            lambda: load_checkpoint(demo_model_path()),
        ):
            try:
                attempt()
            except MissingExtraError as err:
                assert "pip install 'geoseg[ml]'" in str(err), err
            else:
                raise AssertionError("no MissingExtraError")
        """,
        tmp_path,
    )


def test_cli_names_the_missing_extra(tmp_path):
    run_blocked(
        """
        from click.testing import CliRunner

        from geoseg.cli import cli
        from geoseg.samples import demo_model_path, sample_scene_path

        runner = CliRunner()
        r = runner.invoke(cli, ["predict", "--help"])
        assert r.exit_code == 0, r.output
        args = [str(sample_scene_path()), "-m", str(demo_model_path()), "-o", "out.gpkg"]
        r = runner.invoke(cli, ["predict", *args])
        assert r.exit_code == 1, (r.exit_code, r.output)
        assert "geoseg predict needs the 'ml' extra: pip install 'geoseg[ml]'" in r.output, r.output
        r = runner.invoke(cli, ["batch", str(sample_scene_path()), "-m", str(demo_model_path()),
                                "-o", "results"])
        assert r.exit_code == 1 and "pip install 'geoseg[batch]'" in r.output, r.output
        r = runner.invoke(cli, ["count", str(sample_scene_path().with_suffix(".gpkg"))])
        assert r.exit_code == 0 and "ship" in r.output, r.output
        """,
        tmp_path,
    )


def test_import_command_runs_without_torch(tmp_path):
    run_blocked(
        """
        from pathlib import Path

        import numpy as np
        from click.testing import CliRunner
        from PIL import Image

        from geoseg.cli import cli
        from geoseg.coco import read_coco

        root = Path("yolo")
        (root / "images").mkdir(parents=True)
        (root / "labels").mkdir()
        Image.fromarray(np.full((40, 60, 3), 50, np.uint8)).save(root / "images" / "a.png")
        (root / "labels" / "a.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\\n")
        (root / "classes.txt").write_text("plane\\ncar\\n")
        r = CliRunner().invoke(
            cli, ["import", "yolo-obb", str(root), "-o", "chips", "--gsd", "0.3",
                  "--map", "car=vehicle"],
        )
        assert r.exit_code == 0, r.output
        coco = read_coco("chips/annotations.json")
        assert [c["name"] for c in coco.categories] == ["vehicle"], coco.categories
        assert coco.annotations[0]["area"] == 24 * 16, coco.annotations
        """,
        tmp_path,
    )


@pytest.mark.parametrize("extra", ["ml", "batch", "maps"])
def test_every_extra_is_installed_here(extra):
    # the test environment has everything (make test installs .[all,dev,notebooks])
    from geoseg._extras import missing_modules

    assert missing_modules(extra) == []


def test_model_free_work_leaves_torch_unimported_where_it_is_installed(tmp_path):
    # no import blocker here: torch *can* be imported, so a stray (or try/except-guarded)
    # import anywhere on these paths would show up in sys.modules
    script = textwrap.dedent(
        """
        import sys

        import numpy as np
        from affine import Affine
        from click.testing import CliRunner

        import geoseg
        from geoseg.cli import cli
        from geoseg.export import write_vectors
        from geoseg.samples import sample_labels_path, sample_scene_path
        from geoseg.stitch import stitch
        from geoseg.tiling import make_grid
        from geoseg.types import TileDetections
        from geoseg.vectorize import vectorize

        grid = make_grid(64, 32, tile_size=32, overlap=8)
        box = np.array([[4, 4, 12, 10]], np.int32)
        tds = [
            TileDetections(
                boxes=box.astype(np.float32), scores=np.array([0.9], np.float32),
                labels=np.array([0], np.int64), mask_boxes=box,
                masks=(np.ones((6, 8), bool),), classes=("ship",), tile=spec,
            )
            for spec in grid
        ]
        dets = stitch(tds, scene_width=64, scene_height=32)
        gdf = vectorize(dets, transform=Affine(0.5, 0, 5e5, 0, -0.5, 4e6),
                        crs_wkt="EPSG:32633")
        write_vectors(gdf, "v.gpkg")

        labels, scene = str(sample_labels_path()), str(sample_scene_path())
        runner = CliRunner()
        for args in (
            ["count", labels],
            ["evaluate", labels, labels],
            ["map", labels, "--scene", scene, "-o", "m.html", "--max-size", "256"],
        ):
            r = runner.invoke(cli, args)
            assert r.exit_code == 0, (args, r.output)
        leaked = sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision"))
        assert not leaked, leaked[:5]
        print("OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("OK"), (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
