"""Scene-level evaluation of predicted polygons against truth polygons, in the scene CRS.

Matching is one-to-one and greedy, the SpaceNet / COCO rule: predictions are taken in
decreasing ``score`` (file order when there is no score column); each is matched to the
not-yet-matched truth polygon of the same class with the highest IoU, if that IoU reaches the
threshold. Unmatched predictions are false positives, unmatched truths false negatives.
IoU is polygon IoU (area of intersection over area of union) computed with shapely; candidate
pairs come from an STRtree query, so tens of thousands of polygons per class are cheap.

Per class the result has precision, recall and F1 at IoU 0.5, mask AP50 and AP50:95
(COCO's 101-point interpolated AP over the same greedy matching, at IoU 0.50, 0.55, ...,
0.95), predicted/true counts and the count error (predicted - true). ``overall`` sums true
positives, false positives and false negatives over classes (micro average) and averages AP
over the classes that have truth objects (macro, like COCO's mAP).

Comparisons are made in a metric frame (:func:`geoseg.geometry.metric_crs`): the truth's CRS
when its unit is the metre, else (geographic, Web Mercator, feet) its UTM zone.

:func:`coco_evaluate` is the chip-level counterpart used while training: COCO box and mask AP
of a model on a :class:`~geoseg.train.ChipDataset`, with pycocotools (needs torch);
:func:`predict_chips` runs the model over the chips once and :func:`coco_scores` reduces them,
so training computes AP and F1 (:mod:`geoseg.calibrate`) from the same pass.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import LabelError
from geoseg.geometry import metric_crs, polygonal_array
from geoseg.io import atomic_write_json, read_vectors

if TYPE_CHECKING:
    import geopandas as gpd
    import torch
    from torch import nn

    from geoseg.train import ChipDataset

__all__ = [
    "AlignedInputs",
    "ChipPrediction",
    "ClassMetrics",
    "EvaluationResult",
    "align_inputs",
    "coco_evaluate",
    "coco_scores",
    "evaluate",
    "format_table",
    "match_polygons",
    "predict_chips",
    "write_json",
]

#: IoU thresholds of COCO's AP (0.50:0.05:0.95).
AP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
#: Name used when neither file has a class column.
DEFAULT_CLASS = "object"


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    """Scores of one class (or of all classes together, for ``overall``).

    Attributes:
        tp, fp, fn: true/false positives and false negatives at ``iou_threshold``.
        precision, recall, f1: from tp/fp/fn (0.0 where undefined, e.g. no predictions).
        ap50: mask (polygon) AP at IoU 0.5; ap: AP averaged over IoU 0.50:0.05:0.95.
        mean_iou: mean IoU of the matched pairs (0.0 when none).
        count_pred, count_true: number of predicted / true polygons.
        count_error: ``count_pred - count_true``.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap50: float
    ap: float
    mean_iou: float
    count_pred: int
    count_true: int
    count_error: int


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    Attributes:
        per_class: metrics per class name (every class present in either file).
        overall: micro-averaged counts and F1; AP averaged over classes with truth.
        iou_threshold: IoU used for tp/fp/fn.
        crs: the CRS the comparison was made in (WKT-free short form, e.g. ``EPSG:32633``).
    """

    per_class: Mapping[str, ClassMetrics]
    overall: ClassMetrics
    iou_threshold: float
    crs: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``{"per_class": {"ship": {"f1": ...}}, "overall": {...}, ...}``."""
        return {
            "per_class": {k: asdict(v) for k, v in self.per_class.items()},
            "overall": asdict(self.overall),
            "iou_threshold": self.iou_threshold,
            "ap_iou_thresholds": list(AP_THRESHOLDS),
            "matching": "greedy one-to-one, by decreasing score then IoU (SpaceNet/COCO)",
            "crs": self.crs,
        }


_NOT_POLYGONAL = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "LinearRing"})


