"""Ray marching through an occupancy grid in pure PyTorch: the readable spec of march.cu, any device.

Step rule (identical in march.cu). Ray ``r`` is marched from ``near[r]`` to ``far[r]``:

- fixed step (``cone_angle == 0``): ``t_k = near + k * step_size``;
- growing step (``cone_angle > 0``): ``t_{k+1} = t_k + clamp(t_k * cone_angle, step_size, max_step_size)``, so
  samples are spaced like the pixel footprint far from the camera and no finer than ``step_size`` near it.

Candidate ``k`` covers ``[t_k, min(t_{k+1}, far)]`` and exists while ``t_k < far``. It is kept when its midpoint
lies in an occupied cell (no grid = every point inside the box is occupied). At most ``max_steps`` samples are kept
per ray (the first ones). Empty cells are stepped through, not skipped, so the samples equal brute-force sampling
followed by filtering (tests/render/test_march.py checks exactly that).

Worked example: near = 0, far = 1, step_size = 0.3, no grid → samples [0, 0.3], [0.3, 0.6], [0.6, 0.9], [0.9, 1].

Outputs are packed (nerfacc layout): ``ray_indices [S]`` (non-decreasing), ``t_starts [S]``, ``t_ends [S]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def grid_lookup(binary: Tensor, aabb: Tensor, points: Tensor) -> Tensor:
    """Occupancy of ``points`` [..., 3] in a bool grid [X, Y, Z] spanning ``aabb`` [6] → bool [...].

    Cell ``(i, j, k)`` covers ``lo + (i, j, k) * cell_size`` to ``lo + (i+1, j+1, k+1) * cell_size``; points on the
    upper box face belong to the last cell; points outside the box are empty.
    """
    lo, hi = aabb[:3].to(points), aabb[3:].to(points)
    res = torch.tensor(binary.shape, device=points.device)
    inside = ((points >= lo) & (points <= hi)).all(-1)
    cells = torch.floor((points - lo) / (hi - lo) * res).long()
    cells = torch.minimum(cells.clamp_min(0), res - 1)
    flat = (cells[..., 0] * res[1] + cells[..., 1]) * res[2] + cells[..., 2]
    return inside & binary.reshape(-1)[flat]


class MarchState:
    """Chunked marcher: ``next_chunk()`` walks every active ray ``chunk_steps`` candidate steps further.

    Used by :func:`march` (walk until every ray is done) and by early-terminating renderers, which call
    ``stop(ray_ids)`` between chunks for rays that are already opaque. Args as in :func:`march`.
    """

    def __init__(self, rays_o: Tensor, rays_d: Tensor, near: Tensor, far: Tensor, binary: Tensor | None,
                 aabb: Tensor | None, step_size: float, cone_angle: float = 0.0, max_step_size: float = math.inf,
                 max_steps: int = 1024, chunk_steps: int = 64):
        if step_size <= 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if cone_angle < 0 or max_step_size < step_size:
            raise ValueError(f"need cone_angle >= 0 and max_step_size >= step_size, got {cone_angle}, "
                             f"{max_step_size} < {step_size}")
        if chunk_steps < 1 or max_steps < 0:
            raise ValueError(f"need chunk_steps >= 1 and max_steps >= 0, got {chunk_steps}, {max_steps}")
        if binary is not None and aabb is None:
            raise ValueError("an occupancy grid needs its aabb")
        self.rays_o, self.rays_d, self.near, self.far = rays_o, rays_d, near, far
        self.binary, self.aabb = binary, aabb
        self.step_size, self.cone_angle, self.max_step_size = step_size, cone_angle, max_step_size
        self.max_steps, self.chunk_steps = max_steps, chunk_steps
        n_rays = near.shape[0]
        self.steps = torch.zeros(n_rays, dtype=torch.long, device=near.device)  # candidates walked (fixed step)
        self.t = near.clone()  # next candidate's start
        self.kept = torch.zeros(n_rays, dtype=torch.long, device=near.device)
        finite = torch.isfinite(near) & torch.isfinite(far)
        self.active = torch.nonzero(finite & (near < far) & (max_steps > 0), as_tuple=True)[0]  # [A] ray ids

    def done(self) -> bool:
        return self.active.numel() == 0

    def stop(self, ray_ids: Tensor) -> None:
        """Stop marching these rays (e.g. transmittance below a threshold)."""
        self.active = self.active[~torch.isin(self.active, ray_ids)]

    def _candidates(self, rays: Tensor) -> tuple[Tensor, Tensor]:
        """[A, K] starts and unclipped ends of the next K candidates of ``rays``; advances the state."""
        k = self.chunk_steps
        if self.cone_angle == 0.0:
            index = self.steps[rays, None] + torch.arange(k + 1, device=rays.device)  # [A, K+1]
            edges = self.near[rays, None] + index.to(self.near.dtype) * self.step_size
            self.steps[rays] += k
        else:
            columns = [self.t[rays]]
            for _ in range(k):  # a loop over steps (not rays): the recurrence is sequential in t
                t = columns[-1]
                columns.append(t + torch.clamp(t * self.cone_angle, self.step_size, self.max_step_size))
            edges = torch.stack(columns, dim=-1)
        self.t[rays] = edges[:, -1]
        return edges[:, :-1], edges[:, 1:]

    def next_chunk(self) -> tuple[Tensor, Tensor, Tensor]:
        """Kept samples of the next chunk: ray_indices [s], t_starts [s], t_ends [s], grouped by ray in t order."""
        rays = self.active
        starts, ends = self._candidates(rays)  # [A, K]
        far = self.far[rays, None]
        ends = torch.minimum(ends, far)
        valid = (starts < far) & (ends > starts)  # ends == starts only if a step is below float resolution
        if self.binary is None:
            keep = valid
        else:
            mids = self.rays_o[rays, None] + self.rays_d[rays, None] * ((starts + ends) * 0.5)[..., None]
            keep = valid & grid_lookup(self.binary, self.aabb, mids)
        # cap kept samples per ray at max_steps (the first ones along t)
        keep &= (self.kept[rays, None] + torch.cumsum(keep, dim=1)) <= self.max_steps
        self.kept[rays] += keep.sum(1)
        progressed = self.t[rays] > starts[:, 0] if starts.shape[1] else torch.zeros_like(rays, dtype=torch.bool)
        alive = (self.t[rays] < self.far[rays]) & (self.kept[rays] < self.max_steps) & progressed
        self.active = rays[alive]
        row, _ = torch.nonzero(keep, as_tuple=True)
        return rays[row], starts[keep], ends[keep]


def march(rays_o: Tensor, rays_d: Tensor, near: Tensor, far: Tensor, binary: Tensor | None, aabb: Tensor | None,
          step_size: float, cone_angle: float = 0.0, max_step_size: float = math.inf, max_steps: int = 1024,
          chunk_steps: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Packed samples along rays, kept where the occupancy grid is occupied.

    Args:
        rays_o, rays_d: [R, 3] origins and directions; t is in units of |rays_d| (use unit directions for the cone
            rule to mean "pixel footprint").
        near, far: [R] interval to march (from ray_aabb_intersect: ``inf`` for rays that miss → no samples).
        binary: [X, Y, Z] bool occupancy over ``aabb`` [6], or None (sample everywhere between near and far).
        step_size: fixed step, or the smallest step when ``cone_angle > 0``.
        cone_angle: step growth ``dt = clamp(t * cone_angle, step_size, max_step_size)``; 0 = fixed step.
        max_steps: most samples kept per ray.
        chunk_steps: candidates walked per ray per vectorised iteration (memory vs Python overhead only).

    Returns:
        ray_indices [S] int64 (non-decreasing), t_starts [S], t_ends [S] (dtype of near).
    """
    state = MarchState(rays_o, rays_d, near, far, binary, aabb, step_size, cone_angle, max_step_size, max_steps,
                       chunk_steps)
    chunks = []
    while not state.done():
        chunks.append(state.next_chunk())
    if not chunks:
        empty = near.new_zeros(0)
        return torch.zeros(0, dtype=torch.long, device=near.device), empty, empty.clone()
    ray_indices, t_starts, t_ends = (torch.cat(parts) for parts in zip(*chunks, strict=True))
    # chunks come step-major; a stable sort by ray keeps each ray's samples in t order
    order = torch.sort(ray_indices, stable=True).indices
    return ray_indices[order], t_starts[order], t_ends[order]
