"""3D multiresolution hash grid: input checks, autograd, backend dispatch (torch | cpu | cuda | auto).

    from cuda_ext.hashgrid import ops, reference
    resolutions, offsets = reference.level_layout(16, 16, 2048, log2_table_size=19)
    features = ops.hashgrid_encode(points, embeddings, offsets, resolutions, bound=1.0)   # [N, 32]

Backends:
    torch  reference.py, any device and float dtype, gradients w.r.t. embeddings and points.
    cpu    hashgrid_cpu.cpp (OpenMP), float32 CPU tensors, gradient w.r.t. embeddings.
    cuda   hashgrid.cu, float32 CUDA tensors, gradient w.r.t. embeddings.
    auto   the fast path of the tensors' device when it builds, else torch; logs its choice once.
The fast paths take float32 only and give no point gradient: for other dtypes, or when the points require grad,
every backend runs the reference (logged once).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.autograd.function import once_differentiable

from cuda_ext.build import record_fallback, resolve_backend
from cuda_ext.hashgrid import reference

log = logging.getLogger("synctalk.cuda_ext")
OP = "hashgrid"
# Backend that actually ran, per call ("torch" / "cpu" / "cuda"): lets tests prove a fast path was exercised.
backend_calls: Counter[str] = Counter()
_FALLBACK_LOGGED: set[tuple[str, str, str]] = set()


def check_inputs(points: torch.Tensor, embeddings: torch.Tensor, offsets, resolutions, bound: float,
                 planes: int | None = None, op: str = OP) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Readable errors for bad inputs; returns offsets and resolutions as int tuples.

    `planes` None: embeddings [E, F]; an int P: embeddings [P, E, F] (the tri-plane layout).
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 3:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise ValueError(f"{op}: points must be [N, 3], got {shape}")
    if not points.is_floating_point():
        raise TypeError(f"{op}: points must be a float tensor, got {points.dtype}")
    expected_dim = 2 if planes is None else 3
    layout = "[E, F]" if planes is None else f"[{planes}, E, F]"
    if embeddings.dim() != expected_dim or (planes is not None and embeddings.shape[0] != planes):
        raise ValueError(f"{op}: embeddings must be {layout}, got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise TypeError(f"{op}: embeddings must be a float tensor, got {embeddings.dtype}")
    if points.device != embeddings.device:
        raise ValueError(f"{op}: points are on {points.device} but embeddings on {embeddings.device}")
    offsets = tuple(int(o) for o in offsets)
    resolutions = tuple(int(r) for r in resolutions)
    if len(offsets) != len(resolutions) + 1 or not resolutions:
        raise ValueError(f"{op}: need L >= 1 resolutions and L + 1 offsets, got {len(resolutions)} and {len(offsets)}")
    if offsets[0] != 0 or any(b <= a for a, b in zip(offsets[:-1], offsets[1:], strict=True)):
        raise ValueError(f"{op}: offsets must start at 0 and increase, got {offsets}")
    if min(resolutions) < 1:
        raise ValueError(f"{op}: resolutions must be >= 1, got {resolutions}")
    rows = embeddings.shape[-2]
    if rows != offsets[-1]:
        raise ValueError(f"{op}: embeddings have {rows} rows but offsets[-1] = {offsets[-1]}; build both with "
                         f"level_layout(...)")
    if not bound > 0:
        raise ValueError(f"{op}: bound must be > 0, got {bound}")
    return offsets, resolutions


def fast_path_blocker(points: torch.Tensor, embeddings: torch.Tensor) -> str | None:
    """Why a float32-only, embeddings-gradient-only kernel cannot run these inputs, or None when it can."""
    if points.dtype != torch.float32 or embeddings.dtype != torch.float32:
        return f"dtype {points.dtype}/{embeddings.dtype} (fast paths are float32)"
    if points.requires_grad and torch.is_grad_enabled():
        return "points require grad (fast paths give no point gradient)"
    return None


def log_fallback_once(op: str, reason: str, device_type: str = "cpu") -> None:
    """Log (once per op and reason) a call that the fast path cannot take; on CUDA it is also a recorded fallback
    (a WARNING and a line in the command's summary: the reference is much slower on the GPU)."""
    if (op, reason, device_type) not in _FALLBACK_LOGGED:
        _FALLBACK_LOGGED.add((op, reason, device_type))
        if device_type == "cuda":
            record_fallback(op, f"some calls: {reason}", "call it with float32 points that do not require grad")
        else:
            log.info("%s: using the PyTorch reference for this call: %s", op, reason)


class GridEncodeFunction(torch.autograd.Function):
    """Fast-path forward/backward of a grid encoding (this 3D grid and the tri-plane grid); the gradient flows to
    the embeddings only (points are treated as constants). `rows_dim`: the embeddings dimension holding the rows
    (0 for [E, F], 1 for the tri-plane's [3, E, F])."""

    @staticmethod
    def forward(ctx, points, embeddings, offsets, resolutions, bound, module, rows_dim):
        ctx.save_for_backward(points)
        ctx.meta = (offsets, resolutions, bound, module, embeddings.shape[rows_dim])
        return module.forward(points, embeddings, list(offsets), list(resolutions), float(bound))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (points,) = ctx.saved_tensors
        offsets, resolutions, bound, module, num_rows = ctx.meta
        grad_embeddings = None
        if ctx.needs_input_grad[1]:
            grad_embeddings = module.backward(grad_out.contiguous(), points, list(offsets), list(resolutions),
                                              float(bound), num_rows)
        return None, grad_embeddings, None, None, None, None, None


def hashgrid_encode(points: torch.Tensor, embeddings: torch.Tensor, offsets, resolutions, bound: float = 1.0, *,
                    backend: str = "auto") -> torch.Tensor:
    """3D multiresolution hash encoding (same maths and arguments as reference.hashgrid_encode).

    Args:
        points: [N, 3] float world coordinates in [-bound, bound]^3; outside points are clamped onto the box.
        embeddings: [E, F] float table, E = offsets[-1].
        offsets: [L+1] ints; resolutions: [L] ints (reference.level_layout).
        bound: half-size of the box, > 0.
        backend: "auto" | "torch" | "cpu" | "cuda" (module docstring).

    Returns:
        [N, L * F] features, level-major.
    """
    offsets, resolutions = check_inputs(points, embeddings, offsets, resolutions, bound)
    name, module = resolve_backend(OP, backend, points.device.type)
    blocker = fast_path_blocker(points, embeddings) if module is not None else None
    if module is None or blocker:
        if blocker:
            log_fallback_once(OP, blocker, points.device.type)
        backend_calls["torch"] += 1
        return reference.hashgrid_encode(points, embeddings, offsets, resolutions, bound)
    backend_calls[name] += 1
    return GridEncodeFunction.apply(points.detach().contiguous(), embeddings.contiguous(), offsets, resolutions,
                                    float(bound), module, 0)
