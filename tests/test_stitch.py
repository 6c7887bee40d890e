"""Tests for geoseg.stitch.

The main test is an *oracle* test: a synthetic scene is rasterised into an instance-id image
(densely packed, touching boats and cars, rotated ellipses, buildings larger than a tile with a
courtyard), each tile of ``make_grid`` receives the true objects clipped to its window (what a
perfect predictor returns), and the stitched output must contain exactly one object per true
object, each with mask IoU >= 0.95 against it.

The *imperfect* oracle imitates what real models return: each tile grows or shrinks all its
masks by 1-2 px, scores are random, some objects are missed by one of the tiles that see them,
and some come with an extra fragment predicted as a separate object. There the stitched count
must stay within 0.5 % of the truth and no true object may be lost.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.stitch import ScoreMode, stitch
from geoseg.synth.oracle import oracle_detections, visible_ids
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


def oracle(inst, cls, grid, *, seed=0, classes=CLASSES):
    """A perfect predictor: every tile reports the true objects clipped to its window."""
    return oracle_detections(inst, cls, grid, classes, seed=seed)


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
    overlap = max(1, round(tile_size * overlap_frac))
    grid = make_grid(width, height, tile_size=tile_size, overlap=overlap)
    inst, cls = make_scene(width, height, seed=seed, building=tile_size * 2 + 8)
    tds = oracle(inst, cls, grid, seed=seed)
    assert any(len(t) for t in tds)
    det = stitch(tds, scene_width=width, scene_height=height)
    assert det.classes == CLASSES
    return inst, cls, det


# --------------------------------------------------------------------------- oracle tests


@pytest.mark.parametrize(
    ("tile_size", "overlap_frac"),
    [(128, 0.01), (128, 0.125), (128, 0.25), (160, 0.05), (200, 0.2)],
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
    overlap_frac=st.floats(0.01, 0.25),
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
@pytest.mark.parametrize("overlap_frac", [0.01, 0.1, 0.25])
def test_oracle_exact_large_tiles(tile_size, overlap_frac):
    w, h = 2 * tile_size + 700, 2 * tile_size + 500
    inst, cls, det = run_oracle(tile_size, overlap_frac, seed=7, width=w, height=h)
    assert_exact(inst, cls, det)


SYNTH_CLASSES = ("ship", "vehicle", "building")


def synth_truth(path, layout, *, size=448, seed=5):
    """A geoseg.synth scene: its label polygons, rasterised, as (scene, inst, cls)."""
    synth = pytest.importorskip("geoseg.synth")
    import geopandas as gpd
    from rasterio.features import rasterize

    scene = synth.generate_scene(path, size=size, seed=seed, layout=layout)
    labels = gpd.read_file(scene.labels_path)
    names = {n: i for i, n in enumerate(SYNTH_CLASSES)}
    labels = labels[labels["class"].isin(list(names))].reset_index(drop=True)
    inst = rasterize(
        [(g, i + 1) for i, g in enumerate(labels.geometry)],
        out_shape=(size, size),
        transform=scene.transform,
        dtype="int32",
    )
    cls = np.asarray([0, *(names[c] for c in labels["class"])])
    return scene, inst, cls


@pytest.mark.parametrize(("tile_size", "overlap"), [(128, 32), (160, 12)])
def test_oracle_on_synthetic_marina(tmp_path, tile_size, overlap):
    """A real geoseg.synth marina: its label polygons, rasterised, are the truth."""
    from geoseg.vectorize import vectorize

    scene, inst, cls = synth_truth(tmp_path / "marina.tif", "marina")
    synth_classes = SYNTH_CLASSES
    grid = make_grid(448, 448, tile_size=tile_size, overlap=overlap)
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
    m = np.ones((10, 10), bool)
    # the same square one pixel to the right: IoU 90 / 110 = 0.82, containment 0.9
    tds = [tile_dets(a, [(x1, 30, m)], scores=[0.7]), tile_dets(b, [(x1 + 1, 30, m)], scores=[0.9])]
    # too strict to match, but a duplicate for NMS: the higher score survives
    det = stitch(tds, scene_width=224, scene_height=128, match_iou=0.95, nms_iou=0.5)
    assert len(det) == 1
    assert det.scores[0] == pytest.approx(0.9)
    assert det.mask_boxes[0].tolist() == [x1 + 1, 30, x1 + 11, 40]
    # with a stricter NMS and containment both stay
    kw = {"match_iou": 0.95, "nms_iou": 0.9, "contain_frac": 0.95}
    assert len(stitch(tds, scene_width=224, scene_height=128, **kw)) == 2
    # a containment of 0.9 is enough to call the lower-scored one a part of the other
    det = stitch(tds, scene_width=224, scene_height=128, **{**kw, "contain_frac": 0.9})
    assert len(det) == 1
    assert det.scores[0] == pytest.approx(0.9)


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


# --------------------------------------------------------------------------- partial views


def test_partial_view_absorbed_by_the_whole_copy():
    """A bus cut by tile b's edge (half a bus, outline off by a pixel) next to the whole bus
    seen by tile a: one object, with the whole copy's mask and class and the best score."""
    a, b = two_tiles()
    lo, hi = b.window.col_off, a.window.col_end  # the overlap zone [lo, hi)
    bus = np.ones((10, 24), bool)
    x1, y1 = lo - 12, 40  # half of it left of tile b's window, wholly inside tile a's
    assert x1 + 24 < hi - 3
    half = np.zeros((12, 15), bool)  # tile b's view: the right half, grown by a pixel
    half[:, :] = True
    tds = [
        tile_dets(a, [(x1, y1, bus)], scores=[0.6], labels=[1]),
        tile_dets(b, [(lo, y1 - 1, half)], scores=[0.95], labels=[1]),
    ]
    det = stitch(tds, scene_width=224, scene_height=128)
    assert len(det) == 1
    assert det.mask_boxes[0].tolist() == [x1, y1, x1 + 24, y1 + 10]
    assert det.masks[0].sum() == bus.sum()
    assert det.labels[0] == 1
    assert det.scores[0] == pytest.approx(0.95)
    # absorbed, not matched: with IoU thresholds nothing could meet, still one object
    strict = stitch(tds, scene_width=224, scene_height=128, match_iou=1.0, nms_iou=1.0)
    assert len(strict) == 1
    assert strict.masks[0].sum() == bus.sum()
    # a partial view of another class is another object
    tds[1] = tile_dets(b, [(lo, y1 - 1, half)], scores=[0.95], labels=[0])
    assert len(stitch(tds, scene_width=224, scene_height=128)) == 2


