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
    return REPO / "data_samples" / "models" / "demo_lite0.safetensors"
