"""geoseg.pipeline.run_scene end to end with predictors that are not Mask R-CNN (the Predictor
protocol), on small seeded GeoTIFFs written in tmp_path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from geoseg.errors import BandError, ExportError, RasterReadError
from geoseg.pipeline import SceneResult, run_scene
from geoseg.predict import Predictor, PredictorBase
from geoseg.types import TileDetections

GSD = 0.5
TRANSFORM = Affine(GSD, 0, 500000, 0, -GSD, 4000000)


class ThresholdPredictor(PredictorBase):
    """Connected components of bright pixels: band 1 -> "ship", band 2 -> "vehicle".

    A stand-in for any non-Mask R-CNN model; it knows nothing about other tiles. Like a
    checkpoint, it recommends per-class score thresholds that keep both classes.
    """

    classes = ("ship", "vehicle")
    scores = (0.9, 0.3)
    score_thresholds = {"ship": 0.5, "vehicle": 0.2}  # noqa: RUF012

    def __init__(self):
        self.calls = 0
        self.tiles_seen = 0

    def predict_tiles(self, tiles):
        self.calls += 1
        self.tiles_seen += len(tiles)
        out = []
        for t in tiles:
            boxes, scores, labels, mboxes, masks = [], [], [], [], []
            for label in range(2):
                lab, _ = ndimage.label((t.image[label] > 0.5) & t.valid)
                for i, sl in enumerate(ndimage.find_objects(lab)):
                    if sl is None:
                        continue
                    y, x = sl
                    box = (x.start, y.start, x.stop, y.stop)
                    boxes.append(box)
                    mboxes.append(box)
                    masks.append(lab[sl] == i + 1)
                    scores.append(self.scores[label])
                    labels.append(label)
            out.append(
                TileDetections(
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    scores=np.asarray(scores, np.float32),
                    labels=np.asarray(labels, np.int64),
                    mask_boxes=np.asarray(mboxes, np.int32).reshape(-1, 4),
                    masks=tuple(masks),
                    classes=self.classes,
                    tile=t.spec,
                )
            )
        return out


# (x, y, w, h, class index); tiles of 64 px with 16 px overlap start at 0, 48, 96, ...
OBJECTS = [
    (5, 5, 10, 6, 0),  # inside the first tile
    (40, 10, 30, 8, 0),  # across the first vertical seam
    (100, 60, 12, 20, 0),  # across a horizontal seam
    (150, 100, 9, 9, 0),  # near the scene's bottom edge
    (20, 90, 100, 12, 1),  # a vehicle longer than a tile
    (140, 20, 14, 14, 1),
    (58, 58, 10, 10, 1),  # across both seams
]
W, H = 180, 120


def write_scene(path, objects=OBJECTS, *, nodata_box=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 40, size=(3, H, W), dtype=np.uint8)
    for x, y, w, h, c in objects:
        data[c, y : y + h, x : x + w] = rng.integers(200, 255, size=(h, w), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": W,
        "height": H,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": TRANSFORM,
    }
    if nodata_box is not None:
        x0, y0, x1, y1 = nodata_box
        np.maximum(data, 1, out=data)
        data[:, y0:y1, x0:x1] = 0
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def truth_counts(objects=OBJECTS):
    counts = {"ship": 0, "vehicle": 0}
    for *_, c in objects:
        counts[ThresholdPredictor.classes[c]] += 1
    return counts


def test_threshold_predictor_satisfies_protocol():
    assert isinstance(ThresholdPredictor(), Predictor)


def test_an_object_missing_protocol_members_is_named(tmp_path):
    class Bare:
        classes = ("ship",)

        def predict_tiles(self, tiles):
            return []

    scene = write_scene(tmp_path / "scene.tif")
    with pytest.raises(TypeError, match=r"Bare is not a geoseg Predictor.*bands.*PredictorBase"):
        run_scene(scene, Bare())


def test_without_settings_the_predictor_decides(tmp_path):
    """No settings: the model's tile size and recommended thresholds, as geoseg predict does."""
    scene = write_scene(tmp_path / "scene.tif")
    pred = ThresholdPredictor()
    pred.tile_size = 64
    result = run_scene(scene, pred)
    assert result.settings is not None and result.settings.tile_size == 64
    assert result.settings.overlap == 16 and result.tiles_total == 12  # 4 x 3 tiles of 64 px
    assert result.counts == truth_counts()  # the vehicles' 0.3 passes their recommended 0.2
    pred.score_thresholds = {}
    assert run_scene(scene, pred).counts["vehicle"] == 0  # the default 0.5 drops them


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_run_scene_end_to_end(tmp_path, suffix):
    import geopandas as gpd

    scene = write_scene(tmp_path / "scene.tif")
    out = tmp_path / f"objects{suffix}"
    pred = ThresholdPredictor()
    seen = []
    result = run_scene(
        scene,
        pred,
        tile_size=64,
        overlap=16,
        batch_size=3,
        progress=lambda done, total: seen.append((done, total)),
        output=out,
    )
    assert isinstance(result, SceneResult)
    assert result.counts == truth_counts()
    assert len(result.gdf) == len(OBJECTS) == len(result.detections)
    assert result.n_tiles == pred.tiles_seen == result.tiles_total
    assert pred.calls == -(-result.n_tiles // 3)
    assert result.output == out and out.exists()
    # progress: monotone, ends at (total, total)
    assert seen[-1] == (result.tiles_total, result.tiles_total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))

    back = gpd.read_file(out)
    assert len(back) == len(OBJECTS)
    assert back["class"].value_counts().to_dict() == {k: v for k, v in truth_counts().items() if v}
    # every true rectangle comes back as one polygon with its exact area (pixel-edge outlines)
    if suffix == ".gpkg":
        assert back.crs.to_epsg() == 32633
        from shapely.geometry import box

        for x, y, w, h, c in OBJECTS:
            x0, y0 = TRANSFORM @ (x, y)
            x1, y1 = TRANSFORM @ (x + w, y + h)
            rect = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            hits = back[back.intersects(rect.buffer(-GSD / 4))]
            assert len(hits) == 1, (x, y, w, h)
            assert hits.iloc[0]["class"] == ThresholdPredictor.classes[c]
            assert hits.iloc[0].geometry.symmetric_difference(rect).area < 1e-6