def _read(value: gpd.GeoDataFrame | str | Path, what: str) -> gpd.GeoDataFrame:
    """Read one side; points and lines are refused (they have no area to overlap)."""
    df = read_vectors(value, what=what)
    kinds = set(df.geometry.geom_type.dropna()) & _NOT_POLYGONAL
    if kinds:
        n = int(df.geometry.geom_type.isin(kinds).sum())
        raise LabelError(
            f"{_name(value, what)}: {n} of {len(df)} {what} features are {sorted(kinds)}, "
            "which have no area to match by IoU; give polygons (e.g. buffer points to the "
            "objects' size, or keep only the polygon features: ogr2ogr -nlt MULTIPOLYGON)"
        )
    return df


def _name(value: gpd.GeoDataFrame | str | Path, what: str) -> str:
    """The file a side was read from, for messages (``"the truth GeoDataFrame"`` otherwise)."""
    return str(value) if isinstance(value, str | Path) else f"the {what} GeoDataFrame"


def _polygons(df: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The polygonal part of each geometry (invalid ones repaired first); drop the rest."""
    geoms = polygonal_array(df.geometry.values, repair=True)
    keep = np.asarray([g is not None for g in geoms], dtype=bool)
    out = df.loc[keep].copy()
    return out.set_geometry(list(geoms[keep]), crs=df.crs)


@dataclass(frozen=True, eq=False)
class AlignedInputs:
    """Predictions and truth as polygon arrays in one metric frame (see :func:`align_inputs`).

    Attributes:
        pred_geoms: object ``[P]`` shapely polygons/multipolygons of the predictions.
        pred_classes: str ``[P]`` class names.
        pred_scores: float64 ``[P]`` confidences (1.0 where the file has no score column).
        truth_geoms: object ``[T]`` truth polygons; truth_classes: str ``[T]``.
        crs: the frame both are in (a metric CRS), or ``None`` when neither side has a CRS.
    """

    pred_geoms: npt.NDArray[Any]
    pred_classes: npt.NDArray[Any]
    pred_scores: npt.NDArray[np.float64]
    truth_geoms: npt.NDArray[Any]
    truth_classes: npt.NDArray[Any]
    crs: Any


def align_inputs(
    pred: gpd.GeoDataFrame | str | Path,
    truth: gpd.GeoDataFrame | str | Path,
    *,
    class_column: str = "class",
    score_column: str = "score",
) -> AlignedInputs:
    """Read both sides, bring them into one metric frame and keep their polygonal parts.

    The rules of :func:`evaluate` (which calls this): the truth's CRS when its unit is the
    metre, else (geographic, Web Mercator, feet) its UTM zone; no CRS on either side: compared
    as they are (e.g. pixel coordinates). Invalid geometries are repaired, non-polygonal ones
    dropped.

    Raises:
        LabelError: unreadable files, a missing CRS on one side, a class column on one side.
    """
    p_df = _read(pred, "prediction")
    t_df = _read(truth, "truth")
    if (p_df.crs is None) != (t_df.crs is None) and len(p_df) and len(t_df):
        side, other = ("prediction", truth) if p_df.crs is None else ("truth", pred)
        missing = pred if p_df.crs is None else truth
        raise LabelError(
            f"{_name(missing, side)}: the {side} file has no CRS while the other "
            f"({_name(other, 'other')}) has one; set it (e.g. `ogr2ogr -a_srs EPSG:xxxx` or "
            "GeoDataFrame.set_crs) so both can be compared in the scene CRS"
        )
    crs = t_df.crs if t_df.crs is not None else p_df.crs
    if crs is not None:
        ref = t_df if len(t_df) and t_df.crs is not None else p_df
        if len(ref):
            crs = metric_crs(ref.crs, ref.total_bounds)
    if crs is not None:
        if t_df.crs is not None and t_df.crs != crs:
            t_df = t_df.to_crs(crs)
        if p_df.crs is not None and p_df.crs != crs:
            p_df = p_df.to_crs(crs)
    has_p, has_t = class_column in p_df.columns, class_column in t_df.columns
    if has_p != has_t:
        side, missing = ("prediction", pred) if not has_p else ("truth", truth)
        raise LabelError(
            f"{_name(missing, side)}: the {side} file has no {class_column!r} column; name "
            "the class column with --class-column"
        )
    p_df, t_df = _polygons(p_df), _polygons(t_df)
    p_cls = (
        p_df[class_column].astype(str).to_numpy() if has_p else np.full(len(p_df), DEFAULT_CLASS)
    )
    t_cls = (
        t_df[class_column].astype(str).to_numpy() if has_t else np.full(len(t_df), DEFAULT_CLASS)
    )
    if score_column in p_df.columns:
        p_score = p_df[score_column].to_numpy(dtype=np.float64)
    else:
        p_score = np.ones(len(p_df), np.float64)
    return AlignedInputs(
        np.asarray(p_df.geometry.values, dtype=object),
        p_cls,
        p_score,
        np.asarray(t_df.geometry.values, dtype=object),
        t_cls,
        crs,
    )


def match_polygons(
    pred: Sequence[Any] | npt.NDArray[Any],
    truth: Sequence[Any] | npt.NDArray[Any],
    *,
    scores: npt.NDArray[np.floating[Any]] | None = None,
    thresholds: Sequence[float] = (0.5,),
) -> tuple[list[npt.NDArray[np.intp]], npt.NDArray[np.float64]]:
    """Greedy one-to-one matching of two polygon sets at several IoU thresholds.

    Args:
        pred: predicted shapely polygons (one class), any CRS shared with ``truth``.
        truth: true shapely polygons.
        scores: float ``[len(pred)]`` confidences; predictions are matched in decreasing score
            (stable, so file order breaks ties). ``None``: file order.
        thresholds: IoU thresholds; a pair matches when IoU >= threshold.

    Returns:
        ``(matches, ious)``: ``matches[k]`` is int ``[len(pred)]`` with the index of the
        matched truth polygon at ``thresholds[k]`` or -1; ``ious`` is float ``[len(pred)]``,
        each prediction's best IoU with any truth polygon.
    """
    import shapely

    p = np.asarray(pred, dtype=object)
    t = np.asarray(truth, dtype=object)
    n_p, n_t = len(p), len(t)
    matches = [np.full(n_p, -1, np.intp) for _ in thresholds]
    best = np.zeros(n_p, np.float64)
    if n_p == 0 or n_t == 0:
        return matches, best
    tree = shapely.STRtree(t)
    pi, ti = tree.query(p, predicate="intersects")
    if len(pi) == 0:
        return matches, best
    inter = shapely.area(shapely.intersection(p[pi], t[ti]))
    union = shapely.area(p[pi]) + shapely.area(t[ti]) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-300), 0.0)
    np.maximum.at(best, pi, iou)
    # candidates per prediction, best IoU first
    order = np.lexsort((-iou, pi))
    pi, ti, iou = pi[order], ti[order], iou[order]
    starts = np.searchsorted(pi, np.arange(n_p + 1))
    rank = np.arange(n_p) if scores is None else np.argsort(-np.asarray(scores), kind="stable")
    for k, thr in enumerate(thresholds):
        taken = np.zeros(n_t, bool)
        m = matches[k]
        for i in rank:
            for j in range(starts[i], starts[i + 1]):
                if iou[j] < thr:
                    break
                if not taken[ti[j]]:
                    taken[ti[j]] = True
                    m[i] = ti[j]
                    break
    return matches, best


def _average_precision(
    matched: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64], n_true: int
) -> float:
    """COCO's 101-point interpolated AP of predictions ``matched`` (True = tp)."""
    if n_true == 0:
        return float("nan")
    if len(matched) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(~matched[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, 1)
    # make precision monotonically decreasing (right to left maximum)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def _metrics(
    tp: int,
    fp: int,
    fn: int,
    ap50: float,
    ap: float,
    mean_iou: float,
    n_pred: int,
    n_true: int,
) -> ClassMetrics:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if n_pred == 0 and n_true == 0:
        precision = recall = f1 = 1.0
    return ClassMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=precision,
        recall=recall,
        f1=f1,
        ap50=ap50,
        ap=ap,
        mean_iou=mean_iou,
        count_pred=n_pred,
        count_true=n_true,
        count_error=n_pred - n_true,
    )


