"""Marching: equals brute-force stepping + filtering by the grid, hand values, layouts, edges."""

from __future__ import annotations

import math

import pytest
import torch

from cuda_ext.march import ops, reference
from synctalk.render.march import march_rays
from synctalk.render.occupancy import OccupancyGrid
from synctalk.render.rays import ray_aabb_intersect

BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def sphere_grid(resolution: int = 8, radius: float = 0.6, dtype=torch.float32) -> OccupancyGrid:
    grid = OccupancyGrid(BOX.to(dtype), resolution=resolution)
    grid.binary.copy_((torch.linalg.norm(grid.cell_centers(), dim=-1) < radius).reshape(grid.resolution))
    return grid


def random_rays(n: int, seed: int = 0, dtype=torch.float64):
    """Rays from a shell around the box towards random points inside it (some graze or miss after jitter)."""
    gen = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=dtype), dim=-1) * 2.5
    targets = (torch.rand(n, 3, generator=gen, dtype=dtype) * 2 - 1) * 1.3
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def brute_force(rays_o, rays_d, near, far, grid, step_size, cone_angle=0.0, max_step_size=math.inf, max_steps=10**9):
    """Every step from near to far, one ray at a time in Python floats, then keep occupied midpoints."""
    ray_ids, starts, ends = [], [], []
    for r in range(rays_o.shape[0]):
        n, f = float(near[r]), float(far[r])
        if not (math.isfinite(n) and math.isfinite(f)):
            continue
        k, t, kept = 0, n, 0
        while t < f and kept < max_steps:
            if cone_angle == 0.0:
                t_next = n + (k + 1) * step_size
            else:
                t_next = t + min(max(t * cone_angle, step_size), max_step_size)
            end = min(t_next, f)
            mid = torch.tensor((t + end) * 0.5, dtype=rays_o.dtype)
            point = rays_o[r] + rays_d[r] * mid
            if grid is None or bool(grid.occupied(point[None])[0]):
                ray_ids.append(r)
                starts.append(t)
                ends.append(end)
                kept += 1
            k, t = k + 1, t_next
    dtype = rays_o.dtype
    return torch.tensor(ray_ids, dtype=torch.long), torch.tensor(starts, dtype=dtype), torch.tensor(ends, dtype=dtype)


@pytest.mark.parametrize(("cone_angle", "max_steps", "chunk_steps"), [(0.0, 10**6, 64), (0.0, 5, 3), (0.05, 10**6, 7),
                                                                       (0.2, 6, 4)])
def test_march_equals_brute_force(cone_angle, max_steps, chunk_steps):
    grid = sphere_grid()
    rays_o, rays_d = random_rays(40)
    near, far, _ = ray_aabb_intersect(rays_o, rays_d, grid.aabb)
    step = 0.037
    got = reference.march(rays_o, rays_d, near, far, grid.binary, grid.aabb, step, cone_angle, 0.15, max_steps,
                          chunk_steps)
    want = brute_force(rays_o, rays_d, near, far, grid, step, cone_angle, 0.15, max_steps)
    assert want[0].numel() > 30  # the grid and rays do produce samples
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)  # same arithmetic in float64: exact


def test_march_hand_values_and_user_api():
    rays_o = torch.tensor([[0.0, 0, -2]])
    rays_d = torch.tensor([[0.0, 0, 1]])
    samples = march_rays(rays_o, rays_d, 0.5, aabb=BOX, backend="torch")
    assert samples.t_starts.tolist() == [1.0, 1.5, 2.0, 2.5] and samples.t_ends.tolist() == [1.5, 2.0, 2.5, 3.0]
    assert samples.counts().tolist() == [4]
    # docstring example of the reference: the last sample is clipped at far
    ids, starts, ends = reference.march(rays_o, rays_d, torch.tensor([0.0]), torch.tensor([1.0]), None, None, 0.3)
    torch.testing.assert_close(ends, torch.tensor([0.3, 0.6, 0.9, 1.0]))


def test_grid_filters_samples():
    grid = OccupancyGrid(BOX, resolution=2)
    grid.binary.zero_()
    grid.binary[:, :, 1] = True  # z > 0 occupied
    samples = march_rays(torch.tensor([[0.5, 0.5, -2]]), torch.tensor([[0.0, 0, 1]]), 0.25, grid=grid,
                         backend="torch")
    assert samples.t_starts.tolist() == [2.0, 2.25, 2.5, 2.75]


def test_padded_layout_helper():
    grid = sphere_grid()
    rays_o, rays_d = random_rays(10, seed=3, dtype=torch.float32)
    samples = march_rays(rays_o, rays_d, 0.05, grid=grid, backend="torch")
    padded, mask = samples.to_padded(samples.t_starts)
    assert mask.shape == (10, int(samples.counts().max()))
    assert torch.equal(mask.sum(1), samples.counts())
    assert torch.equal(padded[mask], samples.t_starts)
    assert torch.all(padded[:, 1:][mask[:, 1:]] > padded[:, :-1][mask[:, 1:]])  # increasing t within a row


def test_edges_empty_missing_and_empty_cells():
    grid = sphere_grid(radius=0.3)
    # empty batch
    empty = march_rays(torch.zeros(0, 3), torch.zeros(0, 3), 0.1, grid=grid, backend="torch")
    assert len(empty) == 0 and empty.n_rays == 0
    # ray 0 misses the box, ray 1 crosses only empty cells (a corner), ray 2 goes through the occupied centre
    rays_o = torch.tensor([[5.0, 5, 5], [0.9, 0.9, -2], [0.0, 0.0, -2]])
    rays_d = torch.tensor([[1.0, 0, 0], [0.0, 0, 1], [0.0, 0, 1]])
    samples = march_rays(rays_o, rays_d, 0.05, grid=grid, backend="torch")
    counts = samples.counts().tolist()
    assert counts[0] == 0 and counts[1] == 0 and counts[2] > 0
    # every ray in empty space: zero samples, well-formed tensors
    grid.binary.zero_()
    none = march_rays(rays_o, rays_d, 0.05, grid=grid, backend="torch")
    assert len(none) == 0 and none.t_starts.dtype == torch.float32 and none.counts().tolist() == [0, 0, 0]
    # max_steps = 0 keeps nothing
    assert len(march_rays(rays_o, rays_d, 0.05, aabb=BOX, max_steps=0, backend="torch")) == 0


def test_bad_inputs():
    rays_o, rays_d = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="near and far"):
        ops.march(rays_o, rays_d, torch.zeros(3), torch.ones(2), None, None, 0.1)
    with pytest.raises(ValueError, match="bool grid"):
        ops.march(rays_o, rays_d, torch.zeros(2), torch.ones(2), torch.ones(2, 2, 2), BOX, 0.1)
    with pytest.raises(ValueError, match="step_size"):
        ops.march(rays_o, rays_d, torch.zeros(2), torch.ones(2), None, None, 0.0, backend="torch")
    with pytest.raises(ValueError, match="needs cuda tensors"):
        ops.march(rays_o, rays_d, torch.zeros(2), torch.ones(2), None, None, 0.1, backend="cuda")
    with pytest.raises(ValueError, match="CUDA-only"):
        ops.march(rays_o, rays_d, torch.zeros(2), torch.ones(2), None, None, 0.1, backend="nerfacc")
