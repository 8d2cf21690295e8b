"""Losses: hand values (uncertainty weighting and its minimiser, entropy, masked attention, ramp, SSIM of constant
images, image gradients), shape checks."""

from __future__ import annotations

import math

import pytest
import torch

from synctalk.models.losses import (
    HeadLossWeights,
    attention_losses,
    gradient_loss,
    head_losses,
    lip_patch_loss,
    masked_mean,
    opacity_entropy,
    ramp,
    ssim_loss,
    uncertainty_l1,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_uncertainty_l1_hand_values():
    pred, target = torch.full((2, 3), 0.5), torch.zeros(2, 3)
    # |e| = 0.5: u = 1 → 0.5 / 2 + log 1 = 0.25; u = 2 → 0.5 / 8 + log 2
    got = uncertainty_l1(pred, target, torch.tensor([1.0, 1.0]), floor=0.0)
    torch.testing.assert_close(got, torch.tensor(0.25))
    got = uncertainty_l1(pred, target, torch.tensor([1.0, 2.0]), floor=0.0)
    torch.testing.assert_close(got, torch.tensor((0.25 + 0.0625 + math.log(2)) / 2))
    # the floor is added to u: u = 0 with floor 1 is the u = 1 case
    torch.testing.assert_close(uncertainty_l1(pred, target, torch.zeros(2), floor=1.0), torch.tensor(0.25))


def test_uncertainty_l1_is_minimised_at_u_equal_sqrt_error():
    pred, target = torch.tensor([[0.09, 0.09, 0.09]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    u = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)  # sqrt(0.09)
    uncertainty_l1(pred, target, u, floor=0.0).backward()
    assert abs(float(u.grad)) < 1e-12
    u_low = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    uncertainty_l1(pred, target, u_low, floor=0.0).backward()
    assert float(u_low.grad) < 0  # below the optimum the loss falls as u grows


def test_uncertainty_l1_shape_checks():
    with pytest.raises(ValueError, match="uncertainty must be \\[R\\] = \\[4\\]"):
        uncertainty_l1(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="pred and target"):
        uncertainty_l1(torch.zeros(4, 3), torch.zeros(3, 3), torch.zeros(4))


def test_opacity_entropy_hand_values():
    torch.testing.assert_close(opacity_entropy(torch.full((5,), 0.5)), torch.tensor(math.log(2)))
    assert float(opacity_entropy(torch.tensor([0.0, 1.0]))) < 2e-5  # eps-clamped: ~1.5e-5
    p = 0.1
    expected = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    torch.testing.assert_close(opacity_entropy(torch.tensor([0.1, 0.9])), torch.tensor(expected))


def test_masked_attention_losses_hand_values():
    audio, expression = torch.tensor([0.9, 0.0, 0.4]), torch.tensor([0.0, 0.8, 0.6])
    lower_face = torch.tensor([True, False, False])
    audio_loss, expression_loss = attention_losses(audio, expression, lower_face)
    # outside the lower face the audio attention is [0, 0.4]; inside, the expression attention is [0]
    torch.testing.assert_close(audio_loss, torch.tensor(0.2))
    torch.testing.assert_close(expression_loss, torch.tensor(0.0))
    audio_loss, expression_loss = attention_losses(audio, expression, ~lower_face)
    torch.testing.assert_close(audio_loss, torch.tensor(0.9))
    torch.testing.assert_close(expression_loss, torch.tensor(0.7))
    # attention only where it belongs → both exactly zero
    zero = attention_losses(torch.tensor([0.7, 0.0]), torch.tensor([0.0, 0.5]), torch.tensor([True, False]))
    assert [float(v) for v in zero] == [0.0, 0.0]


def test_masked_mean_of_nothing_is_zero_and_differentiable():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    out = masked_mean(values, torch.tensor([False, False]))
    out.backward()
    assert out.item() == 0.0 and values.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="same shape"):
        masked_mean(torch.zeros(3), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="must all be \\[R\\]"):
        attention_losses(torch.zeros(3), torch.zeros(3), torch.zeros(2, dtype=torch.bool))


def test_ramp_endpoints():
    assert ramp(0, 100, 200) == 0.0
    assert ramp(100, 100, 200) == 0.0
    assert ramp(150, 100, 200) == 0.5
    assert ramp(200, 100, 200) == 1.0
    assert ramp(10**6, 100, 200) == 1.0
    assert ramp(4, 5, 5) == 0.0 and ramp(5, 5, 5) == 1.0  # end <= start: a step at start


def test_ssim_loss_of_constant_images():
    # constant images: no variance, so SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 * 1)²
    c1 = 1e-4
    for a, b in ((1.0, 0.0), (0.5, 0.25)):
        pred, target = torch.full((2, 3, 16, 16), a), torch.full((2, 3, 16, 16), b)
        expected = (1 - (2 * a * b + c1) / (a * a + b * b + c1)) / 2
        torch.testing.assert_close(ssim_loss(pred, target, window_size=11, padding="valid"), torch.tensor(expected),
                                   rtol=1e-5, atol=1e-6)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float(ssim_loss(image, image)) < 1e-6
    assert float(ssim_loss(image, image.flip(-1))) > 0.1


def test_gradient_loss_hand_values():
    ramp_image = (torch.arange(8, dtype=torch.float32) * 0.1).expand(1, 3, 8, 8)  # +0.1 per column
    target = torch.zeros(1, 3, 8, 8)
    torch.testing.assert_close(gradient_loss(ramp_image, target), torch.tensor(0.1))  # x term 0.1, y term 0
    torch.testing.assert_close(gradient_loss(ramp_image.transpose(-1, -2), target), torch.tensor(0.1))
    # a brightness offset has no gradient
    assert float(gradient_loss(target + 0.3, target)) == 0.0
    with pytest.raises(ValueError, match="\\[B, C, H, W\\]"):
        gradient_loss(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_lip_patch_loss_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    expected = 0.5 * ssim_loss(pred, target, 7) + 2.0 * gradient_loss(pred, target)
    torch.testing.assert_close(lip_patch_loss(pred, target, 0.5, 2.0, window_size=7), expected)


def test_head_losses_hand_values_and_ramp():
    outputs = {"rgb": torch.full((2, 3), 0.5), "uncertainty": torch.ones(2), "opacity": torch.full((2,), 0.5),
               "audio_attention": torch.tensor([0.9, 0.4]), "expression_attention": torch.tensor([0.6, 0.0])}
    weights = HeadLossWeights(photometric=1.0, uncertainty_floor=0.0, entropy=2.0, entropy_ramp=(10, 20),
                              audio_attention=0.5, expression_attention=0.25)
    got = head_losses(outputs, torch.zeros(2, 3), torch.tensor([True, False]), step=20, weights=weights)
    assert sorted(got) == ["audio_attention", "entropy", "expression_attention", "photometric"]
    torch.testing.assert_close(got["photometric"], torch.tensor(0.25))
    torch.testing.assert_close(got["entropy"], torch.tensor(2 * math.log(2)))
    torch.testing.assert_close(got["audio_attention"], torch.tensor(0.5 * 0.4))  # ray 1 is outside
    torch.testing.assert_close(got["expression_attention"], torch.tensor(0.25 * 0.6))  # ray 0 is inside
    halfway = head_losses(outputs, torch.zeros(2, 3), step=15, weights=weights)
    assert sorted(halfway) == ["entropy", "photometric"]  # no mask, no attention terms
    torch.testing.assert_close(halfway["entropy"], torch.tensor(math.log(2)))


def test_photometric_term_is_plain_l1_until_uncertainty_start():
    outputs = {"rgb": torch.full((2, 3), 0.5), "uncertainty": torch.full((2,), 2.0), "opacity": torch.ones(2),
               "audio_attention": torch.zeros(2), "expression_attention": torch.zeros(2)}
    weights = HeadLossWeights(uncertainty_floor=0.0, uncertainty_start=10)
    before = head_losses(outputs, torch.zeros(2, 3), step=9, weights=weights)
    torch.testing.assert_close(before["photometric"], torch.tensor(0.5))  # |0.5 - 0|
    after = head_losses(outputs, torch.zeros(2, 3), step=10, weights=weights)
    torch.testing.assert_close(after["photometric"], torch.tensor(0.5 / 8 + math.log(2.0)))
