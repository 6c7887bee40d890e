"""``geoseg evaluate``: score predicted polygons against truth polygons, per class."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli._common import echo, fail_on_geoseg_error

__all__ = ["command"]


@click.command("evaluate")
@click.argument("pred", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("truth", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the metrics as JSON (with a per_class mapping).",
)
@click.option(
    "--iou",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    help="IoU at which a prediction matches a truth polygon (precision/recall/F1).",
)
@click.option("--class-column", default="class", show_default=True, help="Class name column.")
@click.option("--score-column", default="score", show_default=True, help="Confidence column.")
@click.option(
    "--min-score",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Ignore predictions below this score.",
)
@fail_on_geoseg_error
def command(
    pred: Path,
    truth: Path,
    json_out: Path | None,
    iou: float,
    class_column: str,
    score_column: str,
    min_score: float,
) -> None:
    """Compare PRED polygons with TRUTH polygons (any vector format) in TRUTH's CRS.

    Matching is one-to-one and greedy by score (SpaceNet/COCO rule). Prints per-class
    precision, recall, F1 at --iou, mask AP50 and AP50:95, mean IoU and count error.
    """
    from geoseg.evaluate import evaluate, format_table, write_json
    from geoseg.io import check_no_overwrite

    check_no_overwrite([("PRED", pred), ("TRUTH", truth)], [("--json", json_out)])
    result = evaluate(
        pred,
        truth,
        iou_threshold=iou,
        class_column=class_column,
        score_column=score_column,
        min_score=min_score,
    )
    echo(format_table(result), result=json_out is None)  # -q: the result, unless in --json
    if json_out is not None:
        write_json(result, json_out)
        echo(f"metrics written to {json_out}", err=True)
