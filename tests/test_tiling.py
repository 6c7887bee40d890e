import itertools
import pickle
import warnings

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geoseg.datasets import TileDataset, tile_loader
from geoseg.errors import BandError, ConfigError
from geoseg.raster import compute_norm_stats, open_scene
from geoseg.tiling import iter_tiles, make_grid, metres_to_pixels, tile_transform
from geoseg.types import NormStats, PixelWindow

UTM = "EPSG:32633"


def write_tif(path, data, *, crs=UTM, transform=None, nodata=None, block=32):
    data = np.asarray(data)
    count, h, w = data.shape
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=data.dtype.name,
        transform=transform or from_origin(500000.0, 4000000.0, 0.5, 0.5),
        nodata=nodata,
        compress="deflate",
    )
    if crs is not None:
        profile["crs"] = crs
    if w >= block and h >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
    return str(path)


# ------------------------------------------------------------ pure grid


# scene sides up to 40 tiles (a few thousand pixels) keep the grids small enough to be fast
grid_args = st.integers(1, 600).flatmap(
    lambda tile: st.tuples(
        st.integers(1, min(5000, 40 * tile)),
        st.integers(1, min(5000, 40 * tile)),
        st.just(tile),
        st.integers(0, tile - 1),
    )
)


def xy(t, x, y):
    return (t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f)


@settings(max_examples=300, deadline=None)
@given(grid_args)
def test_grid_axis_coverage_and_partition(args):
    width, height, tile, overlap = args
    specs = make_grid(width, height, tile_size=tile, overlap=overlap)
    assert [s.index for s in specs] == list(range(len(specs)))
    for length, key_off, key_len in ((width, "col_off", "width"), (height, "row_off", "height")):
        axis = "col" if key_off == "col_off" else "row"
        first = {}
        for s in specs:
            first.setdefault(getattr(s, axis), s)
        line = [first[k] for k in sorted(first)]
        windows = [(getattr(s.window, key_off), getattr(s.window, key_len)) for s in line]
        cores = [(getattr(s.core, key_off), getattr(s.core, key_len)) for s in line]
        # every window is tile-sized; it stays inside the scene unless the scene is smaller
        assert all(w == tile for _, w in windows)
        if length >= tile:
            assert all(o >= 0 and o + w <= length for o, w in windows)
        else:
            assert windows == [(0, tile)]
        # windows cover [0, length) and neighbours share at least `overlap` pixels
        assert windows[0][0] == 0 and windows[-1][0] + windows[-1][1] >= length
        for (o0, w0), (o1, _) in itertools.pairwise(windows):
            assert o0 < o1 and o0 + w0 - o1 >= overlap
        # cores are non-empty, contiguous, exactly partition [0, length), inside their window
        assert cores[0][0] == 0 and cores[-1][0] + cores[-1][1] == length
        for (c0, l0), (c1, _) in itertools.pairwise(cores):
            assert c0 + l0 == c1
        for (c, cl), (o, w) in zip(cores, windows, strict=False):
            assert cl > 0 and o <= c and c + cl <= o + w


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 160).flatmap(
        lambda tile: st.tuples(
            st.integers(1, 300), st.integers(1, 300), st.just(tile), st.integers(0, tile - 1)
        )
    )
)
def test_grid_cores_partition_every_pixel(args):
    width, height, tile, overlap = args
    specs = make_grid(width, height, tile_size=tile, overlap=overlap)
    core_count = np.zeros((height, width), np.int32)
    window_count = np.zeros((height, width), np.int32)
    for s in specs:
        c = s.core
        core_count[c.row_off : c.row_end, c.col_off : c.col_end] += 1
        w = s.window.intersection(PixelWindow(0, 0, width, height))
        window_count[w.row_off : w.row_end, w.col_off : w.col_end] += 1
    assert (core_count == 1).all()
    assert (window_count >= 1).all()


def test_grid_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_grid(10, 10, tile_size=8, overlap=8)
    with pytest.raises(ValueError):
        make_grid(0, 10, tile_size=8, overlap=0)


