"""geoseg.settings: one RunSettings value and one precedence rule (options > preset > checkpoint
> defaults)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from geoseg.config import load_config
from geoseg.errors import ConfigError
from geoseg.settings import DEFAULT_MIN_SCORE, DEFAULT_TILE_SIZE, NormSource, RunSettings, resolve

PRESETS = Path(__file__).resolve().parents[1] / "geoseg" / "configs"


@dataclass
class Facts:
    """A checkpoint's facts as resolve() reads them (ModelMeta and predictors have these)."""

    tile_size: int | None = 256
    score_thresholds: dict[str, float] = field(default_factory=lambda: {"vehicle": 0.3})


def test_defaults_without_model_or_preset():
    s = resolve()
    assert (s.tile_size, s.overlap) == (DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE // 4)
    assert s.min_score == DEFAULT_MIN_SCORE and s.class_min_score == {}
    assert s.norm is NormSource.SCENE and s.preset is None


def test_checkpoint_gives_tile_size_and_per_class_scores():
    s = resolve(Facts())
    assert (s.tile_size, s.overlap) == (256, 64)
    assert s.min_score == 0.5 and s.class_min_score == {"vehicle": 0.3}
    assert s.lowest_score() == 0.3


def test_preset_beats_checkpoint_and_sets_every_section():
    preset = load_config("ships")
    preset = dataclasses.replace(
        preset, filter=dataclasses.replace(preset.filter, class_min_score={"ship": 0.6})
    )
    s = resolve(Facts(), preset)
    assert (s.tile_size, s.overlap) == (preset.tiling.tile_size, preset.tiling.overlap)
    assert s.min_score == preset.filter.min_score and s.class_min_score == {"ship": 0.6}
    assert s.min_area_px == preset.filter.min_area_px
    assert (s.match_iou, s.nms_iou, s.class_agnostic) == (
        preset.stitch.match_iou,
        preset.stitch.nms_iou,
        preset.stitch.class_agnostic,
    )
    assert s.simplify_tolerance == preset.vectorize.simplify_tolerance
    assert s.preset == "ships"


def test_options_beat_preset_and_per_class_options_come_last():
    s = resolve(Facts(), "ships", min_score=0.7, class_min_score={"building": 0.2}, tile_size=384)
    assert s.min_score == 0.7 and s.class_min_score == {"building": 0.2}
    assert s.tile_size == 384 and s.overlap == load_config("ships").tiling.overlap
    # None means "not given": the level below decides
    assert resolve(Facts(), tile_size=None).tile_size == 256


def test_digest_follows_results_not_speed():
    a = resolve(Facts(), "ships")
    assert a.digest() == resolve(Facts(), "ships", batch_size=4, device="cpu").digest()
    assert a.digest() != resolve(Facts(), "ships", min_score=0.7).digest()
    assert a.digest() != a.replace(norm="model").digest()
    assert a.digest() != a.replace(class_agnostic=True).digest()
    assert a.digest() != a.replace(contain_frac=0.9).digest()


def test_contain_frac_threads_from_preset_to_stitch(tmp_path):
    """overrides > preset > default, and stitch receives it."""
    assert RunSettings().contain_frac == 0.8
    data = yaml.safe_load((PRESETS / "vehicles.yaml").read_text())
    assert data["stitch"]["contain_frac"] == 0.8
    data["stitch"]["contain_frac"] = 0.65
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    s = resolve(Facts(), path)
    assert s.contain_frac == 0.65
    assert s.stitch_kwargs()["contain_frac"] == 0.65
    assert resolve(Facts(), path, contain_frac=0.9).stitch_kwargs()["contain_frac"] == 0.9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tile_sise": 256}, "unknown run setting.*tile_sise"),
        ({"overlap": 600}, "overlap 600 must be in"),
        ({"overlap": 0}, "overlap 0: two objects touching on a tile seam"),
        ({"contain_frac": 0.0}, r"contain_frac must be in \(0, 1\]"),
        ({"min_score": 1.5}, r"min_score must be in \[0, 1\]"),
        ({"class_min_score": {"ship": 2.0}}, "class_min_score"),
        ({"norm": "sensor"}, "sensor"),
        ({"bands": (0, 1)}, "1-based"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_invalid_settings_are_refused(overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        resolve(Facts(), **overrides)


def test_settings_are_frozen_and_replace_validates():
    s = RunSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tile_size = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown run setting"):
        s.replace(min_scor=0.2)
    assert s.replace(bands=[3, 2, 1]).bands == (3, 2, 1)