def test_run_scene_without_output_and_min_score(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")
    result = run_scene(scene, ThresholdPredictor(), tile_size=64, overlap=16, min_score=0.5)
    assert result.output is None
    ships = sum(1 for *_, c in OBJECTS if c == 0)
    assert result.counts == {"ship": ships, "vehicle": 0}  # vehicles score 0.3


def test_per_class_min_score(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")
    ships = sum(1 for *_, c in OBJECTS if c == 0)
    vehicles = len(OBJECTS) - ships
    pred = ThresholdPredictor()  # ships score 0.9, vehicles 0.3
    # a per-class score below the vehicles' brings them back under a global 0.5
    both = run_scene(
        scene, pred, tile_size=64, overlap=16, min_score=0.5, class_min_score={"vehicle": 0.25}
    )
    assert both.counts == {"ship": ships, "vehicle": vehicles}
    # a per-class score above the ships' drops them, whatever the global score
    none_ships = run_scene(
        scene, pred, tile_size=64, overlap=16, min_score=0.0, class_min_score={"ship": 0.95}
    )
    assert none_ships.counts == {"ship": 0, "vehicle": vehicles}


def test_per_class_min_score_for_an_unknown_class(tmp_path):
    from geoseg.errors import ConfigError

    scene = write_scene(tmp_path / "scene.tif")
    with pytest.raises(ConfigError, match=r"unknown class.*car.*ship, vehicle"):
        run_scene(
            scene, ThresholdPredictor(), tile_size=64, overlap=16, class_min_score={"car": 0.3}
        )


def test_score_thresholds_and_filter():
    from geoseg.pipeline import filter_scores, score_thresholds

    thr = score_thresholds(("ship", "vehicle"), 0.5, {"vehicle": 0.2})
    assert thr.tolist() == pytest.approx([0.5, 0.2])
    dets = TileDetections(
        boxes=np.zeros((4, 4), np.float32),
        scores=np.array([0.6, 0.4, 0.3, 0.1], np.float32),
        labels=np.array([0, 0, 1, 1], np.int64),
        mask_boxes=np.zeros((4, 4), np.int32),
        masks=tuple(np.zeros((0, 0), bool) for _ in range(4)),
        classes=("ship", "vehicle"),
    )
    kept = filter_scores(dets, thr)
    assert kept.scores.tolist() == pytest.approx([0.6, 0.3])
    assert kept.labels.tolist() == [0, 1]


def test_nodata_tiles_are_skipped(tmp_path):
    # the grid's top-right window is [116, 180) x [0, 64): make it all nodata
    inside = [o for o in OBJECTS if o[0] + o[2] <= 116 or o[1] >= 64]
    scene = write_scene(tmp_path / "nd.tif", inside, nodata_box=(116, 0, 180, 64))
    pred = ThresholdPredictor()
    seen = []
    result = run_scene(
        scene,
        pred,
        tile_size=64,
        overlap=16,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert result.n_tiles < result.tiles_total  # the all-nodata tile was never predicted
    assert pred.tiles_seen == result.n_tiles
    assert seen[-1] == (result.tiles_total, result.tiles_total)
    assert result.counts == truth_counts(inside)


def test_reader_processes_give_the_same_result(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")
    a = run_scene(scene, ThresholdPredictor(), tile_size=64, overlap=16, num_workers=0)
    b = run_scene(scene, ThresholdPredictor(), tile_size=64, overlap=16, num_workers=2)
    assert a.counts == b.counts
    ga = a.gdf.sort_values(["class", "area_m2"]).geometry.normalize().reset_index(drop=True)
    gb = b.gdf.sort_values(["class", "area_m2"]).geometry.normalize().reset_index(drop=True)
    assert ga.geom_equals(gb).all()


def test_unwritable_output_fails_before_any_work(tmp_path, monkeypatch):
    import geoseg.raster

    scene = write_scene(tmp_path / "scene.tif")
    opened = []
    real_open = geoseg.raster.open_scene
    monkeypatch.setattr(
        geoseg.raster, "open_scene", lambda *a, **k: opened.append(a) or real_open(*a, **k)
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for bad in (blocker / "o.gpkg", tmp_path / "o.unknown_ext"):
        pred = ThresholdPredictor()
        with pytest.raises(ExportError) as err:
            run_scene(scene, pred, tile_size=64, overlap=16, output=bad)
        assert bad.name in str(err.value) or "a_file" in str(err.value)
        assert pred.calls == 0 and opened == []


def test_bad_scene(tmp_path):
    bad = tmp_path / "not_a_raster.tif"
    bad.write_text("hello")
    with pytest.raises(RasterReadError, match=r"not_a_raster\.tif"):
        run_scene(bad, ThresholdPredictor(), tile_size=64, overlap=16)


def test_band_count_must_match_the_predictor(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")
    pred = ThresholdPredictor()
    pred.bands = (1, 2, 3)  # a predictor that declares its input bands
    with pytest.raises(BandError, match="3 band"):
        run_scene(scene, pred, tile_size=64, overlap=16, bands=(1, 2))
    with pytest.raises(BandError):
        run_scene(scene, pred, tile_size=64, overlap=16, bands=(1, 2, 7))
    assert pred.calls == 0
    # without explicit bands the predictor's own are used
    assert run_scene(scene, pred, tile_size=64, overlap=16).bands == (1, 2, 3)


def test_predictor_must_return_one_result_per_tile(tmp_path):
    scene = write_scene(tmp_path / "scene.tif")

    class Broken(ThresholdPredictor):
        def predict_tiles(self, tiles):
            return super().predict_tiles(tiles)[:-1]

    with pytest.raises(ValueError, match="returned"):
        run_scene(scene, Broken(), tile_size=64, overlap=16, batch_size=2)
