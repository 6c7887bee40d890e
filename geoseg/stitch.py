"""Cross-tile merging: per-tile detections in, one object per real object out.

Tiles overlap, so an object near a tile border is seen by several tiles: whole by some, cut into
*partial views* by others. A box-overlap merge gets this wrong both ways (it fuses touching
neighbours, whose boxes overlap, and keeps fragments whose boxes do not). :func:`stitch` instead
compares **masks**, and only where two tiles both see the scene. Real models add two troubles:
neighbouring tiles draw one object's outline a pixel or two apart, and a tile that sees half a
bus predicts half a bus. So a partial view is treated as *partial evidence*, judged by how it
fits an object another tile saw whole, not only by IoU.

1. **Shift** every detection from tile pixels to scene pixels (``tile.window.col_off/row_off``)
   and clip it to the part of its window that lies inside the scene.
2. **Fragments within a tile.** A detection with ``>= contain_frac`` of its pixels inside a
   larger detection of the same tile (and class) is the model's own fragment of it: dropped
   (the larger one keeps its mask and class and takes the better score). This also applies
   when the whole scene is one tile. With ``class_agnostic``, two detections of different
   classes with a mask IoU ``>= nms_iou`` in one tile are one object outlined as two classes
   (the model's per-class NMS keeps both): the lower-scored one goes; and a detection that
   absorbs a better-scored one of another class takes its class with its score, so a merged
   object always has its best-scoring class.
3. **Fast path.** A detection whose mask box, grown by ``edge_margin`` px, meets no other
   tile's window cannot have a counterpart; it is kept as is (no pixel work at all).
4. **Partial or whole.** A detection is a *partial view* when its mask comes within
   ``edge_margin`` px (default 2) of an edge of its window that is not a scene edge (the tile
   cut it, or may have); otherwise it is *seen whole*.
5. **Matching.** Two detections from different tiles (of the same class unless
   ``class_agnostic``) are one object when
   * their masks agree **inside the intersection of the two windows**, the only region both
     tiles saw: pixel IoU of the two masks restricted to that region ``>= match_iou``
     (touching neighbours have overlapping boxes but disjoint masks, so they never match); or
   * one is a partial view and the other is seen whole, the partial view lies inside the
     whole one's window (that tile saw all of it) and either (a) the *containment*, the
     intersection over the smaller mask, counting pixels within ``(edge_margin + 1) // 2``
     px (1 by default) of the other mask, is ``>= contain_frac`` (the whole copy's share
     counts only when at least ``1 - contain_frac`` of the partial view lies near it), or
     (b) the whole copy lies across the partial view's cut edge where the partial view meets
     it and ``1 - contain_frac`` of the partial view lies within ``edge_margin`` px of it (a
     *sliver* a few pixels thick has too few pixels for (a)). A partial view that
     matched another tile's view of its object is never absorbed into a different detection
     of that tile.
   Candidate pairs come from an STRtree over mask boxes, and all restricted IoUs are computed
   at once (vectorised gathers over one flat buffer of mask pixels), so the cost grows about
   linearly with the number of detections.
6. **Merging.** Matches form groups (connected components). In a group with whole members,
   the whole members that match each other form one object, represented by the member whose
   tile *owns* it: its mask-box centre lies in that tile's core (ties: the member farthest from
   its window's cut edges, then the highest score); the group's partial views are absorbed:
   dropped, as they are parts of a whole member. A group of partial views only (an object cut
   by every tile that sees it, e.g. a building larger than a tile) becomes the union of the
   views, so an object spanning any number of tiles in both directions comes out as one.
7. **Duplicates left over** (e.g. two predictions of one object whose restricted IoU fell below
   ``match_iou``) are suppressed among the objects of the overlap zones by greedy mask-IoU NMS
   (``nms_iou``), class-aware by default; an object with ``>= contain_frac`` of its pixels
   inside a larger one of its class is dropped (the larger takes the better score), and so is
   an unmatched partial view with ``>= nms_iou`` of its pixels inside a larger object.

**What a merged object is made of.** Mask and box: those of the representative whole copy,
or the union of the views for an object cut by every tile. Class: that of the best-scoring
detection merged into it (whole copies and the partial views absorbed into them; without
``class_agnostic`` all members share it), so the class always comes with the best score.
Score: the scores of the whole copies and of the partial views absorbed into them (each
partial view counts for the object it fits best), combined as :class:`ScoreMode` says
(default: the best score).

**Zero overlap is refused.** With ``overlap=0`` two different objects touching exactly on a tile
seam give the tiles the same detections, to any stitcher, as one object cut by the seam (the
tiles carry no identity): merging fuses touching neighbours (boats in a marina), not merging
splits every object a seam cuts. :func:`stitch` raises ``ValueError`` for two windows that meet
edge to edge with no third window across their seam; use an overlap of at least the size of
the largest object.

Masks stay cropped to their mask boxes throughout; the only arrays allocated per object are the
unions of partial-view groups, of the size of the merged object.
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

#: Default ``edge_margin`` of :func:`stitch`: a mask with at most this many empty pixels
#: between it and a cut edge of its window is a partial view of its object.
EDGE_MARGIN = 2

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


def _refuse_seams(win: IntArray) -> None:
    """Raise where two valid windows meet edge to edge and no window covers their seam.

    ``win``: ``[T, 4]`` valid windows in scene pixels. A seam (a shared edge of two windows
    that do not overlap) is fine when a third window straddles all of it (``make_grid`` with
    an overlap can place a last tile so that two non-neighbours touch).
    """
    a, b = _box_pairs(win)
    keep = _positive(win[a]) & _positive(win[b])
    a, b = a[keep], b[keep]
    shared = _intersect(win[a], win[b])
    w = shared[:, 2] - shared[:, 0]
    h = shared[:, 3] - shared[:, 1]
    for k in np.flatnonzero(((w == 0) & (h > 0)) | ((h == 0) & (w > 0))).tolist():
        x0, y0, x1, y1 = shared[k].tolist()
        if x0 == x1:  # vertical seam at x0: a window must reach across it, over y0..y1
            cover = (win[:, 0] < x0) & (win[:, 2] > x0) & (win[:, 1] <= y0) & (win[:, 3] >= y1)
        else:
            cover = (win[:, 1] < y0) & (win[:, 3] > y0) & (win[:, 0] <= x0) & (win[:, 2] >= x1)
        if not cover.any():
            raise ValueError(
                f"stitch: tiles {int(a[k])} and {int(b[k])} touch without overlapping "
                "(overlap 0); two objects touching on such a seam cannot be told from one "
                "object cut by it, so instance outputs need overlapping tiles: use an overlap "
                "of at least the largest object's size"
            )


def _tile_neighbours(win: IntArray) -> tuple[IntArray, IntArray]:
    """Directed pairs (t, u), t != u, of valid windows that overlap or touch."""
    a, b = _box_pairs(win)
    keep = _positive(win[a]) & _positive(win[b])
    a, b = a[keep], b[keep]
    return np.concatenate([a, b]), np.concatenate([b, a])


def _contact(flat: _Flat, win: IntArray, margin: int) -> BoolArray:
    """Whether each detection's mask box, grown by ``margin`` px, meets another tile's window."""
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
            (b[:, 0] - margin <= w[2])
            & (b[:, 2] + margin >= w[0])
            & (b[:, 1] - margin <= w[3])
            & (b[:, 3] + margin >= w[1])
        )
    return contact


#: Bits of :func:`_partial_flags` for the left, top, right and bottom window edges.
_EDGE_BITS = (1, 2, 4, 8)


def _partial_flags(
    bank: _MaskBank,
    item: IntArray,
    v: IntArray,
    width: int,
    height: int,
    margin: int,
) -> npt.NDArray[np.int8]:
    """Partial views: masks at most ``margin`` px from a cut edge of their window.

    ``item``: ``[K]`` masks of ``bank``; ``v``: ``[K, 4]`` their valid windows (scene px). A
    cut edge is an edge of the valid window that is not a scene edge; the gap is the number
    of empty pixels between the mask's own pixels and it (a mask box need not be tight), so
    ``margin=0`` flags only masks touching the edge.

    Returns:
        int8 ``[K]``: the cut edges each mask is near, as bits (:data:`_EDGE_BITS`: left 1,
        top 2, right 4, bottom 8); 0 = seen whole.
    """
    reach = margin + 1
    mb = bank.mb[item]
    out = np.zeros(len(item), dtype=np.int8)
    bands = (
        (v[:, 0] > 0, (v[:, 0], mb[:, 1], v[:, 0] + reach, mb[:, 3])),
        (v[:, 1] > 0, (mb[:, 0], v[:, 1], mb[:, 2], v[:, 1] + reach)),
        (v[:, 2] < width, (v[:, 2] - reach, mb[:, 1], v[:, 2], mb[:, 3])),
        (v[:, 3] < height, (mb[:, 0], v[:, 3] - reach, mb[:, 2], v[:, 3])),
    )
    for bit, (cut, band) in zip(_EDGE_BITS, bands, strict=True):
        rect = _intersect(np.stack(band, axis=1), mb)  # the band next to the edge, in the box
        k = np.flatnonzero(cut & _positive(rect))
        hit = bank.rect_sums(item[k], rect[k]) > 0
        out[k[hit]] |= np.int8(bit)
    return out


def _match_pairs(
    flat: _Flat,
    kidx: IntArray,
    bank: _MaskBank,
    win: IntArray,
    edges: npt.NDArray[np.int8],
    pairs: tuple[IntArray, IntArray],
    *,
    match_iou: float,
    contain_frac: float,
    margin: int,
    class_aware: bool,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Edges between detections of different tiles that are one object.

    ``edges[k]``: the cut edges ``kidx[k]`` is near (:func:`_partial_flags`; > 0: partial);
    ``pairs``: positions into ``kidx`` of the detections whose mask boxes meet.
    An edge is either a *match* (restricted mask IoU inside the two windows' intersection
    ``>= match_iou``) or an *absorption* of a partial view by a whole one
    (:func:`_absorptions`).

    Returns:
        ``(a, b, strength)``: positions into ``kidx`` and the IoU or containment of each edge.
    """
    kmb = flat.mb[kidx]
    a, b = pairs
    ta, tb = flat.tile[kidx[a]], flat.tile[kidx[b]]
    keep = ta != tb
    if class_aware:
        keep &= flat.labels[kidx[a]] == flat.labels[kidx[b]]
    a, b, ta, tb = a[keep], b[keep], ta[keep], tb[keep]
    shared = _intersect(win[ta], win[tb])
    overlap = _positive(shared)
    a, b, ta, tb, shared = a[overlap], b[overlap], ta[overlap], tb[overlap], shared[overlap]

    # restricted IoU inside the region both windows saw
    r = _intersect(_intersect(kmb[a], kmb[b]), shared)
    pos = _positive(r)
    a, b, ta, tb, shared, r = a[pos], b[pos], ta[pos], tb[pos], shared[pos], r[pos]
    ga, gb = kidx[a], kidx[b]
    inter = bank.intersections(ga, gb, r)
    sa = bank.rect_sums(ga, _intersect(kmb[a], shared))
    sb = bank.rect_sums(gb, _intersect(kmb[b], shared))
    union = sa + sb - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    hit = iou >= match_iou

    ea, eb, es = _absorptions(
        flat,
        kidx,
        bank,
        win,
        edges,
        np.stack([a[hit], b[hit]], axis=1),
        contain_frac=contain_frac,
        margin=margin,
        class_aware=class_aware,
    )
    # a partial view matched to another tile's view of its object is no part of a different
    # detection of that tile: the tile told the two apart
    partial = edges > 0
    pp = hit & partial[a] & partial[b]
    group = _components(len(kidx), a[pp], b[pp])
    n_tiles = np.int64(len(win))
    seen = np.unique(group[partial] * n_tiles + flat.tile[kidx[partial]])
    told_apart = np.isin(group[ea] * n_tiles + flat.tile[kidx[eb]], seen)
    ea, eb, es = ea[~told_apart], eb[~told_apart], es[~told_apart]
    return (
        np.concatenate([a[hit], ea]),
        np.concatenate([b[hit], eb]),
        np.concatenate([iou[hit], es]),
    )


