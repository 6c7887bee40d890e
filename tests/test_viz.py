"""Tests for geoseg.viz and `geoseg map`: quicklook PNGs and the offline HTML map.

The map is opened in real headless Chromium (Debian's `chromium`, installed by
scripts/install_chromium.sh from `make test`) with every host name unresolvable, so anything
the page tried to fetch from the internet would fail and be reported.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from geoseg.cli import cli
from geoseg.errors import BandError, ExportError, RasterReadError, UnsupportedTransformError
from geoseg.viz import Stretch, class_colour, quicklook, read_preview, web_map

UTM = "EPSG:32631"
X0, Y0 = 500_000.0, 5_001_000.0  # top-left corner of the test scenes
GSD = 0.5
CDN_HOSTS = (
    "cdn.jsdelivr.net",
    "code.jquery.com",
    "cdnjs.cloudflare.com",
    "netdna.bootstrapcdn.com",
    "maxcdn.bootstrapcdn.com",
    "unpkg.com",
    "tile.openstreetmap.org",
    "googleapis.com",
)


def write_scene(path, *, size=512, dtype="uint8", count=3, seed=0, overviews=(2, 4, 8), crs=UTM):
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == "uint8" else 4000
    data = rng.integers(0, hi, (count, size, size)).astype(dtype)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype=dtype,
        transform=from_origin(X0, Y0, GSD, GSD),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if overviews:
            dst.build_overviews(list(overviews), Resampling.average)
    return path


def make_objects(seed=0, n=30, *, size=512):
    """Rectangles well inside a ``size`` px scene; returns the GeoDataFrame (UTM)."""
    rng = np.random.default_rng(seed)
    extent = size * GSD
    rows = []
    for i in range(n):
        cls = ("ship", "vehicle", "building")[i % 3]
        lx, ly = {"ship": (30, 10), "vehicle": (6, 3), "building": (16, 16)}[cls]
        x = X0 + rng.uniform(10, extent - 40)
        y = Y0 - rng.uniform(20, extent - 10)
        rows.append((cls, float(rng.uniform(0.1, 1.0)), shapely.box(x, y, x + lx, y + ly), lx))
    cls, score, geom, length = zip(*rows, strict=True)
    return gpd.GeoDataFrame(
        {
            "class": list(cls),
            "score": list(score),
            "length_m": list(length),
            "width_m": 3.0,
            "area_m2": [g.area for g in geom],
            "scene": "s",
        },
        geometry=list(geom),
        crs=UTM,
    )


def colour_mask(img, rgb, tol=0):
    arr = np.asarray(img.convert("RGB")).astype(int)
    return (np.abs(arr - np.array(rgb)) <= tol).all(axis=-1)


# --------------------------------------------------------------------------------------------
# previews and quicklooks


def test_preview_is_read_from_overviews(tmp_path):
    path = tmp_path / "ov.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=512,
        height=512,
        count=1,
        dtype="uint8",
        crs=UTM,
        transform=from_origin(X0, Y0, GSD, GSD),
        tiled=True,
    ) as dst:
        dst.write(np.full((1, 512, 512), 10, np.uint8))
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path, "r+") as dst:  # full resolution changes, overviews stay at 10
        dst.write(np.full((1, 512, 512), 200, np.uint8))
    small = read_preview(path, max_size=64, stretch=Stretch.NONE)
    full = read_preview(path, max_size=512, stretch=Stretch.NONE)
    assert small.rgb.shape == (64, 64, 3)
    assert np.all(small.rgb == 10)  # served by the 8x overview
    assert np.all(full.rgb == 200)  # no downsampling: full resolution


def test_preview_uint16_percentile_stretch_and_geometry(tmp_path):
    path = tmp_path / "u16.tif"
    ramp = np.tile(np.linspace(1000, 5000, 400, dtype=np.float32), (300, 1)).astype(np.uint16)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=400,
        height=300,
        count=1,
        dtype="uint16",
        crs=UTM,
        transform=from_origin(X0, Y0, GSD, GSD),
        nodata=0,
    ) as dst:
        data = ramp.copy()
        data[:20, :20] = 0  # nodata corner
        dst.write(data[None])
    p = read_preview(path, max_size=200)
    assert p.rgb.shape == (150, 200, 3)
    assert p.scene_shape == (300, 400)
    row = p.rgb[100, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
    assert not p.valid[:10, :10].any() and p.valid[50:, 50:].all()
    assert np.all(p.rgb[:10, :10] == 0)
    assert p.bounds == pytest.approx((X0, Y0 - 300 * GSD, X0 + 400 * GSD, Y0))


def test_quicklook_png_size_content_and_class_colours(tmp_path):
    scene = write_scene(tmp_path / "s.tif", size=512)
    gdf = make_objects(1)
    out = quicklook(scene, gdf, tmp_path / "q.png", max_size=256, legend=False, line_width=1)
    img = Image.open(out)
    assert img.size == (256, 256) and img.mode == "RGB"
    assert np.asarray(img).std() > 10  # the scene is there, not a blank image
    scale = 256 / 512
    for _, obj in gdf.iterrows():
        minx, _, _, maxy = obj.geometry.bounds
        # top-left corner of the object in quicklook pixels
        c = int((minx - X0) / GSD * scale)
        r = int((Y0 - maxy) / GSD * scale)
        window = colour_mask(img, class_colour(obj["class"]))[
            max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3
        ]
        assert window.any(), f"no {obj['class']} outline near pixel ({c}, {r})"


def test_quicklook_legend_and_reprojected_results(tmp_path):
    scene = write_scene(tmp_path / "s.tif", size=512, dtype="uint16")
    gdf = make_objects(2)
    a = quicklook(scene, gdf, tmp_path / "a.png", max_size=300, legend=False)
    b = quicklook(scene, gdf.to_crs("EPSG:4326"), tmp_path / "b.png", max_size=300, legend=False)
    for cls in ("ship", "vehicle", "building"):
        ma = colour_mask(Image.open(a), class_colour(cls))
        mb = colour_mask(Image.open(b), class_colour(cls))
        assert ma.sum() > 0
        assert (ma & mb).sum() / (ma | mb).sum() > 0.8  # same place in either CRS
    c = quicklook(scene, gdf, tmp_path / "c.png", max_size=300, legend=True)
    legend = Image.open(c).crop((0, 0, 120, 80))
    for cls in ("ship", "vehicle", "building"):
        assert colour_mask(legend, class_colour(cls)).sum() >= 25  # a swatch per class


def test_quicklook_filters_and_scene_alone(tmp_path):
    scene = write_scene(tmp_path / "s.tif", size=256, count=1)
    gdf = make_objects(3, size=256)
    out = quicklook(scene, gdf, tmp_path / "q.png", max_size=256, classes=["ship"], legend=False)
    img = Image.open(out)
    assert colour_mask(img, class_colour("ship")).any()
    assert not colour_mask(img, class_colour("vehicle")).any()
    assert not colour_mask(img, class_colour("building")).any()
    plain = Image.open(quicklook(scene, None, tmp_path / "plain.png", max_size=128))
    assert plain.size == (128, 128)
    arr = np.asarray(plain)
    assert np.array_equal(arr[..., 0], arr[..., 1])  # one band shown as grey


def test_quicklook_errors(tmp_path):
    scene = write_scene(tmp_path / "s.tif", size=64, count=3, overviews=())
    with pytest.raises(BandError, match="bands"):
        quicklook(scene, None, tmp_path / "q.png", bands=(1, 2))
    with pytest.raises(BandError, match="between 1 and 3"):
        quicklook(scene, None, tmp_path / "q.png", bands=(4,))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(RasterReadError, match=r"bad\.tif"):
        quicklook(bad, None, tmp_path / "q.png")
    with pytest.raises(ExportError, match="does not exist"):
        quicklook(scene, None, tmp_path / "nope" / "q.png")


# --------------------------------------------------------------------------------------------
# offline HTML map

REMOTE_RE = re.compile(
    r"""(?:<script[^>]*\ssrc|<link[^>]*\shref|<img[^>]*\ssrc)\s*=\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//|@import""",
    re.IGNORECASE,
)

