"""A catalogue of users' mistakes: every one ends cleanly, says what to do, and loses nothing.

Each row of :data:`MISTAKES` is a command line a user could type by mistake (broken rasters and
checkpoints, odd CRSs, unusable labels, an output that is one of the inputs...). For each the
test asserts the exit status, that the message names the file at fault (and, for a refusal,
says what to do instead), and that no file that existed before, input or earlier output,
changed (SHA-256 of every file before and after); a refusal creates no file at all.

The commands run in this process through :func:`geoseg.cli.main` (its ``SystemExit`` carries
the real status); only the interrupts run in subprocesses, since they need real signals. Grow
the table with every report of a command that misbehaved.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.crs
from affine import Affine

from geoseg.cli import main

REPO = Path(__file__).resolve().parent.parent
UTM = "EPSG:32633"
NORTH_UP = Affine(0.5, 0, 500000, 0, -0.5, 4000000)
CLASSES = ("ship", "vehicle")


# --------------------------------------------------------------------------------------------
# the world the mistakes are made in: tiny files, built once


def write_raster(path, *, data=None, crs=UTM, transform=NORTH_UP, nodata=None, size=64):
    """A small GeoTIFF (3 random uint8 bands unless ``data`` is given)."""
    if data is None:
        data = np.random.default_rng(0).integers(0, 255, (3, size, size)).astype(np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def write_vectors(path, geoms, *, crs=UTM, classes=None, driver=None, **columns):
    """Features with a ``class`` column (``ship`` unless given) written with geopandas."""
    import geopandas as gpd

    cls = list(classes) if classes is not None else ["ship"] * len(geoms)
    gdf = gpd.GeoDataFrame({"class": cls, **columns}, geometry=list(geoms), crs=crs)
    gdf.to_file(path, driver=driver) if driver else gdf.to_file(path)
    return path


def boxes(n=3, *, x0=500004.0, y0=3999996.0, size=4.0, step=8.0):
    """``n`` square polygons inside the 64 px scene (UTM metres)."""
    from shapely.geometry import box

    return [box(x0 + i * step, y0 - size, x0 + i * step + size, y0) for i in range(n)]


@dataclass
class World:
    """Paths of the catalogue's files (all under ``root``); outputs go to ``root/out``."""

    root: Path
    p: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return str(self.p[key])

    @property
    def out(self) -> Path:
        return self.root / "out"


