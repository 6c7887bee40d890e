import http.server
import math
import os
import threading
import warnings
from typing import ClassVar

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from geoseg.errors import (
    BandError,
    ConfigError,
    GeosegError,
    RasterReadError,
    UnsupportedTransformError,
)
from geoseg.raster import (
    NoCRSWarning,
    StatsSource,
    compute_norm_stats,
    ground_sample_distance_m,
    open_scene,
    read_window,
    validate_bands,
)
from geoseg.types import NormStats, PixelWindow

UTM = "EPSG:32633"


def write_tif(path, data, *, crs=UTM, transform=None, nodata=None, block=64, overviews=(), **kw):
    data = np.asarray(data)
    count, h, w = data.shape
    transform = transform or from_origin(500000.0, 4000000.0, 0.5, 0.5)
    profile = dict(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=data.dtype.name,
        transform=transform,
        nodata=nodata,
        compress="deflate",
    )
    if crs is not None:
        profile["crs"] = crs
    if block and w >= block and h >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    profile.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if overviews:
                ds.build_overviews(list(overviews))
    return str(path)


def rand(shape, dtype, seed=0, hi=None):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(100.0, 30.0, shape).astype(dtype)
    hi = hi or np.iinfo(dtype).max
    return rng.integers(1, hi, shape, dtype=dtype)


# ------------------------------------------------------------------ open_scene


def test_open_scene_describes_uint16_4band(tmp_path):
    data = rand((4, 200, 300), np.uint16, hi=4000)
    t = from_origin(350000.0, 5000000.0, 0.3, 0.3)
    p = write_tif(tmp_path / "a.tif", data, transform=t, nodata=0, overviews=(2, 4))
    info = open_scene(p)
    assert (info.width, info.height, info.count, info.dtype) == (300, 200, 4, "uint16")
    assert info.transform == t
    assert info.nodata == 0.0
    assert info.block_shape == (64, 64)
    assert info.overviews == (2, 4)
    assert info.driver == "GTiff"
    assert rasterio.crs.CRS.from_wkt(info.crs_wkt) == rasterio.crs.CRS.from_string(UTM)
    assert not info.is_geographic


def test_open_scene_accepts_pathlike_and_vrt(tmp_path):
    p = write_tif(tmp_path / "a.tif", rand((3, 80, 90), np.uint8))
    vrt = tmp_path / "a.vrt"
    with rasterio.open(p) as src:
        from rasterio.shutil import copy as rio_copy
        from rasterio.vrt import WarpedVRT

        with WarpedVRT(src) as v:
            rio_copy(v, str(vrt), driver="VRT")
    info = open_scene(vrt)
    assert info.driver == "VRT" and (info.width, info.height) == (90, 80)


def test_not_a_raster(tmp_path):
    p = tmp_path / "labels.tif"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(RasterReadError) as exc:
        open_scene(p)
    assert str(p) in str(exc.value)
    assert isinstance(exc.value, OSError) and isinstance(exc.value, GeosegError)


def test_missing_file(tmp_path):
    with pytest.raises(RasterReadError, match="no such file"):
        open_scene(tmp_path / "nope.tif")


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_truncated_file(tmp_path, fraction):
    p = write_tif(tmp_path / "full.tif", rand((3, 256, 256), np.uint16))
    with open(p, "rb") as f:
        blob = f.read()
    q = tmp_path / "cut.tif"
    q.write_bytes(blob[: int(len(blob) * fraction)])
    open_scene(p)  # the complete file is fine
    with pytest.raises(RasterReadError) as exc:
        open_scene(q)
    assert str(q) in str(exc.value)


def test_missing_band(tmp_path):
    info = open_scene(write_tif(tmp_path / "a.tif", rand((3, 40, 40), np.uint8)))
    assert validate_bands(info, None) == (1, 2, 3)
    assert validate_bands(info, [3, 2, 1]) == (3, 2, 1)
    with pytest.raises(BandError, match=r"band\(s\) \[4\] do not exist.*3 band"):
        validate_bands(info, [1, 4])
    with pytest.raises(BandError):
        validate_bands(info, [0])
    with pytest.raises(BandError):
        compute_norm_stats(info, bands=[5])
    assert issubclass(BandError, IndexError)


