"""Multiresolution hash grid (Instant-NGP), pure PyTorch: the readable spec the C++ and CUDA paths are tested against.

Per level l with resolution R_l (cells per axis, so R_l + 1 vertices per axis) and a table of S_l rows:

    unit   = clamp((p + bound) / (2 bound), 0, 1)                  points outside the box land on its faces
    pos    = unit * R_l,  cell = min(floor(pos), R_l - 1),  frac = pos - cell
    index  = x + y (R_l+1) + z (R_l+1)^2                              dense level: (R_l+1)^D <= S_l
           = (x * 1  xor  y * 2654435761  xor  z * 805459861) mod S_l    hashed level, uint32 arithmetic
    out_l  = sum over the 2^D cell corners c of  prod_d (frac_d if c_d else 1 - frac_d) * table[offset_l + index(c)]

The output concatenates levels: [N, L * F], level-major, features fastest. Worked example (D = 2, one level,
R = 2, dense, bound = 1): the point (0, 0) has unit (0.5, 0.5), pos (1, 1), cell (1, 1), frac (0, 0), so its
feature is exactly table[1 + 1 * 3] = table[4]; the point (0.5, 0) has pos (1.5, 1), blending table[4] and table[5]
with weights 0.5 / 0.5.

Gradients w.r.t. the table and the points both come from autograd (the point gradient is zero outside the box,
and piecewise linear inside, as for any (multi)linear interpolation).
"""

from __future__ import annotations

import math

import torch

PRIMES = (1, 2654435761, 805459861)
_UINT32 = 0xFFFFFFFF


