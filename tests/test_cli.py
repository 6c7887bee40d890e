from click.testing import CliRunner

import geoseg
from geoseg.cli import cli


def test_version_and_help():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and geoseg.__version__ in r.output
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_unknown_command_is_a_usage_error():
    r = CliRunner().invoke(cli, ["no-such-command"])
    assert r.exit_code == 2 and "No such command" in r.output


def test_lazy_public_api():
    assert geoseg.GeosegError is geoseg.errors.GeosegError
    assert issubclass(geoseg.RasterReadError, OSError)
    assert sorted(geoseg.__all__[1:]) == geoseg.__all__[1:]


def test_public_names_never_shadow_a_submodule():
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(geoseg.__path__)}
    assert not submodules & set(geoseg.__all__)
    for name in geoseg.__all__[1:]:
        assert getattr(geoseg, name) is not None


def _help(command: str) -> str:
    r = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


def test_tiling_options_show_their_defaults():
    for command in ("predict", "batch"):
        text = _help(command)
        assert (
            "--tile-size INTEGER RANGE Tile side in pixels the model sees (at the working GSD) "
            "[default: the preset's, else the model's training tile size, else 512]"
        ) in text
        assert "[default: the preset's, else a quarter of the tile size]" in text


def test_device_choices_are_the_same_everywhere():
    """``batch --device mps`` and ``cuda:1`` parse as in predict; a typo is a usage error."""
    import importlib

    from geoseg.cli._common import DEVICES, DeviceType
    from geoseg.predict import Device

    assert tuple(d.value for d in Device) == DEVICES
    for name in ("predict", "batch", "calibrate", "train"):
        command = importlib.import_module(f"geoseg.cli.{name}")
        option = next(p for p in command.command.params if p.name == "device")
        assert isinstance(option.type, DeviceType), name
        for value in ("mps", "cuda:1", "CPU", "auto"):
            assert option.type.convert(value, option, None) == value.lower()
    for command in ("predict", "batch"):
        r = CliRunner().invoke(cli, [command, "x.tif", "-m", "m", "-o", "o", "--device", "gpu"])
        assert r.exit_code == 2 and "'gpu': choose one of auto, cuda, mps, cpu or cuda:N" in (
            r.output
        )


def test_quiet_prints_errors_only(tmp_path, tiny_checkpoint_factory):
    import numpy as np
    import rasterio
    from affine import Affine

    model = tiny_checkpoint_factory("quiet", tile_size=64)
    scene = tmp_path / "s.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    with rasterio.open(
        scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
        crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000),
    ) as dst:  # fmt: skip
        dst.write(data)
    argv = ["predict", str(scene), "-m", str(model), "--device", "cpu", "--min-score", "0"]
    r = CliRunner().invoke(cli, [*argv, "-o", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 0 and "total" in r.output and "scene 0.50 m" in r.output
    r = CliRunner().invoke(cli, ["-q", *argv, "-o", str(tmp_path / "b.gpkg")])
    assert r.exit_code == 0 and r.output == ""
    assert (tmp_path / "b.gpkg").exists()
    r = CliRunner().invoke(cli, ["-q", *argv, "-o", str(tmp_path / "c.gpkg"), "--bands", "7"])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and len(r.output.splitlines()) == 1


def test_unknown_min_score_class_fails_before_any_work(tmp_path, tiny_checkpoint_factory):
    """batch: no progress bar, no dask cluster, no output folder; one line naming the model."""
    model = tiny_checkpoint_factory("thresholds", tile_size=64)
    scene = tmp_path / "s.tif"
    scene.write_bytes(b"never read")
    argv = ["batch", str(scene), "-o", str(tmp_path / "out"), "-m", str(model)]
    r = CliRunner().invoke(cli, [*argv, "--min-score", "boat=0.3"])
    assert r.exit_code == 1, r.output
    assert r.output.splitlines() == [
        f"Error: --min-score boat: unknown class 'boat'; the classes of the checkpoint "
        f"{model}: ship, vehicle"
    ]
    assert not (tmp_path / "out").exists()
