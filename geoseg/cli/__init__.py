"""The ``geoseg`` command line: a thin click group over the library functions.

Each subcommand lives in its own module ``geoseg/cli/<name>.py`` defining a click command named
``command``; it is imported only when invoked (so ``geoseg --help`` stays fast and does not
import torch). Register a new subcommand by adding it to ``_COMMANDS``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from geoseg._version import __version__

__all__ = ["cli", "main"]

# subcommand name -> (module, one-line help shown in `geoseg --help`)
_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("geoseg.cli.batch", "Run a model over many scenes on dask, resumably."),
    "chips": ("geoseg.cli.chips", "Cut training chips + COCO instance labels from a scene."),
    "count": ("geoseg.cli.count", "Count objects per scene, class, zone and grid cell."),
    "evaluate": ("geoseg.cli.evaluate", "Score predicted polygons against truth, per class."),
    "map": ("geoseg.cli.map", "Write an offline HTML map of results over their scene."),
    "predict": ("geoseg.cli.predict", "Find and outline the objects of one scene with a model."),
    "synth": ("geoseg.cli.synth", "Write a synthetic scene (GeoTIFF) with exact labels (.gpkg)."),
    "train": ("geoseg.cli.train", "Train or fine-tune a Mask R-CNN on training chips."),
}


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
