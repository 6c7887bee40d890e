"""Per-class score thresholds that maximise F1 at IoU 0.5, and storing them with a checkpoint.

A detector reports every object with a confidence; which confidence is "enough" differs per
class and per model. This module picks, per class, the threshold with the best F1 on labelled
data and writes it into the checkpoint's sidecar (``score_thresholds``), where
:func:`geoseg.settings.resolve` (so ``geoseg predict``, ``geoseg batch`` and
:func:`geoseg.pipeline.run_scene`) picks it up.

How a threshold is chosen (:meth:`ScoreCurve.best_threshold`):

* predictions are matched to the truth once, greedily in decreasing score, one-to-one, at IoU
  0.5 (the rule of :func:`geoseg.evaluate.evaluate`). With that rule the matches of the
  predictions scoring ``>= t`` do not depend on the lower-scored ones, so one matching gives
  precision, recall and F1 at every threshold ``t`` (:class:`ScoreCurve`);
* the candidate thresholds are the distinct prediction scores at or above ``floor``; the one
  with the highest F1 wins; **ties go to the higher threshold** (fewer detections for the same
  F1);
* the stored value lies **halfway between the lowest kept score and the next lower score**
  (or ``floor`` when none is lower), never below ``floor``: the same detections pass on the
  calibration data, with a margin either side for new data;
* a class without truth objects, or without a single true positive at any threshold, is not
  calibrated (no evidence): it keeps the threshold it had.

Two sources of calibration data:

* scene level, :func:`calibrate_checkpoint` (``geoseg calibrate MODEL SCENE LABELS``): the
  scene is predicted once with :func:`~geoseg.pipeline.run_scene` down to a low score
  (``low``), the polygons are matched to the labels in a metric CRS, and the sidecar is
  rewritten. F1 "before" is measured on the same predictions filtered at the old thresholds
  (filtering after stitching; a run at those thresholds can differ slightly where stitching
  merged a low-scored tile fragment);
* chip level, :func:`chip_curves` on :class:`~geoseg.evaluate.ChipPrediction` s: masks matched
  by mask IoU in **chip pixels**. :func:`geoseg.train.train` uses it on the validation chips
  at every validation and stores the thresholds with the checkpoints it writes.

Everything here but :func:`calibrate_checkpoint` (which runs the model: ``ml`` extra) works
without torch.

Example:
    >>> import geopandas as gpd
    >>> from shapely.geometry import box
    >>> truth = gpd.GeoDataFrame(
    ...     {"class": ["ship"] * 3},
    ...     geometry=[box(0, 0, 10, 4), box(20, 0, 30, 4), box(40, 0, 50, 4)], crs="EPSG:32633")
    >>> pred = gpd.GeoDataFrame(
    ...     {"class": ["ship"] * 4, "score": [0.9, 0.7, 0.6, 0.3]},
    ...     geometry=[box(0, 0, 10, 4), box(20, 0, 30, 4), box(90, 0, 99, 4),
    ...               box(40, 0, 50, 4)], crs="EPSG:32633")
    >>> calibrate_thresholds(pred, truth, ["ship"])  # keeps all 4: F1 6/7; midway to the floor
    {'ship': 0.175}
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import ConfigError, LabelError

if TYPE_CHECKING:
    import geopandas as gpd

    from geoseg.evaluate import ChipPrediction

__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_LOW",
    "CalibrationResult",
    "ClassScore",
    "ScoreCurve",
    "calibrate_checkpoint",
    "calibrate_thresholds",
    "chip_curves",
    "choose_thresholds",
    "greedy_match",
    "merge_curves",
    "score_curves",
    "scores_at",
]

logger = logging.getLogger(__name__)

#: Lowest threshold calibration may choose.
DEFAULT_FLOOR = 0.05
#: Score down to which :func:`calibrate_checkpoint` keeps detections before choosing.
DEFAULT_LOW = 0.05
#: F1 values closer than this are a tie (they differ by float rounding only).
_TIE = 1e-12


@dataclass(frozen=True, slots=True)
class ClassScore:
    """Precision, recall and F1 of one class (or all classes) at a score threshold.

    Attributes:
        threshold: detections scoring at least this are kept (``nan`` for an overall score
            over classes with different thresholds).
        tp, fp, fn: true/false positives and false negatives at the IoU threshold.
        precision, recall, f1: from tp/fp/fn (0.0 where undefined; all 1.0 when there is
            neither a kept detection nor a truth object, as in :func:`geoseg.evaluate.evaluate`).
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @classmethod
    def from_counts(cls, threshold: float, tp: int, fp: int, fn: int) -> ClassScore:
        """The scores of the counts ``tp``, ``fp``, ``fn``."""
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if tp + fp == 0 and tp + fn == 0:
            precision = recall = f1 = 1.0
        return cls(float(threshold), int(tp), int(fp), int(fn), precision, recall, f1)


