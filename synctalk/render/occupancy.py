"""Occupancy grid: which cells of the scene box may hold density, so marching can skip empty space.

Instant-NGP / nerfacc style. Each cell keeps a running density estimate::

    density[c] <- max(decay * density[c], density_fn(random point in cell c))

for the cells visited by an update, and the bool grid is ``binary = density > min(threshold, mean(density))``.
The ``min(.., mean)`` keeps a young, still faint field from being culled entirely (Instant-NGP's rule).
Updates run every ``update_every`` steps; during the first ``warmup_steps`` every cell is visited, afterwards a
random quarter of all cells plus a random quarter drawn from the occupied ones (so occupied cells, which matter for
quality, are refreshed twice as often and shrinking objects are noticed).

Before the first update every cell is occupied, so an untrained field is sampled everywhere.
Thresholds are in density units (1 / world units): with step 0.005 a density of 0.01 means a sample opacity of
5e-5, i.e. invisible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cuda_ext.march.reference import grid_lookup

__all__ = ["OccupancyGrid"]


class OccupancyGrid(nn.Module):
    """A ``[X, Y, Z]`` grid over ``aabb`` with EMA densities (``density``) and a bool ``binary`` (both buffers).

    Args:
        aabb: [6] ``(xmin, ymin, zmin, xmax, ymax, zmax)`` in world units.
        resolution: cells per axis (int or 3 ints); 128 gives 2 M cells, 8 MB of densities, 2 MB of bools.
        decay: EMA decay per update (0.95: a cell that empties fades below 1/20 of its value after ~60 updates).
        threshold: density above which a cell is occupied (capped by the grid's mean density).
        warmup_steps: steps during which updates visit every cell.
        update_every: update period in training steps.

    Example::

        grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=64)
        for step in range(n_steps):
            grid.update(step, lambda x: field.density(x))   # no-op except every 16th step
            ... march(rays, grid=grid) ...
    """

    density: Tensor
    binary: Tensor
    aabb: Tensor

    def __init__(self, aabb: Tensor | list[float], resolution: int | tuple[int, int, int] = 128, decay: float = 0.95,
                 threshold: float = 0.01, warmup_steps: int = 256, update_every: int = 16):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (6,) or not bool((aabb[3:] > aabb[:3]).all()):
            raise ValueError(f"aabb must be [6] (min xyz, max xyz) with max > min, got {aabb.tolist()}")
        res = (resolution,) * 3 if isinstance(resolution, int) else tuple(resolution)
        if len(res) != 3 or min(res) < 1:
            raise ValueError(f"resolution must be a positive int or 3 of them, got {resolution}")
        self.decay, self.threshold = decay, threshold
        self.warmup_steps, self.update_every = warmup_steps, update_every
        self.register_buffer("aabb", aabb)
        self.register_buffer("density", torch.zeros(res))
        self.register_buffer("binary", torch.ones(res, dtype=torch.bool))

    @property
    def resolution(self) -> tuple[int, int, int]:
        return tuple(self.density.shape)

    @property
    def n_cells(self) -> int:
        return self.density.numel()

    def cell_centers(self, flat_indices: Tensor | None = None) -> Tensor:
        """World-space centres of the given cells (flat indices, default all) → [N, 3]."""
        return self._points_in_cells(flat_indices, jitter=None)

    def _points_in_cells(self, flat_indices: Tensor | None, jitter: Tensor | None) -> Tensor:
        device = self.density.device
        if flat_indices is None:
            flat_indices = torch.arange(self.n_cells, device=device)
        res_x, res_y, res_z = self.resolution
        ijk = torch.stack([flat_indices // (res_y * res_z), (flat_indices // res_z) % res_y, flat_indices % res_z],
                          dim=-1).to(self.aabb.dtype)
        offsets = jitter if jitter is not None else torch.full_like(ijk, 0.5)
        res = torch.tensor(self.resolution, dtype=self.aabb.dtype, device=device)
        return self.aabb[:3] + (ijk + offsets) / res * (self.aabb[3:] - self.aabb[:3])

    def occupied(self, points: Tensor) -> Tensor:
        """bool [...] for points [..., 3]; points outside the box are empty."""
        return grid_lookup(self.binary, self.aabb, points)

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator | None = None,
               chunk: int = 1 << 18) -> bool:
        """Refresh densities (every ``update_every`` steps) and the bool grid. Returns whether it ran.

        Args:
            step: the training step.
            density_fn: points [N, 3] → density [N] or [N, 1], world units, evaluated without gradients in
                chunks of ``chunk`` points.
            generator: for reproducible cell choice and jitter (on the grid's device).
        """
        if step % self.update_every != 0:
            return False
        device = self.density.device
        flat = self.density.view(-1)
        if step < self.warmup_steps:
            indices = torch.arange(self.n_cells, device=device)
        else:
            quarter = max(self.n_cells // 4, 1)
            uniform = torch.randint(0, self.n_cells, (quarter,), device=device, generator=generator)
            occupied = torch.nonzero(self.binary.view(-1), as_tuple=True)[0]
            if occupied.numel():
                pick = torch.randint(0, occupied.numel(), (quarter,), device=device, generator=generator)
                indices = torch.cat([uniform, occupied[pick]])
            else:
                indices = uniform
        jitter = torch.rand(indices.shape[0], 3, device=device, generator=generator, dtype=self.aabb.dtype)
        points = self._points_in_cells(indices, jitter)
        values = torch.cat([density_fn(part).reshape(-1).to(flat.dtype) for part in points.split(chunk)])
        if values.shape[0] != indices.shape[0]:
            raise ValueError(f"density_fn returned {values.shape[0]} values for {indices.shape[0]} points; it must "
                             f"return [N] or [N, 1]")
        updated = flat.clone()
        updated[indices] = flat[indices] * self.decay
        # duplicates among the random cells: amax keeps the result independent of write order
        updated.scatter_reduce_(0, indices, values, reduce="amax")
        flat.copy_(updated)
        self.binary.copy_(self.density > min(self.threshold, self.density.mean().item()))
        return True

    def occupancy_fraction(self) -> float:
        return self.binary.float().mean().item()

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, aabb={self.aabb.tolist()}, decay={self.decay}, " \
               f"threshold={self.threshold}"
