"""Matching the objects of two dates: shift estimate, candidates, Hungarian."""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import shapely

from geoseg.geometry import rectangle_axes

__all__ = ["MIN_SHIFT_PAIRS", "match_objects"]

#: Fewest candidate pairs from which a georeferencing shift is estimated (else no shift).
MIN_SHIFT_PAIRS = 3

#: Vote peaks tried as the shift of a pair of dates.
_SHIFT_PEAKS = 8


def _widths(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
    """Short side of each geometry's minimum rotated rectangle (metric CRS)."""
    if len(geoms) == 0:
        return np.zeros(0)
    _, short, _ = rectangle_axes(geoms)
    return np.asarray(short, dtype=float)


def _pair_ious(
    a: npt.NDArray[np.object_],
    b: npt.NDArray[np.object_],
    a_cls: npt.NDArray[np.object_],
    b_cls: npt.NDArray[np.object_],
    shift: tuple[float, float],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Same-class pairs ``(i, j, IoU)`` of ``a`` moved by ``shift`` that intersect ``b``."""
    moved = shapely.transform(a, lambda xy: xy + np.asarray(shift)) if len(a) else a
    tree = shapely.STRtree(b)
    ai, bj = tree.query(moved, predicate="intersects")
    keep = a_cls[ai] == b_cls[bj]
    ai, bj = ai[keep], bj[keep]
    inter = shapely.area(shapely.intersection(moved[ai], b[bj]))
    union = shapely.area(moved[ai]) + shapely.area(b[bj]) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return ai.astype(np.intp), bj.astype(np.intp), iou


def _estimate_shift(
    a: npt.NDArray[np.object_],
    b: npt.NDArray[np.object_],
    a_cls: npt.NDArray[np.object_],
    b_cls: npt.NDArray[np.object_],
    ca: npt.NDArray[np.float64],
    cb: npt.NDArray[np.float64],
    *,
    max_shift_m: float,
    min_iou: float,
) -> tuple[tuple[float, float], int]:
    """The georeferencing shift ``(dx, dy)`` in metres of ``b`` relative to ``a``; pair count."""
    from scipy.spatial import cKDTree

    if max_shift_m <= 0 or len(a) == 0 or len(b) == 0:
        return (0.0, 0.0), 0
    near = cKDTree(cb).query_ball_point(ca, r=max_shift_m)
    ii = np.repeat(np.arange(len(ca)), [len(n) for n in near])
    jj = np.fromiter((j for n in near for j in n), dtype=np.intp, count=len(ii))
    same = a_cls[ii] == b_cls[jj]
    ii, jj = ii[same], jj[same]
    if len(ii) < MIN_SHIFT_PAIRS:
        return (0.0, 0.0), len(ii)
    disp = cb[jj] - ca[ii]
    radius = max_shift_m / 8.0
    votes = np.asarray(cKDTree(disp).query_ball_point(disp, r=radius, return_length=True))
    peaks: list[npt.NDArray[np.float64]] = [np.zeros(2)]
    for k in np.argsort(-votes, kind="stable"):
        if len(peaks) > _SHIFT_PEAKS:
            break
        if all(np.hypot(*(disp[k] - p)) > radius for p in peaks):
            peaks.append(disp[k])

    def total_iou(shift: npt.NDArray[np.float64]) -> float:
        ai, _, iou = _pair_ious(a, b, a_cls, b_cls, (float(shift[0]), float(shift[1])))
        if len(ai) == 0:
            return 0.0
        best = np.zeros(len(a))
        np.maximum.at(best, ai, iou)
        return float(best.sum())

    scores = [total_iou(p) for p in peaks]
    best = peaks[int(np.argmax(scores))]
    # refine: median displacement of the pairs that overlap well under the best peak
    ai, bj, iou = _pair_ious(a, b, a_cls, b_cls, (float(best[0]), float(best[1])))
    good = iou >= max(min_iou, 0.5)
    if good.sum() >= MIN_SHIFT_PAIRS:
        refined = np.median(cb[bj[good]] - ca[ai[good]], axis=0)
        if total_iou(refined) >= total_iou(best):
            best = refined
    return (float(best[0]), float(best[1])), len(ii)


def match_objects(
    a: gpd.GeoSeries | npt.NDArray[np.object_],
    b: gpd.GeoSeries | npt.NDArray[np.object_],
    a_classes: Sequence[str] | npt.NDArray[np.object_],
    b_classes: Sequence[str] | npt.NDArray[np.object_],
    *,
    min_iou: float = 0.3,
    max_shift_m: float = 5.0,
) -> tuple[
    npt.NDArray[np.intp],
    npt.NDArray[np.intp],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    tuple[float, float],
    int,
]:
    """Match the objects of two dates one-to-one, class-aware, shift-tolerant.

    See :mod:`geoseg.compare` for the rule (shift estimate, candidates, Hungarian).

    Args:
        a: ``[N]`` polygons of the earlier date in a metric CRS (metres).
        b: ``[M]`` polygons of the later date in the same CRS.
        a_classes: ``[N]`` class names of ``a``.
        b_classes: ``[M]`` class names of ``b``.
        min_iou: IoU (after removing the shift) that makes two objects candidates.
        max_shift_m: largest georeferencing shift searched, in metres (0: none).

    Returns:
        ``(ia, ib, iou, distance_m, shift, voters)``: ``[K]`` matched indexes into ``a`` and
        ``b``, their IoU and centroid distance after removing the shift, the shift
        ``(dx, dy)`` of ``b`` relative to ``a`` in metres, and the number of candidate pairs
        that voted for it.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    ga = np.asarray(a, dtype=object)
    gb = np.asarray(b, dtype=object)
    la = np.asarray(a_classes, dtype=object)
    lb = np.asarray(b_classes, dtype=object)
    if len(la) != len(ga) or len(lb) != len(gb):
        raise ValueError("one class per geometry is needed")
    empty = np.zeros(0, dtype=np.intp)
    if len(ga) == 0 or len(gb) == 0:
        return empty, empty, np.zeros(0), np.zeros(0), (0.0, 0.0), 0
    ca = shapely.get_coordinates(shapely.centroid(ga))
    cb = shapely.get_coordinates(shapely.centroid(gb))
    shift, voters = _estimate_shift(
        ga, gb, la, lb, ca, cb, max_shift_m=max_shift_m, min_iou=min_iou
    )
    wa, wb = _widths(ga), _widths(gb)
    # candidates: overlapping pairs, and pairs closer than half the smaller width
    ai, bj, iou = _pair_ious(ga, gb, la, lb, shift)
    moved = ca + np.asarray(shift)
    near = cKDTree(cb).query_ball_point(moved, r=wa / 2)  # the rule needs dist < wa / 2
    ni = np.repeat(np.arange(len(ca)), [len(n) for n in near])
    nj = np.fromiter((j for n in near for j in n), dtype=np.intp, count=len(ni))
    sel = la[ni] == lb[nj]
    ni, nj = ni[sel], nj[sel]
    pi = np.concatenate([ai, ni])
    pj = np.concatenate([bj, nj])
    piou = np.concatenate([iou, np.zeros(len(ni))])
    key = pi.astype(np.int64) * len(gb) + pj
    key, first = np.unique(key, return_index=True)
    pi, pj = pi[first], pj[first]
    # the IoU of a pair found by both routes is the overlap route's (it comes first)
    piou = piou[first]
    dist = np.hypot(*(cb[pj] - moved[pi]).T)
    width = np.minimum(wa[pi], wb[pj])
    close = dist < width / 2
    ok = (piou >= min_iou) | close
    pi, pj, piou, dist, width = pi[ok], pj[ok], piou[ok], dist[ok], width[ok]
    score = np.maximum(piou, np.where(width > 0, 1.0 - dist / np.where(width > 0, width, 1), 0))
    score = np.maximum(score, 1e-6)
    if len(pi) == 0:
        return empty, empty, np.zeros(0), np.zeros(0), shift, voters
    n, m = len(ga), len(gb)
    graph = coo_matrix((np.ones(len(pi)), (pi, pj + n)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    out_i: list[int] = []
    out_j: list[int] = []
    pair_comp = comp[pi]
    order = np.argsort(pair_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
    for group in np.split(order, bounds):
        rows, ri = np.unique(pi[group], return_inverse=True)
        cols, ci = np.unique(pj[group], return_inverse=True)
        mat = np.zeros((len(rows), len(cols)))
        mat[ri, ci] = score[group]
        r, c = linear_sum_assignment(mat, maximize=True)
        keep = mat[r, c] > 0
        out_i += rows[r[keep]].tolist()
        out_j += cols[c[keep]].tolist()
    mi = np.asarray(out_i, dtype=np.intp)
    mj = np.asarray(out_j, dtype=np.intp)
    order = np.argsort(mi, kind="stable")
    mi, mj = mi[order], mj[order]
    pair_iou = dict(zip(zip(pi.tolist(), pj.tolist(), strict=True), piou.tolist(), strict=True))
    miou = np.asarray([pair_iou[(i, j)] for i, j in zip(mi.tolist(), mj.tolist(), strict=True)])
    mdist = np.hypot(*(cb[mj] - moved[mi]).T) if len(mi) else np.zeros(0)
    return mi, mj, miou.astype(float), np.asarray(mdist, dtype=float), shift, voters
