"""geoseg.samples: the demo model and the marina scene are package data with a loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.checkpoint import read_meta
from geoseg.errors import ConfigError
from geoseg.raster import open_scene
from geoseg.samples import (
    demo_model_card_path,
    demo_model_path,
    list_sample_scenes,
    sample_labels_path,
    sample_scene_path,
)

PACKAGE = Path(__file__).resolve().parents[1] / "geoseg"


def test_demo_model_is_package_data():
    weights = demo_model_path()
    assert weights.name == "demo_lite0.safetensors" and weights.is_file()
    assert weights.parent == PACKAGE / "samples" / "models"
    assert weights.with_suffix(".json").is_file()
    assert "demo" in demo_model_card_path().read_text(encoding="utf-8").lower()
    meta = read_meta(weights)
    assert meta.classes == ("ship", "vehicle", "building")
    assert meta.in_channels == 3


def test_marina_scene_and_labels():
    import geopandas as gpd

    assert "marina" in list_sample_scenes()
    info = open_scene(sample_scene_path("marina"))
    assert (info.width, info.height, info.count) == (1024, 1024, 3)
    labels = gpd.read_file(sample_labels_path("marina"))
    assert set(labels["class"]) == {"ship", "vehicle", "building"}
    assert labels.crs.to_epsg() == 32633


def test_unknown_sample_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="marina"):
        sample_scene_path("atlantis")
    with pytest.raises(ConfigError, match="atlantis"):
        sample_labels_path("atlantis")


def test_top_level_loaders():
    import geoseg

    assert geoseg.demo_model_path() == demo_model_path()
    assert geoseg.sample_scene_path() == sample_scene_path("marina")