def test_metres_to_pixels(tmp_path):
    p = write_tif(tmp_path / "a.tif", np.ones((1, 10, 10), np.uint8))
    info = open_scene(p)  # 0.5 m pixels
    assert metres_to_pixels(info, 256.0) == 512
    assert metres_to_pixels(info, 0.0) == 0
    with pytest.raises(ConfigError):
        metres_to_pixels(info, -1.0)


# ------------------------------------------------------------- reading


@pytest.fixture
def scene_u16(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.integers(1, 4000, (4, 150, 170), dtype=np.uint16)
    return write_tif(tmp_path / "u16.tif", data), data


def test_iter_tiles_uint16_4band_content_and_roundtrip(scene_u16):
    path, data = scene_u16
    info = open_scene(path)
    stats = compute_norm_stats(info)
    tiles = list(iter_tiles(path, tile_size=64, overlap=16))
    specs = make_grid(170, 150, tile_size=64, overlap=16)
    assert [t.spec for t in tiles] == specs
    inv = ~info.transform
    rng = np.random.default_rng(0)
    for t in tiles:
        w = t.spec.window
        assert t.image.shape == (4, 64, 64) and t.image.dtype == np.float32
        assert t.valid.shape == (64, 64) and t.valid.all()
        assert t.crs_wkt == info.crs_wkt
        raw = data[:, w.row_off : w.row_end, w.col_off : w.col_end]
        np.testing.assert_allclose(t.image, stats.apply(raw), atol=1e-6)
        assert t.image.min() >= 0.0 and t.image.max() <= 1.0
        # pixel -> CRS -> pixel round trip: tile pixels map to the scene pixels they came from
        for x, y in [(0, 0), (64, 64), *rng.uniform(0, 64, (5, 2))]:
            cx, cy = xy(t.transform, x, y)
            sx, sy = xy(info.transform, x + w.col_off, y + w.row_off)
            assert (cx, cy) == pytest.approx((sx, sy), abs=1e-6)
            px, py = xy(inv, cx, cy)
            assert (px - w.col_off, py - w.row_off) == pytest.approx((x, y), abs=1e-6)
    # not divided by 255: a mid-range 16-bit value maps to the middle of the stretch
    mid = (stats.low[0] + stats.high[0]) / 2
    np.testing.assert_allclose(
        NormStats((1,), stats.low[:1], stats.high[:1]).apply(np.full((1, 1, 1), mid)),
        0.5,
        atol=1e-3,
    )


def test_iter_tiles_band_selection_and_given_stats(scene_u16):
    path, data = scene_u16
    stats = NormStats(bands=(3, 1), low=(0.0, 1000.0), high=(4000.0, 2000.0), source_dtype="uint16")
    tiles = list(iter_tiles(path, tile_size=100, overlap=10, stats=stats))  # bands from stats
    assert len(tiles) == 4
    for t in tiles:
        w = t.spec.window
        raw = data[[2, 0], w.row_off : w.row_end, w.col_off : w.col_end]
        np.testing.assert_allclose(t.image, stats.apply(raw), atol=1e-6)
    with pytest.raises(BandError):
        iter_tiles(path, tile_size=100, overlap=10, bands=(1, 2), stats=stats)
    with pytest.raises(BandError):
        iter_tiles(path, tile_size=100, overlap=10, bands=(5,))
    with pytest.raises(ConfigError):
        iter_tiles(path, tile_size=100, overlap=100)


def test_nodata_collar_skips_empty_tiles_and_masks_partial_ones(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (3, 200, 200), dtype=np.uint8)
    data[:, :90, :] = 0  # wide collar on top
    data[:, :, 150:] = 0  # and on the right
    path = write_tif(tmp_path / "collar.tif", data, nodata=0)
    valid_scene = data[0] != 0
    all_specs = make_grid(200, 200, tile_size=64, overlap=8)
    tiles = list(iter_tiles(path, tile_size=64, overlap=8))
    kept = {t.spec.index for t in tiles}
    for s in all_specs:
        w = s.window
        has_valid = valid_scene[w.row_off : w.row_end, w.col_off : w.col_end].any()
        assert (s.index in kept) == has_valid
    assert 0 < len(tiles) < len(all_specs)
    partial = 0
    for t in tiles:
        w = t.spec.window
        expected = valid_scene[w.row_off : w.row_end, w.col_off : w.col_end]
        np.testing.assert_array_equal(t.valid, expected)
        assert (t.image[:, ~t.valid] == 0).all()
        partial += int(not t.valid.all())
    assert partial > 0
    every = list(iter_tiles(path, tile_size=64, overlap=8, skip_empty=False))
    assert [t.spec for t in every] == all_specs


def test_scene_smaller_than_tile_is_padded(tmp_path):
    data = np.random.default_rng(2).integers(1, 255, (3, 40, 50), dtype=np.uint8)
    path = write_tif(tmp_path / "small.tif", data)
    (tile,) = list(iter_tiles(path, tile_size=64, overlap=8))
    assert tile.image.shape == (3, 64, 64)
    assert tile.valid[:40, :50].all() and not tile.valid[40:].any() and not tile.valid[:, 50:].any()
    assert tile.spec.core == PixelWindow(0, 0, 50, 40)
    assert (tile.image[:, 40:, :] == 0).all()


def test_dataloader_two_workers_matches_single_process(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(1, 255, (3, 260, 230), dtype=np.uint8)
    data[:, 200:, :] = 0
    path = write_tif(tmp_path / "dl.tif", data, nodata=0)
    single = {t.spec.index: t for t in iter_tiles(path, tile_size=64, overlap=16)}
    loader = tile_loader(path, tile_size=64, overlap=16, batch_size=3, num_workers=2)
    seen = {}
    for batch in loader:
        assert isinstance(batch, list) and 1 <= len(batch) <= 3
        for t in batch:
            assert t.spec.index not in seen
            seen[t.spec.index] = t
    assert seen.keys() == single.keys()
    for i, t in single.items():
        assert seen[i].spec == t.spec and seen[i].transform == t.transform
        np.testing.assert_array_equal(seen[i].image, t.image)
        np.testing.assert_array_equal(seen[i].valid, t.valid)


def test_tile_dataset_holds_no_handle_and_shards_by_row(scene_u16):
    path, _ = scene_u16
    ds = TileDataset(path, tile_size=64, overlap=16, num_threads=2)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.specs == ds.specs
    shards = [ds.shard(k, 3) for k in range(3)]
    assert sorted(s.index for sh in shards for s in sh) == [s.index for s in ds.specs]
    assert all(s.row % 3 == k for k, sh in enumerate(shards) for s in sh)
    a = [t.image for t in ds]
    b = [t.image for t in iter_tiles(path, tile_size=64, overlap=16)]
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))


