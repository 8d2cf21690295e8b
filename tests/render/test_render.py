"""March + field + composite: closed form through a constant-density box, early termination, backends agree."""

from __future__ import annotations

import math

import pytest
import torch

from synctalk.render import OccupancyGrid, march_rays, render_rays
from synctalk.render.rays import ray_aabb_intersect

BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def constant_field(sigma: float, color: tuple[float, float, float]):
    def fn(points, dirs, ray_indices):
        return torch.full((points.shape[0],), sigma, dtype=points.dtype), \
            torch.tensor(color, dtype=points.dtype).expand(points.shape[0], 3)

    return fn


def blob_field(points, dirs, ray_indices):
    """Dense Gaussian blob with a position-dependent colour (to make early termination matter)."""
    radius2 = (points ** 2).sum(-1)
    sigmas = 40.0 * torch.exp(-radius2 / 0.1)
    rgbs = torch.sigmoid(torch.stack([points[:, 0] * 3, points[:, 1] * 3, dirs[:, 2]], dim=-1))
    return sigmas, rgbs


def test_constant_density_box_closed_form():
    """Piecewise-constant density is integrated exactly, whatever the step: opacity = 1 - exp(-sigma * chord)."""
    gen = torch.Generator().manual_seed(0)
    rays_o = torch.randn(30, 3, generator=gen, dtype=torch.float64) * 0.3 + torch.tensor([0, 0, -3.0],
                                                                                        dtype=torch.float64)
    rays_d = torch.nn.functional.normalize(torch.tensor([0, 0, 1.0], dtype=torch.float64)
                                           + 0.2 * torch.randn(30, 3, generator=gen, dtype=torch.float64), dim=-1)
    sigma, color, bg = 0.8, (0.9, 0.2, 0.4), torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    out = render_rays(rays_o, rays_d, constant_field(sigma, color), step_size=0.07, aabb=BOX.double(), background=bg,
                      backend="torch")
    near, far, hit = ray_aabb_intersect(rays_o, rays_d, BOX.double())
    chord = torch.where(hit, far - near, torch.zeros_like(far))
    opacity = 1 - torch.exp(-sigma * chord)
    torch.testing.assert_close(out.opacities, opacity, rtol=1e-12, atol=1e-12)
    expected = opacity[:, None] * torch.tensor(color, dtype=torch.float64) + (1 - opacity)[:, None] * bg
    torch.testing.assert_close(out.colors, expected, rtol=1e-12, atol=1e-12)
    # depth of a constant-density slab [a, b]: a + 1/s - (b + 1/s) e^{-s (b - a)}, to O(step^2)
    a, b = near[hit], far[hit]
    depth = a + 1 / sigma - (b + 1 / sigma) * torch.exp(-sigma * (b - a))
    torch.testing.assert_close(out.depths[hit], depth, rtol=0, atol=2e-3)


@pytest.mark.parametrize("cone_angle", [0.0, 0.02])
def test_early_termination_matches_full_render(cone_angle):
    grid = OccupancyGrid(BOX, resolution=16, update_every=1)
    grid.update(0, lambda p: blob_field(p, p, None)[0])
    assert 0.01 < grid.occupancy_fraction() < 0.9
    gen = torch.Generator().manual_seed(1)
    origins = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen), dim=-1) * 2.5
    rays_d = torch.nn.functional.normalize(torch.rand(64, 3, generator=gen) * 0.8 - 0.4 - origins, dim=-1)
    bg = torch.tensor([1.0, 1.0, 1.0])
    full = render_rays(origins, rays_d, blob_field, 0.01, grid=grid, cone_angle=cone_angle, background=bg,
                       backend="torch")
    early = render_rays(origins, rays_d, blob_field, 0.01, grid=grid, cone_angle=cone_angle, background=bg,
                        early_stop_eps=1e-4, chunk_steps=8, backend="torch")
    assert full.opacities.max() > 0.999  # some rays are opaque, so termination actually happens ...
    assert early.n_samples < 0.9 * full.n_samples  # ... and saves work
    # the skipped tail carries at most eps of the colour
    torch.testing.assert_close(early.colors, full.colors, rtol=0, atol=1e-3)
    torch.testing.assert_close(early.opacities, full.opacities, rtol=0, atol=1e-3)
    # with eps = 0 via a tiny value, chunked rendering is the same sum regrouped
    exact = render_rays(origins, rays_d, blob_field, 0.01, grid=grid, cone_angle=cone_angle, background=bg,
                        early_stop_eps=1e-30, chunk_steps=8, backend="torch")
    assert exact.n_samples == full.n_samples
    torch.testing.assert_close(exact.colors, full.colors, rtol=1e-5, atol=1e-6)


def test_render_nerfacc_backend_matches_torch():
    grid = OccupancyGrid(BOX, resolution=8, update_every=1)
    grid.update(0, lambda p: blob_field(p, p, None)[0])
    rays_o = torch.tensor([[0.0, 0.0, -2.0], [0.1, 0.2, -2.0], [3.0, 3.0, -2.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0]] * 3)
    samples = march_rays(rays_o, rays_d, 0.02, grid=grid, backend="torch")
    points = samples.positions(rays_o, rays_d)
    sigmas, rgbs = blob_field(points, rays_d[samples.ray_indices], samples.ray_indices)
    from synctalk.render import composite_samples

    a = composite_samples(samples, sigmas, rgbs, background=0.5, backend="torch")
    b = composite_samples(samples, sigmas, rgbs, background=0.5, backend="nerfacc")
    torch.testing.assert_close(a.colors, b.colors, rtol=1e-5, atol=1e-6)
    assert a.opacities[2].item() == 0.0 and a.colors[2].tolist() == [0.5, 0.5, 0.5]  # the missing ray


def test_render_edges():
    field = constant_field(1.0, (1.0, 0.0, 0.0))
    # empty batch
    out = render_rays(torch.zeros(0, 3), torch.zeros(0, 3), field, 0.1, aabb=BOX, backend="torch")
    assert out.colors.shape == (0, 3) and out.n_samples == 0
    # all rays miss: background only, both render paths
    rays_o, rays_d = torch.tensor([[5.0, 5, 5]]), torch.tensor([[1.0, 0, 0]])
    for eps in (0.0, 1e-4):
        out = render_rays(rays_o, rays_d, field, 0.1, aabb=BOX, background=torch.tensor([0.0, 0.0, 1.0]),
                          early_stop_eps=eps, backend="torch")
        assert out.colors.tolist() == [[0.0, 0.0, 1.0]] and out.opacities.tolist() == [0.0]


def test_gradients_flow_to_the_field():
    weight = torch.tensor(2.0, requires_grad=True)

    def field(points, dirs, ray_indices):
        return weight * torch.ones(points.shape[0]), torch.ones(points.shape[0], 3) * 0.5

    out = render_rays(torch.tensor([[0.0, 0, -2]]), torch.tensor([[0.0, 0, 1]]), field, 0.1, aabb=BOX,
                      backend="torch")
    out.opacities.sum().backward()
    # opacity = 1 - exp(-w * 2): d/dw = 2 exp(-2 w)
    assert weight.grad.item() == pytest.approx(2 * math.exp(-4.0), rel=1e-5)
