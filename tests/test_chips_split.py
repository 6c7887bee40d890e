"""Train/validation split by area inside one scene (geoseg.chips.make_split_chips).

The property under test: **no training chip overlaps the validation area**, and at least
``gap`` pixels lie between them, checked on the footprints of the chip GeoTIFFs written (their
own transforms and sizes, in the scene CRS) against the validation area file written beside.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from shapely.geometry import box

from geoseg.chips import make_split_chips, split_windows
from geoseg.cli import cli
from geoseg.coco import read_coco
from geoseg.errors import ConfigError, LabelError

UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 4000000.0, 0.5


def px(x, y):
    return (X0 + RES * x, Y0 - RES * y)


def box_px(x0, y0, x1, y1):
    return box(*px(x0, y1), *px(x1, y0))


def make_scene(tmp_path: Path, width: int, height: int) -> str:
    data = np.random.default_rng(0).integers(1, 255, (3, height, width), dtype=np.uint8)
    path = str(tmp_path / "scene.tif")
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(X0, Y0, RES, RES),
    ) as ds:
        ds.write(data)
    return path


def make_labels(width: int, height: int, n: int = 40, seed: int = 1) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    geoms = []
    for _ in range(n):
        x, y = rng.uniform(0, width - 20), rng.uniform(0, height - 20)
        geoms.append(box_px(x, y, x + rng.uniform(6, 20), y + rng.uniform(6, 20)))
    return gpd.GeoDataFrame({"class": rng.choice(["ship", "vehicle"], n)}, geometry=geoms, crs=UTM)


def footprints(folder: str | Path) -> list:
    """Scene-CRS footprints of every chip GeoTIFF of a chip folder."""
    coco = read_coco(Path(folder) / "annotations.json")
    out = []
    for im in coco.images:
        with rasterio.open(Path(folder) / im["file_name"]) as ds:
            out.append(box(*ds.bounds))
    return out


def val_area(out: Path):
    gdf = gpd.read_file(out / "val_area.gpkg")
    assert gdf.crs is not None and gdf.crs.to_epsg() == 32633
    return shapely.union_all(gdf.geometry.values)


def assert_no_training_chip_overlaps(out: Path, gap_px: int, *, val_inside: bool):
    area = val_area(out)
    train = footprints(out / "train")
    val = footprints(out / "val")
    assert train and val
    for fp in train:
        assert fp.intersection(area).area == 0.0
        assert fp.distance(area) >= gap_px * RES - 1e-6
    for fp in val:
        assert fp.intersection(area).area > 0
        if val_inside:
            assert fp.difference(area).area < 1e-6


@pytest.mark.parametrize(
    ("width", "height", "side"), [(300, 200, "end"), (180, 320, "end"), (300, 200, "start")]
)
def test_strip_split_no_training_chip_overlaps_validation(tmp_path, width, height, side):
    scene = make_scene(tmp_path, width, height)
    s = make_split_chips(
        scene,
        make_labels(width, height),
        tmp_path / "out",
        val_fraction=0.25,
        val_side=side,
        size=64,
        overlap=16,
        keep_empty_fraction=1.0,
    )
    assert s.gap == 16  # default: the overlap
    assert_no_training_chip_overlaps(tmp_path / "out", 16, val_inside=True)
    # the strip runs along the longer side, at the chosen end
    x0, y0, x1, y1 = s.val_area.bounds
    if width >= height:
        assert (y0, y1) == (0, height) and x1 - x0 == round(0.25 * width)
        assert (x1 == width) if side == "end" else (x0 == 0)
    else:
        assert (x0, x1) == (0, width) and y1 - y0 == round(0.25 * height)
    # both parts share the scene's normalisation, and say which part they are
    train = read_coco(tmp_path / "out" / "train" / "annotations.json").extra["geoseg"]
    val = read_coco(tmp_path / "out" / "val" / "annotations.json").extra["geoseg"]
    assert train["norm_stats"] == val["norm_stats"]
    assert train["split"]["part"] == "train" and val["split"]["part"] == "val"
    assert train["split"]["gap"] == 16
    # training masks hold no pixel of the validation strip (they lie in their chips)
    assert s.train.n_annotations > 0 and s.val.n_annotations > 0


def test_polygon_split_in_another_crs(tmp_path):
    scene = make_scene(tmp_path, 320, 240)
    poly = gpd.GeoSeries([box_px(120, 60, 220, 170)], crs=UTM).to_crs("EPSG:4326")
    gpd.GeoDataFrame(geometry=poly).to_file(tmp_path / "val.geojson")
    s = make_split_chips(
        scene,
        make_labels(320, 240, n=60),
        tmp_path / "out",
        val_area=tmp_path / "val.geojson",
        size=64,
        overlap=8,
        gap=20,
        keep_empty_fraction=1.0,
    )
    assert s.gap == 20 and s.train_region is None
    assert_no_training_chip_overlaps(tmp_path / "out", 20, val_inside=False)
    # validation chips stay inside the polygon's bounding window
    assert s.val_area.bounds == pytest.approx((120, 60, 220, 170), abs=0.01)
    for fp in footprints(tmp_path / "out" / "val"):
        assert fp.difference(box_px(120, 60, 220, 170).buffer(RES)).area < 1e-6


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(2, 3000),
    height=st.integers(2, 3000),
    fraction=st.floats(0.01, 0.99),
    gap=st.integers(0, 300),
    side=st.sampled_from(["start", "end"]),
)
def test_split_windows_are_disjoint_gap_apart(width, height, fraction, gap, side):
    try:
        train, val = split_windows(width, height, fraction, gap=gap, side=side)
    except ConfigError:
        assert max(width, height) - max(1, round(fraction * max(width, height))) - gap < 1
        return
    assert train.intersection(val).area == 0
    assert min(train.area, val.area) > 0
    along_x = width >= height
    a0, a1 = (train.col_off, train.col_end) if along_x else (train.row_off, train.row_end)
    b0, b1 = (val.col_off, val.col_end) if along_x else (val.row_off, val.row_end)
    assert max(b0 - a1, a0 - b1) == gap
    assert min(a0, b0) >= 0 and max(a1, b1) == (width if along_x else height)


def test_split_errors(tmp_path):
    scene = make_scene(tmp_path, 120, 100)
    labels = make_labels(120, 100)
    with pytest.raises(ConfigError, match="exactly one"):
        make_split_chips(scene, labels, tmp_path / "o", size=32, overlap=4)
    with pytest.raises(ConfigError, match="exactly one"):
        make_split_chips(
            scene, labels, tmp_path / "o", val_fraction=0.2, val_area=box(0, 0, 5, 5), size=32
        )
    with pytest.raises(ConfigError, match="no training pixel"):
        make_split_chips(scene, labels, tmp_path / "o", val_fraction=0.5, gap=80, size=32)
    outside = gpd.GeoDataFrame(geometry=[box_px(500, 500, 600, 600)], crs=UTM)
    with pytest.raises(LabelError, match="no polygon inside the scene"):
        make_split_chips(scene, labels, tmp_path / "o", val_area=outside, size=32, overlap=4)


def test_cli_chips_split(tmp_path):
    scene = make_scene(tmp_path, 200, 160)
    make_labels(200, 160).to_file(tmp_path / "labels.gpkg")
    out = tmp_path / "chips"
    res = CliRunner().invoke(
        cli,
        [
            "chips",
            scene,
            str(tmp_path / "labels.gpkg"),
            "-o",
            str(out),
            "--size",
            "64",
            "--overlap",
            "8",
            "--val-fraction",
            "0.3",
            "--gap",
            "6m",
            "--keep-empty",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "val_chips" in res.output
    assert (out / "train" / "annotations.json").is_file()
    assert (out / "val" / "annotations.json").is_file()
    assert (
        json.loads((out / "train" / "annotations.json").read_text())["geoseg"]["split"]["gap"] == 12
    )  # 6 m at 0.5 m
    assert_no_training_chip_overlaps(out, 12, val_inside=True)
    res = CliRunner().invoke(
        cli, ["chips", scene, str(tmp_path / "labels.gpkg"), "-o", str(out), "--gap", "4"]
    )
    assert res.exit_code == 2 and "--gap only applies" in res.output