def _near_count(
    small: npt.NDArray[Any], sb: IntArray, big: npt.NDArray[Any], bb: IntArray, margin: int
) -> int:
    """Pixels of ``small`` within ``margin`` px (square neighbourhood) of a pixel of ``big``.

    ``sb``/``bb``: the two masks' boxes ``(x1, y1, x2, y2)`` in scene pixels.
    """
    x0, y0, x1, y1 = (int(v) for v in sb)
    cx0, cy0 = x0 - margin, y0 - margin
    canvas = np.zeros((y1 - y0 + 2 * margin, x1 - x0 + 2 * margin), dtype=np.bool_)
    ix0, iy0 = max(int(bb[0]), cx0), max(int(bb[1]), cy0)
    ix1, iy1 = min(int(bb[2]), x1 + margin), min(int(bb[3]), y1 + margin)
    if ix1 <= ix0 or iy1 <= iy0:
        return 0
    canvas[iy0 - cy0 : iy1 - cy0, ix0 - cx0 : ix1 - cx0] = big[
        iy0 - int(bb[1]) : iy1 - int(bb[1]), ix0 - int(bb[0]) : ix1 - int(bb[0])
    ]
    grown = canvas.copy()
    for d in range(1, margin + 1):
        grown[:, d:] |= canvas[:, :-d]
        grown[:, :-d] |= canvas[:, d:]
    out = grown.copy()
    for d in range(1, margin + 1):
        out[d:, :] |= grown[:-d, :]
        out[:-d, :] |= grown[d:, :]
    h, w = small.shape
    return int((out[margin : margin + h, margin : margin + w] & small).sum())


