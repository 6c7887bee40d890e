"""Pictures of results: a quicklook PNG and a self-contained, offline HTML map.

Both read the scene *downsampled*: :func:`rasterio.io.DatasetReader.read` with an ``out_shape``
smaller than the raster makes GDAL read from the closest overview level (build overviews, as
COGs have, and a quicklook of a 40 000 x 40 000 px scene reads a few MB). Bands other than
``uint8`` are shown with a percentile stretch computed on the downsampled image.

The HTML map is built with folium. Leaflet's JavaScript and CSS are taken from the installed
``XStatic-Leaflet`` package (``pip install 'geoseg[maps]'``) and inlined into the file, with no
tile layer, so the map opens without internet access; the scene, reprojected to Web Mercator,
is inlined as a base64 PNG overlay.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import math
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from affine import Affine

from geoseg.count import ResultsLike, check_result_classes, read_results
from geoseg.errors import (
    BandError,
    ExportError,
    LabelError,
    RasterReadError,
    UnsupportedTransformError,
)
from geoseg.io import atomic_write

__all__ = [
    "ARRIVED_COLOUR",
    "CLASS_COLOURS",
    "DEPARTED_COLOUR",
    "PERSISTED_COLOUR",
    "MapLayer",
    "Preview",
    "Stretch",
    "class_colour",
    "counts_table_html",
    "layered_map",
    "quicklook",
    "read_preview",
    "remote_resources",
    "timeline_chart",
    "web_map",
]

logger = logging.getLogger(__name__)

#: Outline colours (RGB) of the known classes; other classes take colours from ``_PALETTE``.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "ship": (255, 59, 48),
    "vehicle": (255, 204, 0),
    "building": (0, 199, 255),
}
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (52, 199, 89),
    (255, 45, 190),
    (175, 82, 222),
    (255, 149, 0),
    (90, 200, 250),
    (162, 132, 94),
)

#: Popup fields of the web map (column, label, decimals), shown when the column exists.
_POPUP_FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("class", "class", None),
    ("score", "score", 3),
    ("length_m", "length (m)", 1),
    ("width_m", "width (m)", 1),
    ("area_m2", "area (m²)", 1),
    ("length_px", "length (px)", 1),
    ("width_px", "width (px)", 1),
    ("area_px", "area (px²)", 0),
    ("heading_deg", "heading (°)", 0),
    ("scene", "scene", None),
)


class Stretch(StrEnum):
    """How band values become 0-255 display values."""

    AUTO = "auto"  # uint8 as is, anything else with the percentile stretch
    PERCENTILE = "percentile"  # per band, between the given low/high percentiles
    NONE = "none"  # clip to 0-255 as is


def class_colour(name: str, classes: Sequence[str] = ()) -> tuple[int, int, int]:
    """RGB outline colour of class ``name`` (stable for known classes, else by position)."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    others = [c for c in classes if c not in CLASS_COLOURS]
    i = others.index(name) if name in others else zlib.crc32(name.encode("utf-8"))
    return _PALETTE[i % len(_PALETTE)]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True, eq=False)
