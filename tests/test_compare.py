"""Tests for geoseg.compare and `geoseg compare`: objects matched across dates.

The dates are made from one synthetic marina (geoseg.synth's exact labels: boats and cars):
known objects are removed, moved far (a departure and an arrival) and added, every object
jitters by up to half a pixel, and each date is offset by a georeferencing shift of 1-3 pixels
(0.5 m pixels). The statuses must come out with exactly the expected ids.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

# the headless-browser helpers of `geoseg map`'s tests, reused for the change map
from test_viz import assert_offline_html, chromium, open_in_browser  # noqa: F401

from geoseg.cli import cli
from geoseg.compare import (
    ChangeStatus,
    compare,
    date_in_name,
    match_objects,
    plot_timelines,
    write_changes,
)
from geoseg.count import count
from geoseg.errors import ConfigError, LabelError
from geoseg.synth import SceneSpec, scene_labels
from geoseg.viz import ARRIVED_COLOUR, DEPARTED_COLOUR

GSD = 0.5
#: absolute georeferencing offset of each date, in pixels (east, north): 1-3 px between dates
OFFSETS_PX = [(0, 0), (2, -1), (-1, 1)]
DATES = ["2023-01-15", "2023-02-01", "2023-03-01"]


def _free(geom, taken, margin=3.0):
    return not taken.query(geom.buffer(margin), predicate="intersects").size


def _place_far(row_geom, length, rng, taken):
    """A copy of row_geom moved further than its length into free space."""
    for _ in range(200):
        angle = rng.uniform(0, 2 * np.pi)
        dist = length + rng.uniform(8, 40)
        moved = shapely.affinity.translate(row_geom, dist * np.cos(angle), dist * np.sin(angle))
        if _free(moved, taken):
            return moved
    raise AssertionError("no free place found")


@pytest.fixture(scope="module")
def scenario():
    """Three dates of one marina with known departures and arrivals."""
    rng = np.random.default_rng(7)
    lab = scene_labels(SceneSpec.create(size=512, seed=3, layout="marina"))
    lab = lab[lab["class"].isin(["ship", "vehicle"])].reset_index(drop=True)
    lab["length_m"] = lab["length_m"].astype(float)
    extra = scene_labels(SceneSpec.create(size=512, seed=11, layout="marina"))
    extra = extra[extra["class"].isin(["ship", "vehicle"])].reset_index(drop=True)
    # newcomers come from another marina laid over this one (free places only, see below)
    (ax, ay, *_), (ex, ey, *_) = lab.total_bounds, extra.total_bounds
    extra["geometry"] = extra.geometry.translate(ax - ex, ay - ey)
    next_id = int(max(lab["object_id"].max(), extra["object_id"].max())) + 1

    truth = [lab[["object_id", "class", "length_m", "geometry"]].copy()]
    expected = []
    for _ in range(2):
        prev = truth[-1]
        taken = shapely.STRtree(np.concatenate([g.geometry.to_numpy() for g in truth]))
        ids = prev["object_id"].to_numpy()
        per_class = {c: np.flatnonzero(prev["class"].to_numpy() == c) for c in ("ship", "vehicle")}
        removed = np.concatenate([rng.choice(v, 4, replace=False) for v in per_class.values()])
        rest = {c: np.setdiff1d(v, removed) for c, v in per_class.items()}
        moved = np.concatenate([rng.choice(v, 2, replace=False) for v in rest.values()])
        stay = prev.drop(index=prev.index[np.concatenate([removed, moved])])
        moved_rows = prev.iloc[moved].copy()
        new_geoms = []
        for g, length in zip(moved_rows.geometry, moved_rows["length_m"], strict=True):
            new_geoms.append(_place_far(g, length, rng, taken))
            taken = shapely.STRtree([*taken.geometries, new_geoms[-1]])
        moved_rows["geometry"] = new_geoms
        moved_rows["object_id"] = np.arange(next_id, next_id + len(moved_rows))
        next_id += len(moved_rows)
        # newcomers: objects of another marina that land in free space
        fresh = []
        for c in ("ship", "vehicle"):
            cand = extra[extra["class"] == c]
            for _, row in cand.iterrows():
                if len([f for f in fresh if f["class"] == c]) == 3:
                    break
                if _free(row.geometry, taken):
                    fresh.append(
                        {"class": c, "length_m": float(row["length_m"]), "geometry": row.geometry}
                    )
                    taken = shapely.STRtree([*taken.geometries, row.geometry])
        added = gpd.GeoDataFrame(fresh, crs=lab.crs)
        added["object_id"] = np.arange(next_id, next_id + len(added))
        next_id += len(added)
        nxt = gpd.GeoDataFrame(pd.concat([stay, moved_rows, added], ignore_index=True), crs=lab.crs)
        truth.append(nxt)
        expected.append(
            {
                "departed": set(ids[np.concatenate([removed, moved])].tolist()),
                "arrived": set(moved_rows["object_id"]) | set(added["object_id"]),
                "persisted": set(stay["object_id"]),
            }
        )
    days = []
    for t, (gdf, (ox, oy)) in enumerate(zip(truth, OFFSETS_PX, strict=True)):
        jitter = np.random.default_rng(100 + t).uniform(-0.25, 0.25, (len(gdf), 2))
        geoms = [
            shapely.affinity.translate(g, ox * GSD + jx, oy * GSD + jy)
            for g, (jx, jy) in zip(gdf.geometry, jitter, strict=True)
        ]
        day = gpd.GeoDataFrame(
            {
                "object_id": gdf["object_id"].to_numpy(),
                "class": gdf["class"].to_numpy(),
                "score": np.random.default_rng(t).uniform(0.5, 1.0, len(gdf)),
                "scene": "harbour",
            },
            geometry=geoms,
            crs=lab.crs,
        )
        days.append(day.sample(frac=1.0, random_state=t).reset_index(drop=True))
    return days, expected


def _statuses(result, d0, d1, *, same_ids=True):
    obj = result.objects[(result.objects["date_from"] == d0) & (result.objects["date_to"] == d1)]
    out = {}
    for status in ChangeStatus:
        sub = obj[obj["status"] == status.value]
        col = "id_from" if status is ChangeStatus.DEPARTED else "id_to"
        out[status.value] = set(sub[col].astype(int))
        if status is ChangeStatus.PERSISTED and same_ids:
            assert (sub["id_from"].astype(int) == sub["id_to"].astype(int)).all()
    return out


def test_arrivals_and_departures_exact_despite_shift(scenario):
    days, expected = scenario
    result = compare(days, dates=DATES, id_column="object_id")
    assert result.dates == tuple(DATES)
    assert result.date_source == "option"
    for t, exp in enumerate(expected):
        assert exp["departed"] and exp["arrived"]
        got = _statuses(result, DATES[t], DATES[t + 1])
        assert got == exp, {k: (got[k] ^ exp[k]) for k in exp}
        # the estimated georeferencing shift is the true one (to within the jitter)
        s = result.shifts[t]
        dx = (OFFSETS_PX[t + 1][0] - OFFSETS_PX[t][0]) * GSD
        dy = (OFFSETS_PX[t + 1][1] - OFFSETS_PX[t][1]) * GSD
        assert abs(s.dx_m - dx) < 0.15 and abs(s.dy_m - dy) < 0.15, s
        assert s.matched == len(exp["persisted"])
    # both classes moved, left and came
    counts = result.status_counts()
    assert set(counts["class"]) == {"ship", "vehicle"}
    assert (counts[["arrived", "departed"]] > 0).all().all()
    # tracks chain the dates: an object present throughout has its id on all three dates
    tracks = result.tracks
    always = expected[0]["persisted"] & expected[1]["persisted"]
    full = tracks[tracks["dates_seen"] == 3]
    assert set(full[f"id_{DATES[0]}"].astype(int)) == always
    for d in DATES[1:]:
        assert (full[f"id_{d}"].astype(int) == full[f"id_{DATES[0]}"].astype(int)).all()
    # the whole-area timeline adds up
    tl = result.timeline.set_index("date")
    for t, d in enumerate(DATES):
        assert tl.loc[d, "count_total"] == len(days[t])
    for t, exp in enumerate(expected):
        row = tl.loc[DATES[t + 1]]
        assert row["arrived_total"] == len(exp["arrived"])
        assert row["departed_total"] == len(exp["departed"])
        assert row["change_total"] == len(days[t + 1]) - len(days[t])
    assert pd.isna(tl.loc[DATES[0], "arrived_total"])


def test_without_the_shift_estimate_matching_fails(scenario):
    """The control: 1-3 px offsets break plain IoU matching of cars and small boats."""
    days, expected = scenario
    result = compare(days[:2], dates=DATES[:2], id_column="object_id", max_shift_m=0.0)
    got = _statuses(result, DATES[0], DATES[1], same_ids=False)
    assert len(got["departed"]) > len(expected[0]["departed"]) + 10
    assert result.shifts[0].dx_m == 0.0


def test_row_number_ids_files_dates_from_names_and_geographic_inputs(scenario, tmp_path):
    days, expected = scenario
    paths = []
    for t, day in enumerate(days[:2]):
        # GeoJSON: longitude/latitude, compared in the local UTM zone
        path = tmp_path / f"harbour_{DATES[t].replace('-', '')}.geojson"
        day.to_crs("EPSG:4326").to_file(path)
        paths.append(path)
    result = compare(paths[::-1])  # given newest first
    assert result.dates == tuple(DATES[:2]) and result.date_source == "name"
    assert result.crs.to_epsg() == days[0].crs.to_epsg()  # the UTM zone of the scene
    obj = result.objects
    # ids are row numbers: map them back to the object ids
    id0, id1 = days[0]["object_id"].to_numpy(), days[1]["object_id"].to_numpy()
    dep = obj[obj["status"] == "departed"]["id_from"].astype(int)
    arr = obj[obj["status"] == "arrived"]["id_to"].astype(int)
    per = obj[obj["status"] == "persisted"]
    assert set(id0[dep]) == expected[0]["departed"]
    assert set(id1[arr]) == expected[0]["arrived"]
    assert (id0[per["id_from"].astype(int)] == id1[per["id_to"].astype(int)]).all()


def test_small_cases_class_aware_one_to_one():
    crs = "EPSG:32631"
    car = shapely.box(0, 0, 4.5, 1.8)
    a = gpd.GeoDataFrame(
        {"class": ["vehicle", "vehicle", "ship"]},
        geometry=[car, shapely.affinity.translate(car, 0, 2.2), shapely.box(20, 0, 40, 6)],
        crs=crs,
    )
    # the ship became a vehicle of the same outline; the two touching cars are one now
    b = gpd.GeoDataFrame(
        {"class": ["vehicle", "vehicle"]},
        geometry=[shapely.affinity.translate(car, 0, 0.3), shapely.box(20, 0, 40, 6)],
        crs=crs,
    )
    r = compare([a, b], dates=["2024-01-01", "2024-01-02"], max_shift_m=0)
    obj = r.objects.set_index(["status", "id_from", "id_to"], drop=False)
    per = r.objects[r.objects["status"] == "persisted"]
    assert list(zip(per["id_from"], per["id_to"], strict=True)) == [(0, 0)]
    dep = r.objects[r.objects["status"] == "departed"]
    assert sorted(dep["id_from"]) == [1, 2]
    assert list(dep.sort_values("id_from")["class"]) == ["vehicle", "ship"]
    arr = r.objects[r.objects["status"] == "arrived"]
    assert list(arr["id_to"]) == [1] and list(arr["class"]) == ["vehicle"]
    assert len(obj) == 4
    # centroid rule: a small car moved by 0.8 m along its width (IoU 0.38 < 0.5) still matches
    ia, ib, iou, dist, _, _ = match_objects(
        [car],
        [shapely.affinity.translate(car, 0, 0.8)],
        ["vehicle"],
        ["vehicle"],
        min_iou=0.5,
        max_shift_m=0,
    )
    assert list(ia) == [0] and list(ib) == [0] and iou[0] < 0.5 and dist[0] == pytest.approx(0.8)
    # ...but not by a whole width
    ia, *_ = match_objects(
        [car],
        [shapely.affinity.translate(car, 0, 2.0)],
        ["vehicle"],
        ["vehicle"],
        min_iou=0.5,
        max_shift_m=0,
    )
    assert len(ia) == 0


def test_dates_from_column_scene_names_and_order():
    crs = "EPSG:32631"
    g = gpd.GeoDataFrame({"class": ["ship"]}, geometry=[shapely.box(0, 0, 10, 3)], crs=crs)
    a = g.assign(acquired="2022-06-02T10:31:00Z")
    b = g.assign(acquired="2022-05-30")
    r = compare([a, b])
    assert r.dates == ("2022-05-30", "2022-06-02") and r.date_source == "column"
    a = g.assign(scene="S2A_MSIL2A_20220602T103031_T31UDQ")
    b = g.assign(scene="S2A_MSIL2A_20220530T103031_T31UDQ")
    assert compare([a, b]).dates == ("2022-05-30", "2022-06-02")
    r = compare([g.assign(scene="x"), g.assign(scene="y")])
    assert r.date_source == "order" and r.dates == ("input1", "input2")
    assert date_in_name("harbour_2023-04-15_v2") is not None
    assert date_in_name("run_20230415_20230416") is None  # two dates: ambiguous
    assert date_in_name("id_20231345") is None  # not a date
    with pytest.raises(ConfigError, match="same date"):
        compare([g, g], dates=["2022-01-01", "2022-01-01"])
    with pytest.raises(ConfigError, match="one date per input"):
        compare([g, g], dates=["2022-01-01"])
    with pytest.raises(ConfigError, match="at least two"):
        compare([g])
    with pytest.raises(ConfigError, match="boat"):  # the rule of count --classes
        compare([g, g], dates=["2022-01-01", "2022-01-02"], classes=["boat"])
    zones = gpd.GeoDataFrame({"berth": ["a"]}, geometry=[shapely.box(-5, -5, 20, 5)], crs=crs)
    r = compare([g, g], dates=["2022-01-01", "2022-01-02"], aoi=zones, aoi_field="berth")
    assert r.zones["zone"].tolist() == ["a", "a"]
    with pytest.raises(ConfigError, match="--aoi-field quay"):
        compare([g, g], dates=["2022-01-01", "2022-01-02"], aoi=zones, aoi_field="quay")
    with pytest.raises(LabelError, match="no column 'oid'"):
        compare([g, g], dates=["2022-01-01", "2022-01-02"], id_column="oid")


def _zones(days):
    x0, y0, x1, y1 = pd.concat(days).total_bounds
    xm = (x0 + x1) / 2
    zones = gpd.GeoDataFrame(
        {"name": ["west", "east"]},
        geometry=[
            shapely.box(x0 - 50, y0 - 50, xm, y1 + 50),
            shapely.box(xm, y0 - 50, x1 + 50, y1 + 50),
        ],
        crs=days[0].crs,
    )
    return zones.to_crs("EPSG:4326")  # zones in another CRS than the results


def test_zones_and_cells_are_those_of_count(scenario):
    days, expected = scenario
    zones = _zones(days)
    result = compare(days, dates=DATES, id_column="object_id", aoi=zones, grid_m=50.0)
    z = result.zones
    assert set(z["name"]) == {"west", "east"} and len(z) == 2 * len(DATES)
    assert set(z["zone"]) == {"west", "east"}  # named as `geoseg count` names them
    for t, d in enumerate(DATES):
        want = count(days[t], aoi=zones).zones.set_index("zone_id")
        got = z[z["date"] == d].set_index("zone_id")
        for c in ("ship", "vehicle", "total"):
            assert (got[f"count_{c}"].astype(int) == want[f"count_{c}"]).all(), (d, c)
        # the same cells as `geoseg count --grid 50m`: same geometry, same counts
        want_g = count(days[t], grid_m=50.0).grid
        want_g = want_g[want_g["count_total"] > 0]
        got_g = result.grid[(result.grid["date"] == d) & (result.grid["count_total"] > 0)]
        key = lambda g: sorted(  # noqa: E731
            (tuple(np.round(b, 3)), int(n))
            for b, n in zip(g.geometry.bounds.to_numpy(), g["count_total"], strict=True)
        )
        assert key(got_g) == key(want_g)
    # arrivals per zone: the expected arrivals of date 2 counted in their zones by `count`
    for t, exp in enumerate(expected):
        d1 = DATES[t + 1]
        came = days[t + 1][days[t + 1]["object_id"].isin(exp["arrived"])]
        left = days[t][days[t]["object_id"].isin(exp["departed"])]
        got = z[z["date"] == d1].set_index("zone_id")
        assert (
            got["arrived_total"].astype(int) == count(came, aoi=zones).zones["count_total"]
        ).all()
        assert (
            got["departed_total"].astype(int) == count(left, aoi=zones).zones["count_total"]
        ).all()
        prev = z[z["date"] == DATES[t]].set_index("zone_id")
        assert (got["change_total"] == got["count_total"] - prev["count_total"]).all()
    assert result.zones["arrived_total"].sum() == sum(len(e["arrived"]) for e in expected)


def test_plots_one_per_zone(scenario, tmp_path):
    days, _ = scenario
    result = compare(days, dates=DATES, id_column="object_id", aoi=_zones(days))
    written = plot_timelines(result, tmp_path / "plots")
    assert sorted(p.name for p in written) == ["all.png", "zone_0.png", "zone_1.png"]
    img = np.asarray(Image.open(tmp_path / "plots" / "all.png").convert("RGB")).astype(int)
    assert img.shape == (480, 900, 3)
    for colour in (ARRIVED_COLOUR, DEPARTED_COLOUR):
        assert (np.abs(img - np.array(colour)).max(axis=-1) == 0).sum() > 50, colour


def test_cli_compare_writes_everything(scenario, tmp_path, chromium):  # noqa: F811
    days, expected = scenario
    paths = []
    for t, day in enumerate(days):
        folder = tmp_path / f"batch_{DATES[t]}"  # a batch output folder per date
        folder.mkdir()
        day.to_file(folder / "harbour.gpkg")
        (folder / "manifest.json").write_text("{}")
        paths.append(folder)
    aoi = tmp_path / "zones.gpkg"
    _zones(days).to_file(aoi)
    out = tmp_path / "changes.gpkg"
    csv = tmp_path / "changes.csv"
    js = tmp_path / "changes.json"
    html = tmp_path / "changes.html"
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            *map(str, paths[::-1]),
            "-o", str(out), "-o", str(csv), "-o", str(js),
            "--aoi", str(aoi), "--grid", "50m", "--id-column", "object_id",
            "--plots", str(tmp_path / "plots"), "--map", str(html),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"{DATES[0]} -> {DATES[1]}" in r.output
    assert set(pyogrio.list_layers(out)[:, 0]) == {"objects", "tracks", "zones", "grid"}
    objects = gpd.read_file(out, layer="objects")
    for t, exp in enumerate(expected):
        sub = objects[objects["date_to"] == DATES[t + 1]]
        assert set(sub.loc[sub["status"] == "arrived", "id_to"].astype(int)) == exp["arrived"]
        assert set(sub.loc[sub["status"] == "departed", "id_from"].astype(int)) == exp["departed"]
    table = pd.read_csv(csv)
    assert set(table["unit"]) == {"all", "zone", "cell"}
    summary = json.loads(js.read_text())
    assert summary["dates"] == DATES and len(summary["shifts"]) == 2
    assert (tmp_path / "plots" / "zone_1.png").is_file()

    text = html.read_text(encoding="utf-8")
    assert_offline_html(text)
    report, console = open_in_browser(chromium, tmp_path, html)
    assert report["errors"] == [] and console == [], (report, console)
    last = objects[objects["date_to"] == DATES[-1]]
    assert report["features"] == len(last)  # the last pair's three layers are shown
    box = report["counts"].replace(" ", "")
    assert f"arrived{len(expected[-1]['arrived'])}" in box
    assert f"departed{len(expected[-1]['departed'])}" in box


def test_cli_compare_refuses_bad_input(tmp_path):
    g = gpd.GeoDataFrame({"class": ["ship"]}, geometry=[shapely.box(0, 0, 10, 3)], crs=3857)
    a = tmp_path / "a.gpkg"
    g.to_file(a)
    r = CliRunner().invoke(cli, ["compare", str(a), "-o", str(tmp_path / "c.gpkg")])
    assert r.exit_code != 0 and "at least two dates" in r.output
    r = CliRunner().invoke(cli, ["compare", str(a), str(a), "-o", str(a)])
    assert r.exit_code == 1 and "overwrite" in r.output
    r = CliRunner().invoke(
        cli,
        [
            "compare",
            str(a),
            str(a),
            "-o",
            str(tmp_path / "c.txt"),
            "--dates",
            "2020-01-01,2020-01-02",
        ],
    )
    assert r.exit_code == 1 and "unknown format" in r.output


def test_write_changes_gpkg_round_trip(scenario, tmp_path):
    days, _ = scenario
    result = compare(days[:2], dates=DATES[:2], id_column="object_id")
    out = write_changes(result, tmp_path / "c.gpkg")
    back = gpd.read_file(out, layer="objects")
    assert len(back) == len(result.objects)
    assert (
        back["status"].value_counts().to_dict() == result.objects["status"].value_counts().to_dict()
    )
    assert back.crs == result.crs


def test_dates_from_the_folders_of_same_named_files(tmp_path):
    """The scene-by-scene loop over batch folders: batch/DATE/scene.gpkg."""
    g = gpd.GeoDataFrame(
        {"class": ["ship"], "scene": "harbour"}, geometry=[shapely.box(0, 0, 10, 3)], crs=32631
    )
    paths = []
    for d in ("2023-05-01", "2023-04-01"):
        (tmp_path / d).mkdir()
        g.to_file(tmp_path / d / "harbour.gpkg")
        paths.append(tmp_path / d / "harbour.gpkg")
    r = compare(paths)
    assert r.dates == ("2023-04-01", "2023-05-01") and r.date_source == "name"
    assert r.objects["status"].tolist() == ["persisted"]
