"""Options and helpers shared by several subcommands (the only place they are defined)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from geoseg.errors import GeosegError

if TYPE_CHECKING:
    from geoseg.checkpoint import ModelMeta
    from geoseg.settings import RunSettings

__all__ = [
    "DEVICES",
    "INTERRUPT_NOTE",
    "QUIET",
    "DeviceType",
    "MinScore",
    "describe_gsd",
    "device_option",
    "echo",
    "error_line",
    "extent_from_options",
    "fail_on_geoseg_error",
    "inputs_of",
    "is_quiet",
    "model_bands",
    "output_options",
    "parse_bands",
    "parse_classes",
    "progress_disabled",
    "resolve_cli_settings",
    "run_settings_options",
    "set_interrupt_note",
    "show_traceback",
    "split_min_score",
]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)


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


def parse_classes(
    value: str | None,
    known: Sequence[str] | None = None,
    *,
    known_as: str = "known classes",
) -> tuple[str, ...] | None:
    """Parse ``--classes ship,vehicle`` (``None`` = all classes), refusing unknown names.

    The one parser of every command's ``--classes``. With ``known`` (the model's classes, for
    ``predict``/``batch``), a name not among them stops the command before any work:
    :func:`geoseg.config.check_class_names` (one line, status 1, naming the known classes).
    ``count`` and ``map`` learn their known classes from the results they read and apply the
    same rule there (:func:`geoseg.count.count`, :func:`geoseg.viz.web_map`).

    Raises:
        click.BadParameter: no name in ``value`` (e.g. ``","``).
        ConfigError: a name not in ``known``.
    """
    if value is None or value.strip() == "":
        return None
    classes = tuple(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
    if not classes:
        raise click.BadParameter(f"{value!r}: give class names separated by commas")
    if known is not None:
        from geoseg.config import check_class_names

        check_class_names(classes, known, option="--classes", known_as=known_as)
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


#: Key in ``click.Context.meta``: ``-q`` was given (more often than ``-v``).
QUIET = "geoseg.quiet"


def is_quiet() -> bool:
    """Whether ``geoseg -q`` asked for errors only (``False`` outside a command)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(QUIET, False))


def echo(message: str, *, err: bool = False, result: bool = False) -> None:
    """Print a line of a command's output, unless ``-q`` (errors only) was given.

    ``-q`` keeps errors (``Error: ...``, printed by the group) and, with ``result=True``, a
    command's result that has nowhere else to go (``count``'s table without ``-o``,
    ``evaluate``'s without ``--json``). Summaries, ``wrote ...`` notes, warnings and progress
    bars (:func:`progress_disabled`) are left out.
    """
    if result or not is_quiet():
        click.echo(message, err=err)


