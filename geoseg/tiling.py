"""Tile grids over a scene (pure arithmetic) and tile iteration.

The grid arithmetic here touches no pixels: :func:`make_grid` turns a scene size, a tile size and
an overlap into :class:`~geoseg.types.TileSpec` cells whose read windows cover the whole scene
(the last row/column is shifted inward, never cut short) and whose *cores* partition it exactly.
"""

from __future__ import annotations

import itertools

from geoseg.types import PixelWindow, TileSpec

__all__ = ["make_grid"]


def _axis(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """Plan one axis: ``(window_start, core_start, core_end)`` per tile, in scene pixels.

    Windows are ``tile`` long, start at multiples of ``tile - overlap`` and the last one is
    shifted inward so it ends at ``length``. Core boundaries lie in the middle of each overlap,
    so consecutive cores touch and together cover ``[0, length)`` exactly.
    """
    if length <= tile:
        return [(0, 0, length)]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    bounds = [0]
    for prev, cur in itertools.pairwise(starts):
        bounds.append((cur + prev + tile) // 2)
    bounds.append(length)
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


def make_grid(width: int, height: int, *, tile_size: int, overlap: int) -> list[TileSpec]:
    """Cover a ``width x height`` scene with overlapping ``tile_size`` tiles.

    Args:
        width: scene width in pixels (> 0).
        height: scene height in pixels (> 0).
        tile_size: side of the square read window in pixels (> 0).
        overlap: pixels shared by neighbouring windows, ``0 <= overlap < tile_size``.

    Returns:
        Tiles in row-major order. Each ``window`` is ``tile_size x tile_size`` in scene pixels;
        a scene smaller than a tile gets one window starting at (0, 0) that runs past the scene
        (the excess is padding). The ``core`` windows partition ``[0, width) x [0, height)``:
        every scene pixel lies in exactly one core.

    Raises:
        ValueError: for non-positive sizes or an overlap outside ``[0, tile_size)``.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"scene size must be positive, got {width} x {height}")
    if tile_size <= 0:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be in [0, tile_size={tile_size}), got {overlap}")
    cols = _axis(width, tile_size, overlap)
    rows = _axis(height, tile_size, overlap)
    specs: list[TileSpec] = []
    for r, (y0, cy0, cy1) in enumerate(rows):
        for c, (x0, cx0, cx1) in enumerate(cols):
            specs.append(
                TileSpec(
                    index=len(specs),
                    row=r,
                    col=c,
                    window=PixelWindow(x0, y0, tile_size, tile_size),
                    core=PixelWindow(cx0, cy0, cx1 - cx0, cy1 - cy0),
                )
            )
    return specs
