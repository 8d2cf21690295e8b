"""Tri-plane hash grid ladder: reference vs a naive loop + gradcheck, C++ vs reference, edges, nvcc, CUDA."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import requires_cuda

from cuda_ext.build import load, nvcc_compile_check
from cuda_ext.hashgrid.reference import level_layout
from cuda_ext.trihash import ops, reference

REPO = Path(__file__).resolve().parents[2]
CU_FILE = Path(ops.__file__).with_name("trihash.cu")
# Two levels of a 2D grid over 16 rows: level 0 (3^2 = 9 vertices) is dense, level 1 (6^2 = 36) is hashed.
TINY = level_layout(2, 2, 5, log2_table_size=4, dim=2)
DEFAULT = level_layout(12, 64, 512, log2_table_size=14, dim=2)  # SyncTalk's: 36-d code


def naive_trihash(points, tables, offsets, resolutions, bound):
    """The spec as plain Python loops over points, planes, levels and the 4 corners (float64 via Python floats)."""
    out = []
    for point in points.tolist():
        units = [min(max((c + bound) / (2 * bound), 0.0), 1.0) for c in point]
        row = []
        for plane, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):
            for level, res in enumerate(resolutions):
                size = offsets[level + 1] - offsets[level]
                pos = [units[a] * res, units[b] * res]
                cell = [min(math.floor(x), res - 1) for x in pos]
                frac = [x - c for x, c in zip(pos, cell, strict=True)]
                feature = [0.0] * tables.shape[2]
                for dx in (0, 1):
                    for dy in (0, 1):
                        x, y = cell[0] + dx, cell[1] + dy
                        weight = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                        if (res + 1) ** 2 <= size:
                            index = x + y * (res + 1)
                        else:
                            index = (x ^ ((y * 2654435761) % 2**32)) % size
                        values = tables[plane, offsets[level] + index].tolist()
                        feature = [f + weight * v for f, v in zip(feature, values, strict=True)]
                row += feature
        out.append(row)
    return torch.tensor(out, dtype=torch.float64).reshape(len(out), -1)


def random_inputs(layout, num_points, features=1, dtype=torch.float32, bound=1.0, seed=0):
    resolutions, offsets = layout
    gen = torch.Generator().manual_seed(seed)
    points = (torch.rand(num_points, 3, generator=gen, dtype=dtype) * 2 - 1) * bound
    tables = torch.rand(3, offsets[-1], features, generator=gen, dtype=dtype) * 2 - 1
    return points, tables, offsets, resolutions


# --- rung 1 ------------------------------------------------------------------------------------------------------

def test_layouts():
    assert TINY == ((2, 5), (0, 9, 25))
    resolutions, offsets = DEFAULT
    assert resolutions[0] == 64 and resolutions[-1] == 512 and len(resolutions) == 12
    assert offsets[1] == 65 ** 2  # level 0 dense, the finer levels hashed into 2^14 rows
    assert offsets[-1] - offsets[-2] == 2 ** 14


def test_reference_matches_naive_loop():
    points, tables, offsets, resolutions = random_inputs(TINY, 5, features=2, dtype=torch.float64, bound=1.5)
    expected = naive_trihash(points, tables, offsets, resolutions, 1.5)
    got = reference.trihash_encode(points, tables, offsets, resolutions, 1.5)
    assert got.shape == (5, 3 * 2 * 2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_reference_hand_values():
    # docstring example: one level, R = 2, tables[plane, i] = 10 * plane + i; the origin is vertex (1, 1) → row 4
    tables = torch.stack([10 * plane + torch.arange(9.0) for plane in range(3)])[..., None]
    got = reference.trihash_encode(torch.zeros(1, 3), tables, (0, 9), (2,))
    assert got.tolist() == [[4.0, 14.0, 24.0]]
    # (0.5, 0, -1): xy plane at pos (1.5, 1) → rows 4 and 5 half each; yz (1, 0) → row 1; xz (1.5, 0) → rows 1, 2
    got = reference.trihash_encode(torch.tensor([[0.5, 0.0, -1.0]]), tables, (0, 9), (2,))
    assert got.tolist() == [[4.5, 11.0, 21.5]]


def test_reference_gradcheck_embeddings_and_points():
    points, tables, offsets, resolutions = random_inputs(TINY, 5, features=2, dtype=torch.float64, seed=1)
    points.requires_grad_(True)
    tables.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: reference.trihash_encode(p, t, offsets, resolutions, 1.0),
                                    (points, tables), eps=1e-6, atol=1e-6)


# --- rung 2 ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_module():
    module, status = load("trihash", "cpu")
    if module is None:
        print(f"trihash C++ build unavailable: {status}")
        pytest.skip(f"trihash C++ extension did not build: {status}")
    return module


def fwd_bwd(points, tables, offsets, resolutions, bound, backend, upstream_seed=3):
    tables = tables.clone().requires_grad_(True)
    out = ops.trihash_encode(points, tables, offsets, resolutions, bound, backend=backend)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed), dtype=out.dtype)
    out.backward(upstream.to(out.device))
    return out.detach(), tables.grad


def assert_rel_close(got, expected, tol=1e-5):
    # fp32: both sides do the same float ops per corner; only the summation order (corners, and points sharing a
    # row in backward) differs, a few ulps of the largest magnitude, far below 1e-5.
    scale = expected.abs().max().clamp_min(1e-30)
    assert ((got - expected).abs().max() / scale).item() < tol


@pytest.mark.parametrize("features,bound", [(1, 1.0), (2, 0.5), (4, 2.0)])
def test_cpu_matches_reference(cpu_module, features, bound):
    points, tables, offsets, resolutions = random_inputs(DEFAULT, 4000, features=features, bound=bound,
                                                         seed=features)
    before = ops.backend_calls["cpu"]
    out_cpu, grad_cpu = fwd_bwd(points, tables, offsets, resolutions, bound, "cpu")
    assert ops.backend_calls["cpu"] == before + 1, "the C++ path did not run"
    out_ref, grad_ref = fwd_bwd(points, tables, offsets, resolutions, bound, "torch")
    assert_rel_close(out_cpu, out_ref)
    assert_rel_close(grad_cpu, grad_ref)


def test_cpu_falls_back_when_points_need_grad(cpu_module):
    points, tables, offsets, resolutions = random_inputs(TINY, 7)
    points.requires_grad_(True)
    before = ops.backend_calls["torch"]
    ops.trihash_encode(points, tables, offsets, resolutions, backend="cpu").sum().backward()
    assert ops.backend_calls["torch"] == before + 1
    assert points.grad is not None and points.grad.abs().sum() > 0


def test_cpu_backward_is_deterministic(cpu_module):
    """Each (plane, level) slice of the gradient is summed by one thread in point order: bitwise repeatable."""
    points, tables, offsets, resolutions = random_inputs(DEFAULT, 3000, seed=7)
    first = fwd_bwd(points, tables, offsets, resolutions, 1.0, "cpu")[1]
    second = fwd_bwd(points, tables, offsets, resolutions, 1.0, "cpu")[1]
    assert torch.equal(first, second)


def test_auto_states_its_choice_once(monkeypatch):
    import logging

    import cuda_ext.build

    monkeypatch.setattr(cuda_ext.build, "_CHOSEN", set())
    # a handler on the logger itself: setup_logging (CLI tests) stops "synctalk" propagating to caplog's root handler
    records = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("synctalk.cuda_ext")
    old_level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not an attribute patch: it also clears the logger's level cache
    logger.addHandler(handler)
    points, tables, offsets, resolutions = random_inputs(TINY, 3)
    try:
        for _ in range(3):
            ops.trihash_encode(points, tables, offsets, resolutions, backend="auto")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [r.getMessage() for r in records if "backend:" in r.getMessage()]
    assert len(lines) == 1
    status = load("trihash", "cpu")[1]
    assert lines[0] == (f"trihash backend: cpu ({status})" if load("trihash", "cpu")[0] is not None
                        else f"trihash backend: torch (cpu: {status})")


def test_second_process_loads_the_cached_build(cpu_module, tmp_path):
    code = "from cuda_ext.build import load; module, status = load('trihash', 'cpu'); print(status)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cached", proc.stdout + proc.stderr


# --- edges -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_empty_batch(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    _, tables, offsets, resolutions = random_inputs(DEFAULT, 1)
    out, grad = fwd_bwd(torch.zeros(0, 3), tables, offsets, resolutions, 1.0, backend)
    assert out.shape == (0, 36) and grad.shape == tables.shape and grad.abs().sum() == 0


def test_cell_boundaries_and_bound(cpu_module):
    resolutions, offsets = DEFAULT
    ticks = torch.linspace(-1, 1, 65)  # the vertices of level 0 (R = 64, exact in binary) and both faces
    points = torch.stack([ticks, ticks.flip(0), ticks[torch.randperm(65, generator=torch.Generator().manual_seed(0))]],
                         -1)
    points = torch.cat([points, torch.tensor([[-1.0, -1, -1], [1, 1, 1]])])
    _, tables, _, _ = random_inputs(DEFAULT, 1)
    out_cpu, grad_cpu = fwd_bwd(points, tables, offsets, resolutions, 1.0, "cpu")
    out_ref, grad_ref = fwd_bwd(points, tables, offsets, resolutions, 1.0, "torch")
    assert_rel_close(out_cpu, out_ref)
    assert_rel_close(grad_cpu, grad_ref)
    # (-1,-1,-1) reads row 0 of every level of every plane; (1,1,1) the last vertex of dense level 0
    torch.testing.assert_close(out_cpu[-2].view(3, 12), tables[:, list(offsets[:-1]), 0], rtol=0, atol=0)
    torch.testing.assert_close(out_cpu[-1, ::12], tables[:, 65 ** 2 - 1, 0], rtol=0, atol=0)


def test_boundary_points_match_naive_loop():
    points = torch.tensor([[-1.0, -1, -1], [1, 1, 1], [0, 0.5, -1], [1, 0, 0.25]], dtype=torch.float64)
    _, tables, offsets, resolutions = random_inputs(TINY, 1, dtype=torch.float64)
    torch.testing.assert_close(reference.trihash_encode(points, tables, offsets, resolutions),
                               naive_trihash(points, tables, offsets, resolutions, 1.0), rtol=1e-12, atol=1e-12)


def test_far_face_belongs_to_the_last_cell():
    """On a face of the box the cell index is clamped to R - 1 (frac = 1): no read past the level, and the point
    gradient is the slope of the last cell (the one-sided difference from inside)."""
    resolutions, offsets = (3,), (0, 16)  # one dense level holding exactly its 4^2 vertices
    tables = torch.rand(3, 16, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    point = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    out = reference.trihash_encode(point, tables, offsets, resolutions)
    out.sum().backward()
    step = 1e-7
    inside = reference.trihash_encode(point.detach() - step, tables, offsets, resolutions)
    assert point.grad.sum().item() == pytest.approx(((out - inside).sum() / step).item(), rel=1e-5)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_outside_points_are_clamped(backend, request):
    """Points outside [-bound, bound]^3 encode as their projection onto the box (documented in reference.py)."""
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    points, tables, offsets, resolutions = random_inputs(DEFAULT, 50, seed=5)
    outside = points * 3
    got = ops.trihash_encode(outside, tables, offsets, resolutions, backend=backend)
    expected = ops.trihash_encode(outside.clamp(-1, 1), tables, offsets, resolutions, backend=backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_non_contiguous_input(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    points, tables, offsets, resolutions = random_inputs(DEFAULT, 64, features=2)
    strided = points.t().contiguous().t()
    sliced_tables = torch.cat([tables, tables], dim=2)[..., :2]  # same values, strided rows
    assert not strided.is_contiguous() and not sliced_tables.is_contiguous()
    got = ops.trihash_encode(strided, sliced_tables, offsets, resolutions, backend=backend)
    expected = ops.trihash_encode(points, tables, offsets, resolutions, backend=backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("bad,message", [
    (dict(points=torch.zeros(4, 3, 1)), "points must be \\[N, 3\\]"),
    (dict(tables=torch.zeros(2, 25, 1)), "\\[3, E, F\\]"),
    (dict(tables=torch.zeros(3, 24, 1)), "offsets\\[-1\\]"),
    (dict(offsets=(0, 9, 9)), "increase"),
    (dict(resolutions=(0, 5)), "resolutions must be >= 1"),
    (dict(backend="cuda"), "needs cuda tensors"),
])
def test_bad_inputs_raise_readable_errors(bad, message):
    points, tables, offsets, resolutions = random_inputs(TINY, 4)
    args = dict(points=points, tables=tables, offsets=offsets, resolutions=resolutions, backend="torch")
    args.update(bad)
    if args["backend"] == "cuda" and torch.cuda.is_available():
        pytest.skip("cpu tensors with backend cuda only error on machines where cuda is a different device")
    with pytest.raises(ValueError, match=message):
        ops.trihash_encode(args["points"], args["tables"], args["offsets"], args["resolutions"],
                           backend=args["backend"])


# --- nvcc and CUDA -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cu_compiles_with_nvcc():
    ok, message = nvcc_compile_check(CU_FILE)
    assert ok, message


@requires_cuda
@pytest.mark.parametrize("features", [1, 2])
def test_cuda_matches_reference(features):
    module, status = load("trihash", "cuda")
    assert module is not None, status
    points, tables, offsets, resolutions = random_inputs(DEFAULT, 5000, features=features)
    before = ops.backend_calls["cuda"]
    out_cuda, grad_cuda = fwd_bwd(points.cuda(), tables.cuda(), offsets, resolutions, 1.0, "cuda")
    assert ops.backend_calls["cuda"] == before + 1
    out_ref, grad_ref = fwd_bwd(points, tables, offsets, resolutions, 1.0, "torch")
    # CUDA contracts multiply-adds into FMAs and sums gradients with atomics in any order: a few ulps
    assert_rel_close(out_cuda.cpu(), out_ref)
    assert_rel_close(grad_cuda.cpu(), grad_ref)


@requires_cuda
def test_cuda_empty_batch():
    _, tables, offsets, resolutions = random_inputs(DEFAULT, 1)
    out, grad = fwd_bwd(torch.zeros(0, 3, device="cuda"), tables.cuda(), offsets, resolutions, 1.0, "cuda")
    assert out.shape == (0, 36) and grad.abs().sum() == 0
