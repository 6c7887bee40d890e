"""geoseg.models.runtime: staged Mask R-CNN inference with the torch and onnx engines, the
proposal cap, per-class thresholds before the mask head, the empty-tile pre-screen; the
``backend``/``prescreen`` settings, ``geoseg predict --backend``; ``bench_gpu.py --device cpu``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from click.testing import CliRunner

from geoseg.errors import ConfigError
from geoseg.models.runtime import OnnxEngine, TorchEngine, detect, make_engine
from geoseg.pipeline import filter_scores, score_thresholds
from geoseg.predict import Backend, MaskRCNNPredictor
from geoseg.settings import RunSettings
from geoseg.tiling import make_grid
from geoseg.types import Tile

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("ship", "vehicle", "building")


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    """A seeded, randomly initialised geoseg Mask R-CNN (ResNet-18 FPN, narrow heads)."""
    from geoseg.models import build_model

    torch.manual_seed(0)
    cfg = tiny_config(box_score_thresh=0.0, box_detections_per_img=60)
    return build_model(cfg, num_classes=len(CLASSES), in_channels=3, pretrained=None).eval()


def tiles_of(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    specs = make_grid(size * n, size, tile_size=size, overlap=0)
    out = []
    for s in specs:
        img = rng.random((3, size, size), dtype=np.float32)
        valid = np.ones((size, size), bool)
        out.append(Tile(spec=s, image=img, valid=valid, transform=Affine.identity(), crs_wkt=None))
    return out


def predictor(model, **kw):
    import copy

    kw.setdefault("min_score", 0.0)
    return MaskRCNNPredictor(copy.deepcopy(model), classes=CLASSES, device="cpu", **kw)


def match_one_to_one(a, b, min_iou=0.9, score_tol=0.02):
    """Greedy one-to-one matching of two TileDetections by box IoU; asserts every box pairs."""
    from torchvision.ops import box_iou

    assert len(a) == len(b)
    if not len(a):
        return
    iou = box_iou(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes)).numpy()
    used = set()
    for i in np.argsort(-a.scores):
        cands = [j for j in np.argsort(-iou[i]) if j not in used and a.labels[i] == b.labels[j]]
        assert cands, f"detection {i} has no partner"
        j = cands[0]
        assert iou[i, j] > min_iou
        assert abs(float(a.scores[i]) - float(b.scores[j])) <= score_tol
        used.add(j)


def test_torch_engine_is_the_model_forward(tiny_model):
    """detect() with the model's own proposal count gives torchvision's own detections."""
    tiles = tiles_of(2)
    images = [torch.from_numpy(t.image) for t in tiles]
    with torch.inference_mode():
        ref = tiny_model(images)
        image_list, _ = tiny_model.transform(images, None)
        engine = make_engine(tiny_model, "torch", device=torch.device("cpu"), channels_last=True)
        ours = detect(
            tiny_model,
            engine,
            image_list,
            max_proposals=None,
            class_min_scores=None,
            prescreen=None,
        )
    assert isinstance(engine, TorchEngine)
    assert sum(len(r["boxes"]) for r in ref) > 0
    for o, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(o["boxes"], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["scores"], r["scores"], atol=1e-5, rtol=0)
        assert torch.equal(o["labels"], r["labels"])
        assert o["masks"].shape[0] == r["masks"].shape[0]


def test_onnx_backend_same_detections_as_torch(tiny_model):
    pytest.importorskip("onnxruntime")
    tiles = tiles_of(3, seed=1)
    ref = predictor(tiny_model).predict_tiles(tiles)
    onnx = predictor(tiny_model, backend="onnx")
    assert isinstance(onnx.engine, OnnxEngine) and onnx.backend is Backend.ONNX
    out = onnx.predict_tiles(tiles)
    assert sum(len(d) for d in ref) > 10
    for a, b in zip(out, ref, strict=True):
        match_one_to_one(a, b)
        for ma, mb in zip(a.masks, b.masks, strict=True):
            assert ma.shape == mb.shape
            assert (ma != mb).mean() < 0.05


def test_onnx_backend_refuses_cuda_and_unknown_backends(tiny_model):
    with pytest.raises(ConfigError, match="CPU only"):
        make_engine(tiny_model, "onnx", device=torch.device("cuda"), channels_last=False)
    with pytest.raises(ConfigError, match="unknown backend"):
        make_engine(tiny_model, "tensorrt", device=torch.device("cpu"), channels_last=False)


def test_class_thresholds_before_mask_head_change_nothing_kept(tiny_model):
    """Per-class thresholds applied before the mask head keep exactly what the pipeline's
    filter keeps afterwards, and skip masks of the rest."""
    tiles = tiles_of(2, seed=2)
    everything = predictor(tiny_model).predict_tiles(tiles)
    scores = np.concatenate([d.scores for d in everything])
    per_class = {"ship": float(np.quantile(scores, 0.3)), "vehicle": float(np.median(scores))}
    thresholds = score_thresholds(CLASSES, 0.0, per_class)
    early = predictor(tiny_model, class_min_scores=per_class).predict_tiles(tiles)
    assert sum(len(d) for d in early) < len(scores)
    for late, e in zip(everything, early, strict=True):
        kept = filter_scores(late, thresholds)
        assert len(kept) == len(e)
        np.testing.assert_allclose(kept.boxes, e.boxes, atol=1e-4)
        np.testing.assert_array_equal(kept.labels, e.labels)
        for a, b in zip(kept.masks, e.masks, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown classes"):
        predictor(tiny_model, class_min_scores={"tree": 0.5})


def test_max_proposals_caps_the_rpn(tiny_model, monkeypatch):
    seen = []
    p = predictor(tiny_model, max_proposals=7)
    rpn = p.model.rpn
    original = rpn.filter_proposals

    def spy(*args, **kwargs):
        boxes, scores = original(*args, **kwargs)
        seen.extend(len(b) for b in boxes)
        return boxes, scores

    monkeypatch.setattr(rpn, "filter_proposals", spy)
    p.predict_tiles(tiles_of(2))
    assert seen and max(seen) <= 7
    assert rpn._post_nms_top_n["testing"] == 50  # the model's own setting is restored
    with pytest.raises(ValueError, match="max_proposals"):
        predictor(tiny_model, max_proposals=0)


def test_prescreen_skips_the_heads_of_unpromising_tiles(tiny_model, monkeypatch):
    tiles = tiles_of(2, seed=4)
    ref = predictor(tiny_model).predict_tiles(tiles)
    # threshold 0: every tile passes and nothing changes
    same = predictor(tiny_model, prescreen=0.0).predict_tiles(tiles)
    for a, b in zip(same, ref, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    # a threshold above every tile's best objectness: the box head never runs
    p = predictor(tiny_model, prescreen=0.9999999)
    calls = []
    monkeypatch.setattr(p.engine, "box_head", lambda x: calls.append(x) or None)
    out = p.predict_tiles(tiles)
    assert calls == [] and [len(d) for d in out] == [0, 0]
    assert [d.tile for d in out] == [t.spec for t in tiles]
    with pytest.raises(ValueError, match="prescreen"):
        predictor(tiny_model, prescreen=1.0)


def test_settings_backend_and_prescreen():
    s = RunSettings(backend="ONNX", prescreen=0.3)
    assert s.backend == "onnx" and s.prescreen == 0.3
    assert RunSettings().backend == "auto"
    assert RunSettings().digest() == RunSettings(backend="onnx").digest()
    assert RunSettings().digest() != RunSettings(prescreen=0.3).digest()
    with pytest.raises(ConfigError, match="backend"):
        RunSettings(backend="tensorrt")
    with pytest.raises(ConfigError, match="prescreen"):
        RunSettings(prescreen=1.5)


def test_cli_predict_backend_onnx(tmp_path, tiny_checkpoint_factory):
    pytest.importorskip("onnxruntime")
    from geoseg.cli import cli
    from geoseg.synth import generate_scene

    ckpt = tiny_checkpoint_factory("runtime_tiny", classes=CLASSES)
    scene = generate_scene(tmp_path / "s.tif", size=96, seed=5, layout="marina")
    outs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.geojson"
        r = CliRunner().invoke(
            cli,
            [
                "predict",
                str(scene.raster_path),
                "-m",
                str(ckpt),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--backend",
                backend,
                "--min-score",
                "0.05",
            ],
        )
        assert r.exit_code == 0, r.output
        outs[backend] = json.loads(out.read_text())["features"]
    assert len(outs["onnx"]) == len(outs["torch"])
    r = CliRunner().invoke(
        cli,
        [
            *("predict", str(scene.raster_path), "-m", str(ckpt)),
            *("-o", str(tmp_path / "x.gpkg"), "--backend", "tensorrt"),
        ],
    )
    assert r.exit_code != 0 and "tensorrt" in r.output


@pytest.mark.slow
def test_onnx_demo_model_same_detections(demo_model, tmp_path):
    """The bundled demo model on a synthetic tile: onnx and torch detections match one to one
    (box IoU > 0.9, scores within 0.02)."""
    pytest.importorskip("onnxruntime")
    from geoseg.checkpoint import load_checkpoint
    from geoseg.datasets import TileDataset
    from geoseg.pipeline import plan_scene
    from geoseg.synth import generate_scene

    scene = generate_scene(tmp_path / "m.tif", size=256, seed=11, layout="marina")
    model, _ = load_checkpoint(demo_model)
    ref = predictor(model, min_score=0.3)
    plan = plan_scene(scene.raster_path, ref)
    ds = TileDataset(plan.info, tile_size=256, overlap=64, bands=plan.bands, stats=plan.stats)
    tiles = list(ds)[:1]
    a = ref.predict_tiles(tiles)[0]
    b = predictor(model, min_score=0.3, backend="onnx").predict_tiles(tiles)[0]
    assert len(a) > 5
    match_one_to_one(a, b)


@pytest.mark.slow
def test_bench_gpu_cpu_smoke():
    """benchmarks/bench_gpu.py runs on the CPU and prints its JSON."""
    r = subprocess.run(
        [
            *(sys.executable, str(REPO / "benchmarks" / "bench_gpu.py"), "--device", "cpu"),
            *("--size", "320", "--batches", "1", "2", "--seconds", "0.5"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert [m["batch"] for m in res["model_only"]] == [1, 2]
    assert all(m["mpx_per_s"] > 0 for m in res["model_only"] + res["end_to_end"])
    assert res["end_to_end"][0]["tiles"] > 0


def _random_boxes(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (size - 40)
    wh = 1 + torch.rand(n, 2, generator=g) * 120
    return torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_roi_pool_is_torchvision_pool(threads):
    """RoIs split over threads pool to the very values of torchvision's MultiScaleRoIAlign."""
    from collections import OrderedDict

    from torchvision.ops import MultiScaleRoIAlign

    from geoseg.models.runtime import roi_pool

    g = torch.Generator().manual_seed(1)
    feats = OrderedDict(
        (str(i), torch.randn(2, 8, 128 >> i, 128 >> i, generator=g)) for i in range(4)
    )
    sizes = [(512, 512), (512, 480)]
    boxes = [_random_boxes(300, 480, 2), _random_boxes(57, 480, 3)]
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, boxes, sizes)
    ours = roi_pool(
        MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), feats, boxes, sizes, threads=threads
    )
    assert ours.shape == (357, 8, 7, 7)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("n_boxes", [150, 3000])  # one batched NMS / one NMS per level
def test_threaded_filter_proposals_is_torchvision(tiny_model, n_boxes):
    """The RPN's proposal filter with threaded per-level NMS keeps exactly torchvision's boxes."""
    from geoseg.models.runtime import filter_proposals

    rpn = tiny_model.rpn
    per_level = [n_boxes // 2, n_boxes // 3, n_boxes - n_boxes // 2 - n_boxes // 3]
    g = torch.Generator().manual_seed(4)
    proposals = torch.stack([_random_boxes(n_boxes, 256, 5), _random_boxes(n_boxes, 256, 6)])
    objectness = torch.randn(2 * n_boxes, 1, generator=g)
    shapes = [(256, 256), (256, 240)]
    ref_boxes, ref_scores = rpn.filter_proposals(proposals, objectness, shapes, per_level)
    boxes, scores = filter_proposals(rpn, proposals, objectness, shapes, per_level, threads=2)
    assert sum(len(b) for b in ref_boxes) > 0
    for b, s, rb, rs in zip(boxes, scores, ref_boxes, ref_scores, strict=True):
        assert torch.equal(b, rb)
        assert torch.equal(s, rs)
