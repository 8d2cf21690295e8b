"""Volume compositing in pure PyTorch: the readable spec of composite.cu, differentiable, any device.

Samples are *packed* (nerfacc layout): sample ``i`` belongs to ray ``ray_indices[i]`` and covers ``[t_starts[i],
t_ends[i]]``; samples of one ray are contiguous and ordered by ``t`` (``ray_indices`` is non-decreasing). The
*padded* layout stores the same samples as ``[R, M]`` tensors with a validity mask.

The maths (per ray, samples ``i = 0..n-1``)::

    delta_i = t_ends_i - t_starts_i                       # sample length
    a_i     = sigma_i * delta_i                           # optical thickness
    T_i     = exp(-sum_{j<i} a_j)                         # transmittance before sample i
    alpha_i = 1 - exp(-a_i)                               # opacity of sample i
    w_i     = T_i * alpha_i                               # weight
    opacity = sum_i w_i = 1 - T_n
    depth   = sum_i w_i * (t_starts_i + t_ends_i) / 2     # not normalised: divide by opacity for expected depth
    colour  = sum_i w_i * rgb_i + (1 - opacity) * background
    extra   = sum_i w_i * e_i  ("weighted")   or   sum_i e_i  ("sum")

Worked example: one ray, two samples of length 0.5 with sigma = [2, 0] and rgb = [[1, 0, 0], [0, 1, 0]]:
a = [1, 0], T = [1, e^-1], alpha = [1 - e^-1, 0], w = [0.632, 0], opacity = 0.632, colour = [0.632, 0, 0]
(+ 0.368 * background).

The cumulative sum along each ray is a global ``cumsum`` minus its value at the ray's first sample (index ops only,
no loop over rays), done in float64 so float32 inputs with millions of samples do not lose precision.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

EXTRAS_MODES = ("weighted", "sum")


class CompositeResult(NamedTuple):
    """Per-ray outputs of compositing (packed: per-sample tensors are [S]; padded: [R, M])."""

    colors: Tensor | None  # [R, C_rgb], background blended in; None when rgbs is None
    opacities: Tensor  # [R]
    depths: Tensor  # [R], sum of w * t_mid (not divided by opacity)
    extras: Tensor | None  # [R, C] or None
    weights: Tensor  # [S] packed / [R, M] padded
    transmittance: Tensor  # [S] / [R, M], transmittance *before* each sample


# --------------------------------------------------------------------------------------------- packed-layout helpers


def pack_info(ray_indices: Tensor, n_rays: int) -> Tensor:
    """First sample and sample count of every ray: ``[R, 2]`` int64 ``(start, count)``.

    Args:
        ray_indices: [S] int64, non-decreasing.
        n_rays: R.

    Example: ``pack_info(tensor([0, 0, 2]), 3)`` → ``[[0, 2], [2, 0], [2, 1]]``.
    """
    counts = torch.bincount(ray_indices, minlength=n_rays)[:n_rays] if ray_indices.numel() else \
        torch.zeros(n_rays, dtype=torch.long, device=ray_indices.device)
    starts = torch.cumsum(counts, 0) - counts
    return torch.stack([starts, counts], dim=-1)


def exclusive_cumsum_packed(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Exclusive cumulative sum of ``values`` within each ray, in ``values.dtype``.

    Args:
        values: [S] float.
        ray_indices: [S] int64, non-decreasing.
        n_rays: R.

    Returns:
        [S]: ``out[i] = sum of values[j] for j < i on the same ray``.

    Example: values [1, 2, 3, 4], ray_indices [0, 0, 1, 1] → [0, 1, 0, 3].
    """
    if values.numel() == 0:
        return values.clone()
    # float64 running sum: the subtraction below cancels the sums of all earlier rays (MPS has no float64)
    wide = values.to(torch.float32 if values.device.type == "mps" else torch.float64)
    exclusive = torch.cumsum(wide, 0) - wide
    starts = pack_info(ray_indices, n_rays)[:, 0]
    return (exclusive - exclusive[starts[ray_indices]]).to(values.dtype)


