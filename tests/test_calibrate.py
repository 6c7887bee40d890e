"""Tests for geoseg.calibrate: F1-optimal per-class thresholds, sidecar rewrite, the CLI."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from geoseg.calibrate import (
    ScoreCurve,
    calibrate_checkpoint,
    calibrate_thresholds,
    chip_curves,
    greedy_match,
    merge_curves,
    score_curves,
    scores_at,
)
from geoseg.checkpoint import checkpoint_paths, read_meta, set_score_thresholds
from geoseg.errors import CheckpointError, ConfigError
from geoseg.evaluate import ChipPrediction, evaluate

CRS = "EPSG:32633"


def _pairs(spec):
    """``spec``: class -> (list of (score, hit)), n_missed). A hit overlaps its own truth box
    exactly; a miss lies far from every truth box. Returns (pred, truth) GeoDataFrames."""
    pred_rows, truth_rows = [], []
    x = 0
    for name, (preds, n_missed) in spec.items():
        for score, hit in preds:
            geom = box(x, 0, x + 10, 4)
            if hit:
                truth_rows.append((name, geom))
                pred_rows.append((name, score, geom))
            else:
                pred_rows.append((name, score, box(x, 1000, x + 10, 1004)))
            x += 20
        for _ in range(n_missed):
            truth_rows.append((name, box(x, 0, x + 10, 4)))
            x += 20
    pred = gpd.GeoDataFrame(
        {"class": [r[0] for r in pred_rows], "score": [r[1] for r in pred_rows]},
        geometry=[r[2] for r in pred_rows],
        crs=CRS,
    )
    truth = gpd.GeoDataFrame(
        {"class": [r[0] for r in truth_rows]}, geometry=[r[1] for r in truth_rows], crs=CRS
    )
    return pred, truth


SPEC = {
    # F1 by the number kept: 2/5, 4/6, 4/7, 6/8 (best), 6/9, 6/10 -> keep 4, halfway 0.4/0.2
    "ship": ([(0.9, True), (0.8, True), (0.6, False), (0.4, True), (0.2, False), (0.1, False)], 1),
    # a tie: keeping 1 (F1 2/3) or 4 (4/6 = 2/3) -> the higher threshold, halfway 0.9/0.8
    "vehicle": ([(0.9, True), (0.8, False), (0.7, False), (0.6, True)], 0),
    # truth but nothing detected, and detections without truth: no evidence either way
    "building": ([], 2),
    "tree": ([(0.7, False)], 0),
}


def test_calibrate_thresholds_picks_the_f1_optimal_threshold():
    pred, truth = _pairs(SPEC)
    got = calibrate_thresholds(pred, truth, ["ship", "vehicle", "building", "tree"])
    assert got == {"ship": pytest.approx(0.3), "vehicle": pytest.approx(0.85)}
    # the chosen threshold gives the best F1 evaluate() measures
    m = evaluate(pred, truth, min_score=got["ship"]).per_class["ship"]
    assert (m.tp, m.fp, m.fn) == (3, 1, 1) and m.f1 == pytest.approx(0.75)


def test_curve_scores_equal_evaluate_at_every_threshold():
    pred, truth = _pairs(SPEC)
    curves = score_curves(pred, truth, ["ship", "vehicle"])
    for t in (0.0, 0.15, 0.3, 0.5, 0.65, 0.85, 0.95):
        for name in ("ship", "vehicle"):
            m = evaluate(pred, truth, min_score=t).per_class[name]
            s = curves[name].at(t)
            assert (s.tp, s.fp, s.fn) == (m.tp, m.fp, m.fn), (name, t)
            assert s.f1 == pytest.approx(m.f1)


def test_equal_scores_are_kept_or_dropped_together_and_the_floor_holds():
    c = ScoreCurve.from_matches([0.8, 0.8, 0.3], [True, False, False], n_true=1)
    # only 2 or 3 can be kept: 2/3 beats 2/4; halfway between 0.8 and 0.3
    assert c.best_threshold() == pytest.approx(0.55)
    # everything kept: halfway to the floor, never below it
    assert ScoreCurve.from_matches([0.6], [True], 1).best_threshold(0.2) == pytest.approx(0.4)
    assert ScoreCurve.from_matches([0.1], [True], 1).best_threshold(0.1) == pytest.approx(0.1)
    # the only true positive scores below the floor: not calibrated
    assert ScoreCurve.from_matches([0.9, 0.03], [False, True], 1).best_threshold(0.05) is None
    assert ScoreCurve.from_matches([], [], 3).best_threshold() is None
    with pytest.raises(ConfigError, match="floor"):
        c.best_threshold(1.5)


def test_scores_at_sums_classes_and_uses_the_default():
    pred, truth = _pairs(SPEC)
    curves = score_curves(pred, truth, ["ship", "vehicle"])
    per, overall = scores_at(curves, {"ship": 0.3}, default=0.5)
    assert per["ship"].threshold == 0.3 and per["vehicle"].threshold == 0.5
    assert (per["vehicle"].tp, per["vehicle"].fp, per["vehicle"].fn) == (2, 2, 0)
    assert (overall.tp, overall.fp, overall.fn) == (5, 3, 1)


def test_greedy_match_takes_higher_scores_first():
    iou = np.array([[0.6, 0.0], [0.9, 0.55]])
    # prediction 1 scores higher: it takes truth 0; prediction 0 has nothing left above 0.5
    assert greedy_match(iou, [0.5, 0.9]).tolist() == [-1, 0]
    assert greedy_match(iou, [0.9, 0.5]).tolist() == [0, 1]
    assert greedy_match(np.zeros((2, 0)), [0.5, 0.4]).tolist() == [-1, -1]


def _chip(truth_boxes, pred_boxes, scores, *, labels=None, truth_labels=None, size=32):
    def masks(boxes):
        out = np.zeros((len(boxes), size, size), np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            out[k, y1:y2, x1:x2] = 1
        return out

    n, m = len(truth_boxes), len(pred_boxes)
    return ChipPrediction(
        index=0,
        height=size,
        width=size,
        truth_masks=masks(truth_boxes),
        truth_labels=np.asarray(truth_labels or [0] * n, np.int64),
        boxes=np.asarray(pred_boxes, np.float32).reshape(m, 4),
        scores=np.asarray(scores, np.float32),
        labels=np.asarray(labels or [0] * m, np.int64),
        masks=masks(pred_boxes),
    )


def test_chip_curves_match_masks_by_mask_iou():
    a = _chip(
        [(0, 0, 10, 10), (20, 20, 30, 30)],
        [(0, 0, 10, 10), (0, 0, 10, 9), (20, 20, 24, 24)],
        [0.9, 0.8, 0.7],
    )
    b = _chip([(5, 5, 15, 15)], [(5, 5, 15, 15)], [0.6], labels=[1], truth_labels=[1])
    curves = merge_curves(
        [chip_curves(a, ["ship", "vehicle"]), chip_curves(b, ["ship", "vehicle"])]
    )
    ship = curves["ship"]
    # the duplicate (IoU 0.9 but its truth is taken) and the small one (IoU 0.16) are misses
    assert ship.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert ship.matched.tolist() == [True, False, False] and ship.n_true == 2
    assert curves["vehicle"].matched.tolist() == [True] and curves["vehicle"].n_true == 1


def test_set_score_thresholds_keeps_the_checkpoint_verifiable(tiny_checkpoint_factory, tmp_path):
    from geoseg.checkpoint import load_checkpoint

    src = tiny_checkpoint_factory("cal", score_thresholds={"ship": 0.5})
    for p in checkpoint_paths(src):
        shutil.copy(p, tmp_path / p.name)
    ckpt = tmp_path / src.name
    meta = set_score_thresholds(ckpt, {"ship": 0.3, "vehicle": 0.7}, metrics={"calibration": {}})
    assert dict(meta.score_thresholds) == {"ship": 0.3, "vehicle": 0.7}
    assert dict(read_meta(ckpt).score_thresholds) == {"ship": 0.3, "vehicle": 0.7}
    assert "calibration" in read_meta(ckpt).metrics
    _, loaded = load_checkpoint(ckpt)  # the SHA-256 check still passes
    assert dict(loaded.score_thresholds) == {"ship": 0.3, "vehicle": 0.7}
    with pytest.raises(CheckpointError, match="building"):
        set_score_thresholds(ckpt, {"building": 0.3})
    with pytest.raises(ConfigError):
        set_score_thresholds(ckpt, {"ship": 1.3})


def test_calibrate_checkpoint_on_a_scene(tiny_checkpoint_factory, tmp_path, monkeypatch):
    """The scene is predicted once down to the low score; the result picks and writes."""
    import geoseg.pipeline
    import geoseg.predict

    src = tiny_checkpoint_factory("cal2", score_thresholds={"vehicle": 0.6})
    for p in checkpoint_paths(src):
        shutil.copy(p, tmp_path / p.name)
    ckpt = tmp_path / src.name
    pred, truth = _pairs({k: SPEC[k] for k in ("ship", "vehicle")})
    seen = {}

    class _Result:
        gdf = pred

    def fake_run_scene(scene, predictor, settings, **kwargs):
        seen["settings"] = settings
        return _Result()

    monkeypatch.setattr(geoseg.predict, "load_predictor", lambda path, settings: object())
    monkeypatch.setattr(geoseg.pipeline, "run_scene", fake_run_scene)
    result = calibrate_checkpoint(ckpt, "scene.tif", truth, device="cpu")
    assert seen["settings"].min_score == 0.05 and not seen["settings"].class_min_score
    assert result.before == {"ship": 0.5, "vehicle": 0.6}
    assert result.after == {"ship": pytest.approx(0.3), "vehicle": pytest.approx(0.85)}
    assert result.per_class_before["ship"].f1 == pytest.approx(4 / 7)
    assert result.per_class_after["ship"].f1 == pytest.approx(0.75)
    assert result.written and set(result.calibrated) == {"ship", "vehicle"}
    assert dict(read_meta(ckpt).score_thresholds) == result.after
    assert "ship" in result.format_table() and json.dumps(result.to_dict())


def test_calibrate_cli_rewrites_the_sidecar(demo_model, tmp_path):
    from click.testing import CliRunner

    from geoseg.checkpoint import load_checkpoint
    from geoseg.cli import cli
    from geoseg.synth import generate_scene

    for p in checkpoint_paths(demo_model):
        shutil.copy(p, tmp_path / p.name)
    ckpt = tmp_path / demo_model.name
    before = dict(read_meta(ckpt).score_thresholds)
    scene = generate_scene(tmp_path / "s.tif", size=192, seed=4, layout="marina")  # 75 ships
    out = tmp_path / "cal.json"
    args = [
        "calibrate",
        str(ckpt),
        str(scene.raster_path),
        str(scene.labels_path),
        "--out-json",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "->" in r.output and "ship" in r.output and "written to" in r.output
    report = json.loads(out.read_text())
    assert "ship" in report["calibrated"]
    after = dict(read_meta(ckpt).score_thresholds)
    assert after == pytest.approx(report["after"])
    assert after["ship"] != before["ship"]
    assert report["per_class_after"]["ship"]["f1"] >= report["per_class_before"]["ship"]["f1"]
    load_checkpoint(ckpt)  # weights and sidecar still match
    # --dry-run measures without writing
    set_score_thresholds(ckpt, before)
    r = CliRunner().invoke(cli, [*args[:4], "--dry-run", "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0 and "unchanged" in r.output
    assert dict(read_meta(ckpt).score_thresholds) == before
