"""Tests for geoseg.evaluate and `geoseg evaluate`."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.errors import LabelError
from geoseg.evaluate import evaluate, format_table, match_polygons, write_json

CRS = "EPSG:32633"


def _truth(seed=0, n=30):
    rng = np.random.default_rng(seed)
    geoms, classes = [], []
    for i in range(n):
        x, y = 500000 + i * 20.0, 4000000 + rng.uniform(0, 100)
        w, h = rng.uniform(3, 12), rng.uniform(2, 6)
        geoms.append(box(x, y, x + w, y + h))
        classes.append(["ship", "vehicle", "building"][i % 3])
    return gpd.GeoDataFrame({"class": classes}, geometry=geoms, crs=CRS)


def test_truth_against_itself_is_perfect():
    truth = _truth()
    pred = truth.assign(score=np.linspace(0.5, 1.0, len(truth)))
    res = evaluate(pred, truth)
    for m in [*res.per_class.values(), res.overall]:
        assert m.precision == m.recall == m.f1 == 1.0
        assert m.ap50 == pytest.approx(1.0) and m.ap == pytest.approx(1.0)
        assert m.count_error == 0 and m.fp == 0 and m.fn == 0
    assert set(res.per_class) == {"ship", "vehicle", "building"}


def test_disjoint_sets_score_zero():
    truth = _truth()
    pred = truth.assign(geometry=truth.geometry.translate(0, 1000), score=0.9)
    res = evaluate(pred, truth)
    for m in res.per_class.values():
        assert m.tp == 0 and m.precision == m.recall == m.f1 == 0.0
        assert m.ap50 == 0.0 and m.ap == 0.0
        assert m.count_error == 0


def test_hand_made_case():
    # truth: three 10 x 10 ships and one vehicle
    t = gpd.GeoDataFrame(
        {"class": ["ship", "ship", "ship", "vehicle"]},
        geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10), box(60, 0, 64, 2)],
        crs=CRS,
    )
    # pred: ship 1 exact (IoU 1), ship 2 shifted by 2 (IoU 80/120 = 0.667), ship 3 shifted by
    # 6 (IoU 40/160 = 0.25, a miss), a duplicate of ship 1 (fp), a vehicle labelled ship,
    # and no vehicle prediction.
    p = gpd.GeoDataFrame(
        {
            "class": ["ship", "ship", "ship", "ship", "ship"],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5],
        },
        geometry=[
            box(0, 0, 10, 10),
            box(22, 0, 32, 10),
            box(46, 0, 56, 10),
            box(0, 0, 10, 10),
            box(60, 0, 64, 2),
        ],
        crs=CRS,
    )
    res = evaluate(p, t)
    ship, veh = res.per_class["ship"], res.per_class["vehicle"]
    assert (ship.tp, ship.fp, ship.fn) == (2, 3, 1)
    assert ship.precision == pytest.approx(2 / 5) and ship.recall == pytest.approx(2 / 3)
    assert ship.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    assert ship.mean_iou == pytest.approx((1.0 + 80 / 120) / 2)
    assert ship.count_error == 2
    # AP50: the two tps are the top-2 scores: precision 1 up to recall 2/3, then nothing
    assert ship.ap50 == pytest.approx(67 / 101)
    # at IoU >= 0.7 only the exact match counts: precision 1 up to recall 1/3
    # thresholds 0.5..0.65 -> 67/101, 0.7..0.95 -> 34/101
    assert ship.ap == pytest.approx((4 * 67 + 6 * 34) / 1010)
    assert (veh.tp, veh.fn, veh.count_pred) == (0, 1, 0)
    assert veh.recall == 0.0 and veh.ap50 == 0.0
    assert res.overall.tp == 2 and res.overall.fn == 2 and res.overall.fp == 3
    assert res.overall.ap50 == pytest.approx((67 / 101 + 0.0) / 2)


def test_matching_is_one_to_one_and_by_score():
    truth = [box(0, 0, 10, 10)]
    pred = [box(0, 0, 10, 9), box(0, 0, 10, 10)]
    (m,), best = match_polygons(pred, truth, scores=np.array([0.9, 0.1]))
    assert list(m) == [0, -1]  # the higher score wins, though IoU is lower
    (m,), _ = match_polygons(pred, truth, scores=None)
    assert list(m) == [0, -1]
    (m,), _ = match_polygons(pred, truth, scores=np.array([0.1, 0.9]))
    assert list(m) == [-1, 0]
    assert best == pytest.approx([0.9, 1.0])


def test_reprojects_prediction_to_truth_crs():
    truth = _truth()
    pred = truth.to_crs("EPSG:4326").assign(score=1.0)
    res = evaluate(pred, truth)
    assert res.overall.f1 == 1.0
    assert res.crs == "EPSG:32633"


def test_missing_crs_on_one_side_is_refused():
    truth = _truth()
    pred = truth.set_crs(None, allow_override=True)
    with pytest.raises(LabelError, match="no CRS"):
        evaluate(pred, truth)


def test_no_class_column_means_one_class():
    truth = _truth().drop(columns="class")
    res = evaluate(truth, truth)
    assert list(res.per_class) == ["object"] and res.overall.f1 == 1.0


def test_min_score_filters_predictions():
    truth = _truth(n=6)
    pred = truth.assign(score=[0.9, 0.2, 0.9, 0.2, 0.9, 0.2])
    res = evaluate(pred, truth, min_score=0.5)
    assert res.overall.tp == 3 and res.overall.fn == 3


def test_json_and_table(tmp_path):
    truth = _truth()
    res = evaluate(truth.iloc[:20], truth)
    out = write_json(res, tmp_path / "m.json")
    data = json.loads(out.read_text())
    assert set(data["per_class"]["ship"]) >= {
        "precision",
        "recall",
        "f1",
        "ap50",
        "ap",
        "count_pred",
        "count_true",
        "count_error",
    }
    assert data["overall"]["count_true"] == 30
    table = format_table(res)
    assert "ship" in table and "overall" in table


def test_cli_evaluate(tmp_path):
    from geoseg.cli import cli

    truth = _truth()
    truth.to_file(tmp_path / "truth.gpkg")
    pred = truth.iloc[:15].assign(score=0.8)
    pred.to_file(tmp_path / "pred.geojson")
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(tmp_path / "pred.geojson"),
            str(tmp_path / "truth.gpkg"),
            "--json",
            str(tmp_path / "o.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.output
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["overall"]["recall"] == pytest.approx(0.5)
    bad = CliRunner().invoke(
        cli, ["evaluate", str(tmp_path / "nope.gpkg"), str(tmp_path / "truth.gpkg")]
    )
    assert bad.exit_code != 0 and "not found" in bad.output


def test_scales_to_many_polygons():
    rng = np.random.default_rng(0)
    n = 20000
    xy = rng.uniform(0, 20000, size=(n, 2))
    truth = gpd.GeoDataFrame(
        {"class": ["vehicle"] * n}, geometry=[box(x, y, x + 4, y + 2) for x, y in xy], crs=CRS
    )
    pred = truth.assign(geometry=truth.geometry.translate(0.2, 0.1), score=rng.random(n))
    res = evaluate(pred, truth)
    m = res.per_class["vehicle"]
    assert m.count_true == n
    assert m.recall > 0.95 and not math.isnan(m.ap)
