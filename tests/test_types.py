import numpy as np
import pytest

from geoseg.types import Detections, NormStats, PixelWindow, TileDetections, TileSpec


def _dets(n: int, classes=("ship", "vehicle")) -> Detections:
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 100, size=(n, 2))
    wh = rng.integers(1, 10, size=(n, 2))
    mb = np.concatenate([xy, xy + wh], axis=1).astype(np.int32)
    masks = tuple(np.ones((int(h), int(w)), bool) for w, h in wh)
    return Detections(
        boxes=mb.astype(np.float32),
        scores=rng.random(n).astype(np.float32),
        labels=rng.integers(0, 2, n).astype(np.int64),
        mask_boxes=mb,
        masks=masks,
        classes=classes,
    )


def test_window_intersection_and_contains():
    a = PixelWindow(0, 0, 10, 10)
    b = PixelWindow(5, 8, 10, 10)
    assert a.intersection(b) == PixelWindow(5, 8, 5, 2)
    assert a.intersection(PixelWindow(10, 0, 5, 5)).area == 0
    assert a.contains(9.5, 0) and not a.contains(10, 0)
    assert a.to_rasterio().width == 10


def test_detections_index_and_cat_keep_fields_aligned():
    d = _dets(7)
    keep = d.scores > 0.5
    sub = d[keep]
    assert len(sub) == int(keep.sum())
    assert np.array_equal(sub.labels, d.labels[keep])
    for m, mb in zip(sub.masks, sub.mask_boxes, strict=True):
        assert m.shape == (mb[3] - mb[1], mb[2] - mb[0])
    both = Detections.cat([d, sub])
    assert len(both) == len(d) + len(sub)
    assert np.array_equal(both.mask_areas()[: len(d)], d.mask_areas())
    with pytest.raises(ValueError, match="classes"):
        Detections.cat([d, _dets(2, classes=("a", "b"))])
    with pytest.raises(IndexError):
        d[np.array([True])]


def test_inconsistent_lengths_are_refused():
    d = _dets(3)
    with pytest.raises(ValueError, match="inconsistent"):
        Detections(
            boxes=d.boxes,
            scores=d.scores[:2],
            labels=d.labels,
            mask_boxes=d.mask_boxes,
            masks=d.masks,
        )


def test_tile_detections_keep_their_tile():
    spec = TileSpec(3, 1, 2, PixelWindow(0, 0, 8, 8), PixelWindow(0, 0, 8, 8))
    e = TileDetections.empty(spec, ("ship",))
    assert len(e) == 0 and e.tile == spec and e[np.zeros(0, bool)].tile == spec


def test_norm_stats_stretch_and_round_trip():
    s = NormStats(
        bands=(3, 2, 1), low=(100.0, 0.0, 50.0), high=(200.0, 255.0, 50.0), source_dtype="uint16"
    )
    img = np.array([[[50, 150, 300]], [[0, 255, 128]], [[50, 51, 49]]], dtype=np.uint16)
    out = s.apply(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert np.allclose(out[0, 0], [0.0, 0.5, 1.0])
    assert out.min() >= 0 and out.max() <= 1
    assert NormStats.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        NormStats(bands=(1,), low=(0.0, 1.0), high=(1.0,))