def _tolerance(margin: int) -> int:
    """Pixels by which two tiles' outlines of one object may disagree: half the edge margin."""
    return (margin + 1) // 2


def _edge_fit(
    pb: IntArray, wb: IntArray, pv: IntArray, near: npt.NDArray[np.int8], margin: int
) -> FloatArray:
    """Per pair: how well a partial view (box ``pb``, window ``pv``) lines up with a whole copy.

    All ``[Q, 4]`` in scene pixels; ``near``: the partial's cut-edge bits. Per cut edge, the
    whole copy's box ``wb`` must lie across that edge, in one of three ways:

    * it crosses the edge and reaches back into the partial's window as far as the partial
      does (within ``2 * margin`` px);
    * the partial is a *sliver* (at most ``2 * margin + 1`` px thick across the edge) and
      ``wb`` runs from the edge (or before it) away from the partial;
    * the partial is a sliver, ``wb`` starts at most :func:`_tolerance` px past the edge and
      both ends of the two boxes along the edge agree within ``2 * margin`` px (a whole copy
      drawn a little small; a different object beyond the edge rarely spans the same stretch).

    and the middle of the partial's extent along the edge must lie within the whole copy's
    (a neighbour of the partial's object, drawn a little large, reaches only its side). The
    fit is then the overlap of the two boxes' extents along the edge over the shorter extent
    (for a sliver, the whole copy's extent widened by ``2 * margin`` px at both ends: the cut
    end of a rotated object is short); else 0.
    """
    best = np.zeros(len(pb))
    thin = 2 * margin + 1
    tol = _tolerance(margin)
    for bit, ax in zip(_EDGE_BITS, (0, 1, 0, 1), strict=True):
        o = 1 - ax  # the axis along the edge
        w0, w1, p0, p1 = wb[:, ax], wb[:, ax + 2], pb[:, ax], pb[:, ax + 2]
        if bit in (1, 2):  # the window's left / top edge: the whole copy lies before it
            e = pv[:, ax]
            crosses = (w0 < e) & (w1 > e) & (w1 >= p1 - 2 * margin)
            touches = (w0 < e) & (w1 >= e)
            close = (w0 < e) & (w1 >= e - tol)
        else:  # the right / bottom edge: the whole copy lies after it
            e = pv[:, ax + 2]
            crosses = (w0 < e) & (w1 > e) & (w0 <= p0 + 2 * margin)
            touches = (w0 <= e) & (w1 > e)
            close = (w0 <= e + tol) & (w1 > e)
        ends = (np.abs(pb[:, o] - wb[:, o]) <= 2 * margin) & (
            np.abs(pb[:, o + 2] - wb[:, o + 2]) <= 2 * margin
        )
        sliver = (p1 - p0 <= thin) & (touches | (close & ends))
        # the middle of the partial's stretch of the edge lies on the whole copy's stretch
        mid2 = pb[:, o] + pb[:, o + 2]
        centred = ((near & bit) > 0) & (2 * wb[:, o] <= mid2) & (mid2 < 2 * wb[:, o + 2])
        for ok, widen in ((centred & crosses, margin), (centred & sliver, 2 * margin)):
            # extents along the edge; a sliver's whole copy widened by the disagreement
            q0, q1 = wb[:, o] - widen, wb[:, o + 2] + widen
            along = np.minimum(pb[:, o + 2], q1) - np.maximum(pb[:, o], q0)
            shorter = np.minimum(pb[:, o + 2] - pb[:, o], q1 - q0)
            fit = np.where(ok, np.maximum(along, 0) / np.maximum(shorter, 1), 0.0)
            best = np.maximum(best, fit)
    return best


