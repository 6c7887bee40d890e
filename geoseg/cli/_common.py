"""Options and helpers shared by several subcommands (the only place they are defined)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from geoseg.errors import GeosegError

if TYPE_CHECKING:
    from geoseg.checkpoint import ModelMeta
    from geoseg.settings import RunSettings

__all__ = [
    "INTERRUPT_NOTE",
    "MinScore",
    "describe_gsd",
    "error_line",
    "fail_on_geoseg_error",
    "inputs_of",
    "parse_bands",
    "parse_classes",
    "resolve_cli_settings",
    "run_settings_options",
    "set_interrupt_note",
    "show_traceback",
    "split_min_score",
]

F = TypeVar("F", bound=Callable[..., Any])


def parse_bands(value: str | None) -> tuple[int, ...] | None:
    """Parse a ``--bands 3,2,1`` option into 1-based band indexes (``None`` = all bands)."""
    if value is None or value == "":
        return None
    try:
        bands = tuple(int(v) for v in value.split(","))
    except ValueError as err:
        raise click.BadParameter(
            f"{value!r}: give 1-based band numbers separated by commas, e.g. 3,2,1"
        ) from err
    if any(b < 1 for b in bands):
        raise click.BadParameter(f"{value!r}: band numbers start at 1")
    return bands


class MinScore(click.ParamType):
    """``--min-score`` value: ``S`` (every class) or ``CLASS=S`` (one class), S in [0, 1]."""

    name = "S|CLASS=S"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | tuple[str, float]:
        if isinstance(value, float | tuple):
            return value
        text = str(value).strip()
        name, sep, number = text.rpartition("=")
        try:
            score = float(number)
        except ValueError:
            self.fail(f"{text!r}: give a score such as 0.4, or CLASS=SCORE such as vehicle=0.3")
        if not 0.0 <= score <= 1.0:
            self.fail(f"{text!r}: scores are in [0, 1]")
        if sep:
            if not name.strip():
                self.fail(f"{text!r}: the class name before '=' is empty")
            return (name.strip(), score)
        return score


def split_min_score(
    values: tuple[float | tuple[str, float], ...] | None,
) -> tuple[float | None, dict[str, float]]:
    """``--min-score`` values -> ``(global score or None, {class: score})``; the last wins."""
    global_score: float | None = None
    per_class: dict[str, float] = {}
    for value in values or ():
        if isinstance(value, tuple):
            per_class[value[0]] = value[1]
        else:
            global_score = value
    return global_score, per_class


def parse_classes(value: str | None) -> tuple[str, ...] | None:
    """Parse ``--classes ship,vehicle`` (``None`` = all classes)."""
    if value is None or value.strip() == "":
        return None
    classes = tuple(c.strip() for c in value.split(",") if c.strip())
    if not classes:
        raise click.BadParameter(f"{value!r}: give class names separated by commas")
    return classes


def inputs_of(role: str, paths: Sequence[Path]) -> list[tuple[str, Path]]:
    """``(role, path)`` for each input path; a folder stands for itself and the files in it.

    For :func:`geoseg.io.check_no_overwrite` on commands that read result folders (``count``,
    ``map``): an output written into such a folder must not replace a result read from it.
    """
    pairs: list[tuple[str, Path]] = []
    for path in paths:
        pairs.append((role, path))
        if path.is_dir():
            pairs += [(role, p) for p in sorted(path.iterdir()) if p.is_file()]
    return pairs


#: Key in ``click.Context.meta`` of the line printed when a command is interrupted.
INTERRUPT_NOTE = "geoseg.interrupt_note"


def set_interrupt_note(note: str) -> None:
    """Say what an interrupt of the running command keeps and how to resume it.

    Printed after ``interrupted (SIGINT):`` when the command ends by Ctrl-C or ``SIGTERM``.
    """
    click.get_current_context().meta[INTERRUPT_NOTE] = note


def error_line(err: BaseException) -> str:
    """One line for an error that ends a command: the message, naming the file at fault.

    An ``OSError`` from the system reads ``PATH: reason`` (``[Errno 13] Permission denied:
    'x'`` becomes ``x: permission denied``); a ``MemoryError`` says what to make smaller.
    """
    if isinstance(err, GeosegError):
        text = str(err)
    elif isinstance(err, MemoryError):
        text = (
            f"out of memory ({err or 'MemoryError'}); use a smaller --tile-size or "
            "--batch-size, or fewer --workers"
        )
    elif isinstance(err, OSError) and err.strerror:
        where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
        text = f"{where}: {err.strerror.lower()}" if where else err.strerror
    else:
        text = str(err) or type(err).__name__
    return text


def show_traceback() -> None:
    """Print the current exception's traceback to stderr when ``-v`` (or more) was given."""
    import logging
    import traceback

    if logging.getLogger("geoseg").isEnabledFor(logging.INFO):
        click.echo(traceback.format_exc().rstrip(), err=True)


