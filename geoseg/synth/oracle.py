"""Oracle predictors: per-tile detections made from an instance-id image (tests, benchmarks).

A *perfect* oracle reports, for every tile, exactly the objects that tile sees, clipped to its
window; :func:`geoseg.stitch.stitch` must turn that into one object per true object. Real
models are not perfect and neighbouring tiles disagree about the same object, so
:func:`oracle_detections` can also imitate that: every tile draws all its outlines a pixel or
two too large or too small, scores are random, some objects are missed by one of the tiles
that see them, and some come with an extra fragment predicted as a separate object.

Frames: ``ids`` is in *scene pixels*; the returned detections are in each tile's *tile pixels*
(boxes and mask boxes relative to ``tile.window``), as a predictor returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from geoseg.types import TileDetections, TileSpec

__all__ = ["compact_ids", "oracle_detections", "visible_ids"]


def compact_ids(
    ids: npt.NDArray[np.integer[Any]], classes_of: dict[int, int]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Renumber an object-id raster ``1..N`` (0 stays background).

    Args:
        ids: ``[H, W]`` object ids (any non-negative integers), scene pixels.
        classes_of: class index of each id present in ``ids`` (e.g. from
            :func:`geoseg.synth.scene_labels`).

    Returns:
        ``(inst, cls)``: int32 ``[H, W]`` ids ``1..N`` and int64 ``[N + 1]`` class of each new id
        (``cls[0]`` unused). Ids without a class are dropped to background.
    """
    uniq, inverse = np.unique(ids, return_inverse=True)
    keep = np.asarray([u != 0 and int(u) in classes_of for u in uniq.tolist()], dtype=bool)
    new = np.zeros(len(uniq), dtype=np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    inst = new[inverse.reshape(ids.shape)]
    cls = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
    cls[1:] = [classes_of[int(u)] for u in uniq[keep].tolist()]
    return inst, cls


def visible_ids(inst: npt.NDArray[np.int32], *, min_side: int = 3) -> npt.NDArray[np.int32]:
    """``inst`` without objects less than ``min_side`` px thick (a scene edge cut them so).

    Args:
        inst: ``[H, W]`` instance ids ``1..N``, scene pixels.
        min_side: smallest box side kept, in pixels.

    Returns:
        A copy with those objects set to 0 (the other ids unchanged).
    """
    objs = ndimage.find_objects(inst)
    small = [
        i + 1
        for i, sl in enumerate(objs)
        if sl is not None and min(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < min_side
    ]
    out = inst.copy()
    out[np.isin(out, small)] = 0
    return out


def _reshape(mask: npt.NDArray[np.bool_], d: int, min_px: int) -> tuple[npt.NDArray[np.bool_], int]:
    """``mask`` grown (``d > 0``) or shrunk by up to ``|d|`` px; returns (mask, padding added).

    Outline noise, not a different object: the reshaped mask keeps an IoU of at least 0.5
    with ``mask`` (a grown one at most doubles its area, a shrunk one keeps at least half of
    it, and at least ``min_px`` pixels), so on a small object the change is cut to fewer px
    (2 px off a 5 px thick boat would leave a quarter of it: no longer a view of that boat).
    """
    area = int(mask.sum())
    if d > 0:
        for k in range(d, 0, -1):
            grown: npt.NDArray[np.bool_] = ndimage.binary_dilation(np.pad(mask, k), iterations=k)
            if grown.sum() <= 2 * area:
                return grown, k
        return mask, 0
    for k in range(-d, 0, -1):  # a shrink that would erase the object erases less
        out: npt.NDArray[np.bool_] = ndimage.binary_erosion(mask, iterations=k)
        if out.sum() >= max(min_px, (area + 1) // 2):
            return out, 0
    return mask, 0


def _clip(
    m: npt.NDArray[np.bool_], y0: int, x0: int, shape: tuple[int, ...], min_px: int
) -> tuple[npt.NDArray[np.bool_], tuple[int, int, int, int]] | None:
    """``m`` placed at ``(y0, x0)`` of an array of ``shape``, clipped and cropped tight.

    Returns the mask and its box ``(x1, y1, x2, y2)`` in that array's pixels, or ``None``
    when fewer than ``max(min_px, 1)`` pixels are left.
    """
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + m.shape[0], shape[0]), min(x0 + m.shape[1], shape[1])
    m = m[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    if m.sum() < max(min_px, 1):
        return None
    ys, xs = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    box = (cx0 + int(xs[0]), cy0 + int(ys[0]), cx0 + int(xs[-1]) + 1, cy0 + int(ys[-1]) + 1)
    return m[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1], box


def _missed(
    inst: npt.NDArray[np.int32],
    grid: Sequence[TileSpec],
    rng: np.random.Generator,
    drop: float,
    whole_left: bool,
) -> dict[int, int]:
    """Object id -> the tile that misses it (objects seen by several tiles, share ``drop``)."""
    if drop <= 0:
        return {}
    areas = np.bincount(inst.ravel())
    seen: dict[int, list[tuple[int, int]]] = {}
    for t, spec in enumerate(grid):
        w = spec.window
        crop = inst[max(w.row_off, 0) : w.row_end, max(w.col_off, 0) : w.col_end]
        found, counts = np.unique(crop, return_counts=True)
        for i, c in zip(found.tolist(), counts.tolist(), strict=True):
            if i:
                seen.setdefault(i, []).append((t, c))
    missed: dict[int, int] = {}
    for i, views in seen.items():
        if len(views) < 2 or rng.random() >= drop:
            continue
        t = int(rng.integers(len(views)))
        need = areas[i] if whole_left else (areas[i] + 1) // 2
        if any(c >= need for u, (_, c) in enumerate(views) if u != t):
            missed[i] = views[t][0]
    return missed


def oracle_detections(
    inst: npt.NDArray[np.int32],
    cls: npt.NDArray[np.int64],
    grid: Sequence[TileSpec],
    classes: tuple[str, ...],
    *,
    seed: int = 0,
    outline_px: Sequence[int] = (0,),
    drop: float = 0.0,
    whole_left: bool = True,
    fragment: float = 0.0,
    scores: tuple[float, float] = (0.5, 1.0),
    min_px: int = 1,
) -> list[TileDetections]:
    """What a predictor returns for every tile of ``grid``, made from the true objects.

    With the defaults the oracle is perfect: each tile reports exactly the objects it sees,
    masks clipped to its window and cropped to tight boxes.

    Args:
        inst: ``[H, W]`` instance ids ``1..N`` (0 = background), scene pixels.
        cls: ``[N + 1]`` 0-based class index of each id into ``classes``.
        grid: the tiles (e.g. :func:`geoseg.tiling.make_grid`).
        classes: class names, stored on every :class:`~geoseg.types.TileDetections`.
        seed: seeds every random choice below.
        outline_px: each tile draws one of these at random and grows (``> 0``) or shrinks
            (``< 0``) all its masks by that many pixels (a shrink never leaves fewer than
            ``min_px`` pixels).
        drop: share of the objects seen by several tiles that one of them misses.
        whole_left: a tile misses an object only if another tile still sees all of it;
            ``False``: at least half of it.
        fragment: share of the reported objects that come with a second detection of the
            same class, the left or the top half of the mask (at random), as a separate
            object.
        scores: detection scores are drawn uniformly from this range.
        min_px: masks smaller than this are not reported (a model returns no 1-pixel
            objects; 4 is a fair floor for imperfect oracles).

    Returns:
        One :class:`~geoseg.types.TileDetections` per tile, in **tile pixels**.
    """
    rng = np.random.default_rng(seed)
    missed = _missed(inst, grid, rng, drop, whole_left)
    out = []
    for t, spec in enumerate(grid):
        win = spec.window
        x_off, y_off = max(win.col_off, 0), max(win.row_off, 0)
        crop = inst[y_off : win.row_end, x_off : win.col_end]
        d = int(rng.choice(np.asarray(outline_px)))
        present = np.unique(crop)
        present = present[present > 0]
        objs = ndimage.find_objects(crop, max_label=int(present.max())) if len(present) else []
        boxes: list[tuple[int, int, int, int]] = []
        masks: list[npt.NDArray[np.bool_]] = []
        labels: list[int] = []
        for i in present.tolist():
            if missed.get(i) == t:
                continue
            sl = objs[i - 1]
            assert sl is not None
            m, pad = _reshape(crop[sl] == i, d, min_px)
            y0, x0 = sl[0].start - pad, sl[1].start - pad
            views = [m]
            if fragment > 0 and rng.random() < fragment:
                part = m.copy()
                if rng.random() < 0.5:
                    part[:, m.shape[1] // 2 :] = False
                else:
                    part[m.shape[0] // 2 :, :] = False
                views.append(part)
            for view in views:
                got = _clip(view, y0, x0, crop.shape, min_px)
                if got is not None:
                    masks.append(got[0])
                    bx = got[1]
                    dx, dy = x_off - win.col_off, y_off - win.row_off
                    boxes.append((bx[0] + dx, bx[1] + dy, bx[2] + dx, bx[3] + dy))
                    labels.append(int(cls[i]))
        n = len(masks)
        box_arr = np.asarray(boxes, dtype=np.int32).reshape(n, 4)
        out.append(
            TileDetections(
                boxes=box_arr.astype(np.float32),
                scores=rng.uniform(scores[0], scores[1], n).astype(np.float32),
                labels=np.asarray(labels, dtype=np.int64),
                mask_boxes=box_arr,
                masks=tuple(masks),
                classes=classes,
                tile=spec,
            )
        )
    return out