class Preview:
    """A downsampled, display-ready picture of a scene.

    Attributes:
        rgb: uint8 ``[h, w, 3]``; a one-band scene is repeated as grey.
        valid: bool ``[h, w]``, False where the scene has nodata.
        transform: affine from *preview pixels* to the scene CRS.
        crs_wkt: the scene CRS as WKT, or ``None``.
        scene_shape: ``(height, width)`` of the full scene in scene pixels.
    """

    rgb: npt.NDArray[np.uint8]
    valid: npt.NDArray[np.bool_]
    transform: Affine
    crs_wkt: str | None
    scene_shape: tuple[int, int]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the scene CRS."""
        h, w = self.valid.shape
        xs, ys = zip(*(self.transform @ (c, r) for c in (0, w) for r in (0, h)), strict=True)
        return (min(xs), min(ys), max(xs), max(ys))


def read_preview(
    scene_path: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    bands: Sequence[int] | None = None,
    stretch: Stretch = Stretch.AUTO,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Preview:
    """Read a scene downsampled so that its longest side is at most ``max_size`` pixels.

    The read passes ``out_shape`` to rasterio, so GDAL serves it from the closest overview when
    the scene has overviews; it is never upsampled.

    Args:
        scene_path: a raster GDAL can open.
        max_size: longest side of the preview in pixels (>= 1).
        bands: 1-based bands shown as RGB (3) or grey (1); default 1,2,3 or 1.
        stretch: how values become 0-255 (see :class:`Stretch`).
        percentiles: low/high percentiles of the percentile stretch.

    Raises:
        RasterReadError: the raster cannot be opened or read.
        BandError: a band does not exist, or not 1 or 3 bands were asked for.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError

    if max_size < 1:
        raise ValueError(f"max_size={max_size}: give a positive number of pixels")
    try:
        src = rasterio.open(scene_path)
    except (RasterioError, OSError) as err:
        raise RasterReadError(
            f"{scene_path}: cannot open the scene ({err}); give a GeoTIFF or another raster "
            "GDAL can read"
        ) from err
    with src:
        if bands is None:
            bands = (1, 2, 3) if src.count >= 3 else (1,)
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3) or any(not 1 <= b <= src.count for b in bands):
            raise BandError(
                f"{scene_path}: bands {bands} cannot be shown; give 3 (RGB) or 1 (grey) band "
                f"numbers between 1 and {src.count}"
            )
        scale = max(1.0, max(src.width, src.height) / max_size)
        h = max(1, round(src.height / scale))
        w = max(1, round(src.width / scale))
        try:
            data = src.read(
                list(bands),
                out_shape=(len(bands), h, w),
                masked=True,
                resampling=Resampling.average,
            )
        except RasterioError as err:
            raise RasterReadError(f"{scene_path}: cannot read the scene ({err})") from err
        transform = src.transform @ Affine.scale(src.width / w, src.height / h)
        crs_wkt = src.crs.to_wkt() if src.crs is not None else None
        dtype = src.dtypes[bands[0] - 1]
        shape = (src.height, src.width)
    valid = np.asarray(~np.ma.getmaskarray(data).any(axis=0), dtype=bool)
    use = stretch
    if use is Stretch.AUTO:
        use = Stretch.NONE if dtype == "uint8" else Stretch.PERCENTILE
    values = np.ma.getdata(data).astype(np.float32)
    out = np.zeros((len(bands), h, w), dtype=np.uint8)
    for i in range(len(bands)):
        band = values[i]
        if use is Stretch.PERCENTILE:
            sample = band[valid]
            if sample.size:
                lo, hi = np.percentile(sample, percentiles)
            else:
                lo, hi = 0.0, 1.0
            band = (band - lo) * (255.0 / max(float(hi - lo), 1e-6))
        out[i] = np.clip(np.round(band), 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    rgb = np.repeat(out, 3, axis=0) if len(bands) == 1 else out
    return Preview(
        rgb=np.ascontiguousarray(np.moveaxis(rgb, 0, -1)),
        valid=valid,
        transform=transform,
        crs_wkt=crs_wkt,
        scene_shape=shape,
    )


def _prepare(
    results: ResultsLike | None,
    *,
    crs: Any,
    min_score: float | None,
    classes: Sequence[str] | None,
) -> gpd.GeoDataFrame:
    """All result rows in ``crs`` (rows without CRS are assumed to be in it), filtered."""
    if results is None:
        return gpd.GeoDataFrame({"class": pd.Series([], dtype=str)}, geometry=[], crs=crs)
    frames = []
    for g in read_results(results):
        if g.crs is None:
            g = g.set_crs(crs, allow_override=True) if crs is not None else g
        elif crs is not None:
            g = g.to_crs(crs)
        frames.append(g)
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
    keep = np.ones(len(gdf), dtype=bool)
    if min_score is not None and "score" in gdf.columns:
        keep &= gdf["score"].to_numpy(dtype=float) >= min_score
    if classes is not None:
        keep &= gdf["class"].isin(list(classes)).to_numpy()
    return gdf[keep].reset_index(drop=True)


def _class_order(gdf: gpd.GeoDataFrame, classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        return list(dict.fromkeys(classes))
    return sorted(gdf["class"].unique()) if len(gdf) else []


def _atomic_write(out: Path, write: Callable[[Path], object]) -> Path:
    """:func:`geoseg.io.atomic_write` into an existing folder, errors as ExportError."""
    if not out.parent.exists():
        raise ExportError(f"{out}: the folder {out.parent} does not exist; create it first")
    try:
        return atomic_write(out, write, make_parents=False)
    except OSError as err:
        raise ExportError(f"{out}: cannot write ({err})") from err


# --------------------------------------------------------------------------------------------
# quicklook


def quicklook(
    scene_path: str | os.PathLike[str],
    results: ResultsLike | None,
    out_png: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    bands: Sequence[int] | None = None,
    stretch: Stretch = Stretch.AUTO,
    percentiles: tuple[float, float] = (2.0, 98.0),
    min_score: float | None = None,
    classes: Sequence[str] | None = None,
    line_width: int = 2,
    legend: bool = True,
) -> Path:
    """Write a PNG of the scene (downsampled from its overviews) with outlined objects.

    Objects are drawn in their class colour (:func:`class_colour`); only objects that
    intersect the scene are drawn and counted in the legend.

    Args:
        scene_path: the scene raster.
        results: result vectors (see :func:`geoseg.count.read_results`) in any CRS (files
            without CRS are taken to be in the scene CRS), or ``None`` for the scene alone.
        out_png: the PNG to write (atomically).
        max_size: longest side of the picture in pixels.
        bands: 1-based bands shown (3 = RGB, 1 = grey); default 1,2,3 or 1.
        stretch: value stretch (see :class:`Stretch`).
        percentiles: low/high percentiles of the percentile stretch.
        min_score: draw objects with ``score >= min_score``.
        classes: draw only these classes (legend in this order).
        line_width: outline width in pixels.
        legend: draw a legend with the count per class.

    Returns:
        The path written.

    Raises:
        RasterReadError, BandError: the scene cannot be read; LabelError: unusable results;
        ExportError: the PNG cannot be written.
    """
    from PIL import Image, ImageDraw

    preview = read_preview(
        scene_path, max_size=max_size, bands=bands, stretch=stretch, percentiles=percentiles
    )
    gdf = _prepare(results, crs=preview.crs_wkt, min_score=min_score, classes=classes)
    if len(gdf):
        gdf = gdf[gdf.intersects(shapely.box(*preview.bounds))]
    order = _class_order(gdf, classes)
    image = Image.fromarray(preview.rgb, mode="RGB")
    draw = ImageDraw.Draw(image)
    inv = ~preview.transform
    to_px = (inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff)
    for cls in order:
        colour = class_colour(cls, order)
        geoms = shapely.affinity.affine_transform(
            shapely.GeometryCollection(list(gdf.geometry[gdf["class"] == cls])), to_px
        )
        for ring in _rings(geoms):
            xy = [(float(x), float(y)) for x, y in np.asarray(ring.coords)[:, :2]]
            if len(xy) >= 2:
                draw.line(xy, fill=colour, width=line_width, joint="curve")
            elif xy:
                draw.point(xy, fill=colour)
    if legend and order:
        counts = {c: int((gdf["class"] == c).sum()) for c in order}
        _draw_legend(image, counts, order)
    out = Path(out_png)
    return _atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))


