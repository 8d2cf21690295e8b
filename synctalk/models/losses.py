"""Losses of the Dynamic Portrait Renderer. Every function returns a scalar (mean over its batch) unless noted.

- :func:`uncertainty_l1`: photometric L1 weighted by the predicted per-ray uncertainty (SyncTalk / ER-NeRF's
  uncertainty-aware loss, a Laplace-like negative log-likelihood).
- :func:`opacity_entropy`: pushes every ray's accumulated opacity towards 0 or 1 (no semi-transparent haze).
- :func:`attention_losses`: facial-aware masked attention — audio acts on the lower face, expression elsewhere.
- :func:`ssim_loss`, :func:`gradient_loss`, :func:`lip_patch_loss`: the structure losses on lip patches; with the
  LPIPS weights in the model cache (:func:`optional_lpips`), ``lip_patch_loss`` is LPIPS instead, and SSIM +
  gradient is the fallback when they are absent.
- :func:`ramp`: a 0 → 1 weight schedule for losses switched on during training.
- :func:`head_losses` with :class:`HeadLossWeights`: the weighted terms of a head training step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["HeadLossWeights", "attention_losses", "gradient_loss", "head_losses", "lip_patch_loss", "mask_loss",
           "masked_mean", "opacity_entropy", "optional_lpips", "ramp", "ssim_loss", "uncertainty_l1"]

log = logging.getLogger("synctalk.train")
_SAID: set[tuple[str, bool]] = set()


def uncertainty_l1(pred: Tensor, target: Tensor, uncertainty: Tensor, floor: float = 0.01) -> Tensor:
    """Uncertainty-weighted L1: ``mean_r( |pred_r - target_r|_1 / (2 u_r^2) + log u_r )`` with ``u = uncertainty +
    floor``.

    Rays the field marks uncertain (hair strands, specular teeth, a moving torso edge) count less, at the price of
    ``log u``; the minimiser for a ray with error ``e`` is ``u = sqrt(e)``, so u tracks the residual.

    Args:
        pred, target: [R, 3] colours.
        uncertainty: [R] >= 0, e.g. the rendered ``uncertainty`` channel.
        floor: added to u so a zero uncertainty cannot divide by zero.

    ``|.|_1`` is the mean over the colour channels. Example: error 0.5 in every channel and u = 1 (floor 0) give
    0.5 / 2 + log 1 = 0.25; with u = 2: 0.5 / 8 + log 2 = 0.7556.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"pred and target must both be [R, C], got {tuple(pred.shape)}, {tuple(target.shape)}")
    if uncertainty.shape != pred.shape[:1]:
        raise ValueError(f"uncertainty must be [R] = [{pred.shape[0]}], got {tuple(uncertainty.shape)}")
    u = uncertainty + floor
    error = (pred - target).abs().mean(-1)  # [R]
    return (error / (2 * u * u) + torch.log(u)).mean()


