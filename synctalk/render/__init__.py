"""Render core: rays → samples → pixels. Knows no audio, faces or fields beyond ``field_fn``.

- :mod:`~synctalk.render.rays`: camera rays (OpenCV convention), ray/box intersection.
- :mod:`~synctalk.render.occupancy`: :class:`OccupancyGrid` (EMA densities → bool grid).
- :mod:`~synctalk.render.march`: :func:`march_rays` → packed :class:`RaySamples`.
- :mod:`~synctalk.render.composite`: :func:`composite` (packed), :func:`composite_padded`, :func:`render_rays`
  (march + field + composite, with early termination for inference).

Kernels live in ``cuda_ext/march`` and ``cuda_ext/composite`` (reference, ops, .cu); every public function takes
``backend="auto" | "torch" | "cuda" | "nerfacc"``.
"""

from synctalk.render.composite import (
    CompositeResult,
    RenderOutput,
    composite,
    composite_padded,
    composite_samples,
    render_rays,
)
from synctalk.render.march import RaySamples, march_rays
from synctalk.render.occupancy import OccupancyGrid
from synctalk.render.rays import generate_rays, pixel_grid, ray_aabb_intersect

__all__ = [
    "CompositeResult",
    "OccupancyGrid",
    "RaySamples",
    "RenderOutput",
    "composite",
    "composite_padded",
    "composite_samples",
    "generate_rays",
    "march_rays",
    "pixel_grid",
    "ray_aabb_intersect",
    "render_rays",
]
