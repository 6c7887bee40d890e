"""What a synthetic scene is: its classes, band sets, layouts, spec and written result.

:class:`SceneSpec` holds everything that determines a scene (same spec -> identical pixels and
labels) and validates it; :class:`SynthScene` describes a written scene. The scene's affine
transform maps *scene pixels* (col, row) to the *scene CRS* (a projected CRS in metres, north
up); the scene lies within about 20 km of the centre of the CRS's area of use.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from affine import Affine

from geoseg.errors import ConfigError

logger = logging.getLogger(__name__)

#: Class names written to the ``class`` column, in the order used by the demo model.
CLASSES: tuple[str, ...] = ("ship", "vehicle", "building")


class BandSet(StrEnum):
    """Bands written to the scene: ``rgb`` (red, green, blue) or ``rgbn`` (+ near-infrared)."""

    RGB = "rgb"
    RGBN = "rgbn"


class Layout(StrEnum):
    """What a scene mostly shows.

    * ``mixed``: a coastline with a town (roads, parking lots, buildings), countryside, open
      water with ships and a few marinas -- all three classes in most scenes.
    * ``marina``: mostly water: marinas with piers and densely packed touching boats, quays
      with large ships and tugs alongside, container yards, a waterfront town.
    * ``town``: mostly town: streets with traffic, parking lots with rows of touching cars,
      buildings of varied shapes, parks; a little water at one side.
    """

    MIXED = "mixed"
    MARINA = "marina"
    TOWN = "town"


_DTYPES = ("uint8", "uint16")
_MIN_GSD, _MAX_GSD = 0.1, 5.0
_MAX_SIDE = 200_000


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """Everything that determines a synthetic scene (same spec -> identical pixels and labels).

    Attributes:
        width, height: scene size in pixels.
        seed: random seed (any non-negative integer).
        gsd: ground sample distance in metres per pixel (square pixels).
        epsg: EPSG code of a projected CRS in metres (default UTM 33N).
        bands: :class:`BandSet`.
        dtype: ``"uint8"`` (0-255) or ``"uint16"`` (11-bit values, at most 2047).
        nodata_collar: whether the valid footprint is a ragged, rotated strip surrounded by
            nodata (0 in every band); no object lies outside the valid footprint.
        density: multiplier of object counts (0 = no objects, 1 = default, at most 4).
            Objects narrower than one pixel at ``gsd`` (e.g. cars at a 2 m GSD) are left out.
        layout: :class:`Layout`.
        block_size: side of the square blocks rendered at a time (memory scales with its
            square); a multiple of the 256 px output tiling.
    """

    width: int
    height: int
    seed: int
    gsd: float = 0.5
    epsg: int = 32633
    bands: BandSet = BandSet.RGB
    dtype: str = "uint8"
    nodata_collar: bool = False
    density: float = 1.0
    layout: Layout = Layout.MIXED
    block_size: int = 1024

    @classmethod
    def create(
        cls,
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
    ) -> SceneSpec:
        """Validate arguments and build a spec.

        Args:
            size: ``N`` for an ``N x N`` scene or ``(width, height)`` in pixels.
            seed: non-negative random seed.
            gsd: metres per pixel, in [0.1, 5].
            epsg: EPSG code of a projected CRS whose unit is the metre.
            bands: ``"rgb"`` or ``"rgbn"``.
            dtype: ``"uint8"`` or ``"uint16"``.
            nodata_collar: ragged valid footprint surrounded by nodata.
            density: object-count multiplier in [0, 4].
            layout: ``"mixed"``, ``"marina"`` or ``"town"``.
            block_size: render block side in pixels (multiple of 256).

        Raises:
            ConfigError: naming the argument at fault and the accepted values.
        """
        if isinstance(size, bool):
            raise ConfigError(f"size: expected an integer or (width, height), got {size!r}")
        if isinstance(size, int | np.integer):
            width = height = int(size)
        else:
            try:
                width, height = (int(v) for v in size)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"size: expected an integer or (width, height), got {size!r}"
                ) from err
        if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
            raise ConfigError(
                f"size: width and height must be between 1 and {_MAX_SIDE} pixels, "
                f"got {width} x {height}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
        gsd = float(gsd)
        if not (math.isfinite(gsd) and _MIN_GSD <= gsd <= _MAX_GSD):
            raise ConfigError(
                f"gsd: expected metres per pixel between {_MIN_GSD} and {_MAX_GSD}, got {gsd}"
            )
        try:
            band_set = BandSet(str(bands).lower())
        except ValueError as err:
            raise ConfigError(
                f"bands: expected one of {[b.value for b in BandSet]}, got {bands!r}"
            ) from err
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype: expected one of {list(_DTYPES)}, got {dtype!r}")
        density = float(density)
        if not (math.isfinite(density) and 0.0 <= density <= 4.0):
            raise ConfigError(f"density: expected a number between 0 and 4, got {density}")
        try:
            lay = Layout(str(layout).lower())
        except ValueError as err:
            raise ConfigError(
                f"layout: expected one of {[v.value for v in Layout]}, got {layout!r}"
            ) from err
        if block_size < 256 or block_size % 256:
            raise ConfigError(f"block_size: expected a multiple of 256, got {block_size}")
        _check_epsg(int(epsg))
        return cls(
            width=width,
            height=height,
            seed=int(seed),
            gsd=gsd,
            epsg=int(epsg),
            bands=band_set,
            dtype=dtype,
            nodata_collar=bool(nodata_collar),
            density=density,
            layout=lay,
            block_size=int(block_size),
        )

    @property
    def count(self) -> int:
        """Number of bands written (3 or 4)."""
        return 4 if self.bands is BandSet.RGBN else 3

    @property
    def nodata(self) -> float | None:
        """The nodata value (0) when the scene has a collar, else ``None``."""
        return 0.0 if self.nodata_collar else None

    @property
    def transform(self) -> Affine:
        """Affine from scene pixels (col, row) to the scene CRS (x, y); north up."""
        x0, y0 = _scene_origin(self.epsg, self.seed, self.width, self.height, self.gsd)
        return Affine(self.gsd, 0.0, x0, 0.0, -self.gsd, y0)

    @property
    def crs_wkt(self) -> str:
        """WKT of the scene CRS."""
        from pyproj import CRS

        return str(CRS.from_epsg(self.epsg).to_wkt())


@dataclass(frozen=True, slots=True)
class SynthScene:
    """A written synthetic scene.

    Attributes:
        raster_path: the GeoTIFF.
        labels_path: the GeoPackage beside it (same stem), layer ``labels``.
        counts: objects per class (every class in :data:`CLASSES` present, possibly 0).
        spec: the :class:`SceneSpec` it was made from (e.g. for :func:`render_object_ids`).
        transform: scene pixels -> scene CRS.
        crs_wkt: WKT of the scene CRS.
        nodata: nodata value, or ``None`` without a collar.
    """

    raster_path: Path
    labels_path: Path
    counts: dict[str, int]
    spec: SceneSpec
    transform: Affine
    crs_wkt: str
    nodata: float | None = None


def _check_epsg(epsg: int) -> None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_epsg(epsg)
    except CRSError as err:
        raise ConfigError(f"epsg: {epsg} is not a known EPSG code; try 32633 (UTM 33N)") from err
    units = {a.unit_name.lower() for a in crs.axis_info}
    if not crs.is_projected or not units <= {"metre", "meter"}:
        raise ConfigError(
            f"epsg: {epsg} ({crs.name}) is not a projected CRS in metres; the ground sample "
            "distance is in metres, so pick e.g. a UTM zone such as 32633"
        )


@functools.lru_cache(maxsize=64)
def _scene_origin(epsg: int, seed: int, width: int, height: int, gsd: float) -> tuple[float, float]:
    """Upper-left corner (x, y) in the scene CRS: near the centre of the CRS's area of use."""
    from pyproj import CRS, Transformer

    crs = CRS.from_epsg(epsg)
    xc, yc = 500_000.0, 5_000_000.0
    area = crs.area_of_use
    if area is not None:
        lon = (area.west + area.east) / 2.0
        lat = (area.south + area.north) / 2.0
        try:
            tr = Transformer.from_crs(4326, crs, always_xy=True)
            x, y = tr.transform(lon, lat)
            if math.isfinite(x) and math.isfinite(y):
                xc, yc = float(x), float(y)
        except Exception:  # pragma: no cover - pyproj edge cases
            logger.debug("could not project the area-of-use centre of EPSG:%d", epsg)
    rng = np.random.default_rng([seed, 424242])
    xc += 1000.0 * float(rng.integers(-20, 21))
    yc += 1000.0 * float(rng.integers(-20, 21))
    x0 = round((xc - width * gsd / 2.0) / gsd) * gsd
    y0 = round((yc + height * gsd / 2.0) / gsd) * gsd
    return float(x0), float(y0)
