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


# ------------------------------------------------------------ tiles normalised on demand


def _raw_tile(dtype="uint16", alloc=None):
    from affine import Affine

    from geoseg.types import Tile

    rng = np.random.default_rng(7)
    raw = rng.integers(0, 3000, (3, 16, 20)).astype(dtype)
    valid = np.ones((16, 20), bool)
    valid[:4, :] = False  # nodata rows
    raw[:, :4, :] = 0
    norm = NormStats((1, 2, 3), (100.0, 50.0, 0.0), (2500.0, 2900.0, 1800.0), source_dtype=dtype)
    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 20, 16), PixelWindow(0, 0, 20, 16))
    tile = Tile(spec, None, valid, Affine.identity(), None, raw=raw, norm=norm, alloc=alloc)
    return tile, raw, valid, norm


def test_raw_tile_normalises_on_first_access_once_and_as_apply():
    tile, raw, valid, norm = _raw_tile()
    assert not tile.has_image and tile.image_shape == (3, 16, 20)
    assert not tile.has_image  # the shape did not compute the image
    image = tile.image
    want = norm.apply(raw)
    want[:, ~valid] = 0.0
    assert image.dtype == np.float32 and np.array_equal(image, want)
    assert tile.has_image and tile.image is image  # kept, not recomputed
    assert tile.raw is raw and tile.norm is norm


def test_raw_tile_is_frozen_and_pickles_without_its_allocator():
    import dataclasses
    import pickle

    from geoseg.raster import BufferPool

    pool = BufferPool()
    tile, raw, _, _ = _raw_tile(alloc=pool.get)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tile.image = np.zeros((3, 16, 20), np.float32)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tile.raw = raw  # type: ignore[misc]
    clone = pickle.loads(pickle.dumps(tile))
    assert not clone.has_image and clone.__dict__["_alloc"] is None
    assert np.array_equal(clone.raw, raw) and np.array_equal(clone.image, tile.image)
    assert any(buf is tile.image for buf in pool._arrays)  # allocated in the pool


def test_tile_needs_an_image_or_matching_raw_pixels():
    from affine import Affine

    from geoseg.types import Tile

    spec = TileSpec(0, 0, 0, PixelWindow(0, 0, 4, 4), PixelWindow(0, 0, 4, 4))
    valid = np.ones((4, 4), bool)
    norm = NormStats((1,), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="raw pixels and their norm"):
        Tile(spec, None, valid, Affine.identity(), None)
    with pytest.raises(ValueError, match="do not match"):
        Tile(spec, None, valid, Affine.identity(), None, raw=np.zeros((2, 4, 4)), norm=norm)
    with pytest.raises(TypeError, match="valid"):
        Tile(spec, None, raw=np.zeros((1, 4, 4)), norm=norm)
    image = np.full((1, 4, 4), 0.5, np.float32)
    t = Tile(spec, image, valid, Affine.identity(), None)  # today's form: a normalised image
    assert t.image is image and t.raw is None and t.norm is None and t.image_shape == (1, 4, 4)


def test_replace_keeps_an_image_tile_and_renormalises_a_raw_tile():
    import dataclasses

    tile, raw, valid, _ = _raw_tile()
    assert tile.image is not None
    fewer = valid.copy()
    fewer[:, :5] = False
    moved = dataclasses.replace(tile, valid=fewer)
    assert moved.raw is raw and not moved.has_image  # computed again, with the new mask
    assert (moved.image[:, :, :5] == 0).all() and np.array_equal(
        moved.image[:, 4:, 5:], tile.image[:, 4:, 5:]
    )
    image_only = type(tile)(tile.spec, tile.image.copy(), valid, tile.transform, None)
    again = dataclasses.replace(image_only, crs_wkt="x")
    assert again.image is image_only.image and again.crs_wkt == "x" and again.raw is None