def test_sliver_absorbed_when_the_whole_copy_lies_across_the_cut():
    """Tile a sees two rows of an object below its bottom edge... of which the whole copy,
    shrunk by a pixel, does not even reach that edge: still one object."""
    grid = make_grid(128, 224, tile_size=128, overlap=32)
    top, bottom = grid
    edge = top.window.row_end
    sliver = np.ones((2, 10), bool)
    whole = np.ones((12, 8), bool)
    tds = [
        tile_dets(top, [(40, edge - 2, sliver)]),
        tile_dets(bottom, [(41, edge + 1, whole)]),  # shrunk: starts a pixel past the edge
    ]
    det = stitch(tds, scene_width=128, scene_height=224)
    assert len(det) == 1
    assert det.mask_boxes[0].tolist() == [41, edge + 1, 49, edge + 13]
    # without the tolerance (edge_margin 0) the sliver survives as a second object
    assert len(stitch(tds, scene_width=128, scene_height=224, edge_margin=0)) == 2


def test_partial_of_a_larger_object_is_not_absorbed_by_a_small_whole_one():
    """A building cut by tile b's left edge runs far into tile b; tile a reports, whole, a
    small piece of it. The partial view is evidence of more than tile a saw: it stays."""
    a, b = two_tiles()
    lo, hi = b.window.col_off, a.window.col_end
    building = np.ones((40, 80), bool)  # in tile b: from its left edge to x = lo + 80
    piece = np.ones((10, 10), bool)  # tile a's whole detection inside the overlap zone
    tds = [
        tile_dets(a, [(lo + 8, 20, piece)], labels=[2]),
        tile_dets(b, [(lo, 10, building)], labels=[2]),
    ]
    assert lo + 80 > hi  # the partial view reaches beyond tile a's window
    det = stitch(tds, scene_width=224, scene_height=128)
    assert len(det) == 1  # the piece lies inside the building: a part of it
    assert det.masks[0].sum() == building.sum()


def test_fragment_inside_a_detection_of_its_own_tile_is_dropped():
    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 128, 128), PixelWindow(0, 0, 128, 128))
    bus = np.ones((10, 30), bool)
    front = np.ones((10, 12), bool)
    td = tile_dets(spec, [(20, 20, bus), (20, 20, front)], scores=[0.6, 0.9], labels=[1, 1])
    det = stitch([td], scene_width=128, scene_height=128)
    assert len(det) == 1
    assert det.masks[0].sum() == bus.sum()
    assert det.scores[0] == pytest.approx(0.9)  # the better score of the two
    # another class is another object (unless class-agnostic)
    td2 = tile_dets(spec, [(20, 20, bus), (20, 20, front)], labels=[1, 0])
    assert len(stitch([td2], scene_width=128, scene_height=128)) == 2
    assert len(stitch([td2], scene_width=128, scene_height=128, class_agnostic=True)) == 1
    # a fragment sticking out of the bus by more than 1 - contain_frac stays
    out = np.ones((10, 12), bool)
    td3 = tile_dets(spec, [(20, 20, bus), (44, 20, out)], labels=[1, 1])  # 6 of 12 columns in
    assert len(stitch([td3], scene_width=128, scene_height=128)) == 2
    assert len(stitch([td3], scene_width=128, scene_height=128, contain_frac=0.5)) == 1


