"""Model-assisted labelling: pre-labels, QGIS style, reviewed labels -> chips, review report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely import affinity
from shapely.geometry import box

from geoseg.chips import make_chips
from geoseg.cli import cli
from geoseg.coco import decode_segmentation, read_coco
from geoseg.errors import ExportError, LabelError
from geoseg.review import (
    PRELABELS_LAYER,
    REVIEWED_AREA_LAYER,
    Status,
    format_report,
    prelabels,
    qml_style,
    read_review,
    review_report,
    write_prelabels,
)

UTM = "EPSG:32633"
X0, Y0, RES = 500000.0, 4000000.0, 0.5
W = H = 256
CLASSES = ("ship", "vehicle", "building")


def box_px(x0, y0, x1, y1):
    """A box given in scene pixels, in the scene CRS."""
    return box(X0 + RES * x0, Y0 - RES * y1, X0 + RES * x1, Y0 - RES * y0)


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "scene.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(X0, Y0, RES, RES),
    ) as ds:
        ds.write(rng.integers(1, 255, (3, H, W), dtype=np.uint8))
    return str(path)


def _grid_objects():
    """A 6 x 6 grid of 14 x 10 px objects (classes cycling), every 40 px: 36 true objects."""
    rows = []
    for r in range(6):
        for c in range(6):
            x, y = 8 + 40 * c, 10 + 40 * r
            rows.append((CLASSES[(r + c) % 3], box_px(x, y, x + 14, y + 10)))
    return rows


@pytest.fixture
def simulation():
    """Truth, the model's predictions and the edits a reviewer makes, all known exactly.

    The left 3 columns of the grid (x < 120 px) are reviewed; the right ones stay todo.
    Predictions: every true object (moved by 3 px for a few, one with the wrong class) except
    the misses, plus false positives.
    """
    truth = _grid_objects()
    reviewed = [i for i, (_, g) in enumerate(truth) if g.bounds[2] < X0 + RES * 120]
    missed = {reviewed[2], reviewed[7], 33}  # two misses in the reviewed part, one outside
    moved = {reviewed[0], reviewed[5], reviewed[9]}
    relabelled = {reviewed[4]}
    rng = np.random.default_rng(0)
    pred_rows = []
    for i, (cls, g) in enumerate(truth):
        if i in missed:
            continue
        geom = affinity.translate(g, 3 * RES, 0) if i in moved else g
        pcls = "vehicle" if i in relabelled and cls != "vehicle" else cls
        if i in relabelled and cls == "vehicle":
            pcls = "ship"
        pred_rows.append((i, pcls, float(rng.uniform(0.55, 0.99)), geom))
    false_pos = [
        ("ship", box_px(25, 30, 35, 36)),  # reviewed part
        ("building", box_px(60, 150, 72, 160)),  # reviewed part
        ("vehicle", box_px(190, 30, 200, 38)),  # right part: stays todo
    ]
    for cls, g in false_pos:
        pred_rows.append((-1, cls, float(rng.uniform(0.5, 0.6)), g))
    pred = gpd.GeoDataFrame(
        {"class": [r[1] for r in pred_rows], "score": [r[2] for r in pred_rows]},
        geometry=[r[3] for r in pred_rows],
        crs=UTM,
    )
    pred["truth_index"] = [r[0] for r in pred_rows]
    return {
        "truth": truth,
        "reviewed": reviewed,
        "missed": missed,
        "moved": moved,
        "relabelled": relabelled,
        "pred": pred,
    }


def _review(original: gpd.GeoDataFrame, sim) -> gpd.GeoDataFrame:
    """What a reviewer does in QGIS, on the pre-labels of the reviewed part (x < 120 px)."""
    truth = sim["truth"]
    reviewed = set(sim["reviewed"])
    by_pred = dict(
        zip(sim["pred"].geometry.values.tolist(), sim["pred"]["truth_index"], strict=True)
    )
    rows = []
    for _, row in original.iterrows():
        t = by_pred[row.geometry]
        in_review = row.geometry.bounds[2] < X0 + RES * 120
        new = row.to_dict()
        if not in_review:
            rows.append(new)  # todo
            continue
        if t == -1:
            continue  # false positive: deleted
        cls, g = truth[t]
        new["geometry"] = g  # moved ones go back to the true outline
        new["class"] = cls  # relabelled ones get their true class
        new["status"] = Status.OK.value
        rows.append(new)
    for t in sorted(sim["missed"] & reviewed):  # misses: drawn, status ok, no pred_id
        cls, g = truth[t]
        rows.append({"pred_id": None, "class": cls, "score": None, "status": "ok", "geometry": g})
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=original.crs)
    return out.reset_index(drop=True)


def _reviewed_truth(sim) -> list[tuple[str, object]]:
    return [sim["truth"][i] for i in sim["reviewed"]]


# ------------------------------------------------------------------------------- pre-labels


def test_prelabels_least_certain_first_with_ids_and_todo():
    gdf = gpd.GeoDataFrame(
        {"class": ["ship", "ship", "vehicle", "vehicle"], "score": [0.9, 0.42, 0.31, 0.8]},
        geometry=[box(i, 0, i + 1, 1) for i in range(4)],
        crs=UTM,
    )
    out = prelabels(gdf, thresholds={"ship": 0.4, "vehicle": 0.3})
    # margins: 0.5, 0.02, 0.01, 0.5 -> vehicle 0.31, ship 0.42, then the ties by score
    assert out["score"].tolist() == [0.31, 0.42, 0.8, 0.9]
    assert out["pred_id"].tolist() == [1, 2, 3, 4]
    assert set(out["status"]) == {"todo"}
    np.testing.assert_allclose(out["margin"], [0.01, 0.02, 0.5, 0.5])
    assert out.geometry.values[0].equals(gdf.geometry.values[2])


def test_qml_is_xml_naming_every_class_and_status():
    text = qml_style(CLASSES)
    root = ET.fromstring(text.split("\n", 1)[1])  # past the DOCTYPE line
    renderer = root.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol"
    assert '"class"' in renderer.get("attr") and '"status"' in renderer.get("attr")
    values = {c.get("value") for c in renderer.iter("category")}
    assert {f"{c} / {s.value}" for c in CLASSES for s in Status} <= values
    symbols = {s.get("name") for s in renderer.find("symbols")}
    assert {c.get("symbol") for c in renderer.iter("category")} <= symbols
    colours = {
        o.get("value")
        for o in renderer.find("symbols").iter("Option")
        if o.get("name") == "outline_color"
    }
    assert len(colours) == len(CLASSES) + 1  # one per class, one for "other"


def test_write_prelabels_gpkg_layer_and_style(tmp_path, simulation):
    out = prelabels(simulation["pred"], thresholds={})
    files = write_prelabels(out, tmp_path / "pre.gpkg", classes=CLASSES)
    assert files.style == tmp_path / "pre.qml" and files.style.exists()
    assert [str(n) for n, _ in pyogrio.list_layers(files.path)] == [PRELABELS_LAYER]
    back = gpd.read_file(files.path)
    assert back["pred_id"].tolist() == list(range(1, len(out) + 1))
    with pytest.raises(ExportError, match=r"\.gpkg"):
        write_prelabels(out, tmp_path / "pre.geojson", classes=CLASSES)


# --------------------------------------------------------------------------- chips round trip


def _chip_check(summary, sim, *, area_px):
    """Every chip lies in the reviewed area and holds exactly the reviewed truth over it."""
    coco = read_coco(summary.annotations_path)
    truth = _reviewed_truth(sim)
    assert summary.n_chips > 0
    classes = list(summary.classes)
    for im in coco.images:
        c0, r0, w, h = im["window"]
        assert area_px.contains(box(c0, r0, c0 + w, r0 + h))
        anns = [a for a in coco.annotations if a["image_id"] == im["id"]]
        chip_t = Affine(RES, 0, X0 + RES * c0, 0, -RES, Y0 - RES * r0)
        for k, name in enumerate(classes):
            shapes = [(g, 1) for cls, g in truth if cls == name]
            want = (
                rasterize(shapes, out_shape=(h, w), transform=chip_t, dtype="uint8")
                if shapes
                else np.zeros((h, w), np.uint8)
            )
            got = np.zeros((h, w), np.uint8)
            for a in anns:
                if a["category_id"] == k + 1:
                    got |= decode_segmentation(a["segmentation"], h, w)
            np.testing.assert_array_equal(got, want, err_msg=f"{im['file_name']} {name}")


def test_reviewed_labels_give_chips_of_exactly_the_reviewed_truth(tmp_path, scene, simulation):
    sim = simulation
    original = prelabels(sim["pred"], thresholds={})
    write_prelabels(original, tmp_path / "pre.gpkg", classes=CLASSES)
    edited = _review(gpd.read_file(tmp_path / "pre.gpkg"), sim)
    path = tmp_path / "edited.gpkg"
    edited.to_file(path, layer=PRELABELS_LAYER)
    area = box_px(0, 0, 120, H)
    gpd.GeoDataFrame(geometry=[area], crs=UTM).to_file(path, layer=REVIEWED_AREA_LAYER)

    summary = make_chips(
        scene,
        path,
        tmp_path / "chips",
        size=64,
        overlap=8,
        classes=CLASSES,
        keep_empty_fraction=1.0,
        min_visible_fraction=0.0,
        min_visible_pixels=0.0,
    )
    n_todo = int((edited["status"] != "ok").sum())
    assert summary.n_not_reviewed == n_todo > 0
    assert summary.review["reviewed_area"] == f"layer {REVIEWED_AREA_LAYER}"
    coco = read_coco(summary.annotations_path)
    assert coco.extra["geoseg"]["review"]["ok"] == len(sim["reviewed"])
    _chip_check(summary, sim, area_px=box(0, 0, 120, H))
    # every reviewed object appears in some chip (the area is covered)
    ok_rows = np.flatnonzero((edited["status"] == "ok").to_numpy())
    assert {a["source_index"] for a in coco.annotations} == set(range(len(ok_rows)))


def test_convex_hull_default_and_todo_features_block_chips(tmp_path, scene, simulation):
    sim = simulation
    edited = _review(prelabels(sim["pred"], thresholds={}), sim)
    # one unreviewed prediction inside the reviewed part: its chips must not be cut
    inside = edited.index[edited["status"] == "ok"][3]
    edited.loc[inside, "status"] = "todo"
    blocked = edited.geometry[inside]
    kept_ids = [i for i in sim["reviewed"] if not sim["truth"][i][1].equals(blocked)]
    review = read_review(edited)
    assert review.area_source == "convex hull of the ok features"
    assert review.area.equals(review.truth.geometry.union_all().convex_hull)
    summary = make_chips(
        scene,
        edited,
        tmp_path / "chips",
        size=48,
        overlap=8,
        classes=CLASSES,
        keep_empty_fraction=1.0,
        min_visible_fraction=0.0,
        min_visible_pixels=0.0,
    )
    assert summary.n_chips_unreviewed > 0
    inv = ~from_origin(X0, Y0, RES, RES)
    blocked_px = affinity.affine_transform(blocked, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    hull_px = affinity.affine_transform(review.area, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    coco = read_coco(summary.annotations_path)
    for im in coco.images:
        c0, r0, w, h = im["window"]
        assert blocked_px.intersection(box(c0, r0, c0 + w, r0 + h)).area == 0
    sim_kept = {**sim, "reviewed": kept_ids}
    _chip_check(summary, sim_kept, area_px=hull_px.buffer(0.5, join_style="mitre"))


def test_read_review_refuses_unreviewed_files(tmp_path, simulation):
    pre = prelabels(simulation["pred"], thresholds={})
    with pytest.raises(LabelError, match="status = ok"):
        read_review(pre)
    with pytest.raises(LabelError, match="no 'status' column"):
        read_review(pre.drop(columns=["status"]))


# ---------------------------------------------------------------------------- review report


def test_review_report_counts_every_edit(tmp_path, simulation):
    sim = simulation
    original = prelabels(sim["pred"], thresholds={})
    edited = _review(original, sim)
    report = review_report(original, edited)
    rows = {c.name: c for c in report.classes}
    t = report.total
    reviewed = set(sim["reviewed"])
    assert t.predicted == len(sim["pred"])
    assert t.deleted == 2  # the two false positives of the reviewed part
    assert t.moved == len(sim["moved"])
    assert t.relabelled == len(sim["relabelled"])
    assert t.added == len(sim["missed"] & reviewed) + len(sim["relabelled"])
    todo = sum(1 for g in sim["pred"].geometry.values if g.bounds[2] >= X0 + RES * 120)
    assert t.not_reviewed == todo
    kept = len(reviewed - sim["missed"] - sim["relabelled"])
    assert t.unchanged == kept - len(sim["moved"])
    # 3 px shift of a 14 px box: IoU 11/17 >= 0.5, so moved ones are still true positives
    assert t.tp == kept and t.fp == 2 + len(sim["relabelled"])
    assert t.fn == len(sim["missed"] & reviewed) + len(sim["relabelled"])
    assert t.precision == pytest.approx(kept / (kept + 3))
    relab = next(iter(sim["relabelled"]))
    pred_cls = sim["pred"]["class"][sim["pred"]["truth_index"] == relab].iloc[0]
    assert rows[pred_cls].relabelled == 1
    assert rows[sim["truth"][relab][0]].added >= 1
    assert sum(c.predicted for c in report.classes) == t.predicted
    text = format_report(report)
    assert "all" in text and "precision" in text


def test_review_report_cli_writes_json(tmp_path, simulation):
    original = prelabels(simulation["pred"], thresholds={})
    write_prelabels(original, tmp_path / "pre.gpkg", classes=CLASSES)
    _review(original, simulation).to_file(tmp_path / "edited.gpkg", layer=PRELABELS_LAYER)
    res = CliRunner().invoke(
        cli,
        [
            "review-report",
            str(tmp_path / "pre.gpkg"),
            str(tmp_path / "edited.gpkg"),
            "--json",
            str(tmp_path / "report.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["total"]["deleted"] == 2
    assert "moved" in res.output
    res = CliRunner().invoke(
        cli, ["review-report", str(tmp_path / "pre.gpkg"), str(tmp_path / "pre.qml")]
    )
    assert res.exit_code == 1 and "pre.qml" in res.output


def test_chips_cli_reviewed_area_file(tmp_path, scene, simulation):
    sim = simulation
    edited = _review(prelabels(sim["pred"], thresholds={}), sim)
    edited.to_file(tmp_path / "edited.gpkg", layer=PRELABELS_LAYER)
    area = gpd.GeoDataFrame(geometry=[box_px(0, 0, 64, 128)], crs=UTM)
    area.to_file(tmp_path / "area.geojson")
    res = CliRunner().invoke(
        cli,
        [
            "chips",
            scene,
            str(tmp_path / "edited.gpkg"),
            "-o",
            str(tmp_path / "chips"),
            "--size",
            "64",
            "--overlap",
            "0",
            "--reviewed-area",
            str(tmp_path / "area.geojson"),
            "--keep-empty",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reviewed labels" in res.output
    coco = read_coco(tmp_path / "chips" / "annotations.json")
    windows = sorted(tuple(im["window"]) for im in coco.images)
    assert windows == [(0, 0, 64, 64), (0, 64, 64, 64)]


# ------------------------------------------------------------------------------ geoseg label


def test_label_cli_same_objects_as_predict_sorted_with_style(tmp_path, tiny_checkpoint_factory):
    ckpt = tiny_checkpoint_factory(
        "label", classes=CLASSES, tile_size=64, box_detections_per_img=20
    )
    rng = np.random.default_rng(3)
    scene = tmp_path / "s.tif"
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        width=100,
        height=100,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(X0, Y0, RES, RES),
    ) as ds:
        ds.write(rng.integers(0, 255, (3, 100, 100), dtype=np.uint8))
    opts = ["--device", "cpu", "--tile-size", "64", "--overlap", "16", "--min-score", "0.4"]
    runner = CliRunner()
    r = runner.invoke(
        cli, ["predict", str(scene), "-m", str(ckpt), "-o", str(tmp_path / "p.gpkg"), *opts]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli, ["label", str(scene), "-m", str(ckpt), "-o", str(tmp_path / "l.gpkg"), *opts]
    )
    assert r.exit_code == 0, r.output
    pred = gpd.read_file(tmp_path / "p.gpkg")
    lab = gpd.read_file(tmp_path / "l.gpkg", layer=PRELABELS_LAYER)
    assert len(pred) > 0 and len(lab) == len(pred)
    assert sorted(lab["score"].round(4)) == sorted(pred["score"].round(4))
    np.testing.assert_allclose(lab["margin"], (lab["score"] - 0.4).abs(), atol=1e-3)
    assert np.all(np.diff(lab["margin"].to_numpy()) >= 0)
    assert set(lab["status"]) == {"todo"}
    ET.fromstring((tmp_path / "l.qml").read_text().split("\n", 1)[1])
    # candidates below the threshold: more pre-labels, the threshold's neighbours first
    r = runner.invoke(
        cli,
        [
            "label",
            str(scene),
            "-m",
            str(ckpt),
            "-o",
            str(tmp_path / "c.gpkg"),
            *opts,
            "--candidates",
            "0.35",
        ],
    )
    assert r.exit_code == 0, r.output
    cand = gpd.read_file(tmp_path / "c.gpkg", layer=PRELABELS_LAYER)
    assert len(cand) > len(lab) and (cand["score"] < 0.4).any()
    np.testing.assert_allclose(cand["margin"], (cand["score"] - 0.4).abs(), atol=1e-3)
    # not a GeoPackage: refused before the model is loaded
    r = runner.invoke(
        cli, ["label", str(scene), "-m", str(ckpt), "-o", str(tmp_path / "l.geojson")]
    )
    assert r.exit_code == 1 and ".gpkg" in r.output
