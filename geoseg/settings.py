"""Run settings: everything besides the weights that decides a scene's result, chosen in one place.

:class:`RunSettings` is one frozen value holding the tiling, the score filter, the stitching and
vectorizing parameters, the normalisation source, the bands and the device. :func:`resolve`
builds it with one precedence rule, used by :func:`geoseg.pipeline.run_scene` (when no settings
are given), ``geoseg predict``, ``geoseg batch`` and the notebooks:

    explicit overrides  >  preset  >  checkpoint  >  defaults

* the **checkpoint** (a :class:`~geoseg.predict.Predictor` or a checkpoint's metadata) gives its
  training tile size, its bands and its recommended per-class score thresholds;
* a **preset** (name, YAML path or :class:`~geoseg.config.PresetConfig`) gives tiling, score
  filter, stitching and vectorizing sections;
* **overrides** are keyword arguments named like the fields of :class:`RunSettings`; ``None``
  means "not given".

Score thresholds are resolved as a whole at each level: a preset's ``filter.min_score`` (with
its ``filter.class_min_score``) replaces the checkpoint's per-class scores, an explicit
``min_score`` replaces both, and explicit ``class_min_score`` entries are applied last.

This module imports neither torch nor GDAL.

Example:
    >>> from geoseg.settings import resolve
    >>> s = resolve(None, tile_size=256)
    >>> (s.tile_size, s.overlap, s.min_score)
    (256, 64, 0.5)
    >>> resolve(None, "ships", min_score=0.3).min_score
    0.3
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from geoseg.config import PresetConfig, check_class_scores, load_config
from geoseg.errors import ConfigError
from geoseg.extent import Extent

__all__ = [
    "CUDA_BATCH_SIZE",
    "DEFAULT_MIN_SCORE",
    "DEFAULT_TILE_SIZE",
    "ModelFacts",
    "NormSource",
    "OutputGeometry",
    "RunSettings",
    "resolve",
]

#: Tile side (pixels) when neither an option, a preset nor the checkpoint gives one.
DEFAULT_TILE_SIZE = 512
#: Score threshold when neither an option, a preset nor the checkpoint gives one.
DEFAULT_MIN_SCORE = 0.5
#: Engines that can run a Mask R-CNN checkpoint (:class:`geoseg.predict.Backend`).
BACKENDS = ("auto", "torch", "onnx")

#: Tiles per forward pass on CUDA; 1 on the CPU (batching there costs memory and gains nothing).
CUDA_BATCH_SIZE = 8


class NormSource(enum.StrEnum):
    """Which normalisation statistics tiles are stretched with."""

    SCENE = "scene"  #: this scene's own scene-wide percentiles (robust to other sensors)
    MODEL = "model"  #: the statistics saved with the model (imagery like its training data)


class OutputGeometry(enum.StrEnum):
    """What geometry each object is written with (its attributes are those of its outline)."""

    MASK = "mask"  #: the object's outline: one Polygon (its largest part, holes kept)
    BOX = "box"  #: the outline's axis-aligned pixel box, as a Polygon in the scene CRS
    POINT = "point"  #: the point ``geoseg count`` places the object by (centroid in metres)


class ModelFacts(Protocol):
    """What :func:`resolve` reads from a model.

    A :class:`~geoseg.predict.Predictor` or a checkpoint's :class:`~geoseg.checkpoint.ModelMeta`
    both qualify.

    Attributes:
        tile_size: the tile side the model was trained on, in pixels (``None``: unknown).
        score_thresholds: recommended per-class score thresholds (may be empty).
    """

    @property
    def tile_size(self) -> int | None:
        """Training tile side in pixels, or ``None``."""
        ...

    @property
    def score_thresholds(self) -> Mapping[str, float]:
        """Recommended per-class score thresholds."""
        ...


@dataclass(frozen=True, slots=True)
class RunSettings:
    """Everything besides the model weights that decides a scene's result.

    Build it with :func:`resolve`; change one field with :meth:`replace`. Its hash
    (:meth:`digest`) goes into each batch manifest record: a scene is redone when it changes.

    Attributes:
        tile_size: tile side in *working pixels*, the pixels the model sees: scene pixels when
            the scene is read as it is, pixels of the working GSD when it is resampled (see
            ``gsd``).
        overlap: working pixels shared by neighbouring tiles, ``0 < overlap < tile_size``
            (overlap 0 is refused: see :mod:`geoseg.stitch`).
        gsd: the ground sample distance tiles are read at, in metres; ``None``: the model's
            (its checkpoint's ``gsd``). A scene whose GSD differs from it by more than
            :data:`geoseg.raster.GSD_TOLERANCE` is resampled tile by tile while it is read
            and its objects are mapped back to its own pixels
            (:func:`geoseg.tiling.plan_working_grid`).
        resample: ``False`` reads every scene at its own GSD, whatever the model's.
        bands: 1-based raster bands fed to the model, in model-input order (``None``: the
            model's bands, else all bands of the scene).
        norm: normalise with the scene's own statistics or the model's training statistics.
        min_score: per-tile detections below this score are dropped before stitching.
        class_min_score: per-class thresholds (class name -> score) replacing ``min_score``.
        min_area_px: stitched objects with fewer mask pixels (scene pixels) are dropped.
        match_iou: see :func:`geoseg.stitch.stitch`.
        nms_iou: see :func:`geoseg.stitch.stitch`.
        contain_frac: see :func:`geoseg.stitch.stitch`.
        class_agnostic: stitch across classes: the same object outlined as two classes
            becomes one object with the best-scoring class (see :func:`geoseg.stitch.stitch`).
        classes: keep only objects of these classes (names of the model's classes; checked
            against the model before any work); ``None``: all classes.
        extent: predict only this area (:class:`geoseg.extent.Extent`: an AOI or a bbox):
            tiles whose window meets it are read, objects whose centroid (in metres) lies in
            it are kept, as ``geoseg count --aoi`` counts them; ``None``: the whole scene.
        geometry: the geometry written per object (:class:`OutputGeometry`).
        simplify_tolerance: polygon simplification in scene-CRS units (0 = none).
        min_area_m2: polygons smaller than this many square metres are dropped.
        regularize: class names whose outlines get right-angle regularisation after
            vectorizing (:func:`geoseg.regularize.regularize`); empty: none. A plural of a
            class name (``buildings``) stands for the class.
        regularize_min_iou: IoU with the mask outline a regularised outline must reach to
            replace it.
        batch_size: tiles per forward pass; ``None``: :data:`CUDA_BATCH_SIZE` on CUDA, 1
            elsewhere. Not part of the digest (it changes speed, results only at float
            rounding level).
        device: where a model loaded with these settings runs (``auto``, ``cpu``,
            ``cuda[:N]``, ``mps``). Not part of the digest.
        backend: what runs the model's convolutions: ``torch`` (the reference), ``onnx``
            (ONNX Runtime, CPU only; see :mod:`geoseg.models.runtime`) or ``auto`` (onnx on
            the CPU when onnxruntime is installed, else torch;
            :func:`geoseg.predict.resolve_backend`). Not part of the digest (results agree at
            float rounding level).
        prescreen: skip the RoI heads of a tile whose best RPN objectness is below this
            (``None``: off); it can lose objects, so it is part of the digest.
        preset: name of the preset the settings came from (informative, not in the digest).
    """

    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_TILE_SIZE // 4
    gsd: float | None = None
    resample: bool = True
    bands: tuple[int, ...] | None = None
    norm: NormSource = NormSource.SCENE
    min_score: float = DEFAULT_MIN_SCORE
    class_min_score: Mapping[str, float] = field(default_factory=dict)
    min_area_px: int = 0
    match_iou: float = 0.5
    nms_iou: float = 0.5
    contain_frac: float = 0.8
    class_agnostic: bool = False
    classes: tuple[str, ...] | None = None
    extent: Extent | None = None
    geometry: OutputGeometry = OutputGeometry.MASK
    simplify_tolerance: float = 0.0
    min_area_m2: float = 0.0
    regularize: tuple[str, ...] = ()
    regularize_min_iou: float = 0.8
    batch_size: int | None = None
    device: str = "auto"
    backend: str = "auto"
    prescreen: float | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.tile_size < 16:
            raise ConfigError(f"tile size must be >= 16 pixels, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ConfigError(
                f"overlap {self.overlap} must be in [1, tile size {self.tile_size}) pixels: "
                "lower the overlap"
            )
        if self.overlap == 0:
            raise ConfigError(
                "overlap 0: two objects touching on a tile seam cannot be told from one object "
                "cut by it, so stitching needs overlapping tiles; use an overlap of at least "
                "the largest object's size in pixels"
            )
        if self.gsd is not None:
            ok = isinstance(self.gsd, int | float) and not isinstance(self.gsd, bool)
            if not (ok and 0 < self.gsd < float("inf")):
                raise ConfigError(f"gsd must be a positive number of metres, got {self.gsd}")
            object.__setattr__(self, "gsd", float(self.gsd))
            if not self.resample:
                raise ConfigError(
                    f"a working GSD ({self.gsd:g} m) and resampling switched off contradict "
                    "each other: give one of --gsd / --no-resample"
                )
        object.__setattr__(self, "resample", bool(self.resample))
        if self.bands is not None:
            bands = tuple(int(b) for b in self.bands)
            if not bands or min(bands) < 1:
                raise ConfigError(f"bands are 1-based band numbers, got {list(self.bands)}")
            object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "norm", NormSource(self.norm))
        if self.classes is not None:
            names = (self.classes,) if isinstance(self.classes, str) else self.classes
            kept = tuple(dict.fromkeys(str(c).strip() for c in names))
            if not kept or "" in kept:
                raise ConfigError(f"classes must be non-empty class names, got {self.classes!r}")
            object.__setattr__(self, "classes", kept)
        if self.extent is not None and not isinstance(self.extent, Extent):
            raise ConfigError(
                f"extent must be a geoseg.extent.Extent (read_aoi(), bbox_extent()), got "
                f"{type(self.extent).__name__}"
            )
        try:
            object.__setattr__(self, "geometry", OutputGeometry(self.geometry))
        except ValueError as err:
            raise ConfigError(
                f"geometry {self.geometry!r}: use one of "
                f"{', '.join(g.value for g in OutputGeometry)}"
            ) from err
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score}")
        scores = check_class_scores(self.class_min_score, "class_min_score")
        object.__setattr__(self, "class_min_score", scores)
        if self.min_area_px < 0 or self.min_area_m2 < 0 or self.simplify_tolerance < 0:
            raise ConfigError("min_area_px, min_area_m2 and simplify_tolerance must be >= 0")
        for name in ("match_iou", "nms_iou", "contain_frac"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if isinstance(self.regularize, str):
            object.__setattr__(self, "regularize", (self.regularize,))
        names = tuple(str(c).strip() for c in self.regularize)
        if any(not n for n in names):
            raise ConfigError(f"regularize: empty class name in {list(self.regularize)}")
        object.__setattr__(self, "regularize", names)
        if not 0.0 < self.regularize_min_iou <= 1.0:
            raise ConfigError(
                f"regularize_min_iou must be in (0, 1], got {self.regularize_min_iou}"
            )
        backend = str(self.backend).lower()
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; use one of {list(BACKENDS)}")
        object.__setattr__(self, "backend", backend)
        if self.prescreen is not None:
            if not 0.0 <= float(self.prescreen) < 1.0:
                raise ConfigError(f"prescreen must be in [0, 1), got {self.prescreen}")
            object.__setattr__(self, "prescreen", float(self.prescreen))

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again).

        Raises:
            ConfigError: an unknown field name or an invalid value.
        """
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def lowest_score(self) -> float:
        """The lowest threshold of any class: the model must report detections down to it."""
        return min([self.min_score, *self.class_min_score.values()])

    def batch_for(self, device_type: str) -> int:
        """Tiles per forward pass on a device of this type (``"cuda"``, ``"cpu"``...)."""
        if self.batch_size is not None:
            return self.batch_size
        return CUDA_BATCH_SIZE if device_type == "cuda" else 1

    def stitch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`geoseg.stitch.stitch`."""
        return {
            "match_iou": self.match_iou,
            "nms_iou": self.nms_iou,
            "contain_frac": self.contain_frac,
            "class_agnostic": self.class_agnostic,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in batch manifests)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["bands"] = None if self.bands is None else list(self.bands)
        data["norm"] = self.norm.value
        data["class_min_score"] = dict(self.class_min_score)
        data["regularize"] = list(self.regularize)
        data["classes"] = None if self.classes is None else list(self.classes)
        data["extent"] = None if self.extent is None else self.extent.to_dict()
        data["geometry"] = self.geometry.value
        return data

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the settings that change results.

        ``batch_size``, ``device``, ``backend`` and ``preset`` are left out: they change speed
        or naming; ``classes``, ``extent``, ``geometry`` and ``prescreen`` only when set, and
        ``regularize``/``regularize_min_iou`` while no class is regularised (so that digests of
        runs without them stay those of earlier versions).
        """
        data = self.to_dict()
        for key in ("batch_size", "device", "backend", "preset"):
            data.pop(key)
        if not self.regularize:
            data.pop("regularize")
            data.pop("regularize_min_iou")
        for key, default in _UNSET_IN_DIGEST.items():
            if data[key] == default:
                data.pop(key)
        if data["prescreen"] is None:
            data.pop("prescreen")
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> str:
        """One line for logs: tiling, thresholds, normalisation."""
        per_class = ", ".join(f"{k} {v:g}" for k, v in sorted(self.class_min_score.items()))
        scores = f"min score {self.min_score:g}" + (f" ({per_class})" if per_class else "")
        preset = f", preset {self.preset}" if self.preset else ""
        if self.regularize:
            preset += (
                f", regularize {','.join(self.regularize)} (IoU >= {self.regularize_min_iou:g})"
            )
        if not self.resample:
            gsd = ", no resampling"
        elif self.gsd is not None:
            gsd = f", GSD {self.gsd:g} m"
        else:
            gsd = ""
        extra = ""
        if self.classes is not None:
            extra += f", classes {','.join(self.classes)}"
        if self.class_agnostic:
            extra += ", class-agnostic"
        if self.extent is not None:
            extra += f", extent {self.extent.source or 'area'}"
        if self.geometry is not OutputGeometry.MASK:
            extra += f", geometry {self.geometry.value}"
        return (
            f"tiles {self.tile_size} px, overlap {self.overlap} px{gsd}, {scores}, "
            f"norm {self.norm.value}{extra}{preset}"
        )


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunSettings))
_UNSET_IN_DIGEST: dict[str, Any] = {
    "classes": None,
    "extent": None,
    "geometry": OutputGeometry.MASK.value,
}