def _absorptions(
    flat: _Flat,
    kidx: IntArray,
    bank: _MaskBank,
    win: IntArray,
    edges: npt.NDArray[np.int8],
    matched: IntArray,
    *,
    contain_frac: float,
    margin: int,
    class_aware: bool,
) -> tuple[IntArray, IntArray, FloatArray]:
    """Edges (partial, whole) where a partial view is a part of an object seen whole.

    A partial detection (``edges[k] > 0``, positions into ``kidx``) is absorbed by a whole one
    of another tile when it lies inside that tile's window (give or take ``margin`` px: the
    whole copy's tile saw all of it) and its containment is at least ``contain_frac``: the
    larger of the fractions of either mask's pixels lying within :func:`_tolerance` px of the
    other (intersection over the smaller mask, tolerant of tiles that disagree by a pixel or
    two about an outline). The whole copy's fraction counts only when at least
    ``1 - contain_frac`` of the partial view lies near it: a partial view mostly of something
    else is not a view of this object. ``matched``: ``[E, 2]`` pairs already joined by IoU,
    skipped.

    A partial view cut thin by its window has too few pixels for that test when the tiles
    disagree about the outline; it is also absorbed when the whole copy lies across the cut
    edge where the partial meets it (:func:`_edge_fit` ``>= contain_frac``) and at least
    ``1 - contain_frac`` of its pixels lie within ``margin`` px of the copy's.

    Returns:
        ``(partial, whole, containment)`` positions into ``kidx`` and the containment.
    """
    empty = np.zeros(0, dtype=np.int64)
    pidx = np.flatnonzero(edges > 0)
    widx = np.flatnonzero(edges == 0)
    if len(pidx) == 0 or len(widx) == 0:
        return empty, empty, np.zeros(0)
    import shapely

    kmb = flat.mb[kidx]
    pb = kmb[pidx]
    tree = shapely.STRtree(
        shapely.box(pb[:, 0] - margin, pb[:, 1] - margin, pb[:, 2] + margin, pb[:, 3] + margin)
    )
    wb = kmb[widx]
    qi, ti = tree.query(shapely.box(wb[:, 0], wb[:, 1], wb[:, 2], wb[:, 3]))
    p, w = pidx[ti].astype(np.int64), widx[qi].astype(np.int64)
    tp, tw = flat.tile[kidx[p]], flat.tile[kidx[w]]
    ok = tp != tw
    if class_aware:
        ok &= flat.labels[kidx[p]] == flat.labels[kidx[w]]
    inside = win[tw]
    pm = kmb[p]
    ok &= (
        (pm[:, 0] >= inside[:, 0] - margin)
        & (pm[:, 1] >= inside[:, 1] - margin)
        & (pm[:, 2] <= inside[:, 2] + margin)
        & (pm[:, 3] <= inside[:, 3] + margin)
    )
    p, w = p[ok], w[ok]
    if len(matched):
        n = np.int64(len(kidx))
        done = np.concatenate(
            [matched[:, 0] * n + matched[:, 1], matched[:, 1] * n + matched[:, 0]]
        )
        fresh = ~np.isin(p * n + w, done)
        p, w = p[fresh], w[fresh]
    areas = bank.areas()[kidx]
    sliver = _edge_fit(kmb[p], kmb[w], win[flat.tile[kidx[p]]], edges[p], margin)
    sliver_hit = sliver >= contain_frac
    tol = _tolerance(margin)
    grow = np.asarray([-tol, -tol, tol, tol])

    def room(x: IntArray, y: IntArray) -> BoolArray:
        """Whether the box of ``x`` leaves room for enough pixels near ``y``'s grown box."""
        r = _intersect(kmb[x], kmb[y] + grow)
        px = np.where(_positive(r), (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]), 0)
        return (px >= contain_frac * areas[x]) & (areas[x] > 0)

    ps, ws, ss = p[sliver_hit], w[sliver_hit], sliver[sliver_hit]
    # boxes lined up, masks too: 1 - contain_frac of the view within margin px of the copy
    near = np.asarray(
        [
            _near_count(
                flat.masks[int(kidx[pk])], kmb[pk], flat.masks[int(kidx[wk])], kmb[wk], margin
            )
            / max(int(areas[pk]), 1)
            for pk, wk in zip(ps.tolist(), ws.tolist(), strict=True)
        ],
        dtype=np.float64,
    ).reshape(-1)
    lined = near >= 1.0 - contain_frac
    ps, ws, ss = ps[lined], ws[lined], ss[lined]
    p, w = p[~sliver_hit], w[~sliver_hit]
    p_in, w_in = room(p, w), room(w, p)
    keep = p_in | w_in
    p, w, w_in = p[keep], w[keep], w_in[keep]
    contain = np.zeros(len(p))
    for i in range(len(p)):
        pk, wk = int(p[i]), int(w[i])
        mp, mw = flat.masks[int(kidx[pk])], flat.masks[int(kidx[wk])]
        c_p = _near_count(mp, kmb[pk], mw, kmb[wk], tol) / areas[pk]
        if c_p >= contain_frac:
            contain[i] = c_p
        elif w_in[i] and c_p >= 1.0 - contain_frac:
            # the whole copy inside a larger partial view: only when it explains enough of
            # it (a partial view mostly of something else is not a view of this object)
            contain[i] = _near_count(mw, kmb[wk], mp, kmb[pk], tol) / areas[wk]
    hit = contain >= contain_frac
    return (
        np.concatenate([p[hit], ps]),
        np.concatenate([w[hit], ws]),
        np.concatenate([contain[hit], ss]),
    )


