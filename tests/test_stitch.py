"""Tests for geoseg.stitch.

The main test is an *oracle* test: a synthetic scene is rasterised into an instance-id image
(densely packed, touching boats and cars, rotated ellipses, buildings larger than a tile with a
courtyard), each tile of ``make_grid`` receives the true objects clipped to its window (what a
perfect predictor returns), and the stitched output must contain exactly one object per true
object, each with mask IoU >= 0.95 against it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.stitch import ScoreMode, stitch
from geoseg.tiling import make_grid
from geoseg.types import Detections, PixelWindow, TileDetections, TileSpec

CLASSES = ("boat", "car", "building")


# --------------------------------------------------------------------------- synthetic scenes


def make_scene(width, height, *, seed, building):
    """Instance-id image (0 = background) and the class of each id (index 0 unused)."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((height, width), np.int32)
    cls = [0]

    def add(y0, x0, m, c):
        m = m[: height - y0, : width - x0]
        region = inst[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
        if not m.any() or (region[m] != 0).any():
            return
        cls.append(c)
        region[m] = len(cls) - 1

    # buildings larger than a tile (in both directions), with a courtyard (a hole)
    for _ in range(2):
        bw, bh = (int(v) for v in rng.integers(int(1.1 * building), int(1.4 * building), 2))
        x0 = int(rng.integers(0, max(1, width - bw)))
        y0 = int(rng.integers(0, max(1, height - bh)))
        m = np.ones((bh, bw), bool)
        m[bh // 3 : 2 * bh // 3, bw // 3 : 2 * bw // 3] = False
        m[: bh // 5, : bw // 4] = False  # an L-shaped outline
        add(y0, x0, m, 2)
    # rows of touching boats and cars sharing edges
    y = 0
    while y < height:
        bh = int(rng.integers(5, 16))
        x = int(rng.integers(0, 8))
        while x < width:
            bw = int(rng.integers(4, 13))
            add(y, x, np.ones((bh, bw), bool), 0 if rng.random() < 0.6 else 1)
            x += bw
        y += bh + int(rng.integers(0, 16))
    # rotated ellipses in the gaps
    for _ in range(width * height // 2000):
        a, b = rng.uniform(4, 14), rng.uniform(2.5, 5)
        th = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = int(np.ceil(a)) + 1
        x0, y0 = int(cx) - r, int(cy) - r
        yy, xx = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1] + 0.5
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1
        cut_y, cut_x = max(0, -y0), max(0, -x0)
        add(max(y0, 0), max(x0, 0), m[cut_y:, cut_x:], int(rng.integers(0, 2)))
    return inst, np.asarray(cls)


def separate_at_seams(inst, cls, grid):
    """Remove objects that touch a same-class object exactly across a zero-overlap seam.

    With no overlap, two objects touching on the seam are indistinguishable from one object cut
    by it (to any stitcher: the tiles carry no identity). The oracle scene avoids that case.
    """
    xs = {a.window.col_end for a in grid for b in grid if a.window.col_end == b.window.col_off}
    ys = {a.window.row_end for a in grid for b in grid if a.window.row_end == b.window.row_off}
    for axis, seams in ((1, xs), (0, ys)):
        for c in sorted(seams):
            while True:
                before = np.take(inst, c - 1, axis=axis)
                after = np.take(inst, c, axis=axis)
                bad = set()
                for d in (-1, 0, 1):
                    a = before[max(0, -d) : len(before) - max(0, d)]
                    b = after[max(0, d) : len(after) - max(0, -d)]
                    hit = (a > 0) & (b > 0) & (a != b) & (cls[a] == cls[b])
                    bad |= set(b[hit].tolist())
                if not bad:
                    break
                inst[np.isin(inst, list(bad))] = 0
    return inst


def oracle(inst, cls, grid, *, seed=0, classes=CLASSES):
    """A perfect predictor: every tile reports the true objects clipped to its window."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in grid:
        win = spec.window
        crop = inst[win.row_off : win.row_end, win.col_off : win.col_end]
        ids = np.unique(crop)
        ids = ids[ids > 0]
        boxes, masks, labels = [], [], []
        if len(ids):
            objs = ndimage.find_objects(crop, max_label=int(ids.max()))
            for i in ids.tolist():
                sl = objs[i - 1]
                masks.append(crop[sl] == i)
                boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
                labels.append(int(cls[i]))
        n = len(masks)
        box_arr = np.asarray(boxes, np.int32).reshape(n, 4)
        out.append(
            TileDetections(
                boxes=box_arr.astype(np.float32),
                scores=rng.uniform(0.5, 1.0, n).astype(np.float32),
                labels=np.asarray(labels, np.int64),
                mask_boxes=box_arr,
                masks=tuple(masks),
                classes=classes,
                tile=spec,
            )
        )
    return out


def match_truth(inst, cls, det):
    """For each true id: the list of (IoU, label) of outputs whose majority pixels it owns."""
    n_true = int(inst.max())
    areas = np.bincount(inst.ravel(), minlength=n_true + 1)
    found: dict[int, list[tuple[float, int]]] = {}
    for k in range(len(det)):
        x1, y1, x2, y2 = det.mask_boxes[k].tolist()
        m = det.masks[k]
        assert m.shape == (y2 - y1, x2 - x1)
        cnt = np.bincount(inst[y1:y2, x1:x2][m], minlength=n_true + 1)
        cnt[0] = 0
        t = int(cnt.argmax())
        iou = cnt[t] / (int(m.sum()) + areas[t] - cnt[t])
        found.setdefault(t, []).append((float(iou), int(det.labels[k])))
    return found


def assert_exact(inst, cls, det):
    ids = set(np.unique(inst).tolist()) - {0}
    found = match_truth(inst, cls, det)
    assert len(det) == len(ids), f"{len(det)} objects out for {len(ids)} true objects"
    missing = ids - set(found)
    assert not missing, f"{len(missing)} true objects have no output"
    for t, hits in found.items():
        assert len(hits) == 1, f"object {t} came out {len(hits)} times"
        iou, label = hits[0]
        assert iou >= 0.95, f"object {t}: IoU {iou:.3f}"
        assert label == cls[t]


def run_oracle(tile_size, overlap_frac, *, seed, width, height):
    overlap = round(tile_size * overlap_frac)
    grid = make_grid(width, height, tile_size=tile_size, overlap=overlap)
    inst, cls = make_scene(width, height, seed=seed, building=tile_size * 2 + 8)
    if overlap == 0:
        inst = separate_at_seams(inst, cls, grid)
    tds = oracle(inst, cls, grid, seed=seed)
    assert any(len(t) for t in tds)
    det = stitch(tds, scene_width=width, scene_height=height)
    assert det.classes == CLASSES
    return inst, cls, det


# --------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize(
    ("tile_size", "overlap_frac"),
    [(128, 0.0), (128, 0.125), (128, 0.25), (160, 0.05), (200, 0.2)],
)
def test_oracle_exact_one_output_per_object(tile_size, overlap_frac):
    w, h = 2 * tile_size + 160, 2 * tile_size + 120
    inst, cls, det = run_oracle(tile_size, overlap_frac, seed=tile_size, width=w, height=h)
    assert_exact(inst, cls, det)
    # buildings larger than a tile in both directions came out as one object each
    big = [k for k in range(len(det)) if det.labels[k] == 2]
    assert big
    for k in big:
        x1, y1, x2, y2 = det.mask_boxes[k].tolist()
        assert min(x2 - x1, y2 - y1) > tile_size


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tile_size=st.integers(128, 256),
    overlap_frac=st.floats(0.0, 0.25),
    seed=st.integers(0, 10_000),
    extra_w=st.integers(0, 150),
    extra_h=st.integers(0, 150),
)
def test_oracle_exact_random_grids(tile_size, overlap_frac, seed, extra_w, extra_h):
    w, h = tile_size * 2 + 20 + extra_w, tile_size * 2 + 20 + extra_h
    inst, cls, det = run_oracle(tile_size, overlap_frac, seed=seed, width=w, height=h)
    assert_exact(inst, cls, det)


@pytest.mark.slow
@pytest.mark.parametrize("tile_size", [256, 512, 1024])
@pytest.mark.parametrize("overlap_frac", [0.0, 0.1, 0.25])
def test_oracle_exact_large_tiles(tile_size, overlap_frac):
    w, h = 2 * tile_size + 700, 2 * tile_size + 500
    inst, cls, det = run_oracle(tile_size, overlap_frac, seed=7, width=w, height=h)
    assert_exact(inst, cls, det)


@pytest.mark.parametrize(("tile_size", "overlap"), [(128, 32), (160, 0)])
def test_oracle_on_synthetic_marina(tmp_path, tile_size, overlap):
    """A real geoseg.synth marina: its label polygons, rasterised, are the truth."""
    synth = pytest.importorskip("geoseg.synth")
    import geopandas as gpd
    from rasterio.features import rasterize

    from geoseg.vectorize import vectorize

    scene = synth.generate_scene(tmp_path / "marina.tif", size=448, seed=5, layout="marina")
    labels = gpd.read_file(scene.labels_path)
    synth_classes = ("ship", "vehicle", "building")
    names = {n: i for i, n in enumerate(synth_classes)}
    labels = labels[labels["class"].isin(list(names))].reset_index(drop=True)
    inst = rasterize(
        [(g, i + 1) for i, g in enumerate(labels.geometry)],
        out_shape=(448, 448),
        transform=scene.transform,
        dtype="int32",
    )
    cls = np.asarray([0, *(names[c] for c in labels["class"])])
    grid = make_grid(448, 448, tile_size=tile_size, overlap=overlap)
    if overlap == 0:
        inst = separate_at_seams(inst, cls, grid)
    n_true = len(set(np.unique(inst).tolist()) - {0})
    assert n_true > 100  # a dense marina
    tds = oracle(inst, cls, grid, classes=synth_classes)
    det = stitch(tds, scene_width=448, scene_height=448)
    assert_exact(inst, cls, det)
    gdf = vectorize(det, transform=scene.transform, crs_wkt=scene.crs_wkt)
    assert len(gdf) == n_true
    ids = np.unique(inst)
    truth_counts = {synth_classes[c]: int((cls[ids[ids > 0]] == c).sum()) for c in range(3)}
    got = gdf["class"].value_counts().to_dict()
    assert {k: v for k, v in truth_counts.items() if v} == got


def test_oracle_scene_smaller_than_a_tile():
    inst, cls = make_scene(90, 70, seed=3, building=40)
    grid = make_grid(90, 70, tile_size=128, overlap=16)
    det = stitch(oracle(inst, cls, grid), scene_width=90, scene_height=70)
    assert_exact(inst, cls, det)


# --------------------------------------------------------------------------- imperfect predictions


def two_tiles(overlap=32, tile=128):
    """Two side by side tiles of a 2-tile-wide scene."""
    grid = make_grid(2 * tile - overlap, tile, tile_size=tile, overlap=overlap)
    assert len(grid) == 2
    return grid


def tile_dets(spec, objects, scores=None, labels=None):
    """TileDetections from (x1, y1, mask) in *scene* pixels, clipped to the tile window."""
    w = spec.window
    boxes, masks = [], []
    for x1, y1, m in objects:
        h, wd = m.shape
        cx0, cy0 = max(x1, w.col_off), max(y1, w.row_off)
        cx1, cy1 = min(x1 + wd, w.col_end), min(y1 + h, w.row_end)
        masks.append(m[cy0 - y1 : cy1 - y1, cx0 - x1 : cx1 - x1])
        boxes.append((cx0 - w.col_off, cy0 - w.row_off, cx1 - w.col_off, cy1 - w.row_off))
    n = len(masks)
    arr = np.asarray(boxes, np.int32).reshape(n, 4)
    return TileDetections(
        boxes=arr.astype(np.float32),
        scores=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        labels=np.asarray(labels if labels is not None else [0] * n, np.int64),
        mask_boxes=arr,
        masks=tuple(masks),
        classes=CLASSES,
        tile=spec,
    )


def paste(det, k, shape):
    out = np.zeros(shape, bool)
    x1, y1, x2, y2 = det.mask_boxes[k].tolist()
    out[y1:y2, x1:x2] = det.masks[k]
    return out


def test_jittered_fragment_still_merges():
    a, b = two_tiles()
    seam = a.window.col_end
    # a long object cut by both tiles: a fragment in each
    truth = np.ones((12, 100), bool)
    x1, y1 = seam - 70, 40
    jittered = truth.copy()  # tile b's prediction is shifted down a row ...
    jittered[5:7, 70:74] = False  # ... and has a small hole
    det = stitch(
        [tile_dets(a, [(x1, y1, truth)]), tile_dets(b, [(x1, y1 + 1, jittered)])],
        scene_width=224,
        scene_height=128,
    )
    assert len(det) == 1
    full = np.zeros((128, 224), bool)
    full[y1 : y1 + 12, x1 : x1 + 100] = True
    got = paste(det, 0, full.shape)
    assert (got & full).sum() / (got | full).sum() >= 0.9


def test_touching_neighbours_never_fuse():
    a, b = two_tiles()
    seam = a.window.col_end
    # two boats sharing an edge, both cut by tile a's right edge, inside the overlap zone
    top = (seam - 10, 50, np.ones((8, 20), bool))
    bottom = (seam - 10, 58, np.ones((8, 20), bool))
    # and a rotated pair whose boxes overlap but whose masks only touch
    yy, xx = np.mgrid[0:20, 0:20]
    upper = xx > yy
    lower = ~upper
    tds = [
        tile_dets(a, [top, bottom, (seam - 12, 80, upper), (seam - 12, 80, lower)]),
        tile_dets(b, [top, bottom, (seam - 12, 80, upper), (seam - 12, 80, lower)]),
    ]
    for class_agnostic in (True, False):
        det = stitch(tds, scene_width=224, scene_height=128, class_agnostic=class_agnostic)
        assert len(det) == 4
        areas = sorted(det.mask_areas().tolist())
        assert areas == sorted([160, 160, int(upper.sum()), int(lower.sum())])


def test_duplicate_in_overlap_is_suppressed_and_core_owner_kept():
    a, b = two_tiles()
    lo, hi = b.window.col_off, a.window.col_end  # the overlap zone [lo, hi)
    m = np.ones((10, 10), bool)
    x1 = lo + 2  # wholly inside the overlap, centre left of the core boundary
    shifted = np.ones((10, 10), bool)
    shifted[:, -1] = False
    det = stitch(
        [
            tile_dets(a, [(x1, 30, m)], scores=[0.6]),
            tile_dets(b, [(x1, 30, shifted)], scores=[0.95]),
        ],
        scene_width=224,
        scene_height=128,
    )
    assert len(det) == 1
    assert x1 + 5 < a.core.col_end <= hi
    # the centre lies in tile a's core: tile a's mask is kept, with the best score
    assert det.masks[0].sum() == m.sum()
    assert det.scores[0] == pytest.approx(0.95)


def test_leftover_duplicate_removed_by_mask_nms():
    a, b = two_tiles()
    x1 = b.window.col_off + 2
    m1 = np.ones((10, 10), bool)
    m2 = np.ones((10, 10), bool)
    m2[:, :2] = False  # IoU 0.8 with m1
    tds = [tile_dets(a, [(x1, 30, m1)], scores=[0.7]), tile_dets(b, [(x1, 30, m2)], scores=[0.9])]
    # too strict to match, but a duplicate for NMS: the higher score survives
    det = stitch(tds, scene_width=224, scene_height=128, match_iou=0.95, nms_iou=0.5)
    assert len(det) == 1
    assert det.scores[0] == pytest.approx(0.9)
    assert det.masks[0].sum() == m2.sum()
    # with a stricter NMS both stay
    det = stitch(tds, scene_width=224, scene_height=128, match_iou=0.95, nms_iou=0.9)
    assert len(det) == 2


def test_class_agnostic_matching():
    a, b = two_tiles()
    x1 = b.window.col_off + 2
    m = np.ones((10, 10), bool)
    tds = [tile_dets(a, [(x1, 30, m)], labels=[0]), tile_dets(b, [(x1, 30, m)], labels=[1])]
    assert len(stitch(tds, scene_width=224, scene_height=128)) == 2
    det = stitch(tds, scene_width=224, scene_height=128, class_agnostic=True)
    assert len(det) == 1


@pytest.mark.parametrize("mode", list(ScoreMode))
def test_score_modes_on_merged_fragments(mode):
    a, b = two_tiles()
    seam = a.window.col_end
    x1, y1 = seam - 40, 20
    m = np.ones((10, 70), bool)  # cut by both tiles
    sa, sb = 0.9, 0.5
    ta, tb = tile_dets(a, [(x1, y1, m)], scores=[sa]), tile_dets(b, [(x1, y1, m)], scores=[sb])
    det = stitch([ta, tb], scene_width=224, scene_height=128, score_mode=mode)
    assert len(det) == 1
    assert det.masks[0].sum() == m.sum()
    na, nb = int(ta.masks[0].sum()), int(tb.masks[0].sum())
    expected = {
        ScoreMode.MAX: max(sa, sb),
        ScoreMode.MEAN: (sa + sb) / 2,
        ScoreMode.AREA_WEIGHTED: (sa * na + sb * nb) / (na + nb),
    }[mode]
    assert det.scores[0] == pytest.approx(expected, rel=1e-5)


def test_object_across_three_tiles_in_both_directions():
    grid = make_grid(300, 300, tile_size=128, overlap=16)
    inst = np.zeros((300, 300), np.int32)
    inst[10:290, 15:280] = 1
    inst[100:150, 100:200] = 0
    cls = np.asarray([0, 2])
    det = stitch(oracle(inst, cls, grid), scene_width=300, scene_height=300)
    assert len(det) == 1
    assert (paste(det, 0, inst.shape) == (inst == 1)).all()


def test_clips_to_scene_and_drops_empty_masks():
    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 64, 64), PixelWindow(0, 0, 40, 30))
    m = np.ones((20, 20), bool)
    td = tile_dets(spec, [(30, 20, m), (5, 5, np.zeros((4, 4), bool))])
    det = stitch([td], scene_width=40, scene_height=30)
    assert len(det) == 1
    assert det.mask_boxes[0].tolist() == [30, 20, 40, 30]
    assert det.masks[0].shape == (10, 10)
    assert det.boxes[0].tolist() == [30.0, 20.0, 40.0, 30.0]


def test_output_is_scene_pixels_and_sorted():
    grid = make_grid(300, 200, tile_size=128, overlap=16)
    inst, cls = make_scene(300, 200, seed=11, building=60)
    det = stitch(oracle(inst, cls, grid), scene_width=300, scene_height=200)
    key = det.mask_boxes[:, 1].astype(np.int64) * 10_000 + det.mask_boxes[:, 0]
    assert (np.diff(key) >= 0).all()
    assert isinstance(det, Detections)
    assert det.boxes.dtype == np.float32 and det.mask_boxes.dtype == np.int32


def test_empty_and_invalid_inputs():
    grid = two_tiles()
    det = stitch(
        [TileDetections.empty(g, CLASSES) for g in grid], scene_width=224, scene_height=128
    )
    assert len(det) == 0
    assert len(stitch([], scene_width=10, scene_height=10)) == 0
    td = tile_dets(grid[0], [(5, 5, np.ones((4, 4), bool))])
    no_tile = TileDetections(
        boxes=td.boxes, scores=td.scores, labels=td.labels, mask_boxes=td.mask_boxes, masks=td.masks
    )
    with pytest.raises(ValueError, match="tile"):
        stitch([no_tile], scene_width=224, scene_height=128)
    bad = TileDetections(
        boxes=td.boxes,
        scores=td.scores,
        labels=td.labels,
        mask_boxes=td.mask_boxes,
        masks=(np.ones((3, 4), bool),),
        tile=grid[0],
    )
    with pytest.raises(ValueError, match="mask box"):
        stitch([bad], scene_width=224, scene_height=128)
    with pytest.raises(ValueError, match="match_iou"):
        stitch([td], scene_width=224, scene_height=128, match_iou=0.0)
