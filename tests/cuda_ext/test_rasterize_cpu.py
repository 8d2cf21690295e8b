"""The C++ tile rasterizer against the dense reference: image, alpha and every gradient on random scenes that span
several tiles, with Gaussians off screen, behind the camera, huge, tiny and piled on one tile."""

from __future__ import annotations

import pytest
import torch

from cuda_ext.rasterize import ops
from cuda_ext.rasterize import reference as ref


@pytest.fixture(scope="module")
def cpu_module():
    from cuda_ext.build import load

    module, status = load("rasterize", "cpu")
    if module is None:
        pytest.skip(f"the C++ rasterizer does not build here: {status}")
    return module


def scene(n, width, height, seed):
    """Random Gaussians in front of a camera 5 units away, a few off screen, behind it or tiny/huge."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 2.0])
    means[:3] = torch.tensor([[30.0, 0, 0], [0, 0, -7.0], [0, -40.0, 1.0]])     # off screen, behind, off screen
    quats = torch.randn(n, 4, generator=g)
    scales = 0.03 + 0.2 * torch.rand(n, 3, generator=g)
    scales[3], scales[4] = 1e-4, 2.5                                             # tiny, huge
    opacities = 0.1 + 0.85 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmat = torch.eye(4)
    viewmat[2, 3] = 5.0
    K = torch.tensor([[1.1 * width, 0, width / 2], [0, 1.1 * width, height / 2], [0, 0, 1]])
    return means, quats, scales, opacities, colors, viewmat, K


def render(backend, means, quats, scales, opacities, colors, viewmat, K, width, height, background):
    params = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    projected = ref.project(params[0], ref.covariance(params[1], params[2]), viewmat, K, width, height)
    image, alpha = ops.rasterize(projected, params[4], params[3], width, height, background, backend=backend)
    weights = torch.linspace(0.5, 1.5, image.numel()).reshape(image.shape)   # a loss that weighs every pixel
    (image * weights).sum().add((alpha * alpha).sum()).backward()
    return image.detach(), alpha.detach(), [p.grad for p in params]


@pytest.mark.parametrize("width, height, n, seed", [(37, 29, 60, 0), (64, 48, 300, 1), (16, 16, 1, 2)])
def test_the_tile_rasterizer_equals_the_reference(cpu_module, width, height, n, seed):
    args = scene(max(n, 5), width, height, seed)
    background = torch.tensor([0.3, 0.6, 0.1])
    image, alpha, grads = render("cpu", *args, width, height, background)
    want_image, want_alpha, want_grads = render("torch", *args, width, height, background)
    assert ops.backend_calls["cpu"] > 0
    # float32 sums in another order: 1e-5 on values in [0, 1]
    torch.testing.assert_close(image, want_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, want_alpha, rtol=0, atol=1e-5)
    for name, got, want in zip(("means", "quats", "scales", "opacities", "colors"), grads, want_grads, strict=True):
        # gradients sum over many pixels (and the reverse pass divides out transmittance): relative to the largest;
        # one that is zero up to float32 noise (an isotropic Gaussian's rotation) is compared to 1e-2 instead
        scale = want.abs().max().clamp(min=1e-2)
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=2e-4, msg=name)
    assert alpha.max() > 0.5 or n == 1   # not a comparison of two empty images


def test_many_gaussians_on_one_tile_stop_where_the_reference_stops(cpu_module):
    n = 400
    means = torch.zeros(n, 3)
    means[:, 2] = torch.linspace(-1, 1, n)
    means[:, :2] = (torch.rand(n, 2, generator=torch.Generator().manual_seed(5)) - 0.5) * 0.3
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4)
    scales = torch.full((n, 3), 0.15)
    opacities = torch.full((n,), 0.9)
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(6))
    viewmat = torch.eye(4)
    viewmat[2, 3] = 5.0
    K = torch.tensor([[40.0, 0, 8], [0, 40.0, 8], [0, 0, 1]])
    image, alpha, grads = render("cpu", means, quats, scales, opacities, colors, viewmat, K, 16, 16, None)
    want_image, want_alpha, want_grads = render("torch", means, quats, scales, opacities, colors, viewmat, K, 16, 16,
                                                None)
    torch.testing.assert_close(image, want_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(alpha, want_alpha, rtol=0, atol=1e-5)
    assert alpha.max() > 0.999   # opaque pixels: the T < 1e-4 stop is exercised
    for got, want in zip(grads, want_grads, strict=True):
        scale = want.abs().max().clamp(min=1e-2)
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=5e-4)


def test_bad_inputs_are_refused():
    p = ref.project(torch.zeros(2, 3), torch.eye(3).expand(2, 3, 3), torch.eye(4), torch.eye(3), 4, 4)
    with pytest.raises(ValueError, match="colors must be"):
        ops.rasterize(p, torch.zeros(3, 3), torch.zeros(2), 4, 4)
    with pytest.raises(ValueError, match="width and height"):
        ops.rasterize(p, torch.zeros(2, 3), torch.zeros(2), 0, 4)