def _rings(geom: shapely.Geometry) -> list[shapely.LinearRing]:
    """Exterior and interior rings of every polygon in ``geom`` (lines are kept as they are)."""
    out: list[Any] = []
    for part in getattr(geom, "geoms", [geom]):
        if part.geom_type == "Polygon":
            out.append(part.exterior)
            out.extend(part.interiors)
        elif part.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_rings(part))
        elif part.geom_type in ("LineString", "LinearRing"):
            out.append(part)
    return out


def _draw_legend(image: Any, counts: dict[str, int], order: Sequence[str]) -> None:
    """A box in the top-left corner: a colour swatch and ``class  count`` per line."""
    from PIL import ImageDraw, ImageFont

    size = max(10, min(image.width, image.height) // 40)
    try:
        font: Any = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        font = ImageFont.load_default()
    width = max(len(c) for c in order) + len(str(max(counts.values()))) + 2
    line_h = size + size // 2
    pad = size // 2
    box_w = pad * 3 + size + int(width * size * 0.62)
    box_h = pad * 2 + line_h * len(order)
    overlay = image.convert("RGBA")
    shade = ImageDraw.Draw(overlay, "RGBA")
    shade.rectangle([pad, pad, pad + box_w, pad + box_h], fill=(0, 0, 0, 170))
    image.paste(overlay.convert("RGB"))
    draw = ImageDraw.Draw(image)
    for i, cls in enumerate(order):
        y = pad * 2 + i * line_h
        x = pad * 2
        draw.rectangle([x, y, x + size, y + size], fill=class_colour(cls, order))
        draw.text((x + size + pad, y - size // 8), f"{cls}  {counts[cls]}", fill="white", font=font)


# --------------------------------------------------------------------------------------------
# offline web map

_REMOTE = re.compile(
    r"""<script[^>]*\ssrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link[^>]*\shref\s*=\s*["']?(?:https?:)?//"""
    r"""|<img[^>]*\ssrc\s*=\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//"""
    r"""|@import""",
    re.IGNORECASE,
)


def remote_resources(html: str) -> list[str]:
    """Snippets of ``html`` that would load something over the network (should be none)."""
    return [html[m.start() : m.start() + 120] for m in _REMOTE.finditer(html)]


def _leaflet_assets() -> tuple[str, str]:
    """Leaflet's JS and CSS from the installed XStatic-Leaflet package, ready to inline.

    The CSS's ``url(images/...)`` references become data URIs; source-map comments are dropped.
    """
    try:
        xs_leaflet = importlib.import_module("xstatic.pkg.leaflet")
    except ImportError as err:
        raise ExportError(
            "the offline map inlines Leaflet from the XStatic-Leaflet package, which is not "
            "installed; install it with: pip install 'geoseg[maps]'"
        ) from err
    base = Path(xs_leaflet.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)
    js = js.replace("</script", "<\\/script")

    def inline(match: re.Match[str]) -> str:
        path = base / match.group(1)
        if not path.is_file():
            return "none"
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"url(data:image/png;base64,{data})"

    css = re.sub(r"url\(\s*['\"]?(images/[^'\")]+)['\"]?\s*\)", inline, css)
    css = re.sub(r"/\*# sourceMappingURL=.*?\*/", "", css)
    return js, css


_MAP_CSS = """
.geoseg-counts { background: rgba(255,255,255,0.92); padding: 6px 9px; border-radius: 4px;
  font: 12px/1.4 sans-serif; box-shadow: 0 1px 4px rgba(0,0,0,0.35); }
.geoseg-counts table { border-collapse: collapse; }
.geoseg-counts th, .geoseg-counts td { padding: 1px 6px; text-align: right; }
.geoseg-counts th:first-child, .geoseg-counts td:first-child { text-align: left; }
.geoseg-counts .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.geoseg-counts caption { font-weight: bold; text-align: left; padding-bottom: 3px; }
.leaflet-container { background: #20242a; }
"""


def counts_table_html(
    rows: Sequence[tuple[str, tuple[int, int, int], int]],
    title: str,
    *,
    header: tuple[str, str] = ("class", "count"),
) -> str:
    """A counts table for the map's corner box: ``(name, RGB colour, count)`` rows and a total."""
    import html

    body = "".join(
        f'<tr><td><span class="swatch" style="background:{_hex(colour)}">'
        f"</span>{html.escape(name)}</td><td>{n}</td></tr>"
        for name, colour, n in rows
    )
    total = sum(n for _, _, n in rows)
    return (
        f"<table><caption>{html.escape(title)}</caption>"
        f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>{body}"
        f"<tr><th>total</th><th>{total}</th></tr></table>"
    )


def _counts_control(html: str) -> Any:
    """A Leaflet control (bottom left) holding ``html``; a branca element for folium maps."""
    from branca.element import MacroElement
    from folium.template import Template

    class CountsControl(MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = L.control({position: "bottomleft"});
            {{ this.get_name() }}.onAdd = function () {
                var div = L.DomUtil.create("div", "geoseg-counts");
                div.innerHTML = {{ this.html_json }};
                L.DomEvent.disableClickPropagation(div);
                return div;
            };
            {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
            {% endmacro %}
            """
        )

        def __init__(self, content: str) -> None:
            super().__init__()
            self._name = "GeosegCounts"
            self.html_json = json.dumps(content).replace("</", "<\\/")

    return CountsControl(html)


@dataclass(frozen=True, eq=False)
class MapLayer:
    """One toggleable layer of :func:`layered_map`.

    Attributes:
        name: the name in the layer control (e.g. ``"ship (12)"``).
        gdf: the polygons, in any CRS (reprojected to longitude/latitude); the popup columns.
        colour: RGB outline and fill colour.
        fields: popup rows ``(column, label, decimals)`` (``None``: shown as text); columns
            missing from ``gdf`` are left out.
        show: visible when the page opens.
    """

    name: str
    gdf: gpd.GeoDataFrame
    colour: tuple[int, int, int]
    fields: tuple[tuple[str, str, int | None], ...] = _POPUP_FIELDS
    show: bool = True


def web_map(
    results: ResultsLike | None,
    *,
    scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    out_html: str | os.PathLike[str],
    max_size: int = 2048,
    bands: Sequence[int] | None = None,
    stretch: Stretch = Stretch.AUTO,
    min_score: float | None = None,
    classes: Sequence[str] | None = None,
    title: str = "geoseg results",
) -> Path:
    """Write an interactive map as one HTML file that works offline.

    Contents: each scene (if given) as an image overlay, reprojected to Web Mercator (one
    toggleable layer per scene, named by its file); one toggleable layer per class with popups
    (class, score, length, width, area, heading, scene); a counts table; a layer control and a
    scale bar. No basemap tiles are loaded.

    Args:
        results: result vectors (see :func:`geoseg.count.read_results`), or ``None``.
        scene: the scene raster shown under the polygons (needs a CRS), or several (each
            drawn; ``max_size`` applies to each).
        out_html: the HTML file to write (atomically).
        max_size: longest side of the scene image in pixels.
        bands: 1-based scene bands shown (3 = RGB, 1 = grey); default 1,2,3 or 1.
        stretch: value stretch of the scene (see :class:`Stretch`).
        min_score: show objects with ``score >= min_score``.
        classes: show only these classes (one layer each, in this order); each must be a
            class of some result or of a bundled preset (see :func:`geoseg.count.count`).
        title: page title and caption of the counts table.

    Returns:
        The path written.

    Raises:
        ExportError: XStatic-Leaflet or folium missing, or the file cannot be written.
        UnsupportedTransformError: a scene has no CRS. LabelError: results without CRS.
        ConfigError: a class in ``classes`` that no result holds and no preset knows.
    """
    frames = read_results(results) if results is not None else []
    for g in frames:
        if g.crs is None and len(g):
            raise LabelError(
                f"results of scene(s) {', '.join(sorted(g['scene'].unique()))} have no CRS; "
                "a map needs georeferenced results"
            )
    if classes is not None:
        check_result_classes(classes, frames)
    gdf = _prepare(frames or None, crs="EPSG:4326", min_score=min_score, classes=classes)
    order = _class_order(gdf, classes)
    counts = {c: int((gdf["class"] == c).sum()) for c in order}
    layers = [
        MapLayer(f"{cls} ({counts[cls]})", gdf[gdf["class"] == cls], class_colour(cls, order))
        for cls in order
        if counts[cls]
    ]
    rows = [(cls, class_colour(cls, order), counts[cls]) for cls in order]
    return layered_map(
        layers,
        out_html=out_html,
        scene=scene,
        max_size=max_size,
        bands=bands,
        stretch=stretch,
        title=title,
        table_html=counts_table_html(rows, title, header=("class", "count")),
    )


def layered_map(
    layers: Sequence[MapLayer],
    *,
    out_html: str | os.PathLike[str],
    scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    max_size: int = 2048,
    bands: Sequence[int] | None = None,
    stretch: Stretch = Stretch.AUTO,
    title: str = "geoseg results",
    table_html: str | None = None,
) -> Path:
    """Write an offline HTML map of polygon layers (the machinery of :func:`web_map`).

    Leaflet is inlined from XStatic-Leaflet and no basemap tiles are loaded, so the file opens
    without internet access; each scene (if given) is an image overlay warped to Web Mercator
    (one toggleable layer per scene, named by its file, when there are several).
    Each layer is a toggleable group with popups; a layer control and a scale bar are added,
    and ``table_html`` (if given) is shown in a box in the bottom-left corner.

    Args:
        layers: the polygon layers, drawn in this order (each needs a CRS).
        out_html: the HTML file to write (atomically).
        scene: a raster shown under the polygons (needs a CRS), or several.
        max_size: longest side of the scene image in pixels.
        bands: 1-based scene bands shown (3 = RGB, 1 = grey); default 1,2,3 or 1.
        stretch: value stretch of the scene (see :class:`Stretch`).
        title: the page title.
        table_html: HTML of the corner box (e.g. from a counts table), or ``None``.

    Returns:
        The path written.

    Raises:
        ExportError: XStatic-Leaflet or folium missing, or the file cannot be written.
        UnsupportedTransformError: a scene has no CRS. LabelError: a layer without CRS.
    """
    try:
        import folium
        from branca.element import Element
    except ImportError as err:
        raise ExportError(
            "the web map needs folium; install it with: pip install 'geoseg[maps]'"
        ) from err
    js, css = _leaflet_assets()
    lonlat: list[gpd.GeoDataFrame] = []
    for layer in layers:
        if layer.gdf.crs is None and len(layer.gdf):
            raise LabelError(f"map layer {layer.name!r} has no CRS; a map needs georeferenced data")
        lonlat.append(layer.gdf.to_crs("EPSG:4326") if len(layer.gdf) else layer.gdf)

    if scene is None:
        scenes: list[str | os.PathLike[str]] = []
    elif isinstance(scene, str | os.PathLike):
        scenes = [scene]
    else:
        scenes = list(dict.fromkeys(scene))
    bounds: list[tuple[float, float, float, float]] = []
    overlays: list[tuple[str, bytes, tuple[float, float, float, float]]] = []
    for path in scenes:
        preview = read_preview(path, max_size=max_size, bands=bands, stretch=stretch)
        if preview.crs_wkt is None:
            raise UnsupportedTransformError(
                f"{path}: the scene has no CRS, so it cannot be placed on a map; give a "
                "georeferenced scene or leave the scene out"
            )
        png, lonlat_bounds = _mercator_png(preview)
        overlays.append((Path(path).name, png, lonlat_bounds))
        bounds.append(lonlat_bounds)
    bounds += [tuple(float(v) for v in g.total_bounds) for g in lonlat if len(g)]  # type: ignore[misc]
    if bounds:
        west = min(b[0] for b in bounds)
        south = min(b[1] for b in bounds)
        east = max(b[2] for b in bounds)
        north = max(b[3] for b in bounds)
    else:
        west, south, east, north = -10.0, -10.0, 10.0, 10.0

    fmap = folium.Map(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=2,
        tiles=None,
        control_scale=True,
        max_zoom=22,
    )
    # nothing from a CDN: drop folium's default links, inline Leaflet instead
    fmap.default_js = []
    fmap.default_css = []
    root: Any = fmap.get_root()
    root.title = title
    root.header.add_child(Element(f"<style>{css}</style>"), name="leaflet_css")
    root.header.add_child(Element(f"<style>{_MAP_CSS}</style>"), name="geoseg_css")
    root.header.add_child(Element(f"<script>{js}</script>"), name="leaflet_js")

    for name, png, (w, s, e, n) in overlays:
        folium.raster_layers.ImageOverlay(
            image="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            bounds=[[s, w], [n, e]],
            name=name if len(overlays) > 1 else "scene",
            opacity=1.0,
            interactive=False,
            zindex=1,
        ).add_to(fmap)

    for layer, sub in zip(layers, lonlat, strict=True):
        if len(sub) == 0:
            continue
        fields = [(col, label, dec) for col, label, dec in layer.fields if col in sub.columns]
        props = {}
        for col, _, dec in fields:
            values = sub[col]
            if dec is not None:
                values = pd.to_numeric(values, errors="coerce").round(dec)
            props[col] = values.to_numpy()
        layer_gdf = gpd.GeoDataFrame(props, geometry=sub.geometry.to_numpy(), crs="EPSG:4326")
        colour = _hex(layer.colour)
        group = folium.FeatureGroup(name=layer.name, show=layer.show)
        folium.GeoJson(
            layer_gdf.to_json(na="null", drop_id=True),
            name=layer.name,
            style_function=lambda _f, c=colour: {
                "color": c,
                "weight": 2,
                "fillColor": c,
                "fillOpacity": 0.15,
            },
            highlight_function=lambda _f: {"weight": 4, "fillOpacity": 0.35},
            popup=folium.GeoJsonPopup(
                fields=[f[0] for f in fields], aliases=[f[1] for f in fields], localize=True
            )
            if fields
            else None,
        ).add_to(group)
        group.add_to(fmap)

    if table_html is not None:
        fmap.add_child(_counts_control(table_html))
    folium.LayerControl(collapsed=False).add_to(fmap)
    if bounds:
        fmap.fit_bounds([[south, west], [north, east]])

    html = root.render()
    remote = remote_resources(html)
    if remote:  # a folium change that adds a CDN link must not pass silently
        raise ExportError(
            f"{out_html}: the map would load resources from the internet: {remote[:3]}"
        )
    out = Path(out_html)
    _atomic_write(out, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    logger.info("wrote map with %d objects to %s", sum(len(g) for g in lonlat), out)
    return out


def _mercator_png(preview: Preview) -> tuple[bytes, tuple[float, float, float, float]]:
    """The preview warped to Web Mercator as an RGBA PNG, and its lon/lat bounds (W, S, E, N).

    Leaflet draws in Web Mercator, so an image in EPSG:3857 stretched between the lon/lat of
    its corners lies exactly where the scene is.
    """
    from PIL import Image
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform, reproject

    h, w = preview.valid.shape
    src = np.concatenate(
        [np.moveaxis(preview.rgb, -1, 0), preview.valid[None].astype(np.uint8) * 255]
    )
    left, bottom, right, top = preview.bounds
    dst_transform, dw, dh = calculate_default_transform(
        preview.crs_wkt, "EPSG:3857", w, h, left=left, bottom=bottom, right=right, top=top
    )
    dst = np.zeros((4, dh, dw), dtype=np.uint8)
    reproject(
        source=src,
        destination=dst,
        src_transform=preview.transform,
        src_crs=preview.crs_wkt,
        dst_transform=dst_transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest,
    )
    west_m, south_m, east_m, north_m = array_bounds(dh, dw, dst_transform)
    to_lonlat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    west, south = to_lonlat.transform(west_m, south_m)
    east, north = to_lonlat.transform(east_m, north_m)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(dst, 0, -1)), mode="RGBA").save(
        buf, format="PNG", optimize=False
    )
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise UnsupportedTransformError("the scene cannot be placed in Web Mercator")
    return buf.getvalue(), (float(west), float(south), float(east), float(north))


# --------------------------------------------------------------------------------------------
# timeline chart (Pillow only: matplotlib is not a core dependency)

#: Colours of objects that stayed, arrived and departed between two dates (the bars of
#: :func:`timeline_chart`, the layers of ``geoseg compare``'s map); none is a class colour.
PERSISTED_COLOUR = (66, 133, 244)
ARRIVED_COLOUR = (52, 168, 83)
DEPARTED_COLOUR = (156, 39, 176)


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = max(span, 1.0) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)


def timeline_chart(
    out_png: str | os.PathLike[str],
    *,
    dates: Sequence[str],
    lines: Sequence[tuple[str, tuple[int, int, int], Sequence[float]]],
    arrived: Sequence[float] | None = None,
    departed: Sequence[float] | None = None,
    title: str = "",
    size: tuple[int, int] = (900, 480),
) -> Path:
    """Write a PNG chart of counts over time: one line per series, arrival/departure bars.

    Drawn with Pillow. The x axis has one evenly spaced position per date (in order); lines
    join the counts of consecutive dates; arrivals are drawn as green bars above zero and
    departures as red bars below zero at the date they were seen (the later date of each pair).

    Args:
        out_png: the PNG to write (atomically).
        dates: ``[T]`` date labels, in order.
        lines: ``(name, RGB colour, [T] values)`` per series (e.g. per class and the total).
        arrived: ``[T]`` arrivals per date (NaN or ``None`` entries: no bar), or ``None``.
        departed: ``[T]`` departures per date, drawn downwards, or ``None``.
        title: the caption above the plot.
        size: ``(width, height)`` in pixels.

    Returns:
        The path written.

    Raises:
        ValueError: a series does not have one value per date.
        ExportError: the PNG cannot be written.
    """
    from PIL import Image, ImageDraw, ImageFont

    n = len(dates)
    series = [(name, colour, np.asarray(v, dtype=float)) for name, colour, v in lines]
    up = np.asarray(arrived if arrived is not None else [np.nan] * n, dtype=float)
    down = np.asarray(departed if departed is not None else [np.nan] * n, dtype=float)
    for name, _, v in [*series, ("arrived", (0, 0, 0), up), ("departed", (0, 0, 0), down)]:
        if len(v) != n:
            raise ValueError(f"series {name!r} has {len(v)} values for {n} dates")
    width, height = size
    font_size = max(10, height // 36)
    try:
        font: Any = ImageFont.load_default(size=font_size)
    except (TypeError, OSError):  # Pillow without FreeType
        font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right = 8 * font_size // 2 + 20, width - 20
    top, bottom = 3 * font_size, height - 3 * font_size
    values = [v[np.isfinite(v)] for _, _, v in series] + [up[np.isfinite(up)]]
    y_max = max([float(v.max()) for v in values if v.size] + [1.0])
    y_min = -float(np.nanmax(down)) if np.isfinite(down).any() else 0.0
    y_min = min(y_min, 0.0)
    step = _nice_step(y_max - y_min)
    y_max = math.ceil(y_max / step) * step
    y_min = math.floor(y_min / step) * step

    def x_of(i: float) -> float:
        return left + (i + 0.5) * (right - left) / max(n, 1)

    def y_of(v: float) -> float:
        return bottom - (v - y_min) * (bottom - top) / max(y_max - y_min, 1e-9)

    draw.text((left, font_size // 2), title, fill="black", font=font)
    tick = y_min
    while tick <= y_max + 1e-9:
        y = y_of(tick)
        draw.line([(left, y), (right, y)], fill=(225, 225, 225) if tick else (90, 90, 90))
        label = f"{tick:g}"
        draw.text((left - 6, y), label, fill="black", font=font, anchor="rm")
        tick += step
    draw.line([(left, top), (left, bottom)], fill=(90, 90, 90))
    every = max(1, math.ceil(n * 8 * font_size / max(right - left, 1) / 10))
    for i, label in enumerate(dates):
        if i % every == 0:
            draw.text((x_of(i), bottom + 6), label, fill="black", font=font, anchor="mt")
    bar = max(2.0, 0.18 * (right - left) / max(n, 1))
    for i in range(n):
        if np.isfinite(up[i]) and up[i] > 0:
            draw.rectangle([x_of(i) - bar, y_of(up[i]), x_of(i), y_of(0)], fill=ARRIVED_COLOUR)
        if np.isfinite(down[i]) and down[i] > 0:
            draw.rectangle([x_of(i), y_of(0), x_of(i) + bar, y_of(-down[i])], fill=DEPARTED_COLOUR)
    for _, colour, v in series:
        pts = [(x_of(i), y_of(float(v[i]))) for i in range(n) if np.isfinite(v[i])]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=3, joint="curve")
        for x, y in pts:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    legend = [(name, colour) for name, colour, _ in series]
    if arrived is not None:
        legend.append(("arrived", ARRIVED_COLOUR))
    if departed is not None:
        legend.append(("departed", DEPARTED_COLOUR))
    x = right
    for name, colour in reversed(legend):
        w = int(draw.textlength(name, font=font))
        x -= w + font_size + 14
        draw.rectangle([x, font_size // 2, x + font_size, font_size // 2 + font_size], fill=colour)
        draw.text((x + font_size + 4, font_size // 2), name, fill="black", font=font)
    out = Path(out_png)
    return _atomic_write(out, lambda tmp: image.save(tmp, format="PNG"))
