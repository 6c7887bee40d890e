"""Tests for geoseg.train: chip reading, augmentation, a tiny training run, resume, fine-tune."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.checkpoint import load_checkpoint, read_safetensors
from geoseg.config import AugmentConfig, ModelConfig, TrainConfig, config_to_dict
from geoseg.errors import ConfigError, LabelError
from geoseg.train import ChipDataset, _augment, _boxes_from_masks, train

CLASSES = ("ship", "vehicle")

TINY_MODEL = {
    "backbone": "resnet18",
    "trainable_layers": 5,
    "fpn_out_channels": 32,
    "box_head_size": 64,
    "mask_head_channels": 16,
    "min_size": 64,
    "max_size": 64,
    "anchor_sizes": [[8], [16], [32], [64], [128]],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 300,
}


def make_chip_folder(root: Path, *, n: int = 6, size: int = 64, seed: int = 0, bands: int = 3):
    """A chip folder in geoseg.chips' format: uint8 GeoTIFF chips + COCO annotations.json."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(20, 60, size=(bands, size, size)).astype(np.uint8)
        name = f"images/chip_{i:03d}.tif"
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(0, 2))
            w, h = (int(rng.integers(14, 24)), int(rng.integers(6, 10)))
            if cls == 1:
                w, h = h, w
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if any(
                not (x + w <= a["bbox"][0] or a["bbox"][0] + a["bbox"][2] <= x)
                and not (y + h <= a["bbox"][1] or a["bbox"][1] + a["bbox"][3] <= y)
                for a in anns
                if a["image_id"] == i + 1
            ):
                continue
            img[:, y : y + h, x : x + w] = 200 if cls == 0 else 120
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        with rasterio.open(
            root / name,
            "w",
            driver="GTiff",
            width=size,
            height=size,
            count=bands,
            dtype="uint8",
            crs="EPSG:32633",
            transform=from_origin(500000 + i * 100, 4000000, 0.5, 0.5),
        ) as dst:
            dst.write(img)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
        "geoseg": {
            "norm_stats": {
                "bands": list(range(1, bands + 1)),
                "low": [0.0] * bands,
                "high": [255.0] * bands,
            },
            "classes": list(CLASSES),
            "bands": list(range(1, bands + 1)),
            "gsd": 0.5,
            "tile_size": size,
        },
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(tmp_path: Path, chips: Path, **kw) -> TrainConfig:
    base = {
        "train_chips": (chips,),
        "output_dir": tmp_path / "run",
        "preset": "ships",
        "classes": CLASSES,
        "model": TINY_MODEL,
        "pretrained": "none",
        "epochs": 50,
        "batch_size": 2,
        "lr": 0.01,
        "warmup_steps": 2,
        "seed": 3,
        "checkpoint_every": 2,
        "validate": False,
        "augment": AugmentConfig(scale_min=1.0, scale_max=1.0),
    }
    base.update(kw)
    return TrainConfig(**base)


def test_dataset_reads_chips_normalised_with_masks(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=2)
    ds = ChipDataset([chips], classes=CLASSES)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    coco = json.loads((chips / "annotations.json").read_text())
    anns = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert len(target["labels"]) == len(anns)
    # polygon rectangles in pixel-edge coordinates give back their bbox and label
    got = sorted(tuple(b) for b in target["boxes"].tolist())
    want = sorted(
        (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
        for a in anns
    )
    assert np.allclose(got, want, atol=1.0)
    assert sorted(target["labels"].tolist()) == sorted(a["category_id"] for a in anns)
    assert target["masks"].shape == (len(anns), 64, 64)


def test_dataset_maps_categories_by_name(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=2)
    ds = ChipDataset([chips], classes=("vehicle", "ship"))
    coco = json.loads((chips / "annotations.json").read_text())
    want = sorted(3 - a["category_id"] for a in coco["annotations"] if a["image_id"] == 1)
    assert sorted(ds[0][1]["labels"].tolist()) == want


def test_missing_annotations_is_label_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match=r"annotations\.json"):
        ChipDataset([tmp_path / "empty"], classes=CLASSES)


