"""The dense Gaussian-splatting reference against a per-pixel loop in float64, the EWA projection against the
pinhole map's own Jacobian, autograd against finite differences, and the edge cases the tile rasterizers must
match (behind the camera, degenerate and huge covariances, off screen, many Gaussians on one pixel)."""

from __future__ import annotations

import math

import pytest
import torch

from cuda_ext.rasterize import reference as ref

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def camera(width=10, height=8, dtype=torch.float64, device="cpu"):
    """A camera 4 units in front of the origin looking at it (OpenCV axes), and its intrinsics."""
    viewmat = torch.eye(4, dtype=dtype, device=device)
    viewmat[2, 3] = 4.0
    K = torch.tensor([[12.0, 0, width / 2], [0, 11.0, height / 2], [0, 0, 1]], dtype=dtype, device=device)
    return viewmat, K


def random_scene(n, seed=0, dtype=torch.float64, device="cpu", spread=0.8):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 2 * spread
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.25 * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return [t.to(device) for t in (means, quats, scales, opacities, colors)]


def loop_rasterize(means2d, conics, depths, valid, radii, colors, opacities, width, height, background):
    """Per pixel, per Gaussian in depth order: the compositing rule written as plainly as possible."""
    order = sorted((float(depths[i]), i) for i in range(len(depths)) if bool(valid[i]))
    image = torch.zeros(height, width, colors.shape[1], dtype=torch.float64)
    alpha_out = torch.zeros(height, width, dtype=torch.float64)
    for row in range(height):
        for col in range(width):
            px, py = col + 0.5, row + 0.5
            T, rgb = 1.0, torch.zeros(colors.shape[1], dtype=torch.float64)
            for _, i in order:
                dx, dy = px - float(means2d[i, 0]), py - float(means2d[i, 1])
                if abs(dx) > radii[i][0] or abs(dy) > radii[i][1]:
                    continue
                a, b, c = (float(v) for v in conics[i])
                power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
                alpha = min(ref.ALPHA_MAX, float(opacities[i]) * math.exp(min(power, 0.0)))
                if alpha < ref.ALPHA_MIN:
                    continue
                if T * (1 - alpha) < ref.T_MIN:
                    break
                rgb += alpha * T * colors[i].double().cpu()
                T *= 1 - alpha
            image[row, col] = rgb + T * background
            alpha_out[row, col] = 1 - T
    return image, alpha_out


@pytest.mark.parametrize("device", DEVICES)
def test_the_dense_reference_equals_a_per_pixel_loop(device):
    viewmat, K = camera(device=device)
    means, quats, scales, opacities, colors = random_scene(14, device=device)
    background = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64, device=device)
    image, alpha, p = ref.render(means, quats, scales, opacities, colors, viewmat, K, 10, 8, background)
    want_image, want_alpha = loop_rasterize(p.means2d.cpu(), p.conics.cpu(), p.depths.cpu(), p.valid.cpu(),
                                            p.radii.cpu().tolist(), colors.cpu(), opacities.cpu(), 10, 8,
                                            background.cpu())
    torch.testing.assert_close(image.cpu(), want_image, rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha.cpu(), want_alpha, rtol=0, atol=1e-12)
    assert alpha.max() > 0.5  # the scene covers the image: the comparison is not of two empty images


def test_the_projection_is_the_pinhole_map_and_its_jacobian():
    """μ' = π(t) and Σ' = J W Σ Wᵀ Jᵀ + 0.3 I with J the Jacobian of π at t, from autograd (on-screen centres)."""
    viewmat, K = camera()
    angle = 0.3
    viewmat[:3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                    [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
    means, quats, scales, _, _ = random_scene(6, seed=1, spread=0.3)
    covars = ref.covariance(quats, scales)
    p = ref.project(means, covars, viewmat, K, 10, 8)
    assert p.valid.all()

    def pinhole(t):
        return torch.stack([K[0, 0] * t[0] / t[2] + K[0, 2], K[1, 1] * t[1] / t[2] + K[1, 2]])

    for i in range(len(means)):
        t = viewmat[:3, :3] @ means[i] + viewmat[:3, 3]
        torch.testing.assert_close(p.means2d[i], pinhole(t))
        J = torch.autograd.functional.jacobian(pinhole, t)
        W = viewmat[:3, :3]
        cov2d = J @ W @ covars[i] @ W.T @ J.T + ref.EPS_2D * torch.eye(2, dtype=torch.float64)
        conic = torch.linalg.inv(cov2d)
        torch.testing.assert_close(p.conics[i], torch.stack([conic[0, 0], conic[0, 1], conic[1, 1]]))
        assert p.radii[i].tolist() == [math.ceil(3.33 * math.sqrt(cov2d[k, k])) for k in (0, 1)]
    # covariance() is R S Sᵀ Rᵀ with R a rotation
    R = ref.quat_to_rotmat(quats)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(6, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(6, dtype=torch.float64))


def test_autograd_matches_finite_differences():
    viewmat, K = camera(6, 5)
    means, quats, scales, opacities, colors = random_scene(3, seed=2, spread=0.4)
    background = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)

    def image(means, quats, scales, opacities, colors):
        return ref.render(means, quats, scales, opacities, colors, viewmat, K, 6, 5, background)[0]

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors))
    assert torch.autograd.gradcheck(image, inputs, eps=1e-6, atol=1e-5)


