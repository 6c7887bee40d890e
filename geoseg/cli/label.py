"""``geoseg label``: a model's predictions as labels to review in QGIS, least certain first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg.cli._common import echo, fail_on_geoseg_error, progress_disabled
from geoseg.cli.predict import load_for_scene, predict_options

if TYPE_CHECKING:
    from geoseg.settings import RunSettings

__all__ = ["command"]


@click.command("label")
@click.argument("scene", metavar="SCENE")
@click.option(
    "-m",
    "--model",
    required=True,
    metavar="MODEL",
    help="Checkpoint NAME.safetensors (with its NAME.json sidecar).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pre-labels GeoPackage (.gpkg); its QGIS style is written beside it (.qml).",
)
@click.option(
    "--candidates",
    type=click.FloatRange(0.0, 1.0),
    metavar="S",
    help="Also keep detections down to score S, below the class thresholds, as candidates "
    "to accept or delete (they sort first: closest to the threshold).",
)
@predict_options
@fail_on_geoseg_error
def command(
    scene: str,
    model: str,
    output: Path,
    candidates: float | None,
    workers: int,
    **options: Any,
) -> None:
    """Pre-label SCENE with MODEL: predictions as editable labels to review in QGIS.

    Writes OUTPUT (layer `prelabels`) with columns class, score, status (todo), margin
    (|score - the class's score threshold|) and pred_id, sorted least certain first (smallest
    margin), and OUTPUT.qml, a QGIS style: colour per class, dashed while todo, solid once ok.

    \b
    In QGIS: fix outlines, delete false positives, draw missed objects, and set status to ok
    on every feature you checked (and on those you drew). Optionally draw the area you went
    through as a polygon layer `reviewed_area` in the same GeoPackage. Then
        geoseg chips SCENE OUTPUT -o chips/   (only ok features, only the reviewed area)
        geoseg review-report ORIGINAL_COPY OUTPUT   (what the review changed)
    Keep a copy of OUTPUT before editing for the report.
    """  # noqa: D301 (click needs a real \b before a verbatim block)
    from tqdm import tqdm

    from geoseg.errors import ExportError
    from geoseg.pipeline import run_scene, score_thresholds
    from geoseg.review import prelabels, qml_path, write_prelabels

    if output.suffix.lower() != ".gpkg":
        raise ExportError(
            f"{output}: pre-labels are written as a GeoPackage; give a .gpkg name (QGIS edits it "
            "in place and it can hold a reviewed_area layer)"
        )
    thresholds: dict[str, float] = {}

    def adjust(settings: RunSettings, classes: tuple[str, ...]) -> RunSettings:
        thr = score_thresholds(classes, settings.min_score, settings.class_min_score)
        thresholds.update({c: float(t) for c, t in zip(classes, thr, strict=True)})
        if candidates is None:
            return settings
        lower = {c: min(candidates, float(t)) for c, t in zip(classes, thr, strict=True)}
        return settings.replace(min_score=min(lower.values()), class_min_score=lower)

    settings, predictor = load_for_scene(
        scene,
        model,
        output=output,
        other_outputs=[("-o (style)", qml_path(output))],
        options=options,
        adjust=adjust,
    )
    with tqdm(
        total=None, unit="tile", desc=Path(scene).name, leave=False, disable=progress_disabled()
    ) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = run_scene(scene, predictor, settings, num_workers=workers, progress=progress)
    labels = prelabels(result.gdf, thresholds=thresholds)
    files = write_prelabels(labels, output, classes=tuple(predictor.classes))
    for name, n in result.counts.items():
        echo(f"{name:<12} {n:>7d}")
    echo(
        f"wrote {files.n} pre-labels (status todo, least certain first) to {files.path} and "
        f"the QGIS style {files.style}",
        err=True,
    )
