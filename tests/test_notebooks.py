"""The notebooks in notebooks/ are committed without outputs and run clean on small settings.

Each notebook reads its sizes from environment variables (GEOSEG_NB_*), so the suite runs them
on 256 px synthetic scenes and a few training steps. Each notebook writes what it found to
``scores.json`` in its work folder, and the tests check it against the synthetic truth. A
notebook that uses a public name geoseg lacks fails (the name is listed in REQUIRES).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))

# what each notebook uses from geoseg (module: names)
REQUIRES = {
    "01_quickstart": {
        "geoseg.synth": ["generate_scene"],
        "geoseg.samples": ["demo_model_path"],
        "geoseg.pipeline": ["run_scene"],
        "geoseg.predict": ["load_predictor"],
        "geoseg.evaluate": ["evaluate", "format_table"],
        "geoseg.viz": ["quicklook", "web_map"],
    },
    "02_count_and_analyse": {
        "geoseg.synth": ["generate_scene"],
        "geoseg.samples": ["demo_model_path"],
        "geoseg.count": ["count", "format_counts", "write_counts"],
    },
    "04_train_on_a_real_dataset": {
        "geoseg.chips": ["make_chips"],
        "geoseg.config": ["TrainConfig"],
        "geoseg.samples": ["demo_model_path"],
        "geoseg.train": ["train"],
        "geoseg.pipeline": ["run_scene"],
        "geoseg.predict": ["load_predictor"],
        "geoseg.evaluate": ["evaluate", "format_table"],
        "geoseg.viz": ["quicklook", "web_map"],
    },
    "03_train_on_your_labels": {
        "geoseg.synth": ["generate_scene"],
        "geoseg.chips": ["make_chips"],
        "geoseg.config": ["TrainConfig"],
        "geoseg.train": ["train"],
        "geoseg.pipeline": ["run_scene"],
        "geoseg.predict": ["load_predictor"],
        "geoseg.evaluate": ["evaluate", "format_table"],
        "geoseg.viz": ["quicklook"],
    },
}

SMALL = {
    "GEOSEG_NB_SIZE": "256",
    "GEOSEG_NB_STEPS": "2",
    "GEOSEG_NB_CHIP": "128",
    "GEOSEG_NB_MAX_DETS": "20",
    "GEOSEG_NB_GRID_M": "25",
    "GEOSEG_NB_RESULTS": "labels",
}


def missing_dependency(name):
    for module, names in REQUIRES.get(name, {}).items():
        try:
            mod = importlib.import_module(module)
        except Exception as err:  # an unfinished module may fail in many ways
            return f"{module} cannot be imported ({type(err).__name__}: {err})"
        for attr in names:
            if not hasattr(mod, attr):
                return f"{module}.{attr} does not exist yet"
    return None


def test_every_notebook_is_known():
    assert sorted(REQUIRES) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_name_a_notebook_uses_exists(name):
    assert missing_dependency(name) is None


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_without_outputs(name):
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{name}: clear the execution counts"


def execute(name, tmp_path, monkeypatch, **env):
    reason = missing_dependency(name)
    assert reason is None, f"{name}.ipynb needs {reason}"
    for key, value in {**SMALL, **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GEOSEG_NB_WORKDIR", str(tmp_path / "work"))
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NB_DIR)}},
    )
    client.execute()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{name}: {out.ename}: {out.evalue}"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Traceback" not in out.text, out.text
    return nb, tmp_path / "work"


def outputs_text(nb):
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "\n".join(parts)


def test_01_quickstart_finds_the_objects(tmp_path, monkeypatch):
    import geopandas as gpd

    _, work = execute("01_quickstart", tmp_path, monkeypatch)
    found = json.loads((work / "scores.json").read_text())
    # the labels the scene was generated with are still the labels (not the predictions)
    labels = gpd.read_file(work / "harbour.gpkg")
    assert labels["class"].value_counts().to_dict() == {
        k: v for k, v in found["truth"].items() if v
    }
    objects = gpd.read_file(work / "harbour_objects.gpkg")
    assert sum(found["counts"].values()) == len(objects) > 0
    assert "score" in objects.columns and "score" not in labels.columns
    # the demo model on a small synthetic scene: a useful, not a perfect, result
    overall = found["scores"]["overall"]
    assert overall["count_true"] == len(labels)
    assert 0.6 <= overall["f1"] < 1.0, overall
    assert (work / "harbour.png").is_file()
    html = (work / "harbour.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in html


def test_02_count_and_analyse_runs(tmp_path, monkeypatch):
    import geopandas as gpd
    import pandas as pd

    nb, work = execute("02_count_and_analyse", tmp_path, monkeypatch)
    table = pd.read_csv(work / "counts.csv")
    labels = sum(len(gpd.read_file(p)) for p in (work / "results").glob("*.gpkg"))
    assert table["count"].sum() == labels > 0
    assert "TOTAL" in outputs_text(nb)
    assert any(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    ), "the density map / histogram figures were not drawn"


@pytest.mark.slow
def test_02_with_batch_predictions(tmp_path, monkeypatch):
    reason = missing_dependency("02_count_and_analyse") or (
        None if importlib.util.find_spec("geoseg.batch") else "geoseg.batch"
    )
    if reason:
        pytest.skip(f"02_count_and_analyse.ipynb needs {reason}")
    _, work = execute("02_count_and_analyse", tmp_path, monkeypatch, GEOSEG_NB_RESULTS="batch")
    assert (work / "results" / "manifest.json").is_file()


def test_03_train_on_your_labels_runs(tmp_path, monkeypatch):
    import math

    import geopandas as gpd

    _, work = execute("03_train_on_your_labels", tmp_path, monkeypatch)
    found = json.loads((work / "scores.json").read_text())
    assert len(found["losses"]) == int(SMALL["GEOSEG_NB_STEPS"])
    assert all(math.isfinite(x) and x > 0 for x in found["losses"])
    # run_scene took the tile size from the checkpoint (the chip size it was trained on)
    assert found["tile_size"] == int(SMALL["GEOSEG_NB_CHIP"])
    truth = gpd.read_file(work / "test.gpkg")
    assert found["scores"]["overall"]["count_true"] == len(truth) == sum(found["truth"].values())
    predicted = gpd.read_file(work / "test_pred.gpkg")
    assert (
        found["scores"]["overall"]["count_pred"] == len(predicted) == sum(found["counts"].values())
    )
    assert list((work / "run").glob("*.safetensors"))


def test_04_train_on_a_real_dataset_finds_buildings(tmp_path, monkeypatch):
    """A few fine-tuning steps from the demo model on real Rio imagery, then the held-out area:
    georeferenced buildings (EPSG:4326, as the mosaic) that overlap the labels."""
    import geopandas as gpd

    _, work = execute(
        "04_train_on_a_real_dataset",
        tmp_path,
        monkeypatch,
        GEOSEG_NB_SIZE="512",
        GEOSEG_NB_CHIP="256",
        GEOSEG_NB_STEPS="12",
        GEOSEG_NB_RIO=str(ROOT / "data_samples" / "rio"),
    )
    found = json.loads((work / "scores.json").read_text())
    assert found["crs"].endswith("4326") or "WGS 84" in found["crs"]
    written = gpd.read_file(work / "rio_test.gpkg")
    assert written.crs.to_epsg() == 4326 and len(written) == sum(found["counts"].values())
    building = found["scores"]["per_class"]["building"]
    assert building["count_true"] == found["n_truth"] > 20
    # a dozen steps from the synthetic demo model already put buildings on Rio's buildings (the
    # demo model alone calls the rooftops vehicles). How many match one at IoU 0.5 after so
    # few steps varies with the CPU and its threads (2 to 31 of 229 on the AVX2 machine, 2026-12-07;
    # the AVX-512 one gave more), so the test asks for one match and for most outlines to lie on
    # a labelled building; the figures of a full run are in BENCHMARKS.md
    assert building["tp"] >= 1, building
    labels = gpd.read_file(ROOT / "data_samples" / "rio" / "buildings.geojson").to_crs(written.crs)
    on_a_label = written.intersects(labels.union_all()).mean()
    assert on_a_label >= 0.4, (on_a_label, building)