def opacity_entropy(opacity: Tensor, eps: float = 1e-6) -> Tensor:
    """Binary entropy of per-ray opacity: ``mean( -o log o - (1 - o) log(1 - o) )`` (nats), o clamped to
    ``[eps, 1 - eps]``.

    Args:
        opacity: [R] in [0, 1].

    Values: log 2 = 0.6931 at o = 0.5 (the maximum); ~0 at o = 0 or 1.
    """
    o = opacity.clamp(eps, 1 - eps)
    return (-(o * torch.log(o) + (1 - o) * torch.log(1 - o))).mean()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [R] where ``mask`` [R] (bool) is True; 0 (still differentiable) when nothing is selected."""
    if values.shape != mask.shape:
        raise ValueError(f"values and mask must have the same shape, got {tuple(values.shape)}, {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    count = mask.sum()
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count.clamp_min(1)


def attention_losses(audio_attention: Tensor, expression_attention: Tensor, lower_face: Tensor
                     ) -> tuple[Tensor, Tensor]:
    """Facial-aware masked attention (SyncTalk): keep audio attention in the lower face, expression outside it.

    Args:
        audio_attention, expression_attention: [R] per-ray rendered attention (``HeadModel.render`` outputs), >= 0.
        lower_face: [R] bool, True for rays in the lower face (nose to chin, e.g. from the landmarks or the
            parsing masks' mouth labels dilated).

    Returns:
        (audio loss, expression loss): the mean audio attention on rays *outside* the lower face, and the mean
        expression attention on rays *inside* it; each 0 when it has no rays. Both are 0 exactly when the
        attention is only where it belongs. Example: audio [0.9, 0.0], expression [0.0, 0.8], lower_face
        [True, False] → (0, 0); with the mask swapped to [False, True] → (0.9, 0.8).
    """
    if audio_attention.shape != lower_face.shape or expression_attention.shape != lower_face.shape:
        raise ValueError(f"attention maps and mask must all be [R], got {tuple(audio_attention.shape)}, "
                         f"{tuple(expression_attention.shape)}, {tuple(lower_face.shape)}")
    lower_face = lower_face.to(torch.bool)
    return masked_mean(audio_attention, ~lower_face), masked_mean(expression_attention, lower_face)


def ramp(step: int, start: int, end: int) -> float:
    """Loss weight schedule: 0 before ``start``, linear to 1 at ``end``, 1 after; a step at ``start`` if end <= start.

    Example: ramp(150, 100, 200) = 0.5; ramp(100, 100, 200) = 0; ramp(200, 100, 200) = 1.
    """
    if step < start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start) / (end - start)


def _check_images(pred: Tensor, target: Tensor) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be [B, C, H, W], got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")


def ssim_loss(pred: Tensor, target: Tensor, window_size: int = 11, padding: str = "same") -> Tensor:
    """``(1 - SSIM) / 2`` averaged over pixels (kornia.losses.ssim_loss, Gaussian window, images in [0, 1]).

    Args:
        pred, target: [B, C, H, W] in [0, 1] (e.g. 32 × 32 lip patches).
        window_size: odd Gaussian window size (at most the patch size).
        padding: "same" (kornia's padded border) or "valid" (interior windows only).

    Example: two constant images a and b ("valid") have SSIM ``(2ab + C1) / (a² + b² + C1)`` (C1 = 0.01²), so
    a = 1, b = 0 gives loss (1 - 1e-4 / (1 + 1e-4)) / 2 ≈ 0.49995; equal images give 0.
    """
    _check_images(pred, target)
    import kornia

    return kornia.losses.ssim_loss(pred, target, window_size, padding=padding)


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between image gradients (forward differences): ``mean|dx p - dx t| + mean|dy p - dy t|``.

    Args:
        pred, target: [B, C, H, W].

    Keeps edges (lip contours, teeth) sharp where L1 alone averages them away. Example: target 0, pred a
    horizontal ramp rising 0.1 per column → 0.1 (x term) + 0 (y term).
    """
    _check_images(pred, target)
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def optional_lpips(weight: float, device, who: str):
    """The LPIPS AlexNet (:func:`synctalk.models.lpips.load_lpips`) on ``device`` for a loss term of ``weight``, or
    None when ``weight`` is 0 or ``lpips_alex.pt`` is not in the model cache (said once per ``who``, with how to
    get it). A damaged file is an AssetError that says what to do."""
    if weight <= 0:
        return None
    from synctalk import assets
    from synctalk.models.lpips import load_lpips

    present = assets.is_available("lpips_alex")
    if (who, present) not in _SAID:
        _SAID.add((who, present))
        if present:
            log.info("%s: LPIPS (AlexNet) loss with weight %g", who, weight)
        else:
            log.info("%s: no LPIPS weights (%s); using the SSIM + gradient losses instead (`synctalk assets fetch "
                     "lpips_alex` makes them)", who, assets.path_of("lpips_alex"))
    return load_lpips("alex", device) if present else None


def lip_patch_loss(pred: Tensor, target: Tensor, ssim_weight: float = 1.0, gradient_weight: float = 1.0,
                   window_size: int = 11, lpips=None, lpips_weight: float = 0.0) -> Tensor:
    """Structure loss on lip patches [B, 3, H, W] in [0, 1]: ``lpips_weight * LPIPS`` when an ``lpips`` network
    is given (:func:`optional_lpips`), else the fallback ``ssim_weight * ssim_loss + gradient_weight *
    gradient_loss``."""
    if lpips is not None and lpips_weight > 0:
        from synctalk.models.lpips import perceptual_loss

        _check_images(pred, target)
        return lpips_weight * perceptual_loss(lpips, pred, target)
    return ssim_weight * ssim_loss(pred, target, window_size) + gradient_weight * gradient_loss(pred, target)


@dataclass
class HeadLossWeights:
    """Weights of the head's loss terms (:func:`head_losses`)."""

    photometric: float = 1.0
    """Photometric term: plain L1 before ``uncertainty_start``, then the uncertainty-weighted L1
    (:func:`uncertainty_l1`)."""
    uncertainty_start: int = 0
    """Step from which the photometric term is uncertainty-weighted. Weighting from the start keeps the head
    semi-transparent: rays without head (rendered uncertainty ~0) weigh ~1/(2 floor^2) on any haze, while head rays
    buy a lower weight with the uncertainty they render. Measured on the Macron clip (CPU profile, 500 head steps):
    validation PSNR 25.6 dB with plain L1 first vs 21.0 dB weighted from step 0."""
    uncertainty_floor: float = 0.01
    """Added to the rendered uncertainty before weighting."""
    entropy: float = 1e-4
    """Opacity entropy (:func:`opacity_entropy`), ramped in over entropy_ramp."""
    entropy_ramp: tuple[int, int] = (0, 0)
    """(start, end) steps of the entropy ramp; (0, 0) = on from the start. Turning it on late lets the head form
    before semi-transparent regions are forced to a decision."""
    audio_attention: float = 1e-4
    """Audio attention outside the lower face (:func:`attention_losses`)."""
    expression_attention: float = 1e-4
    """Expression attention inside the lower face."""
    mask: float = 0.0
    """Silhouette term (:func:`mask_loss`): head opacity against the parsing map's head mask."""


def mask_loss(alpha: Tensor, mask: Tensor, valid: Tensor | None = None) -> Tensor:
    """Binary cross-entropy between a rendered alpha [R] and a parsing mask [R] (bool), over ``valid`` rays.

    Pins the silhouette early: without it a radiance field may explain the face with a semi-transparent haze over
    the plate behind it. Example: alpha 0.5 everywhere → log 2 ≈ 0.693 whatever the mask.
    """
    alpha = alpha.clamp(1e-4, 1 - 1e-4)
    bce = torch.nn.functional.binary_cross_entropy(alpha, mask.to(alpha.dtype), reduction="none")
    if valid is None:
        return bce.mean()
    return (bce * valid).sum() / valid.sum().clamp(min=1)


def head_losses(outputs: dict[str, Tensor], target_rgb: Tensor, lower_face: Tensor | None = None, step: int = 0,
                weights: HeadLossWeights | None = None, head_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Weighted loss terms of one head step; the training loss is their sum.

    Args:
        outputs: ``HeadModel.render`` output (``rgb`` [R, 3], ``opacity``, ``uncertainty``, ``audio_attention``,
            ``expression_attention`` [R]).
        target_rgb: [R, 3] ground-truth colours (composited over the same background as the render).
        lower_face: [R] bool lower-face mask, or None to skip the attention terms (e.g. no parsing for the frame).
        head_mask: [R] bool head mask for the silhouette term (``weights.mask``), or None to skip it.
        step: training step (for the entropy ramp).
        weights: :class:`HeadLossWeights` (defaults when None).

    Returns:
        ``{"photometric", "entropy"}`` plus ``{"audio_attention", "expression_attention"}`` when ``lower_face`` is
        given; each already multiplied by its weight (and ramp). Example: rgb off by 0.5 everywhere, uncertainty
        1, floor 0, opacity 0.5, entropy weight 2 past its ramp → photometric 0.25, entropy 2 log 2.
    """
    weights = weights or HeadLossWeights()
    losses = {
        "photometric": weights.photometric * (
            uncertainty_l1(outputs["rgb"], target_rgb, outputs["uncertainty"], weights.uncertainty_floor)
            if step >= weights.uncertainty_start else (outputs["rgb"] - target_rgb).abs().mean()),
        "entropy": weights.entropy * ramp(step, *weights.entropy_ramp) * opacity_entropy(outputs["opacity"]),
    }
    if lower_face is not None:
        audio_loss, expression_loss = attention_losses(outputs["audio_attention"], outputs["expression_attention"],
                                                       lower_face)
        losses["audio_attention"] = weights.audio_attention * audio_loss
        losses["expression_attention"] = weights.expression_attention * expression_loss
    if head_mask is not None and weights.mask > 0:
        losses["mask"] = weights.mask * mask_loss(outputs["opacity"], head_mask)
    return losses
