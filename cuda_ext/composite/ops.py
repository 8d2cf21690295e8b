"""Compositing ops: input checks, backend dispatch (torch | nerfacc | cuda | auto) and the CUDA autograd Function.

Same names and signatures as :mod:`cuda_ext.composite.reference` plus ``backend``. Backends:

- ``torch``: the reference (autograd), any device, packed and padded.
- ``nerfacc``: ``nerfacc.render_weight_from_density`` + ``accumulate_along_rays``. Its packed scan needs CUDA, so on
  CPU packed samples go through the padded layout (``packed_to_padded``) and its batched functions, which run on
  CPU. Extras in "sum" mode use a plain segment sum (nerfacc has no such op).
- ``cuda``: ``composite.cu`` (forward and closed-form backward, one thread per ray), packed layout only; padded
  inputs use the reference.
- ``auto``: cuda for CUDA tensors when the extension builds, else torch; the choice is logged once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cuda_ext.build import resolve_backend
from cuda_ext.composite import reference
from cuda_ext.composite.reference import (
    CompositeResult,
    blend_background,
    pack_info,
    packed_to_padded,
    padded_to_packed,
    segment_sum,
)

__all__ = ["CompositeResult", "composite", "composite_padded"]


def _check_packed(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None,
                  extras: Tensor | None, n_rays: int) -> None:
    n = ray_indices.shape[0] if ray_indices.dim() == 1 else -1
    if n < 0 or ray_indices.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"ray_indices must be [S] int64, got {tuple(ray_indices.shape)} {ray_indices.dtype}")
    for name, tensor in (("t_starts", t_starts), ("t_ends", t_ends), ("sigmas", sigmas)):
        if tuple(tensor.shape) != (n,):
            raise ValueError(f"{name} must be [S] = [{n}] like ray_indices, got {tuple(tensor.shape)}")
    for name, tensor in (("rgbs", rgbs), ("extras", extras)):
        if tensor is not None and (tensor.dim() != 2 or tensor.shape[0] != n):
            raise ValueError(f"{name} must be [S, C] with S = {n}, got {tuple(tensor.shape)}")
    if n_rays < 0:
        raise ValueError(f"n_rays must be >= 0, got {n_rays}")
    if n and n_rays == 0:
        raise ValueError(f"{n} samples but n_rays is 0")


def composite(ray_indices: Tensor, t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None,
              n_rays: int, extras: Tensor | None = None, extras_mode: str = "weighted",
              background: Tensor | float | None = None, backend: str = "auto") -> CompositeResult:
    """Packed compositing; see :func:`cuda_ext.composite.reference.composite` for arguments and maths."""
    _check_packed(ray_indices, t_starts, t_ends, sigmas, rgbs, extras, n_rays)
    ray_indices = ray_indices.long()
    name, module = resolve_backend("composite", backend, sigmas.device.type, extra=("nerfacc",))
    if name == "torch":
        return reference.composite(ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, extras, extras_mode,
                                   background)
    if name == "nerfacc":
        return _composite_nerfacc(ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, extras, extras_mode,
                                  background)
    reference._check_mode(extras_mode)
    return _composite_cuda(module, ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, extras, extras_mode,
                           background)


def composite_padded(t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, rgbs: Tensor | None, mask: Tensor,
                     extras: Tensor | None = None, extras_mode: str = "weighted",
                     background: Tensor | float | None = None, backend: str = "auto") -> CompositeResult:
    """Padded compositing ([R, M] samples + mask); see :func:`cuda_ext.composite.reference.composite_padded`."""
    if t_starts.dim() != 2 or any(t.shape != t_starts.shape for t in (t_ends, sigmas, mask)):
        raise ValueError(f"t_starts, t_ends, sigmas and mask must share one [R, M] shape, got "
                         f"{[tuple(t.shape) for t in (t_starts, t_ends, sigmas, mask)]}")
    name, _ = resolve_backend("composite", backend, sigmas.device.type, extra=("nerfacc",))
    if name == "nerfacc":
        return _composite_padded_nerfacc(t_starts, t_ends, sigmas, rgbs, mask, extras, extras_mode, background)
    return reference.composite_padded(t_starts, t_ends, sigmas, rgbs, mask, extras, extras_mode, background)


# --------------------------------------------------------------------------------------------------------- nerfacc


def _composite_padded_nerfacc(t_starts, t_ends, sigmas, rgbs, mask, extras, extras_mode, background):
    from nerfacc import accumulate_along_rays, render_weight_from_density

    reference._check_mode(extras_mode)
    zeros = torch.zeros_like(sigmas)
    # masked entries become empty intervals with zero density: no weight, no attenuation
    weights, trans, _ = render_weight_from_density(torch.where(mask, t_starts, zeros), torch.where(mask, t_ends, zeros),
                                                   torch.where(mask, sigmas, zeros))
    opacities = accumulate_along_rays(weights)[..., 0]
    depths = accumulate_along_rays(weights, ((t_starts + t_ends) * 0.5)[..., None])[..., 0]
    colors = None
    if rgbs is not None:
        colors = blend_background(accumulate_along_rays(weights, rgbs), opacities, background)
    out_extras = None
    if extras is not None:
        if extras_mode == "weighted":
            out_extras = accumulate_along_rays(weights, extras)
        else:
            out_extras = accumulate_along_rays(mask.to(extras.dtype), extras)
    return CompositeResult(colors, opacities, depths, out_extras, weights, trans)


def _composite_nerfacc(ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, extras, extras_mode, background):
    from nerfacc import accumulate_along_rays, render_weight_from_density

    reference._check_mode(extras_mode)
    if sigmas.is_cuda:
        weights, trans, _ = render_weight_from_density(t_starts, t_ends, sigmas, ray_indices=ray_indices,
                                                       n_rays=n_rays)
    else:
        # nerfacc's packed scan is CUDA-only; its batched scan runs anywhere, so go through the padded layout
        padded = [packed_to_padded(x, ray_indices, n_rays)[0] for x in (t_starts, t_ends, sigmas)]
        mask = packed_to_padded(sigmas, ray_indices, n_rays)[1]
        weights_padded, trans_padded, _ = render_weight_from_density(*padded)
        weights, trans = weights_padded[mask], trans_padded[mask]
    opacities = accumulate_along_rays(weights, None, ray_indices, n_rays)[:, 0]
    depths = accumulate_along_rays(weights, ((t_starts + t_ends) * 0.5)[:, None], ray_indices, n_rays)[:, 0]
    colors = None
    if rgbs is not None:
        colors = blend_background(accumulate_along_rays(weights, rgbs, ray_indices, n_rays), opacities, background)
    out_extras = None
    if extras is not None:
        out_extras = (accumulate_along_rays(weights, extras, ray_indices, n_rays) if extras_mode == "weighted"
                      else segment_sum(extras, ray_indices, n_rays))
    return CompositeResult(colors, opacities, depths, out_extras, weights, trans)


# ------------------------------------------------------------------------------------------------------------ cuda


class _CompositeCUDA(torch.autograd.Function):
    """composite.cu forward/backward. Inputs are contiguous; absent rgbs/extras are [S, 0] tensors."""

    @staticmethod
    def forward(ctx, module, info, t_starts, t_ends, sigmas, rgbs, extras, sum_extras):
        weights, trans, opacities, depths, colors, out_extras = module.composite_forward(
            info, t_starts, t_ends, sigmas, rgbs, extras, sum_extras)
        ctx.module, ctx.sum_extras = module, sum_extras
        ctx.save_for_backward(info, t_starts, t_ends, sigmas, rgbs, extras, weights, trans)
        return weights, trans, opacities, depths, colors, out_extras

    @staticmethod
    def backward(ctx, grad_weights, grad_trans, grad_opacities, grad_depths, grad_colors, grad_extras):
        info, t_starts, t_ends, sigmas, rgbs, extras, weights, trans = ctx.saved_tensors
        grads = [g.contiguous() if g is not None else torch.zeros_like(ref) for g, ref in
                 ((grad_weights, weights), (grad_trans, trans), (grad_opacities, info[:, 0].to(weights.dtype)),
                  (grad_depths, info[:, 0].to(weights.dtype)),
                  (grad_colors, weights.new_zeros(info.shape[0], rgbs.shape[1])),
                  (grad_extras, weights.new_zeros(info.shape[0], extras.shape[1])))]
        g_ts, g_te, g_sig, g_rgb, g_ex = ctx.module.composite_backward(
            info, t_starts, t_ends, sigmas, rgbs, extras, weights, trans, *grads, ctx.sum_extras)
        return None, None, g_ts, g_te, g_sig, g_rgb, g_ex, None


def _composite_cuda(module, ray_indices, t_starts, t_ends, sigmas, rgbs, n_rays, extras, extras_mode, background):
    n = sigmas.shape[0]
    info = pack_info(ray_indices, n_rays).contiguous()
    rgbs_in = rgbs.contiguous() if rgbs is not None else sigmas.new_zeros(n, 0)
    extras_in = extras.contiguous() if extras is not None else sigmas.new_zeros(n, 0)
    weights, trans, opacities, depths, colors, out_extras = _CompositeCUDA.apply(
        module, info, t_starts.contiguous(), t_ends.contiguous(), sigmas.contiguous(), rgbs_in, extras_in,
        extras_mode == "sum")
    colors = blend_background(colors, opacities, background) if rgbs is not None else None
    return CompositeResult(colors, opacities, depths, out_extras if extras is not None else None, weights, trans)


# re-exported layout helpers, so callers need only this module
__all__ += ["pack_info", "packed_to_padded", "padded_to_packed", "segment_sum"]
