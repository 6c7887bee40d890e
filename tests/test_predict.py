"""geoseg.predict: the Predictor protocol, MaskRCNNPredictor, mask pasting, device choice; and
the ``geoseg predict`` command on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from click.testing import CliRunner
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor as TVMaskHead
from torchvision.ops import MultiScaleRoIAlign

from geoseg.cli import cli
from geoseg.predict import (
    Device,
    MaskRCNNPredictor,
    Predictor,
    paste_masks_in_boxes,
    pick_device,
)
from geoseg.tiling import make_grid
from geoseg.types import Tile, TileDetections

CLASSES = ("ship", "vehicle", "building")


def tiny_maskrcnn(num_classes=3, in_ch=3, size=64, seed=0):
    """A randomly initialised, very small torchvision Mask R-CNN (fast on a CPU)."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(
        nn.Conv2d(in_ch, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 16
    nc = num_classes + 1
    return MaskRCNN(
        backbone,
        rpn_anchor_generator=AnchorGenerator(sizes=((8, 16),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        box_head=TwoMLPHead(16 * 49, 32),
        box_predictor=FastRCNNPredictor(32, nc),
        mask_head=MaskRCNNHeads(16, [16, 16], 1),
        mask_predictor=TVMaskHead(16, 16, nc),
        min_size=size,
        max_size=size,
        image_mean=[0.5] * in_ch,
        image_std=[0.25] * in_ch,
        box_detections_per_img=40,
        box_score_thresh=0.0,
        rpn_post_nms_top_n_test=80,
    )


class EllipseMaskHead(nn.Module):
    """Mask logits of an ellipse inscribed in each box (for every class)."""

    def __init__(self, num_classes, m=28):
        super().__init__()
        c = (torch.arange(m, dtype=torch.float32) + 0.5) / m * 2 - 1
        yy, xx = torch.meshgrid(c, c, indexing="ij")
        self.register_buffer("logits", 20.0 * (0.9 - (xx**2 + yy**2)))
        self.num_classes = num_classes

    def forward(self, x):
        return self.logits.expand(x.shape[0], self.num_classes, *self.logits.shape)


def make_tiles(n=3, size=64, seed=0, valid=None):
    rng = np.random.default_rng(seed)
    specs = make_grid(size * n, size, tile_size=size, overlap=0)
    tiles = []
    for s in specs:
        v = np.ones((size, size), bool) if valid is None else valid.copy()
        img = rng.random((3, size, size), dtype=np.float32) * v
        tiles.append(Tile(spec=s, image=img, valid=v, transform=Affine.identity(), crs_wkt=None))
    return tiles


def check_well_formed(d: TileDetections, tile: Tile, n_classes: int):
    h, w = tile.valid.shape
    n = len(d)
    assert d.tile == tile.spec
    assert d.boxes.dtype == np.float32 and d.boxes.shape == (n, 4)
    assert d.scores.dtype == np.float32 and d.labels.dtype == np.int64
    assert d.mask_boxes.dtype == np.int32
    if n:
        assert (d.labels >= 0).all() and (d.labels < n_classes).all()
        assert (d.boxes[:, :2] >= 0).all() and (d.boxes[:, 2] <= w).all()
        assert (d.boxes[:, 3] <= h).all()
        assert (d.boxes[:, 2:] >= d.boxes[:, :2]).all()
        mb = d.mask_boxes
        assert (mb[:, :2] >= 0).all() and (mb[:, 2] <= w).all() and (mb[:, 3] <= h).all()
        # the mask box contains the detection box, rounded outward
        assert (mb[:, :2] <= np.floor(d.boxes[:, :2]) + 1e-3).all()
    for mb, m in zip(d.mask_boxes, d.masks, strict=True):
        x1, y1, x2, y2 = (int(v) for v in mb)
        assert m.dtype == np.bool_ and m.shape == (y2 - y1, x2 - x1)


# ------------------------------------------------------------------------------------------
# mask pasting


def reference_paste(prob, box, h, w):
    """Full-tile bilinear paste with grid_sample (detectron2's method), thresholded at 0.5."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    gx = (xs - box[0]) / (box[2] - box[0]) * 2 - 1
    gy = (ys - box[1]) / (box[3] - box[1]) * 2 - 1
    gyy, gxx = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([gxx, gyy], -1)[None]
    return (F.grid_sample(prob[None], grid, align_corners=False)[0, 0] >= 0.5).numpy()


@pytest.mark.parametrize("budget", [500, 4_000_000])
def test_paste_masks_matches_full_tile_reference(budget):
    g = torch.Generator().manual_seed(1)
    n, h, w = 30, 96, 80
    probs = torch.rand((n, 1, 28, 28), generator=g)
    xy = torch.rand((n, 2), generator=g) * torch.tensor([w - 5.0, h - 5.0])
    wh = torch.rand((n, 2), generator=g) * 40 + 0.3  # some boxes run off the tile
    boxes = torch.cat([xy, xy + wh], 1)
    mask_boxes, masks = paste_masks_in_boxes(probs, boxes, height=h, width=w, budget=budget)
    assert mask_boxes.shape == (n, 4) and len(masks) == n
    for i in range(n):
        x1, y1, x2, y2 = (int(v) for v in mask_boxes[i])
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert masks[i].shape == (y2 - y1, x2 - x1)
        full = reference_paste(probs[i], boxes[i], h, w)
        # nothing of the object lies outside its mask box, and inside it is identical
        assert full.sum() == full[y1:y2, x1:x2].sum()
        np.testing.assert_array_equal(full[y1:y2, x1:x2], masks[i])


def test_paste_masks_empty():
    mb, masks = paste_masks_in_boxes(
        torch.zeros((0, 1, 28, 28)), torch.zeros((0, 4)), height=8, width=8
    )
    assert mb.shape == (0, 4) and masks == ()


# ------------------------------------------------------------------------------------------
# MaskRCNNPredictor


@pytest.fixture
def no_full_tile_paste(monkeypatch):
    """Make torchvision's full-tile mask paste raise wherever it is looked up."""
    import torchvision.models.detection.roi_heads as rh
    import torchvision.models.detection.transform as tr

    def boom(*args, **kwargs):
        raise AssertionError("full-tile paste_masks_in_image was called")

    monkeypatch.setattr(tr, "paste_masks_in_image", boom)
    monkeypatch.setattr(rh, "paste_masks_in_image", boom, raising=False)


def test_maskrcnn_predictor_is_a_predictor():
    p = MaskRCNNPredictor(tiny_maskrcnn(), classes=CLASSES, device="cpu", backend="torch")
    assert isinstance(p, Predictor)
    assert p.classes == CLASSES
    # channels-last pays on the CPU too (BENCHMARKS.md, "Model speed"); AMP only on CUDA
    assert p.device.type == "cpu" and not p.amp and p.channels_last
    assert p.backend == "torch"


def test_maskrcnn_predictor_well_formed_cropped_masks(no_full_tile_paste):
    tiles = make_tiles(3)
    p = MaskRCNNPredictor(tiny_maskrcnn(), classes=CLASSES, device="cpu", min_score=0.0)
    out = p.predict_tiles(tiles)
    assert len(out) == len(tiles)
    assert sum(len(d) for d in out) > 0  # a random model still fires at score >= 0
    for d, t in zip(out, tiles, strict=True):
        check_well_formed(d, t, len(CLASSES))
        # cropped: no mask is a full tile unless its box is
        for mb, m in zip(d.mask_boxes, d.masks, strict=True):
            assert m.size == (mb[2] - mb[0]) * (mb[3] - mb[1])


def test_maskrcnn_predictor_agrees_with_torchvision_forward():
    """Same boxes/scores, labels shifted to 0-based, and masks close to torchvision's pasted
    masks inside each box (up to resampling details at the rim)."""
    model = tiny_maskrcnn()
    # a random mask head outputs noise around p = 0.5; use a crisp ellipse inscribed in the box
    model.roi_heads.mask_predictor = EllipseMaskHead(len(CLASSES) + 1)
    tiles = make_tiles(2, seed=3)
    p = MaskRCNNPredictor(model, classes=CLASSES, device="cpu", min_score=0.0)
    ours = p.predict_tiles(tiles)
    with torch.inference_mode():
        ref = model([torch.from_numpy(t.image) for t in tiles])
    for d, r in zip(ours, ref, strict=True):
        assert len(d) == len(r["scores"])
        np.testing.assert_allclose(d.boxes, r["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose(d.scores, r["scores"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(d.labels, r["labels"].numpy() - 1)
        inter = union = 0
        for i, (mb, m) in enumerate(zip(d.mask_boxes, d.masks, strict=True)):
            x1, y1, x2, y2 = (int(v) for v in mb)
            full = r["masks"][i, 0].numpy() >= 0.5
            tv = full[y1:y2, x1:x2]
            inter += int((tv & m).sum())
            union += int((tv | m).sum())
        # torchvision rounds boxes to integers before resampling, so rims differ by up to a
        # pixel; on these 8-16 px objects that still leaves most pixels shared
        assert union > 0 and inter / union > 0.7


def test_min_score_is_applied():
    tiles = make_tiles(2)
    low = MaskRCNNPredictor(tiny_maskrcnn(), classes=CLASSES, device="cpu", min_score=0.0)
    scores = np.concatenate([d.scores for d in low.predict_tiles(tiles)])
    cut = float(np.median(scores))
    high = MaskRCNNPredictor(tiny_maskrcnn(), classes=CLASSES, device="cpu", min_score=cut)
    kept = np.concatenate([d.scores for d in high.predict_tiles(tiles)])
    assert len(kept) < len(scores)
    assert (kept >= cut - 1e-6).all()


def test_invalid_pixels_drop_detections_and_skip_empty_tiles():
    size = 64
    valid = np.zeros((size, size), bool)
    valid[:, : size // 2] = True  # right half is nodata/padding
    tiles = make_tiles(2, valid=valid)
    empty = Tile(
        spec=tiles[1].spec,
        image=np.zeros((3, size, size), np.float32),
        valid=np.zeros((size, size), bool),
        transform=Affine.identity(),
        crs_wkt=None,
    )
    model = tiny_maskrcnn()
    calls = []
    model.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    p = MaskRCNNPredictor(model, classes=CLASSES, device="cpu", min_score=0.0)
    out = p.predict_tiles([tiles[0], empty])
    assert calls == [1]  # the all-invalid tile never reached the model
    assert len(out[1]) == 0 and out[1].tile == empty.spec
    for mb, m in zip(out[0].mask_boxes, out[0].masks, strict=True):
        x1, y1, x2, y2 = (int(v) for v in mb)
        assert m.any()
        assert not (m & ~valid[y1:y2, x1:x2]).any()  # no mask pixel on invalid pixels
    # the same image with every pixel valid: exactly the detections with at least half of
    # their mask on valid pixels survive
    same = Tile(
        spec=tiles[0].spec,
        image=tiles[0].image,
        valid=np.ones((size, size), bool),
        transform=Affine.identity(),
        crs_wkt=None,
    )
    ref = p.predict_tiles([same])[0]
    expected = 0
    for mb, m in zip(ref.mask_boxes, ref.masks, strict=True):
        x1, y1, x2, y2 = (int(v) for v in mb)
        on_valid = int((m & valid[y1:y2, x1:x2]).sum())
        expected += int(m.sum() > 0 and on_valid >= 0.5 * m.sum())
    assert len(ref) > expected > 0
    assert len(out[0]) == expected


def test_label_outside_classes_is_an_error():
    p = MaskRCNNPredictor(
        tiny_maskrcnn(num_classes=3), classes=("only",), device="cpu", min_score=0.0
    )
    with pytest.raises(ValueError, match="classes"):
        p.predict_tiles(make_tiles(1))


# ------------------------------------------------------------------------------------------
# devices


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(Device.CPU).type == "cpu"
    mps = getattr(torch.backends, "mps", None)
    best = "cuda" if torch.cuda.is_available() else None
    best = best or ("mps" if mps is not None and mps.is_available() else "cpu")
    assert pick_device(None).type == best
    assert pick_device("auto") == pick_device(None)
    with pytest.raises(ValueError, match="not a device"):
        pick_device("tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")


# ------------------------------------------------------------------------------------------
# CLI on bad input


def write_scene(path, *, bands=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 255, size=(bands, size, size), dtype=np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint8",
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000),
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_checkpoint_factory):
    return tiny_checkpoint_factory("tiny", classes=CLASSES, tile_size=64, box_detections_per_img=20)


def invoke(args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def test_cli_missing_scene(tmp_path, tiny_checkpoint):
    missing = tmp_path / "nope.tif"
    r = invoke([missing, "-m", tiny_checkpoint, "-o", tmp_path / "out.gpkg"])
    assert r.exit_code != 0
    assert "nope.tif" in r.output
    assert "Traceback" not in r.output


def test_cli_not_a_raster(tmp_path, tiny_checkpoint):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a raster\n")
    r = invoke([bad, "-m", tiny_checkpoint, "-o", tmp_path / "out.gpkg"])
    assert r.exit_code != 0 and "notes.tif" in r.output


def test_cli_missing_model(tmp_path):
    scene = write_scene(tmp_path / "s.tif")
    r = invoke([scene, "-m", tmp_path / "nomodel.safetensors", "-o", tmp_path / "out.gpkg"])
    assert r.exit_code != 0 and "nomodel" in r.output


def test_cli_unwritable_output_fails_first(tmp_path, tiny_checkpoint):
    scene = tmp_path / "also_missing.tif"  # the output is checked before the scene is opened
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = invoke([scene, "-m", tiny_checkpoint, "-o", blocker / "out.gpkg"])
    assert r.exit_code != 0
    assert "out.gpkg" in r.output and "also_missing" not in r.output


def test_cli_band_mismatch(tmp_path, tiny_checkpoint):
    scene = write_scene(tmp_path / "one_band.tif", bands=1)
    # two bands for a 3-band model (one band is repeated instead: see test_bad_inputs)
    r = invoke([scene, "-m", tiny_checkpoint, "-o", tmp_path / "o.gpkg", "--bands", "1,1"])
    assert r.exit_code != 0 and "band" in r.output.lower()
    r = invoke([scene, "-m", tiny_checkpoint, "-o", tmp_path / "o.gpkg"])
    assert r.exit_code != 0 and "one_band.tif" in r.output and "--bands 1,1,1" in r.output


def test_cli_quicklook_must_be_png(tmp_path, tiny_checkpoint):
    scene = write_scene(tmp_path / "s.tif")
    r = invoke([scene, "-m", tiny_checkpoint, "-o", tmp_path / "o.gpkg", "--quicklook", "q.jpg"])
    assert r.exit_code != 0 and "q.jpg" in r.output


def test_cli_bad_overlap(tmp_path, tiny_checkpoint):
    scene = write_scene(tmp_path / "s.tif")
    r = invoke(
        [
            scene,
            "-m",
            tiny_checkpoint,
            "-o",
            tmp_path / "o.gpkg",
            "--tile-size",
            "64",
            "--overlap",
            "64",
        ]
    )
    assert r.exit_code != 0 and "overlap" in r.output.lower()


def test_cli_predicts_and_summarises(tmp_path, tiny_checkpoint):
    import geopandas as gpd

    scene = write_scene(tmp_path / "scene.tif", size=100)
    out = tmp_path / "res.geojson"
    opts = ["--min-score", "0", "--device", "cpu", "--tile-size", "64", "--overlap", "16"]
    png = tmp_path / "look.png"
    r = invoke(
        [scene, "-m", tiny_checkpoint, "-o", out, *opts, "--batch-size", "2", "--quicklook", png]
    )
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in CLASSES:
        assert name in r.output
    gdf = gpd.read_file(out)
    total_line = next(line for line in r.output.splitlines() if line.startswith("total"))
    assert int(total_line.split()[-1]) == len(gdf)


def test_cli_per_class_min_score(tmp_path, tiny_checkpoint):
    import geopandas as gpd

    scene = write_scene(tmp_path / "scene.tif", size=100)
    opts = ["--device", "cpu", "--tile-size", "64", "--overlap", "16"]
    last_output: list[str] = []

    def run(name, *scores):
        out = tmp_path / f"{name}.gpkg"
        args = [scene, "-m", tiny_checkpoint, "-o", out, *opts]
        r = invoke([*args, *[a for s in scores for a in ("--min-score", s)]])
        assert r.exit_code == 0, r.output
        last_output[:] = [r.output]
        return gpd.read_file(out)["class"].value_counts().to_dict()

    every = run("all", "0")
    assert every  # the random model finds something at score 0
    cls = max(every, key=every.get)
    without = run("one_off", "0", f"{cls}=1")
    assert f"score thresholds: {cls} 1; other classes 0" in last_output[0]
    assert cls not in without
    assert {k: v for k, v in every.items() if k != cls} == without


def test_cli_per_class_min_score_errors(tmp_path, tiny_checkpoint):
    scene = write_scene(tmp_path / "scene.tif")
    base = [scene, "-m", tiny_checkpoint, "-o", tmp_path / "o.gpkg", "--device", "cpu"]
    r = invoke([*base, "--min-score", "car=0.3"])
    assert r.exit_code == 1 and "car" in r.output and ", ".join(CLASSES) in r.output
    r = invoke([*base, "--min-score", "vehicle=high"])
    assert r.exit_code == 2 and "CLASS=SCORE" in r.output
    r = invoke([*base, "--min-score", "1.5"])
    assert r.exit_code == 2 and "[0, 1]" in r.output


# ------------------------------------------------------------ the batch normalised in torch


def _raw_tiles(dtype, n=3, size=32, seed=0):
    from geoseg.types import NormStats

    rng = np.random.default_rng(seed)
    norm = NormStats((1, 2, 3), (20.0, 35.5, 3.0), (230.0, 200.0, 1900.0), source_dtype=dtype)
    top = 250 if dtype in ("uint8", "int8") else 2000
    tiles = []
    for k, s in enumerate(make_grid(size * n, size, tile_size=size, overlap=0)):
        raw = rng.integers(0, top, (3, size, size)).astype(dtype)
        valid = np.ones((size, size), bool)
        if k == 1:  # nodata / padding on a part of one tile
            valid[:, size // 2 :] = False
            if np.dtype(dtype).kind == "f":
                raw[:, :, size // 2 :] = np.nan
        tiles.append(
            Tile(s, None, valid, Affine.identity(), None, raw=raw, norm=norm)  # as iter_tiles
        )
    return tiles


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "int32", "float64"])
def test_model_batch_from_raw_pixels_equals_tile_image(dtype):
    """The float32 tensors the model gets from raw tiles equal ``tile.image`` bit for bit:
    normalised into the batch on the CPU, and stretched in torch as on a GPU."""
    from geoseg.predict import _input_images

    tiles = _raw_tiles(dtype)
    got = _input_images(tiles, torch.device("cpu"))
    assert not any(t.has_image for t in tiles)  # normalised into the batch, no image kept
    for x, t in zip(got, tiles, strict=True):
        assert x.dtype == torch.float32 and tuple(x.shape) == t.image_shape
        assert torch.equal(x, torch.from_numpy(t.image))
    # the GPU's way (raw pixels moved, stretched in torch), run here on the CPU: same bits
    from geoseg.predict import _raw_batchable, _stretch_in_torch

    if _raw_batchable(tiles):
        on_device = _stretch_in_torch(tiles, torch.device("cpu"))
        for x, t in zip(on_device, tiles, strict=True):
            assert torch.equal(x, torch.from_numpy(t.image))
    else:
        assert np.result_type(dtype, np.float32) != np.float32  # 32-bit: the numpy image
    # tiles with only a normalised image (built by hand) take the image path, same values
    by_hand = [Tile(t.spec, t.image.copy(), t.valid, t.transform, None) for t in tiles]
    for x, y in zip(got, _input_images(by_hand, torch.device("cpu")), strict=True):
        assert torch.equal(x, y)


def test_demo_model_same_detections_from_raw_tiles_and_from_images(demo_model):
    """On the bundled marina, tiles as ``iter_tiles`` reads them (raw, normalised in the
    model's batch) give exactly the detections of the same tiles built from their images."""
    from geoseg.samples import sample_scene_path
    from geoseg.tiling import iter_tiles

    p = MaskRCNNPredictor.from_checkpoint(demo_model, device="cpu")
    tiles = list(
        iter_tiles(
            sample_scene_path("marina"),
            tile_size=256,
            overlap=32,
            bands=p.bands,
            stats=p.norm_stats,
        )
    )[1:3]
    raw = p.predict_tiles(tiles)
    assert not any(t.has_image for t in tiles)  # the predictor never asked for the image
    images = [Tile(t.spec, t.image.copy(), t.valid, t.transform, t.crs_wkt) for t in tiles]
    ref = p.predict_tiles(images)
    assert sum(len(d) for d in ref) > 0
    for a, b in zip(raw, ref, strict=True):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.mask_boxes, b.mask_boxes)
        assert all(np.array_equal(m, n) for m, n in zip(a.masks, b.masks, strict=True))
