"""geoseg.synth.oracle: per-tile oracle detections from an instance-id image."""

from __future__ import annotations

import numpy as np

from geoseg.synth.oracle import compact_ids, oracle_detections, visible_ids
from geoseg.tiling import make_grid

CLASSES = ("ship", "vehicle")


def two_objects():
    inst = np.zeros((64, 112), np.int32)
    inst[10:20, 40:70] = 1  # crosses the seam of a 64 px / 16 px overlap grid
    inst[40:50, 5:15] = 2  # inside the first tile only
    return inst, np.asarray([0, 0, 1])


def scene_masks(td, shape):
    """Each detection pasted into a scene-size array (tile pixels -> scene pixels)."""
    out = []
    for k in range(len(td)):
        x1, y1, x2, y2 = td.mask_boxes[k].tolist()
        full = np.zeros(shape, bool)
        full[
            y1 + td.tile.window.row_off : y2 + td.tile.window.row_off,
            x1 + td.tile.window.col_off : x2 + td.tile.window.col_off,
        ] = td.masks[k]
        out.append(full)
    return out


def test_perfect_oracle_reports_each_tiles_view_in_tile_pixels():
    inst, cls = two_objects()
    grid = make_grid(112, 64, tile_size=64, overlap=16)
    tds = oracle_detections(inst, cls, grid, CLASSES)
    assert [len(t) for t in tds] == [2, 1]
    for td in tds:
        w = td.tile.window
        view = inst[w.row_off : w.row_end, w.col_off : w.col_end]
        for m, label in zip(scene_masks(td, inst.shape), td.labels, strict=True):
            ids = np.unique(inst[m])
            assert len(ids) == 1 and cls[ids[0]] == label
            # the whole of that object inside the window, nothing else
            assert m.sum() == (view == ids[0]).sum()
        assert (td.mask_boxes[:, :2] >= 0).all() and (td.mask_boxes[:, 2:] <= 64).all()


def test_outline_noise_grows_or_shrinks_every_mask_of_a_tile():
    inst, cls = two_objects()
    grid = make_grid(112, 64, tile_size=64, overlap=16)
    grown = oracle_detections(inst, cls, grid, CLASSES, outline_px=(1,))
    shrunk = oracle_detections(inst, cls, grid, CLASSES, outline_px=(-1,))
    # the 10 x 10 object inside the first tile: 12 x 12 minus corners, 8 x 8
    areas_grown = sorted(int(m.sum()) for m in grown[0].masks)
    areas_shrunk = sorted(int(m.sum()) for m in shrunk[0].masks)
    assert 140 in areas_grown and 64 in areas_shrunk


def test_missed_objects_leave_a_whole_view_and_fragments_are_halves():
    inst, cls = two_objects()
    inst[10:20, 40:70] = 0
    inst[10:20, 50:60] = 1  # now inside both windows
    grid = make_grid(112, 64, tile_size=64, overlap=16)
    counts = []
    for seed in range(20):
        tds = oracle_detections(inst, cls, grid, CLASSES, seed=seed, drop=1.0)
        counts.append([int((t.labels == 0).sum()) for t in tds])
    assert all(sum(c) == 1 for c in counts)  # object 1 missed by exactly one of its 2 tiles
    assert {tuple(c) for c in counts} == {(1, 0), (0, 1)}
    tds = oracle_detections(inst, cls, grid, CLASSES, fragment=1.0)
    areas = sorted(int(m.sum()) for m in tds[0].masks)
    assert areas == [50, 50, 100, 100]


def test_compact_and_visible_ids():
    ids = np.zeros((10, 10), np.int64)
    ids[0:5, 0:5] = 907
    ids[6:10, 6:8] = 12  # 2 px thick
    ids[6:9, 0:4] = 55  # no class: dropped
    inst, cls = compact_ids(ids, {907: 2, 12: 0})
    assert sorted(np.unique(inst).tolist()) == [0, 1, 2]
    assert cls.tolist() == [0, 0, 2]  # ids sorted: 12 -> 1, 907 -> 2
    assert (inst[0:5, 0:5] == 2).all()
    vis = visible_ids(inst, min_side=3)
    assert sorted(np.unique(vis).tolist()) == [0, 2]