def progress_disabled(default: bool | None = False) -> bool | None:
    """``tqdm(disable=...)``: ``True`` under ``-q``, else ``default`` (``None``: only on a tty)."""
    return True if is_quiet() else default


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

    Adds ``--config``, ``--bands``, ``--min-score``, ``--tile-size``, ``--overlap``, ``--gsd``,
    ``--no-resample``, ``--regularize`` and ``--regularize-min-iou``; their values feed
    :func:`resolve_cli_settings` (options > preset > checkpoint > defaults).
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
            help="Tile side in pixels the model sees (at the working GSD) [default: the "
            "preset's, else the model's training tile size, else 512].",
        ),
        click.option(
            "--overlap",
            type=click.IntRange(min=0),
            help="Overlap between tiles in pixels (at the working GSD) [default: the preset's, "
            "else a quarter of the tile size].",
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
        click.option(
            "--regularize",
            metavar="CLASSES",
            help="Right-angle outlines for these classes, e.g. --regularize buildings (a "
            "class name or its plural; comma-separated): a rotated rectangle or an "
            "orthogonal polygon along the object's dominant direction, kept where its IoU "
            "with the mask outline reaches --regularize-min-iou [default: the preset's].",
        ),
        click.option(
            "--regularize-min-iou",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            metavar="IOU",
            help="IoU with the mask outline a regularised outline needs to replace it "
            "[default: the preset's, else 0.8].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: ``--device`` values besides ``cuda:N``: :class:`geoseg.predict.Device` (no torch import).
DEVICES = ("auto", "cuda", "mps", "cpu")


class DeviceType(click.ParamType):
    """``--device`` value: ``auto``, ``cuda``, ``cuda:N``, ``mps`` or ``cpu`` (one list for all)."""

    name = "|".join([*DEVICES[:2], "cuda:N", *DEVICES[2:]])

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        kind, sep, index = text.partition(":")
        if text in DEVICES or (kind == "cuda" and sep and index.isdigit()):
            return text
        self.fail(f"{value!r}: choose one of {', '.join(DEVICES)} or cuda:N (a GPU number)")


def device_option(help_text: str) -> Callable[[F], F]:
    """The ``--device`` option of ``predict``, ``batch`` and ``calibrate`` (same values)."""
    return click.option(
        "--device",
        type=DeviceType(),
        default="auto",
        show_default=True,
        help=help_text,
    )


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


def model_bands(bands: tuple[int, ...] | None, n_model: int) -> tuple[int, ...] | None:
    """``--bands`` for a model of ``n_model`` bands: one band is repeated (grey), with a warning.

    ``--bands 1`` for a 3-band RGB model means ``--bands 1,1,1``: the one band fed as every
    input band, as a grey image. Any other count is left as given (a mismatch is refused later
    with the scene and checkpoint named).
    """
    if bands is None or len(bands) != 1 or n_model <= 1:
        return bands
    repeated = bands * n_model
    logger.warning(
        "--bands %d: the model takes %d bands; band %d is fed as each of them (--bands %s), "
        "as a grey image",
        bands[0],
        n_model,
        bands[0],
        ",".join(map(str, repeated)),
    )
    return repeated


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
    regularize: str | None = None,
    regularize_min_iou: float | None = None,
    checkpoint: str | None = None,
    classes: str | None = None,
    class_agnostic: bool = False,
    aoi: str | None = None,
    bbox: str | None = None,
    bbox_crs: str | None = None,
    geometry: str | None = None,
    backend: str | None = None,
    prescreen: float | None = None,
) -> RunSettings:
    """The run settings of ``predict``/``batch`` from their options and the checkpoint.

    One call of :func:`geoseg.settings.resolve` (options > preset > checkpoint > defaults),
    after the checks that need only the checkpoint's sidecar, so that a mistake fails before
    any scene is read, the model loaded or a progress bar drawn: a ``--min-score CLASS=S``
    or a ``--classes`` name for a class the model lacks
    (:func:`geoseg.config.check_class_names`). ``--bands 1`` for a model of several bands is
    repeated (:func:`model_bands`). ``--aoi`` is read here (:func:`extent_from_options`).

    Raises:
        click.UsageError: ``--gsd`` together with ``--no-resample``; ``--aoi`` with ``--bbox``.
        ConfigError: a ``--min-score`` or ``--classes`` class that is not one of the model's.
        LabelError: an unreadable AOI.
    """
    if gsd is not None and no_resample:
        raise click.UsageError("--gsd and --no-resample contradict each other; give one")
    from geoseg.config import check_class_names
    from geoseg.settings import resolve

    global_score, class_scores = split_min_score(min_score)
    where = f"the classes of the checkpoint {checkpoint}" if checkpoint else "the model's classes"
    check_class_names(class_scores, meta.classes, option="--min-score", known_as=where)
    kept = parse_classes(classes)
    if kept is not None:
        kept = check_class_names(kept, meta.classes, option="--classes", known_as=where)
    return resolve(
        meta,
        config,
        bands=model_bands(parse_bands(bands), meta.in_channels),
        tile_size=tile_size,
        overlap=overlap,
        gsd=gsd,
        resample=False if no_resample else None,
        min_score=global_score,
        class_min_score=class_scores,
        batch_size=batch_size,
        device=device,
        norm=norm,
        regularize=parse_classes(regularize),
        regularize_min_iou=regularize_min_iou,
        classes=kept,
        class_agnostic=True if class_agnostic else None,
        extent=extent_from_options(aoi, bbox, bbox_crs),
        geometry=geometry,
        backend=backend,
        prescreen=prescreen,
    )


def output_options(func: F) -> F:
    """What ``predict`` and ``batch`` keep and write: classes, extent, geometry.

    Adds ``--classes``, ``--class-agnostic``, ``--aoi``, ``--bbox``, ``--bbox-crs`` and
    ``--geometry``; their values feed :func:`resolve_cli_settings`.
    """
    from geoseg.settings import OutputGeometry

    options = [
        click.option(
            "--classes",
            metavar="A,B",
            help="Keep only objects of these classes (the model's class names) [default: all].",
        ),
        click.option(
            "--class-agnostic",
            is_flag=True,
            help="Merge across classes: one object outlined as two classes becomes one, with "
            "the best-scoring class [default: the preset's, else class by class].",
        ),
        click.option(
            "--aoi",
            metavar="FILE",
            help="Predict only inside these polygons (any vector file, any CRS): tiles that "
            "meet them are read, objects whose centroid lies inside are kept (as geoseg count "
            "--aoi counts them).",
        ),
        click.option(
            "--bbox",
            metavar="MINX,MINY,MAXX,MAXY",
            help="Predict only inside this box, in the scene's CRS (or --bbox-crs); a "
            "leading minus needs '=': --bbox=-9.2,38.6,-9.1,38.7.",
        ),
        click.option(
            "--bbox-crs",
            metavar="CRS",
            help="CRS of --bbox, e.g. EPSG:4326 for lon/lat [default: each scene's CRS].",
        ),
        click.option(
            "--geometry",
            type=click.Choice([g.value for g in OutputGeometry]),
            default=OutputGeometry.MASK.value,
            show_default=True,
            help="Write each object as its outline (one Polygon), its pixel box, or its "
            "centroid point (the point geoseg count places it by).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def extent_from_options(aoi: str | None, bbox: str | None, bbox_crs: str | None) -> Any:
    """The :class:`geoseg.extent.Extent` of ``--aoi`` / ``--bbox`` (``--bbox-crs``), or ``None``.

    Raises:
        click.UsageError: both ``--aoi`` and ``--bbox``, or ``--bbox-crs`` without ``--bbox``.
        LabelError: an unreadable AOI file.
        ConfigError: a malformed box or an unknown CRS.
    """
    from geoseg.extent import bbox_extent, parse_bbox, read_aoi

    if aoi is not None and bbox is not None:
        raise click.UsageError("--aoi and --bbox both set the processing extent; give one")
    if bbox_crs is not None and bbox is None:
        raise click.UsageError("--bbox-crs is the CRS of --bbox; give --bbox too")
    if aoi is not None:
        return read_aoi(aoi)
    if bbox is not None:
        return bbox_extent(parse_bbox(bbox), bbox_crs)
    return None