def test_gaussians_behind_the_camera_or_past_far_are_dropped():
    viewmat, K = camera()
    means, quats, scales, opacities, colors = random_scene(5, seed=3)
    behind = torch.tensor([[0.0, 0.0, -4.5], [0.1, 0.0, -6.0]], dtype=torch.float64)  # camera at z = -4
    all_means = torch.cat([means, behind])
    all_quats = torch.cat([quats, quats[:2]])
    all_scales = torch.cat([scales, scales[:2]])
    image, alpha, p = ref.render(all_means, all_quats, all_scales, torch.cat([opacities, opacities[:2]]),
                                 torch.cat([colors, colors[:2]]), viewmat, K, 10, 8)
    assert p.valid.tolist() == [True] * 5 + [False] * 2 and p.radii[5:].tolist() == [[0, 0]] * 2
    want, _, _ = ref.render(means, quats, scales, opacities, colors, viewmat, K, 10, 8)
    torch.testing.assert_close(image, want, rtol=0, atol=0)
    far_image, _, far = ref.render(means, quats, scales, opacities, colors, viewmat, K, 10, 8, far=4.0)
    assert far.valid.tolist() == (far.depths > 0).tolist() and (far.depths < 4.0).all()


def test_degenerate_huge_and_off_screen_gaussians_stay_finite():
    viewmat, K = camera()
    means = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [50.0, 0.0, 1.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 4, dtype=torch.float64)
    scales = torch.tensor([[0.0, 0.0, 0.0], [1e-9, 0.3, 1e-9], [0.05, 0.05, 0.05], [1e3, 1e3, 1e3]],
                          dtype=torch.float64)
    opacities = torch.tensor([0.9, 0.9, 0.9, 0.5], dtype=torch.float64)
    colors = torch.eye(4, 3, dtype=torch.float64)
    p = ref.project(means, ref.covariance(quats, scales), viewmat, K, 10, 8)
    assert torch.isfinite(p.conics).all() and p.valid.all()
    # a point (zero covariance) is the 0.3 px² low-pass filter: about one pixel
    torch.testing.assert_close(p.conics[0], torch.tensor([1 / 0.3, 0, 1 / 0.3], dtype=torch.float64))
    assert p.radii[0].tolist() == [math.ceil(3.33 * math.sqrt(0.3))] * 2
    image, alpha = ref.rasterize(p, colors, opacities, 10, 8)
    assert torch.isfinite(image).all()
    # the off-screen one (50 units to the side) adds nothing; the huge one covers every pixel evenly
    without, _ = ref.rasterize(ref.project(means[[0, 1, 3]], ref.covariance(quats[[0, 1, 3]], scales[[0, 1, 3]]),
                                           viewmat, K, 10, 8), colors[[0, 1, 3]], opacities[[0, 1, 3]], 10, 8)
    torch.testing.assert_close(image, without, rtol=0, atol=0)
    _, huge_alpha = ref.rasterize(ref.project(means[3:], ref.covariance(quats[3:], scales[3:]), viewmat, K,
                                                      10, 8), colors[3:], opacities[3:], 10, 8)
    # σ ≈ 3400 px: the corners, 6 px from its centre, lose about 1e-6 of its opacity
    torch.testing.assert_close(huge_alpha, torch.full((8, 10), 0.5, dtype=torch.float64), rtol=0, atol=1e-5)


