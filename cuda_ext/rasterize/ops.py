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