def level_layout(num_levels: int, base_resolution: int, finest_resolution: int | None = None,
                 per_level_scale: float | None = None, log2_table_size: int = 19,
                 dim: int = 3) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolutions and table offsets of a geometric level ladder.

    Args:
        num_levels: L >= 1.
        base_resolution: cells per axis of level 0.
        finest_resolution: cells per axis of level L-1; the growth factor is (finest/base)^(1/(L-1)).
        per_level_scale: the growth factor directly (used when finest_resolution is None).
        log2_table_size: hashed levels have 2^log2_table_size rows; a level whose (R+1)^dim vertices fit is dense.
        dim: 2 for a plane, 3 for a volume.

    Returns:
        (resolutions [L], offsets [L+1]): R_l = floor(base * scale^l) and the first row of each level in the
        concatenated table, offsets[-1] being its total row count.

    Example: level_layout(2, 4, 8, log2_table_size=6, dim=2) → ((4, 8), (0, 25, 89)): 5^2 = 25 rows dense, then
    81 > 64 so the second level is hashed into 64 rows.
    """
    if num_levels < 1 or base_resolution < 1:
        raise ValueError(f"need num_levels >= 1 and base_resolution >= 1, got {num_levels}, {base_resolution}")
    if finest_resolution is not None:
        if finest_resolution < base_resolution:
            raise ValueError(f"finest_resolution {finest_resolution} < base_resolution {base_resolution}")
        scale = (finest_resolution / base_resolution) ** (1.0 / (num_levels - 1)) if num_levels > 1 else 1.0
    else:
        scale = 2.0 if per_level_scale is None else float(per_level_scale)
    table_size = 2 ** log2_table_size
    # +1e-6: base * scale^(L-1) should give `finest` exactly, not finest - 1 after rounding noise.
    resolutions = tuple(int(math.floor(base_resolution * scale ** level + 1e-6)) for level in range(num_levels))
    offsets = [0]
    for res in resolutions:
        offsets.append(offsets[-1] + min(table_size, (res + 1) ** dim))
    return resolutions, tuple(offsets)


def grid_index(corners: torch.Tensor, resolution: int, size: int) -> torch.Tensor:
    """Table row (within one level) of integer vertex coordinates.

    Args:
        corners: [..., D] int64 vertex coordinates in [0, resolution].
        resolution: cells per axis of this level.
        size: rows of this level's table; dense indexing when (resolution + 1)^D <= size, else spatial hash.

    Returns:
        [...] int64 rows in [0, size).
    """
    dim = corners.shape[-1]
    stride = resolution + 1
    if stride ** dim <= size:
        index = torch.zeros_like(corners[..., 0])
        for d in range(dim - 1, -1, -1):
            index = index * stride + corners[..., d]
        return index
    hashed = torch.zeros_like(corners[..., 0])
    for d in range(dim):
        # uint32 wrap-around of the CUDA/C++ kernels, emulated in int64 (coordinates < 2^31, primes < 2^32: no overflow)
        hashed = torch.bitwise_xor(hashed, (corners[..., d] * PRIMES[d]) & _UINT32)
    return hashed % size


def grid_encode(units: torch.Tensor, table: torch.Tensor, offsets, resolutions) -> torch.Tensor:
    """Interpolated features of points already in the unit box (all levels and corners in one gather).

    Args:
        units: [N, D] coordinates in [0, 1] (D = 2 or 3).
        table: [E, F] rows of all levels, E = offsets[-1].
        offsets: [L+1] ints, first row of each level.
        resolutions: [L] ints, cells per axis of each level.

    Returns:
        [N, L * F], level-major.
    """
    num_points, dim = units.shape
    num_levels, num_features = len(resolutions), table.shape[1]
    if num_levels == 0:
        return table.new_zeros(num_points, 0)
    device = units.device
    res = torch.tensor(resolutions, dtype=units.dtype, device=device)  # [L]
    starts = torch.tensor(offsets[:-1], dtype=torch.long, device=device)  # [L]
    sizes = torch.tensor([b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)], device=device)  # [L]
    pos = units[:, None, :] * res[:, None]  # [N, L, D]
    # the far face belongs to the last cell; floor is piecewise constant, so the cell carries no gradient
    cell = torch.minimum(pos.detach().floor(), (res - 1)[:, None])  # [N, L, D]
    frac = pos - cell  # [N, L, D], differentiable w.r.t. the points
    bits = torch.tensor([[(corner >> d) & 1 for d in range(dim)] for corner in range(2 ** dim)],
                        device=device)  # [C, D], C = 2^D corners, bit d set = +1 along axis d
    corners = cell.long()[:, :, None, :] + bits  # [N, L, C, D]
    weights = torch.ones_like(frac[:, :, None, 0])  # [N, L, 1] → [N, L, C]
    for d in range(dim):
        weights = weights * torch.where(bits[:, d].bool(), frac[:, :, None, d], 1 - frac[:, :, None, d])
    rows = starts[:, None] + _level_rows(corners, resolutions, sizes)  # [N, L, C]
    # one gather for everything: its backward is one scatter-add into one zero table (per-level gathers would
    # each allocate and fill a full-size gradient table, which dominated the runtime)
    features = table.index_select(0, rows.reshape(-1)).view(num_points, num_levels, 2 ** dim, num_features)
    return (weights[..., None] * features).sum(dim=2).reshape(num_points, num_levels * num_features)


def _level_rows(corners: torch.Tensor, resolutions, sizes: torch.Tensor) -> torch.Tensor:
    """grid_index for every level at once: corners [N, L, C, D] int64 → rows within each level [N, L, C]."""
    dim = corners.shape[-1]
    strides = torch.tensor([r + 1 for r in resolutions], device=corners.device)  # [L]
    dense = (strides ** dim <= sizes)[:, None]  # [L, 1]
    dense_rows = torch.zeros_like(corners[..., 0])
    hashed = torch.zeros_like(corners[..., 0])
    for d in range(dim - 1, -1, -1):
        dense_rows = dense_rows * strides[:, None] + corners[..., d]
    for d in range(dim):
        hashed = torch.bitwise_xor(hashed, (corners[..., d] * PRIMES[d]) & _UINT32)
    return torch.where(dense, dense_rows, hashed % sizes[:, None])


def hashgrid_encode(points: torch.Tensor, embeddings: torch.Tensor, offsets, resolutions,
                    bound: float = 1.0) -> torch.Tensor:
    """3D multiresolution hash encoding with trilinear interpolation.

    Args:
        points: [N, 3] float, world coordinates; the box [-bound, bound]^3 maps to the unit cube. Points outside
            are clamped onto the box faces (and get no point gradient).
        embeddings: [E, F] float table, all levels concatenated, E = offsets[-1].
        offsets: [L+1] ints (see level_layout).
        resolutions: [L] ints.
        bound: half-size of the box, > 0.

    Returns:
        [N, L * F] in embeddings' dtype, differentiable w.r.t. embeddings and points.
    """
    units = ((points + bound) / (2 * bound)).clamp(0, 1)  # [N, 3]
    return grid_encode(units, embeddings, offsets, resolutions)
