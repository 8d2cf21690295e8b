"""Camera rays (OpenCV convention) and ray/box intersection.

Camera convention: OpenCV / COLMAP — camera x right, y down, z forward (the camera looks along +z); ``c2w`` maps
camera to world coordinates. Pixel ``(u, v)`` (column, row) has its centre at ``(u + 0.5, v + 0.5)``, so the
centre of the top-left pixel is 0.5 px from the image corner.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["generate_rays", "pixel_grid", "ray_aabb_intersect"]


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> Tensor:
    """Integer pixel coordinates ``(u, v)`` of every pixel, row-major: [H * W, 2] float32."""
    v, u = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1).float()


def generate_rays(c2w: Tensor, K: Tensor, pixels: Tensor | None = None, height: int | None = None,
                  width: int | None = None, normalize: bool = True) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel centres.

    Args:
        c2w: [3, 4] or [4, 4] camera-to-world (OpenCV axes), or [N, 3|4, 4] one per pixel.
        K: [3, 3] intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels, or [N, 3, 3].
        pixels: [N, 2] integer pixel coordinates (u = column, v = row), e.g. sampled pixels; default: every pixel
            of a ``height`` x ``width`` image in row-major order.
        normalize: unit-length directions (then the ray parameter t is a distance in world units).

    Returns:
        rays_o [N, 3], rays_d [N, 3].

    The camera-space direction is ``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)`` and the world direction is
    ``R @ d_cam`` with ``R = c2w[:3, :3]``. Example: with identity c2w, fx = fy = 2, cx = cy = 1, the pixel (0, 0)
    gives d_cam = (-0.25, -0.25, 1) before normalisation (up-left of the optical axis).
    """
    if pixels is None:
        if height is None or width is None:
            raise ValueError("generate_rays needs pixels [N, 2] or both height and width")
        pixels = pixel_grid(height, width, device=c2w.device)
    if pixels.dim() != 2 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels must be [N, 2] (u, v), got {tuple(pixels.shape)}")
    if c2w.shape[-2:] not in ((3, 4), (4, 4)):
        raise ValueError(f"c2w must be [..., 3, 4] or [..., 4, 4], got {tuple(c2w.shape)}")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be [..., 3, 3], got {tuple(K.shape)}")
    pixels = pixels.to(c2w.dtype)
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    dirs_cam = torch.stack([(pixels[:, 0] + 0.5 - cx) / fx, (pixels[:, 1] + 0.5 - cy) / fy,
                            torch.ones_like(pixels[:, 0])], dim=-1)  # [N, 3]
    rotation = c2w[..., :3, :3]
    rays_d = (rotation @ dirs_cam[..., None])[..., 0] if rotation.dim() == 3 else dirs_cam @ rotation.T
    if normalize:
        rays_d = rays_d / torch.linalg.norm(rays_d, dim=-1, keepdim=True)
    rays_o = c2w[..., :3, 3].expand_as(rays_d)
    return rays_o.contiguous(), rays_d


def ray_aabb_intersect(rays_o: Tensor, rays_d: Tensor, aabb: Tensor, near_plane: float = 0.0,
                       far_plane: float = float("inf")) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit of rays through an axis-aligned box (slab method).

    Args:
        rays_o, rays_d: [R, 3] origins and directions (need not be unit length; t is in units of |rays_d|).
        aabb: [6] ``(xmin, ymin, zmin, xmax, ymax, zmax)``.
        near_plane, far_plane: clamp the interval to ``[near_plane, far_plane]`` (e.g. skip points behind a camera).

    Returns:
        near [R], far [R], hit [R] bool. A ray hits when ``far > near`` after clamping; for rays that miss,
        ``near = far = inf`` (so ``t < far`` loops stop at once and the value is never mistaken for a distance).

    Per axis, the ray is inside the slab ``[lo, hi]`` for ``t`` between ``(lo - o) / d`` and ``(hi - o) / d``;
    ``near`` is the largest entry and ``far`` the smallest exit. A zero direction component means "always inside"
    when ``lo <= o <= hi`` and "never" otherwise. Example: o = (0, 0, -2), d = (0, 0, 1), unit box [-1, 1]^3 →
    near = 1, far = 3.
    """
    if rays_o.shape != rays_d.shape or rays_o.shape[-1:] != (3,):
        raise ValueError(f"rays_o and rays_d must both be [R, 3], got {tuple(rays_o.shape)}, {tuple(rays_d.shape)}")
    aabb = aabb.to(rays_o)
    lo, hi = aabb[:3], aabb[3:]
    parallel = rays_d == 0
    safe_d = torch.where(parallel, torch.ones_like(rays_d), rays_d)  # avoid 0 * inf = nan below
    t_lo, t_hi = (lo - rays_o) / safe_d, (hi - rays_o) / safe_d
    t_enter, t_exit = torch.minimum(t_lo, t_hi), torch.maximum(t_lo, t_hi)
    inside = (rays_o >= lo) & (rays_o <= hi)
    inf = torch.full_like(t_enter, float("inf"))
    t_enter = torch.where(parallel, torch.where(inside, -inf, inf), t_enter)
    t_exit = torch.where(parallel, torch.where(inside, inf, -inf), t_exit)
    near = t_enter.amax(-1).clamp_min(near_plane)
    far = t_exit.amin(-1).clamp_max(far_plane)
    hit = far > near
    missed = torch.full_like(near, float("inf"))
    return torch.where(hit, near, missed), torch.where(hit, far, missed), hit
