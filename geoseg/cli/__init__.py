"""The ``geoseg`` command line: a thin click group over the library functions.

Each subcommand lives in its own module ``geoseg/cli/<name>.py`` defining a click command named
``command``; it is imported only when invoked (so ``geoseg --help`` stays fast and does not
import torch). Register a new subcommand by adding it to ``_COMMANDS``, and to ``_NEEDS`` when
it needs an optional dependency group: run without it, the command stops with a message naming
the extra to install (``geoseg predict needs the 'ml' extra: pip install 'geoseg[ml]'``);
``--help`` still works.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from geoseg._extras import extra_error, missing_modules
from geoseg._version import __version__

__all__ = ["cli", "main"]

# subcommand name -> (module, one-line help shown in `geoseg --help`)
_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("geoseg.cli.batch", "Run a model over many scenes on dask, resumably."),
    "calibrate": (
        "geoseg.cli.calibrate",
        "Tune a model's per-class score thresholds on a labelled scene.",
    ),
    "chips": ("geoseg.cli.chips", "Cut training chips + COCO instance labels from a scene."),
    "count": ("geoseg.cli.count", "Count objects per scene, class, zone and grid cell."),
    "evaluate": ("geoseg.cli.evaluate", "Score predicted polygons against truth, per class."),
    "import": (
        "geoseg.cli.import_",
        "Import COCO, DOTA, YOLO-OBB or vector labels as a chip folder.",
    ),
    "map": ("geoseg.cli.map", "Write an offline HTML map of results over their scene."),
    "predict": ("geoseg.cli.predict", "Find and outline the objects of one scene with a model."),
    "synth": ("geoseg.cli.synth", "Write a synthetic scene (GeoTIFF) with exact labels (.gpkg)."),
    "train": ("geoseg.cli.train", "Train or fine-tune a Mask R-CNN on training chips."),
}

# subcommand name -> the extra it needs beyond the core install (see geoseg._extras)
_NEEDS: dict[str, str] = {
    "batch": "batch",
    "calibrate": "ml",
    "map": "maps",
    "predict": "ml",
    "train": "ml",
}


def _requiring(extra: str, name: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command callback so it first checks that ``extra`` is installed."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        missing = missing_modules(extra)
        if missing:
            raise click.ClickException(str(extra_error(extra, f"geoseg {name}", missing)))
        return callback(*args, **kwargs)

    wrapper._geoseg_extra = extra  # type: ignore[attr-defined]
    return wrapper


class _LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = module.command
        extra = _NEEDS.get(cmd_name)
        callback = command.callback
        if extra and callback is not None and not hasattr(callback, "_geoseg_extra"):
            command.callback = _requiring(extra, cmd_name, callback)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in sorted(_COMMANDS.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", count=True, help="Less log output (-q errors only).")
def cli(verbose: int, quiet: int) -> None:
    """Find and outline objects in large geospatial scenes as georeferenced polygons."""
    level = logging.WARNING - 10 * verbose + 10 * quiet
    level = min(max(level, logging.DEBUG), logging.CRITICAL)
    root = logging.getLogger("geoseg")
    root.setLevel(level)
    if not any(getattr(h, "_geoseg_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._geoseg_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def main() -> None:
    """Console-script entry point."""
    cli()
