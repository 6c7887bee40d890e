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
