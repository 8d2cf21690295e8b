"""Marching ops: input checks and backend dispatch (torch | nerfacc | cuda | auto).

Same name and signature as :func:`cuda_ext.march.reference.march` plus ``backend``:

- ``torch``: the reference, any device.
- ``cuda``: march.cu, two passes (count samples per ray, then write them at offsets from a cumsum), one thread
  per ray. Same step rule and samples as the reference (float32 rounding aside).
- ``nerfacc``: ``nerfacc.traverse_grids`` (CUDA only). Its stepping differs (nerfacc aligns steps to its own rule
  and skips empty cells), so samples are comparable in distribution, not equal to ours.
- ``auto``: cuda for CUDA tensors when the extension builds, else torch; logged once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cuda_ext.build import resolve_backend
from cuda_ext.march import reference

__all__ = ["march"]


def _check(rays_o: Tensor, rays_d: Tensor, near: Tensor, far: Tensor, binary: Tensor | None,
           aabb: Tensor | None) -> None:
    if rays_o.dim() != 2 or rays_o.shape[-1] != 3 or rays_d.shape != rays_o.shape:
        raise ValueError(f"rays_o and rays_d must both be [R, 3], got {tuple(rays_o.shape)}, {tuple(rays_d.shape)}")
    n = rays_o.shape[0]
    if near.shape != (n,) or far.shape != (n,):
        raise ValueError(f"near and far must be [R] = [{n}], got {tuple(near.shape)}, {tuple(far.shape)}")
    if binary is not None and (binary.dim() != 3 or binary.dtype != torch.bool):
        raise ValueError(f"binary must be a [X, Y, Z] bool grid, got {tuple(binary.shape)} {binary.dtype}")
    if aabb is not None and aabb.shape != (6,):
        raise ValueError(f"aabb must be [6], got {tuple(aabb.shape)}")


def march(rays_o: Tensor, rays_d: Tensor, near: Tensor, far: Tensor, binary: Tensor | None, aabb: Tensor | None,
          step_size: float, cone_angle: float = 0.0, max_step_size: float = math.inf, max_steps: int = 1024,
          chunk_steps: int = 64, backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    """Packed samples (ray_indices, t_starts, t_ends); see :func:`cuda_ext.march.reference.march`."""
    _check(rays_o, rays_d, near, far, binary, aabb)
    name, module = resolve_backend("march", backend, rays_o.device.type, extra=("nerfacc",))
    if name == "torch":
        return reference.march(rays_o, rays_d, near, far, binary, aabb, step_size, cone_angle, max_step_size,
                               max_steps, chunk_steps)
    if name == "nerfacc":
        return _march_nerfacc(rays_o, rays_d, near, far, binary, aabb, step_size, cone_angle, max_steps)
    if binary is None:  # the kernel always reads a grid: a 1-cell occupied grid over an unbounded box
        binary = torch.ones(1, 1, 1, dtype=torch.bool, device=rays_o.device)
        aabb = torch.tensor([-math.inf] * 3 + [math.inf] * 3, device=rays_o.device)
    if max_step_size == math.inf:
        max_step_size = 3.0e38  # a float the kernel can clamp with
    dtype = near.dtype
    ray_indices, t_starts, t_ends = module.march_forward(
        rays_o.to(dtype).contiguous(), rays_d.to(dtype).contiguous(), near.contiguous(), far.to(dtype).contiguous(),
        binary.contiguous().view(torch.uint8), aabb.to(dtype).contiguous(), float(step_size), float(cone_angle),
        float(max_step_size), int(max_steps))
    return ray_indices, t_starts, t_ends


def _march_nerfacc(rays_o, rays_d, near, far, binary, aabb, step_size, cone_angle, max_steps):
    if not rays_o.is_cuda:
        raise ValueError("march backend 'nerfacc' needs CUDA tensors (nerfacc.traverse_grids is CUDA-only); use "
                         "backend='torch' on CPU")
    from nerfacc.grid import traverse_grids

    if binary is None:
        raise ValueError("march backend 'nerfacc' needs an occupancy grid")
    hit = torch.isfinite(near)
    intervals, samples, _ = traverse_grids(
        rays_o, rays_d, binary[None], aabb[None].to(rays_o), near_planes=torch.where(hit, near, 0.0),
        far_planes=torch.where(hit, far, 0.0), step_size=step_size, cone_angle=cone_angle,
        traverse_steps_limit=max_steps, rays_mask=hit)
    return samples.ray_indices.long(), intervals.vals[intervals.is_left], intervals.vals[intervals.is_right]