@pytest.mark.parametrize(
    "transform",
    [
        Affine.translation(500000, 4000000) * Affine.rotation(15) * Affine.scale(0.5, -0.5),
        Affine(0.5, 0.1, 500000.0, 0.0, -0.5, 4000000.0),
    ],
)
def test_rotated_or_sheared_transform_refused(tmp_path, transform):
    p = write_tif(tmp_path / "rot.tif", rand((1, 50, 50), np.uint8), transform=transform)
    with pytest.raises(UnsupportedTransformError, match="gdalwarp"):
        open_scene(p)


def test_no_crs_warns(tmp_path, caplog):
    p = write_tif(tmp_path / "nocrs.tif", rand((1, 30, 30), np.uint8), crs=None)
    with pytest.warns(NoCRSWarning, match="no CRS"):
        info = open_scene(p)
    assert info.crs_wkt is None
    assert "no CRS" in caplog.text
    with pytest.raises(ConfigError, match="no CRS"):
        ground_sample_distance_m(info)


# ---------------------------------------------------------------- statistics


def test_norm_stats_full_uint16_excludes_nodata(tmp_path):
    data = rand((2, 120, 100), np.uint16, hi=3000)
    data[:, :30, :] = 0  # nodata collar
    p = write_tif(tmp_path / "a.tif", data, nodata=0)
    stats = compute_norm_stats(p, percentiles=(2.0, 98.0))
    valid = data[0] != 0
    for i in range(2):
        lo, hi = np.percentile(data[i][valid].astype(np.float64), [2, 98])
        assert stats.low[i] == pytest.approx(lo)
        assert stats.high[i] == pytest.approx(hi)
    assert stats.bands == (1, 2) and stats.source_dtype == "uint16"
    assert stats.high[0] > 255  # 16-bit range kept, never divided by 255
    # round trip of the saved form
    assert NormStats.from_dict(stats.to_dict()) == stats