def segment_sum(values: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Sum of per-sample ``values`` [S, ...] per ray → [R, ...] (index_add, differentiable)."""
    out = values.new_zeros((n_rays, *values.shape[1:]))
    return out.index_add(0, ray_indices, values)


def packed_to_padded(values: Tensor, ray_indices: Tensor, n_rays: int, max_samples: int | None = None,
                     fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Scatter packed per-sample ``values`` [S, ...] into ``[R, M, ...]`` plus a mask [R, M].

    ``M`` is ``max_samples`` or the longest ray. Samples beyond ``M`` on a ray are dropped. Differentiable in values.

    Example: values [1, 2, 3], ray_indices [0, 0, 2], n_rays 3 → [[1, 2], [f, f], [3, f]],
    mask [[1, 1], [0, 0], [1, 0]].
    """
    info = pack_info(ray_indices, n_rays)
    width = int(info[:, 1].max().item()) if (max_samples is None and n_rays > 0) else (max_samples or 0)
    positions = torch.arange(ray_indices.numel(), device=ray_indices.device) - info[ray_indices, 0]
    keep = positions < width
    padded = values.new_full((n_rays, width, *values.shape[1:]), fill)
    padded = padded.index_put((ray_indices[keep], positions[keep]), values[keep])
    mask = torch.zeros(n_rays, width, dtype=torch.bool, device=values.device)
    mask[ray_indices[keep], positions[keep]] = True
    return padded, mask


def padded_to_packed(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Gather the valid entries of padded ``values`` [R, M, ...] → (packed [S, ...], ray_indices [S]).

    The mask must be left-aligned per ray (valid samples first), which keeps samples ordered by t.
    """
    ray_indices, _ = torch.nonzero(mask, as_tuple=True)
    return values[mask], ray_indices


def _check_mode(extras_mode: str) -> None:
    if extras_mode not in EXTRAS_MODES:
        raise ValueError(f"extras_mode must be one of {EXTRAS_MODES}, got {extras_mode!r}")


def blend_background(colors: Tensor, opacities: Tensor, background: Tensor | float | None) -> Tensor:
    """``colors + (1 - opacities) * background``; background is None (black), a float, [C] or [R, C]."""
    if background is None:
        return colors
    return colors + (1.0 - opacities)[:, None] * torch.as_tensor(background, dtype=colors.dtype,
                                                                  device=colors.device)


# ------------------------------------------------------------------------------------------------------ compositing


def composite(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None,
              n_rays: int, extras: Tensor | None = None, extras_mode: str = "weighted",
              background: Tensor | float | None = None) -> CompositeResult:
    """Composite packed samples into per-ray colour, opacity, depth and extra channels.

    Args:
        ray_indices: [S] int64, non-decreasing (samples of a ray contiguous, ordered by t).
        t_starts, t_ends: [S] float, sample interval along the ray (units of the ray parameter t).
        sigmas: [S] float, density (1 / units of t), >= 0.
        rgbs: [S, C_rgb] float or None.
        n_rays: R (rays without samples get zeros and the background).
        extras: [S, C] per-sample channels or None.
        extras_mode: "weighted" (sum of w * e) or "sum" (sum of e).
        background: None (black), float, [C_rgb] or [R, C_rgb].

    Returns:
        :class:`CompositeResult` (see the module docstring for the formulas).
    """
    _check_mode(extras_mode)
    thickness = sigmas * (t_ends - t_starts)  # [S]
    trans = torch.exp(-exclusive_cumsum_packed(thickness, ray_indices, n_rays))  # [S]
    weights = trans * (1.0 - torch.exp(-thickness))  # [S]
    opacities = segment_sum(weights, ray_indices, n_rays)  # [R]
    depths = segment_sum(weights * (t_starts + t_ends) * 0.5, ray_indices, n_rays)  # [R]
    colors = None
    if rgbs is not None:
        colors = blend_background(segment_sum(weights[:, None] * rgbs, ray_indices, n_rays), opacities, background)
    out_extras = None
    if extras is not None:
        per_sample = weights[:, None] * extras if extras_mode == "weighted" else extras
        out_extras = segment_sum(per_sample, ray_indices, n_rays)
    return CompositeResult(colors, opacities, depths, out_extras, weights, trans)


def composite_padded(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None, mask: Tensor,
                     extras: Tensor | None = None, extras_mode: str = "weighted",
                     background: Tensor | float | None = None) -> CompositeResult:
    """Padded twin of :func:`composite`: per-sample inputs are [R, M] ([R, M, C] for rgbs/extras), mask [R, M].

    Masked-out entries contribute nothing (their weight is 0 and they do not attenuate later samples); their
    values may be anything finite. Per-sample outputs are [R, M].
    """
    _check_mode(extras_mode)
    thickness = torch.where(mask, sigmas * (t_ends - t_starts), torch.zeros_like(sigmas))  # [R, M]
    cumulative = torch.cumsum(thickness, -1) - thickness
    trans = torch.exp(-cumulative)  # [R, M]
    weights = trans * (1.0 - torch.exp(-thickness))  # [R, M], 0 where masked
    opacities = weights.sum(-1)
    depths = (weights * (t_starts + t_ends) * 0.5).sum(-1)
    colors = None
    if rgbs is not None:
        colors = blend_background((weights[..., None] * rgbs).sum(-2), opacities, background)
    out_extras = None
    if extras is not None:
        if extras_mode == "weighted":
            out_extras = (weights[..., None] * extras).sum(-2)
        else:
            out_extras = torch.where(mask[..., None], extras, torch.zeros_like(extras)).sum(-2)
    return CompositeResult(colors, opacities, depths, out_extras, weights, trans)


def composite_backward(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None,
                       n_rays: int, extras: Tensor | None, extras_mode: str, weights: Tensor, trans: Tensor,
                       grad_colors: Tensor | None, grad_opacities: Tensor, grad_depths: Tensor,
                       grad_extras: Tensor | None, grad_weights: Tensor, grad_trans: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Closed-form gradients of :func:`composite` *without* background (the spec of the CUDA backward kernel).

    ``grad_colors`` is the gradient w.r.t. the un-blended colour ``sum_i w_i rgb_i``. With
    ``g_i = dL/dw_i = grad_weights_i + gO + gD * t_mid_i + gC . rgb_i (+ gE . e_i if weighted)`` and
    ``a_i = sigma_i * delta_i``, since ``dw_i/da_i = T_{i+1}``, ``dw_k/da_i = -w_k`` and ``dT_k/da_i = -T_k``
    for ``k > i``::

        dL/da_i      = g_i * T_{i+1} - sum_{k>i} (g_k w_k + gT_k T_k)
        dL/dsigma_i  = dL/da_i * delta_i
        dL/dt_end_i  = dL/da_i * sigma_i + gD * w_i / 2
        dL/dt_start_i = -dL/da_i * sigma_i + gD * w_i / 2
        dL/drgb_i    = gC * w_i,    dL/de_i = gE * w_i ("weighted") or gE ("sum")

    Returns:
        (grad_t_starts [S], grad_t_ends [S], grad_sigmas [S], grad_rgbs [S, C_rgb] or None, grad_extras [S, C] or None)
    """
    mids = (t_starts + t_ends) * 0.5
    g = grad_weights + grad_opacities[ray_indices] + grad_depths[ray_indices] * mids  # [S]
    if rgbs is not None and grad_colors is not None:
        g = g + (grad_colors[ray_indices] * rgbs).sum(-1)
    if extras is not None and grad_extras is not None and extras_mode == "weighted":
        g = g + (grad_extras[ray_indices] * extras).sum(-1)
    contrib = g * weights + grad_trans * trans  # [S]
    inclusive = exclusive_cumsum_packed(contrib, ray_indices, n_rays) + contrib
    after = segment_sum(contrib, ray_indices, n_rays)[ray_indices] - inclusive  # sum over k > i
    grad_thickness = g * (trans - weights) - after  # trans - weights = T_{i+1}
    grad_sigmas = grad_thickness * (t_ends - t_starts)
    half_depth = grad_depths[ray_indices] * weights * 0.5
    grad_t_ends = grad_thickness * sigmas + half_depth
    grad_t_starts = -grad_thickness * sigmas + half_depth
    grad_rgbs = None
    if rgbs is not None:
        grad_rgbs = grad_colors[ray_indices] * weights[:, None] if grad_colors is not None else torch.zeros_like(rgbs)
    grad_ex = None
    if extras is not None:
        if grad_extras is None:
            grad_ex = torch.zeros_like(extras)
        elif extras_mode == "weighted":
            grad_ex = grad_extras[ray_indices] * weights[:, None]
        else:
            grad_ex = grad_extras[ray_indices].clone()
    return grad_t_starts, grad_t_ends, grad_sigmas, grad_rgbs, grad_ex
