"""Sample data shipped inside the package: the demo model and one synthetic scene.

These files are package data, so the README's Python example and the notebooks work from an
installed wheel as well as from a checkout::

    from geoseg.samples import demo_model_path, sample_labels_path, sample_scene_path

    demo_model_path()            # .../geoseg/samples/models/demo_lite0.safetensors
    sample_scene_path("marina")  # .../geoseg/samples/marina.tif
    sample_labels_path("marina") # .../geoseg/samples/marina.gpkg (exact labels, layer "labels")

* ``models/demo_lite0.safetensors`` + ``demo_lite0.json`` (its sidecar) + ``MODEL_CARD.md``: a
  small EfficientNet-Lite0 Mask R-CNN for 3-band uint8 scenes at 0.5 m, classes ``ship``,
  ``vehicle``, ``building``, trained on *synthetic* scenes only (see the model card). Loading
  it needs the ``ml`` extra; reading its sidecar (:func:`geoseg.checkpoint.read_meta`) does not.
* ``marina.tif``: 1024 x 1024 px, RGB uint8, 0.5 m, EPSG:32633, made by
  ``geoseg synth --size 1024 --seed 1 --layout marina``; ``marina.gpkg``: its exact labels, one
  polygon per object in the scene CRS (columns ``object_id``, ``class``, ``subtype``,
  ``length_m``, ``width_m``, ``heading_deg``).

Both are synthetic, made with geoseg, and under the project's licence (Apache-2.0);
``ATTRIBUTION.md`` says where the demo model's ImageNet backbone weights come from. More
sample scenes (a town, a 16-bit 4-band scene with a nodata collar) are in the source tree's
``data_samples/`` folder, not in the wheel.

The functions return real file paths (the package is installed as plain files, never zipped).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from geoseg.errors import ConfigError, GeosegError

__all__ = [
    "demo_model_card_path",
    "demo_model_path",
    "list_sample_scenes",
    "sample_labels_path",
    "sample_scene_path",
]


def _file(*parts: str) -> Path:
    path = Path(str(resources.files(__name__).joinpath(*parts)))
    if not path.is_file():
        raise GeosegError(
            f"{path}: sample file missing from this geoseg install; reinstall geoseg "
            "(the wheel ships geoseg/samples/)"
        )
    return path


def demo_model_path() -> Path:
    """The demo model's weights, ``.../geoseg/samples/models/demo_lite0.safetensors``.

    Its JSON sidecar sits beside it; pass this path to
    :meth:`geoseg.predict.MaskRCNNPredictor.from_checkpoint`, :func:`geoseg.checkpoint.read_meta`
    or ``geoseg predict -m``.

    Raises:
        GeosegError: the file is missing from this install.
    """
    _file("models", "demo_lite0.json")
    return _file("models", "demo_lite0.safetensors")


def demo_model_card_path() -> Path:
    """The demo model's card (``MODEL_CARD.md``: training data, schedule, held-out scores)."""
    return _file("models", "MODEL_CARD.md")


def list_sample_scenes() -> list[str]:
    """Names of the sample scenes shipped in the package (``["marina"]``)."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".tif")] for p in root.iterdir() if p.name.endswith(".tif"))


def sample_scene_path(name: str = "marina") -> Path:
    """The GeoTIFF of sample scene ``name``, e.g. ``.../geoseg/samples/marina.tif``.

    Raises:
        ConfigError: no such sample scene (the message lists those shipped).
    """
    if name not in list_sample_scenes():
        raise ConfigError(
            f"no sample scene named {name!r}; the package ships {', '.join(list_sample_scenes())}"
        )
    return _file(f"{name}.tif")


def sample_labels_path(name: str = "marina") -> Path:
    """The exact labels of sample scene ``name`` (GeoPackage, layer ``labels``, scene CRS).

    Raises:
        ConfigError: no such sample scene.
    """
    sample_scene_path(name)
    return _file(f"{name}.gpkg")
