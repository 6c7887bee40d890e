"""The ``geoseg`` command line: a thin click group over the library functions.

Each subcommand lives in its own module ``geoseg/cli/<name>.py`` defining a click command named
``command``; it is imported only when invoked (so ``geoseg --help`` stays fast and does not
import torch). Register a new subcommand by adding it to ``_COMMANDS``, and to ``_NEEDS`` when
it needs an optional dependency group: run without it, the command stops with a message naming
the extra to install (``geoseg predict needs the 'ml' extra: pip install 'geoseg[ml]'``);
``--help`` still works.

How a command ends is decided here, once for all of them (:meth:`_LazyGroup.invoke`):

* a :class:`~geoseg.errors.GeosegError`, an ``OSError`` or a ``MemoryError`` becomes one line
  ``Error: ...`` on stderr and exit status 1 (``-v`` adds the traceback);
* Ctrl-C (``SIGINT``) and ``SIGTERM`` (:func:`main` turns it into :class:`Terminated`, a
  ``KeyboardInterrupt``, so every ``finally`` and context manager runs: temporary files go,
  reader processes and the local dask cluster are shut down) end with one line saying what was
  kept and how to resume (:func:`~geoseg.cli._common.set_interrupt_note`) and the conventional
  status 130 (``SIGINT``) or 143 (``SIGTERM``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import click

from geoseg._extras import extra_error, missing_modules
from geoseg._version import __version__
from geoseg.errors import GeosegError

__all__ = ["EXIT_INTERRUPTED", "Terminated", "cli", "main"]

#: Exit status of a command ended by a signal: 128 + the signal number.
EXIT_INTERRUPTED: dict[int, int] = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` received: raised in the main thread so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _terminate(signum: int, frame: FrameType | None) -> None:
    """Signal handler: raise :class:`Terminated` (once; a second signal is left to the default)."""
    signal.signal(signum, signal.SIG_DFL)
    raise Terminated(signum)


# subcommand name -> (module, one-line help shown in `geoseg --help`)
_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("geoseg.cli.batch", "Run a model over many scenes on dask, resumably."),
    "calibrate": (
        "geoseg.cli.calibrate",
        "Tune a model's per-class score thresholds on a labelled scene.",
    ),
    "chips": ("geoseg.cli.chips", "Cut training chips + COCO instance labels from a scene."),
    "compare": (
        "geoseg.cli.compare",
        "Match objects across dates: persisted, arrived, departed; per zone and cell.",
    ),
    "count": ("geoseg.cli.count", "Count objects per scene, class, zone and grid cell."),
    "evaluate": ("geoseg.cli.evaluate", "Score predicted polygons against truth, per class."),
    "import": (
        "geoseg.cli.import_",
        "Import COCO, DOTA, YOLO-OBB or vector labels as a chip folder.",
    ),
    "label": (
        "geoseg.cli.label",
        "Pre-label a scene with a model: labels to review in QGIS, least certain first.",
    ),
    "map": ("geoseg.cli.map", "Write an offline HTML map of results over their scene."),
    "predict": ("geoseg.cli.predict", "Find and outline the objects of one scene with a model."),
    "review-report": (
        "geoseg.cli.review_report",
        "What a review of pre-labels changed, per class (and the model's score on it).",
    ),
    "synth": ("geoseg.cli.synth", "Write a synthetic scene (GeoTIFF) with exact labels (.gpkg)."),
    "train": ("geoseg.cli.train", "Train or fine-tune a Mask R-CNN on training chips."),
}

# subcommand name -> the extra it needs beyond the core install (see geoseg._extras)
_NEEDS: dict[str, str] = {
    "batch": "batch",
    "calibrate": "ml",
    "label": "ml",
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

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; errors become one line, interrupts the conventional status."""
        from geoseg.cli._common import INTERRUPT_NOTE, error_line, show_traceback

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            signum = getattr(err, "signum", int(signal.SIGINT))
            name = signal.Signals(signum).name
            note = ctx.meta.get(INTERRUPT_NOTE) or (
                "outputs are written whole or not at all, so no partial file was left; run the "
                "same command again"
            )
            show_traceback()
            click.echo(f"interrupted ({name}): {note}", err=True)
            ctx.exit(EXIT_INTERRUPTED.get(signum, 128 + signum))
        except click.ClickException:
            raise
        except (GeosegError, OSError, MemoryError) as err:
            show_traceback()
            raise click.ClickException(error_line(err)) from err

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in sorted(_COMMANDS.items())]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class _Once(logging.Filter):
    """Let each distinct warning through once per command (a scene opened thrice warns once)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "-q",
    "--quiet",
    count=True,
    help="Errors only: no progress bars, summaries, notes or warnings (a result that has "
    "nowhere else to go, such as count's table without -o, is still printed).",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Find and outline objects in large geospatial scenes as georeferenced polygons."""
    import warnings

    from geoseg.cli._common import QUIET

    ctx.meta[QUIET] = quiet > verbose
    level = logging.WARNING - 10 * verbose + 10 * quiet
    level = min(max(level, logging.DEBUG), logging.CRITICAL)
    root = logging.getLogger("geoseg")
    root.setLevel(level)
    ours = [h for h in root.handlers if getattr(h, "_geoseg_cli", False)]
    for old in ours:  # a later call in the same process (tests, notebooks): today's stderr
        if isinstance(old, logging.StreamHandler):
            old.stream = sys.stderr  # not setStream: it flushes the old, maybe closed, one
        for f in old.filters:
            if isinstance(f, _Once):
                f.seen.clear()
    if not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_Once())
        handler._geoseg_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # geoseg.raster's NoCRSWarning is also logged (above); -q silences every warning
    warnings.filterwarnings("ignore", message=r".*: the raster has no CRS; outputs will be in")
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")  # rasterio, same
    if ctx.meta[QUIET]:
        warnings.simplefilter("ignore")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: ``geoseg ARGS``; ``argv`` replaces ``sys.argv[1:]``.

    While the command runs, ``SIGTERM`` raises :class:`Terminated` in the main thread (the
    previous handler is restored afterwards). Always ends with :class:`SystemExit`.
    """
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="geoseg")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
