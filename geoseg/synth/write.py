"""Writing a scene: the GeoTIFF block by block (then overviews) and the labels in batches.

Both go to temporary files beside the outputs and are moved into place only once both are
complete. Blocks of ``block_size`` scene pixels are rendered and written one at a time, so
memory is bounded by the block size whatever the scene size.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from geoseg.errors import ConfigError, ExportError
from geoseg.synth.cells import _Obj
from geoseg.synth.labels import _iter_objects, _label_frame
from geoseg.synth.noise import F32
from geoseg.synth.render import _rasterize, render_window
from geoseg.synth.spec import CLASSES, BandSet, Layout, SceneSpec, SynthScene
from geoseg.synth.world import _World
from geoseg.types import PixelWindow

logger = logging.getLogger(__name__)

_U16_OFFSET, _U16_SCALE, _U16_MAX = 40.0, 1960.0, 2047  # 11-bit DN range for uint16 output


def _quantise(img: F32, dtype: str) -> npt.NDArray[Any]:
    if dtype == "uint8":
        return np.clip(np.rint(img * 255.0), 1, 255).astype(np.uint8)
    return np.clip(np.rint(_U16_OFFSET + img * _U16_SCALE), 1, _U16_MAX).astype(np.uint16)


def _tmp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def generate_scene(
    out_path: str | Path,
    *,
    size: int | tuple[int, int],
    seed: int,
    gsd: float = 0.5,
    epsg: int = 32633,
    bands: BandSet | str = BandSet.RGB,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    density: float = 1.0,
    layout: Layout | str = Layout.MIXED,
    block_size: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> SynthScene:
    """Write a synthetic scene (GeoTIFF) and its labels (GeoPackage beside it).

    Args:
        out_path: the GeoTIFF to write; the labels go to the same path with suffix ``.gpkg``.
        size: ``N`` (an ``N x N`` scene) or ``(width, height)`` in pixels.
        seed: random seed; the same arguments give identical pixels and labels.
        gsd: metres per pixel.
        epsg: EPSG code of a projected CRS in metres.
        bands: ``rgb`` or ``rgbn`` (adds near-infrared: vegetation bright, water dark).
        dtype: ``uint8`` or ``uint16`` (11-bit values).
        nodata_collar: ragged valid footprint with nodata 0 around it.
        density: object-count multiplier in [0, 4].
        layout: ``mixed``, ``marina`` or ``town`` (see :class:`Layout`).
        block_size: pixels per render block side (memory grows with its square).
        progress: called as ``progress(blocks_done, blocks_total)`` after each block.

    Returns:
        The written :class:`SynthScene`.

    Raises:
        ConfigError: an argument is out of range (the message names it).
        ExportError: the outputs cannot be written.
    """
    spec = SceneSpec.create(
        size=size,
        seed=seed,
        gsd=gsd,
        epsg=epsg,
        bands=bands,
        dtype=dtype,
        nodata_collar=nodata_collar,
        density=density,
        layout=layout,
        block_size=block_size,
    )
    out = Path(out_path)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"out_path: {out} should end in .tif or .tiff")
    if not out.parent.exists():
        raise ExportError(f"{out.parent}: output folder does not exist; create it first")
    labels = out.with_suffix(".gpkg")
    tmp_tif = _tmp_path(out, ".tif")
    tmp_gpkg = _tmp_path(labels, ".gpkg")
    try:
        w = _World(spec)
        _write_raster(spec, w, tmp_tif, progress)
        counts = _write_labels(w, tmp_gpkg)
        os.replace(tmp_tif, out)
        os.replace(tmp_gpkg, labels)
    except OSError as err:
        raise ExportError(f"{out}: could not write the scene ({err}); check the path") from err
    finally:
        for p in (tmp_tif, tmp_gpkg):
            if p.exists():
                p.unlink()
    logger.info("wrote %s (%d x %d px) and %s: %s", out, spec.width, spec.height, labels, counts)
    return SynthScene(
        raster_path=out,
        labels_path=labels,
        counts=counts,
        spec=spec,
        transform=spec.transform,
        crs_wkt=spec.crs_wkt,
        nodata=spec.nodata,
    )


def _blocks(spec: SceneSpec) -> list[PixelWindow]:
    bs = spec.block_size
    return [
        PixelWindow(c, r, min(bs, spec.width - c), min(bs, spec.height - r))
        for r in range(0, spec.height, bs)
        for c in range(0, spec.width, bs)
    ]


def _write_raster(
    spec: SceneSpec, w: _World, path: Path, progress: Callable[[int, int], None] | None
) -> None:
    import rasterio
    from rasterio.enums import ColorInterp, Resampling

    tile = 512 if min(spec.width, spec.height) >= 1024 else 256
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": spec.count,
        "dtype": spec.dtype,
        "crs": f"EPSG:{spec.epsg}",
        "transform": spec.transform,
        "tiled": True,
        "blockxsize": tile,
        "blockysize": tile,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if spec.nodata_collar:
        profile["nodata"] = 0
    blocks = _blocks(spec)
    with rasterio.Env(GDAL_CACHEMAX=128, GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            names = ("red", "green", "blue", "nir")
            for b in range(spec.count):
                dst.set_band_description(b + 1, names[b])
            interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            if spec.count == 4:
                interp.append(ColorInterp.undefined)
            dst.colorinterp = interp
            dst.update_tags(
                generator="geoseg.synth",
                seed=str(spec.seed),
                layout=spec.layout.value,
                gsd=str(spec.gsd),
                density=str(spec.density),
            )
            for n, win in enumerate(blocks):
                img, _ = render_window(spec, win, world=w)
                data = _quantise(img[: spec.count], spec.dtype)
                if w.valid is not None:
                    valid = _rasterize([(w.valid, 1)], win, "uint8").astype(bool)
                    data[:, ~valid] = 0
                dst.write(data, window=win.to_rasterio())
                if progress is not None:
                    progress(n + 1, len(blocks))
        factors = []
        f = 2
        while max(spec.width, spec.height) / f >= 128:
            factors.append(f)
            f *= 2
        if factors:
            with rasterio.open(path, "r+") as dst:
                dst.build_overviews(factors, Resampling.average)
                dst.update_tags(ns="rio_overview", resampling="average")


def _write_labels(w: _World, path: Path) -> dict[str, int]:
    import pyogrio

    counts = dict.fromkeys(CLASSES, 0)
    batch: list[_Obj] = []
    wrote = False

    def flush() -> None:
        nonlocal wrote
        gdf = _label_frame(w, batch)
        pyogrio.write_dataframe(
            gdf, path, layer="labels", driver="GPKG", geometry_type="Polygon", append=wrote
        )
        wrote = True
        batch.clear()

    for o in _iter_objects(w):
        counts[o.cls] += 1
        batch.append(o)
        if len(batch) >= 50_000:
            flush()
    if batch or not wrote:
        flush()
    return counts
