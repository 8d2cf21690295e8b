"""LPIPS as a training loss: the lips stage's patch loss and the Gaussian head's whole-frame term use it when
lpips_alex.pt is in the model cache (the loss runs and its gradient reaches the model) and fall back to SSIM +
gradient (the lips) or D-SSIM alone (the Gaussian head) without it."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import real_file, requires_cuda

from synctalk.models.losses import gradient_loss, lip_patch_loss, optional_lpips, ssim_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture
def no_lpips(tmp_path, monkeypatch):
    """A model cache without the LPIPS weights (offline)."""
    monkeypatch.setenv("SYNCTALK_MODELS", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("SYNCTALK_OFFLINE", "1")


def _patches(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(3, 3, 32, 32, generator=g).to(device)
    pred = torch.rand(3, 3, 32, 32, generator=g).to(device).requires_grad_(True)
    return pred, target


@pytest.mark.parametrize("device", DEVICES)
def test_lip_patches_train_with_lpips_when_the_weights_are_there(device):
    real_file("models/lpips_alex.pt")
    lpips = optional_lpips(0.01, device, "test")
    assert lpips is not None and optional_lpips(0.0, device, "test") is None   # weight 0: off
    assert next(lpips.parameters()).device.type == device
    pred, target = _patches(device=device)
    loss = lip_patch_loss(pred, target, 0.2, 0.1, lpips=lpips, lpips_weight=0.01)
    loss.backward()
    expected = 0.01 * lpips(pred.detach(), target).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in lpips.parameters())   # LPIPS itself is frozen


def test_lip_patches_fall_back_to_ssim_and_gradient_without_the_weights(no_lpips):
    assert optional_lpips(0.01, "cpu", "test without weights") is None
    pred, target = _patches()
    loss = lip_patch_loss(pred, target, 0.2, 0.1, lpips=None, lpips_weight=0.01)
    assert loss.item() == pytest.approx((0.2 * ssim_loss(pred, target) + 0.1 * gradient_loss(pred, target)).item())


def _gaussian_terms(lpips_weight: float):
    """A small Gaussian head (a blob of Gaussians in front of the camera) and its loss terms on one 32 px frame."""
    import math

    from synctalk.models.base import PixelRegions
    from synctalk.models.gaussian import GaussianHead, GaussianHeadSettings
    from synctalk.models.losses import HeadLossWeights

    torch.manual_seed(0)
    settings = GaussianHeadSettings(count=200, mouth_count=20, levels=2, base=8, finest=32, table_log2=10, hidden=16,
                                    audio_window=2, audio_hidden=16, expression_names=("eyeBlinkLeft", "jawOpen"),
                                    lpips_weight=lpips_weight)
    head = GaussianHead(settings, audio_feature_shape=(6,), n_frames=4)
    with torch.no_grad():
        head.face.means.normal_(0, 0.5)
        head.face.log_scales.fill_(math.log(0.08))
        head.face.opacity_logits.fill_(1.0)
        head.face.sh.normal_(0, 0.5)
    c2w = torch.eye(4)
    c2w[2, 3] = -3.0
    K = torch.tensor([[25.6, 0, 16], [0, 25.6, 16], [0, 0, 1]])
    out = head.splat(c2w, K, 32, 32, head.encode_audio(torch.randn(4, 6), 1), torch.tensor([0.3, 0.1]),
                     appearance_frame=1)
    flat = {name: value.reshape(32 * 32, *value.shape[2:]) if value.dim() >= 2 and value.shape[:2] == (32, 32)
            else value for name, value in out.items()}
    target = torch.rand(32 * 32, 3, generator=torch.Generator().manual_seed(3))
    everywhere = torch.ones(32 * 32, dtype=torch.bool)
    regions = PixelRegions(head=everywhere, lower_face=None, image_size=(32, 32))
    return head, head.losses(flat, target, regions, step=0, weights=HeadLossWeights(uncertainty_start=2 ** 62))


def test_the_gaussian_head_adds_lpips_to_d_ssim_and_its_gradient_reaches_the_gaussians():
    real_file("models/lpips_alex.pt")
    head, terms = _gaussian_terms(0.05)
    assert {"ssim", "lpips"} <= terms.keys() and terms["lpips"].item() > 0
    terms["lpips"].backward()
    assert head.face.sh.grad is not None and head.face.sh.grad.abs().sum() > 0
    _, without = _gaussian_terms(0.0)
    assert "lpips" not in without and "ssim" in without


def test_the_gaussian_head_trains_with_d_ssim_alone_without_the_weights(no_lpips):
    _, terms = _gaussian_terms(0.05)
    assert "ssim" in terms and "lpips" not in terms


def test_the_training_log_says_which_lip_patch_loss_trained(trained_workspace):
    """The session's trained workspace (tests use the shared model cache) records the lips stage's patch loss."""
    from synctalk import assets

    workspace, _ = trained_workspace
    info = json.loads((workspace / "train_log.json").read_text())["stages"]["lips"]
    assert info["patch_loss"] == ("lpips" if assets.is_available("lpips_alex") else "ssim+gradient")
