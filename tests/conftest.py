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


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_dir(tmp_path_factory):
    """One ONNX export cache for the whole session (``GEOSEG_CACHE_DIR``, also seen by the
    subprocesses tests start): nothing is written to ``~/.cache``, and the predictors the suite
    builds with the ``onnx``/``auto`` backend export each set of weights once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_CACHE_DIR", str(tmp_path_factory.mktemp("geoseg-cache")))
        yield


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto's standalone server) in its own process.

    Yields ``{"endpoint": URL, "env": {...}}``; the AWS variables (dummy credentials, the
    endpoint for boto/s3fs and for GDAL's ``/vsis3/``) are set in this process for the
    session, so that child processes (CLI runs, dask workers started later) inherit them.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("moto.server", reason="moto[server] is not installed (geoseg[dev])")
    pytest.importorskip("s3fs", reason="s3fs is not installed (geoseg[cloud])")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
            time.sleep(0.1)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # boto3 / s3fs
        "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",  # GDAL /vsis3/
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        yield {"endpoint": endpoint, "env": env}
    finally:
        mp.undo()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