@dataclass(frozen=True, eq=False)
class ScoreCurve:
    """One class's matched predictions, for precision/recall/F1 at any score threshold.

    Build with :meth:`from_matches` (it sorts), :func:`score_curves` (polygons) or
    :func:`chip_curves` (chip masks); combine with :meth:`concat`.

    Attributes:
        scores: float64 ``[M]`` prediction scores, in decreasing order.
        matched: bool ``[M]``: whether each prediction is a true positive when matched
            greedily in score order (see the module docstring).
        n_true: number of truth objects of the class.
    """

    scores: npt.NDArray[np.float64]
    matched: npt.NDArray[np.bool_]
    n_true: int

    @classmethod
    def from_matches(cls, scores: npt.ArrayLike, matched: npt.ArrayLike, n_true: int) -> ScoreCurve:
        """A curve from ``[M]`` scores and match flags in any order (sorted here, stably)."""
        s = np.asarray(scores, np.float64).reshape(-1)
        m = np.asarray(matched, bool).reshape(-1)
        if s.shape != m.shape:
            raise ValueError(f"{len(s)} scores but {len(m)} match flags")
        order = np.argsort(-s, kind="stable")
        return cls(s[order], m[order], int(n_true))

    @classmethod
    def concat(cls, curves: Iterable[ScoreCurve]) -> ScoreCurve:
        """One curve from several disjoint ones (e.g. one per chip)."""
        parts = list(curves)
        if not parts:
            return cls(np.zeros(0), np.zeros(0, bool), 0)
        return cls.from_matches(
            np.concatenate([c.scores for c in parts]),
            np.concatenate([c.matched for c in parts]),
            sum(c.n_true for c in parts),
        )

    def kept(self, threshold: float) -> int:
        """Number of predictions scoring ``>= threshold``."""
        return int(np.searchsorted(-self.scores, -float(threshold), side="right"))

    def at(self, threshold: float) -> ClassScore:
        """Precision, recall and F1 when detections below ``threshold`` are dropped."""
        k = self.kept(threshold)
        tp = int(self.matched[:k].sum())
        return ClassScore.from_counts(threshold, tp, k - tp, self.n_true - tp)

    def best_threshold(self, floor: float = DEFAULT_FLOOR) -> float | None:
        """The F1-maximising threshold (rules in the module docstring), ``None`` without evidence.

        Returns ``None`` when the class has no truth object or no true positive scoring at
        least ``floor``.
        """
        if not 0.0 <= floor <= 1.0:
            raise ConfigError(f"floor must be in [0, 1], got {floor}")
        s = self.scores
        n = self.kept(floor)
        if self.n_true == 0 or n == 0:
            return None
        tp = np.cumsum(self.matched[:n])
        k = np.arange(1, n + 1)
        # a threshold keeps whole groups of equal scores: candidates end where the score drops
        ends = np.flatnonzero(np.append(s[1:n] < s[: n - 1], True))
        f1 = 2.0 * tp[ends] / (k[ends] + self.n_true)
        best = float(f1.max())
        if best <= 0.0:
            return None
        i = int(ends[np.flatnonzero(f1 >= best - _TIE)[0]])  # first = highest threshold
        below = float(s[i + 1]) if i + 1 < len(s) else floor
        return max(floor, (float(s[i]) + max(below, floor)) / 2.0)