def evaluate(
    pred: gpd.GeoDataFrame | str | Path,
    truth: gpd.GeoDataFrame | str | Path,
    *,
    iou_threshold: float = 0.5,
    class_column: str = "class",
    score_column: str = "score",
    min_score: float = 0.0,
    classes: Sequence[str] | None = None,
) -> EvaluationResult:
    """Compare predicted polygons with truth polygons, per class.

    Args:
        pred: predictions (GeoDataFrame or a vector file), with a ``class_column`` and,
            optionally, a ``score_column``.
        truth: truth polygons, with a ``class_column`` (unless neither file has one: then
            everything is one class, ``"object"``).
        iou_threshold: IoU at which a match counts for precision/recall/F1.
        class_column: column holding class names.
        score_column: column holding confidences; missing: all 1.0 (file order breaks ties).
        min_score: predictions below this score are ignored.
        classes: classes to report (default: every class in either input).

    Returns:
        The metrics; predictions are reprojected to the truth's CRS (truth not in metres,
        e.g. geographic or Web Mercator: both go to the truth's UTM zone so that areas are
        metric).

    Raises:
        LabelError: unreadable files, a missing CRS on one side, a class column on one side
            only, or a threshold outside (0, 1].

    Example:
        >>> import geopandas as gpd
        >>> from shapely.geometry import box
        >>> truth = gpd.GeoDataFrame(
        ...     {"class": ["ship", "ship"]}, geometry=[box(0, 0, 10, 4), box(20, 0, 30, 4)],
        ...     crs="EPSG:32633")
        >>> pred = gpd.GeoDataFrame(
        ...     {"class": ["ship", "ship"], "score": [0.9, 0.8]},
        ...     geometry=[box(0, 0, 10, 5), box(50, 0, 60, 4)], crs="EPSG:32633")
        >>> m = evaluate(pred, truth).per_class["ship"]
        >>> (m.tp, m.fp, m.fn, round(m.f1, 2))
        (1, 1, 1, 0.5)
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise LabelError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    a = align_inputs(pred, truth, class_column=class_column, score_column=score_column)
    keep = a.pred_scores >= min_score
    p_geoms, p_cls, p_score = a.pred_geoms[keep], a.pred_classes[keep], a.pred_scores[keep]
    t_geoms, t_cls, crs = a.truth_geoms, a.truth_classes, a.crs
    names = list(classes) if classes is not None else sorted(set(p_cls) | set(t_cls))

    thresholds = sorted({*AP_THRESHOLDS, float(iou_threshold)})
    k_main = thresholds.index(float(iou_threshold))
    per_class: dict[str, ClassMetrics] = {}
    tot_tp = tot_fp = tot_fn = 0
    iou_sum, iou_n = 0.0, 0
    for name in names:
        pm, tm = p_cls == name, t_cls == name
        scores = p_score[pm]
        matches, best = match_polygons(
            np.asarray(p_geoms[pm]), np.asarray(t_geoms[tm]), scores=scores, thresholds=thresholds
        )
        n_pred, n_true = int(pm.sum()), int(tm.sum())
        main = matches[k_main] >= 0
        tp = int(main.sum())
        aps = {
            thr: _average_precision(m >= 0, scores, n_true)
            for thr, m in zip(thresholds, matches, strict=True)
        }
        ap = float(np.mean([aps[t] for t in AP_THRESHOLDS])) if n_true else float("nan")
        matched_iou = best[main]
        per_class[name] = _metrics(
            tp,
            n_pred - tp,
            n_true - tp,
            aps[0.5],
            ap,
            float(matched_iou.mean()) if tp else 0.0,
            n_pred,
            n_true,
        )
        tot_tp, tot_fp, tot_fn = tot_tp + tp, tot_fp + n_pred - tp, tot_fn + n_true - tp
        iou_sum, iou_n = iou_sum + float(matched_iou.sum()), iou_n + tp
    with_truth = [m for m in per_class.values() if m.count_true > 0]
    overall = _metrics(
        tot_tp,
        tot_fp,
        tot_fn,
        float(np.mean([m.ap50 for m in with_truth])) if with_truth else float("nan"),
        float(np.mean([m.ap for m in with_truth])) if with_truth else float("nan"),
        iou_sum / iou_n if iou_n else 0.0,
        sum(m.count_pred for m in per_class.values()),
        sum(m.count_true for m in per_class.values()),
    )
    crs_name = None
    if crs is not None:
        auth = crs.to_authority()
        crs_name = f"{auth[0]}:{auth[1]}" if auth else crs.name
    return EvaluationResult(per_class, overall, float(iou_threshold), crs_name)


def _fmt(v: float) -> str:
    return "  n/a" if isinstance(v, float) and math.isnan(v) else f"{v:5.3f}"


def format_table(result: EvaluationResult) -> str:
    """A fixed-width text table of ``result`` for the terminal."""
    head = (
        f"{'class':<14} {'prec':>5} {'rec':>5} {'F1':>5} {'AP50':>5} {'AP':>5} "
        f"{'mIoU':>5} {'pred':>7} {'true':>7} {'error':>7}"
    )
    lines = [f"IoU threshold {result.iou_threshold:g}, CRS {result.crs or 'none'}", head]
    lines.append("-" * len(head))
    rows = [*result.per_class.items(), ("overall", result.overall)]
    for i, (name, m) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(head))
        lines.append(
            f"{name[:14]:<14} {_fmt(m.precision)} {_fmt(m.recall)} {_fmt(m.f1)} {_fmt(m.ap50)} "
            f"{_fmt(m.ap)} {_fmt(m.mean_iou)} {m.count_pred:>7d} {m.count_true:>7d} "
            f"{m.count_error:>+7d}"
        )
    return "\n".join(lines)


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    """Write ``result.to_dict()`` as JSON atomically (NaN written as ``null``)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, Mapping):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return atomic_write_json(path, clean(result.to_dict()), indent=2, allow_nan=False)


