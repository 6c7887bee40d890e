"""Value noise on integer lattices hashed from global coordinates (seamless everywhere).

Every field is a function of *scene metres* (``col * gsd``, ``row * gsd``; y down) and a key:
the lattice value at integer point ``(i, j)`` is a hash of ``(i, j, key)``, so a field evaluated
on one window agrees with the same field evaluated on any other and blocks rendered separately
join without seams. The grid forms (``*_grid``, float32, for rendering) and the point forms
(``*_points``, float64, for planning) evaluate the same fields. Keys combine a scene key with
the ``_K_*`` field keys below.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_H1 = np.uint64(0x9E3779B97F4A7C15)
_H2 = np.uint64(0xC2B2AE3D27D4EB4F)
_H3 = np.uint64(0xBF58476D1CE4E5B9)
_H4 = np.uint64(0x94D049BB133111EB)


def _mix(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point
        h = h ^ (h >> np.uint64(30))
        h = h * _H3
        h = h ^ (h >> np.uint64(27))
        h = h * _H4
        return h ^ (h >> np.uint64(31))


def _hash2(ix: npt.ArrayLike, iy: npt.ArrayLike, key: int) -> npt.NDArray[np.uint64]:
    """64-bit hash of integer lattice coordinates (any shapes that broadcast) and a key."""
    a = np.asarray(ix, dtype=np.int64).astype(np.uint64)
    b = np.asarray(iy, dtype=np.int64).astype(np.uint64)
    k = np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        return _mix(_mix(a * _H1 + k) ^ (b * _H2))


def _u01(h: npt.NDArray[np.uint64]) -> F64:
    """Uniform floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _fade(t: F64) -> F64:
    return t * t * (3.0 - 2.0 * t)


def _noise_grid(xs: F64, ys: F64, scale: float, key: int) -> F32:
    """Value noise in [0, 1] on the grid ``ys x xs`` (scene metres), shape ``[len(ys), len(xs)]``.

    The lattice value at integer point ``(i, j)`` is a hash of ``(i, j, key)``, so the field is
    the same function of global coordinates whatever window it is evaluated on.
    """
    gx = xs / scale
    gy = ys / scale
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    tx = _fade(gx - ix).astype(np.float32)
    ty = _fade(gy - iy).astype(np.float32)
    bx, by = int(ix.min()), int(iy.min())
    nx, ny = int(ix.max()) - bx + 2, int(iy.max()) - by + 2
    lat = _u01(
        _hash2(np.arange(bx, bx + nx)[None, :], np.arange(by, by + ny)[:, None], key)
    ).astype(np.float32)
    lx = ix - bx
    rows = lat[:, lx] * (1.0 - tx) + lat[:, lx + 1] * tx  # [ny, W]
    ly = iy - by
    out: F32 = rows[ly, :] * (1.0 - ty)[:, None] + rows[ly + 1, :] * ty[:, None]
    return out


def _noise_points(x: npt.ArrayLike, y: npt.ArrayLike, scale: float, key: int) -> F64:
    """Value noise in [0, 1] at arbitrary points (scene metres), same field as the grid form."""
    gx = np.asarray(x, dtype=np.float64) / scale
    gy = np.asarray(y, dtype=np.float64) / scale
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    tx = _fade(gx - ix)
    ty = _fade(gy - iy)
    v00 = _u01(_hash2(ix, iy, key))
    v10 = _u01(_hash2(ix + 1, iy, key))
    v01 = _u01(_hash2(ix, iy + 1, key))
    v11 = _u01(_hash2(ix + 1, iy + 1, key))
    a0 = v00 * (1.0 - tx) + v10 * tx
    a1 = v01 * (1.0 - tx) + v11 * tx
    out: F64 = a0 * (1.0 - ty) + a1 * ty
    return out


def _fbm_grid(xs: F64, ys: F64, scale: float, octaves: int, key: int) -> F32:
    total = np.zeros((len(ys), len(xs)), np.float32)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += np.float32(amp) * _noise_grid(xs, ys, scale / 2**k, key + 7919 * k)
        norm += amp
        amp *= 0.5
    total *= np.float32(1.0 / norm)
    return total


def _fbm_points(x: npt.ArrayLike, y: npt.ArrayLike, scale: float, octaves: int, key: int) -> F64:
    total = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape, np.float64)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * _noise_points(x, y, scale / 2**k, key + 7919 * k)
        norm += amp
        amp *= 0.5
    out: F64 = total / norm
    return out


# Field keys (combined with the seed).
_K_COAST, _K_URBAN, _K_VEG, _K_FINE, _K_MID, _K_LIGHT, _K_HAZE, _K_WAVE, _K_PIX = range(101, 110)