# collects uncaught errors, failed resource loads, console.error calls and rejections; after
# load, writes them and the number of drawn features into the DOM for --dump-dom
COLLECTOR = """<script>
window.__geosegErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { __geosegErrors.push("load: " + (t.src || t.href)); }
  else { __geosegErrors.push("error: " + e.message); }
}, true);
window.addEventListener("unhandledrejection", function (e) {
  __geosegErrors.push("rejection: " + e.reason); });
(function () { var ce = console.error; console.error = function () {
  __geosegErrors.push("console: " + Array.prototype.join.call(arguments, " "));
  ce.apply(console, arguments); }; })();
window.addEventListener("load", function () { setTimeout(function () {
  var pre = document.createElement("pre"); pre.id = "geoseg-test-report";
  pre.textContent = JSON.stringify({
    errors: __geosegErrors,
    features: document.querySelectorAll("path.leaflet-interactive").length,
    overlays: document.querySelectorAll("img.leaflet-image-layer").length,
    counts: (document.querySelector(".geoseg-counts") || {}).textContent || null,
    leaflet: typeof L === "undefined" ? null : L.version
  });
  document.body.appendChild(pre); }, 300); });
</script>"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip(
            "headless Chromium is not installed and scripts/install_chromium.sh could not "
            "install it (needs apt-get and root); run `bash scripts/install_chromium.sh`"
        )
    return path


def run_chromium(chromium, tmp_path, url, *extra):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no host resolves: the page must be offline
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1000,800",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def open_in_browser(chromium, tmp_path, html_path):
    """Load the map with the error collector; return (report dict, console lines)."""
    html = html_path.read_text(encoding="utf-8")
    probe = tmp_path / f"probe_{html_path.name}"
    probe.write_text(html.replace("<head>", "<head>" + COLLECTOR, 1), encoding="utf-8")
    proc = run_chromium(chromium, tmp_path, probe.as_uri(), "--dump-dom")
    match = re.search(r'<pre id="geoseg-test-report">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the page never finished loading"
    report = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return report, console


def assert_offline_html(html):
    assert not REMOTE_RE.search(html), REMOTE_RE.search(html).group(0)
    for host in CDN_HOSTS:
        assert host not in html, host
    assert "data:image/png;base64," in html or "L.imageOverlay(" not in html


def test_web_map_in_headless_chromium(tmp_path, chromium):
    scene = write_scene(tmp_path / "s.tif", size=512, dtype="uint16")
    gdf = make_objects(4, n=24)
    # a two-part object still draws as one feature
    gdf.loc[0, "geometry"] = shapely.MultiPolygon(
        [gdf.geometry[0], shapely.affinity.translate(gdf.geometry[0], 0, -20)]
    )
    res = tmp_path / "r.gpkg"
    gdf.to_file(res)
    out = web_map(res, scene=scene, out_html=tmp_path / "map.html", max_size=256)
    html = out.read_text(encoding="utf-8")
    assert_offline_html(html)

    report, console = open_in_browser(chromium, tmp_path, out)
    assert report["errors"] == []
    assert console == [], console
    assert report["leaflet"], "Leaflet did not load from the inlined script"
    assert report["features"] == len(gdf)
    assert report["overlays"] == 1
    for cls in ("ship", "vehicle", "building"):
        assert f"{cls}{int((gdf['class'] == cls).sum())}" in report["counts"].replace(" ", "")

    shot = tmp_path / "map.png"
    run_chromium(chromium, tmp_path, out.as_uri(), f"--screenshot={shot}")
    img = Image.open(shot).convert("RGB")
    assert img.size == (1000, 800)
    arr = np.asarray(img).astype(int)
    assert arr.std() > 20  # scene, outlines, controls: not a blank page
    for cls in ("ship", "building"):
        assert colour_mask(img, class_colour(cls), tol=40).sum() > 20, cls


def test_web_map_filters_and_results_in_other_crs(tmp_path, chromium):
    scene = write_scene(tmp_path / "s.tif", size=256)
    gdf = make_objects(5, n=30, size=256)
    res = tmp_path / "r.geojson"
    gdf.to_crs("EPSG:4326").to_file(res)
    out = web_map(
        res,
        scene=scene,
        out_html=tmp_path / "m.html",
        min_score=0.5,
        classes=["ship", "vehicle"],
        max_size=128,
    )
    keep = gdf[(gdf.score >= 0.5) & gdf["class"].isin(["ship", "vehicle"])]
    report, console = open_in_browser(chromium, tmp_path, out)
    assert report["errors"] == [] and console == []
    assert report["features"] == len(keep)


def test_web_map_without_scene_and_counts_table(tmp_path):
    gdf = make_objects(6, n=9)
    out = web_map(gdf, out_html=tmp_path / "m.html")
    html = out.read_text(encoding="utf-8")
    assert_offline_html(html)
    assert "L.imageOverlay(" not in html and "L.tileLayer(" not in html
    assert "geoseg-counts" in html
    assert html.count('"type": "Feature"') + html.count('"type":"Feature"') == len(gdf)


def test_web_map_errors(tmp_path, monkeypatch):
    gdf = make_objects(7, n=3)
    scene = write_scene(tmp_path / "nocrs.tif", size=64, crs=None, overviews=())
    with pytest.raises(UnsupportedTransformError, match="no CRS"):
        web_map(gdf, scene=scene, out_html=tmp_path / "m.html")
    monkeypatch.setitem(sys.modules, "xstatic.pkg.leaflet", None)
    with pytest.raises(ExportError, match=r"geoseg\[maps\]"):
        web_map(gdf, out_html=tmp_path / "m.html")
    assert not (tmp_path / "m.html").exists()


def test_cli_map(tmp_path):
    scene = write_scene(tmp_path / "s.tif", size=128)
    res = tmp_path / "r.gpkg"
    make_objects(8, n=6, size=128).to_file(res)
    out = tmp_path / "m.html"
    r = CliRunner().invoke(
        cli, ["map", str(res), "--scene", str(scene), "-o", str(out), "--max-size", "64"]
    )
    assert r.exit_code == 0, r.output
    assert_offline_html(out.read_text(encoding="utf-8"))
    r = CliRunner().invoke(
        cli, ["map", str(res), "--scene", str(scene), "-o", str(out), "--bands", "7"]
    )
    assert r.exit_code == 1 and "bands" in r.output


def test_cli_map_draws_every_scene_and_refuses_unknown_classes(tmp_path):
    """``--scene a --scene b`` draws both (it used to keep the last); ``--classes boat`` fails."""
    a = write_scene(tmp_path / "a.tif", size=128, overviews=())
    b = tmp_path / "b.tif"
    with rasterio.open(a) as src:  # the same pixels 1 km east
        profile = src.profile
        profile["transform"] = from_origin(X0 + 1000.0, Y0, GSD, GSD)
        with rasterio.open(b, "w", **profile) as dst:
            dst.write(src.read())
    res = tmp_path / "r.gpkg"
    make_objects(9, n=6, size=128).to_file(res)
    out = tmp_path / "m.html"
    argv = ["map", str(res), "--scene", str(a), "--scene", str(b), "-o", str(out)]
    r = CliRunner().invoke(cli, argv)
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert_offline_html(html)
    assert html.count("L.imageOverlay(") == 2
    assert '"a.tif"' in html and '"b.tif"' in html  # one layer each in the layer control
    west_edges = sorted(float(m) for m in re.findall(r"\[\[[-\d.]+, ([-\d.]+)\], \[", html))
    assert len(west_edges) >= 2 and west_edges[-1] - west_edges[0] > 0.01  # 1 km apart

    r = CliRunner().invoke(cli, ["map", str(res), "-o", str(out), "--classes", "ship,boat"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "Error: --classes ship,boat: unknown class 'boat'; classes in the results, or of "
        "geoseg's presets: building, ship, vehicle"
    ]
    assert html == out.read_text(encoding="utf-8")  # the earlier map is untouched
