"""geoseg.models.onnx_cache (the disk cache of the onnx engine's exported graphs) and the
``auto`` backend (onnx on the CPU when onnxruntime imports, else torch)."""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from geoseg.errors import ConfigError
from geoseg.models import onnx_cache
from geoseg.models.onnx_cache import cache_dir_override, graph_key, onnx_cache_dir
from geoseg.models.runtime import ONNX_EXPORT_VERSION, ONNX_OPSET, OnnxEngine, TorchEngine
from geoseg.predict import Backend, MaskRCNNPredictor, resolve_backend
from geoseg.settings import RunSettings
from geoseg.tiling import make_grid
from geoseg.types import Tile

CLASSES = ("ship", "vehicle", "building")


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    """A seeded, randomly initialised geoseg Mask R-CNN (ResNet-18 FPN, narrow heads)."""
    from geoseg.models import build_model

    torch.manual_seed(1)
    cfg = tiny_config(box_score_thresh=0.0, box_detections_per_img=60)
    return build_model(cfg, num_classes=len(CLASSES), in_channels=3, pretrained=None).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache root for one test (``GEOSEG_CACHE_DIR``)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(root))
    return root


def tiles_of(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    specs = make_grid(size * n, size, tile_size=size, overlap=0)
    return [
        Tile(
            spec=s,
            image=rng.random((3, size, size), dtype=np.float32),
            valid=np.ones((size, size), bool),
            transform=Affine.identity(),
            crs_wkt=None,
        )
        for s in specs
    ]


def predictor(model, **kw):
    kw.setdefault("min_score", 0.0)
    return MaskRCNNPredictor(copy.deepcopy(model), classes=CLASSES, device="cpu", **kw)


def count_exports(monkeypatch) -> list[int]:
    """Count torch.onnx.export calls (the export still runs)."""
    calls: list[int] = []
    real = torch.onnx.export

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    return calls


def refuse_exports(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("torch.onnx.export was called")

    monkeypatch.setattr(torch.onnx, "export", boom)


def test_cache_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache_dir() == tmp_path / "mine" / "onnx"
    monkeypatch.delenv("GEOSEG_CACHE_DIR")
    assert onnx_cache_dir() == tmp_path / "xdg" / "geoseg" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert onnx_cache_dir() == tmp_path / "home" / ".cache" / "geoseg" / "onnx"
    monkeypatch.setenv("GEOSEG_CACHE_DIR", "")
    assert onnx_cache_dir() is None
    with cache_dir_override(tmp_path / "ctx"):
        assert onnx_cache_dir() == tmp_path / "ctx" / "onnx"
        with cache_dir_override(None):
            assert onnx_cache_dir() is None
    assert onnx_cache_dir() is None


def test_cache_written_on_first_build_and_hit_on_the_second(tiny_model, cache, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    tiles = tiles_of(2, seed=3)
    calls = count_exports(monkeypatch)
    first = predictor(tiny_model, backend="onnx")
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(calls) == 3 and len(files) == 3  # dense part, box head, mask head
    assert not list((cache / "onnx").glob(".*"))  # no temporary file left behind
    stamps = [f.stat().st_mtime_ns for f in files]
    refuse_exports(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="geoseg.models.onnx_cache"):
        second = predictor(tiny_model, backend="onnx")
    assert sum("cache hit" in r.getMessage() for r in caplog.records) == 3
    assert [f.stat().st_mtime_ns for f in files] == stamps
    for a, b in zip(first.predict_tiles(tiles), second.predict_tiles(tiles), strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_key_follows_weights_structure_input_and_version(tiny_model):
    engine = TorchEngine(copy.deepcopy(tiny_model))
    x = torch.zeros(1, 3, 128, 128)
    key = graph_key(engine._dense, x, opset=17, version=1)
    assert len(key) == 64
    assert graph_key(TorchEngine(copy.deepcopy(tiny_model))._dense, x, opset=17, version=1) == key
    assert graph_key(engine._dense, torch.zeros(1, 3, 96, 96), opset=17, version=1) != key
    assert graph_key(engine._dense, x, opset=18, version=1) != key
    assert graph_key(engine._dense, x, opset=17, version=2) != key
    assert graph_key(engine._dense, x, opset=17, version=1, extra=["a"]) != key
    assert graph_key(engine._box, torch.zeros(2, 16, 7, 7), opset=17, version=1) != key
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        weight = changed.backbone.body.layer4[1].conv2.weight
        weight[0, 0, 0, 0] += 1e-3
    assert graph_key(TorchEngine(changed)._dense, x, opset=17, version=1) != key
    changed = copy.deepcopy(tiny_model)  # a buffer (frozen batch-norm statistics) counts too
    bn = next(m for m in changed.backbone.body.modules() if hasattr(m, "running_var"))
    bn.running_var[0] += 1.0
    assert graph_key(TorchEngine(changed)._dense, x, opset=17, version=1) != key


def test_a_retrained_model_is_exported_again(tiny_model, cache, monkeypatch):
    pytest.importorskip("onnxruntime")
    predictor(tiny_model, backend="onnx")
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        changed.roi_heads.mask_predictor.mask_fcn_logits.bias += 0.5
    calls = count_exports(monkeypatch)
    predictor(changed, backend="onnx")
    assert len(calls) == 1  # only the mask head changed
    assert len(list((cache / "onnx").glob("*.onnx"))) == 4


def test_corrupt_cached_graph_is_exported_again(tiny_model, cache, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    tiles = tiles_of(1, seed=5)
    ref = predictor(tiny_model, backend="onnx").predict_tiles(tiles)
    files = sorted((cache / "onnx").glob("*.onnx"))
    sizes = [f.stat().st_size for f in files]
    files[0].write_bytes(files[0].read_bytes()[: sizes[0] // 2])  # truncated
    files[1].write_bytes(b"not an onnx graph")
    calls = count_exports(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="geoseg.models.onnx_cache"):
        again = predictor(tiny_model, backend="onnx").predict_tiles(tiles)
    assert len(calls) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("cannot be loaded" in r.getMessage() for r in warnings)
    assert [f.stat().st_size for f in files] == sizes  # overwritten with whole graphs
    np.testing.assert_array_equal(ref[0].scores, again[0].scores)
    refuse_exports(monkeypatch)
    predictor(tiny_model, backend="onnx")  # and the repaired files are hits


def test_unwritable_cache_folder_falls_back_to_in_memory_export(
    tiny_model, tmp_path, monkeypatch, caplog
):
    pytest.importorskip("onnxruntime")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # so <root>/onnx cannot be created, even by root
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(blocker))
    calls = count_exports(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="geoseg.models.onnx_cache"):
        p = predictor(tiny_model, backend="onnx")
        predictor(tiny_model, backend="onnx")
    assert isinstance(p.engine, OnnxEngine) and len(calls) == 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be written" in warnings[0].getMessage()
    assert len(p.predict_tiles(tiles_of(1))) == 1


def test_cache_off_exports_every_time_and_writes_nothing(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    calls = count_exports(monkeypatch)
    predictor(tiny_model, backend="onnx")
    with cache_dir_override(None):
        monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "env"))
        predictor(tiny_model, backend="onnx")
    assert len(calls) == 6
    assert list(tmp_path.iterdir()) == []


def test_export_constants_are_part_of_the_key(tiny_model, cache, monkeypatch):
    """Bumping runtime.ONNX_EXPORT_VERSION invalidates what was cached."""
    pytest.importorskip("onnxruntime")
    from geoseg.models import runtime

    predictor(tiny_model, backend="onnx")
    monkeypatch.setattr(runtime, "ONNX_EXPORT_VERSION", ONNX_EXPORT_VERSION + 1)
    calls = count_exports(monkeypatch)
    predictor(tiny_model, backend="onnx")
    assert len(calls) == 3 and ONNX_OPSET == 17


def test_auto_backend_is_onnx_on_the_cpu(tiny_model, caplog):
    pytest.importorskip("onnxruntime")
    assert RunSettings().backend == Backend.AUTO
    with caplog.at_level(logging.INFO, logger="geoseg.predict"):
        p = predictor(tiny_model)
    assert isinstance(p.engine, OnnxEngine) and p.backend is Backend.ONNX
    assert not p.channels_last and "backend=onnx" in repr(p)
    assert [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()] == [
        "backend auto: onnx (CPU, onnxruntime available)"
    ]
    # off the CPU, auto is torch (no accelerator needed to decide); explicit names stay
    assert resolve_backend("auto", torch.device("cuda")) is Backend.TORCH
    assert resolve_backend(None, "mps") is Backend.TORCH
    assert resolve_backend("ONNX", "cuda") is Backend.ONNX
    with pytest.raises(ConfigError, match="unknown backend"):
        resolve_backend("tensorrt", "cpu")


def test_auto_backend_falls_back_to_torch_without_onnxruntime(tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    p = predictor(tiny_model)
    assert isinstance(p.engine, TorchEngine) and p.backend is Backend.TORCH
    assert p.channels_last and "backend=torch" in repr(p)
    with pytest.raises(ConfigError, match="needs onnxruntime"):
        predictor(tiny_model, backend="onnx")


def test_backend_stays_out_of_the_settings_digest():
    digests = {RunSettings(backend=b).digest() for b in ("auto", "torch", "onnx")}
    assert len(digests) == 1 and RunSettings().digest() in digests


def test_warned_folders_are_per_folder(tmp_path, caplog):
    """The unwritable-folder warning is given once per folder, not once per process."""
    with caplog.at_level(logging.WARNING, logger="geoseg.models.onnx_cache"):
        for name in ("a", "b", "a"):
            onnx_cache._warn_once(tmp_path / name, PermissionError("denied"))
    assert len(caplog.records) == 2