def test_augment_keeps_masks_aligned_with_image():
    rng = np.random.default_rng(0)
    image = np.zeros((3, 40, 40), np.float32)
    masks = np.zeros((1, 40, 40), np.uint8)
    image[:, 5:12, 20:35] = 1.0
    masks[0, 5:12, 20:35] = 1
    aug = AugmentConfig(brightness=0.0, contrast=0.0, band_jitter=0.0, scale_min=1, scale_max=1)
    for _ in range(8):
        img2, m2 = _augment(image, masks, aug, rng)
        assert m2.sum() == masks.sum()
        assert np.array_equal(img2[0] > 0.5, m2[0] > 0)
        x1, y1, x2, y2 = _boxes_from_masks(m2)[0]
        assert {x2 - x1, y2 - y1} == {15.0, 7.0}


def test_scale_jitter_scales_objects():
    rng = np.random.default_rng(1)
    image = np.zeros((1, 64, 64), np.float32)
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:20, 10:20] = 1
    aug = AugmentConfig(hflip=0, vflip=0, rot90=False, scale_min=2.0, scale_max=2.0)
    _, m2 = _augment(image, masks, aug, rng)
    assert m2.shape == (1, 64, 64)
    assert m2.sum() in (0, *range(1, 401))  # cropped or whole
    aug_small = AugmentConfig(hflip=0, vflip=0, rot90=False, scale_min=0.5, scale_max=0.5)
    _, m3 = _augment(image, masks, aug_small, rng)
    assert m3.sum() == 25


def test_tiny_model_loss_falls_and_checkpoints_load(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=4)
    cfg = _config(tmp_path, chips, max_steps=24, epochs=20)
    result = train(cfg)
    assert result.steps == 24
    first, last = np.mean(result.losses[:4]), np.mean(result.losses[-4:])
    assert last < first * 0.8, (first, last)
    _model, meta = load_checkpoint(result.last_checkpoint)
    assert meta.classes == CLASSES and meta.bands == (1, 2, 3) and meta.step == 24
    assert meta.tile_size == 64 and meta.gsd == 0.5
    assert meta.config["fpn_out_channels"] == 32
    assert (cfg.output_dir / "metrics.csv").is_file()
    rows = json.loads((cfg.output_dir / "metrics.json").read_text())["epochs"]
    assert len(rows) == 12 and rows[-1]["step"] == 24


def test_resume_continues_from_saved_step_with_same_state(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=4)
    # uninterrupted reference run
    ref = train(_config(tmp_path, chips, max_steps=5, output_dir=tmp_path / "ref"))
    # interrupted at step 3, then resumed
    cfg = _config(tmp_path, chips, max_steps=5, output_dir=tmp_path / "run")
    part = train(cfg, stop_at_step=3)
    assert part.steps == 3
    saved_state = read_safetensors(cfg.output_dir / "last_state.safetensors")
    saved_json = json.loads((cfg.output_dir / "last_state.json").read_text())
    assert saved_json["loop"]["step"] == 3
    assert saved_json["scheduler"]["last_epoch"] == 3
    seen = []
    resumed = train(cfg, progress=lambda p: seen.append(p.step) if p.phase == "train" else None)
    assert resumed.resumed_from_step == 3
    assert seen[0] == 4 and resumed.steps == 5
    # the optimiser state saved at step 3 had momentum buffers for every trained tensor
    assert any(k.endswith("momentum_buffer") for k in saved_state)
    # same data order, augmentation, optimiser and scheduler: the same weights as no break
    ref_w = read_safetensors(ref.last_checkpoint)
    got_w = read_safetensors(resumed.last_checkpoint)
    assert ref_w.keys() == got_w.keys()
    for k in ref_w:
        assert torch.allclose(ref_w[k], got_w[k], atol=1e-5, rtol=1e-4), k
    assert np.allclose(ref.losses[3:], resumed.losses, rtol=1e-4)