# --------------------------------------------------------------------------- zero overlap


def test_zero_overlap_is_ambiguous_so_it_is_refused():
    """With overlap 0, one object cut by a seam and two objects touching on it give the
    tiles exactly the same detections: no stitcher can be right for both."""
    grid = make_grid(256, 128, tile_size=128, overlap=0)
    one = np.zeros((128, 256), np.int32)
    one[40:50, 120:136] = 1
    two = np.zeros((128, 256), np.int32)
    two[40:50, 120:128] = 1
    two[40:50, 128:136] = 2
    cls_one, cls_two = np.asarray([0, 0]), np.asarray([0, 0, 0])
    t_one, t_two = oracle(one, cls_one, grid), oracle(two, cls_two, grid)
    for x, y in zip(t_one, t_two, strict=True):
        assert x.mask_boxes.tolist() == y.mask_boxes.tolist()
        assert all((p == q).all() for p, q in zip(x.masks, y.masks, strict=True))
    with pytest.raises(ValueError, match=r"touch without overlapping \(overlap 0\)"):
        stitch(t_one, scene_width=256, scene_height=128)
    # no detections at all: still refused (the grid is the problem)
    with pytest.raises(ValueError, match="overlap"):
        stitch([TileDetections.empty(g, CLASSES) for g in grid], scene_width=256, scene_height=128)


def test_tiles_touching_a_non_neighbour_are_fine():
    """make_grid may place a last tile so that two non-neighbours touch: a third tile covers
    that seam, so it is no zero-overlap seam."""
    grid = make_grid(560, 128, tile_size=200, overlap=40)
    starts = [g.window.col_off for g in grid]
    assert 360 in starts and any(g.window.col_end == 360 for g in grid)
    inst = np.zeros((128, 560), np.int32)
    inst[40:50, 350:370] = 1
    det = stitch(oracle(inst, np.asarray([0, 0]), grid), scene_width=560, scene_height=128)
    assert len(det) == 1


# --------------------------------------------------------------------------- imperfect oracle


def imperfect_oracle(inst, cls, grid, *, seed, classes=CLASSES):
    """Outlines off by 1-2 px per tile, random scores, 5 % of the objects seen by several
    tiles missed by one of them (another still sees all of it), 5 % with an extra fragment,
    no mask under 4 px. With only partial views left (``whole_left=False``), 2 px outline
    noise makes a 4 px boat cut by a tile edge hard to tell from its neighbour's edge: see
    benchmarks/bench_fragments.py for that harsher case."""
    return oracle_detections(
        inst,
        cls,
        grid,
        classes,
        seed=seed,
        outline_px=(-2, -1, 1, 2),
        drop=0.05,
        fragment=0.05,
        scores=(0.3, 1.0),
        min_px=4,
    )


def assert_close_count(inst, cls, det, *, tolerance=0.005):
    """Stitched count within ``tolerance`` of the truth, and every true object found."""
    ids = set(np.unique(inst).tolist()) - {0}
    found = match_truth(inst, cls, det)
    missing = ids - set(found)
    assert not missing, f"{len(missing)} true objects lost: {sorted(missing)[:10]}"
    err = abs(len(det) - len(ids)) / len(ids)
    assert err <= tolerance, f"{len(det)} objects out for {len(ids)} true ({err:.2%})"