def _checkpoint_variants(ckpt: Path, root: Path) -> dict[str, Path]:
    """Broken copies of a good checkpoint: 0-byte and truncated weights, hostile sidecars."""
    weights, sidecar = ckpt.with_suffix(".safetensors"), ckpt.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    made = {}

    def copy(name, data: bytes, meta_obj) -> Path:
        (root / f"{name}.safetensors").write_bytes(data)
        text = meta_obj if isinstance(meta_obj, str) else json.dumps(meta_obj)
        (root / f"{name}.json").write_text(text)
        return root / f"{name}.safetensors"

    raw = weights.read_bytes()
    made["ckpt_zero"] = copy("zero_weights", b"", meta)
    made["ckpt_trunc"] = copy("cut_weights", raw[: len(raw) // 3], meta)
    made["ckpt_noclass"] = copy("no_class", raw, {**meta, "classes": []})
    made["ckpt_badjson"] = copy("bad_sidecar", raw, '{"classes": ["ship", ')
    return made


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint_factory) -> World:
    from shapely.geometry import LineString, Point

    root = tmp_path_factory.mktemp("mistakes")
    w = World(root)
    p = w.p
    ckpt = tiny_checkpoint_factory("bad-inputs", classes=CLASSES, tile_size=64)
    for suffix in (".safetensors", ".json"):  # the model lives in the world, hashed with it
        (root / f"model{suffix}").write_bytes(ckpt.with_suffix(suffix).read_bytes())
    p["model"] = root / "model.safetensors"
    p["model_json"] = root / "model.json"
    p.update(_checkpoint_variants(p["model"], root))

    p["scene"] = write_raster(root / "scene.tif")
    good = p["scene"].read_bytes()
    (root / "zero.tif").write_bytes(b"")
    (root / "cut.tif").write_bytes(good[: len(good) // 2])
    p["zero"], p["cut"] = root / "zero.tif", root / "cut.tif"
    p["nocrs"] = write_raster(root / "nocrs.tif", crs=None, transform=Affine.identity())
    p["geographic"] = write_raster(
        root / "geographic.tif", crs="EPSG:4326", transform=Affine(5e-6, 0, 10, 0, -5e-6, 45)
    )
    p["rotated"] = write_raster(
        root / "rotated.tif", transform=Affine(0.5, 0.1, 500000, 0.1, -0.5, 4000000)
    )
    p["local"] = write_raster(
        root / "local_grid.tif",
        crs=rasterio.crs.CRS.from_wkt(
            'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
        ),
    )
    p["south_up"] = write_raster(
        root / "south_up.tif", transform=Affine(0.5, 0, 500000, 0, 0.5, 4000000)
    )
    p["nan"] = write_raster(root / "nan.tif", data=np.full((3, 64, 64), np.nan, np.float32))
    p["nodata"] = write_raster(root / "nodata.tif", data=np.zeros((3, 64, 64), np.uint8), nodata=0)
    p["one_band"] = write_raster(root / "one_band.tif", data=np.ones((1, 64, 64), np.uint8) * 9)
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(root / "bare.png")  # no georeferencing at all
    p["png"] = root / "bare.png"
    huge = root / "huge.vrt"  # 60,000 px square, nothing on disk but this text
    huge.write_text(
        f'<VRTDataset rasterXSize="60000" rasterYSize="60000"><SRS>{UTM}</SRS>'
        "<GeoTransform>500000, 0.5, 0, 4000000, 0, -0.5</GeoTransform>"
        + "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="1">scene.tif</SourceFilename>'
            f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
            for b in (1, 2, 3)
        )
        + "</VRTDataset>"
    )
    p["huge"] = huge

    p["truth"] = write_vectors(root / "truth.gpkg", boxes(), score=[1.0] * 3)
    p["pred_shp"] = write_vectors(root / "pred.shp", boxes(), score=[0.9] * 3)
    p["pred_dbf"] = root / "pred.dbf"
    p["points"] = write_vectors(
        root / "points.gpkg", [Point(500005, 3999995), Point(500013, 3999995)], score=[0.9] * 2
    )
    p["lines"] = write_vectors(
        root / "lines.gpkg", [LineString([(500004, 3999996), (500010, 3999990)])]
    )
    p["unreviewed"] = write_vectors(
        root / "unreviewed.gpkg", boxes(), score=[0.6] * 3, status=["todo"] * 3, pred_id=[1, 2, 3]
    )
    p["truth_nocrs"] = write_vectors(root / "truth_nocrs.gpkg", boxes(), crs=None)
    projected = root / "projected.geojson"  # UTM metres, no "crs" member: read as WGS84
    features = [
        {
            "type": "Feature",
            "properties": {"class": "ship"},
            "geometry": {"type": "Polygon", "coordinates": [list(g.exterior.coords)]},
        }
        for g in boxes()
    ]
    projected.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    p["projected"] = projected
    import geopandas as gpd

    gpd.read_file(p["truth"]).to_crs(4326).to_file(root / "truth_wgs84.gpkg")
    p["truth_wgs84"] = root / "truth_wgs84.gpkg"

    p["results"] = write_vectors(root / "results.gpkg", boxes(), score=[0.8] * 3)
    os.link(p["results"], root / "results_link.gpkg")  # a hard link: another name, same file
    p["results_link"] = root / "results_link.gpkg"
    (root / "batch_out").mkdir()
    p["batch_result"] = write_vectors(root / "batch_out" / "scene_a.gpkg", boxes(), score=[0.7] * 3)

    p["blocker"] = root / "a_file"
    p["blocker"].write_text("a file, not a folder\n")
    p["chips_out"] = root / "chips_out"
    p["chips_out"].mkdir()
    p["chip_index"] = write_vectors(p["chips_out"] / "annotations.json", boxes(), driver="GeoJSON")

    # chips whose only class is not the model's, and a run file training on them
    from geoseg.chips import make_chips

    boats = write_vectors(root / "boats.gpkg", boxes(), classes=["boat"] * 3)
    p["boat_chips"] = root / "boat_chips"
    make_chips(p["scene"], boats, p["boat_chips"], size=64, overlap=0, min_visible_pixels=1)
    p["run_boats"] = _run_file(root / "run_boats.yaml", p["boat_chips"], root / "run_boats")
    run_dir = root / "earlier_run"
    run_dir.mkdir()
    for suffix in (".safetensors", ".json"):
        (run_dir / f"best{suffix}").write_bytes(p["model"].with_suffix(suffix).read_bytes())
    p["earlier_best"] = run_dir / "best.safetensors"
    p["earlier_run"] = run_dir
    p["run_ships"] = _run_file(root / "run_ships.yaml", p["boat_chips"], run_dir)
    return w


def _run_file(path: Path, chips: Path, out: Path, **extra) -> Path:
    import yaml
    from conftest import TINY_MODEL

    path.write_text(
        yaml.safe_dump(
            {
                "train_chips": [str(chips)],
                "output_dir": str(out),
                "preset": "ships",
                "classes": list(CLASSES),
                "model": TINY_MODEL,
                "pretrained": "none",
                "validate": False,
                "warmup_steps": 1,
                **extra,
            }
        )
    )
    return path


# --------------------------------------------------------------------------------------------
# running a command and checking that nothing was lost


def snapshot(root: Path) -> dict[Path, str]:
    """SHA-256 of every file under ``root``."""
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``geoseg ARGV`` in this process: ``(exit status, stdout + stderr)``."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out + captured.err


@dataclass(frozen=True)
class Mistake:
    """One user mistake: the command line, the exit status and what the message must say.

    ``argv`` and ``says`` get the :class:`World` (``w["scene"]`` is a path); ``says`` are
    substrings of stdout + stderr. ``creates``: the output files (or folders) of an accepted
    command, relative to ``w.out``; a refusal must create nothing.
    """

    argv: Callable[[World], list[str]]
    status: int
    says: Callable[[World], list[str]]
    creates: tuple[str, ...] = ()
    check: Callable[[World], None] | None = None


PREDICT = ["predict", "--device", "cpu"]


def _polygons_inside_scene(w: World) -> None:
    """The south-up scene's objects lie on the scene (rows grow northwards there)."""
    import geopandas as gpd

    gdf = gpd.read_file(w.out / "south_up.gpkg")
    assert len(gdf) and not gdf.geometry.is_empty.any()
    x0, y0, x1, y1 = gdf.total_bounds
    assert x0 >= 500000 - 1e-6 and x1 <= 500032 + 1e-6
    assert y0 >= 4000000 - 1e-6 and y1 <= 4000032 + 1e-6


def _one_chip_object(folder: Path) -> None:
    """The WGS84 labels, reprojected to the scene, give their 3 objects in the chips."""
    index = json.loads((folder / "annotations.json").read_text())
    assert len(index["annotations"]) == 3
    assert {c["name"] for c in index["categories"]} == {"ship"}


def _pixel_space(path: Path) -> None:
    """A scene without CRS gives pixel outlines with sizes in pixels, not NaN metres."""
    import geopandas as gpd

    gdf = gpd.read_file(path)
    assert len(gdf) and gdf.crs is None
    assert "area_m2" not in gdf.columns and "length_m" not in gdf.columns
    sizes = gdf[["area_px", "length_px", "width_px"]].to_numpy()
    assert np.isfinite(sizes).all() and (sizes > 0).all()
    x0, y0, x1, y1 = gdf.total_bounds  # scene pixels of the 64 x 64 image
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def _reprojected_truth_scores(w: World) -> None:
    metrics = json.loads((w.out / "metrics.json").read_text())
    assert metrics["per_class"]["ship"]["f1"] == pytest.approx(1.0)


MISTAKES: dict[str, Mistake] = {
    # ---- rasters
    "0-byte raster": Mistake(
        lambda w: [*PREDICT, w["zero"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["zero"], "cannot be read as a raster"],
    ),
    "truncated raster": Mistake(
        lambda w: [*PREDICT, w["cut"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["cut"], "complete GeoTIFF"],
    ),
    "rotated raster": Mistake(
        lambda w: [*PREDICT, w["rotated"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["rotated"], "rotated", "gdalwarp"],
    ),
    "raster without CRS to GeoJSON": Mistake(
        lambda w: [*PREDICT, w["nocrs"], "-m", w["model"], "-o", w.out / "o.geojson"],
        1,
        lambda w: [w["nocrs"], "no CRS", "GeoJSON", ".gpkg"],
    ),
    "raster without CRS to GeoPackage (pixel coordinates, said)": Mistake(
        lambda w: [*PREDICT, w["nocrs"], "-m", w["model"], "-o", w.out / "nocrs.gpkg"],
        0,
        lambda w: ["no CRS", "pixel coordinates"],
        creates=("nocrs.gpkg",),
    ),
    "raster in a local grid to GeoJSON": Mistake(
        lambda w: [*PREDICT, w["local"], "-m", w["model"], "-o", w.out / "o.geojson"],
        1,
        lambda w: [w["local"], "o.geojson", "longitude/latitude", ".gpkg"],
    ),
    "geographic raster": Mistake(
        lambda w: [*PREDICT, w["geographic"], "-m", w["model"], "-o", w.out / "geo.geojson"],
        0,
        lambda w: ["resampled", "total"],
        creates=("geo.geojson",),
    ),
    "south-up raster": Mistake(
        lambda w: [
            *PREDICT,
            w["south_up"],
            "-m",
            w["model"],
            "-o",
            w.out / "south_up.gpkg",
            "--min-score",
            "0",
        ],
        0,
        lambda w: ["total"],
        creates=("south_up.gpkg",),
        check=_polygons_inside_scene,
    ),
    "NaN scene": Mistake(
        lambda w: [*PREDICT, w["nan"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["nan"], "no valid pixel", "nodata"],
    ),
    "all-nodata scene": Mistake(
        lambda w: [*PREDICT, w["nodata"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["nodata"], "no valid pixel"],
    ),
    "band count the model does not take": Mistake(
        lambda w: [*PREDICT, w["one_band"], "-m", w["model"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["one_band"], "band", "--bands 1,1,1"],  # the hint that works
    ),
    "--bands 1 for a 3-band model (repeated as grey, said)": Mistake(
        lambda w: [
            *PREDICT,
            w["one_band"],
            "-m",
            w["model"],
            "-o",
            w.out / "grey.gpkg",
            "--bands",
            "1",
        ],
        0,
        lambda w: ["--bands 1,1,1", "grey", "total"],
        creates=("grey.gpkg",),
    ),
    "a bare PNG (pixel space throughout, said)": Mistake(
        lambda w: [
            *PREDICT,
            w["png"],
            "-m",
            w["model"],
            "-o",
            w.out / "png.gpkg",
            "--min-score",
            "0",
        ],
        0,
        lambda w: [w["png"], "no CRS", "pixel coordinates", "total"],
        creates=("png.gpkg",),
        check=lambda w: _pixel_space(w.out / "png.gpkg"),
    ),
    "--device that does not exist": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--device",
            "gpu",
        ],
        2,
        lambda w: ["--device", "'gpu'", "mps", "cuda:N"],
    ),
    "--tile-size 30000 on a 64 px scene": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "big_tile.gpkg",
            "--tile-size",
            "30000",
        ],
        0,
        lambda w: ["tile cut from 30000 to 64 px"],
        creates=("big_tile.gpkg",),
    ),
    "--tile-size 50000 on a 60,000 px scene": Mistake(
        lambda w: [
            *PREDICT,
            w["huge"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--tile-size",
            "50000",
            "--overlap",
            "64",
        ],
        1,
        lambda w: ["--tile-size 50000", "GiB", "at most"],
    ),
    "--min-score for a class the model lacks": Mistake(
        lambda w: (
            [
                *PREDICT,
                w["scene"],
                "-m",
                w["model"],
                "-o",
                w.out / "o.gpkg",
                "--min-score",
                "boat=0.3",
            ]
        ),
        1,
        lambda w: [w["model"], "boat", "ship, vehicle", "--min-score"],
    ),
    "batch --min-score for a class the model lacks": Mistake(
        lambda w: [
            "batch",
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "b",
            "--min-score",
            "boat=0.3",
        ],
        1,
        lambda w: [w["model"], "boat", "ship, vehicle", "--min-score"],
    ),
    "predict --classes for a class the model lacks": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--classes",
            "ship,boat",
        ],
        1,
        lambda w: [w["model"], "boat", "ship, vehicle", "--classes"],
    ),
    "predict --bbox in lon/lat without --bbox-crs": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--bbox",
            "15.0,36.1,15.01,36.11",
        ],
        1,
        lambda w: [w["scene"], "does not overlap", "--bbox-crs EPSG:4326"],
    ),
    "predict --mask-raster over the scene": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--mask-raster",
            w["scene"],
        ],
        1,
        lambda w: [w["scene"], "--mask-raster", "SCENE"],
    ),
    "predict --geometry point to COCO JSON": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.json",
            "--geometry",
            "point",
        ],
        1,
        lambda w: [w.out / "o.json", "COCO", "points"],
    ),
    # ---- checkpoints
    "0-byte checkpoint weights": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["ckpt_zero"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["ckpt_zero"]],
    ),
    "truncated checkpoint weights": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["ckpt_trunc"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [w["ckpt_trunc"]],
    ),
    "checkpoint declaring no class": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["ckpt_noclass"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [str(w.p["ckpt_noclass"].with_suffix(".json")), "no class"],
    ),
    "checkpoint sidecar that is not JSON": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["ckpt_badjson"], "-o", w.out / "o.gpkg"],
        1,
        lambda w: [str(w.p["ckpt_badjson"].with_suffix(".json")), "malformed"],
    ),
    # ---- outputs that are inputs, or cannot be written
    "predict -o the model's sidecar (.json is COCO)": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["model"], "-o", w["model_json"]],
        1,
        lambda w: [w["model_json"], "MODEL", "overwrite", "choose another output"],
    ),
    "predict --quicklook over the scene's name": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--quicklook",
            w["scene"],
        ],
        1,
        lambda w: [w["scene"], "--quicklook", "SCENE"],
    ),
    "predict into a folder under a file": Mistake(
        lambda w: [*PREDICT, w["scene"], "-m", w["model"], "-o", w.p["blocker"] / "o.gpkg"],
        1,
        lambda w: [str(w.p["blocker"] / "o.gpkg"), "not a folder"],
    ),
    "batch into a folder under a file": Mistake(
        lambda w: ["batch", w["scene"], "-m", w["model"], "-o", w.p["blocker"] / "sub"],
        1,
        lambda w: [w["blocker"]],
    ),
    "evaluate --json over TRUTH": Mistake(
        lambda w: ["evaluate", w["results"], w["truth"], "--json", w["truth"]],
        1,
        lambda w: [w["truth"], "--json", "TRUTH", "nothing was written"],
    ),
    "evaluate --json over a sidecar of a Shapefile": Mistake(
        lambda w: ["evaluate", w["pred_shp"], w["truth"], "--json", w["pred_dbf"]],
        1,
        lambda w: [w["pred_dbf"], w["pred_shp"], "PRED"],
    ),
    "count -o over the results it counts": Mistake(
        lambda w: ["count", w["results"], "-o", w["results"]],
        1,
        lambda w: [w["results"], "RESULTS", "choose another output"],
    ),
    "count -o a hard link of the results": Mistake(
        lambda w: ["count", w["results"], "-o", w["results_link"]],
        1,
        lambda w: [w["results_link"], w["results"]],
    ),
    "count --classes a class no result has (a misspelling)": Mistake(
        lambda w: ["count", w["results"], "--classes", "boat"],
        1,
        lambda w: ["--classes boat", "unknown class", "ship, vehicle, building"],
    ),
    "count --aoi-field the AOI lacks": Mistake(
        lambda w: ["count", w["results"], "--aoi", w["truth"], "--aoi-field", "nom"],
        1,
        lambda w: ["--aoi-field nom", w["truth"], "class, score"],
    ),
    "count a batch folder -o one of its results": Mistake(
        lambda w: ["count", w.root / "batch_out", "-o", w["batch_result"]],
        1,
        lambda w: [w["batch_result"], "RESULTS"],
    ),
    "compare -o over one of the dates it compares": Mistake(
        lambda w: ["compare", w["results"], w["results_link"], "-o", w["results"]],
        1,
        lambda w: [w["results"], "RESULTS", "choose another output"],
    ),
    "compare --map over a result in a batch folder it compares": Mistake(
        lambda w: [
            "compare",
            w["results"],
            w.root / "batch_out",
            "-o",
            w.out / "c.gpkg",
            "--map",
            w["batch_result"],
        ],
        1,
        lambda w: [w["batch_result"], "--map"],
    ),
    "compare one date": Mistake(
        lambda w: ["compare", w["results"], "-o", w.out / "c.gpkg"],
        2,
        lambda w: ["at least two dates"],
    ),
    "compare with fewer --dates than inputs": Mistake(
        lambda w: [
            "compare",
            w["results"],
            w["results_link"],
            "-o",
            w.out / "c.gpkg",
            "--dates",
            "2023-01-01",
        ],
        1,
        lambda w: ["one date per input"],
    ),
    "chips -o the folder holding the labels as its index": Mistake(
        lambda w: ["chips", w["scene"], w["chip_index"], "-o", w["chips_out"], "--overwrite"],
        1,
        lambda w: [w["chip_index"], "LABELS"],
    ),
    "import a COCO folder into itself with --overwrite": Mistake(
        lambda w: ["import", "coco", w["boat_chips"], "-o", w["boat_chips"], "--overwrite"],
        1,
        lambda w: [w["boat_chips"], "SRC", "apart from the inputs"],
    ),
    "calibrate --out-json over the model's sidecar": Mistake(
        lambda w: ["calibrate", w["model"], w["scene"], w["truth"], "--out-json", w["model_json"]],
        1,
        lambda w: [w["model_json"], "MODEL"],
    ),
    "train --from a checkpoint the run would overwrite": Mistake(
        lambda w: ["train", w["run_ships"], "--from", w["earlier_best"], "--no-progress"],
        1,
        lambda w: [w["earlier_best"], "init_checkpoint"],
    ),
    # ---- labels
    "evaluate points as predictions": Mistake(
        lambda w: ["evaluate", w["points"], w["truth"]],
        1,
        lambda w: [w["points"], "Point", "polygons"],
    ),
    "evaluate lines as truth": Mistake(
        lambda w: ["evaluate", w["results"], w["lines"]],
        1,
        lambda w: [w["lines"], "LineString"],
    ),
    "evaluate truth without CRS": Mistake(
        lambda w: ["evaluate", w["results"], w["truth_nocrs"]],
        1,
        lambda w: [w["truth_nocrs"], "no CRS"],
    ),
    "evaluate GeoJSON of projected coordinates without CRS": Mistake(
        lambda w: ["evaluate", w["results"], w["projected"]],
        1,
        lambda w: [w["projected"], "cannot be longitude/latitude", "-a_srs"],
    ),
    "evaluate truth in another CRS (reprojected)": Mistake(
        lambda w: ["evaluate", w["results"], w["truth_wgs84"], "--json", w.out / "metrics.json"],
        0,
        lambda w: ["ship"],
        creates=("metrics.json",),
        check=_reprojected_truth_scores,
    ),
    "evaluate with a class column neither file has": Mistake(
        lambda w: ["evaluate", w["results"], w["truth"], "--class-column", "kind"],
        0,  # both sides lack it: every object is one class
        lambda w: [],
    ),
    "chips with point labels": Mistake(
        lambda w: ["chips", w["scene"], w["points"], "-o", w.out / "chips_points"],
        1,
        lambda w: [w["points"], "polygons"],
    ),
    "chips with labels without CRS": Mistake(
        lambda w: ["chips", w["scene"], w["truth_nocrs"], "-o", w.out / "chips_nocrs"],
        1,
        lambda w: [w["truth_nocrs"], "CRS"],
    ),
    "chips --classes none of the labels have": Mistake(
        lambda w: [
            "chips",
            w["scene"],
            w["truth"],
            "-o",
            w.out / "chips_boat",
            "--classes",
            "boat",
        ],
        1,
        lambda w: [w["truth"], "['ship']", "['boat']", "--classes"],
    ),
    "chips with labels in another CRS (reprojected)": Mistake(
        lambda w: (
            [
                "chips",
                w["scene"],
                w["truth_wgs84"],
                "-o",
                w.out / "chips_wgs84",
                "--size",
                "32",
                "--overlap",
                "0",
                "--min-visible-pixels",
                "1",
            ]
        ),
        0,
        lambda w: ["ship", "wrote"],
        creates=("chips_wgs84",),
        check=lambda w: _one_chip_object(w.out / "chips_wgs84"),
    ),
    "train on chips whose only class is unknown": Mistake(
        lambda w: ["train", w["run_boats"], "--no-progress", "--max-steps", "1"],
        1,
        lambda w: [w["boat_chips"], "no instance", "ship"],
    ),
    # ---- model-assisted labelling, regularisation
    "pre-labels not a GeoPackage": Mistake(
        lambda w: ["label", w["scene"], "-m", w["model"], "-o", w.out / "pre.geojson"],
        1,
        lambda w: ["pre.geojson", ".gpkg"],
    ),
    "chips from pre-labels nobody reviewed": Mistake(
        lambda w: ["chips", w["scene"], w["unreviewed"], "-o", w.out / "chips_unreviewed"],
        1,
        lambda w: [w["unreviewed"], "status = ok"],
    ),
    "review report of files that are not pre-labels": Mistake(
        lambda w: ["review-report", w["truth"], w["unreviewed"]],
        1,
        lambda w: [w["truth"], "pred_id"],
    ),
    "regularize a class the model lacks": Mistake(
        lambda w: [
            *PREDICT,
            w["scene"],
            "-m",
            w["model"],
            "-o",
            w.out / "o.gpkg",
            "--regularize",
            "buildings",
        ],
        1,
        lambda w: [w["model"], "buildings", "ship, vehicle"],
    ),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake(name, world, capsys):
    case = MISTAKES[name]
    world.out.mkdir(exist_ok=True)
    before = snapshot(world.root)
    status, message = run(case.argv(world), capsys)
    assert status == case.status, message
    for text in case.says(world):
        assert str(text) in message, f"{text!r} not in:\n{message}"
    assert "Traceback" not in message
    if case.status != 0:
        assert message.count("Error:") == 1, message
    after = snapshot(world.root)
    changed = [str(p) for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"{name}: changed or removed {changed}"
    allowed = [world.out / c for c in case.creates]
    new = [
        p for p in after if p not in before and not any(p == a or a in p.parents for a in allowed)
    ]
    assert not new, f"{name}: left {new}"
    for path in allowed:
        assert path.exists(), path
    if case.check is not None:
        case.check(world)


# --------------------------------------------------------------------------------------------
# the mechanisms behind the table, one by one


def test_same_file_is_found_by_path_link_inode_and_sidecar(tmp_path):
    from geoseg.errors import InputOverwriteError
    from geoseg.io import check_no_overwrite

    data = tmp_path / "data.gpkg"
    data.write_bytes(b"x")
    (tmp_path / "alias.gpkg").symlink_to(data)
    os.link(data, tmp_path / "hard.gpkg")
    shp = tmp_path / "roads.shp"
    for ext in (".shp", ".shx", ".dbf", ".prj"):
        shp.with_suffix(ext).write_bytes(b"s")
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"w")
    clashes = [
        (data, tmp_path / "sub" / ".." / "data.gpkg"),  # same path, spelt otherwise
        (data, tmp_path / "alias.gpkg"),  # a symlink to the input
        (data, tmp_path / "hard.gpkg"),  # a hard link: another name, the same inode
        (shp, tmp_path / "roads.dbf"),  # a Shapefile's sidecar
        (shp.with_suffix(".dbf"), shp),  # an output .shp whose .dbf is the input
        (ckpt, tmp_path / "m.json"),  # a checkpoint's JSON sidecar
    ]
    for inp, out in clashes:
        with pytest.raises(InputOverwriteError) as err:
            check_no_overwrite([("IN", inp)], [("-o", out)])
        assert str(out) in str(err.value) and str(inp) in str(err.value)
    check_no_overwrite([("IN", data)], [("-o", tmp_path / "other.gpkg"), ("-o", None)])
    check_no_overwrite([("IN", "/vsicurl/https://x/data.gpkg")], [("-o", data)])
    images = tmp_path / "chips" / "images"
    with pytest.raises(InputOverwriteError, match="replace files of the input"):
        check_no_overwrite([("SRC", tmp_path / "chips")], [], trees=[("-o", images)])
    with pytest.raises(InputOverwriteError):
        check_no_overwrite([("SCENE", images / "a.tif")], [], trees=[("-o", images)])
    check_no_overwrite([("SCENE", tmp_path / "a.tif")], [], trees=[("-o", images)])


