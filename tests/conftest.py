"""Shared pytest configuration.

Fixtures that build tiny seeded GeoTIFFs live in the test module that needs them or here when
several modules share them.
"""

from __future__ import annotations

import os

# Keep tests deterministic and light on the 2-core CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GDAL_NUM_THREADS", "1")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The bundled demo checkpoint (EfficientNet-Lite0 Mask R-CNN on synthetic scenes)."""
    from geoseg.samples import demo_model_path

    return demo_model_path()


#: A very small Mask R-CNN (ResNet-18 FPN, narrow heads): fast to build and run on a CPU.
TINY_MODEL = {
    "backbone": "resnet18",
    "fpn_out_channels": 16,
    "box_head_size": 32,
    "mask_head_channels": 8,
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
}


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**overrides) -> ModelConfig``: :data:`TINY_MODEL` with changes."""
    from geoseg.config import ModelConfig, config_from_dict

    def make(**overrides):
        return config_from_dict(ModelConfig, {**TINY_MODEL, **overrides})

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(tmp_path_factory, tiny_config):
    """``make(name, classes=..., tile_size=..., score_thresholds=..., **model) -> Path``: a
    randomly initialised tiny checkpoint (seeded, so the same arguments give the same weights)."""

    def make(name, *, classes=("ship", "vehicle"), tile_size=64, score_thresholds=None, **model):
        import torch

        from geoseg.checkpoint import ModelMeta, save_checkpoint
        from geoseg.config import config_to_dict
        from geoseg.models import build_model

        cfg = tiny_config(min_size=tile_size, max_size=tile_size, **model)
        torch.manual_seed(0)
        net = build_model(cfg, num_classes=len(classes), in_channels=3, pretrained=None)
        meta = ModelMeta(
            classes=tuple(classes),
            bands=(1, 2, 3),
            norm_stats=None,
            tile_size=tile_size,
            gsd=0.5,
            config=config_to_dict(cfg),
            score_thresholds=dict(score_thresholds or {}),
        )
        return save_checkpoint(tmp_path_factory.mktemp("ckpt") / name, net, meta)

    return make