def test_compositing_stops_when_the_pixel_is_opaque():
    """Twenty nearly opaque Gaussians on one pixel: after two, T would fall below 1e-4, so only the first two
    count (the tile rasterizers stop there too); the pixel then equals the render of those two alone."""
    viewmat, K = camera()
    n = 20
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 2] = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)   # nearest first
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(n, 4)
    scales = torch.full((n, 3), 1.0, dtype=torch.float64)   # ~3 px: alpha ~0.97 at the pixel next to the centre
    opacities = torch.ones(n, dtype=torch.float64)
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    image, alpha, _ = ref.render(means, quats, scales, opacities, colors, viewmat, K, 10, 8)

    def first(k):
        return ref.render(means[:k], quats[:k], scales[:k], opacities[:k], colors[:k], viewmat, K, 10, 8)

    two, two_alpha, _ = first(2)
    three = ref.project(means[:3], ref.covariance(quats[:3], scales[:3]), viewmat, K, 10, 8)
    unstopped, _ = ref.rasterize(three, colors[:3], opacities[:3], 10, 8, t_min=0.0)
    torch.testing.assert_close(image[4, 5], two[4, 5], rtol=0, atol=1e-12)
    torch.testing.assert_close(alpha[4, 5], two_alpha[4, 5], rtol=0, atol=1e-12)
    assert (1 - two_alpha[4, 5]) >= ref.T_MIN and (unstopped[4, 5] - two[4, 5]).abs().max() > 1e-6  # it mattered
    # the same scene listed back to front renders the same (depth order, not list order)
    flipped, _, _ = ref.render(means.flip(0), quats, scales, opacities, colors.flip(0), viewmat, K, 10, 8)
    torch.testing.assert_close(flipped, image, rtol=0, atol=1e-12)


def test_an_empty_scene_is_the_background():
    viewmat, K = camera()
    means = torch.tensor([[0.0, 0.0, -10.0]], dtype=torch.float64)  # behind the camera
    background = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    image, alpha, _ = ref.render(means, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                                 torch.full((1, 3), 0.2, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                                 torch.ones(1, 3, dtype=torch.float64), viewmat, K, 10, 8, background)
    assert (alpha == 0).all() and (image == background).all()


def test_the_box_cut_removes_only_alphas_under_the_threshold():
    """Outside a Gaussian's box its alpha is under 1/255 (o <= 1): cutting there gives the image of no cut, so the
    result does not depend on tiles (and matches rasterizers that only bin by the box)."""
    viewmat, K = camera(24, 20)
    means, quats, scales, _, colors = random_scene(20, seed=7, spread=0.6)
    opacities = torch.ones(20, dtype=torch.float64)      # the worst case: o = 1
    p = ref.project(means, ref.covariance(quats, scales), viewmat, K, 24, 20)
    cut, cut_alpha = ref.rasterize(p, colors, opacities, 24, 20)
    huge = ref.Projected(p.means2d, p.conics, p.depths, torch.where(p.valid[:, None], 10**6, 0).expand(-1, 2), p.valid)
    uncut, uncut_alpha = ref.rasterize(huge, colors, opacities, 24, 20)
    torch.testing.assert_close(cut, uncut, rtol=0, atol=0)
    torch.testing.assert_close(cut_alpha, uncut_alpha, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_rasterize_on_any_device_renders_the_reference(device):
    """`ops.rasterize` with backend auto: the C++ tiles on CPU, and on CUDA (no CUDA kernel of ours yet; gsplat is
    to come) the reference, with the slow-path warning; both give the reference's image and gradients."""
    from cuda_ext.rasterize import ops

    viewmat, K = camera(20, 16, dtype=torch.float32, device=device)
    means, quats, scales, opacities, colors = random_scene(12, seed=8, dtype=torch.float32, device=device)
    background = torch.tensor([0.2, 0.4, 0.6], device=device)
    results = []
    for rasterize in (ops.rasterize, ref.rasterize):
        params = [t.clone().requires_grad_(True) for t in (means, opacities, colors)]
        p = ref.project(params[0], ref.covariance(quats, scales), viewmat, K, 20, 16)
        image, alpha = rasterize(p, params[2], params[1], 20, 16, background)
        (image.sum() + alpha.sum()).backward()
        results.append([image.detach(), alpha.detach()] + [t.grad for t in params])
    assert results[0][0].device.type == device and results[0][1].max() > 0.3
    for got, want in zip(*results, strict=True):
        scale = want.abs().max().clamp(min=1e-2)
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=2e-5)
