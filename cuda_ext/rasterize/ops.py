"""Gaussian splatting rasterizer: input checks, autograd, backend dispatch (torch | cpu | auto).

    from cuda_ext.rasterize import ops, reference
    projected = reference.project(means, reference.covariance(quats, scales), viewmat, K, width, height)
    image, alpha = ops.rasterize(projected, colors, opacities, width, height, background)

Backends:
    torch  reference.rasterize: dense, any device and dtype, for tests and tiny scenes.
    cpu    rasterize_cpu.cpp: 16x16 tiles, OpenMP, float32 CPU tensors; gradients w.r.t. the projected centres,
           conics, colours and opacities (autograd carries them on to the 3-D parameters through `project`).
    auto   cpu for float32 CPU tensors when it builds, else torch.
The projection stays in PyTorch (a few operations per Gaussian).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import torch
from torch import Tensor

from cuda_ext.build import resolve_backend
from cuda_ext.rasterize import reference
from cuda_ext.rasterize.reference import T_MIN, Projected

OP = "rasterize"
backend_calls: Counter[str] = Counter()


class _RasterizeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, depths, radii, width, height, t_min, module):
        image, alpha, offsets, ids, last = module.forward(means2d, conics, colors, opacities, depths, radii, width,
                                                          height, t_min)
        ctx.module = module
        ctx.save_for_backward(means2d, conics, colors, opacities, radii, alpha, offsets, ids, last)
        ctx.mark_non_differentiable(offsets, ids, last)
        return image, alpha, offsets, ids, last

    @staticmethod
    def backward(ctx, grad_image, grad_alpha, *_):
        means2d, conics, colors, opacities, radii, alpha, offsets, ids, last = ctx.saved_tensors
        grad_image = colors.new_zeros(alpha.shape + colors.shape[1:]) if grad_image is None \
            else grad_image.contiguous()
        grad_alpha = torch.zeros_like(alpha) if grad_alpha is None else grad_alpha.contiguous()
        grads = ctx.module.backward(means2d, conics, colors, opacities, radii, alpha, offsets, ids, last, grad_image,
                                    grad_alpha)
        return (*grads, None, None, None, None, None, None)


def rasterize(projected: Projected, colors: Tensor, opacities: Tensor, width: int, height: int,
              background: Tensor | None = None, t_min: float = T_MIN, *, backend: str = "auto"
              ) -> tuple[Tensor, Tensor]:
    """(colour [H, W, C], alpha [H, W]) of projected Gaussians; the maths of reference.rasterize."""
    if colors.dim() != 2 or colors.shape[0] != projected.means2d.shape[0] or opacities.shape != colors.shape[:1]:
        raise ValueError(f"colors must be [N, C] and opacities [N] for N = {projected.means2d.shape[0]} Gaussians, "
                         f"got {tuple(colors.shape)} and {tuple(opacities.shape)}")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    name, module = resolve_backend(OP, backend, colors.device.type)
    if module is None or colors.dtype != torch.float32:
        backend_calls["torch"] += 1
        return reference.rasterize(projected, colors, opacities, width, height, background, t_min)
    backend_calls[name] += 1
    p = projected
    radii = torch.where(p.valid[:, None], p.radii, torch.zeros_like(p.radii)).contiguous()
    image, alpha, *_ = _RasterizeCPU.apply(p.means2d.float().contiguous(), p.conics.float().contiguous(),
                                           colors.contiguous(), opacities.float().contiguous(),
                                           p.depths.float().contiguous(), radii, int(width), int(height),
                                           float(t_min), module)
    if background is not None:
        image = image + (1 - alpha)[..., None] * background
    return image, alpha


def _gsplat():
    try:
        import gsplat
    except ImportError:
        return None
    return gsplat


def splat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmat: Tensor,
          K: Tensor, width: int, height: int, *, crop: tuple[int, int, int, int] | None = None,
          backend: str = "auto") -> tuple[Tensor, Tensor, Tensor | None]:
    """Project and rasterize 3-D Gaussians: (colour [H, W, C], alpha [H, W], the projected centres [N, 2] or None).

    Args:
        means [N, 3], quats [N, 4] (w, x, y, z, any norm), scales [N, 3] (standard deviations), opacities [N],
        colors [N, C]; viewmat [4, 4] world → camera (OpenCV axes); K [3, 3] at this resolution.
        backend: auto (CUDA tensors: ``gsplat.rasterization`` when gsplat is installed; else the projection of
            reference.py and :func:`rasterize`), gsplat, or any :func:`rasterize` backend.
        crop: (x0, y0, w, h) renders only that window of the ``width`` x ``height`` image, with exactly the
            image's pixel values: the projection (whose off-screen Jacobian clamp depends on the viewport) is the
            whole image's. gsplat projects for the window itself (its clamp then follows the window).

    The projected centres (None from gsplat, whose own are internal) carry the screen-space gradient that
    densification statistics read (``means2d.retain_grad()`` before backward).
    """
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat() is not None)
    if use_gsplat:
        gsplat = _gsplat()
        if gsplat is None:
            raise RuntimeError("backend='gsplat' needs the gsplat package (pip install -e '.[gpu]')")
        backend_calls["gsplat"] += 1
        if crop is not None:
            K = K.clone()
            K[0, 2] -= crop[0]
            K[1, 2] -= crop[1]
            width, height = crop[2], crop[3]
        image, alpha, _ = gsplat.rasterization(means, quats, scales, opacities, colors, viewmat[None], K[None],
                                               int(width), int(height), eps2d=reference.EPS_2D, packed=False)
        return image[0], alpha[0, ..., 0], None
    projected = reference.project(means, reference.covariance(quats, scales), viewmat, K, width, height)
    if crop is not None:
        shift = torch.tensor(crop[:2], dtype=projected.means2d.dtype, device=means.device)
        projected = dataclasses.replace(projected, means2d=projected.means2d - shift)
        width, height = crop[2], crop[3]
    image, alpha = rasterize(projected, colors, opacities, width, height, backend=backend)
    return image, alpha, projected.means2d
