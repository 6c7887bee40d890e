"""``geoseg train``: train or fine-tune a Mask R-CNN on chip folders (a YAML run file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from geoseg.cli._common import (
    DeviceType,
    echo,
    fail_on_geoseg_error,
    is_quiet,
    progress_disabled,
    set_interrupt_note,
)

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
@click.option(
    "--train-chips",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Chip folder, or a folder of chip folders (repeatable); replaces train_chips.",
)
@click.option(
    "--val-chips",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Validation chip folder, or a folder of chip folders (repeatable); replaces val_chips.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the run file's epochs.")
@click.option("--max-steps", type=click.IntRange(min=0), help="Override max_steps (0 = none).")
@click.option("--device", type=DeviceType(), help="Override the run file's device.")
@click.option(
    "--validate-every",
    type=click.IntRange(min=0),
    help="Validate every N steps (0 = each epoch); overrides the run file.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    help="Stop after N validations without improvement (0 = never); overrides the run file.",
)
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
    train_chips: tuple[Path, ...],
    val_chips: tuple[Path, ...],
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    validate_every: int | None,
    patience: int | None,
    resume: bool,
    no_progress: bool,
) -> None:
    """Train a Mask R-CNN from the run file CONFIG (YAML).

    CONFIG names the chip folders (written by `geoseg chips`; a folder of chip folders stands
    for all of them), the preset, the schedule and the output folder; the schema is
    geoseg.config.TrainConfig. Example:

    \b
        train_chips: [chips/train]     # chips/train/scene_a, chips/train/scene_b...
        val_chips: [chips/scene_c]
        preset: ships                  # or a preset YAML path
        output_dir: runs/ships
        epochs: 12
        batch_size: 4
        lr: 0.02
        patience: 3                    # stop after 3 validations without progress

    Every step is appended to OUTPUT_DIR/steps.csv, every validation (COCO AP, F1 per class)
    to metrics.csv; per-class score thresholds tuned on the validation chips are stored with
    the checkpoints. Ends with a summary of the run.
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
    if train_chips:
        overrides["train_chips"] = tuple(train_chips)
    if val_chips:
        overrides["val_chips"] = tuple(val_chips)
    if validate_every is not None:
        overrides["validate_every"] = validate_every
    if patience is not None:
        overrides["patience"] = patience
    if overrides:
        config = dataclasses.replace(config, **overrides)

    bar = tqdm(total=None, unit="step", disable=progress_disabled(no_progress), dynamic_ncols=True)

    def on_progress(p: TrainProgress) -> None:
        if bar.total != p.total_steps:
            bar.total = p.total_steps
        if p.phase == "train":
            bar.n = p.step
            bar.set_postfix(epoch=p.epoch, loss=f"{p.loss:.3f}", lr=f"{p.lr:.2e}", refresh=False)
            bar.refresh()
        elif p.phase == "validate":
            keys = ("segm_ap", "segm_ap50", "bbox_ap", "f1", "f1_tuned")
            metrics = " ".join(f"{k}={p.metrics[k]:.3f}" for k in keys if k in p.metrics)
            if not is_quiet():
                bar.write(f"step {p.step} (epoch {p.epoch}): {metrics}")

    set_interrupt_note(
        f"{config.output_dir} keeps the latest checkpoint (last.safetensors) and steps.csv; "
        "rerun the same command to resume from it (--no-resume starts afresh)"
    )
    try:
        result = train(config, progress=on_progress, resume=resume)
    finally:
        bar.close()
    echo(result.summary())