def _within_tile_fragments(
    flat: _Flat,
    bank: _MaskBank,
    pairs: tuple[IntArray, IntArray],
    *,
    contain_frac: float,
    class_aware: bool,
    nms_iou: float = 1.0,
) -> BoolArray:
    """Flags of the model's own fragments: detections inside a larger one of their tile.

    A fragment has ``>= contain_frac`` of its pixels inside a larger detection of the same
    tile (and class, when ``class_aware``). Equal masks: the lower score (then the later
    index) goes. The detection that stays takes the better of the two scores (in place, in
    ``flat.scores``) and, when not ``class_aware``, the label that came with it (in place, in
    ``flat.labels``). Not ``class_aware``, two detections of different classes with a mask
    IoU ``>= nms_iou`` are first one object seen as two classes: the lower-scored one goes
    (the model's per-class NMS keeps such pairs). ``pairs``: the detections whose mask boxes
    meet (:func:`_box_pairs`).
    """
    n = len(flat.tile)
    drop = np.zeros(n, dtype=np.bool_)
    if n < 2:
        return drop
    a, b = pairs
    keep = flat.tile[a] == flat.tile[b]
    if class_aware:
        keep &= flat.labels[a] == flat.labels[b]
    a, b = a[keep], b[keep]
    r = _intersect(flat.mb[a], flat.mb[b])
    areas = bank.areas()
    smaller = np.minimum(areas[a], areas[b])
    # a pair whose boxes share fewer pixels than the threshold cannot qualify
    least = contain_frac if class_aware else min(contain_frac, nms_iou)
    ok = _positive(r) & ((r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1]) >= least * smaller)
    a, b, r, smaller = a[ok], b[ok], r[ok], smaller[ok]
    if len(a) == 0:
        return drop
    inter = bank.intersections(a, b, r)
    if not class_aware:
        union = areas[a] + areas[b] - inter
        dup = (flat.labels[a] != flat.labels[b]) & (inter >= nms_iou * np.maximum(union, 1))
        dup &= smaller > 0
        sa, sb = flat.scores[a], flat.scores[b]
        a_low = (sa < sb) | ((sa == sb) & (a > b))
        hi, lo = np.where(a_low, b, a)[dup], np.where(a_low, a, b)[dup]
        for h, low in sorted(
            zip(hi.tolist(), lo.tolist(), strict=True), key=lambda p: -flat.scores[p[0]]
        ):
            if not drop[h]:
                drop[low] = True
        alive = ~drop[a] & ~drop[b]
        a, b, inter, smaller = a[alive], b[alive], inter[alive], smaller[alive]
    hit = (inter >= contain_frac * np.maximum(smaller, 1)) & (smaller > 0)
    a, b = a[hit], b[hit]
    # the smaller one goes; equal areas: the lower score, then the later index
    a_goes = (areas[a] < areas[b]) | (
        (areas[a] == areas[b])
        & ((flat.scores[a] < flat.scores[b]) | ((flat.scores[a] == flat.scores[b]) & (a > b)))
    )
    gone, stays = np.where(a_goes, a, b), np.where(a_goes, b, a)
    if not class_aware:
        _take_better_labels(flat.labels, flat.scores, stays, gone)
    np.maximum.at(flat.scores, stays, flat.scores[gone])
    drop[gone] = True
    return drop


