"""Safe checkpoints: ``NAME.safetensors`` weights + a ``NAME.json`` sidecar (:class:`ModelMeta`).

A checkpoint is two files. ``NAME.json`` records what the weights are for: class names (model
label ``k``, 1-based, is ``classes[k - 1]``), source bands in model-input order (``len(bands)``
= C of the ``[C, H, W]`` input), the scene-wide normalisation statistics, tile size in pixels,
ground sample distance in metres, the full :class:`~geoseg.config.ModelConfig`, geoseg version,
provenance, metrics, recommended per-class score thresholds, and the SHA-256 of the weights.
``NAME.safetensors`` holds only tensors; loading never unpickles anything (a pickle renamed
``.safetensors`` is refused before any byte is interpreted).

Reading the sidecar (:func:`read_meta`, :func:`check_compatible`) needs only the core install:
this module imports neither torch nor safetensors at import time. Reading or writing weights
(:func:`load_checkpoint`, :func:`save_checkpoint`, :func:`read_safetensors`,
:func:`load_state_dict_file`) imports them when called and needs the ``ml`` extra
(``pip install 'geoseg[ml]'``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._extras import require_extra
from geoseg._version import __version__
from geoseg.config import ModelConfig, check_class_scores, config_from_dict, config_to_dict
from geoseg.errors import BandError, CheckpointError, ConfigError
from geoseg.io import atomic_write_bytes, atomic_write_json
from geoseg.types import NormStats

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
    from torchvision.models.detection import MaskRCNN

__all__ = [
    "ModelMeta",
    "check_compatible",
    "checkpoint_paths",
    "load_checkpoint",
    "load_state_dict_file",
    "read_meta",
    "read_safetensors",
    "save_checkpoint",
    "set_score_thresholds",
    "write_safetensors",
]

logger = logging.getLogger(__name__)

#: Largest safetensors JSON header accepted (real headers are a few hundred kB at most).
_MAX_HEADER = 64 * 1024 * 1024
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    """What a checkpoint's JSON sidecar records, next to the weights.

    Attributes:
        classes: class names; model label ``k`` (1-based) is ``classes[k - 1]``.
        bands: 1-based source-raster bands, in model-input order (``len(bands)`` = C).
        norm_stats: the normalisation used in training (apply the *scene's* own statistics
            at prediction time when the imagery differs; these are the defaults).
        tile_size: chip/tile side the model was trained on, in pixels.
        gsd: ground sample distance of the training imagery in metres, if known.
        config: the :class:`~geoseg.config.ModelConfig` as a dict.
        geoseg_version: version that wrote the checkpoint.
        trained_on: provenance (chip folders, scene seeds, counts...).
        metrics: validation metrics at save time (e.g. ``{"segm_ap": 0.61}``).
        score_thresholds: recommended per-class score thresholds (class -> score), e.g.
            tuned on validation scenes; ``geoseg predict``/``batch`` use them unless a preset
            or ``--min-score`` says otherwise. Empty: the global default applies.
        step: optimiser steps taken when saved.
        created: UTC ISO time of saving.
    """

    classes: tuple[str, ...]
    bands: tuple[int, ...]
    norm_stats: NormStats | None
    tile_size: int
    gsd: float | None
    config: Mapping[str, Any]
    geoseg_version: str = __version__
    trained_on: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    score_thresholds: Mapping[str, float] = field(default_factory=dict)
    step: int = 0
    created: str = ""

    @property
    def in_channels(self) -> int:
        """Number of input bands the model expects."""
        return len(self.bands)

    @property
    def model_config(self) -> ModelConfig:
        """The architecture as a validated :class:`~geoseg.config.ModelConfig`."""
        return config_from_dict(ModelConfig, self.config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the sidecar's content, without integrity fields)."""
        return {
            "format": "geoseg-checkpoint",
            "format_version": _FORMAT_VERSION,
            "classes": list(self.classes),
            "bands": list(self.bands),
            "norm_stats": None if self.norm_stats is None else self.norm_stats.to_dict(),
            "tile_size": int(self.tile_size),
            "gsd": None if self.gsd is None else float(self.gsd),
            "config": config_to_dict(dict(self.config)),
            "geoseg_version": self.geoseg_version,
            "trained_on": config_to_dict(dict(self.trained_on)),
            "metrics": config_to_dict(dict(self.metrics)),
            "score_thresholds": {str(k): float(v) for k, v in self.score_thresholds.items()},
            "step": int(self.step),
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError`` on malformed input."""
        ns = data.get("norm_stats")
        gsd = data.get("gsd")
        return cls(
            classes=tuple(str(c) for c in data["classes"]),
            bands=tuple(int(b) for b in data["bands"]),
            norm_stats=None if ns is None else NormStats.from_dict(ns),
            tile_size=int(data["tile_size"]),
            gsd=None if gsd is None else float(gsd),
            config=dict(data["config"]),
            geoseg_version=str(data.get("geoseg_version", "unknown")),
            trained_on=dict(data.get("trained_on", {})),
            metrics=dict(data.get("metrics", {})),
            score_thresholds=check_class_scores(
                data.get("score_thresholds") or {}, "score_thresholds"
            ),
            step=int(data.get("step", 0)),
            created=str(data.get("created", "")),
        )


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for a checkpoint path given with any suffix or none."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def write_safetensors(path: Path, tensors: Mapping[str, Tensor]) -> str:
    """Write ``tensors`` atomically as safetensors; return the file's SHA-256 (hex)."""
    require_extra("ml", "writing safetensors weights")
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file after checking its header, never unpickling anything.

    Raises:
        CheckpointError: missing file, or a file that is not safetensors (e.g. a pickle
            renamed ``.safetensors``); it is refused before any byte is interpreted as code.
        MissingExtraError: torch or safetensors is not installed (the ``ml`` extra).
    """
    require_extra("ml", "reading safetensors weights")
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the weights file ({err})") from err
    _check_safetensors_header(path, data)
    try:
        tensors: dict[str, Tensor] = load(data)
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt safetensors file ({err})") from err
    return tensors


def _check_safetensors_header(path: Path, data: bytes) -> None:
    hint = ""
    if data[:1] == b"\x80" or data[:2] == b"PK":
        hint = " It looks like a pickle/torch.save file, which geoseg never loads (unsafe)."
    if len(data) < 10:
        raise CheckpointError(f"{path}: not a safetensors file (too short).{hint}")
    n = int.from_bytes(data[:8], "little")
    if n > min(_MAX_HEADER, len(data) - 8) or data[8:9] != b"{":
        raise CheckpointError(
            f"{path}: not a safetensors file.{hint} Convert trusted weights with "
            "safetensors.torch.save_file(state_dict, path)."
        )


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file: ``.safetensors``, or a ``.pth``/``.pt`` state dict.

    ``.pth`` files are read with ``torch.load(weights_only=True)``: torch's restricted
    unpickler that only rebuilds tensors and containers and refuses arbitrary code. A full
    checkpoint dict with a ``"model"``/``"state_dict"`` entry is unwrapped.

    Raises:
        CheckpointError: missing, unreadable or unsafe file.
        MissingExtraError: torch is not installed (the ``ml`` extra).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    require_extra("ml", "reading a .pth weights file")
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come as many types
        raise CheckpointError(
            f"{path}: cannot read it as a plain state dict ({err}); give a .safetensors file "
            "or a .pth holding only tensors"
        ) from err
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: ModelMeta, *, half: bool = False
) -> Path:
    """Save ``model``'s weights and ``meta`` as ``PATH.safetensors`` + ``PATH.json``.

    Both files are written atomically (temporary file, then ``os.replace``); the sidecar is
    written last and records the weights' SHA-256, so a half-replaced pair is detected.

    Args:
        path: checkpoint path, with or without the ``.safetensors`` suffix.
        model: a model from :func:`geoseg.models.build_model`.
        meta: the sidecar content; ``created`` is filled in when empty.
        half: store floating-point tensors as float16 (half the file size, for distributing
            a model; :func:`load_checkpoint` casts them back to the model's float32).
            Training checkpoints keep full precision.

    Returns:
        The path of the ``.safetensors`` file.
    """
    weights, sidecar = checkpoint_paths(path)
    state = model.state_dict()
    if half:
        state = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())
    digest = write_safetensors(weights, state)
    info = meta.to_dict()
    if not info["created"]:
        info["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["weights_file"] = weights.name
    info["weights_sha256"] = digest
    text = json.dumps(info, indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(sidecar, (text + "\n").encode("utf-8"))
    logger.info("saved checkpoint %s (%d tensors)", weights, len(state))
    return weights


def read_meta(path: str | Path) -> ModelMeta:
    """Read only the JSON sidecar of a checkpoint (no torch needed).

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``; both files must exist.

    Raises:
        CheckpointError: missing or malformed sidecar.
    """
    meta, _ = _read_sidecar(path)
    return meta


def _read_sidecar(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    weights, sidecar = checkpoint_paths(path)
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: checkpoint weights not found (a geoseg checkpoint is NAME.safetensors "
            "+ NAME.json)"
        )
    if not sidecar.is_file():
        raise CheckpointError(
            f"{sidecar}: the checkpoint's JSON sidecar is missing; it must sit next to "
            f"{weights.name} with the same name"
        )
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
        meta = ModelMeta.from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{sidecar}: malformed checkpoint sidecar ({err!r})") from err
    _check_meta(meta, sidecar)
    return meta, raw


def _check_meta(meta: ModelMeta, sidecar: Path) -> None:
    """Refuse a sidecar whose values no model can have (no class, no band, duplicates...).

    Raises:
        CheckpointError: naming the sidecar and the value at fault.
    """
    problem = ""
    if not meta.classes:
        problem = "declares no class (classes: [])"
    elif len(set(meta.classes)) != len(meta.classes):
        problem = f"repeats a class name ({list(meta.classes)})"
    elif not meta.bands or any(b < 1 for b in meta.bands):
        problem = f"declares no usable band (bands: {list(meta.bands)}; 1-based)"
    elif meta.tile_size < 1:
        problem = f"declares tile_size {meta.tile_size}"
    elif meta.gsd is not None and not meta.gsd > 0:
        problem = f"declares gsd {meta.gsd}"
    if problem:
        raise CheckpointError(
            f"{sidecar}: the checkpoint {problem}; it cannot be a trained geoseg model: use "
            "the sidecar written with its weights, or retrain"
        )


def set_score_thresholds(
    path: str | Path,
    thresholds: Mapping[str, float],
    *,
    metrics: Mapping[str, Any] | None = None,
) -> ModelMeta:
    """Replace the recommended per-class score thresholds in a checkpoint's sidecar.

    Only the JSON sidecar is rewritten (atomically, in the format :func:`save_checkpoint`
    writes); the weights and their SHA-256 fields are untouched, so :func:`load_checkpoint`
    still verifies the pair. No torch needed.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        thresholds: class name -> score in [0, 1]; replaces the whole ``score_thresholds``
            block (merge with ``read_meta(path).score_thresholds`` first to keep others).
        metrics: entries merged into the sidecar's ``metrics`` (e.g. a ``calibration``
            record of how the thresholds were chosen).

    Returns:
        The sidecar's new content.

    Raises:
        CheckpointError: a missing or malformed checkpoint, or a class it does not have.
        ConfigError: a threshold that is not a score in [0, 1].
    """
    meta, raw = _read_sidecar(path)
    scores = check_class_scores(thresholds, "score_thresholds")
    unknown = sorted(set(scores) - set(meta.classes))
    if unknown:
        raise CheckpointError(
            f"{path}: score thresholds for class(es) {', '.join(unknown)} the checkpoint does "
            f"not predict (its classes: {', '.join(meta.classes)})"
        )
    raw["score_thresholds"] = scores
    if metrics:
        raw["metrics"] = config_to_dict({**dict(raw.get("metrics") or {}), **dict(metrics)})
    _, sidecar = checkpoint_paths(path)
    atomic_write_json(sidecar, raw, indent=2, allow_nan=False)
    logger.info("%s: score thresholds %s", sidecar, scores)
    return ModelMeta.from_dict(raw)


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[MaskRCNN, ModelMeta]:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling anything.

    Args:
        path: ``NAME``, ``NAME.safetensors`` or ``NAME.json``.
        device: where to put the model.

    Returns:
        ``(model, meta)``; the model is in eval mode.

    Raises:
        CheckpointError: missing files, a file that is not safetensors (e.g. a pickle),
            a sidecar that does not match the weights, or weights that do not fit the
            architecture the sidecar describes.
        MissingExtraError: the ``ml`` extra (torch, torchvision, timm, safetensors) is missing.
    """
    require_extra("ml", "loading a checkpoint's weights")
    from geoseg.models.maskrcnn import build_model

    meta, raw = _read_sidecar(path)
    weights, _ = checkpoint_paths(path)
    state = read_safetensors(weights)
    expected = raw.get("weights_sha256")
    if expected:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != expected:
            raise CheckpointError(
                f"{weights}: the weights do not match their sidecar (SHA-256 differs); the "
                "pair was replaced half-way or edited: re-save the checkpoint"
            )
    try:
        config = meta.model_config
    except ConfigError as err:
        raise CheckpointError(f"{weights}: the sidecar's model config is invalid ({err})") from err
    model = build_model(config, num_classes=len(meta.classes), in_channels=meta.in_channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights}: the weights do not fit the architecture in the sidecar ({err})"
        ) from err
    model.eval()
    model.to(device)
    return model, meta


def check_compatible(
    meta: ModelMeta,
    *,
    band_count: int,
    classes: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    scene: str | None = None,
) -> None:
    """Refuse a checkpoint that does not fit the input.

    Args:
        meta: the checkpoint's sidecar.
        band_count: bands the scene provides to the model (after band selection).
        classes: class names the caller expects, in order; ``None`` skips the check.
        checkpoint: the checkpoint's path, named in the message.
        scene: the input's path, named in the message.

    Raises:
        BandError: the model expects a different number of bands.
        CheckpointError: the classes differ.
    """
    where = f"{scene}: " if scene else ""
    model = (
        f"the checkpoint {os.fspath(checkpoint)}" if checkpoint is not None else "the checkpoint"
    )
    if band_count != meta.in_channels:
        raise BandError(
            f"{where}{model} expects {meta.in_channels} band(s) {list(meta.bands)} but the "
            f"input has {band_count}; select matching bands (--bands) or use a checkpoint "
            "trained on this band count"
        )
    if classes is not None and tuple(classes) != tuple(meta.classes):
        raise CheckpointError(
            f"{where}{model} predicts classes {list(meta.classes)}, not {list(classes)}; "
            "use a matching checkpoint or fine-tune with `geoseg train --from`"
        )
