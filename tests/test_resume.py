"""Partial results of a long scene (geoseg.partial): kept per batch, reused by a rerun.

A real tiny checkpoint predicts a real GeoTIFF; a wrapper counts the tiles sent to it and can
raise after N tiles, standing for a Ctrl-C or a crash in the middle of a scene.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg.partial import PartialResults, decode_tile, encode_tile, partial_path
from geoseg.types import PixelWindow, TileDetections, TileSpec

TILE = dict(tile_size=64, overlap=8, min_score=0.0, batch_size=1, device="cpu")


def write_scene(path: Path, *, seed: int = 5, size: int = 200) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(10, 40, size=(3, size, size), dtype=np.uint8)
    for _ in range(20):
        h, w = rng.integers(4, 12, size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        data[:, r : r + h, c : c + w] = rng.integers(150, 255, size=(3, 1, 1), dtype=np.uint8)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8")
    profile.update(crs="EPSG:32633", transform=from_origin(500000.0, 4000000.0, 0.5, 0.5))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


class Counting:
    """A predictor that forwards to a real one, counts tiles, and raises after ``fail_after``."""

    def __init__(self, inner, fail_after=None, error=KeyboardInterrupt):
        self._inner, self.fail_after, self.error, self.seen = inner, fail_after, error, []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def device_type(self):
        return self._inner.device_type

    def predict_tiles(self, tiles):
        if self.fail_after is not None and len(self.seen) + len(tiles) > self.fail_after:
            raise self.error()
        self.seen += [t.spec.index for t in tiles]
        return self._inner.predict_tiles(tiles)


@pytest.fixture(scope="module")
def model(tiny_checkpoint_factory):
    return tiny_checkpoint_factory("resume", tile_size=64)


@pytest.fixture(scope="module")
def predictor(model):
    from geoseg.checkpoint import read_meta
    from geoseg.predict import load_predictor
    from geoseg.settings import resolve

    return load_predictor(model, resolve(read_meta(model), **TILE))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("scene") / "long.tif")


@pytest.fixture(scope="module")
def reference(predictor, scene, tmp_path_factory):
    from geoseg.pipeline import run_scene

    out = tmp_path_factory.mktemp("ref") / "ref.gpkg"
    result = run_scene(scene, predictor, output=out, **TILE)
    assert len(result.gdf) > 0, "the tiny model should find something"
    assert result.n_tiles == result.tiles_total == 16
    return out, result


def same_vectors(a: Path, b: Path) -> None:
    import geopandas as gpd

    ga, gb = gpd.read_file(a), gpd.read_file(b)
    assert len(ga) == len(gb) and list(ga.columns) == list(gb.columns)
    assert list(ga.geometry.to_wkb()) == list(gb.geometry.to_wkb())
    cols = [c for c in ga.columns if c != "geometry"]
    assert ga[cols].equals(gb[cols])


def test_tile_encoding_round_trips_masks_and_fields():
    rng = np.random.default_rng(0)
    masks = tuple(rng.random((h, w)) > 0.5 for h, w in [(3, 5), (1, 1), (7, 2)])
    spec = TileSpec(4, 1, 2, PixelWindow(10, 20, 64, 64), PixelWindow(14, 24, 56, 56))
    dets = TileDetections(
        boxes=rng.random((3, 4)).astype(np.float32),
        scores=rng.random(3).astype(np.float32),
        labels=np.array([0, 2, 1], np.int64),
        mask_boxes=np.array([[0, 0, 5, 3], [1, 1, 2, 2], [3, 3, 5, 10]], np.int32),
        masks=masks,
        classes=("ship", "vehicle", "building"),
        tile=spec,
    )
    back = decode_tile(encode_tile(dets), spec)
    for name in ("boxes", "scores", "labels", "mask_boxes"):
        a, b = getattr(dets, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert all(np.array_equal(a, b) for a, b in zip(dets.masks, back.masks, strict=True))
    assert back.classes == dets.classes and back.tile == spec
    empty = decode_tile(encode_tile(TileDetections.empty(spec, ("ship",))), spec)
    assert len(empty) == 0 and empty.classes == ("ship",)


def test_interrupted_scene_resumes_with_only_missing_tiles(predictor, scene, reference, tmp_path):
    from geoseg.pipeline import run_scene

    ref_out, ref = reference
    out = tmp_path / "out.gpkg"
    first = Counting(predictor, fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_scene(scene, first, output=out, resume=True, **TILE)
    assert not out.exists() and partial_path(out).is_file()
    assert len(first.seen) == 5
    progress = []
    second = Counting(predictor)
    result = run_scene(
        scene,
        second,
        output=out,
        resume=True,
        progress=lambda d, t: progress.append((d, t)),
        **TILE,
    )
    assert sorted(second.seen) == sorted(set(range(16)) - set(first.seen))  # only the others
    assert result.resumed_tiles == 5 and result.n_tiles == ref.n_tiles
    assert progress[0] == (5, 16) and progress[-1] == (16, 16)
    assert result.counts == ref.counts
    same_vectors(out, ref_out)
    assert not partial_path(out).exists()  # removed on success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gpkg"]


def test_crash_twice_then_finish(predictor, scene, reference, tmp_path):
    """A second interruption adds to the same partial results; a crash (not Ctrl-C) too."""
    from geoseg.pipeline import run_scene

    out = tmp_path / "out.gpkg"
    for fail_after in (3, 4):
        with pytest.raises(RuntimeError):
            run_scene(
                scene,
                Counting(predictor, fail_after, RuntimeError),
                output=out,
                resume=True,
                **TILE,
            )
    last = Counting(predictor)
    result = run_scene(scene, last, output=out, resume=True, **TILE)
    assert len(last.seen) == 16 - 7 and result.resumed_tiles == 7
    same_vectors(out, reference[0])


def test_other_settings_or_model_start_over(predictor, scene, tmp_path, caplog):
    from geoseg.pipeline import run_scene

    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_scene(scene, Counting(predictor, 6), output=out, resume=True, **TILE)
    # another score threshold: other detections
    with caplog.at_level(logging.WARNING, logger="geoseg"), pytest.raises(KeyboardInterrupt):
        run_scene(
            scene, Counting(predictor, 2), output=out, resume=True, **{**TILE, "min_score": 0.2}
        )
    assert "made with other settings, model or scene; starting over" in caplog.text
    caplog.clear()
    other_model = Counting(predictor)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        result = run_scene(
            scene, other_model, output=out, resume=True, model_id="another-checkpoint", **TILE
        )
    assert "starting over" in caplog.text
    assert result.resumed_tiles == 0 and len(other_model.seen) == 16
    # a file that is not partial results at all is replaced too
    partial_path(out).write_text("not a database")
    third = Counting(predictor)
    run_scene(scene, third, output=out, resume=True, **TILE)
    assert len(third.seen) == 16 and not partial_path(out).exists()


def test_resume_needs_an_output_and_a_model_identity(predictor, scene, tmp_path):
    from geoseg.errors import ConfigError
    from geoseg.pipeline import run_scene

    with pytest.raises(ConfigError, match="output"):
        run_scene(scene, predictor, resume=True, **TILE)

    class Anonymous(Counting):
        meta = None

    with pytest.raises(ConfigError, match="model_id"):
        run_scene(scene, Anonymous(predictor), output=tmp_path / "o.gpkg", resume=True, **TILE)


def test_partial_results_store_commits_each_batch(tmp_path):
    spec = TileSpec(3, 0, 3, PixelWindow(0, 0, 8, 8), PixelWindow(0, 0, 8, 8))
    store = PartialResults.open(tmp_path / "x.partial", "k1", scene="s.tif", tiles_total=9)
    store.add([TileDetections.empty(spec, ("ship",))])
    store.close()  # an interrupted run: kept
    again = PartialResults.open(tmp_path / "x.partial", "k1", scene="s.tif", tiles_total=9)
    assert again.done == {3} and [d.tile for d in again.load([spec] * 9)] == [spec]
    again.remove()
    assert list(tmp_path.iterdir()) == []


def test_cli_ctrl_c_keeps_partial_results_and_rerun_continues(
    model, scene, reference, tmp_path, monkeypatch
):
    import geoseg.predict
    from geoseg.cli import cli

    out = tmp_path / "res.gpkg"
    args = ["predict", str(scene), "-m", str(model), "-o", str(out), "--tile-size", "64"]
    args += ["--overlap", "8", "--min-score", "0", "--batch-size", "1", "--device", "cpu"]
    real = geoseg.predict.load_predictor
    made = []

    def loader(fail_after):
        def load(*a, **k):
            made.append(Counting(real(*a, **k), fail_after))
            return made[-1]

        return load

    monkeypatch.setattr(geoseg.predict, "load_predictor", loader(4))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 128 + signal.SIGINT, res.output
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("interrupted (SIGINT)")]
    assert (
        line
        and f"kept in {partial_path(out)}" in line[0]
        and "run the same command again" in line[0]
    )
    assert partial_path(out).is_file() and not out.exists()

    monkeypatch.setattr(geoseg.predict, "load_predictor", loader(None))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "found partial results" in res.stderr and "(4 from partial results)" in res.stdout
    assert len(made[-1].seen) == 12
    same_vectors(out, reference[0])
    assert not partial_path(out).exists()

    # --no-resume: nothing kept, nothing reused
    monkeypatch.setattr(geoseg.predict, "load_predictor", loader(4))
    res = CliRunner().invoke(cli, [*args, "--no-resume"])
    assert res.exit_code == 130 and not partial_path(out).exists()
    assert "written whole at the end" in res.stderr


def test_interrupt_before_any_tile_leaves_no_partial_file(predictor, scene, tmp_path):
    from geoseg.pipeline import run_scene

    out = tmp_path / "out.gpkg"
    with pytest.raises(KeyboardInterrupt):
        run_scene(scene, Counting(predictor, 0), output=out, resume=True, **TILE)
    assert list(tmp_path.iterdir()) == []


def test_damaged_partial_results_are_started_over(tmp_path, caplog):
    """A file whose last page was lost (a power cut without fsync) fails SQLite's check."""
    specs = [TileSpec(i, 0, i, PixelWindow(0, 0, 8, 8), PixelWindow(0, 0, 8, 8)) for i in range(50)]
    path = tmp_path / "x.partial"
    store = PartialResults.open(path, "k", scene="s.tif", tiles_total=50)
    for spec in specs:
        store.add([TileDetections.empty(spec, ("ship",))])
    store.close()
    data = bytearray(path.read_bytes())
    data[-4096:] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        again = PartialResults.open(path, "k", scene="s.tif", tiles_total=50)
    assert "damaged; starting over" in caplog.text and again.done == set()
    again.remove()
