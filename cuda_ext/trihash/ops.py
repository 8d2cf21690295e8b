"""Tri-plane 2D hash grid: input checks, autograd, backend dispatch (torch | cpu | cuda | auto).

    from cuda_ext.hashgrid.reference import level_layout
    from cuda_ext.trihash import ops
    resolutions, offsets = level_layout(12, 64, 512, log2_table_size=14, dim=2)
    features = ops.trihash_encode(points, embeddings, offsets, resolutions, bound=1.0)   # [N, 36]

Backends:
    torch  reference.py, any device and float dtype, gradients w.r.t. embeddings and points.
    cpu    trihash_cpu.cpp (OpenMP), float32 CPU tensors, gradient w.r.t. embeddings.
    cuda   trihash.cu, float32 CUDA tensors, gradient w.r.t. embeddings.
    auto   the fast path of the tensors' device when it builds, else torch; logs its choice once.
The fast paths take float32 only and give no point gradient: for other dtypes, or when the points require grad,
every backend runs the reference (logged once).
"""

from __future__ import annotations

from collections import Counter

import torch

from cuda_ext.build import resolve_backend
from cuda_ext.hashgrid.ops import GridEncodeFunction, check_inputs, fast_path_blocker, log_fallback_once
from cuda_ext.trihash import reference

OP = "trihash"
# Backend that actually ran, per call: lets tests prove a fast path was exercised.
backend_calls: Counter[str] = Counter()


def trihash_encode(points: torch.Tensor, embeddings: torch.Tensor, offsets, resolutions, bound: float = 1.0, *,
                   backend: str = "auto") -> torch.Tensor:
    """Tri-plane hash encoding (same maths and arguments as reference.trihash_encode).

    Args:
        points: [N, 3] float world coordinates in [-bound, bound]^3; outside points are clamped onto the box.
        embeddings: [3, E, F] float tables of the xy, yz, xz planes, E = offsets[-1].
        offsets: [L+1] ints; resolutions: [L] ints (level_layout(..., dim=2)).
        bound: half-size of the box, > 0.
        backend: "auto" | "torch" | "cpu" | "cuda" (module docstring).

    Returns:
        [N, 3 * L * F] features: plane-major (xy, yz, xz), then level, features fastest.
    """
    offsets, resolutions = check_inputs(points, embeddings, offsets, resolutions, bound, planes=3, op=OP)
    name, module = resolve_backend(OP, backend, points.device.type)
    blocker = fast_path_blocker(points, embeddings) if module is not None else None
    if module is None or blocker:
        if blocker:
            log_fallback_once(OP, blocker, points.device.type)
        backend_calls["torch"] += 1
        return reference.trihash_encode(points, embeddings, offsets, resolutions, bound)
    backend_calls[name] += 1
    return GridEncodeFunction.apply(points.detach().contiguous(), embeddings.contiguous(), offsets, resolutions,
                                    float(bound), module, 1)
