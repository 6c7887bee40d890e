"""``geoseg review-report``: what a review of pre-labels changed, and the model's score on it."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error

__all__ = ["command"]


@click.command("review-report")
@click.argument("original", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("edited", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON.",
)
@click.option(
    "--unchanged-iou",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.99,
    show_default=True,
    help="Outline IoU at or above which a kept prediction counts as unchanged (else moved).",
)
@click.option(
    "--match-iou",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="Outline IoU at or above which a kept prediction is a true positive.",
)
@fail_on_geoseg_error
def command(
    original: Path,
    edited: Path,
    json_path: Path | None,
    unchanged_iou: float,
    match_iou: float,
) -> None:
    """Compare pre-labels ORIGINAL (from `geoseg label`) with EDITED (the same after review).

    Per class: predictions kept unchanged, moved (outline edited), relabelled, deleted or
    still todo, and objects added. Read as a measure of the model on the reviewed part of
    the scene: precision = kept / reviewed predictions, recall = kept / reviewed objects.
    Predictions are followed by their pred_id.
    """
    from geoseg.io import atomic_write_json, check_no_overwrite
    from geoseg.review import format_report, review_report

    check_no_overwrite([("ORIGINAL", original), ("EDITED", edited)], [("--json", json_path)])
    report = review_report(original, edited, unchanged_iou=unchanged_iou, match_iou=match_iou)
    echo(format_report(report), result=json_path is None)
    if json_path is not None:
        atomic_write_json(json_path, report.to_dict())
        echo(f"wrote {json_path}", err=True)
