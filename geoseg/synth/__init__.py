"""Synthetic georeferenced scenes with exact instance labels.

:func:`generate_scene` writes a tiled, compressed GeoTIFF with overviews and, beside it, a
GeoPackage with one polygon per object (column ``class`` in ``ship``, ``vehicle``,
``building``) in the scene CRS. Every object's footprint is drawn by rasterising the very
polygon that is written as its label (pixel-centre rule), so rasterising a label with the scene
transform reproduces the drawn footprint.

How a scene is made:

* **Plan, globally and lazily.** The plane is cut into square *cells* (160 m, on a grid rotated
  by a per-scene angle: the town grid). Each cell's kind (open water, marina, quay, rural land,
  town) follows from smooth noise functions of *scene metres* evaluated at its centre; its
  content (roads with vehicles, parking lots, building lots, parks, piers with moored boats,
  ships with wakes, trees, rocks, containers...) comes from an RNG seeded by
  ``(seed, layout, cell index)``. Objects never leave their cell, so cells are planned
  independently and objects of the same class never overlap (touching is common: rows of
  parked cars, boats side by side at piers, tugs alongside ships).
* **Render, block by block.** Each block (``block_size`` scene pixels plus a small halo) is
  rendered from noise functions of global coordinates (seamless across blocks) and the plans of
  the cells around it, so memory is bounded by the block size whatever the scene size.

Coordinate frames: *scene pixels* (col, row; see :mod:`geoseg.types`), *scene metres*
(``col * gsd``, ``row * gsd``; y down), the *town frame* (scene metres rotated by the scene's
grid angle, in which cells are axis-aligned squares) and the *scene CRS* (a projected CRS in
metres, reached from scene pixels by the scene's affine transform).

Modules (internal: import the public names from ``geoseg.synth`` itself):

* :mod:`~geoseg.synth.spec`: the public values (:class:`SceneSpec`, :class:`SynthScene`,
  :class:`Layout`, :class:`BandSet`, :data:`CLASSES`) and the scene's CRS and transform.
* :mod:`~geoseg.synth.noise`: hashed value noise of global coordinates.
* :mod:`~geoseg.synth.palette`: colours (red, green, blue, near-infrared reflectance).
* :mod:`~geoseg.synth.layouts`: per-layout parameters (named fields).
* :mod:`~geoseg.synth.cells`: planning cells and what their plans hold.
* :mod:`~geoseg.synth.world`: frames, coastline, sun, cell kinds, cached cell plans.
* :mod:`~geoseg.synth.planners`: one planner per part (town, buildings, vehicles, nature,
  rural, ships, open water, marinas and quays).
* :mod:`~geoseg.synth.render` and :mod:`~geoseg.synth.appearance`: rasterising a window into
  float bands and object ids; what objects look like.
* :mod:`~geoseg.synth.labels` and :mod:`~geoseg.synth.write`: the label table; writing the
  GeoTIFF and GeoPackage window by window.
"""

from __future__ import annotations

from geoseg.synth.labels import scene_labels
from geoseg.synth.render import render_object_ids, render_window
from geoseg.synth.spec import CLASSES, BandSet, Layout, SceneSpec, SynthScene
from geoseg.synth.write import generate_scene

__all__ = [
    "CLASSES",
    "BandSet",
    "Layout",
    "SceneSpec",
    "SynthScene",
    "generate_scene",
    "render_object_ids",
    "render_window",
    "scene_labels",
]
