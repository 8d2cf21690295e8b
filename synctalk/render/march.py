"""Rays → samples: march rays through the scene box, keeping samples in occupied cells of an occupancy grid.

Samples are packed (nerfacc layout, see :class:`RaySamples`); :meth:`RaySamples.to_padded` gives ``[R, M]`` tensors
and a mask for code that prefers a rectangular layout. The step rule and the backends are described in
:mod:`cuda_ext.march.reference` and :mod:`cuda_ext.march.ops`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from cuda_ext.composite.reference import pack_info, packed_to_padded
from cuda_ext.march import ops
from synctalk.render.occupancy import OccupancyGrid
from synctalk.render.rays import ray_aabb_intersect

__all__ = ["RaySamples", "march_rays"]


@dataclass
class RaySamples:
    """Packed samples: sample ``i`` covers ``[t_starts[i], t_ends[i]]`` on ray ``ray_indices[i]``.

    Attributes:
        ray_indices: [S] int64, non-decreasing (each ray's samples contiguous and ordered by t).
        t_starts, t_ends: [S] float.
        n_rays: R (rays may have no samples).
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor
    n_rays: int

    def __len__(self) -> int:
        return self.ray_indices.shape[0]

    @property
    def t_mids(self) -> Tensor:
        return (self.t_starts + self.t_ends) * 0.5

    def positions(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """Midpoints in world space: ``o + d * (t_start + t_end) / 2`` → [S, 3]."""
        return rays_o[self.ray_indices] + rays_d[self.ray_indices] * self.t_mids[:, None]

    def counts(self) -> Tensor:
        """Samples per ray, [R] int64."""
        return pack_info(self.ray_indices, self.n_rays)[:, 1]

    def to_padded(self, values: Tensor, max_samples: int | None = None, fill: float = 0.0) -> tuple[Tensor, Tensor]:
        """Per-sample ``values`` [S, ...] → ``[R, M, ...]`` and mask [R, M] (M = longest ray or max_samples)."""
        return packed_to_padded(values, self.ray_indices, self.n_rays, max_samples, fill)


def march_rays(rays_o: Tensor, rays_d: Tensor, step_size: float, grid: OccupancyGrid | None = None,
               aabb: Tensor | None = None, near: Tensor | None = None, far: Tensor | None = None,
               cone_angle: float = 0.0, max_step_size: float = math.inf, max_steps: int = 1024,
               near_plane: float = 0.0, backend: str = "auto") -> RaySamples:
    """Sample rays between their entry and exit of the box, where the grid is occupied.

    Args:
        rays_o, rays_d: [R, 3]; use unit directions so t (and step_size) are world distances.
        step_size: fixed step, or the smallest step when ``cone_angle > 0``. World units.
        grid: occupancy grid (its aabb bounds the march); None = sample everywhere in ``aabb``.
        aabb: [6] box when there is no grid.
        near, far: [R] overrides of the box interval (``inf`` = no samples on that ray).
        cone_angle: ``dt = clamp(t * cone_angle, step_size, max_step_size)``; 0 = fixed step. ~1/256 is common
            for unbounded scenes, 0 for a head in a small box.
        max_steps: most samples kept per ray.
        near_plane: samples start no closer than this (e.g. skip the camera's own neighbourhood).
        backend: "auto" | "torch" | "cuda" | "nerfacc" (see :mod:`cuda_ext.march.ops`).

    Returns:
        :class:`RaySamples`.

    Example: a ray from (0, 0, -2) along +z through the box [-1, 1]^3 with step 0.5 and no grid gives
    t intervals [1, 1.5], [1.5, 2], [2, 2.5], [2.5, 3].
    """
    box = grid.aabb if grid is not None else aabb
    if near is None or far is None:
        if box is None:
            raise ValueError("march_rays needs a grid, an aabb, or both near and far")
        box_near, box_far, _ = ray_aabb_intersect(rays_o, rays_d, box, near_plane=near_plane)
        near = box_near if near is None else near
        far = box_far if far is None else far
    binary = grid.binary if grid is not None else None
    ray_indices, t_starts, t_ends = ops.march(rays_o, rays_d, near, far, binary, box, step_size, cone_angle,
                                              max_step_size, max_steps, backend=backend)
    return RaySamples(ray_indices, t_starts, t_ends, rays_o.shape[0])
