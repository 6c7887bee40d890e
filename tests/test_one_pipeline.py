"""The library, the command line and the notebooks give the same answer: one pipeline, one set
of rules. The bundled demo model on two small synthetic scenes, predicted by
``run_scene(path, predictor)`` with no other argument and by ``geoseg predict`` with no option
but the model and the output, must write identical features."""

from __future__ import annotations

import geopandas as gpd
import pytest
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.evaluate import evaluate
from geoseg.pipeline import run_scene
from geoseg.predict import load_predictor
from geoseg.synth import generate_scene


@pytest.fixture(scope="module")
def demo_predictor(demo_model):
    return load_predictor(demo_model)


@pytest.fixture(scope="module", params=["marina", "town"])
def small_scene(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    seed = {"marina": 31, "town": 32}[request.param]
    return generate_scene(
        folder / f"{request.param}.tif", size=320, seed=seed, layout=request.param
    )


def features(path):
    gdf = gpd.read_file(path)
    gdf = gdf.assign(wkb=gdf.geometry.normalize().to_wkb()).sort_values("wkb")
    return gdf.reset_index(drop=True)


def test_library_and_cli_write_identical_features(
    tmp_path, demo_model, demo_predictor, small_scene
):
    lib_out = tmp_path / "library.gpkg"
    result = run_scene(small_scene.raster_path, demo_predictor, output=lib_out)
    cli_out = tmp_path / "cli.gpkg"
    r = CliRunner().invoke(
        cli, ["predict", str(small_scene.raster_path), "-m", str(demo_model), "-o", str(cli_out)]
    )
    assert r.exit_code == 0, r.output

    a, b = features(lib_out), features(cli_out)
    assert len(a) == len(b) == len(result.gdf) > 0
    assert (a["wkb"] == b["wkb"]).all()
    assert (a["class"] == b["class"]).all()
    assert a["score"].round(5).tolist() == b["score"].round(5).tolist()
    # both used the checkpoint's recommended per-class thresholds, not a score of 0
    thresholds = demo_predictor.score_thresholds
    assert thresholds and result.settings is not None
    assert dict(result.settings.class_min_score) == dict(thresholds)
    for name, low in thresholds.items():
        assert (a.loc[a["class"] == name, "score"] >= low - 1e-6).all()
    # and the answer is a useful one on this synthetic scene
    scores = evaluate(a, gpd.read_file(small_scene.labels_path))
    assert scores.overall.f1 > 0.6, scores.overall
