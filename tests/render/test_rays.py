"""Camera rays (OpenCV convention, pixel centres) and the slab ray/box intersection."""

from __future__ import annotations

import math

import pytest
import torch

from synctalk.render.rays import generate_rays, pixel_grid, ray_aabb_intersect

UNIT_BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def test_pixel_centres_and_axes():
    K = torch.tensor([[2.0, 0, 1.0], [0, 2.0, 1.0], [0, 0, 1]])
    c2w = torch.eye(4)
    rays_o, rays_d = generate_rays(c2w, K, height=2, width=2, normalize=False)
    # row-major: (u, v) = (0, 0), (1, 0), (0, 1), (1, 1); d = ((u + 0.5 - 1) / 2, (v + 0.5 - 1) / 2, 1)
    expected = torch.tensor([[-0.25, -0.25, 1], [0.25, -0.25, 1], [-0.25, 0.25, 1], [0.25, 0.25, 1]])
    torch.testing.assert_close(rays_d, expected)
    assert torch.all(rays_o == 0)


def test_camera_pose_rotates_and_translates():
    # camera at (1, 2, 3) looking along world -x: camera z -> world -x, camera x -> world +z, camera y -> world -y
    rotation = torch.tensor([[0.0, 0, -1], [0, -1, 0], [1, 0, 0]])
    c2w = torch.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, torch.tensor([1.0, 2, 3])
    K = torch.tensor([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    rays_o, rays_d = generate_rays(c2w, K, pixels=torch.tensor([[4.5, 4.5], [9.5, 4.5]]))
    torch.testing.assert_close(rays_d[0], torch.tensor([-1.0, 0, 0]))  # the principal point looks along -x
    assert rays_d[1, 2] > 0  # a pixel to the right (camera +x) leans to world +z
    torch.testing.assert_close(rays_o, torch.tensor([[1.0, 2, 3]] * 2))
    torch.testing.assert_close(torch.linalg.norm(rays_d, dim=-1), torch.ones(2))


def test_batched_poses_match_single():
    K = torch.tensor([[3.0, 0, 2], [0, 3.0, 1.5], [0, 0, 1]])
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.1, 0.2, 0.3])
    pixels = pixel_grid(3, 4)
    single = generate_rays(c2w, K, pixels=pixels)
    batched = generate_rays(c2w.expand(12, 4, 4), K.expand(12, 3, 3), pixels=pixels)
    for a, b in zip(single, batched, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_shapes():
    with pytest.raises(ValueError, match="or both height and width"):
        generate_rays(torch.eye(4), torch.eye(3))
    with pytest.raises(ValueError, match="c2w"):
        generate_rays(torch.eye(3), torch.eye(3), height=2, width=2)


def test_aabb_hand_values():
    rays_o = torch.tensor([[0.0, 0, -2], [0.0, 0, 0], [3.0, 3, -2], [0.5, 0.5, -2], [2.0, 0, 0], [0.0, 0, 2]])
    rays_d = torch.tensor([[0.0, 0, 1], [1.0, 0, 0], [0.0, 0, 1], [0.0, 0, 2], [0.0, 1, 0], [0.0, 0, 1]])
    near, far, hit = ray_aabb_intersect(rays_o, rays_d, UNIT_BOX)
    assert hit.tolist() == [True, True, False, True, False, False]
    assert near[:2].tolist() == [1.0, 0.0] and far[:2].tolist() == [3.0, 1.0]  # an inside origin starts at 0
    assert near[3].item() == 0.5 and far[3].item() == 1.5  # t in units of |d| = 2
    assert all(math.isinf(v) for v in near[[2, 4, 5]].tolist() + far[[2, 4, 5]].tolist())


def test_aabb_matches_dense_sampling():
    """Random rays: points strictly between near and far are inside the box; just outside, they are not."""
    gen = torch.Generator().manual_seed(0)
    rays_o = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 2
    rays_d = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen, dtype=torch.float64), dim=-1)
    near, far, hit = ray_aabb_intersect(rays_o, rays_d, UNIT_BOX.double())
    t = torch.linspace(0, 8, 4001, dtype=torch.float64)
    points = rays_o[:, None] + rays_d[:, None] * t[None, :, None]
    inside = (points.abs() <= 1).all(-1)
    tolerance = 2 * 8 / 4000
    for r in range(500):
        ts = t[inside[r]]
        if ts.numel() == 0:
            continue  # a ray may graze the box between two dense samples; near/far still valid then
        assert hit[r]
        assert abs(ts.min().item() - near[r].item()) <= tolerance and abs(ts.max().item() - far[r].item()) <= tolerance


def test_near_plane_clamps_and_can_miss():
    rays_o = torch.tensor([[0.0, 0, -2], [0.0, 0, -2]])
    rays_d = torch.tensor([[0.0, 0, 1], [0.0, 0, 1]])
    near, far, hit = ray_aabb_intersect(rays_o, rays_d, UNIT_BOX, near_plane=2.5)
    assert near.tolist() == [2.5, 2.5] and far.tolist() == [3.0, 3.0]
    near, far, hit = ray_aabb_intersect(rays_o, rays_d, UNIT_BOX, near_plane=3.5)
    assert not hit.any() and torch.isinf(near).all()


def test_empty_batch():
    near, far, hit = ray_aabb_intersect(torch.zeros(0, 3), torch.zeros(0, 3), UNIT_BOX)
    assert near.shape == far.shape == hit.shape == (0,)