def greedy_match(
    iou: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float = 0.5
) -> npt.NDArray[np.intp]:
    """Greedy one-to-one matching from an IoU matrix (the rule of :func:`geoseg.evaluate`).

    Args:
        iou: float ``[M, N]`` IoU of each prediction with each truth object.
        scores: float ``[M]``; predictions are taken in decreasing score (stable).
        iou_threshold: a pair matches when its IoU is at least this.

    Returns:
        int ``[M]``: the truth index each prediction matched, or -1.
    """
    a = np.asarray(iou, np.float64)
    m = a.shape[0]
    out = np.full(m, -1, np.intp)
    if a.ndim != 2 or a.shape[1] == 0 or m == 0:
        return out
    taken = np.zeros(a.shape[1], bool)
    for i in np.argsort(-np.asarray(scores, np.float64), kind="stable"):
        for j in np.argsort(-a[i], kind="stable"):
            if a[i, j] < iou_threshold:
                break
            if not taken[j]:
                taken[j] = True
                out[i] = j
                break
    return out


def score_curves(
    pred: gpd.GeoDataFrame | str | Path,
    truth: gpd.GeoDataFrame | str | Path,
    classes: Sequence[str] | None = None,
    *,
    iou_threshold: float = 0.5,
    class_column: str = "class",
    score_column: str = "score",
) -> dict[str, ScoreCurve]:
    """Per-class :class:`ScoreCurve` of predicted polygons against truth polygons.

    Both are compared in one metric frame (:func:`geoseg.evaluate.align_inputs`); matching is
    :func:`geoseg.evaluate.match_polygons` at ``iou_threshold``.

    Args:
        pred: predictions (GeoDataFrame or vector file) with class and score columns.
        truth: truth polygons with a class column.
        classes: classes to build curves for (default: every class on either side).
        iou_threshold: IoU at which a prediction matches a truth polygon.
        class_column: class column of both sides.
        score_column: the predictions' score column.

    Raises:
        LabelError: unreadable inputs, a CRS on one side only, or a threshold outside (0, 1].
    """
    from geoseg.evaluate import align_inputs, match_polygons

    if not 0.0 < iou_threshold <= 1.0:
        raise LabelError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    a = align_inputs(pred, truth, class_column=class_column, score_column=score_column)
    names = (
        list(classes) if classes is not None else sorted(set(a.pred_classes) | set(a.truth_classes))
    )
    curves: dict[str, ScoreCurve] = {}
    for name in names:
        pm, tm = a.pred_classes == name, a.truth_classes == name
        scores = a.pred_scores[pm]
        (matches,), _ = match_polygons(
            a.pred_geoms[pm], a.truth_geoms[tm], scores=scores, thresholds=(iou_threshold,)
        )
        curves[name] = ScoreCurve.from_matches(scores, matches >= 0, int(tm.sum()))
    return curves


def chip_curves(
    chip: ChipPrediction, classes: Sequence[str], *, iou_threshold: float = 0.5
) -> dict[str, ScoreCurve]:
    """Per-class :class:`ScoreCurve` of one chip's detected masks against its truth masks.

    Mask IoU in **chip pixels** (pycocotools on RLE); matching as :func:`greedy_match`.
    Combine chips with :func:`merge_curves`.

    Args:
        chip: a chip's truth and detections (:func:`geoseg.evaluate.predict_chips`).
        classes: class names the chip's 0-based labels index.
        iou_threshold: mask IoU at which a detection matches a truth object.
    """
    from pycocotools import mask as mask_utils

    def rles(masks: npt.NDArray[np.uint8]) -> Any:
        return mask_utils.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))

    curves: dict[str, ScoreCurve] = {}
    for k, name in enumerate(classes):
        pm, tm = chip.labels == k, chip.truth_labels == k
        scores = chip.scores[pm].astype(np.float64)
        matched = np.zeros(len(scores), bool)
        n_true = int(tm.sum())
        if len(scores) and n_true:
            iou = np.asarray(
                mask_utils.iou(rles(chip.masks[pm]), rles(chip.truth_masks[tm]), [0] * n_true)
            ).reshape(len(scores), n_true)
            matched = greedy_match(iou, scores, iou_threshold) >= 0
        curves[name] = ScoreCurve.from_matches(scores, matched, n_true)
    return curves