def _take_better_labels(
    labels: IntArray, scores: FloatArray, stays: IntArray, gone: IntArray
) -> None:
    """Give each staying detection the label of the best-scoring detection merged into it.

    In place, before the scores are combined: ``stays[i]`` absorbs ``gone[i]``; where the
    best ``gone`` scores higher than the detection that stays, its label wins (class-agnostic
    merging keeps the best-scoring class with the best score).
    """
    better = scores[gone] > scores[stays]
    if not better.any():
        return
    st, gn = stays[better], gone[better]
    order = np.argsort(scores[gn], kind="stable")  # ascending: the best is written last
    for s_, g_ in zip(st[order].tolist(), gn[order].tolist(), strict=True):
        labels[s_] = labels[g_]


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


def _best_labels(unit: IntArray, labels: IntArray, scores: FloatArray, n_units: int) -> IntArray:
    """Per unit: the label of its best-scoring member (ties: the first member)."""
    out = np.zeros(n_units, dtype=np.int64)
    order = np.lexsort((-scores, unit))
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = unit[order][1:] != unit[order][:-1]
    out[unit[order][first]] = labels[order][first]
    return out


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
    strength: FloatArray,
    partial: BoolArray,
    *,
    width: int,
    height: int,
    score_mode: ScoreMode,
) -> _Out:
    """Turn matched groups of overlap-zone detections into objects (see the module doc).

    ``ma``, ``mb_``, ``strength``: the edges of :func:`_match_pairs`; ``partial[k]`` flags
    ``kidx[k]`` as a partial view (near a cut edge of its window).
    """
    n = len(kidx)
    tiles = flat.tile[kidx]
    v = win[tiles]
    boxes_mb = flat.mb[kidx]
    whole = ~partial
    comp = _components(n, ma, mb_)
    has_whole = np.zeros(n, dtype=np.bool_)
    np.logical_or.at(has_whole, comp, whole)
    whole_edge = whole[ma] & whole[mb_]
    sub = _components(n, ma[whole_edge], mb_[whole_edge])

    # units: whole members grouped by `sub`; partials of all-partial groups by `comp`
    is_u = partial & ~has_whole[comp]
    member = np.flatnonzero(whole | is_u)
    key = np.where(whole[member], sub[member], n + comp[member])
    uniq, unit = np.unique(key, return_inverse=True)
    unit = unit.astype(np.int64)
    n_units = len(uniq)
    union_unit = uniq >= n

    areas = bank.areas()[kidx]
    scores = flat.scores[kidx[member]]
    labels = flat.labels[kidx[member]]
    # an absorbed partial view adds its score to the whole unit of its strongest direct edge
    unit_of = np.full(n, -1, dtype=np.int64)
    unit_of[member] = unit
    pw = partial[ma] != partial[mb_]
    pp = np.where(partial[ma], ma, mb_)[pw]
    pwh = np.where(partial[ma], mb_, ma)[pw]
    by_p = np.lexsort((-strength[pw], pp))
    first_p = np.ones(len(by_p), dtype=np.bool_)
    first_p[1:] = pp[by_p][1:] != pp[by_p][:-1]
    absorbed, into = pp[by_p][first_p], pwh[by_p][first_p]
    out_scores = _combine_scores(
        np.concatenate([unit, unit_of[into]]),
        np.concatenate([scores, flat.scores[kidx[absorbed]]]),
        np.concatenate([areas[member], areas[absorbed]]),
        n_units,
        score_mode,
    )
    out_labels = _best_labels(
        np.concatenate([unit, unit_of[into]]),
        np.concatenate([labels, flat.labels[kidx[absorbed]]]),
        np.concatenate([scores, flat.scores[kidx[absorbed]]]),
        n_units,
    )
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