@pytest.mark.parametrize(
    ("tile_size", "overlap_frac"), [(128, 0.125), (128, 0.25), (160, 0.1), (200, 0.2)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_imperfect_oracle_count_close_and_nothing_lost(tile_size, overlap_frac, seed):
    w, h = 2 * tile_size + 160, 2 * tile_size + 120
    grid = make_grid(w, h, tile_size=tile_size, overlap=round(tile_size * overlap_frac))
    inst, cls = make_scene(w, h, seed=seed, building=tile_size * 2 + 8)
    inst = visible_ids(inst)
    tds = imperfect_oracle(inst, cls, grid, seed=seed)
    assert sum(len(t) for t in tds) > 1.2 * len(np.unique(inst))  # duplicates and fragments
    det = stitch(tds, scene_width=w, scene_height=h)
    assert_close_count(inst, cls, det)


@pytest.mark.parametrize("layout", ["marina", "town"])
def test_imperfect_oracle_on_synthetic_scenes(tmp_path, layout):
    _, inst, cls = synth_truth(tmp_path / f"{layout}.tif", layout, size=512, seed=3)
    inst = visible_ids(inst)
    grid = make_grid(512, 512, tile_size=160, overlap=32)
    tds = imperfect_oracle(inst, cls, grid, seed=4, classes=SYNTH_CLASSES)
    det = stitch(tds, scene_width=512, scene_height=512)
    assert_close_count(inst, cls, det)


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
    with pytest.raises(ValueError, match="contain_frac"):
        stitch([td], scene_width=224, scene_height=128, contain_frac=1.5)
    with pytest.raises(ValueError, match="edge_margin"):
        stitch([td], scene_width=224, scene_height=128, edge_margin=-1)


# ------------------------------------------------- class-agnostic: one object, best class


def test_class_agnostic_one_object_seen_as_two_classes_keeps_the_best_class():
    """The same bus outlined as boat (0.9) and building (0.6) in one tile: neither mask holds
    ``contain_frac`` of the other, so only the cross-class duplicate rule (mask IoU) joins
    them; the model's per-class NMS would have kept both."""
    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 128, 128), PixelWindow(0, 0, 128, 128))
    ship = np.ones((10, 30), bool)  # 300 px at (20, 20)
    other = np.ones((10, 30), bool)  # at (25, 21): 225 px shared, containment 0.75, IoU 0.6
    objs = [(20, 20, ship), (25, 21, other)]
    td = tile_dets(spec, objs, scores=[0.9, 0.6], labels=[0, 2])
    assert len(stitch([td], scene_width=128, scene_height=128)) == 2  # class-aware: both
    det = stitch([td], scene_width=128, scene_height=128, class_agnostic=True)
    assert len(det) == 1
    assert CLASSES[int(det.labels[0])] == CLASSES[0] and det.scores[0] == pytest.approx(0.9)
    assert det.mask_boxes[0].tolist() == [20, 20, 50, 30]  # the best-scoring one, whole
    # the same pair with the scores swapped keeps the other one
    td = tile_dets(spec, objs, scores=[0.6, 0.9], labels=[0, 2])
    det = stitch([td], scene_width=128, scene_height=128, class_agnostic=True)
    assert [CLASSES[int(v)] for v in det.labels] == [CLASSES[2]]
    assert det.mask_boxes[0].tolist() == [25, 21, 55, 31]
    # below nms_iou they are two objects, even class-agnostic
    det = stitch([td], scene_width=128, scene_height=128, class_agnostic=True, nms_iou=0.7)
    assert len(det) == 2


def test_class_agnostic_absorbed_part_brings_its_better_class():
    """A part (fragment) scored higher than the larger detection that absorbs it: the merged
    object has the part's class with its score, never a score of one class on another."""
    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 128, 128), PixelWindow(0, 0, 128, 128))
    bus = np.ones((10, 30), bool)
    front = np.ones((10, 12), bool)  # wholly inside the bus, IoU 0.4 < nms_iou
    td = tile_dets(spec, [(20, 20, bus), (20, 20, front)], scores=[0.6, 0.9], labels=[2, 1])
    det = stitch([td], scene_width=128, scene_height=128, class_agnostic=True)
    assert len(det) == 1
    assert det.masks[0].sum() == bus.sum()
    assert CLASSES[int(det.labels[0])] == CLASSES[1] and det.scores[0] == pytest.approx(0.9)
    # a better-scored larger detection keeps its own class
    td = tile_dets(spec, [(20, 20, bus), (20, 20, front)], scores=[0.95, 0.9], labels=[2, 1])
    det = stitch([td], scene_width=128, scene_height=128, class_agnostic=True)
    assert CLASSES[int(det.labels[0])] == CLASSES[2] and det.scores[0] == pytest.approx(0.95)


def test_class_agnostic_across_tiles_keeps_one_object():
    a, b = two_tiles()
    # 2 px from tile b's cut edge: b's (better-scored) view is partial and is absorbed into
    # tile a's whole copy; the merged object keeps the class that came with the best score
    x1 = b.window.col_off + 2
    m = np.ones((10, 10), bool)
    tds = [
        tile_dets(a, [(x1, 30, m)], scores=[0.55], labels=[2]),
        tile_dets(b, [(x1, 30, m)], scores=[0.9], labels=[0]),
    ]
    assert len(stitch(tds, scene_width=224, scene_height=128)) == 2
    det = stitch(tds, scene_width=224, scene_height=128, class_agnostic=True)
    assert len(det) == 1
    assert CLASSES[int(det.labels[0])] == CLASSES[0] and det.scores[0] == pytest.approx(0.9)