def merge_curves(parts: Iterable[Mapping[str, ScoreCurve]]) -> dict[str, ScoreCurve]:
    """Per-class curves of several disjoint parts (chips, scenes) together."""
    groups: dict[str, list[ScoreCurve]] = {}
    for part in parts:
        for name, curve in part.items():
            groups.setdefault(name, []).append(curve)
    return {name: ScoreCurve.concat(curves) for name, curves in groups.items()}


def choose_thresholds(
    curves: Mapping[str, ScoreCurve], *, floor: float = DEFAULT_FLOOR
) -> dict[str, float]:
    """The F1-maximising threshold of every class that has evidence (others are left out)."""
    chosen: dict[str, float] = {}
    for name, curve in curves.items():
        t = curve.best_threshold(floor)
        if t is None:
            logger.info("%s: not calibrated (no truth object or no true positive)", name)
        else:
            chosen[name] = t
    return chosen


def scores_at(
    curves: Mapping[str, ScoreCurve], thresholds: Mapping[str, float], default: float
) -> tuple[dict[str, ClassScore], ClassScore]:
    """Per-class and overall (micro: summed counts) scores at per-class thresholds.

    Args:
        curves: per-class curves.
        thresholds: class -> threshold; classes without an entry use ``default``.
        default: the threshold of the other classes.

    Returns:
        ``(per_class, overall)``; ``overall.threshold`` is ``nan``.
    """
    per_class = {
        name: curve.at(float(thresholds.get(name, default))) for name, curve in curves.items()
    }
    tp = sum(s.tp for s in per_class.values())
    fp = sum(s.fp for s in per_class.values())
    fn = sum(s.fn for s in per_class.values())
    return per_class, ClassScore.from_counts(math.nan, tp, fp, fn)


def calibrate_thresholds(
    pred: gpd.GeoDataFrame | str | Path,
    truth: gpd.GeoDataFrame | str | Path,
    classes: Sequence[str] | None = None,
    *,
    iou_threshold: float = 0.5,
    floor: float = DEFAULT_FLOOR,
    class_column: str = "class",
    score_column: str = "score",
) -> dict[str, float]:
    """Per class, the score threshold that maximises F1 at ``iou_threshold``.

    Rules (tie-break, margin, floor, classes left out) in the module docstring.

    Args:
        pred: predicted polygons with a score column, kept down to a low score (a threshold
            below the lowest score in ``pred`` cannot be judged).
        truth: truth polygons.
        classes: classes to calibrate (default: every class on either side).
        iou_threshold: IoU at which a prediction matches a truth polygon.
        floor: lowest threshold returned.
        class_column: class column of both sides.
        score_column: the predictions' score column.

    Returns:
        ``{class: threshold}`` for each class with truth objects and at least one true positive.

    Raises:
        LabelError: unreadable inputs or a CRS on one side only.
        ConfigError: ``floor`` outside [0, 1].
    """
    curves = score_curves(
        pred,
        truth,
        classes,
        iou_threshold=iou_threshold,
        class_column=class_column,
        score_column=score_column,
    )
    return choose_thresholds(curves, floor=floor)