def test_resume_refuses_a_different_run(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=2)
    train(_config(tmp_path, chips, max_steps=1))
    with pytest.raises(ConfigError, match="different training run"):
        train(_config(tmp_path, chips, max_steps=2, batch_size=1))


def test_fine_tune_with_new_classes_keeps_backbone(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=2)
    base = train(_config(tmp_path, chips, max_steps=2))
    old = read_safetensors(base.last_checkpoint)
    cfg = _config(
        tmp_path,
        chips,
        max_steps=1,
        lr=1e-9,
        warmup_steps=0,
        output_dir=tmp_path / "ft",
        classes=("ship", "vehicle", "building"),
        init_checkpoint=base.last_checkpoint,
        model={},
    )
    result = train(cfg)
    model, meta = load_checkpoint(result.last_checkpoint)
    assert meta.classes == ("ship", "vehicle", "building")
    new = model.state_dict()
    key = "backbone.body.layer1.0.conv1.weight"
    assert torch.allclose(new[key], old[key], atol=1e-6)
    assert new["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    assert meta.trained_on["init_checkpoint"] == str(base.last_checkpoint)


def test_validation_writes_coco_ap_and_best(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=2)
    val = make_chip_folder(tmp_path / "v", n=2, seed=5)
    cfg = _config(tmp_path, chips, max_steps=2, epochs=2, val_chips=(val,), validate=True)
    result = train(cfg)
    assert result.best_checkpoint is not None
    row = result.history[-1]
    for key in ("bbox_ap", "bbox_ap50", "segm_ap", "segm_ap50"):
        assert 0.0 <= row[key] <= 1.0
    header = (cfg.output_dir / "metrics.csv").read_text().splitlines()[0]
    assert "segm_ap" in header


def test_train_config_model_overrides_are_validated(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=1)
    with pytest.raises(ConfigError, match="upsample"):
        train(_config(tmp_path, chips, max_steps=1, model={**TINY_MODEL, "upsample": 100.0}))
    assert config_to_dict(ModelConfig())["backbone"] == "resnet50"


def test_cli_train_runs_from_yaml(tmp_path):
    import yaml
    from click.testing import CliRunner

    from geoseg.cli import cli

    make_chip_folder(tmp_path / "chips" / "a", n=2)  # "chips": a folder of chip folders
    make_chip_folder(tmp_path / "other", n=1, seed=2)
    run = tmp_path / "run.yaml"
    run.write_text(
        yaml.safe_dump(
            {
                "train_chips": ["chips"],
                "output_dir": "out",
                "preset": "ships",
                "classes": list(CLASSES),
                "model": TINY_MODEL,
                "pretrained": "none",
                "validate": False,
                "warmup_steps": 1,
                "lr": 0.005,
            }
        )
    )
    result = CliRunner().invoke(cli, ["train", str(run), "--max-steps", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "last.safetensors").is_file()
    assert "training run" in result.output and "steps      1 of 1" in result.output
    assert "steps.csv" in result.output
    args = ["train", str(run), "--max-steps", "1", "--no-progress", "--no-resume"]
    result = CliRunner().invoke(cli, [*args, "--train-chips", str(tmp_path / "other")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "last.json").read_text())
    assert meta["trained_on"]["train_chips"] == [str(tmp_path / "other")]
    bad = CliRunner().invoke(cli, ["train", str(tmp_path / "missing.yaml")])
    assert bad.exit_code != 0 and "cannot read" in bad.output


def test_coco_ap_is_read_at_the_raised_max_dets():
    """Dense chips hold > 100 objects: AP@[.5:.95] must not fall to 0 (pycocotools' stats[0]
    is computed at a hard-coded 100 detections and is -1 once maxDets is raised)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from geoseg.evaluate import _ap_from_eval

    boxes = [[10.0 * (i % 20), 10.0 * (i // 20), 8.0, 8.0] for i in range(150)]
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "vehicle"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 64.0, "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in boxes]
    dets += [
        {"image_id": 1, "category_id": 1, "bbox": [b[0] + 3, b[1], 8.0, 8.0], "score": 0.1}
        for b in boxes[:75]
    ]  # shifted duplicates: false positives at high IoU thresholds
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.params.maxDets = [1, 10, 300]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == -1  # the pycocotools quirk this guards against
    ap, ap50 = _ap_from_eval(ev)
    assert ap == pytest.approx(1.0, abs=0.02)
    assert ap50 == pytest.approx(1.0, abs=0.02)


# --------------------------------------------------------------------------------------------
# metrics as they happen, validation, early stopping, summary


def _steps(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "steps.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_interrupted_run_keeps_its_step_history(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=4)  # 2 steps per epoch, checkpoint at each end
    cfg = _config(tmp_path, chips, max_steps=4, checkpoint_every=100)

    def interrupt(p):
        if p.phase == "train" and p.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=interrupt)
    out = cfg.output_dir
    first = _steps(out)
    assert [r["step"] for r in first] == ["1", "2", "3"]  # on disk as it happened
    assert {"epoch", "loss", "lr", "seconds", "loss_classifier", "loss_mask"} <= set(first[0])
    assert json.loads((out / "last_state.json").read_text())["loop"]["step"] == 2

    result = train(cfg)
    rows = _steps(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # step 3 redone once, not twice
    assert rows[:2] == first[:2]
    assert float(rows[2]["loss"]) == pytest.approx(float(first[2]["loss"]), rel=1e-4)
    assert float(rows[3]["seconds"]) >= float(rows[1]["seconds"])
    assert result.resumed_from_step == 2 and result.steps == 4
    assert [r["step"] for r in result.history] == [2, 4]
    saved = json.loads((out / "metrics.json").read_text())["epochs"]
    assert [r["step"] for r in saved] == [2, 4]
    # a fresh start replaces the log
    train(_config(tmp_path, chips, max_steps=1), resume=False)
    assert [r["step"] for r in _steps(out)] == ["1"]


def test_validate_every_n_steps_and_at_the_last_step(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=4)
    r = train(_config(tmp_path, chips, max_steps=3, validate_every=2))
    assert [row["step"] for row in r.history] == [2, 3]
    r = train(_config(tmp_path, chips, max_steps=3, output_dir=tmp_path / "b"))
    assert [row["step"] for row in r.history] == [2, 3]  # epoch end, then the last step
    assert r.monitor == "train_loss" and r.best_checkpoint is not None
    text = r.summary()
    assert "steps      3 of 3" in text and "not calibrated" in text and "geoseg calibrate" in text


def test_validation_f1_and_early_stopping(tmp_path):
    chips = make_chip_folder(tmp_path / "c", n=4)
    val = make_chip_folder(tmp_path / "v", n=2, seed=5)
    # the model cannot improve segm_ap by 0.5 with a learning rate of 1e-9
    cfg = _config(
        tmp_path,
        chips,
        epochs=10,
        val_chips=(val,),
        validate=True,
        lr=1e-9,
        warmup_steps=0,
        patience=1,
        min_delta=0.5,
    )
    result = train(cfg)
    assert result.stopped_early and "segm_ap did not improve" in result.stop_reason
    assert result.steps == 4 and result.total_steps == 20
    assert [r["step"] for r in result.history] == [2, 4]
    assert result.best_step == 2 and result.best_epoch == 0 and result.n_val_chips == 2
    row = result.history[-1]
    for key in ("segm_ap", "bbox_ap50", "precision", "recall", "f1", "f1_tuned"):
        assert 0.0 <= row[key] <= 1.0, key
    for c in CLASSES:
        assert 0.0 <= row[f"f1_{c}"] <= 1.0 and f"f1_tuned_{c}" in row
    header = (cfg.output_dir / "metrics.csv").read_text().splitlines()[0]
    assert "f1_ship" in header and "segm_ap" in header
    text = result.summary()
    assert "stopped early" in text and "best       segm_ap" in text and "ship" in text
    assert str(cfg.output_dir / "best.safetensors") in text
    # an early-stopped run stays stopped when started again, unless patience is raised
    again = train(cfg)
    assert again.steps == 4 and again.losses == () and again.stopped_early
    more = train(dataclasses.replace(cfg, patience=2))
    assert more.resumed_from_step == 4 and more.steps == 6 and more.stopped_early
    assert [r["step"] for r in more.history] == [2, 4, 6] and more.best_step == 2


def test_best_checkpoint_carries_the_calibrated_thresholds(tmp_path, monkeypatch):
    import geoseg.train
    from geoseg.checkpoint import read_meta
    from geoseg.settings import resolve

    chips = make_chip_folder(tmp_path / "c", n=2)  # one step per epoch
    scripted = iter([(0.1, {"ship": 0.4}), (0.3, {"ship": 0.6}), (0.2, {"ship": 0.7})])

    def fake_validate(model, dataset, model_config, **kw):
        ap, thresholds = next(scripted)
        row = {"segm_ap": ap, "f1": 0.5, "f1_tuned": 0.6, "f1_ship": 0.5, "f1_vehicle": 0.5}
        row.update(f1_tuned_ship=0.7, f1_tuned_vehicle=0.5, thr_ship=thresholds["ship"])
        return row, thresholds

    monkeypatch.setattr(geoseg.train, "_validate", fake_validate)
    cfg = _config(tmp_path, chips, epochs=3, val_chips=(chips,), validate=True, patience=2)
    result = train(cfg)
    assert not result.stopped_early and result.steps == 3
    assert result.best_step == 2 and result.best_value == pytest.approx(0.3)
    assert dict(result.score_thresholds) == {"ship": 0.6}
    best = read_meta(result.best_checkpoint)
    assert dict(best.score_thresholds) == {"ship": 0.6}
    assert best.metrics["calibration"]["source"] == "validation chips"
    assert dict(read_meta(result.last_checkpoint).score_thresholds) == {"ship": 0.7}
    # geoseg predict's settings pick them up
    assert resolve(best).class_min_score == {"ship": 0.6}
    text = result.summary()
    assert "calibrated on the validation chips" in text
    assert "0.600" in text and "0.700" in text


def test_validate_measures_f1_and_calibrates_on_chips(tmp_path):
    from geoseg.train import _validate

    val = make_chip_folder(tmp_path / "v", n=2, seed=5)
    ds = ChipDataset([val], classes=CLASSES)
    outputs = []
    for i in range(len(ds)):
        _, masks, labels = ds.read(i)
        fp = np.zeros((1, *masks.shape[1:]), np.uint8)
        fp[0, :3, :3] = 1  # a small false "ship" in the corner, scored 0.55
        all_masks = np.concatenate([masks, fp])
        outputs.append(
            {
                "boxes": torch.from_numpy(_boxes_from_masks(all_masks)),
                "scores": torch.tensor([0.9] * len(labels) + [0.55]),
                "labels": torch.tensor([*labels, 1], dtype=torch.int64),
                "masks": torch.from_numpy(all_masks[:, None].astype(np.float32)),
            }
        )

    class Oracle(torch.nn.Module):
        def forward(self, images):
            return [outputs.pop(0) for _ in images]

    row, thresholds = _validate(
        Oracle(), ds, ModelConfig(), device=torch.device("cpu"), batch_size=1, calibrate=True
    )
    assert thresholds == {"ship": pytest.approx(0.725), "vehicle": pytest.approx(0.475)}
    assert row["f1_vehicle"] == 1.0 and row["f1_ship"] < 1.0  # the false ships pass 0.5
    assert row["f1_tuned"] == 1.0 and row["f1_tuned_ship"] == 1.0
    assert row["segm_ap50"] == pytest.approx(1.0) and row["thr_ship"] == thresholds["ship"]


# --------------------------------------------------------------------------------------------
# parent folders of chip folders


def test_parent_folder_of_chip_folders(tmp_path):
    from geoseg.train import expand_chip_folders

    a = make_chip_folder(tmp_path / "chips" / "a", n=1)
    b = make_chip_folder(tmp_path / "chips" / "b", n=1, seed=1)
    (tmp_path / "chips" / "notes").mkdir()
    assert expand_chip_folders([tmp_path / "chips"]) == [a, b]
    assert expand_chip_folders([b, tmp_path / "chips"]) == [b, a]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match=r"train_chips: .*empty holds no chip folder"):
        expand_chip_folders([tmp_path / "empty"], what="train_chips")
    with pytest.raises(LabelError, match="does not exist"):
        expand_chip_folders([tmp_path / "nope"])
    result = train(_config(tmp_path, tmp_path / "chips", max_steps=1, batch_size=1))
    from geoseg.checkpoint import read_meta

    assert read_meta(result.last_checkpoint).trained_on["train_chips"] == [str(a), str(b)]


# --------------------------------------------------------------------------------------------
# fine-tuning with another class set


def _fine_tune_config(tmp_path, ckpt, **model):
    chips = make_chip_folder(tmp_path / "c", n=1)
    return _config(tmp_path, chips, init_checkpoint=ckpt, model=model)


def test_fine_tune_keeps_shared_layers_and_copies_class_rows_by_name(
    tmp_path, tiny_checkpoint_factory
):
    from geoseg.train import _CLASS_LAYERS, _build_for_training

    ckpt = tiny_checkpoint_factory("ft", classes=("ship", "vehicle"))
    old = read_safetensors(ckpt)
    cfg = _fine_tune_config(tmp_path, ckpt)
    model, model_config, prov = _build_for_training(cfg, ("vehicle", "building"), 3)
    new = model.state_dict()
    assert model_config.fpn_out_channels == 16  # the checkpoint's architecture
    shared = [k for k in new if k not in _CLASS_LAYERS]
    assert any(k.startswith("backbone.fpn.") for k in shared)
    assert any(k.startswith("rpn.head.") for k in shared)
    assert "roi_heads.box_head.fc6.weight" in shared
    assert "roi_heads.mask_head.0.0.weight" in shared
    assert "roi_heads.mask_predictor.conv5_mask.weight" in shared
    for k in shared:
        assert torch.equal(new[k], old[k]), k
    cls = "roi_heads.box_predictor.cls_score.weight"
    box = "roi_heads.box_predictor.bbox_pred.weight"
    mask = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert new[cls].shape[0] == 3 and new[box].shape[0] == 12 and new[mask].shape[0] == 3
    # background row and "vehicle" (old label 2, new label 1) copied; "building" is new
    for name, per in _CLASS_LAYERS.items():
        assert torch.equal(new[name][:per], old[name][:per]), name
        assert torch.equal(new[name][per : 2 * per], old[name][2 * per : 3 * per]), name
    for row in range(3):
        assert not torch.equal(new[cls][2], old[cls][row])
        assert not torch.equal(new[box][8:12], old[box][4 * row : 4 * row + 4])
    assert prov["class_rows_copied"] == ["vehicle"] and prov["class_rows_new"] == ["building"]


def test_fine_tune_may_change_inference_settings(tmp_path, tiny_checkpoint_factory):
    from geoseg.train import _build_for_training

    ckpt = tiny_checkpoint_factory("ft2")
    cfg = _fine_tune_config(
        tmp_path,
        ckpt,
        upsample=2.0,
        box_detections_per_img=50,
        box_score_thresh=0.1,
        anchor_sizes=[[4], [8], [16], [32], [64]],
        aspect_ratios=[0.25, 1.0, 4.0],
        trainable_layers=3,
    )
    model, model_config, _ = _build_for_training(cfg, ("ship", "vehicle"), 3)
    assert model_config.upsample == 2.0 and model_config.box_detections_per_img == 50
    old = read_safetensors(ckpt)
    new = model.state_dict()
    assert all(torch.equal(new[k], old[k]) for k in old)  # same classes: every tensor kept


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"fpn_out_channels": 32}, "model.fpn_out_channels"),
        ({"backbone": "resnet34"}, "model.backbone"),
        ({"box_head_size": 64}, "model.box_head_size"),
        ({"mask_head_channels": 16}, "model.mask_head_channels"),
        ({"aspect_ratios": [0.5, 1.0, 2.0, 4.0]}, "anchors per location"),
        ({"anchor_sizes": [[8, 12]] * 5}, "anchors per location"),
    ],
)
def test_fine_tune_refuses_shape_changing_settings(
    tmp_path, tiny_checkpoint_factory, change, named
):
    from geoseg.train import _build_for_training

    ckpt = tiny_checkpoint_factory("ft3")
    with pytest.raises(ConfigError, match=named):
        _build_for_training(_fine_tune_config(tmp_path, ckpt, **change), ("ship",), 3)


def test_fine_tune_without_validation_keeps_the_parents_thresholds(
    tmp_path, tiny_checkpoint_factory
):
    from geoseg.checkpoint import read_meta
    from geoseg.settings import resolve

    ckpt = tiny_checkpoint_factory(
        "thr", classes=("ship", "vehicle"), score_thresholds={"ship": 0.35, "vehicle": 0.62}
    )
    chips = make_chip_folder(tmp_path / "c", n=2)  # one step per epoch
    cfg = _config(
        tmp_path,
        chips,
        classes=("vehicle", "building"),  # "ship" dropped, "building" new
        init_checkpoint=ckpt,
        model={},
        max_steps=2,
    )
    result = train(cfg)
    assert result.steps == 2 and result.n_val_chips == 0
    for path in (result.last_checkpoint, result.best_checkpoint):
        meta = read_meta(path)
        assert dict(meta.score_thresholds) == {"vehicle": 0.62}
        source = {"source": "parent checkpoint", "checkpoint": str(ckpt)}
        assert meta.metrics["calibration"] == source
        assert resolve(meta).class_min_score == {"vehicle": 0.62}
    assert dict(result.score_thresholds) == {"vehicle": 0.62}
    assert result.thresholds_from == "parent checkpoint"
    assert "kept from the checkpoint fine-tuned from" in result.summary()


def test_fine_tune_with_validation_recalibrates(tmp_path, tiny_checkpoint_factory, monkeypatch):
    import geoseg.train
    from geoseg.checkpoint import read_meta

    ckpt = tiny_checkpoint_factory("thr2", score_thresholds={"ship": 0.35, "vehicle": 0.62})
    chips = make_chip_folder(tmp_path / "c", n=2)

    def fake_validate(model, dataset, model_config, **kw):
        return {"segm_ap": 0.1, "f1": 0.5, "f1_tuned": 0.6}, {"ship": 0.8}

    monkeypatch.setattr(geoseg.train, "_validate", fake_validate)
    cfg = _config(
        tmp_path,
        chips,
        init_checkpoint=ckpt,
        model={},
        max_steps=1,
        val_chips=(chips,),
        validate=True,
    )
    result = train(cfg)
    meta = read_meta(result.last_checkpoint)
    assert dict(meta.score_thresholds) == {"ship": 0.8}  # recalibrated, "vehicle" not kept
    assert meta.metrics["calibration"]["source"] == "validation chips"
    assert result.thresholds_from == "validation chips"
