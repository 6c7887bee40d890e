"""Tests for geoseg.config: presets, validation, training-run files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from geoseg.config import (
    Backbone,
    FilterConfig,
    ModelConfig,
    PresetConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    load_train_config,
    preset_path,
)
from geoseg.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "geoseg" / "configs"


@pytest.mark.parametrize("name", ["ships", "vehicles", "buildings", "all"])
def test_bundled_presets_load_and_suit_small_objects(name):
    cfg = load_config(name)
    assert isinstance(cfg, PresetConfig) and cfg.name == name
    m = cfg.model
    assert m.box_detections_per_img >= 300
    assert min(m.anchor_sizes[0]) <= 16
    assert m.min_size == m.max_size == int(cfg.tiling.tile_size * m.upsample)
    assert m.rpn_post_nms_top_n_test > 1000  # raised from torchvision's 1000
    assert cfg.tiling.overlap < cfg.tiling.tile_size


def best_anchor_iou(model, w, h):
    """Best IoU of a w x h px box with any anchor of ``model`` centred on it (torchvision's
    anchor shapes: height/width = ratio, area = size²)."""
    best = 0.0
    for size in (s for level in model.anchor_sizes for s in level):
        for ratio in model.aspect_ratios:
            aw, ah = size / ratio**0.5, size * ratio**0.5
            inter = min(w, aw) * min(h, ah)
            best = max(best, inter / (w * h + aw * ah - inter))
    return best


@pytest.mark.parametrize(("w", "h"), [(64, 16), (16, 64), (32, 8), (120, 30)])
def test_ship_preset_gives_long_hulls_a_positive_anchor(w, h):
    """A 4:1 hull (e.g. 32 x 8 m at 0.5 m) reaches the RPN's positive IoU 0.7 with the ships
    preset's anchors, and not with torchvision's default 1:2 .. 2:1 ratios."""
    ships = load_config("ships").model
    assert best_anchor_iou(ships, w, h) >= 0.7
    assert best_anchor_iou(ModelConfig(), w, h) < 0.7


def test_ship_preset_anchors_catch_dinghies():
    """A 4 x 2 m dinghy at 0.5 m (8 x 4 px) overlaps an anchor at IoU >= 0.4 (torchvision's
    smallest anchor, 32 px, gives it at most 0.03)."""
    assert best_anchor_iou(load_config("ships").model, 8, 4) >= 0.4
    torchvision_default = ModelConfig(anchor_sizes=((32,), (64,), (128,), (256,), (512,)))
    assert best_anchor_iou(torchvision_default, 8, 4) < 0.05


def test_every_preset_choice_is_commented():
    for name in list_presets():
        lines = (PRESETS / f"{name}.yaml").read_text().splitlines()
        model_lines = [ln for ln in lines if ln.startswith("  ") and ":" in ln]
        commented = [ln for ln in lines if "#" in ln]
        assert len(commented) >= 10, name
        assert model_lines


def test_presets_ship_inside_the_package():
    packaged = PRESETS
    assert packaged.is_dir() and not packaged.is_symlink()
    assert not (REPO / "configs").exists()
    assert {p.stem for p in packaged.glob("*.yaml")} >= {"ships", "vehicles", "buildings", "all"}
    assert preset_path("ships") == packaged / "ships.yaml"


def test_load_by_path_and_unknown_preset(tmp_path):
    data = yaml.safe_load((PRESETS / "ships.yaml").read_text())
    data["model"]["backbone"] = "resnet18"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.model.backbone is Backbone.RESNET18
    with pytest.raises(ConfigError, match="no preset named 'boats'"):
        load_config("boats")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"model": {"backbone": "vgg16"}}, "not one of"),
        ({"model": {"anchor_sizes": [[8], [16]]}}, "5 non-empty"),
        ({"model": {"box_score_thresh": 1.5}}, "box_score_thresh"),
        ({"model": {"upsample": "two"}}, "expected a number"),
        ({"model": {"anchors": [8]}}, "unknown key"),
        ({"tiling": {"tile_size": 256, "overlap": 256}}, "overlap"),
        ({"stitch": {"match_iou": 0}}, "match_iou"),
        ({"stitch": {"contain_frac": 1.5}}, "contain_frac"),
        ({"tiling": {"tile_size": 256, "overlap": 0}}, "overlap must be in \\[1, tile_size\\)"),
        ({"classes": []}, "at least one class"),
    ],
)
def test_invalid_presets_name_the_key(tmp_path, patch, message):
    data = yaml.safe_load((PRESETS / "all.yaml").read_text())
    for key, value in patch.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_not_yaml_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_configs_are_frozen_and_round_trip():
    cfg = load_config("vehicles")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.upsample = 3.0  # type: ignore[misc]
    again = config_from_dict(PresetConfig, config_to_dict(cfg))
    assert again == cfg
    assert config_from_dict(ModelConfig, config_to_dict(cfg.model)) == cfg.model


def test_train_config_resolves_relative_paths(tmp_path):
    run = tmp_path / "runs" / "r.yaml"
    run.parent.mkdir()
    run.write_text(
        yaml.safe_dump(
            {
                "train_chips": ["../chips/a", "/abs/b"],
                "val_chips": "../chips/v",
                "output_dir": "out",
                "preset": "ships",
                "model": {"backbone": "efficientnet_lite0"},
                "augment": {"rot90": False},
                "optimizer": "adamw",
            }
        )
    )
    cfg = load_train_config(run)
    assert isinstance(cfg, TrainConfig)
    assert cfg.train_chips == ((run.parent / "../chips/a"), Path("/abs/b"))
    assert cfg.val_chips == (run.parent / "../chips/v",)
    assert cfg.output_dir == run.parent / "out"
    assert cfg.augment.rot90 is False and cfg.optimizer == "adamw"


def test_train_config_errors(tmp_path):
    run = tmp_path / "r.yaml"
    run.write_text(yaml.safe_dump({"output_dir": "o"}))
    with pytest.raises(ConfigError, match="train_chips"):
        load_train_config(run)
    run.write_text(yaml.safe_dump({"train_chips": ["c"], "output_dir": "o", "lr": -1}))
    with pytest.raises(ConfigError, match="lr"):
        load_train_config(run)
    run.write_text(yaml.safe_dump({"train_chips": ["c"], "output_dir": "o", "epoch": 3}))
    with pytest.raises(ConfigError, match=r"unknown key.*epoch"):
        load_train_config(run)


@pytest.mark.parametrize("bad", [{"ship": 1.5}, {"ship": "high"}, {"ship": True}])
def test_class_min_score_is_validated(bad):
    with pytest.raises(ConfigError, match=r"filter\.class_min_score"):
        FilterConfig(class_min_score=bad)


def test_old_stitch_score_keys_name_their_new_section(tmp_path):
    data = yaml.safe_load(preset_path("ships").read_text())
    data["stitch"]["min_score"] = 0.4
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"old\.yaml: stitch\.min_score moved to .*filter"):
        load_config(path)