def test_norm_stats_sample_and_overviews_close_to_full(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(1000.0, 200.0, (1, 512, 512)).clip(1, 4000).astype(np.uint16)
    p = write_tif(tmp_path / "a.tif", data, overviews=(2, 4, 8))
    full = compute_norm_stats(p, source=StatsSource.FULL)
    sample = compute_norm_stats(
        p, source=StatsSource.SAMPLE, max_pixels=4 * 64 * 64, window_size=64
    )
    ovr = compute_norm_stats(p, max_pixels=128 * 128)  # AUTO picks overviews
    for s in (sample, ovr):
        assert s.low[0] == pytest.approx(full.low[0], rel=0.05)
        assert s.high[0] == pytest.approx(full.high[0], rel=0.05)
    assert full.low[0] != sample.low[0] or full.high[0] != sample.high[0]


def test_norm_stats_sample_falls_back_when_sample_misses_valid_area(tmp_path):
    data = np.zeros((1, 400, 400), np.uint8)
    data[0, 190:200, 5:15] = 100 + np.arange(10, dtype=np.uint8)
    p = write_tif(tmp_path / "a.tif", data, nodata=0, block=16)
    stats = compute_norm_stats(p, source=StatsSource.SAMPLE, max_pixels=4 * 16 * 16, window_size=16)
    assert 100 <= stats.low[0] < stats.high[0] <= 109


def test_norm_stats_all_nodata_band_is_an_error(tmp_path):
    p = write_tif(tmp_path / "a.tif", np.zeros((1, 50, 50), np.uint8), nodata=0)
    with pytest.raises(RasterReadError, match="no valid pixel"):
        compute_norm_stats(p)


def test_norm_stats_bad_percentiles(tmp_path):
    p = write_tif(tmp_path / "a.tif", rand((1, 20, 20), np.uint8))
    with pytest.raises(ConfigError):
        compute_norm_stats(p, percentiles=(98.0, 2.0))


def test_norm_stats_float_ignores_nan(tmp_path):
    data = rand((1, 60, 60), np.float32)
    data[0, :10] = np.nan
    p = write_tif(tmp_path / "f.tif", data)
    stats = compute_norm_stats(p, percentiles=(0.0, 100.0))
    assert stats.low[0] == pytest.approx(float(np.nanmin(data)))
    assert stats.high[0] == pytest.approx(float(np.nanmax(data)))


# ------------------------------------------------------------------- reading


def test_read_window_boundless_normalised(tmp_path):
    data = rand((3, 70, 90), np.uint16, hi=5000)
    p = write_tif(tmp_path / "a.tif", data)
    stats = NormStats(
        bands=(3, 1), low=(100.0, 200.0), high=(4000.0, 4500.0), source_dtype="uint16"
    )
    win = PixelWindow(60, -10, 50, 40)  # runs past the right edge and above the top
    with rasterio.open(p) as ds:
        image, valid = read_window(ds, win, bands=(3, 1), stats=stats)
    assert image.shape == (2, 40, 50) and image.dtype == np.float32
    assert valid.shape == (40, 50) and valid.dtype == np.bool_
    expected_valid = np.zeros((40, 50), bool)
    expected_valid[10:, :30] = True
    np.testing.assert_array_equal(valid, expected_valid)
    inside = data[[2, 0], 0:30, 60:90]
    np.testing.assert_allclose(image[:, 10:, :30], stats.apply(inside), atol=1e-6)
    assert (image[:, ~valid] == 0).all()
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_read_window_raw_and_stats_band_mismatch(tmp_path):
    data = rand((2, 30, 30), np.uint8)
    p = write_tif(tmp_path / "a.tif", data)
    with rasterio.open(p) as ds:
        image, valid = read_window(ds, PixelWindow(0, 0, 30, 30), bands=(2,), stats=None)
        np.testing.assert_array_equal(image[0], data[1].astype(np.float32))
        assert valid.all()
        with pytest.raises(BandError):
            read_window(
                ds, PixelWindow(0, 0, 5, 5), bands=(1,), stats=NormStats((2,), (0.0,), (1.0,))
            )
        image, valid = read_window(ds, PixelWindow(100, 100, 8, 8), bands=(1,), stats=None)
        assert not valid.any() and not image.any()


def test_read_window_nodata_all_bands_rule_and_override(tmp_path):
    data = rand((2, 20, 20), np.uint8, hi=200)
    data[:, :5, :] = 0  # both bands nodata -> invalid
    data[0, 10, 10] = 0  # only one band -> still valid
    p = write_tif(tmp_path / "a.tif", data, nodata=0)
    with rasterio.open(p) as ds:
        _, valid = read_window(ds, PixelWindow(0, 0, 20, 20), bands=(1, 2), stats=None)
        assert not valid[:5].any() and valid[5:].all()
        _, valid_none = read_window(
            ds, PixelWindow(0, 0, 20, 20), bands=(1, 2), stats=None, nodata=None
        )
        assert valid_none.all()


def test_read_window_internal_mask(tmp_path):
    data = rand((3, 64, 64), np.uint8)
    p = str(tmp_path / "m.tif")
    with rasterio.open(
        p,
        "w",
        driver="GTiff",
        width=64,
        height=64,
        count=3,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(0, 0, 1, 1),
    ) as ds:
        ds.write(data)
        mask = np.full((64, 64), 255, np.uint8)
        mask[:, :20] = 0
        ds.write_mask(mask)
    with rasterio.open(p) as ds:
        _, valid = read_window(ds, PixelWindow(0, 0, 64, 64), bands=(1, 2, 3), stats=None)
    assert not valid[:, :20].any() and valid[:, 20:].all()


def test_float_nan_is_invalid(tmp_path):
    data = rand((1, 16, 16), np.float32)
    data[0, 3, 4] = np.nan
    p = write_tif(tmp_path / "f.tif", data)
    with rasterio.open(p) as ds:
        image, valid = read_window(
            ds, PixelWindow(0, 0, 16, 16), bands=(1,), stats=NormStats((1,), (0.0,), (200.0,))
        )
    assert not valid[3, 4] and valid.sum() == 255
    assert np.isfinite(image).all()


# ----------------------------------------------------------- metres / GSD


def test_gsd_metres_projected_feet_and_geographic(tmp_path):
    p = write_tif(tmp_path / "utm.tif", rand((1, 10, 10), np.uint8))
    assert ground_sample_distance_m(open_scene(p)) == pytest.approx((0.5, 0.5))
    p = write_tif(
        tmp_path / "ft.tif",
        rand((1, 10, 10), np.uint8),
        crs="EPSG:2263",
        transform=from_origin(1000000, 200000, 2.0, 2.0),
    )
    gx, gy = ground_sample_distance_m(open_scene(p))
    assert gx == pytest.approx(2.0 * 0.3048006, rel=1e-5) and gy == pytest.approx(gx)
    deg = 1e-5
    lat0 = 60.0
    p = write_tif(
        tmp_path / "geo.tif",
        rand((1, 100, 100), np.uint8),
        crs="EPSG:4326",
        transform=from_origin(10.0, lat0 + 50 * deg, deg, deg),
    )
    info = open_scene(p)
    assert info.is_geographic
    gx, gy = ground_sample_distance_m(info)
    # one degree of longitude shrinks with cos(latitude); spherical estimate within 1 %
    assert gx == pytest.approx(deg * 111_320 * math.cos(math.radians(lat0)), rel=0.01)
    assert gy == pytest.approx(deg * 111_320, rel=0.01)


def test_gsd_web_mercator_is_not_metres(tmp_path):
    # a 1-unit Web Mercator pixel at 60 degrees north is 0.5 m on the ground
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, 60.0)
    p = write_tif(
        tmp_path / "merc.tif",
        rand((1, 100, 100), np.uint8),
        crs="EPSG:3857",
        transform=from_origin(x - 50, y + 50, 1.0, 1.0),
    )
    gx, gy = ground_sample_distance_m(open_scene(p))
    assert gx == pytest.approx(0.5, rel=0.01) and gy == pytest.approx(0.5, rel=0.01)