def test_batch_resume_reruns_a_scene_whose_output_is_not_what_it_wrote(tmp_path):
    """A 0-byte, truncated or replaced output is not trusted; an intact one is."""
    from geoseg.batch.manifest import SceneRecord, SceneStatus, file_sha256, is_done

    out = tmp_path / "a.gpkg"
    write_vectors(out, boxes())
    good = out.read_bytes()
    record = SceneRecord(
        scene="a",
        path="a.tif",
        status=SceneStatus.OK,
        output=str(out),
        output_bytes=len(good),
        output_sha256=file_sha256(out),
        model_sha256="m",
        config_hash="c",
    )
    same = dict(path="a.tif", output=out, model_sha256="m", config_hash="c", quicklook=None)
    assert is_done(record, **same)
    for broken in (b"", good[: len(good) // 2], good[:-1] + b"\0"):
        out.write_bytes(broken)
        assert not is_done(record, **same), len(broken)
    out.write_bytes(good)
    old = SceneRecord.from_dict({**record.to_dict(), "output_sha256": "", "output_bytes": 0})
    assert not is_done(old, **same)  # a record without a hash is re-run, not trusted
    out.unlink()
    assert not is_done(record, **same)


def test_tile_memory_estimate():
    from geoseg.errors import ConfigError
    from geoseg.tiling import check_tile_memory

    check_tile_memory(1024, bands=3, batch_size=8, available=16 * 2**30)
    with pytest.raises(ConfigError, match=r"--tile-size 30000.*at most \d+"):
        check_tile_memory(30000, bands=3, available=16 * 2**30)


@pytest.fixture
def failing_count(monkeypatch):
    """``geoseg count`` whose library call fails with an ``OSError`` from the system."""
    import geoseg.count

    def fail(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/results.gpkg")

    monkeypatch.setattr(geoseg.count, "count", fail)


def test_oserror_is_one_line_and_v_shows_the_traceback(world, capsys, failing_count):
    status, message = run(["count", world["results"]], capsys)
    assert status == 1
    assert message.strip() == "Error: /data/results.gpkg: permission denied"
    status, message = run(["-v", "count", world["results"]], capsys)
    assert status == 1 and "Traceback" in message and "PermissionError" in message
    assert message.strip().endswith("Error: /data/results.gpkg: permission denied")


def test_geoseg_error_traceback_only_with_v(world, capsys):
    argv = ["predict", world["zero"], "-m", world["model"], "-o", world.out / "o.gpkg"]
    status, message = run(argv, capsys)
    assert status == 1 and "Traceback" not in message
    status, message = run(["-v", *argv], capsys)
    assert status == 1 and "Traceback" in message and "RasterReadError" in message


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_is_one_line_and_the_conventional_status(world, capsys, monkeypatch, signum):
    """In process: the handler every command shares (the real signals are below, ``slow``)."""
    import geoseg.count
    from geoseg.cli import Terminated

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(int(signum))

    monkeypatch.setattr(geoseg.count, "count", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    status, message = run(["count", world["results"]], capsys)
    assert status == 128 + int(signum)
    assert message.strip() == (
        f"interrupted ({signal.Signals(signum).name}): outputs are written whole or not at "
        "all, so no partial file was left; run the same command again"
    )
    assert signal.getsignal(signal.SIGTERM) is handler  # main() puts the old handler back


# --------------------------------------------------------------------------------------------
# interrupts: real signals to a real command, then the rerun


def _geoseg(*args, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", "from geoseg.cli import main; main()", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ended early ({proc.returncode}): {proc.communicate()}")
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _children(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _all_gone(procs, timeout=10.0):
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive]


def _interrupt_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("interrupted (")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
def test_sigterm_on_predict_with_reader_processes_then_rerun(world, tmp_path):
    """SIGTERM while 2 reader processes run: exit 143, no reader left, no output; rerun works."""
    scene = write_raster(tmp_path / "wide.tif", size=1536)
    out = tmp_path / "res.gpkg"
    args = ["predict", scene, "-m", world["model"], "-o", out, "--device", "cpu"]
    args += ["--workers", "2", "--tile-size", "64", "--overlap", "8", "--norm", "scene"]
    proc = _geoseg(*args)
    try:
        readers = _wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid), proc)
        time.sleep(1.0)  # well into the tiles
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    line = _interrupt_line(stderr)
    assert "SIGTERM" in line and "run the same command again" in line
    assert not _all_gone(readers), "reader processes outlived the command"
    assert not out.exists() and not list(tmp_path.glob(".res.gpkg*"))
    rerun = _geoseg(*args)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert out.is_file() and "total" in stdout


@pytest.mark.slow
def test_ctrl_c_on_batch_then_rerun(world, tmp_path):
    """Ctrl-C (SIGINT to the process group) on batch: one line, status 130; rerun finishes."""
    scenes = [write_raster(tmp_path / f"s{i}.tif", size=512) for i in range(3)]
    out = tmp_path / "out"
    args = ["batch", *scenes, "-m", world["model"], "-o", out, "--workers", "1"]
    args += ["--tile-size", "64", "--overlap", "8", "--device", "cpu"]
    proc = _geoseg(*args, start_new_session=True)
    try:
        workers = _wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid), proc)
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    line = _interrupt_line(stderr)
    assert "manifest.json" in line and "rerun the same command" in line
    assert not _all_gone(workers), "dask processes outlived the command"
    rerun = _geoseg(*args)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert all((out / f"s{i}.gpkg").is_file() for i in range(3))


@pytest.mark.slow
def test_ctrl_c_on_train_then_rerun_resumes(world, tmp_path):
    from geoseg.chips import make_chips

    labels = write_vectors(tmp_path / "ships.gpkg", boxes())
    chips = tmp_path / "chips"
    make_chips(world["scene"], labels, chips, size=32, overlap=0, min_visible_pixels=1)
    run_dir = tmp_path / "run"
    run_file = _run_file(tmp_path / "run.yaml", chips, run_dir, checkpoint_every=1, epochs=400)
    args = ["train", run_file, "--no-progress", "--device", "cpu"]
    proc = _geoseg(*args)
    try:
        _wait_for(lambda: (run_dir / "last_state.json").is_file(), proc, timeout=300)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "resume" in _interrupt_line(stderr)
    step = json.loads((run_dir / "last_state.json").read_text())["loop"]["step"]
    rerun = _geoseg(*args, "--max-steps", str(step + 1))
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert json.loads((run_dir / "last_state.json").read_text())["loop"]["step"] == step + 1