def _check_names(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise ConfigError(
            f"unknown run setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_FIELDS))}"
        )


def resolve(
    model: ModelFacts | None = None,
    preset: str | Path | PresetConfig | None = None,
    **overrides: Any,
) -> RunSettings:
    """The settings one scene is predicted with: overrides > preset > checkpoint > defaults.

    Args:
        model: the model's facts (a predictor or a checkpoint's metadata): its training tile
            size and recommended per-class score thresholds. ``None``: defaults only.
        preset: a preset name (``"ships"``), a YAML path or a loaded
            :class:`~geoseg.config.PresetConfig`; gives tiling, filter, stitch and vectorize.
        **overrides: any :class:`RunSettings` field; ``None`` values are ignored. The working
            GSD (``gsd``, ``resample``) comes from overrides only: the model's GSD applies
            when they are not given.

    Returns:
        The validated :class:`RunSettings`. Without a tile size anywhere,
        :data:`DEFAULT_TILE_SIZE`; without an overlap, a quarter of the tile (or the preset's).

    Raises:
        ConfigError: an unknown override name, an unknown or invalid preset, or an invalid
            value (overlap not below the tile size, a score outside [0, 1]...).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    _check_names(given)
    cfg = preset if isinstance(preset, PresetConfig) or preset is None else load_config(preset)
    model_tile = None if model is None else model.tile_size
    model_scores = {} if model is None else dict(model.score_thresholds or {})

    values: dict[str, Any] = {}
    tile = given.get("tile_size") or (cfg.tiling.tile_size if cfg else None) or model_tile
    values["tile_size"] = int(tile or DEFAULT_TILE_SIZE)
    overlap = given.get("overlap")
    if overlap is None:
        overlap = cfg.tiling.overlap if cfg else values["tile_size"] // 4
    values["overlap"] = int(overlap)

    per_class = check_class_scores(model_scores, "checkpoint score_thresholds")
    min_score = given.get("min_score")
    if min_score is None:
        min_score = cfg.filter.min_score if cfg else DEFAULT_MIN_SCORE
        if cfg is not None:
            per_class = dict(cfg.filter.class_min_score)
    else:
        per_class = {}
    per_class.update(check_class_scores(given.get("class_min_score") or {}, "class_min_score"))
    values["min_score"] = float(min_score)
    values["class_min_score"] = per_class

    if cfg is not None:
        values.update(
            min_area_px=cfg.filter.min_area_px,
            match_iou=cfg.stitch.match_iou,
            nms_iou=cfg.stitch.nms_iou,
            contain_frac=cfg.stitch.contain_frac,
            class_agnostic=cfg.stitch.class_agnostic,
            simplify_tolerance=cfg.vectorize.simplify_tolerance,
            min_area_m2=cfg.vectorize.min_area_m2,
            regularize=cfg.vectorize.regularize,
            regularize_min_iou=cfg.vectorize.regularize_min_iou,
            preset=cfg.name,
        )
    done = {"tile_size", "overlap", "min_score", "class_min_score"}
    values.update({k: v for k, v in given.items() if k not in done})
    if isinstance(values.get("bands"), Sequence):
        values["bands"] = tuple(int(b) for b in values["bands"])
    return RunSettings(**values)
