"""Tests for geoseg.count and `geoseg count`: counts against synthetic ground truth."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from pyproj import Geod

from geoseg.cli import cli
from geoseg.count import DEFAULT_SIZE_BINS, count, format_counts, read_results, write_counts
from geoseg.errors import ConfigError, ExportError, LabelError

UTM = "EPSG:32631"  # metres, zone 31N
X0, Y0 = 500_000.0, 5_000_000.0
CLASSES = ("ship", "vehicle", "building")


def make_results(seed, n=120, *, scene="scene_a", x0=X0, y0=Y0, extent=2000.0, margin=8.0):
    """Rotated rectangles with known centres, classes, scores and lengths (scene CRS: UTM).

    Centres keep ``margin`` metres from the 1000 m zone borders, so rounding in a reprojection
    never moves one across a border.
    """
    rng = np.random.default_rng(seed)
    cx, cy = [], []
    while len(cx) < n:
        x, y = rng.uniform(0, extent, 2)
        if min(abs(x % 1000 - d) for d in (0, 1000)) < margin:
            continue
        if min(abs(y % 1000 - d) for d in (0, 1000)) < margin:
            continue
        cx.append(x)
        cy.append(y)
    cx, cy = np.array(cx) + x0, np.array(cy) + y0
    cls = rng.choice(CLASSES, n)
    length = np.where(cls == "ship", rng.uniform(5, 250, n), rng.uniform(1.5, 15, n))
    width = length / 3
    angle = rng.uniform(0, 180, n)
    geoms = [
        shapely.affinity.rotate(
            shapely.box(x - lx / 2, y - w / 2, x + lx / 2, y + w / 2), a, origin=(x, y)
        )
        for x, y, lx, w, a in zip(cx, cy, length, width, angle, strict=True)
    ]
    return gpd.GeoDataFrame(
        {
            "class": cls,
            "score": rng.uniform(0.05, 1.0, n).round(3),
            "area_m2": length * width,
            "length_m": length,
            "width_m": width,
            "heading_deg": angle,
            "scene": scene,
            "true_x": cx,
            "true_y": cy,
        },
        geometry=geoms,
        crs=UTM,
    )


def two_zones(crs=UTM):
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[
            shapely.box(X0, Y0, X0 + 1000, Y0 + 1000),
            shapely.box(X0 + 1000, Y0, X0 + 2000, Y0 + 1000),
        ],
        crs=UTM,
    )
    if crs != UTM:
        zones["geometry"] = shapely.segmentize(zones.geometry.to_numpy(), 5.0)
        zones = zones.to_crs(crs)
    return zones


def expected_per_zone(gdf):
    """Ground truth from the constructed centres (independent of geoseg.count)."""
    inside_y = (gdf["true_y"] >= Y0) & (gdf["true_y"] < Y0 + 1000)
    west = inside_y & (gdf["true_x"] >= X0) & (gdf["true_x"] < X0 + 1000)
    east = inside_y & (gdf["true_x"] >= X0 + 1000) & (gdf["true_x"] < X0 + 2000)
    return {"west": gdf[west], "east": gdf[east]}


def test_per_scene_table_counts_each_class():
    gdf = make_results(1)
    r = count(gdf)
    assert r.total == len(gdf)
    for cls in CLASSES:
        row = r.per_scene[r.per_scene["class"] == cls].iloc[0]
        sub = gdf[gdf["class"] == cls]
        assert row["count"] == len(sub)
        assert row["mean_score"] == pytest.approx(sub.score.mean())
        assert row["total_area_m2"] == pytest.approx(sub.area_m2.sum())
    assert r.per_class == {c: int((gdf["class"] == c).sum()) for c in sorted(CLASSES)}


@pytest.mark.parametrize("aoi_crs", [UTM, "EPSG:4326", "EPSG:3857"])
def test_zone_counts_match_ground_truth_in_any_aoi_crs(aoi_crs):
    gdf = make_results(2)
    truth = expected_per_zone(gdf)
    r = count(gdf, aoi=two_zones(aoi_crs))
    assert r.zones.crs == gpd.GeoSeries(crs=aoi_crs).crs  # zones stay in their own CRS
    for _, zone in r.zones.iterrows():
        exp = truth[zone["name"]]
        assert zone["count_total"] == len(exp)
        for cls in CLASSES:
            assert zone[f"count_{cls}"] == int((exp["class"] == cls).sum())


def test_object_straddling_two_zones_is_counted_once_in_its_centroid_zone():
    # 60 m long ship across the west/east border; 2/3 of it lies in the east zone
    ship = shapely.box(X0 + 980, Y0 + 500, X0 + 1040, Y0 + 510)
    gdf = gpd.GeoDataFrame(
        {"class": ["ship"], "score": [0.9], "length_m": [60.0], "scene": ["s"]},
        geometry=[ship],
        crs=UTM,
    )
    r = count(gdf, aoi=two_zones())
    zones = r.zones.set_index("name")
    assert zones["count_total"].sum() == 1
    assert zones.loc["east", "count_ship"] == 1 and zones.loc["west", "count_ship"] == 0


def test_centroid_exactly_on_shared_border_is_counted_once():
    square = shapely.box(X0 + 990, Y0 + 490, X0 + 1010, Y0 + 510)  # centroid (X0+1000, Y0+500)
    gdf = gpd.GeoDataFrame({"class": ["vehicle"], "scene": ["s"]}, geometry=[square], crs=UTM)
    r = count(gdf, aoi=two_zones(), grid_m=100)
    assert r.zones["count_total"].sum() == 1
    assert r.grid["count_total"].sum() == 1


def test_overlapping_zones_each_count_their_objects():
    gdf = make_results(3, n=60)
    big = shapely.box(X0, Y0, X0 + 2000, Y0 + 2000)
    small = shapely.box(X0, Y0, X0 + 1000, Y0 + 1000)
    zones = gpd.GeoDataFrame(geometry=[big, small], crs=UTM)
    r = count(gdf, aoi=zones)
    assert r.zones.loc[0, "count_total"] == len(gdf)
    assert r.zones.loc[1, "count_total"] == len(expected_per_zone(gdf)["west"])


@pytest.mark.parametrize("cell", [250.0, 333.0, 1000.0])
def test_grid_counts_sum_to_total_and_match_floor_arithmetic(cell):
    gdf = make_results(4)
    r = count(gdf, grid_m=cell)
    grid = r.grid
    assert grid.crs == gdf.crs  # the data's projected CRS
    assert grid["count_total"].sum() == r.total == len(gdf)
    for cls in CLASSES:
        assert grid[f"count_{cls}"].sum() == int((gdf["class"] == cls).sum())
    # each object lies in the cell the grid says holds its centroid
    joined = gpd.sjoin(
        gpd.GeoDataFrame(geometry=gpd.points_from_xy(gdf["true_x"], gdf["true_y"]), crs=UTM),
        grid[["cell_id", "geometry"]],
        predicate="within",
    )
    per_cell = joined.groupby("cell_id").size()
    got = grid.set_index("cell_id")["count_total"]
    assert (got[per_cell.index] == per_cell).all()
    # cells are square, aligned on multiples of the cell size
    b = grid.geometry.bounds
    assert np.allclose(b.maxx - b.minx, cell) and np.allclose(b.maxy - b.miny, cell)
    assert np.allclose(np.mod(b.minx, cell), 0) or np.allclose(np.mod(b.minx, cell), cell)


def test_grid_covers_each_scene_not_the_space_between_scenes():
    a = make_results(21, n=50, scene="a")
    b = make_results(22, n=50, scene="b", x0=X0 + 60_000, y0=Y0 + 30_000)
    r = count([a, b], grid_m=100)
    assert r.grid["count_total"].sum() == 100
    per_scene_cells = 21 * 21  # objects of one scene span < 2000 m: at most 21 x 21 cells
    assert len(r.grid) <= 2 * per_scene_cells
    assert r.grid["cell_id"].is_unique
    assert not r.grid.geometry.overlaps(r.grid.geometry.shift()).fillna(False).any()


def test_grid_of_geographic_results_is_built_in_local_utm():
    gdf = make_results(5).to_crs("EPSG:4326")
    r = count(gdf, grid_m=500)
    assert r.grid.crs.is_projected
    assert r.grid.crs.to_epsg() == 32631
    assert r.grid["count_total"].sum() == len(gdf)
    assert r.grid.area.round(3).eq(250_000.0).all()


def test_min_score_and_classes_filters():
    gdf = make_results(6)
    r = count(gdf, min_score=0.5, classes=["ship", "vehicle"], aoi=two_zones(), grid_m=250)
    keep = gdf[(gdf.score >= 0.5) & gdf["class"].isin(["ship", "vehicle"])]
    assert r.classes == ("ship", "vehicle")
    assert r.total == len(keep)
    assert set(r.per_scene["class"]) == {"ship", "vehicle"}
    assert "count_building" not in r.zones.columns
    assert r.grid["count_total"].sum() == len(keep)
    truth = expected_per_zone(keep)
    for _, zone in r.zones.iterrows():
        assert zone["count_total"] == len(truth[zone["name"]])


def test_requested_class_without_objects_gets_zero_columns():
    gdf = make_results(7)
    gdf = gdf[gdf["class"] != "vehicle"]
    r = count(gdf, classes=["vehicle", "ship"], aoi=two_zones())
    assert r.per_class["vehicle"] == 0
    assert (r.zones["count_vehicle"] == 0).all()
    assert r.per_class["ship"] == int((gdf["class"] == "ship").sum())


def test_density_uses_equal_area_square_kilometres():
    # a 0.02 x 0.02 degree zone at 60 N: in degrees its "area" is 0.0004; in km2 about 2.47
    lon0, lat0 = 3.0, 60.0
    zone = shapely.box(lon0, lat0, lon0 + 0.02, lat0 + 0.02)
    zones = gpd.GeoDataFrame(geometry=[zone], crs="EPSG:4326")
    rng = np.random.default_rng(8)
    pts = rng.uniform([lon0 + 0.001, lat0 + 0.001], [lon0 + 0.019, lat0 + 0.019], (17, 2))
    objs = gpd.GeoDataFrame(
        {"class": ["vehicle"] * len(pts), "score": 0.9},
        geometry=gpd.points_from_xy(pts[:, 0], pts[:, 1]),
        crs="EPSG:4326",
    )
    objs["geometry"] = objs.to_crs(objs.estimate_utm_crs()).buffer(2).to_crs("EPSG:4326")
    r = count(objs, aoi=zones)
    geod_area_km2 = abs(Geod(ellps="WGS84").geometry_area_perimeter(zone)[0]) / 1e6
    z = r.zones.iloc[0]
    assert z["area_km2"] == pytest.approx(geod_area_km2, rel=2e-3)
    assert z["count_total"] == 17
    assert z["density_total_km2"] == pytest.approx(17 / geod_area_km2, rel=2e-3)


def test_grid_cell_density_is_count_over_equal_area_km2():
    gdf = make_results(9)
    r = count(gdf, grid_m=500)
    g = r.grid
    geod = Geod(ellps="WGS84")
    for _, cell in g[g["count_total"] > 0].head(5).iterrows():
        poly = gpd.GeoSeries([cell.geometry], crs=g.crs).to_crs("EPSG:4326").iloc[0]
        km2 = abs(geod.geometry_area_perimeter(shapely.segmentize(poly, 1e-4))[0]) / 1e6
        assert cell["area_km2"] == pytest.approx(km2, rel=2e-3)
        assert cell["density_total_km2"] == pytest.approx(cell["count_total"] / km2, rel=2e-3)


def test_size_histograms_match_numpy():
    gdf = make_results(10, n=300)
    r = count(gdf)
    hists = {h.class_name: h for h in r.histograms}
    assert set(hists) == {"ship", "vehicle"}
    for cls, h in hists.items():
        edges = np.asarray(DEFAULT_SIZE_BINS[cls])
        exp, _ = np.histogram(gdf.loc[gdf["class"] == cls, "length_m"], bins=edges)
        assert list(h.counts) == exp.tolist()
        frame = h.to_frame()
        assert frame["count"].sum() == int((gdf["class"] == cls).sum())


def test_lengths_computed_when_the_column_is_missing():
    gdf = make_results(11, n=40).drop(columns=["length_m"])
    r = count(gdf, size_bins={"ship": (0, 1e6)})
    assert r.histograms[0].counts == (int((gdf["class"] == "ship").sum()),)
    per_ship = r.per_scene.set_index("class").loc["ship", "mean_length_m"]
    truth = make_results(11, n=40)
    assert per_ship == pytest.approx(truth.loc[truth["class"] == "ship", "length_m"].mean())


def test_batch_folder_two_scenes_two_crs(tmp_path):
    a = make_results(12, scene="a")
    b = make_results(13, scene="b", x0=X0 + 5000)
    a.drop(columns=["true_x", "true_y"]).to_file(tmp_path / "a.gpkg")
    b.drop(columns=["true_x", "true_y"]).to_crs("EPSG:4326").to_file(tmp_path / "b.geojson")
    (tmp_path / "manifest.json").write_text(json.dumps({"scenes": ["a", "b"]}))
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": []}))
    pd.DataFrame({"scene": ["a", "b"], "n": [1, 2]}).to_parquet(tmp_path / "summary.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "table.parquet")  # not a GeoParquet
    frames = read_results(tmp_path)
    assert sorted(f["scene"].iloc[0] for f in frames) == ["a", "b"]
    r = count(tmp_path, grid_m=1000, aoi=two_zones())
    assert r.scenes == ("a", "b")
    assert sorted(s.split(":")[0].rsplit("/", 1)[-1] for s in r.skipped) == [
        "coco.json",
        "table.parquet",
    ]
    per = r.per_scene.groupby("scene")["count"].sum()
    assert per["a"] == len(a) and per["b"] == len(b)
    assert r.grid["count_total"].sum() == len(a) + len(b)
    # scene b lies 5 km east of both zones: only scene a is counted in them
    assert r.zones["count_total"].sum() == sum(len(v) for v in expected_per_zone(a).values())


def test_empty_result_file_still_names_its_scene(tmp_path):
    empty = make_results(14).iloc[:0].drop(columns=["true_x", "true_y"])
    empty.to_file(tmp_path / "quiet.gpkg")
    r = count(tmp_path / "quiet.gpkg", classes=["ship"], grid_m=250, aoi=two_zones())
    assert r.total == 0
    assert r.scenes == ("quiet",)
    assert r.zones["count_total"].sum() == 0
    assert len(r.grid) > 0 and r.grid["count_total"].sum() == 0


def test_write_counts_csv_gpkg_json(tmp_path):
    gdf = make_results(15)
    r = count(gdf, aoi=two_zones("EPSG:4326"), grid_m=500)
    csv = write_counts(r, tmp_path / "c.csv")
    table = pd.read_csv(csv)
    assert table["count"].sum() == len(gdf)
    gpkg = write_counts(r, tmp_path / "c.gpkg")
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert layers == {"zones", "grid"}
    grid = gpd.read_file(gpkg, layer="grid")
    assert grid["count_total"].sum() == len(gdf)
    zones = gpd.read_file(gpkg, layer="zones")
    assert zones.crs.to_epsg() == 4326 and "density_total_km2" in zones.columns
    js = json.loads(write_counts(r, tmp_path / "c.json").read_text())
    assert js["total"] == len(gdf)
    assert sum(c["count_total"] for c in js["grid"]["nonempty_cells"]) == len(gdf)
    assert {h["class"] for h in js["histograms"]} == {"ship", "vehicle"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.gpkg", "c.json"]


def test_write_counts_rejects_unknown_extension_and_gpkg_without_zones(tmp_path):
    r = count(make_results(16, n=10))
    with pytest.raises(ExportError, match=r"\.xlsx"):
        write_counts(r, tmp_path / "c.xlsx")
    with pytest.raises(ExportError, match="--aoi"):
        write_counts(r, tmp_path / "c.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_raise_clear_errors(tmp_path):
    gdf = make_results(17, n=10)
    with pytest.raises(ConfigError, match="grid_m"):
        count(gdf, grid_m=0)
    with pytest.raises(ConfigError, match="larger cell size"):
        count(gdf.to_crs("EPSG:4326"), grid_m=1e-3)
    with pytest.raises(LabelError, match="no such file"):
        count(tmp_path / "missing.gpkg")
    with pytest.raises(LabelError, match="no result files"):
        count(tmp_path)
    with pytest.raises(LabelError, match="'class'"):
        count(gdf.drop(columns=["class"]))
    with pytest.raises(LabelError, match="no CRS"):
        count(gdf, aoi=two_zones().set_crs(None, allow_override=True))
    with pytest.raises(LabelError, match="no CRS"):
        count(gdf.set_crs(None, allow_override=True), grid_m=100)
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy([X0], [Y0]), crs=UTM)
    with pytest.raises(LabelError, match="polygons"):
        count(gdf, aoi=points)


def test_format_counts_lists_scenes_totals_and_zones():
    gdf = make_results(18)
    r = count(gdf, aoi=two_zones(), grid_m=250)
    text = format_counts(r)
    assert "TOTAL" in text and str(len(gdf)) in text
    assert "ship length_m" in text
    assert f"grid 250 m: {len(r.grid)} cells" in text


def test_cli_count_writes_outputs_and_prints_table(tmp_path):
    gdf = make_results(19).drop(columns=["true_x", "true_y"])
    res = tmp_path / "res.gpkg"
    gdf.to_file(res)
    aoi = tmp_path / "zones.geojson"
    two_zones("EPSG:4326").to_file(aoi)
    runner = CliRunner()
    r = runner.invoke(
        cli,
        [
            "count",
            str(res),
            "--aoi",
            str(aoi),
            "--grid",
            "0.5km",
            "--min-score",
            "0.3",
            "--classes",
            "ship,vehicle",
            "-o",
            str(tmp_path / "out.csv"),
            "-o",
            str(tmp_path / "out.gpkg"),
        ],
    )
    assert r.exit_code == 0, r.output
    keep = gdf[(gdf.score >= 0.3) & gdf["class"].isin(["ship", "vehicle"])]
    assert "TOTAL" in r.output
    assert pd.read_csv(tmp_path / "out.csv")["count"].sum() == len(keep)
    grid = gpd.read_file(tmp_path / "out.gpkg", layer="grid")
    assert grid["count_total"].sum() == len(keep)
    assert np.allclose(grid.area, 250_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "abc"], "metres"),
        (["--grid", "-5m"], "metres"),
        (["-o", "x.xlsx"], "unknown counts format"),
    ],
)
def test_cli_count_bad_options(tmp_path, args, message):
    res = tmp_path / "res.gpkg"
    make_results(20, n=5).to_file(res)
    r = CliRunner().invoke(
        cli, ["count", str(res), *[a.replace("x.", f"{tmp_path}/x.") for a in args]]
    )
    assert r.exit_code != 0
    assert message in r.output


def test_cli_count_unreadable_results_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    r = CliRunner().invoke(cli, ["count", str(bad)])
    assert r.exit_code == 1
    assert "Error:" in r.output and "bad.gpkg" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_counts_on_a_synthetic_scene_match_its_labels(tmp_path):
    synth = pytest.importorskip("geoseg.synth")
    scene = synth.generate_scene(tmp_path / "s.tif", size=256, seed=3)
    labels = gpd.read_file(scene.labels_path)
    r = count(scene.labels_path, grid_m=50)
    assert r.total == len(labels)
    assert r.grid["count_total"].sum() == len(labels)
    assert r.per_class == {c: int((labels["class"] == c).sum()) for c in r.classes}
    if isinstance(scene.counts, dict):
        for cls, n in scene.counts.items():
            assert r.per_class.get(cls, 0) == n
    assert math.isfinite(r.grid["density_total_km2"].max())


# --------------------------------------------------------------------------------------------
# zones named by the AOI, unknown classes refused (issue 16)


def test_zones_are_named_by_the_aoi_name_column(tmp_path):
    gdf = make_results(30, n=40)
    truth = expected_per_zone(gdf)
    zones = two_zones()
    zones["id"] = [7, 3]  # an id column too: "name" is preferred
    zones = zones[["id", "name", "geometry"]]
    r = count(gdf, aoi=zones)
    assert r.zone_field == "name"
    assert list(r.zones["zone"]) == ["west", "east"]
    assert list(r.zones["zone_id"]) == [0, 1]
    table = format_counts(r)
    for name, rows in truth.items():  # the table's zone rows are labelled by name
        line = next(t for t in table.splitlines() if t.startswith(name))
        assert line.split()[-2] == str(len(rows))
    assert r.to_dict()["zones"][0]["zone"] == "west"
    write_counts(r, tmp_path / "z.gpkg")
    assert list(gpd.read_file(tmp_path / "z.gpkg", layer="zones")["zone"]) == ["west", "east"]


def test_zone_names_auto_detected_chosen_or_row_numbers():
    from geoseg.count import zone_name_field

    gdf = make_results(31, n=20)
    zones = two_zones().rename(columns={"name": "NAME_EN"})
    zones["zone_id"] = ["Z-1", "Z-2"]  # clashes with the count column: kept as aoi_zone_id
    assert zone_name_field(zones) == "NAME_EN"
    r = count(gdf, aoi=zones)
    assert list(r.zones["zone"]) == ["west", "east"]
    assert list(r.zones["aoi_zone_id"]) == ["Z-1", "Z-2"] and list(r.zones["zone_id"]) == [0, 1]
    r = count(gdf, aoi=zones, aoi_field="zone_id")  # the user's own column, by its name
    assert list(r.zones["zone"]) == ["Z-1", "Z-2"] and r.zone_field == "zone_id"
    # no name-like column (or a name column that repeats itself): row numbers
    plain = two_zones().assign(name=["dup", "dup"], area=[1.0, 2.0])
    assert zone_name_field(plain) is None
    r = count(gdf, aoi=plain)
    assert r.zone_field is None and list(r.zones["zone"]) == ["0", "1"]
    with pytest.raises(ConfigError, match=r"--aoi-field nom: .*no such column.*name, area"):
        count(gdf, aoi=plain, aoi_field="nom")
    with pytest.raises(ConfigError, match="--aoi"):
        count(gdf, aoi_field="name")


def test_unknown_class_is_refused_naming_the_known_ones():
    gdf = make_results(32, n=20)
    gdf = gdf[gdf["class"] == "ship"]
    with pytest.raises(ConfigError) as err:
        count(gdf, classes=["boat"])
    assert str(err.value) == (
        "--classes boat: unknown class 'boat'; classes in the results, or of geoseg's presets: "
        "ship, vehicle, building"
    )
    with pytest.raises(ConfigError, match=r"'shp' \(did you mean 'ship'\?\)"):
        count(gdf, classes=["ship", "shp"])
    # a preset class absent from these results is a real question: 0
    assert count(gdf, classes=["building"]).per_class == {"building": 0}


def test_cli_count_aoi_field_classes_and_quiet(tmp_path):
    res = tmp_path / "res.gpkg"
    make_results(33, n=30).to_file(res)
    aoi = tmp_path / "zones.gpkg"
    two_zones().assign(harbour=["Port A", "Port B"]).to_file(aoi)
    runner = CliRunner()
    r = runner.invoke(cli, ["count", str(res), "--aoi", str(aoi), "--aoi-field", "harbour"])
    assert r.exit_code == 0, r.output
    assert "Port A" in r.output and "Port B" in r.output
    r = runner.invoke(cli, ["count", str(res), "--classes", "boat"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "Error: --classes boat: unknown class 'boat'; classes in the results, or of geoseg's "
        "presets: building, ship, vehicle"
    ]
    # -q: the table is the result when there is no -o; with -o, nothing is printed
    r = runner.invoke(cli, ["-q", "count", str(res)])
    assert r.exit_code == 0 and "TOTAL" in r.output
    out = tmp_path / "c.csv"
    r = runner.invoke(cli, ["-q", "count", str(res), "-o", str(out)])
    assert r.exit_code == 0 and r.output == "" and out.exists()