# -------------------------------------------------------------- /vsicurl/


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (enough for GDAL's /vsicurl/)."""

    requests_seen: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        rng = self.headers.get("Range")
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        type(self).requests_seen.append(rng)
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].partition("-")
            start = int(start_s)
            end = min(int(end_s) if end_s else size - 1, size - 1)
            if start >= size:
                f.close()
                self.send_error(416)
                return None
            f.seek(start)
            self._remaining = end - start + 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(self._remaining))
        else:
            self._remaining = size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff")
        self.end_headers()
        return f

    def copyfile(self, source, outputfile):
        outputfile.write(source.read(self._remaining))


@pytest.fixture
def range_server(tmp_path):
    serve_dir = tmp_path / "www"
    serve_dir.mkdir()

    def handler(*args, **kwargs):
        return _RangeHandler(*args, directory=str(serve_dir), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.requests_seen = []
    try:
        yield serve_dir, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_vsicurl_scene(range_server, tmp_path):
    serve_dir, base = range_server
    data = rand((3, 300, 260), np.uint16, hi=2000)
    local = write_tif(serve_dir / "scene.tif", data, nodata=0, block=64)
    url = f"/vsicurl/{base}/scene.tif"
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="0"):
        info = open_scene(url)
        assert info.path == url
        assert (info.width, info.height, info.count, info.dtype) == (260, 300, 3, "uint16")
        assert info.transform == open_scene(local).transform
        stats = compute_norm_stats(url)
        assert stats == compute_norm_stats(local)
        with rasterio.open(url) as ds:
            image, valid = read_window(
                ds, PixelWindow(200, 250, 100, 100), bands=(1, 2, 3), stats=stats
            )
        with rasterio.open(local) as ds:
            image2, valid2 = read_window(
                ds, PixelWindow(200, 250, 100, 100), bands=(1, 2, 3), stats=stats
            )
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(valid, valid2)
    assert any(r and r.startswith("bytes=") for r in _RangeHandler.requests_seen)


def test_vsicurl_missing_url_is_a_read_error(range_server):
    _, base = range_server
    with (
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", GDAL_HTTP_MAX_RETRY="0"),
        pytest.raises(RasterReadError, match=r"missing\.tif"),
    ):
        open_scene(f"/vsicurl/{base}/missing.tif")


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_stretch_matches_norm_stats_apply_bit_for_bit(dtype):
    from geoseg.raster import _stretch

    rng = np.random.default_rng(3)
    hi = 250 if dtype == "uint8" else 3000
    data = rng.integers(0, hi, size=(3, 40, 50)).astype(dtype)
    stats = NormStats(
        bands=(1, 2, 3), low=(10.0, 3.5, 0.0), high=(200.0, 240.0, 1800.0), source_dtype=dtype
    )
    out = np.empty(data.shape, np.float32)
    _stretch(data, stats, out)
    assert np.array_equal(out, stats.apply(data))
