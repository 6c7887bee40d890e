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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
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
    p["south_up"] = write_raster(
        root / "south_up.tif", transform=Affine(0.5, 0, 500000, 0, 0.5, 4000000)
    )
    p["nan"] = write_raster(root / "nan.tif", data=np.full((3, 64, 64), np.nan, np.float32))
    p["nodata"] = write_raster(root / "nodata.tif", data=np.zeros((3, 64, 64), np.uint8), nodata=0)
    p["one_band"] = write_raster(root / "one_band.tif", data=np.ones((1, 64, 64), np.uint8) * 9)
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
    substrings of stdout + stderr. ``creates``: the output files of an accepted command
    (relative to ``w.out``); a refusal must create nothing.
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
        lambda w: [w["one_band"], "band"],
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
            "0",
        ],
        1,
        lambda w: ["--tile-size 50000", "GiB", "at most"],
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
    "count a batch folder -o one of its results": Mistake(
        lambda w: ["count", w.root / "batch_out", "-o", w["batch_result"]],
        1,
        lambda w: [w["batch_result"], "RESULTS"],
    ),
    "chips -o the folder holding the labels as its index": Mistake(
        lambda w: ["chips", w["scene"], w["chip_index"], "-o", w["chips_out"], "--overwrite"],
        1,
        lambda w: [w["chip_index"], "LABELS"],
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
    "train on chips whose only class is unknown": Mistake(
        lambda w: ["train", w["run_boats"], "--no-progress", "--max-steps", "1"],
        1,
        lambda w: [w["boat_chips"], "no instance", "ship"],
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
    allowed = {world.out / c for c in case.creates}
    new = [p for p in after if p not in before and p not in allowed]
    assert not new, f"{name}: left {new}"
    for c in case.creates:
        assert (world.out / c).is_file()
    if case.check is not None:
        case.check(world)
