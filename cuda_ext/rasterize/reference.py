"""3D Gaussian splatting, pure PyTorch and dense: the readable spec of the tile rasterizers (C++ and gsplat).

Conventions (docs/dataset.md): OpenCV camera axes (x right, y down, z forward), ``viewmat`` world → camera [4, 4],
intrinsics ``K`` mapping camera points to continuous pixel coordinates, pixel (i, j) centred at (i + 0.5, j + 0.5).

Projection (EWA splatting, Zwicker et al. 2002; as in 3DGS, Kerbl et al. 2023):

    t = R μ + T                                      camera-space centre, depth z = t_z
    μ' = (fx t_x / z + cx, fy t_y / z + cy)          projected centre
    J = [[fx / z, 0, -fx t_x / z²], [0, fy / z, -fy t_y / z²]]   the projection's Jacobian at t (t_x / z, t_y / z
                                                     clamped to the image edges + 0.3 half fields of view, so that
                                                     Gaussians far off screen keep a bounded footprint)
    Σ' = J R Σ Rᵀ Jᵀ + ε I                           screen covariance, ε = 0.3 px² low-pass (a Gaussian covers at
                                                     least about one pixel; degenerate covariances stay invertible)
    conic = Σ'⁻¹ as (a, b, c) = [[a, b], [b, c]]     radii = ceil(3.33 sqrt(Σ'_xx)), ceil(3.33 sqrt(Σ'_yy)): the
                                                     box of the ellipse where α can reach 1/255 (as gsplat's)

A Gaussian is kept when near < z < far. Compositing, front to back in depth order, per pixel p:

    α_i = min(α_max, o_i exp(-½ dᵀ conic_i d)),  d = p - μ'_i;  α_i < 1/255 counts as 0, and so does a pixel
          centre outside the Gaussian's box |d_x| <= r_x, |d_y| <= r_y (the tiles it is binned to cover that box;
          outside it α < 1/255 anyway: o exp(-½ 3.33²) < 1/255 for o <= 1, so the result is that of no cut)
    T_i = ∏_{j<i} (1 - α_j);  C = Σ_i α_i T_i c_i + T_N · background
    a Gaussian after which T would drop below t_min = 1e-4 is not composited, nor any behind it (the
    rasterizers stop there)

Everything is differentiable by autograd (the cut-offs are piecewise constant).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0   # smaller alphas are skipped
ALPHA_MAX = 0.99          # a single Gaussian never makes a pixel fully opaque (keeps 1 - α invertible)
T_MIN = 1e-4              # transmittance at which compositing stops
EPS_2D = 0.3              # screen-space dilation (px²)
EXTENT_SIGMAS = 3.33      # a Gaussian's box: where alpha can still reach 1/255 (sqrt(2 ln 255) = 3.329 sigmas)
FOV_MARGIN = 0.3          # off-screen centres: the Jacobian's t_x / z, t_y / z stop this far (in half fields of
                          # view) beyond the image edges


@dataclass
class Projected:
    """Gaussians on the screen; rows of invalid Gaussians (behind the camera, outside [near, far]) are zeros."""

    means2d: Tensor   # [N, 2] pixel coordinates of the centres
    conics: Tensor    # [N, 3] (a, b, c) of the inverse screen covariance
    depths: Tensor    # [N] camera-space z
    radii: Tensor     # [N, 2] int64, extent in pixels along x and y (0: invalid)
    valid: Tensor     # [N] bool


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[N, 4] quaternions (w, x, y, z), any norm → [N, 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*quats.shape[:-1], 3, 3)


def covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances Σ = R S Sᵀ Rᵀ [N, 3, 3] from rotations [N, 4] and per-axis standard deviations [N, 3]."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project(means: Tensor, covars: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
            near: float = 0.01, far: float = 1e10, eps2d: float = EPS_2D) -> Projected:
    """Project 3-D Gaussians (centres [N, 3], covariances [N, 3, 3]) to the screen (see module docstring)."""
    R, T = viewmat[:3, :3], viewmat[:3, 3]
    t = means @ R.T + T
    z = t[:, 2]
    valid = (z > near) & (z < far)
    z_safe = torch.where(valid, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    means2d = torch.stack([fx * t[:, 0] / z_safe + cx, fy * t[:, 1] / z_safe + cy], -1)
    # the Jacobian is evaluated at the centre clamped to the image edges plus FOV_MARGIN of the half field of view
    margin_x, margin_y = FOV_MARGIN * 0.5 * width / fx, FOV_MARGIN * 0.5 * height / fy
    tx = torch.minimum(torch.maximum(t[:, 0] / z_safe, -cx / fx - margin_x), (width - cx) / fx + margin_x) * z_safe
    ty = torch.minimum(torch.maximum(t[:, 1] / z_safe, -cy / fy - margin_y), (height - cy) / fy + margin_y) * z_safe
    zeros = torch.zeros_like(z_safe)
    J = torch.stack([fx / z_safe, zeros, -fx * tx / z_safe ** 2,
                     zeros, fy / z_safe, -fy * ty / z_safe ** 2], -1).reshape(-1, 2, 3)
    JW = J @ R
    cov2d = JW @ covars @ JW.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    valid = valid & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    # the x and y extent of the ellipse d' conic d <= 2 ln 255 (3.33² > 2 ln 255 = 3.329²): alpha < 1/255 outside
    radii = torch.ceil(EXTENT_SIGMAS * torch.sqrt(torch.stack([a, c], -1))).long()
    keep = valid[:, None].to(means.dtype)
    return Projected(means2d * keep, conics * keep, z * valid, torch.where(valid[:, None], radii, 0), valid)


def rasterize(projected: Projected, colors: Tensor, opacities: Tensor, width: int, height: int,
              background: Tensor | None = None, t_min: float = T_MIN) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians into an image: (colour [H, W, C], alpha [H, W]); dense: every Gaussian
    against every pixel ([N, H, W] memory), for tests and tiny scenes."""
    p = projected
    order = torch.argsort(torch.where(p.valid, p.depths, torch.full_like(p.depths, float("inf"))), stable=True)
    order = order[p.valid[order]]
    means2d, conics = p.means2d[order], p.conics[order]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means2d.dtype, device=means2d.device) + 0.5,
                            torch.arange(width, dtype=means2d.dtype, device=means2d.device) + 0.5, indexing="ij")
    dx = xs[None] - means2d[:, 0, None, None]                      # [N, H, W]
    dy = ys[None] - means2d[:, 1, None, None]
    a, b, c = (conics[:, k, None, None] for k in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = (opacities[order, None, None] * torch.exp(power.clamp(max=0))).clamp(max=ALPHA_MAX)
    radius = p.radii[order, :, None, None].to(alpha.dtype)
    inside = (dx.abs() <= radius[:, 0]) & (dy.abs() <= radius[:, 1])
    alpha = torch.where((alpha < ALPHA_MIN) | ~inside, torch.zeros_like(alpha), alpha)
    after = torch.cumprod(1 - alpha, 0)                            # T after each Gaussian
    before = torch.cat([torch.ones_like(after[:1]), after[:-1]])
    weights = torch.where(after >= t_min, alpha * before, torch.zeros_like(alpha))
    image = torch.einsum("nhw,nc->hwc", weights, colors[order])
    alpha_out = weights.sum(0)
    if background is not None:
        image = image + (1 - alpha_out)[..., None] * background
    return image, alpha_out


def render(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmat: Tensor,
           K: Tensor, width: int, height: int, background: Tensor | None = None, near: float = 0.01,
           far: float = 1e10) -> tuple[Tensor, Tensor, Projected]:
    """Project and rasterize: (colour [H, W, C], alpha [H, W], the projection)."""
    projected = project(means, covariance(quats, scales), viewmat, K, width, height, near, far)
    image, alpha = rasterize(projected, colors, opacities, width, height, background)
    return image, alpha, projected