def test_tile_transform_matches_affine_composition():
    from affine import Affine

    t = from_origin(10.0, 20.0, 0.25, 0.5)
    w = PixelWindow(-5, 7, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = t * Affine.translation(-5, 7)
    assert tile_transform(t, w).almost_equals(expected)


# ------------------------------------------------------------ reused read buffers


def _stripes(tmp_path, nodata=None):
    rng = np.random.default_rng(5)
    data = rng.integers(1, 250, (3, 96, 128)).astype(np.uint8)
    data[:, :40, :40] = 0  # nodata in the first tile when nodata=0
    return write_tif(tmp_path / "s.tif", data, nodata=nodata), data


@pytest.mark.parametrize("nodata", [None, 0])
def test_tiles_kept_by_the_consumer_are_never_overwritten(tmp_path, nodata):
    path, data = _stripes(tmp_path, nodata)
    stats = NormStats(bands=(1, 2, 3), low=(20.0, 30.0, 40.0), high=(200.0, 210.0, 220.0))
    kept = list(iter_tiles(path, tile_size=32, overlap=8, stats=stats, skip_empty=False))
    assert len({id(t.raw) for t in kept}) == len(kept)  # raw buffers held by a tile stay its own
    assert len({id(t.image) for t in kept}) == len(kept)
    assert len({id(t.valid) for t in kept}) == len(kept)
    for t in kept:
        w = t.spec.window
        raw = data[:, w.row_off : w.row_end, w.col_off : w.col_end]
        want = stats.apply(raw)
        valid = ~(raw == 0).all(axis=0) if nodata == 0 else np.ones(raw.shape[1:], bool)
        want[:, ~valid] = 0.0
        np.testing.assert_array_equal(t.image, want)
        np.testing.assert_array_equal(t.valid, valid)


def test_tiles_dropped_by_the_consumer_reuse_their_arrays(tmp_path):
    path, _ = _stripes(tmp_path)
    stats = NormStats(bands=(1, 2, 3), low=(20.0, 30.0, 40.0), high=(200.0, 210.0, 220.0))
    ids, sums, n = set(), [], 0
    for t in iter_tiles(path, tile_size=32, overlap=8, stats=stats):
        ids.add(id(t.image))
        sums.append(float(t.image.sum()))
        n += 1
    assert n == 20 and len(ids) <= 2  # a consumer that drops each tile gets the same arrays
    # the values are those of fresh reads all the same
    fresh = [
        float(t.image.sum()) for t in list(iter_tiles(path, tile_size=32, overlap=8, stats=stats))
    ]
    assert sums == fresh


def test_buffer_pool_hands_out_only_unreferenced_arrays():
    from geoseg.raster import BufferPool

    pool = BufferPool(size=2)
    a = pool.get((2, 3), np.float32)
    b = pool.get((2, 3), np.float32)
    assert a is not b  # a is still held
    view = a[0]
    del a
    c = pool.get((2, 3), np.float32)
    assert c is not view.base  # a view keeps its array out of the pool
    del view
    assert pool.get((2, 3), np.float32) is not None
    d = pool.get((4,), np.uint8)
    assert d.shape == (4,) and d.dtype == np.uint8
    del b, c
    e = pool.get((2, 3), np.float32)
    f = pool.get((2, 3), np.float32)
    assert e is not f and {id(e), id(f)} <= {id(x) for x in pool._arrays}


# ------------------------------------------------------------ raw pixels, normalised on demand


@pytest.mark.parametrize(
    ("dtype", "nodata", "out_size"),
    [
        ("uint16", None, None),
        ("uint8", 0, None),
        ("float32", float("nan"), None),
        ("uint16", 0, 48),
    ],
)
def test_tiles_hold_raw_pixels_and_image_equals_the_eager_read(tmp_path, dtype, nodata, out_size):
    """``tile.raw`` is the window as read; ``tile.image`` equals what ``read_window`` (the
    eager stretch) gives for the same window, bit for bit, padding and nodata included."""
    from geoseg.raster import read_window

    rng = np.random.default_rng(11)
    data = rng.integers(1, 2000 if dtype != "uint8" else 250, (3, 90, 110)).astype(dtype)
    if nodata is not None:
        data[:, :30, :25] = nodata  # a nodata corner
        data[1, 50:60, 50:60] = nodata  # one band only: still valid
    path = write_tif(tmp_path / f"{dtype}.tif", data, nodata=nodata)
    stats = compute_norm_stats(path)
    tiles = list(iter_tiles(path, tile_size=64, overlap=8, stats=stats, out_size=out_size))
    assert not any(t.has_image for t in tiles)  # reading did no float work
    with rasterio.open(path) as ds:
        for t in tiles:
            w = t.spec.window
            size = (64, 64) if out_size is None else (out_size, out_size)
            assert t.raw is not None and t.raw.dtype == np.dtype(dtype)
            assert t.raw.shape == (3, *size) and t.norm == stats
            if out_size is None:
                inside = data[:, w.row_off : w.row_end, w.col_off : w.col_end]
                np.testing.assert_array_equal(
                    t.raw[:, : inside.shape[1], : inside.shape[2]], inside
                )
            want, valid = read_window(
                ds, w, bands=stats.bands, stats=stats, out_shape=None if out_size is None else size
            )
            np.testing.assert_array_equal(t.valid, valid)
            assert np.array_equal(t.image, want)  # bit for bit, NaN nodata now 0


def test_padded_tile_raw_is_zero_outside_the_scene(tmp_path):
    data = np.random.default_rng(2).integers(1, 255, (3, 40, 50), dtype=np.uint8)
    path = write_tif(tmp_path / "small.tif", data)
    (tile,) = list(iter_tiles(path, tile_size=64, overlap=8))
    assert tile.raw is not None and tile.raw.shape == (3, 64, 64)
    np.testing.assert_array_equal(tile.raw[:, :40, :50], data)
    assert not tile.raw[:, 40:, :].any() and not tile.raw[:, :, 50:].any()
