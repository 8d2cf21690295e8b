"""Occupancy grid: lookup hand values, EMA update rule, warmup vs subset updates, state_dict."""

from __future__ import annotations

import pytest
import torch

from synctalk.render.occupancy import OccupancyGrid

BOX = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]


def cell_value_fn(grid: OccupancyGrid, scale: float = 1.0):
    """A density that is constant inside each cell: i + 2j + 3k (so jittered points see the cell's value)."""
    res = torch.tensor(grid.resolution)

    def fn(points):
        ijk = torch.floor((points + 1) / 2 * res).long().clamp(max=res - 1)
        return scale * (ijk[:, 0] + 2 * ijk[:, 1] + 3 * ijk[:, 2]).float()

    return fn


def test_lookup_hand_values():
    grid = OccupancyGrid(BOX, resolution=2)
    grid.binary.zero_()
    grid.binary[1, 0, 1] = True  # x > 0, y < 0, z > 0
    points = torch.tensor([[0.5, -0.5, 0.5], [-0.5, -0.5, 0.5], [1.0, -1.0, 1.0], [1.01, -0.5, 0.5],
                           [0.0, -0.5, 0.5], [0.5, 0.0, 0.5]])
    # upper face belongs to the last cell; a coordinate on a cell border belongs to the upper cell
    assert grid.occupied(points).tolist() == [True, False, True, False, True, False]
    assert grid.occupied(points.reshape(2, 3, 3)).shape == (2, 3)


def test_warmup_update_visits_every_cell_with_ema():
    grid = OccupancyGrid(BOX, resolution=4, decay=0.9, threshold=5.0, warmup_steps=100, update_every=1)
    assert grid.binary.all()  # before any update, everything is sampled
    gen = torch.Generator().manual_seed(0)
    assert grid.update(0, cell_value_fn(grid), generator=gen)
    i, j, k = torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij")
    values = (i + 2 * j + 3 * k).float()
    torch.testing.assert_close(grid.density, values)
    # a dimmer field: every cell decays (max(0.9 v, 0.5 v) = 0.9 v)
    grid.update(1, cell_value_fn(grid, 0.5), generator=gen)
    torch.testing.assert_close(grid.density, 0.9 * values)
    # a brighter field: the new value wins
    grid.update(2, cell_value_fn(grid, 2.0), generator=gen)
    torch.testing.assert_close(grid.density, 2.0 * values)
    # threshold = min(5, mean) = 5 here (mean = 2 * 9 = 18)
    assert torch.equal(grid.binary, grid.density > 5.0)


def test_threshold_capped_by_mean():
    grid = OccupancyGrid(BOX, resolution=4, threshold=100.0, update_every=1)
    grid.update(0, cell_value_fn(grid))
    assert torch.equal(grid.binary, grid.density > grid.density.mean())
    grid.update(1, lambda p: torch.zeros(p.shape[0], 1))  # [N, 1] outputs are accepted
    grid.density.zero_()
    grid.update(2, lambda p: torch.zeros(p.shape[0]))
    assert not grid.binary.any()  # an empty field marks nothing


def test_after_warmup_only_a_subset_changes():
    grid = OccupancyGrid(BOX, resolution=8, decay=0.5, warmup_steps=1, update_every=4)
    gen = torch.Generator().manual_seed(1)
    grid.update(0, lambda p: torch.ones(p.shape[0]), generator=gen)
    assert torch.all(grid.density == 1)
    assert not grid.update(5, lambda p: torch.zeros(p.shape[0]))  # not an update step
    assert grid.update(8, lambda p: torch.zeros(p.shape[0]), generator=gen)
    changed = grid.density == 0.5
    # a quarter uniform + a quarter of occupied cells, with repeats: between 1/4 and 1/2 of the cells
    assert grid.n_cells // 8 < changed.sum().item() <= grid.n_cells // 2
    assert torch.all(grid.density[~changed] == 1)


def test_state_dict_roundtrip():
    grid = OccupancyGrid(BOX, resolution=(4, 5, 6))
    grid.update(0, cell_value_fn(grid))
    other = OccupancyGrid(BOX, resolution=(4, 5, 6))
    other.load_state_dict(grid.state_dict())
    assert torch.equal(other.density, grid.density) and torch.equal(other.binary, grid.binary)
    assert set(grid.state_dict()) == {"aabb", "density", "binary"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="aabb"):
        OccupancyGrid([1.0, 1, 1, -1, -1, -1])
    with pytest.raises(ValueError, match="resolution"):
        OccupancyGrid(BOX, resolution=(4, 4))
    grid = OccupancyGrid(BOX, resolution=2, update_every=1)
    with pytest.raises(ValueError, match="density_fn returned"):
        grid.update(0, lambda p: torch.zeros(3))