# --------------------------------------------------------------------------------------------
# a checkpoint on a labelled scene


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """What :func:`calibrate_checkpoint` measured and chose.

    Attributes:
        checkpoint: the checkpoint's ``.safetensors`` path.
        scene, labels: the calibration data.
        before, after: the effective per-class thresholds before and after (every class).
        per_class_before, per_class_after: scores per class at those thresholds.
        overall_before, overall_after: micro-averaged scores.
        calibrated: classes that got a new threshold (others had no evidence).
        iou_threshold: IoU of a match.
        written: whether the sidecar was rewritten.
    """

    checkpoint: Path
    scene: str
    labels: str
    before: Mapping[str, float]
    after: Mapping[str, float]
    per_class_before: Mapping[str, ClassScore]
    per_class_after: Mapping[str, ClassScore]
    overall_before: ClassScore
    overall_after: ClassScore
    calibrated: tuple[str, ...] = ()
    iou_threshold: float = 0.5
    written: bool = False
    n_predictions: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``nan`` as ``None``)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, Mapping):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [clean(x) for x in v]
            return v

        return clean(
            {
                "checkpoint": str(self.checkpoint),
                "scene": self.scene,
                "labels": self.labels,
                "iou_threshold": self.iou_threshold,
                "before": dict(self.before),
                "after": dict(self.after),
                "calibrated": list(self.calibrated),
                "per_class_before": {k: asdict(v) for k, v in self.per_class_before.items()},
                "per_class_after": {k: asdict(v) for k, v in self.per_class_after.items()},
                "overall_before": asdict(self.overall_before),
                "overall_after": asdict(self.overall_after),
                "written": self.written,
                "n_predictions": self.n_predictions,
            }
        )

    def format_table(self) -> str:
        """A fixed-width before/after table for the terminal."""
        head = (
            f"{'class':<14} {'truth':>6} {'thr':>6} {'F1':>6}   ->  {'thr':>6} {'F1':>6} "
            f"{'prec':>6} {'rec':>6}"
        )
        lines = [f"calibration at IoU {self.iou_threshold:g} on {self.scene}", head]
        lines.append("-" * len(head))
        for name in self.after:
            b, a = self.per_class_before[name], self.per_class_after[name]
            mark = "" if name in self.calibrated else "  (kept: no evidence)"
            lines.append(
                f"{name[:14]:<14} {a.tp + a.fn:>6d} {b.threshold:>6.3f} {b.f1:>6.3f}   ->  "
                f"{a.threshold:>6.3f} {a.f1:>6.3f} {a.precision:>6.3f} {a.recall:>6.3f}{mark}"
            )
        lines.append("-" * len(head))
        ob, oa = self.overall_before, self.overall_after
        lines.append(
            f"{'overall':<14} {oa.tp + oa.fn:>6d} {'':>6} {ob.f1:>6.3f}   ->  {'':>6} "
            f"{oa.f1:>6.3f} {oa.precision:>6.3f} {oa.recall:>6.3f}"
        )
        return "\n".join(lines)


