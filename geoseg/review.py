"""Model-assisted labelling: pre-labels to edit in QGIS, reviewed labels back, and what changed.

The loop (``geoseg label`` → edit in QGIS → ``geoseg chips`` → ``geoseg train --from``):

1. :func:`prelabels` turns a model's result (:func:`geoseg.pipeline.run_scene`) into labels to
   review: columns ``class``, ``score``, ``status`` (``todo``), ``margin`` (``|score - class
   threshold|``) and ``pred_id`` (1, 2, ... in file order). **Least certain first**: rows are
   sorted by ``margin``, the distance of the score from the score threshold of the object's
   class (the threshold ``geoseg predict`` would keep it at). With the default run every kept
   score is at or above its threshold, so this is "lowest score first"; with candidates below
   the threshold (``geoseg label --candidates``) the near misses on both sides of the
   threshold come first. :func:`write_prelabels` writes them as the GeoPackage layer
   :data:`PRELABELS_LAYER` and a QGIS style (:func:`qml_style`) beside it.
2. A person edits the layer: fixes outlines, deletes false positives, draws missed objects,
   and sets ``status`` to ``ok`` on every feature they checked (new features too).
3. :func:`read_review` reads the edited file back. Only ``ok`` features are truth; ``todo``
   features (and any other status, e.g. empty) are **never** training truth. Where the
   person looked is the **reviewed area**:

   * a polygon layer :data:`REVIEWED_AREA_LAYER` in the same GeoPackage, or a polygon file
     given as ``reviewed_area`` (``geoseg chips --reviewed-area``) -- the precise answer:
     draw the area you went through;
   * otherwise the **convex hull of the ok features**. Chosen over the union of buffered
     footprints (which leaves the background between reviewed objects unreviewed, so no
     chip would fit) and over the bounding box (which adds unreviewed corners when the
     work ran along a diagonal street or coast). A person working through an area
     accepts, fixes or deletes what lies inside it, so its hull is the area whose objects
     are known.

   :func:`geoseg.chips.make_chips` then cuts chips only inside the reviewed area (a chip
   must lie inside it), and skips any chip that touches a ``todo`` feature, so an
   unreviewed prediction is neither a label nor background.
4. :func:`review_report` compares the pre-labels with the edited file (by ``pred_id``):
   per class, how many predictions were kept unchanged, moved (outline edited), relabelled,
   deleted or are still ``todo``, and how many objects were added. The same counts measure
   the model on that scene: a prediction kept (outline IoU with its reviewed version >= 0.5,
   same class) is a true positive, a deleted, relabelled or redrawn one a false positive, an
   added or relabelled-to object a miss.

No torch: geopandas, shapely and pyogrio only.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from geoseg.errors import ExportError, GeosegError, LabelError
from geoseg.geometry import polygonal

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "MARGIN_COLUMN",
    "PRED_ID_COLUMN",
    "PRELABELS_LAYER",
    "REVIEWED_AREA_LAYER",
    "STATUS_COLUMN",
    "ClassReview",
    "PrelabelFiles",
    "Review",
    "ReviewReport",
    "Status",
    "format_report",
    "is_review_file",
    "labels_layer",
    "prelabels",
    "qml_path",
    "qml_style",
    "read_review",
    "review_report",
    "write_prelabels",
]

logger = logging.getLogger(__name__)

STATUS_COLUMN: Final = "status"
PRED_ID_COLUMN: Final = "pred_id"
MARGIN_COLUMN: Final = "margin"
#: Layer of the pre-labels in the GeoPackage ``geoseg label`` writes.
PRELABELS_LAYER: Final = "prelabels"
#: Optional polygon layer, in the same GeoPackage, of the area the person reviewed.
REVIEWED_AREA_LAYER: Final = "reviewed_area"


class Status(enum.StrEnum):
    """Review state of one label (the ``status`` column)."""

    TODO = "todo"  #: not reviewed yet: never training truth
    OK = "ok"  #: checked (kept, fixed or added) by a person: training truth


#: Colours per class, in class order (QGIS ``r,g,b,a``), repeated when there are more classes.
_PALETTE: Final = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (0, 128, 128),
    (170, 110, 40),
)


# --------------------------------------------------------------------------------------------
# pre-labels


def prelabels(gdf: gpd.GeoDataFrame, *, thresholds: Mapping[str, float]) -> gpd.GeoDataFrame:
    """Predictions as labels to review, least certain first.

    Args:
        gdf: a result in the scene CRS with ``class`` and ``score`` columns (e.g.
            ``run_scene(...).gdf``).
        thresholds: the score threshold of each class (class name -> score) the margin is
            measured from; a class missing here gets 0.5.

    Returns:
        A GeoDataFrame with columns ``pred_id`` (int, 1..N in the returned order), ``class``,
        ``score``, ``status`` (all ``todo``), ``margin`` (``|score - threshold|``) and the
        geometry, sorted by ``margin`` then ``score`` (ascending, stable).
    """
    import geopandas as gpd

    classes = gdf["class"].astype(str).to_numpy() if len(gdf) else np.array([], dtype=object)
    scores = gdf["score"].to_numpy(dtype=np.float64) if len(gdf) else np.array([], np.float64)
    thr = np.asarray([float(thresholds.get(c, 0.5)) for c in classes], np.float64)
    margin = np.abs(scores - thr)
    order = np.lexsort((scores, margin)) if len(gdf) else np.array([], np.intp)
    out = gpd.GeoDataFrame(
        {
            PRED_ID_COLUMN: np.arange(1, len(order) + 1, dtype=np.int64),
            "class": classes[order].tolist(),
            "score": np.round(scores[order], 4),
            STATUS_COLUMN: [Status.TODO.value] * len(order),
            MARGIN_COLUMN: np.round(margin[order], 4),
        },
        geometry=list(np.asarray(gdf.geometry.values, dtype=object)[order]),
        crs=gdf.crs,
    )
    out.attrs["classes"] = tuple(gdf.attrs.get("classes", ())) or tuple(sorted(set(classes)))
    return out


def _rgba(rgb: tuple[int, int, int], alpha: int) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _fill_symbol(name: str, fill: str, outline: str, outline_style: str, width: str) -> ET.Element:
    symbol = ET.Element(
        "symbol",
        {
            "type": "fill",
            "name": name,
            "alpha": "1",
            "clip_to_extent": "1",
            "force_rhr": "0",
        },
    )
    layer = ET.SubElement(
        symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    )
    options = ET.SubElement(layer, "Option", {"type": "Map"})
    for key, value in (
        ("color", fill),
        ("style", "solid"),
        ("outline_color", outline),
        ("outline_style", outline_style),
        ("outline_width", width),
        ("outline_width_unit", "MM"),
        ("joinstyle", "miter"),
    ):
        ET.SubElement(options, "Option", {"type": "QString", "name": key, "value": value})
    return symbol


def qml_style(classes: Sequence[str]) -> str:
    """A QGIS layer style (``.qml``) for pre-labels: colour per class, line per status.

    A categorised renderer over the expression ``concat("class", ' / ', "status")``: one
    category per class and status (``ship / todo``, ``ship / ok``...), colours from a fixed
    palette in class order; ``todo`` features are drawn with a dashed outline and a light
    fill, ``ok`` ones with a solid, thicker outline and no fill, so what is left to review
    stands out. Features of other values fall in a grey catch-all category.

    Returns:
        The XML text (QGIS 3 ``<qgis>`` document with a ``renderer-v2`` of type
        ``categorizedSymbol``).
    """
    root = ET.Element("qgis", {"version": "3.28.0", "styleCategories": "Symbology"})
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        {
            "type": "categorizedSymbol",
            "attr": 'concat("class", \' / \', "status")',
            "symbollevels": "0",
            "enableorderby": "0",
            "forceraster": "0",
        },
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    k = 0
    for i, name in enumerate(classes):
        rgb = _PALETTE[i % len(_PALETTE)]
        for status in Status:
            value = f"{name} / {status.value}"
            ET.SubElement(
                categories,
                "category",
                {
                    "symbol": str(k),
                    "value": value,
                    "label": f"{name} ({status.value})",
                    "render": "true",
                },
            )
            if status is Status.TODO:
                sym = _fill_symbol(str(k), _rgba(rgb, 60), _rgba(rgb, 255), "dash", "0.5")
            else:
                sym = _fill_symbol(str(k), _rgba(rgb, 0), _rgba(rgb, 255), "solid", "0.8")
            symbols.append(sym)
            k += 1
    ET.SubElement(
        categories,
        "category",
        {"symbol": str(k), "value": "", "label": "other", "render": "true"},
    )
    symbols.append(_fill_symbol(str(k), "160,160,160,60", "90,90,90,255", "dot", "0.4"))
    source = ET.SubElement(renderer, "source-symbol")
    source.append(_fill_symbol("0", "160,160,160,60", "90,90,90,255", "solid", "0.4"))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def qml_path(path: str | os.PathLike[str]) -> Path:
    """The style file written beside a pre-labels file: same name, ``.qml`` extension.

    QGIS loads ``NAME.qml`` beside ``NAME.gpkg`` as the layer's default style when it is
    opened; else Layer Properties > Symbology > Style > Load Style.
    """
    return Path(path).with_suffix(".qml")


@dataclass(frozen=True, slots=True)
class PrelabelFiles:
    """What :func:`write_prelabels` wrote.

    Attributes:
        path: the GeoPackage (layer :data:`PRELABELS_LAYER`).
        style: the QGIS style beside it.
        n: features written.
    """

    path: Path
    style: Path
    n: int


def write_prelabels(
    gdf: gpd.GeoDataFrame, path: str | os.PathLike[str], *, classes: Sequence[str]
) -> PrelabelFiles:
    """Write pre-labels (from :func:`prelabels`) and their QGIS style, each atomically.

    Args:
        gdf: the pre-labels, scene CRS.
        path: a ``.gpkg`` file (a GeoPackage keeps the optional ``reviewed_area`` layer the
            person may add, and ``status`` edits, in one file).
        classes: every class of the model, in model order (the style names them all, also
            those without a prediction, for the objects the person adds).

    Raises:
        ExportError: ``path`` is not a ``.gpkg`` or cannot be written.
    """
    from geoseg.export import check_output_crs
    from geoseg.io import atomic_write, atomic_write_text, check_writable

    p = Path(path)
    if p.suffix.lower() != ".gpkg":
        raise ExportError(
            f"{p}: pre-labels are written as a GeoPackage (.gpkg), which QGIS edits in place "
            "and which can also hold a reviewed_area layer; use a .gpkg name"
        )
    style = qml_path(p)
    check_writable(p)
    check_output_crs(p, gdf.crs, source="the pre-labels")

    def write(tmp: Path) -> None:
        tmp.unlink()  # a new GeoPackage (not a layer added to an old one)
        gdf.to_file(tmp, driver="GPKG", layer=PRELABELS_LAYER)

    try:
        atomic_write(p, write)
    except GeosegError:
        raise
    except Exception as err:  # pyogrio / GDAL raise many kinds
        raise ExportError(f"{p}: could not write the pre-labels: {err}") from err
    atomic_write_text(style, qml_style(classes))
    return PrelabelFiles(path=p, style=style, n=len(gdf))


# --------------------------------------------------------------------------------------------
# reading a reviewed file


def labels_layer(path: str | os.PathLike[str]) -> str | None:
    """The layer holding the labels in a (multi-layer) vector file.

    :data:`PRELABELS_LAYER` when present, else the first spatial layer that is not
    :data:`REVIEWED_AREA_LAYER`; ``None`` for single-layer files (read the default).
    """
    import pyogrio

    try:
        layers = pyogrio.list_layers(os.fspath(path))
    except Exception:  # not a readable multi-layer source: read_vectors reports it
        return None
    spatial = [str(n) for n, g in layers if g is not None]
    if len(spatial) <= 1:
        return None
    if PRELABELS_LAYER in spatial:
        return PRELABELS_LAYER
    others = [n for n in spatial if n != REVIEWED_AREA_LAYER]
    return others[0] if others else None


def _has_layer(path: str | os.PathLike[str], name: str) -> bool:
    import pyogrio

    try:
        return name in {str(n) for n, g in pyogrio.list_layers(os.fspath(path)) if g is not None}
    except Exception:
        return False


def _read_labels(source: Any, what: str) -> gpd.GeoDataFrame:
    from geoseg.io import read_vectors

    if isinstance(source, str | os.PathLike):
        return read_vectors(source, what=what, layer=labels_layer(source))
    return read_vectors(source, what=what)


def is_review_file(gdf: gpd.GeoDataFrame, *, status_column: str = STATUS_COLUMN) -> bool:
    """Whether a labels table is a review (has a ``status`` column)."""
    return status_column in gdf.columns


@dataclass(frozen=True, eq=False)
class Review:
    """A reviewed labels file, split into truth and the rest (:func:`read_review`).

    Attributes:
        truth: the ``ok`` features (training truth), in the file's CRS.
        todo: every other feature (status ``todo``, empty or unknown): never truth.
        area: the reviewed area (a polygonal shapely geometry in the file's CRS), or
            ``None`` when nothing is reviewed.
        area_source: where the area came from: ``"layer reviewed_area"``, the file given, or
            ``"convex hull of the ok features"``.
        crs: the CRS of all three.
        name: the labels file (for messages).
    """

    truth: gpd.GeoDataFrame
    todo: gpd.GeoDataFrame
    area: Any
    area_source: str
    crs: Any
    name: str

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable facts for a chip folder's ``"geoseg"`` block."""
        return {
            "labels": self.name,
            "ok": len(self.truth),
            "not_reviewed": len(self.todo),
            "reviewed_area": self.area_source,
            "reviewed_area_wkt": None if self.area is None else self.area.wkt,
        }


def _area_from(source: Any, crs: Any, name: str) -> Any:
    """Union of the polygons of a reviewed-area file/GeoDataFrame/geometry, in ``crs``."""
    import shapely
    from shapely.geometry.base import BaseGeometry

    from geoseg.io import read_vectors

    if isinstance(source, BaseGeometry):
        return polygonal(source, repair=True)
    if isinstance(source, str | os.PathLike) and _has_layer(source, REVIEWED_AREA_LAYER):
        gdf = read_vectors(source, what="reviewed area", layer=REVIEWED_AREA_LAYER)
    else:
        gdf = read_vectors(source, what="reviewed area")
    if gdf.crs is not None and crs is not None:
        gdf = gdf.to_crs(crs)
    elif (gdf.crs is None) != (crs is None):
        raise LabelError(
            f"{name}: the reviewed area and the labels must both have a CRS or both have none"
        )
    geoms = [polygonal(g, repair=True) for g in gdf.geometry.values]
    geoms = [g for g in geoms if g is not None]
    if not geoms:
        raise LabelError(
            f"{name}: the reviewed area holds no polygon; draw the area you reviewed as "
            "polygons (or leave it out: the convex hull of the ok features is used)"
        )
    return polygonal(shapely.union_all(np.asarray(geoms, dtype=object)), repair=True)


def read_review(
    labels: str | os.PathLike[str] | gpd.GeoDataFrame,
    *,
    reviewed_area: Any = None,
    status_column: str = STATUS_COLUMN,
    require_status: bool = True,
) -> Review:
    """Read a reviewed labels file: truth (``ok``), the rest, and the reviewed area.

    Args:
        labels: the edited pre-labels (a GeoPackage from ``geoseg label``, possibly with a
            :data:`REVIEWED_AREA_LAYER` layer) or a GeoDataFrame.
        reviewed_area: the reviewed area instead of the file's layer / the convex hull: a
            polygon vector file, a GeoDataFrame or a shapely geometry in the labels' CRS.
        status_column: the status attribute; values are compared case-insensitively, with
            surrounding spaces ignored.
        require_status: refuse a file without the status column; ``False`` takes every
            feature as ``ok`` (plain truth labels restricted to a ``reviewed_area``).

    Raises:
        LabelError: unreadable files, no status column (``require_status``), no ``ok``
            feature, or a reviewed area without polygons.
    """
    import shapely

    name = str(labels) if isinstance(labels, str | os.PathLike) else "labels (GeoDataFrame)"
    gdf = _read_labels(labels, "labels")
    if status_column in gdf.columns:
        status = gdf[status_column].astype("string").str.strip().str.lower().fillna("")
        ok = (status == Status.OK.value).to_numpy(dtype=bool)
    elif require_status:
        raise LabelError(
            f"{name}: no {status_column!r} column, so nothing says which features were "
            "reviewed; write pre-labels with `geoseg label` (or add the column: ok = checked)"
        )
    else:
        ok = np.ones(len(gdf), dtype=bool)
    truth, todo = gdf.loc[ok].copy(), gdf.loc[~ok].copy()
    if len(todo):
        logger.info("%s: %d features not reviewed (status not ok): never truth", name, len(todo))
    area: Any
    if reviewed_area is not None:
        area = _area_from(reviewed_area, gdf.crs, str(reviewed_area))
        source = str(reviewed_area) if isinstance(reviewed_area, str | os.PathLike) else "given"
    elif isinstance(labels, str | os.PathLike) and _has_layer(labels, REVIEWED_AREA_LAYER):
        area = _area_from(labels, gdf.crs, name)
        source = f"layer {REVIEWED_AREA_LAYER}"
    else:
        geoms = [g for g in truth.geometry.values if g is not None and not g.is_empty]
        hull = (
            shapely.convex_hull(shapely.union_all(np.asarray(geoms, dtype=object)))
            if geoms
            else None
        )
        area = polygonal(hull) if hull is not None else None
        source = "convex hull of the ok features"
    if not len(truth):
        raise LabelError(
            f"{name}: no feature has {status_column} = ok, so nothing is reviewed yet; in QGIS "
            f"set {status_column} to ok on the features you checked (and on those you added)"
        )
    return Review(truth=truth, todo=todo, area=area, area_source=source, crs=gdf.crs, name=name)


# --------------------------------------------------------------------------------------------
# what the review changed


@dataclass(frozen=True, slots=True)
class ClassReview:
    """What the review did to one class's predictions (and what it says about the model).

    Attributes:
        name: class name.
        predicted: predictions of the class in the pre-labels.
        not_reviewed: of which still ``todo`` (left out of everything below).
        unchanged: kept as they were (outline IoU >= ``unchanged_iou``, same class).
        moved: outline edited, same class (IoU with the reviewed outline below
            ``unchanged_iou``); ``redrawn`` of them have IoU < ``match_iou``.
        relabelled: given another class (counted under the predicted class).
        deleted: removed by the reviewer: false positives.
        added: reviewed objects of this class that no prediction of this class matches:
            drawn by the reviewer, or relabelled to this class.
        tp, fp, fn: the model on the reviewed part: kept with IoU >= ``match_iou`` and the
            same class; deleted + relabelled + redrawn; added + redrawn.
        mean_iou: mean IoU of the true positives' predicted outlines with their reviewed ones.
    """

    name: str
    predicted: int = 0
    not_reviewed: int = 0
    unchanged: int = 0
    moved: int = 0
    redrawn: int = 0
    relabelled: int = 0
    deleted: int = 0
    added: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    mean_iou: float = float("nan")

    @property
    def precision(self) -> float:
        """Precision, tp / (tp + fp): reviewed predictions kept (NaN with none reviewed)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        """Recall, tp / (tp + fn): reviewed objects the model found (NaN with none)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (NaN when undefined)."""
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r) or p + r == 0:
            return float("nan") if math.isnan(p) or math.isnan(r) else 0.0
        return 2 * p * r / (p + r)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN as ``None``)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 4)

        return {
            "class": self.name,
            "predicted": self.predicted,
            "not_reviewed": self.not_reviewed,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "redrawn": self.redrawn,
            "relabelled": self.relabelled,
            "deleted": self.deleted,
            "added": self.added,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": clean(self.precision),
            "recall": clean(self.recall),
            "f1": clean(self.f1),
            "mean_iou": clean(self.mean_iou),
        }


@dataclass(frozen=True, slots=True)
class ReviewReport:
    """:func:`review_report`'s result: one :class:`ClassReview` per class, and their total.

    Attributes:
        classes: per class, sorted by name.
        total: the sums over classes (``name == "all"``).
        original, edited: the two files compared.
        unchanged_iou, match_iou: the IoU thresholds used.
        todo_new: features without a known ``pred_id`` that are not ``ok`` (drawn but not
            marked reviewed): ignored.
    """

    classes: tuple[ClassReview, ...]
    total: ClassReview
    original: str
    edited: str
    unchanged_iou: float
    match_iou: float
    todo_new: int = 0
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "original": self.original,
            "edited": self.edited,
            "unchanged_iou": self.unchanged_iou,
            "match_iou": self.match_iou,
            "todo_new": self.todo_new,
            "classes": [c.to_dict() for c in self.classes],
            "total": self.total.to_dict(),
        }


def _pair_iou(a: Any, b: Any) -> float:
    if a is None or b is None or a.is_empty or b.is_empty:
        return 0.0
    inter = a.intersection(b).area
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def review_report(
    original: str | os.PathLike[str] | gpd.GeoDataFrame,
    edited: str | os.PathLike[str] | gpd.GeoDataFrame,
    *,
    unchanged_iou: float = 0.99,
    match_iou: float = 0.5,
    status_column: str = STATUS_COLUMN,
) -> ReviewReport:
    """What a review changed, per class, and what that says about the model.

    Predictions are followed by their ``pred_id`` (QGIS keeps attributes when an outline is
    edited): an id missing from ``edited`` was deleted; one whose feature is still ``todo``
    is not reviewed; the first ``ok`` feature of an id is its reviewed version (unchanged,
    moved or relabelled); ``ok`` features without a known id (or a repeated one) were added.

    Args:
        original: the pre-labels as written by ``geoseg label``.
        edited: the same file after review.
        unchanged_iou: IoU at or above which an outline counts as unchanged.
        match_iou: IoU at or above which a kept prediction is a true positive.
        status_column: the status attribute.

    Raises:
        LabelError: unreadable files, or a file without the ``pred_id`` / ``status`` columns.
    """
    o_name = str(original) if isinstance(original, str | os.PathLike) else "original"
    e_name = str(edited) if isinstance(edited, str | os.PathLike) else "edited"
    o = _read_labels(original, "pre-labels")
    e = _read_labels(edited, "reviewed labels")
    for df, nm, cols in (
        (o, o_name, (PRED_ID_COLUMN, "class")),
        (e, e_name, (PRED_ID_COLUMN, "class", status_column)),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise LabelError(
                f"{nm}: no {', '.join(repr(c) for c in missing)} column; compare the file "
                "`geoseg label` wrote with the same file after review"
            )
    if o.crs is not None and e.crs is not None and o.crs != e.crs:
        e = e.to_crs(o.crs)
    o_ids = o[PRED_ID_COLUMN].to_numpy()
    o_cls = o["class"].astype(str).to_numpy()
    o_geom = [polygonal(g, repair=True) for g in o.geometry.values]
    by_id: dict[int, int] = {}
    for i, pid in enumerate(o_ids):
        by_id.setdefault(int(pid), i)
    e_ids = e[PRED_ID_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    e_cls = e["class"].astype("string").fillna("").to_numpy(dtype=object)
    e_ok = (
        e[status_column].astype("string").str.strip().str.lower().fillna("") == Status.OK.value
    ).to_numpy(dtype=bool)
    e_geom = [polygonal(g, repair=True) for g in e.geometry.values]

    names = sorted(set(o_cls.tolist()) | {str(c) for c in e_cls[e_ok].tolist()})
    counts: dict[str, dict[str, Any]] = {
        n: {k: 0 for k in ClassReview.__slots__ if k not in ("name", "mean_iou")} for n in names
    }
    ious: dict[str, list[float]] = {n: [] for n in names}
    for c in o_cls:
        counts[c]["predicted"] += 1
    seen: set[int] = set()
    todo_new = 0
    for j in range(len(e)):
        pid = e_ids[j]
        known = not math.isnan(pid) and int(pid) in by_id and int(pid) not in seen
        if not known:
            if e_ok[j]:
                counts[str(e_cls[j])]["added"] += 1
                counts[str(e_cls[j])]["fn"] += 1
            else:
                todo_new += 1
            continue
        seen.add(int(pid))
        i = by_id[int(pid)]
        c = str(o_cls[i])
        if not e_ok[j]:
            counts[c]["not_reviewed"] += 1
            continue
        new_c = str(e_cls[j])
        score = _pair_iou(o_geom[i], e_geom[j])
        if new_c != c:
            counts[c]["relabelled"] += 1
            counts[c]["fp"] += 1
            counts[new_c]["added"] += 1
            counts[new_c]["fn"] += 1
            continue
        if score >= unchanged_iou:
            counts[c]["unchanged"] += 1
        else:
            counts[c]["moved"] += 1
        if score >= match_iou:
            counts[c]["tp"] += 1
            ious[c].append(score)
        else:
            counts[c]["redrawn"] += 1
            counts[c]["fp"] += 1
            counts[c]["fn"] += 1
    for i, pid in enumerate(o_ids):
        if int(pid) not in seen and by_id.get(int(pid)) == i:
            counts[str(o_cls[i])]["deleted"] += 1
            counts[str(o_cls[i])]["fp"] += 1
    rows = tuple(
        ClassReview(
            name=n,
            mean_iou=float(np.mean(ious[n])) if ious[n] else float("nan"),
            **counts[n],
        )
        for n in names
    )
    all_ious = [v for n in names for v in ious[n]]
    total = ClassReview(
        name="all",
        mean_iou=float(np.mean(all_ious)) if all_ious else float("nan"),
        **({k: sum(counts[n][k] for n in names) for k in counts[names[0]]} if names else {}),
    )
    return ReviewReport(
        classes=rows,
        total=total,
        original=o_name,
        edited=e_name,
        unchanged_iou=unchanged_iou,
        match_iou=match_iou,
        todo_new=todo_new,
    )


def format_report(report: ReviewReport) -> str:
    """The report as a plain-text table (what ``geoseg review-report`` prints)."""

    def f(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.3f}"

    head = (
        f"{'class':<14} {'pred':>5} {'todo':>5} {'same':>5} {'moved':>5} {'relab':>5} "
        f"{'del':>5} {'added':>5}  {'prec':>6} {'recall':>6} {'f1':>6} {'iou':>6}"
    )
    lines = [head, "-" * len(head)]
    for c in (*report.classes, report.total):
        lines.append(
            f"{c.name[:14]:<14} {c.predicted:>5} {c.not_reviewed:>5} {c.unchanged:>5} "
            f"{c.moved:>5} {c.relabelled:>5} {c.deleted:>5} {c.added:>5}  "
            f"{f(c.precision):>6} {f(c.recall):>6} {f(c.f1):>6} {f(c.mean_iou):>6}"
        )
    lines.append(
        f"precision = kept / reviewed predictions, recall = kept / reviewed objects (IoU >= "
        f"{report.match_iou:g}, same class); 'same' = outline IoU >= {report.unchanged_iou:g}"
    )
    if report.todo_new:
        lines.append(f"{report.todo_new} new feature(s) without status ok were ignored")
    return "\n".join(lines)
