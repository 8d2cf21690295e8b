"""gsplat (the CUDA path of ops.splat) against the PyTorch reference: the same image, alpha and gradients of every
3-D parameter on random scenes. Needs a CUDA GPU and the `gpu` extra (gsplat); scripts/gpu_check.sh runs it.

Tolerances: both sides are float32 with the same rules (EWA projection with the 0.3 px² low-pass, 1/255 alpha
floor, 0.99 cap, T < 1e-4 stop); they differ in summation order and in gsplat's fused conic/radius arithmetic,
so images agree to 1e-4 and gradients to 1e-3 of their largest magnitude.
"""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda

from cuda_ext.rasterize import ops

pytestmark = requires_cuda


def _gsplat_or_skip():
    pytest.importorskip("gsplat", reason="gsplat is not installed (pip install -e '.[gpu]')")


def _scene(n: int, seed: int, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.6, 0.5]) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.15 + 0.02
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 5, generator=g)           # rgb + two attention channels, like the Gaussian head
    tensors = [t.to(device).requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    viewmat = torch.eye(4, device=device)
    viewmat[0, 3] = 0.1
    K = torch.tensor([[60.0, 0, 32.0], [0, 60.0, 24.0], [0, 0, 1]], device=device)
    return tensors, viewmat, K


@pytest.mark.parametrize("n, seed", [(50, 0), (300, 1)])
def test_gsplat_matches_the_reference(n, seed):
    _gsplat_or_skip()
    tensors, viewmat, K = _scene(n, seed)
    weights = torch.rand(48, 64, 5, generator=torch.Generator().manual_seed(9)).cuda()
    results = {}
    for backend in ("gsplat", "torch"):
        for t in tensors:
            t.grad = None
        image, alpha, _ = ops.splat(*tensors, viewmat, K, 64, 48, backend=backend)
        ((image * weights).sum() + alpha.sum()).backward()
        results[backend] = (image.detach(), alpha.detach(), [t.grad.clone() for t in tensors])
    (img_g, alpha_g, grads_g), (img_t, alpha_t, grads_t) = results["gsplat"], results["torch"]
    torch.testing.assert_close(img_g, img_t, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha_g, alpha_t, atol=1e-4, rtol=0)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), grads_g, grads_t, strict=True):
        scale = b.abs().max().clamp_min(1e-6)
        assert (a - b).abs().max() <= 1e-3 * scale, name


def test_the_gaussian_head_renders_the_same_with_gsplat_and_the_reference():
    """The head on CUDA (auto: gsplat) against the same weights with backend torch (reference projection and
    compositing, PyTorch trihash)."""
    _gsplat_or_skip()
    import dataclasses

    from synctalk.models.gaussian import GaussianHead, GaussianHeadSettings

    settings = GaussianHeadSettings(count=400, mouth_count=40, levels=2, base=8, finest=32, table_log2=10, hidden=16,
                                    audio_window=2, audio_hidden=16, expression_names=("eyeBlinkLeft",))
    torch.manual_seed(0)
    fast = GaussianHead(settings, (6,), 3).cuda().eval()
    with torch.no_grad():
        fast.face.means.normal_(0, 0.5)
        fast.face.opacity_logits.fill_(1.0)
        fast.face.sh.normal_(0, 0.5)
    slow = GaussianHead(dataclasses.replace(settings, backend="torch"), (6,), 3).cuda().eval()
    slow.load_state_dict(fast.state_dict())
    c2w = torch.eye(4, device="cuda")
    c2w[2, 3] = -3.0
    K = torch.tensor([[40.0, 0, 24.0], [0, 40.0, 24.0], [0, 0, 1]], device="cuda")
    code = torch.randn(settings.audio_dim, device="cuda")
    expression = torch.tensor([0.4], device="cuda")
    with torch.no_grad():
        a = fast.render_image(c2w, K, 48, 48, code, expression, appearance_frame=1)
        b = slow.render_image(c2w, K, 48, 48, code, expression, appearance_frame=1)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-3, rtol=0)