def fail_on_geoseg_error(func: F) -> F:
    """Turn a :class:`GeosegError`, an ``OSError`` or a ``MemoryError`` into one clean line.

    ``Error: ...`` (see :func:`error_line`) and exit status 1; ``-v`` also prints the
    traceback. Interrupts are left to the ``geoseg`` group (exit 130/143).
    """
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (GeosegError, OSError, MemoryError) as err:
            show_traceback()
            raise click.ClickException(error_line(err)) from err

    return wrapper  # type: ignore[return-value]


def run_settings_options(func: F) -> F:
    """The options that choose how a scene is predicted, shared by ``predict`` and ``batch``.

    Adds ``--config``, ``--bands``, ``--min-score``, ``--tile-size``, ``--overlap``, ``--gsd``
    and ``--no-resample``; their values feed :func:`resolve_cli_settings` (options > preset >
    checkpoint > defaults).
    """
    options = [
        click.option(
            "--config", "config", metavar="C", help="Preset name or YAML (tiling, stitching)."
        ),
        click.option("--bands", metavar="B", help="1-based bands in model order, e.g. 3,2,1."),
        click.option(
            "--min-score",
            type=MinScore(),
            multiple=True,
            help="Keep detections with score >= S; CLASS=S sets one class (repeatable), e.g. "
            "--min-score 0.5 --min-score vehicle=0.3 [default: preset, else the model's "
            "per-class scores, else 0.5].",
        ),
        click.option(
            "--tile-size",
            type=click.IntRange(min=16),
            help="Tile side in pixels the model sees (at the working GSD).",
        ),
        click.option(
            "--overlap",
            type=click.IntRange(min=0),
            help="Overlap between tiles in pixels (at the working GSD).",
        ),
        click.option(
            "--gsd",
            type=click.FloatRange(min=0.0, min_open=True),
            metavar="METRES",
            help="Read scenes at this ground resolution (each tile resampled while read; "
            "outputs stay in the scene's pixels and CRS) [default: the model's GSD; scenes "
            "within 10 % of it are read as they are].",
        ),
        click.option(
            "--no-resample",
            is_flag=True,
            help="Read scenes at their own ground resolution, whatever the model's.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def describe_gsd(settings: RunSettings, model_gsd: float | None) -> str:
    """One line on the GSD scenes are read at, for a command's stderr."""
    from geoseg.raster import GSD_TOLERANCE

    if not settings.resample:
        return "working GSD: each scene's own (--no-resample)"
    if settings.gsd is not None:
        target = f"{settings.gsd:g} m (--gsd)"
    elif model_gsd is not None:
        target = f"the model's, {model_gsd:g} m"
    else:
        return "working GSD: each scene's own (the model's GSD is unknown)"
    return (
        f"working GSD: {target}; scenes more than {GSD_TOLERANCE:.0%} away are resampled "
        "tile by tile"
    )


def resolve_cli_settings(
    meta: ModelMeta,
    *,
    config: str | None,
    bands: str | None,
    min_score: tuple[float | tuple[str, float], ...],
    tile_size: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    norm: str,
    gsd: float | None = None,
    no_resample: bool = False,
    backend: str | None = None,
    prescreen: float | None = None,
) -> RunSettings:
    """The run settings of ``predict``/``batch`` from their options and the checkpoint.

    One call of :func:`geoseg.settings.resolve` (options > preset > checkpoint > defaults).

    Raises:
        click.UsageError: ``--gsd`` together with ``--no-resample``.
    """
    if gsd is not None and no_resample:
        raise click.UsageError("--gsd and --no-resample contradict each other; give one")
    from geoseg.settings import resolve

    global_score, class_scores = split_min_score(min_score)
    return resolve(
        meta,
        config,
        bands=parse_bands(bands),
        tile_size=tile_size,
        overlap=overlap,
        gsd=gsd,
        resample=False if no_resample else None,
        min_score=global_score,
        class_min_score=class_scores,
        batch_size=batch_size,
        device=device,
        norm=norm,
        backend=backend,
        prescreen=prescreen,
    )
