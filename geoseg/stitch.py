"""Cross-tile merging: per-tile detections in, one object per real object out.

Tiles overlap, so an object near a tile border is seen by several tiles: whole by some, cut into
*fragments* by others. A box-overlap merge gets this wrong both ways (it fuses touching
neighbours, whose boxes overlap, and keeps fragments whose boxes do not). :func:`stitch` instead
compares **masks**, and only where two tiles both see the scene:

1. **Shift** every detection from tile pixels to scene pixels (``tile.window.col_off/row_off``)
   and clip it to the part of its window that lies inside the scene.
2. **Fast path.** A detection whose mask box neither overlaps nor touches any other tile's window
   cannot have a counterpart; it is kept as is (no pixel work at all).
3. **Fragments.** A detection is a *fragment* when its mask touches an edge of its window that is
   not a scene edge (the tile cut it); otherwise it is *complete*.
4. **Matching.** Two detections from different tiles (of the same class unless ``class_agnostic``)
   are the same object when their masks agree **inside the intersection of the two windows**,
   the only region both tiles saw: pixel IoU of the two masks restricted to that region
   ``>= match_iou``. Touching neighbours have overlapping boxes but disjoint masks, so they never
   match. Candidate pairs come from an STRtree over mask boxes, and all restricted IoUs are
   computed at once (vectorised gathers over one flat buffer of mask pixels), so the cost grows
   about linearly with the number of detections. When two windows only *touch* (no overlap),
   the masks are compared across the seam: the fraction of edge pixels of the smaller profile
   with an 8-neighbour on the other side (see the note on zero overlap below).
5. **Merging.** Matches form groups (connected components). In a group with complete members,
   the complete members that match each other form one object, represented by the member whose
   tile *owns* it: its mask-box centre lies in that tile's core (ties: the member farthest from
   its window's cut edges, then the highest score); fragments of such a group are dropped, as
   they are parts of a complete member. A group of fragments only (an object cut by every tile
   that sees it, e.g. a building larger than a tile) becomes the union of the fragments, so an
   object spanning any number of tiles in both directions comes out as one.
6. **Duplicates left over** (e.g. two predictions of one object whose restricted IoU fell below
   ``match_iou``) are suppressed among the objects of the overlap zones by greedy mask-IoU NMS
   (``nms_iou``), class-aware by default; an unmatched fragment lying mostly
   (``>= nms_iou`` of its pixels) inside a larger object of the same class is dropped too.
   Duplicates *within* one tile are the predictor's business (its own NMS).

Scores of merged objects are combined as :class:`ScoreMode` says; the class of a merged object
is the one with the highest summed score among its members (without ``class_agnostic`` all
members share it).

Zero overlap: with ``overlap=0`` two different objects that touch exactly on a tile seam look
the same, to any stitcher, as one object cut by the seam (the tiles carry no identity), and are
merged. Use an overlap of at least the size of the objects to avoid this.

Masks stay cropped to their mask boxes throughout; the only arrays allocated per object are the
unions of fragment groups, of the size of the merged object.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.types import Detections, TileDetections

__all__ = ["ScoreMode", "stitch"]

logger = logging.getLogger(__name__)

#: Largest number of pixels gathered at once when computing mask intersections.
_PIXEL_BUDGET = 1_000_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class ScoreMode(StrEnum):
    """How the scores of the detections merged into one object are combined.

    * ``MAX``: the highest member score (default; a fragment seen at a tile edge often scores
      lower than the same object seen whole).
    * ``MEAN``: the plain mean of the member scores.
    * ``AREA_WEIGHTED``: the mean weighted by each member's mask pixel count.
    """

    MAX = "max"
    MEAN = "mean"
    AREA_WEIGHTED = "area_weighted"


@dataclass(slots=True)
class _Flat:
    """All detections of all tiles, shifted to scene pixels (length N each).

    ``tile`` indexes the list of tiles; ``mb`` are int64 mask boxes and ``boxes`` float64
    detection boxes, both clipped to the tile's valid region (window ∩ scene).
    """

    tile: IntArray
    boxes: FloatArray
    mb: IntArray
    scores: FloatArray
    labels: IntArray
    masks: list[npt.NDArray[Any]]


class _MaskBank:
    """A set of cropped masks packed into one flat buffer for vectorised pixel counts.

    Args:
        masks: bool arrays, ``masks[k].shape == (y2 - y1, x2 - x1)`` of ``mb[k]``.
        mb: int64 ``[K, 4]`` mask boxes in scene pixels.
    """

    def __init__(self, masks: Sequence[npt.NDArray[Any]], mb: IntArray) -> None:
        self.mb = mb
        self.w = mb[:, 2] - mb[:, 0]
        sizes = self.w * (mb[:, 3] - mb[:, 1])
        self.off = np.zeros(len(mb) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.off[1:])
        if len(masks):
            flat = np.concatenate([m.ravel() for m in masks]).astype(np.bool_, copy=False)
        else:
            flat = np.zeros(0, dtype=np.bool_)
        self.flat = flat
        # prefix sums: sum(flat[a:b]) == csum[b] - csum[a]
        dtype = np.int32 if len(flat) < 2**31 - 1 else np.int64
        self.csum: npt.NDArray[np.signedinteger[Any]] = np.zeros(len(flat) + 1, dtype=dtype)
        np.cumsum(flat, out=self.csum[1:])

    def areas(self) -> IntArray:
        """int64 ``[K]``: True pixels per mask."""
        return (self.csum[self.off[1:]] - self.csum[self.off[:-1]]).astype(np.int64)

    def rect_sums(self, item: IntArray, rects: IntArray) -> IntArray:
        """True pixels of mask ``item[q]`` inside ``rects[q]`` (scene px, within its box)."""
        if len(item) == 0:
            return np.zeros(0, dtype=np.int64)
        heights = rects[:, 3] - rects[:, 1]
        rep, local = _expand(heights)
        k = item[rep]
        start = (
            self.off[k]
            + (rects[rep, 1] + local - self.mb[k, 1]) * self.w[k]
            + (rects[rep, 0] - self.mb[k, 0])
        )
        row = self.csum[start + (rects[rep, 2] - rects[rep, 0])] - self.csum[start]
        return np.bincount(rep, weights=row, minlength=len(item)).astype(np.int64)

    def intersections(self, ia: IntArray, ib: IntArray, rects: IntArray) -> IntArray:
        """Pixels True in both masks ``ia[q]`` and ``ib[q]`` inside ``rects[q]`` (scene px)."""
        out = np.zeros(len(ia), dtype=np.int64)
        if len(ia) == 0:
            return out
        rw = rects[:, 2] - rects[:, 0]
        rh = rects[:, 3] - rects[:, 1]
        # flat index of each rectangle's top-left pixel in either mask
        base_a = self.off[ia] + (rects[:, 1] - self.mb[ia, 1]) * self.w[ia] + rects[:, 0]
        base_a -= self.mb[ia, 0]
        base_b = self.off[ib] + (rects[:, 1] - self.mb[ib, 1]) * self.w[ib] + rects[:, 0]
        base_b -= self.mb[ib, 0]
        npx = rw * rh
        for lo, hi in _chunks(npx, _PIXEL_BUDGET):
            q, dy = _expand(rh[lo:hi])
            q += lo
            row_a = base_a[q] + dy * self.w[ia[q]]  # flat index of each row's first pixel
            row_b = base_b[q] + dy * self.w[ib[q]]
            row, dx = _expand(rw[q])
            both = self.flat[row_a[row] + dx] & self.flat[row_b[row] + dx]
            csum = np.zeros(len(both) + 1, dtype=np.int64)
            np.cumsum(both, out=csum[1:])
            ends = np.cumsum(npx[lo:hi])
            out[lo:hi] = csum[ends] - csum[ends - npx[lo:hi]]
        return out


def _expand(lengths: IntArray) -> tuple[IntArray, IntArray]:
    """For runs of the given lengths: run index and position within the run, per element."""
    lengths = lengths.astype(np.int64, copy=False)
    rep = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    local = np.arange(len(rep), dtype=np.int64) - starts[rep]
    return rep, local


def _chunks(sizes: IntArray, budget: int) -> list[tuple[int, int]]:
    """Split ``range(len(sizes))`` into consecutive slices whose sizes sum to about ``budget``."""
    if len(sizes) == 0:
        return []
    cum = np.cumsum(sizes)
    out: list[tuple[int, int]] = []
    lo = 0
    while lo < len(sizes):
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + budget, side="right"))
        hi = max(hi, lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


def _box_pairs(mb: IntArray) -> tuple[IntArray, IntArray]:
    """Index pairs ``a < b`` whose boxes intersect or touch (closed intersection)."""
    if len(mb) < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    import shapely

    geoms = shapely.box(mb[:, 0], mb[:, 1], mb[:, 2], mb[:, 3])
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms)  # envelope test only: exact for boxes, closed
    keep = a < b
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def _intersect(p: IntArray, q: IntArray) -> IntArray:
    """Row-wise intersection of ``[.., 4]`` boxes (may come out empty or inverted)."""
    return np.stack(
        [
            np.maximum(p[:, 0], q[:, 0]),
            np.maximum(p[:, 1], q[:, 1]),
            np.minimum(p[:, 2], q[:, 2]),
            np.minimum(p[:, 3], q[:, 3]),
        ],
        axis=1,
    )


def _positive(r: IntArray) -> BoolArray:
    return (r[:, 2] > r[:, 0]) & (r[:, 3] > r[:, 1])


def _gather(
    tile_detections: Iterable[TileDetections], scene_width: int, scene_height: int
) -> tuple[IntArray, IntArray, _Flat, tuple[str, ...]]:
    """Collect and shift all detections; return (valid windows, cores, flat, classes)."""
    windows: list[tuple[int, int, int, int]] = []
    cores: list[tuple[int, int, int, int]] = []
    parts: list[TileDetections] = []
    classes: tuple[str, ...] | None = None
    for i, td in enumerate(tile_detections):
        if td.tile is None:
            raise ValueError(
                f"stitch: tile_detections[{i}].tile is None; every TileDetections must carry "
                "the TileSpec it came from (set tile=tiles[i].spec in the predictor)"
            )
        if len(td) and td.classes:
            if classes is None:
                classes = td.classes
            elif td.classes != classes:
                raise ValueError(
                    f"stitch: tile_detections[{i}] has classes {td.classes}, earlier tiles "
                    f"{classes}; all tiles must come from one predictor"
                )
        w = td.tile.window
        windows.append(
            (
                max(w.col_off, 0),
                max(w.row_off, 0),
                min(w.col_end, scene_width),
                min(w.row_end, scene_height),
            )
        )
        c = td.tile.core
        cores.append((c.col_off, c.row_off, c.col_end, c.row_end))
        parts.append(td)
    win = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    core = np.asarray(cores, dtype=np.int64).reshape(-1, 4)
    counts = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    tile = np.repeat(np.arange(len(parts), dtype=np.int64), counts)
    if counts.sum() == 0:
        flat = _Flat(
            tile=tile,
            boxes=np.zeros((0, 4)),
            mb=np.zeros((0, 4), dtype=np.int64),
            scores=np.zeros(0),
            labels=np.zeros(0, dtype=np.int64),
            masks=[],
        )
        return win, core, flat, classes or ()
    shift = np.asarray(
        [(p.tile.window.col_off, p.tile.window.row_off) for p in parts if p.tile is not None],
        dtype=np.int64,
    )[tile]
    shift4 = np.concatenate([shift, shift], axis=1)
    mb = np.concatenate([p.mask_boxes for p in parts if len(p)]).astype(np.int64) + shift4
    boxes = np.concatenate([p.boxes for p in parts if len(p)]).astype(np.float64) + shift4
    scores = np.concatenate([p.scores for p in parts if len(p)]).astype(np.float64)
    labels = np.concatenate([p.labels for p in parts if len(p)]).astype(np.int64)
    masks: list[npt.NDArray[Any]] = [m for p in parts for m in p.masks]

    shapes = np.asarray([m.shape for m in masks], dtype=np.int64).reshape(-1, 2)
    want = np.stack([mb[:, 3] - mb[:, 1], mb[:, 2] - mb[:, 0]], axis=1)
    bad = np.flatnonzero((shapes != want).any(axis=1))
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"stitch: a mask of tile {parts[int(tile[k])].tile} has shape {tuple(shapes[k])} "
            f"but its mask box needs {tuple(want[k])}; crop masks to their mask_boxes"
        )
    # clip to the valid region (window ∩ scene) of each tile
    v = win[tile]
    clipped = _intersect(mb, v)
    nonempty = _positive(clipped)
    for k in np.flatnonzero(nonempty & (clipped != mb).any(axis=1)).tolist():
        x0, y0 = int(mb[k, 0]), int(mb[k, 1])
        cx0, cy0, cx1, cy1 = clipped[k].tolist()
        masks[k] = masks[k][cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    vf = v.astype(np.float64)
    boxes = np.concatenate(
        [np.maximum(boxes[:, :2], vf[:, :2]), np.minimum(boxes[:, 2:], vf[:, 2:])], axis=1
    )
    keep = np.flatnonzero(nonempty)
    if len(keep) < len(mb):
        logger.debug("stitch: dropped %d detections outside the scene", len(mb) - len(keep))
    flat = _Flat(
        tile=tile[keep],
        boxes=boxes[keep],
        mb=clipped[keep],
        scores=scores[keep],
        labels=labels[keep],
        masks=[masks[k] for k in keep],
    )
    return win, core, flat, classes or ()


def _tile_neighbours(win: IntArray) -> tuple[IntArray, IntArray]:
    """Directed pairs (t, u), t != u, of valid windows that overlap or touch."""
    a, b = _box_pairs(win)
    keep = _positive(win[a]) & _positive(win[b])
    a, b = a[keep], b[keep]
    return np.concatenate([a, b]), np.concatenate([b, a])


def _contact(flat: _Flat, win: IntArray) -> BoolArray:
    """Whether each detection's mask box overlaps or touches another tile's window."""
    n = len(flat.tile)
    contact = np.zeros(n, dtype=np.bool_)
    if n == 0 or len(win) < 2:
        return contact
    t_of, u_of = _tile_neighbours(win)
    order = np.argsort(t_of, kind="stable")
    t_of, u_of = t_of[order], u_of[order]
    # detections are grouped by tile in input order
    starts = np.searchsorted(flat.tile, np.arange(len(win)), side="left")
    ends = np.searchsorted(flat.tile, np.arange(len(win)), side="right")
    mb = flat.mb
    for t, u in zip(t_of.tolist(), u_of.tolist(), strict=True):
        s, e = starts[t], ends[t]
        if s == e:
            continue
        b = mb[s:e]
        w = win[u]
        contact[s:e] |= (
            (b[:, 0] <= w[2]) & (b[:, 2] >= w[0]) & (b[:, 1] <= w[3]) & (b[:, 3] >= w[1])
        )
    return contact


def _cut_flags(
    masks: Sequence[npt.NDArray[Any]], mb: IntArray, v: IntArray, width: int, height: int
) -> BoolArray:
    """Whether each mask touches an edge of its valid window that is not a scene edge."""
    left = (mb[:, 0] == v[:, 0]) & (v[:, 0] > 0)
    top = (mb[:, 1] == v[:, 1]) & (v[:, 1] > 0)
    right = (mb[:, 2] == v[:, 2]) & (v[:, 2] < width)
    bottom = (mb[:, 3] == v[:, 3]) & (v[:, 3] < height)
    cut = np.zeros(len(mb), dtype=np.bool_)
    for k in np.flatnonzero(left | top | right | bottom).tolist():
        m = masks[k]
        cut[k] = bool(
            (left[k] and m[:, 0].any())
            or (right[k] and m[:, -1].any())
            or (top[k] and m[0, :].any())
            or (bottom[k] and m[-1, :].any())
        )
    return cut


def _seam_score(
    ma: npt.NDArray[Any], mba: IntArray, mbb_: IntArray, mb_: npt.NDArray[Any], vertical: bool
) -> float:
    """Contact score of two masks on either side of a seam (a before b along the axis).

    The edge profile of each mask next to the seam is compared with the other's; the score is
    the larger of the two fractions of profile pixels that have an 8-neighbour across the seam.
    """
    if vertical:
        pa, pb = ma[:, -1], mb_[:, 0]
        oa, ob = int(mba[1]), int(mbb_[1])
    else:
        pa, pb = ma[-1, :], mb_[0, :]
        oa, ob = int(mba[0]), int(mbb_[0])
    ia = np.flatnonzero(pa) + oa
    ib = np.flatnonzero(pb) + ob
    if len(ia) == 0 or len(ib) == 0:
        return 0.0
    lo = min(ia.min(), ib.min()) - 1
    hi = max(ia.max(), ib.max()) + 2
    da = np.zeros(hi - lo, dtype=np.bool_)
    db = np.zeros(hi - lo, dtype=np.bool_)
    for d in (-1, 0, 1):
        da[ia - lo + d] = True
        db[ib - lo + d] = True
    fa = float(db[ia - lo].sum()) / len(ia)
    fb = float(da[ib - lo].sum()) / len(ib)
    return max(fa, fb)


def _match_pairs(
    flat: _Flat,
    kidx: IntArray,
    bank: _MaskBank,
    win: IntArray,
    *,
    match_iou: float,
    class_aware: bool,
) -> tuple[IntArray, IntArray]:
    """Pairs (positions into ``kidx``) of detections from different tiles that match."""
    kmb = flat.mb[kidx]
    a, b = _box_pairs(kmb)
    ta, tb = flat.tile[kidx[a]], flat.tile[kidx[b]]
    keep = ta != tb
    if class_aware:
        keep &= flat.labels[kidx[a]] == flat.labels[kidx[b]]
    a, b, ta, tb = a[keep], b[keep], ta[keep], tb[keep]
    shared = _intersect(win[ta], win[tb])
    overlap = _positive(shared)

    # windows that overlap: restricted IoU inside the shared region
    oa, ob, so = a[overlap], b[overlap], shared[overlap]
    r = _intersect(_intersect(kmb[oa], kmb[ob]), so)
    pos = _positive(r)
    oa, ob, so, r = oa[pos], ob[pos], so[pos], r[pos]
    ga, gb = kidx[oa], kidx[ob]
    inter = bank.intersections(ga, gb, r)
    sa = bank.rect_sums(ga, _intersect(kmb[oa], so))
    sb = bank.rect_sums(gb, _intersect(kmb[ob], so))
    union = sa + sb - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    hit = iou >= match_iou
    out_a, out_b = [oa[hit]], [ob[hit]]

    # windows that only touch along a seam (zero overlap)
    vertical = (shared[:, 2] == shared[:, 0]) & (shared[:, 3] > shared[:, 1])
    horizontal = (shared[:, 3] == shared[:, 1]) & (shared[:, 2] > shared[:, 0])
    seam_a: list[int] = []
    seam_b: list[int] = []
    for k in np.flatnonzero(~overlap & (vertical | horizontal)).tolist():
        p, q = int(a[k]), int(b[k])
        ax = 0 if vertical[k] else 1
        c = int(shared[k, ax])
        # order the pair so that p lies before the seam, q after it
        if win[ta[k], ax + 2] != c:
            p, q = q, p
        mbp, mbq = kmb[p], kmb[q]
        if mbp[ax + 2] != c or mbq[ax] != c:
            continue
        o = 1 - ax
        if min(mbp[o + 2], mbq[o + 2]) <= max(mbp[o], mbq[o]):
            continue
        score = _seam_score(
            flat.masks[int(kidx[p])], mbp, mbq, flat.masks[int(kidx[q])], bool(vertical[k])
        )
        if score >= match_iou:
            seam_a.append(p)
            seam_b.append(q)
    out_a.append(np.asarray(seam_a, dtype=np.int64))
    out_b.append(np.asarray(seam_b, dtype=np.int64))
    return np.concatenate(out_a), np.concatenate(out_b)


def _components(n: int, a: IntArray, b: IntArray) -> IntArray:
    """Connected-component label of each of ``n`` nodes given undirected edges."""
    if len(a) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, lab = connected_components(graph, directed=False)
    return lab.astype(np.int64)


def _combine_scores(
    unit: IntArray, scores: FloatArray, areas: IntArray, n_units: int, mode: ScoreMode
) -> FloatArray:
    """Per unit: the member scores combined by ``mode``."""
    if mode is ScoreMode.MAX:
        out = np.full(n_units, -np.inf)
        np.maximum.at(out, unit, scores)
        return out
    if mode is ScoreMode.MEAN:
        s = np.bincount(unit, weights=scores, minlength=n_units)
        c = np.bincount(unit, minlength=n_units)
        return np.asarray(s / np.maximum(c, 1), dtype=np.float64)
    w = areas.astype(np.float64)
    s = np.bincount(unit, weights=scores * w, minlength=n_units)
    c = np.bincount(unit, weights=w, minlength=n_units)
    return np.asarray(np.where(c > 0, s / np.maximum(c, 1e-12), 0.0), dtype=np.float64)


def _vote_labels(unit: IntArray, labels: IntArray, scores: FloatArray, n_units: int) -> IntArray:
    """Per unit: the label with the highest summed member score."""
    n_lab = int(labels.max()) + 1 if len(labels) else 1
    tally = np.bincount(unit * n_lab + labels, weights=scores + 1e-9, minlength=n_units * n_lab)
    return np.asarray(tally.reshape(n_units, n_lab).argmax(axis=1), dtype=np.int64)


@dataclass(slots=True)
class _Out:
    """Objects produced from the overlap zones, before the final NMS."""

    boxes: FloatArray
    mb: IntArray
    scores: FloatArray
    labels: IntArray
    masks: list[npt.NDArray[Any]]
    lone_fragment: BoolArray


def _merge(
    flat: _Flat,
    kidx: IntArray,
    bank: _MaskBank,
    win: IntArray,
    core: IntArray,
    ma: IntArray,
    mb_: IntArray,
    *,
    width: int,
    height: int,
    score_mode: ScoreMode,
) -> _Out:
    """Turn matched groups of overlap-zone detections into objects (see the module doc)."""
    n = len(kidx)
    tiles = flat.tile[kidx]
    v = win[tiles]
    boxes_mb = flat.mb[kidx]
    cut = _cut_flags([flat.masks[int(k)] for k in kidx], boxes_mb, v, width, height)
    comp = _components(n, ma, mb_)
    has_complete = np.zeros(n, dtype=np.bool_)
    np.logical_or.at(has_complete, comp, ~cut)
    complete_edge = ~cut[ma] & ~cut[mb_]
    sub = _components(n, ma[complete_edge], mb_[complete_edge])

    # units: complete members grouped by `sub`; fragments of all-fragment groups by `comp`
    is_c = ~cut
    is_u = cut & ~has_complete[comp]
    member = np.flatnonzero(is_c | is_u)
    key = np.where(is_c[member], sub[member], n + comp[member])
    uniq, unit = np.unique(key, return_inverse=True)
    unit = unit.astype(np.int64)
    n_units = len(uniq)
    union_unit = uniq >= n

    areas = bank.areas()[kidx]
    scores = flat.scores[kidx[member]]
    labels = flat.labels[kidx[member]]
    out_scores = _combine_scores(unit, scores, areas[member], n_units, score_mode)
    out_labels = _vote_labels(unit, labels, scores, n_units)
    size = np.bincount(unit, minlength=n_units)

    # representative of complete units: owned by its tile's core, then margin, then score
    mbm = boxes_mb[member]
    cx2 = mbm[:, 0] + mbm[:, 2]  # twice the centre, to stay in integers
    cy2 = mbm[:, 1] + mbm[:, 3]
    cm = core[tiles[member]]
    owned = (
        (2 * cm[:, 0] <= cx2) & (cx2 < 2 * cm[:, 2]) & (2 * cm[:, 1] <= cy2) & (cy2 < 2 * cm[:, 3])
    )
    vm = v[member]
    big = np.int64(1 << 40)
    margin = np.minimum.reduce(
        [
            np.where(vm[:, 0] > 0, mbm[:, 0] - vm[:, 0], big),
            np.where(vm[:, 1] > 0, mbm[:, 1] - vm[:, 1], big),
            np.where(vm[:, 2] < width, vm[:, 2] - mbm[:, 2], big),
            np.where(vm[:, 3] < height, vm[:, 3] - mbm[:, 3], big),
        ]
    )
    order = np.lexsort((-scores, -margin, ~owned, unit))
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = unit[order][1:] != unit[order][:-1]
    rep = np.empty(n_units, dtype=np.int64)
    rep[unit[order][first]] = member[order][first]

    out_boxes = flat.boxes[kidx[rep]].copy()
    out_mb = boxes_mb[rep].copy()
    masks: list[npt.NDArray[Any]] = [flat.masks[int(kidx[r])] for r in rep]
    lone = union_unit & (size == 1)

    # unions of fragment groups
    multi = np.flatnonzero(union_unit & (size > 1))
    if len(multi):
        by_unit = np.argsort(unit, kind="stable")
        bounds = np.searchsorted(unit[by_unit], np.arange(n_units + 1))
        for u in multi.tolist():
            mem = member[by_unit[bounds[u] : bounds[u + 1]]]
            mbs = boxes_mb[mem]
            x0, y0 = int(mbs[:, 0].min()), int(mbs[:, 1].min())
            x1, y1 = int(mbs[:, 2].max()), int(mbs[:, 3].max())
            canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.bool_)
            for k, box in zip(mem.tolist(), mbs.tolist(), strict=True):
                canvas[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0] |= flat.masks[
                    int(kidx[k])
                ]
            masks[u] = canvas
            out_mb[u] = (x0, y0, x1, y1)
            fb = flat.boxes[kidx[mem]]
            out_boxes[u] = (fb[:, 0].min(), fb[:, 1].min(), fb[:, 2].max(), fb[:, 3].max())
    return _Out(
        boxes=out_boxes,
        mb=out_mb,
        scores=out_scores,
        labels=out_labels,
        masks=masks,
        lone_fragment=lone,
    )


def _suppress(out: _Out, *, nms_iou: float, class_aware: bool) -> BoolArray:
    """Keep-flags after mask-IoU NMS and removal of fragments lying inside other objects."""
    n = len(out.scores)
    keep = np.ones(n, dtype=np.bool_)
    if n < 2:
        return keep
    bank = _MaskBank(out.masks, out.mb)
    a, b = _box_pairs(out.mb)
    if class_aware:
        same = out.labels[a] == out.labels[b]
        a, b = a[same], b[same]
    r = _intersect(out.mb[a], out.mb[b])
    pos = _positive(r)
    a, b, r = a[pos], b[pos], r[pos]
    if len(a) == 0:
        return keep
    inter = bank.intersections(a, b, r)
    areas = bank.areas()
    aa, ab = areas[a], areas[b]
    iou = inter / np.maximum(aa + ab - inter, 1)

    # a lone fragment mostly inside a larger object is a leftover of that object
    frag_a = out.lone_fragment[a] & (aa <= ab) & (inter >= nms_iou * np.maximum(aa, 1))
    frag_b = out.lone_fragment[b] & (ab < aa) & (inter >= nms_iou * np.maximum(ab, 1))
    keep[a[frag_a]] = False
    keep[b[frag_b]] = False

    # greedy NMS: rank by score, then area, then index
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), -areas, -out.scores))] = np.arange(n)
    dup = iou >= nms_iou
    hi = np.where(rank[a] < rank[b], a, b)[dup]
    lo = np.where(rank[a] < rank[b], b, a)[dup]
    for h, low in zip(
        *(x[np.argsort(rank[hi], kind="stable")].tolist() for x in (hi, lo)), strict=True
    ):
        if keep[h]:
            keep[low] = False
    return keep


def stitch(
    tile_detections: Iterable[TileDetections],
    *,
    scene_width: int,
    scene_height: int,
    match_iou: float = 0.5,
    nms_iou: float = 0.5,
    class_agnostic: bool = False,
    score_mode: ScoreMode = ScoreMode.MAX,
) -> Detections:
    """Merge per-tile detections into one set of scene objects (see the module docstring).

    Args:
        tile_detections: the predictor's output, one :class:`~geoseg.types.TileDetections` per
            tile (boxes and mask boxes in **tile pixels**, ``tile`` set); typically all tiles
            of one :func:`geoseg.tiling.make_grid` grid. Consumed once.
        scene_width: scene width in pixels; detections are clipped to the scene.
        scene_height: scene height in pixels.
        match_iou: two detections from different tiles are one object when the IoU of their
            masks inside the intersection of the two tiles' windows is at least this (for
            windows that only touch: the seam contact score described in the module doc).
        nms_iou: leftover duplicates with a full-mask IoU at least this are suppressed (the
            lower score goes), and unmatched fragments with at least this fraction of their
            pixels inside a larger object are dropped.
        class_agnostic: match and suppress detections whatever their label (the merged
            object takes the best-scoring member's label); ``False``: only detections of the
            same label are matched and suppressed.
        score_mode: how the scores of merged detections are combined.

    Returns:
        :class:`~geoseg.types.Detections` in **scene pixels**: float32 boxes ``[M, 4]``,
        scores ``[M]``, 0-based labels ``[M]`` into the tiles' ``classes``, int32 mask boxes
        ``[M, 4]`` and masks cropped to them, sorted by mask box top, then left.

    Raises:
        ValueError: a ``TileDetections`` without ``tile``, tiles with different ``classes``,
            a mask whose shape does not match its mask box, or bad thresholds.
    """
    if scene_width <= 0 or scene_height <= 0:
        raise ValueError(f"stitch: scene size must be positive, got {scene_width} x {scene_height}")
    for name, val in (("match_iou", match_iou), ("nms_iou", nms_iou)):
        if not 0.0 < val <= 1.0:
            raise ValueError(f"stitch: {name} must be in (0, 1], got {val}")
    score_mode = ScoreMode(score_mode)
    win, core, flat, classes = _gather(tile_detections, scene_width, scene_height)
    n = len(flat.tile)
    if n == 0:
        return Detections.empty(classes)

    bank = _MaskBank(flat.masks, flat.mb)
    nonempty = bank.areas() > 0
    contact = _contact(flat, win)
    kidx = np.flatnonzero(contact & nonempty).astype(np.int64)
    fast = np.flatnonzero(~contact & nonempty)
    if not nonempty.all():
        logger.debug("stitch: dropped %d detections with empty masks", int((~nonempty).sum()))
    logger.debug("stitch: %d detections, %d in overlap zones", n, len(kidx))

    parts_boxes = [flat.boxes[fast]]
    parts_mb = [flat.mb[fast]]
    parts_scores = [flat.scores[fast]]
    parts_labels = [flat.labels[fast]]
    masks: list[npt.NDArray[Any]] = [flat.masks[int(k)] for k in fast]
    if len(kidx):
        ma, mb_ = _match_pairs(
            flat, kidx, bank, win, match_iou=match_iou, class_aware=not class_agnostic
        )
        out = _merge(
            flat,
            kidx,
            bank,
            win,
            core,
            ma,
            mb_,
            width=scene_width,
            height=scene_height,
            score_mode=score_mode,
        )
        keep = np.flatnonzero(_suppress(out, nms_iou=nms_iou, class_aware=not class_agnostic))
        logger.debug(
            "stitch: %d overlap-zone detections -> %d objects (%d after NMS)",
            len(kidx),
            len(out.scores),
            len(keep),
        )
        parts_boxes.append(out.boxes[keep])
        parts_mb.append(out.mb[keep])
        parts_scores.append(out.scores[keep])
        parts_labels.append(out.labels[keep])
        masks.extend(out.masks[int(k)] for k in keep)

    mbox = np.concatenate(parts_mb)
    scores = np.concatenate(parts_scores)
    order = np.lexsort((-scores, mbox[:, 0], mbox[:, 1]))
    return Detections(
        boxes=np.concatenate(parts_boxes)[order].astype(np.float32),
        scores=scores[order].astype(np.float32),
        labels=np.concatenate(parts_labels)[order].astype(np.int64),
        mask_boxes=mbox[order].astype(np.int32),
        masks=tuple(masks[int(k)] for k in order),
        classes=classes,
    )
