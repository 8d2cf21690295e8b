"""Samples → pixels: volume compositing, and a march + composite renderer with early ray termination.

The compositing maths and its worked example are in :mod:`cuda_ext.composite.reference`; backends in
:mod:`cuda_ext.composite.ops`. This module adds the renderer a model calls::

    out = render_rays(rays_o, rays_d, field_fn, grid=grid, step_size=0.005, background=bg)      # training
    out = render_rays(..., early_stop_eps=1e-4)                                                  # inference

``field_fn(points [S, 3], dirs [S, 3], ray_indices [S]) -> (sigmas [S], rgbs [S, C])`` is the only thing the
renderer knows about the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from cuda_ext.composite.ops import composite, composite_padded
from cuda_ext.composite.reference import CompositeResult, blend_background
from cuda_ext.march.reference import MarchState
from synctalk.render.march import RaySamples, march_rays
from synctalk.render.occupancy import OccupancyGrid
from synctalk.render.rays import ray_aabb_intersect

__all__ = ["CompositeResult", "RenderOutput", "composite", "composite_padded", "composite_samples", "render_rays"]

FieldFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class RenderOutput(NamedTuple):
    colors: Tensor  # [R, C], background blended in
    opacities: Tensor  # [R]
    depths: Tensor  # [R], sum of w * t_mid (divide by opacity for the expected depth of the visible surface)
    n_samples: int  # samples evaluated by the field
    samples: RaySamples | None  # the samples (full render only; None with early termination)
    result: CompositeResult | None  # per-sample weights etc. (full render only)


def composite_samples(samples: RaySamples, sigmas: Tensor, rgbs: Tensor | None, extras: Tensor | None = None,
                      extras_mode: str = "weighted", background: Tensor | float | None = None,
                      backend: str = "auto") -> CompositeResult:
    """:func:`composite` for a :class:`RaySamples` (sigmas [S], rgbs [S, C], extras [S, E])."""
    return composite(samples.ray_indices, samples.t_starts, samples.t_ends, sigmas, rgbs, samples.n_rays, extras,
                     extras_mode, background, backend=backend)


def _evaluate(field_fn: FieldFn, rays_o: Tensor, rays_d: Tensor, ray_indices: Tensor, t_starts: Tensor,
              t_ends: Tensor) -> tuple[Tensor, Tensor]:
    points = rays_o[ray_indices] + rays_d[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
    sigmas, rgbs = field_fn(points, rays_d[ray_indices], ray_indices)
    return sigmas.reshape(-1), rgbs


def render_rays(rays_o: Tensor, rays_d: Tensor, field_fn: FieldFn, step_size: float,
                grid: OccupancyGrid | None = None, aabb: Tensor | None = None, cone_angle: float = 0.0,
                max_step_size: float = math.inf, max_steps: int = 1024, background: Tensor | float | None = None,
                early_stop_eps: float = 0.0, chunk_steps: int = 32, near_plane: float = 0.0,
                backend: str = "auto") -> RenderOutput:
    """March, evaluate the field, composite.

    Args:
        rays_o, rays_d: [R, 3], unit directions.
        field_fn: ``(points [S, 3], dirs [S, 3], ray_indices [S]) -> (sigmas [S] or [S, 1], rgbs [S, C])``.
        step_size, grid, aabb, cone_angle, max_step_size, max_steps, near_plane: as in :func:`march_rays`.
        background: None (black), float, [C] or [R, C].
        early_stop_eps: 0 = march every ray to the end in one go (differentiable; training). > 0 = march in chunks
            of ``chunk_steps`` candidate steps, evaluate the field per chunk and stop rays whose transmittance fell
            below ``early_stop_eps`` (inference): the colour then differs from the full render by less than
            ``early_stop_eps * max|rgb - background|``.
        backend: marching and compositing backend. With early termination the chunked marcher is the torch
            reference (:class:`cuda_ext.march.reference.MarchState`, any device) and ``backend`` picks the
            compositing backend; ``"nerfacc"`` marching needs CUDA tensors.

    Returns:
        :class:`RenderOutput`.
    """
    n_rays = rays_o.shape[0]
    if early_stop_eps <= 0:
        samples = march_rays(rays_o, rays_d, step_size, grid=grid, aabb=aabb, cone_angle=cone_angle,
                             max_step_size=max_step_size, max_steps=max_steps, near_plane=near_plane, backend=backend)
        sigmas, rgbs = _evaluate(field_fn, rays_o, rays_d, samples.ray_indices, samples.t_starts, samples.t_ends)
        result = composite_samples(samples, sigmas, rgbs, background=background, backend=backend)
        return RenderOutput(result.colors, result.opacities, result.depths, len(samples), samples, result)

    box = grid.aabb if grid is not None else aabb
    if box is None:
        raise ValueError("render_rays needs a grid or an aabb")
    near, far, _ = ray_aabb_intersect(rays_o, rays_d, box, near_plane=near_plane)
    state = MarchState(rays_o, rays_d, near, far, grid.binary if grid is not None else None, box, step_size,
                       cone_angle, max_step_size, max_steps, chunk_steps)
    trans = rays_o.new_ones(n_rays)  # transmittance in front of the next chunk
    colors, depths, n_samples = None, rays_o.new_zeros(n_rays), 0
    while not state.done():
        ray_indices, t_starts, t_ends = state.next_chunk()
        if ray_indices.numel() == 0:
            continue
        n_samples += ray_indices.numel()
        sigmas, rgbs = _evaluate(field_fn, rays_o, rays_d, ray_indices, t_starts, t_ends)
        part = composite(ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, backend=backend)
        # transmittance multiplies across chunks: a chunk's weights are scaled by what reaches it
        contribution = trans[:, None] * part.colors
        colors = contribution if colors is None else colors + contribution
        depths = depths + trans * part.depths
        trans = trans * (1.0 - part.opacities)
        touched = torch.unique(ray_indices)
        state.stop(touched[trans[touched] < early_stop_eps])
    if colors is None:
        channels = 3 if background is None or not torch.is_tensor(background) else background.shape[-1]
        colors = rays_o.new_zeros(n_rays, channels)
    opacities = 1.0 - trans
    return RenderOutput(blend_background(colors, opacities, background), opacities, depths, n_samples, None, None)