def calibrate_checkpoint(
    checkpoint: str | Path,
    scene: str | os.PathLike[str],
    labels: str | Path | gpd.GeoDataFrame,
    *,
    preset: str | Path | None = None,
    low: float = DEFAULT_LOW,
    floor: float = DEFAULT_FLOOR,
    iou_threshold: float = 0.5,
    class_column: str = "class",
    write: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **overrides: Any,
) -> CalibrationResult:
    """Calibrate a checkpoint's per-class score thresholds on a labelled scene.

    The scene is predicted once with :func:`geoseg.pipeline.run_scene`, with the settings
    ``geoseg predict MODEL`` would use (:func:`geoseg.settings.resolve` with ``preset`` and
    ``overrides``) except that detections are kept down to ``low``; the polygons are matched
    to ``labels`` and each class gets the threshold that maximises F1 at ``iou_threshold``
    (:class:`ScoreCurve`). The sidecar's ``score_thresholds`` are then rewritten atomically
    (weights and their SHA-256 untouched), keeping the old value of classes without evidence,
    and a ``calibration`` record is added to its ``metrics``.

    Args:
        checkpoint: ``NAME.safetensors`` (with its ``NAME.json``).
        scene: a raster the model can read (same bands as in training).
        labels: truth polygons of the scene (any CRS; a class column, optional for a
            one-class model).
        preset: as for ``geoseg predict --config`` (tiling, stitching...).
        low: the score down to which detections are kept for calibration.
        floor: the lowest threshold chosen.
        iou_threshold: IoU of a match.
        class_column: the labels' class column.
        write: rewrite the sidecar (``False``: only measure).
        progress: ``progress(tiles_done, tiles_total)`` while predicting.
        **overrides: :class:`~geoseg.settings.RunSettings` fields (``tile_size``, ``bands``,
            ``device``...).

    Returns:
        The :class:`CalibrationResult` (F1 per class before and after).

    Raises:
        CheckpointError: a missing or corrupt checkpoint.
        LabelError: unreadable labels, or labels without a class column for a multi-class model.
        RasterReadError, BandError, ConfigError: as :func:`~geoseg.pipeline.run_scene`.
        MissingExtraError: the ``ml`` extra is not installed.
    """
    from geoseg._extras import require_extra
    from geoseg.checkpoint import checkpoint_paths, read_meta, set_score_thresholds
    from geoseg.io import read_vectors
    from geoseg.settings import resolve

    require_extra("ml", "calibrating a checkpoint")
    from geoseg.pipeline import run_scene
    from geoseg.predict import load_predictor

    if not 0.0 <= low <= 1.0:
        raise ConfigError(f"low must be in [0, 1], got {low}")
    weights, _ = checkpoint_paths(checkpoint)
    meta = read_meta(weights)
    classes = tuple(meta.classes)
    truth = read_vectors(labels, what="labels")
    if class_column not in truth.columns:
        if len(classes) != 1:
            raise LabelError(
                f"{labels}: no {class_column!r} column; name the class column "
                f"(--class-column) for a model with classes {', '.join(classes)}"
            )
        truth = truth.assign(**{class_column: classes[0]})
    truth = truth[[class_column, truth.geometry.name]].rename(columns={class_column: "class"})

    settings = resolve(meta, preset, **overrides)
    before = {c: float(settings.class_min_score.get(c, settings.min_score)) for c in classes}
    run = settings.replace(min_score=min(low, min(before.values())), class_min_score={})
    predictor = load_predictor(weights, run)
    result = run_scene(scene, predictor, run, progress=progress)
    logger.info("%s: %d detections down to score %g", scene, len(result.gdf), run.min_score)

    curves = score_curves(result.gdf, truth, classes, iou_threshold=iou_threshold)
    chosen = choose_thresholds(curves, floor=floor)
    after = {c: chosen.get(c, before[c]) for c in classes}
    per_before, overall_before = scores_at(curves, before, settings.min_score)
    per_after, overall_after = scores_at(curves, after, settings.min_score)
    out = CalibrationResult(
        checkpoint=weights,
        scene=str(scene),
        labels=str(labels) if isinstance(labels, str | os.PathLike) else "<GeoDataFrame>",
        before=before,
        after=after,
        per_class_before=per_before,
        per_class_after=per_after,
        overall_before=overall_before,
        overall_after=overall_after,
        calibrated=tuple(c for c in classes if c in chosen),
        iou_threshold=float(iou_threshold),
        n_predictions=len(result.gdf),
    )
    if write and chosen:
        record = {
            "source": "scene",
            "scene": out.scene,
            "labels": out.labels,
            "iou_threshold": float(iou_threshold),
            "floor": float(floor),
            "f1_before": overall_before.f1,
            "f1_after": overall_after.f1,
            "f1_per_class": {c: per_after[c].f1 for c in classes},
        }
        set_score_thresholds(
            weights, {**meta.score_thresholds, **chosen}, metrics={"calibration": record}
        )
        out = dataclasses.replace(out, written=True)
    return out
