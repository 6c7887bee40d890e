"""Colours: reflectance-like values for the red, green, blue and near-infrared bands.

A :data:`Colour` is ``(red, green, blue, nir)`` in [0, 1] (display reflectance, with a
near-infrared value: vegetation bright, water dark). Object palettes are tuples of colours;
ground colours used on whole rasters (``_C_SOIL`` ... ``_C_FOAM``) are float32 arrays of shape
``[4]``. :func:`_pick`, :func:`_pick_weighted` and :func:`_jitter` draw from a palette with a
cell's RNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Colour = tuple[float, float, float, float]  # red, green, blue, near-infrared reflectance-like

# Palettes (display reflectance, with a near-infrared value).
_CAR_COLOURS: tuple[tuple[Colour, float], ...] = (
    ((0.88, 0.88, 0.87, 0.70), 0.28),  # white
    ((0.68, 0.69, 0.70, 0.55), 0.16),  # silver
    ((0.08, 0.08, 0.09, 0.10), 0.16),  # black
    ((0.55, 0.55, 0.57, 0.45), 0.08),  # light grey
    ((0.62, 0.12, 0.10, 0.40), 0.10),  # red
    ((0.12, 0.22, 0.55, 0.30), 0.10),  # blue
    ((0.10, 0.14, 0.30, 0.20), 0.05),  # dark blue
    ((0.80, 0.70, 0.20, 0.55), 0.03),  # yellow
    ((0.25, 0.40, 0.22, 0.35), 0.04),  # green
)
_GLASS: Colour = (0.06, 0.07, 0.09, 0.06)
_ROOF_COLOURS: tuple[Colour, ...] = (
    (0.62, 0.30, 0.22, 0.50),  # terracotta
    (0.55, 0.26, 0.20, 0.45),  # dark terracotta
    (0.30, 0.30, 0.33, 0.28),  # dark grey
    (0.72, 0.72, 0.70, 0.62),  # light grey
    (0.86, 0.86, 0.84, 0.75),  # white membrane
    (0.47, 0.35, 0.27, 0.40),  # brown
    (0.34, 0.38, 0.44, 0.33),  # slate
    (0.30, 0.46, 0.38, 0.40),  # green metal
    (0.74, 0.66, 0.52, 0.62),  # beige
)
_HULL_COLOURS: tuple[Colour, ...] = (
    (0.88, 0.88, 0.87, 0.72),
    (0.84, 0.85, 0.86, 0.70),
    (0.58, 0.58, 0.60, 0.48),
    (0.60, 0.14, 0.11, 0.40),
    (0.14, 0.20, 0.42, 0.25),
    (0.80, 0.42, 0.10, 0.50),
)
_BIG_HULL_COLOURS: tuple[Colour, ...] = (
    (0.55, 0.14, 0.11, 0.38),
    (0.20, 0.22, 0.26, 0.20),
    (0.16, 0.24, 0.42, 0.25),
    (0.60, 0.60, 0.62, 0.50),
)
_DECK_COLOURS: tuple[Colour, ...] = (
    (0.80, 0.78, 0.72, 0.66),
    (0.58, 0.44, 0.30, 0.48),
    (0.70, 0.72, 0.74, 0.60),
)
_CONTAINER_COLOURS: tuple[Colour, ...] = (
    (0.62, 0.16, 0.12, 0.40),
    (0.16, 0.30, 0.58, 0.32),
    (0.20, 0.48, 0.28, 0.38),
    (0.82, 0.46, 0.12, 0.52),
    (0.82, 0.82, 0.80, 0.68),
    (0.45, 0.45, 0.47, 0.38),
    (0.70, 0.60, 0.20, 0.50),
)
_C_ROAD: Colour = (0.30, 0.30, 0.31, 0.26)
_C_SIDEWALK: Colour = (0.60, 0.59, 0.56, 0.50)
_C_PARKING: Colour = (0.35, 0.35, 0.36, 0.30)
_C_LAWN: Colour = (0.32, 0.44, 0.22, 0.56)
_C_PAVED: Colour = (0.54, 0.52, 0.49, 0.46)
_C_MARKING: Colour = (0.86, 0.86, 0.82, 0.70)
_C_STALL: Colour = (0.70, 0.70, 0.67, 0.58)
_C_PIER: Colour = (0.58, 0.48, 0.36, 0.46)
_C_QUAY: Colour = (0.62, 0.61, 0.58, 0.52)
_C_TREE: Colour = (0.13, 0.27, 0.11, 0.62)
_C_ROCK: Colour = (0.46, 0.44, 0.41, 0.40)
_C_SAND: tuple[float, float, float, float] = (0.74, 0.68, 0.52, 0.48)
_C_SOIL = np.array([0.46, 0.38, 0.28, 0.32], np.float32)
_C_DRY = np.array([0.54, 0.51, 0.34, 0.42], np.float32)
_C_GRASS = np.array([0.29, 0.41, 0.19, 0.56], np.float32)
_C_FOREST = np.array([0.11, 0.20, 0.09, 0.48], np.float32)
_C_DEEP = np.array([0.035, 0.11, 0.15, 0.02], np.float32)
_C_SHALLOW = np.array([0.09, 0.25, 0.27, 0.05], np.float32)
_C_HARBOUR_WATER = np.array([0.05, 0.13, 0.14, 0.02], np.float32)
_C_HAZE = np.array([0.78, 0.80, 0.84, 0.60], np.float32)
_C_FOAM = np.array([0.86, 0.88, 0.88, 0.35], np.float32)


def _pick(rng: np.random.Generator, items: tuple[Any, ...]) -> Any:
    return items[int(rng.integers(len(items)))]


def _pick_weighted(rng: np.random.Generator, items: tuple[tuple[Any, float], ...]) -> Any:
    w = np.array([p for _, p in items], np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))][0]


def _jitter(rng: np.random.Generator, c: Colour, amount: float = 0.04) -> Colour:
    """``c`` scaled by a random factor in ``1 +- amount`` (each band capped at 0.97)."""
    f = 1.0 + float(rng.uniform(-amount, amount))
    return (
        min(c[0] * f, 0.97),
        min(c[1] * f, 0.97),
        min(c[2] * f, 0.97),
        min(c[3] * f, 0.97),
    )