# --------------------------------------------------------------------------------------------
# chip-level COCO AP (training validation)


@dataclass(frozen=True, eq=False)
class ChipPrediction:
    """One validation chip's truth and a model's detections, in **chip pixels**.

    Attributes:
        index: the chip's index in its :class:`~geoseg.train.ChipDataset`.
        height, width: chip size in pixels.
        truth_masks: uint8 ``[N, H, W]`` truth instance masks.
        truth_labels: int64 ``[N]`` 0-based indexes into the dataset's classes.
        boxes: float32 ``[M, 4]`` detected boxes ``(x1, y1, x2, y2)``, pixel edges.
        scores: float32 ``[M]`` detection confidences.
        labels: int64 ``[M]`` 0-based class indexes of the detections.
        masks: uint8 ``[M, H, W]`` detected masks (probability above the mask threshold).
    """

    index: int
    height: int
    width: int
    truth_masks: npt.NDArray[np.uint8]
    truth_labels: npt.NDArray[np.int64]
    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    masks: npt.NDArray[np.uint8]


def predict_chips(
    model: nn.Module,
    dataset: ChipDataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    mask_threshold: float = 0.5,
) -> Iterator[ChipPrediction]:
    """Run ``model`` over every chip of ``dataset`` (no augmentation), one chip at a time.

    Only one batch of chips is in memory at a time, so a caller that reduces each chip as it
    comes (COCO RLE, matches) does not hold every mask of the dataset.

    Args:
        model: a torchvision Mask R-CNN (e.g. from :func:`geoseg.models.build_model`); its
            1-based labels index ``dataset.classes``. Put back in training mode afterwards if
            it was.
        dataset: the chips (:class:`~geoseg.train.ChipDataset`), read without augmentation.
        device: where the model runs.
        batch_size: chips per forward pass.
        mask_threshold: mask probability above which a pixel is part of a detection.

    Yields:
        One :class:`ChipPrediction` per chip, in dataset order.
    """
    import torch

    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                idx = list(range(start, min(start + batch_size, len(dataset))))
                samples = [dataset.read(i) for i in idx]
                batch = [torch.from_numpy(s[0]).to(device) for s in samples]
                outputs = model(batch)
                for i, (image, masks, labels), out in zip(idx, samples, outputs, strict=True):
                    h, w = image.shape[1:]
                    yield ChipPrediction(
                        index=i,
                        height=int(h),
                        width=int(w),
                        truth_masks=np.asarray(masks, np.uint8),
                        truth_labels=np.asarray(labels, np.int64).reshape(-1) - 1,
                        boxes=out["boxes"].float().cpu().numpy().astype(np.float32),
                        scores=out["scores"].float().cpu().numpy().astype(np.float32),
                        labels=out["labels"].cpu().numpy().astype(np.int64) - 1,
                        masks=(out["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8),
                    )
    finally:
        if was_training:
            model.train()


def coco_scores(
    chips: Iterable[ChipPrediction], classes: Sequence[str], *, max_dets: int = 300
) -> dict[str, float]:
    """COCO box and mask AP of chip predictions, with pycocotools.

    Ground truth and detections become COCO documents in chip pixels, category ids in the
    class order (:func:`geoseg.coco.categories`), masks as compressed RLE; each chip is
    reduced to RLE as it arrives.

    Args:
        chips: e.g. from :func:`predict_chips`.
        classes: class names the 0-based labels index.
        max_dets: detections per chip kept for the AP (COCO's ``maxDets``).

    Returns:
        ``{"bbox_ap", "bbox_ap50", "segm_ap", "segm_ap50"}`` (AP over IoU 0.50:0.95 and at
        0.50, up to ``max_dets`` detections per chip); all 0.0 when nothing was predicted.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from geoseg.coco import coco_document, encode_rle, mask_bbox

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for chip in chips:
        image_id = chip.index + 1
        images.append({"id": image_id, "width": chip.width, "height": chip.height})
        for m, lab in zip(chip.truth_masks, chip.truth_labels, strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(lab) + 1,
                    "segmentation": encode_rle(m),
                    "area": float(m.sum()),
                    "bbox": mask_bbox(m),
                    "iscrowd": 0,
                }
            )
        for k in range(len(chip.scores)):
            x1, y1, x2, y2 = (float(v) for v in chip.boxes[k])
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(chip.labels[k]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "segmentation": encode_rle(chip.masks[k]),
                    "score": float(chip.scores[k]),
                }
            )
    metrics = {"bbox_ap": 0.0, "bbox_ap50": 0.0, "segm_ap": 0.0, "segm_ap50": 0.0}
    if not results or not annotations:
        return metrics
    gt = coco_document(images, annotations, classes)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        for iou_type in ("bbox", "segm"):
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.maxDets = [1, 10, max(100, max_dets)]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            ap, ap50 = _ap_from_eval(ev)
            metrics[f"{iou_type}_ap"] = ap
            metrics[f"{iou_type}_ap50"] = ap50
    return metrics


def coco_evaluate(
    model: nn.Module,
    dataset: ChipDataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    max_dets: int = 300,
    mask_threshold: float = 0.5,
) -> dict[str, float]:
    """COCO box and mask AP of ``model`` on ``dataset`` (no augmentation), with pycocotools.

    :func:`predict_chips` then :func:`coco_scores`; see them for the arguments.

    Returns:
        ``{"bbox_ap", "bbox_ap50", "segm_ap", "segm_ap50"}``.
    """
    chips = predict_chips(
        model, dataset, device=device, batch_size=batch_size, mask_threshold=mask_threshold
    )
    return coco_scores(chips, dataset.classes, max_dets=max_dets)


def _ap_from_eval(ev: Any) -> tuple[float, float]:
    """``(AP@[.5:.95], AP@.5)`` (all areas, largest ``maxDets``) of an accumulated COCOeval.

    Read from ``ev.eval["precision"]`` (``[T, R, K, A, M]``) rather than ``ev.stats``: pycocotools'
    ``summarize`` computes ``stats[0]`` at a hard-coded 100 detections per image, which is -1
    (no data) once ``maxDets`` is raised above 100 for dense scenes.
    """
    precision = ev.eval["precision"][:, :, :, 0, -1]  # all areas, largest maxDets
    iou_thrs = np.asarray(ev.params.iouThrs)

    def mean_valid(p: Any) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else 0.0

    return mean_valid(precision), mean_valid(precision[np.isclose(iou_thrs, 0.5)])