def _suppress(out: _Out, *, nms_iou: float, contain_frac: float, class_aware: bool) -> BoolArray:
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

    # any object mostly inside a larger one of its class is a leftover part of it; the larger
    # keeps its mask and class and takes the better of the two scores (class-agnostic: and
    # the class that came with the better score)
    sa, sb = out.scores[a], out.scores[b]
    a_goes = (aa < ab) | ((aa == ab) & ((sa < sb) | ((sa == sb) & (a > b))))
    small = np.where(a_goes, aa, ab)
    part = (inter >= contain_frac * np.maximum(small, 1)) & (small > 0)
    gone, stays = np.where(a_goes, a, b)[part], np.where(a_goes, b, a)[part]
    if not class_aware:
        _take_better_labels(out.labels, out.scores, stays, gone)
    np.maximum.at(out.scores, stays, out.scores[gone])
    keep[gone] = False

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
    contain_frac: float = 0.8,
    class_agnostic: bool = False,
    score_mode: ScoreMode = ScoreMode.MAX,
    edge_margin: int = EDGE_MARGIN,
) -> Detections:
    """Merge per-tile detections into one set of scene objects (see the module docstring).

    Args:
        tile_detections: the predictor's output, one :class:`~geoseg.types.TileDetections` per
            tile (boxes and mask boxes in **tile pixels**, ``tile`` set); typically all tiles
            of one :func:`geoseg.tiling.make_grid` grid. Consumed once.
        scene_width: scene width in pixels; detections are clipped to the scene.
        scene_height: scene height in pixels.
        match_iou: two detections from different tiles are one object when the IoU of their
            masks inside the intersection of the two tiles' windows is at least this.
        nms_iou: leftover duplicates with a full-mask IoU at least this are suppressed (the
            lower score goes), and unmatched fragments with at least this fraction of their
            pixels inside a larger object are dropped.
        contain_frac: containment (intersection over the smaller mask) at which one
            detection is a part of another: a detection with at least this fraction of its
            pixels inside a larger one of its own tile (and class) is dropped before matching;
            a partial view inside a whole one from another tile is absorbed by it; an object
            of the overlap zones mostly inside a larger one is dropped after merging.
        class_agnostic: match and suppress detections whatever their label: the same
            object outlined as two classes becomes one object with the best-scoring class
            (within a tile: two detections of different classes with a mask IoU
            ``>= nms_iou`` are one object, the lower-scored one goes; a part absorbed by a
            larger detection brings its class along with its better score); ``False``: only
            detections of the same label are matched and suppressed.
        score_mode: how the scores of merged detections are combined.
        edge_margin: a detection whose mask has at most this many empty pixels between it
            and a cut edge of its window (not a scene edge) is a *partial* view; farther in,
            it is seen whole (0: only masks touching the edge are partial).

    Returns:
        :class:`~geoseg.types.Detections` in **scene pixels**: float32 boxes ``[M, 4]``,
        scores ``[M]``, 0-based labels ``[M]`` into the tiles' ``classes``, int32 mask boxes
        ``[M, 4]`` and masks cropped to them, sorted by mask box top, then left.

    Raises:
        ValueError: a ``TileDetections`` without ``tile``, tiles with different ``classes``,
            a mask whose shape does not match its mask box, bad thresholds, or tiles that
            touch without overlapping (overlap 0, see the module doc).
    """
    if scene_width <= 0 or scene_height <= 0:
        raise ValueError(f"stitch: scene size must be positive, got {scene_width} x {scene_height}")
    for name, val in (
        ("match_iou", match_iou),
        ("nms_iou", nms_iou),
        ("contain_frac", contain_frac),
    ):
        if not 0.0 < val <= 1.0:
            raise ValueError(f"stitch: {name} must be in (0, 1], got {val}")
    if edge_margin < 0:
        raise ValueError(f"stitch: edge_margin must be >= 0, got {edge_margin}")
    score_mode = ScoreMode(score_mode)
    win, core, flat, classes = _gather(tile_detections, scene_width, scene_height)
    _refuse_seams(win)
    n = len(flat.tile)
    if n == 0:
        return Detections.empty(classes)

    bank = _MaskBank(flat.masks, flat.mb)
    nonempty = bank.areas() > 0
    pairs = _box_pairs(flat.mb)
    inner = _within_tile_fragments(
        flat,
        bank,
        pairs,
        contain_frac=contain_frac,
        class_aware=not class_agnostic,
        nms_iou=nms_iou,
    )
    if inner.any():
        logger.debug("stitch: dropped %d fragments inside a detection of their tile", inner.sum())
        nonempty &= ~inner
    contact = _contact(flat, win, edge_margin)
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
        edges = _partial_flags(
            bank, kidx, win[flat.tile[kidx]], scene_width, scene_height, edge_margin
        )
        partial = edges > 0
        pos = np.full(n, -1, dtype=np.int64)
        pos[kidx] = np.arange(len(kidx))
        both = (pos[pairs[0]] >= 0) & (pos[pairs[1]] >= 0)
        ma, mb_, strength = _match_pairs(
            flat,
            kidx,
            bank,
            win,
            edges,
            (pos[pairs[0][both]], pos[pairs[1][both]]),
            match_iou=match_iou,
            contain_frac=contain_frac,
            margin=edge_margin,
            class_aware=not class_agnostic,
        )
        out = _merge(
            flat,
            kidx,
            bank,
            win,
            core,
            ma,
            mb_,
            strength,
            partial,
            width=scene_width,
            height=scene_height,
            score_mode=score_mode,
        )
        keep = np.flatnonzero(
            _suppress(
                out, nms_iou=nms_iou, contain_frac=contain_frac, class_aware=not class_agnostic
            )
        )
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
