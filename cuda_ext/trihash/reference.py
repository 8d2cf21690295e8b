"""Tri-plane multiresolution 2D hash grid, pure PyTorch: the readable spec of the C++ and CUDA paths.

A point p in [-bound, bound]^3 is projected onto three planes, xy (x, y), yz (y, z) and xz (x, z); each plane is a
2D multiresolution grid (see cuda_ext/hashgrid/reference.py for one level's maths with D = 2): dense levels while
(R+1)^2 vertices fit the level's rows, else the hash (x * 1 xor y * 2654435761) mod S, bilinear interpolation.

    out = [ xy level 0..L-1 | yz level 0..L-1 | xz level 0..L-1 ]      [N, 3 * L * F], features fastest

Default (SyncTalk's): 12 levels x 1 feature, resolutions 64 → 512, 2^14 rows per level: a 36-d code.
"""

from __future__ import annotations

import torch

from cuda_ext.hashgrid.reference import grid_encode

# Coordinates each plane reads: xy, yz, xz.
PLANE_AXES = ((0, 1), (1, 2), (0, 2))


def trihash_encode(points: torch.Tensor, embeddings: torch.Tensor, offsets, resolutions,
                   bound: float = 1.0) -> torch.Tensor:
    """Tri-plane hash encoding.

    Args:
        points: [N, 3] float world coordinates; [-bound, bound]^3 maps to the unit cube, points outside are clamped
            onto its faces (and get no point gradient there).
        embeddings: [3, E, F] float tables of the xy, yz and xz planes, E = offsets[-1].
        offsets: [L+1] ints, first row of each level (cuda_ext.hashgrid.reference.level_layout(..., dim=2)).
        resolutions: [L] ints, cells per axis.
        bound: half-size of the box, > 0.

    Returns:
        [N, 3 * L * F], plane-major then level, differentiable w.r.t. embeddings and points.

    Example: one level, R = 2, F = 1, bound = 1, embeddings[plane, i] = 10 * plane + i: the origin sits on vertex
    (1, 1) of every plane, row 1 + 1 * 3 = 4, so the code is [4, 14, 24].
    """
    units = ((points + bound) / (2 * bound)).clamp(0, 1)  # [N, 3]
    return torch.cat([grid_encode(units[:, list(axes)], embeddings[plane], offsets, resolutions)
                      for plane, axes in enumerate(PLANE_AXES)], dim=-1)
