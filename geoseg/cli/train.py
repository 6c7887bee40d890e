"""``geoseg train``: train or fine-tune a Mask R-CNN on chip folders (a YAML run file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from geoseg.cli._common import fail_on_geoseg_error

__all__ = ["command"]


@click.command("train")
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "init_checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fine-tune from this geoseg checkpoint (new class heads when the classes differ).",
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Override the run file's output_dir.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the run file's epochs.")
@click.option("--max-steps", type=click.IntRange(min=0), help="Override max_steps (0 = none).")
@click.option("--device", help="Override device: auto, cpu, cuda, cuda:1.")
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue from OUTPUT_DIR/last_state.* when present, or start afresh.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@fail_on_geoseg_error
def command(
    config_path: Path,
    init_checkpoint: Path | None,
    output_dir: Path | None,
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    resume: bool,
    no_progress: bool,
) -> None:
    """Train a Mask R-CNN from the run file CONFIG (YAML).

    CONFIG names the chip folders (written by `geoseg chips`), the preset, the schedule and the
    output folder; the schema is geoseg.config.TrainConfig. Example:

    \b
        train_chips: [chips/scene_a, chips/scene_b]
        val_chips: [chips/scene_c]
        preset: ships            # or a preset YAML path
        output_dir: runs/ships
        epochs: 12
        batch_size: 4
        lr: 0.02
    """  # noqa: D301 (click needs a real \b before a verbatim block)
    from tqdm import tqdm

    from geoseg.config import load_train_config
    from geoseg.train import TrainProgress, train

    config = load_train_config(config_path)
    overrides: dict[str, Any] = {}
    if init_checkpoint is not None:
        overrides["init_checkpoint"] = init_checkpoint
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    if epochs is not None:
        overrides["epochs"] = epochs
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if device is not None:
        overrides["device"] = device
    if overrides:
        config = dataclasses.replace(config, **overrides)

    bar = tqdm(total=None, unit="step", disable=no_progress, dynamic_ncols=True)

    def on_progress(p: TrainProgress) -> None:
        if bar.total != p.total_steps:
            bar.total = p.total_steps
        if p.phase == "train":
            bar.n = p.step
            bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.3f}", lr=f"{p.lr:.2e}", refresh=False)
            bar.refresh()
        elif p.phase == "validate":
            metrics = " ".join(f"{k}={v:.3f}" for k, v in p.metrics.items())
            bar.write(f"epoch {p.epoch}: {metrics}")

    try:
        result = train(config, progress=on_progress, resume=resume)
    finally:
        bar.close()
    click.echo(f"trained {result.steps} steps; last checkpoint {result.last_checkpoint}")
    if result.best_checkpoint is not None:
        click.echo(f"best checkpoint {result.best_checkpoint}")
