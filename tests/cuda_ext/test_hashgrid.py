"""3D hash grid ladder: reference vs a naive loop + gradcheck, C++ vs reference, edges, nvcc compile, CUDA."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import requires_cuda

from cuda_ext.build import load, nvcc_compile_check
from cuda_ext.hashgrid import ops, reference
from cuda_ext.hashgrid.reference import level_layout

CU_FILE = Path(ops.__file__).with_name("hashgrid.cu")
# Two levels over a 32-row table: level 0 (3^3 = 27 vertices) is dense, level 1 (6^3 = 216) is hashed.
TINY = level_layout(2, 2, 5, log2_table_size=5, dim=3)
# Small enough for quick reference runs, large enough to have several dense and hashed levels.
MEDIUM = level_layout(8, 16, 512, log2_table_size=15, dim=3)


def naive_hashgrid(points, table, offsets, resolutions, bound):
    """The spec written as plain Python loops over points, levels and the 8 corners (float64 via Python floats)."""
    out = []
    for point in points.tolist():
        units = [min(max((c + bound) / (2 * bound), 0.0), 1.0) for c in point]
        row = []
        for level, res in enumerate(resolutions):
            size = offsets[level + 1] - offsets[level]
            pos = [u * res for u in units]
            cell = [min(math.floor(x), res - 1) for x in pos]
            frac = [x - c for x, c in zip(pos, cell, strict=True)]
            feature = [0.0] * table.shape[1]
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        x, y, z = cell[0] + dx, cell[1] + dy, cell[2] + dz
                        weight = ((frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                                  * (frac[2] if dz else 1 - frac[2]))
                        if (res + 1) ** 3 <= size:
                            index = x + y * (res + 1) + z * (res + 1) ** 2
                        else:
                            index = (x ^ ((y * 2654435761) % 2**32) ^ ((z * 805459861) % 2**32)) % size
                        values = table[offsets[level] + index].tolist()
                        feature = [f + weight * v for f, v in zip(feature, values, strict=True)]
            row += feature
        out.append(row)
    return torch.tensor(out, dtype=torch.float64).reshape(len(out), -1)


def random_inputs(layout, num_points, features=2, dtype=torch.float32, bound=1.0, seed=0):
    resolutions, offsets = layout
    gen = torch.Generator().manual_seed(seed)
    points = (torch.rand(num_points, 3, generator=gen, dtype=dtype) * 2 - 1) * bound
    table = torch.rand(offsets[-1], features, generator=gen, dtype=dtype) * 2 - 1
    return points, table, offsets, resolutions


# --- rung 1: the reference against a naive loop and finite differences -------------------------------------------

def test_level_layout_dense_then_hashed():
    resolutions, offsets = TINY
    assert resolutions == (2, 5)
    assert offsets == (0, 27, 59)  # 27 dense rows, then a full 32-row hashed level
    default = level_layout(16, 16, 2048, log2_table_size=19)
    assert default[0][0] == 16 and default[0][-1] == 2048
    assert level_layout(3, 4, per_level_scale=2.0, log2_table_size=10)[0] == (4, 8, 16)


def test_reference_matches_naive_loop():
    points, table, offsets, resolutions = random_inputs(TINY, 5, features=3, dtype=torch.float64, bound=2.0)
    expected = naive_hashgrid(points, table, offsets, resolutions, 2.0)
    got = reference.hashgrid_encode(points, table, offsets, resolutions, 2.0)
    assert got.shape == (5, 2 * 3)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_reference_hand_value_on_a_vertex():
    resolutions, offsets = TINY
    table = torch.arange(offsets[-1], dtype=torch.float64)[:, None]
    # the origin is vertex (1, 1, 1) of level 0 (R = 2): row 1 + 1*3 + 1*9 = 13, weight exactly 1
    got = reference.hashgrid_encode(torch.zeros(1, 3, dtype=torch.float64), table, offsets, resolutions)
    assert got[0, 0].item() == 13.0


def test_reference_gradcheck_embeddings_and_points():
    points, table, offsets, resolutions = random_inputs(TINY, 5, features=2, dtype=torch.float64, seed=1)
    points.requires_grad_(True)
    table.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: reference.hashgrid_encode(p, t, offsets, resolutions, 1.0),
                                    (points, table), eps=1e-6, atol=1e-6)


# --- rung 2: the C++ fast path against the reference --------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_module():
    module, status = load("hashgrid", "cpu")
    if module is None:
        print(f"hashgrid C++ build unavailable: {status}")
        pytest.skip(f"hashgrid C++ extension did not build: {status}")
    return module


def fwd_bwd(points, table, offsets, resolutions, bound, backend, upstream_seed=3):
    table = table.clone().requires_grad_(True)
    out = ops.hashgrid_encode(points, table, offsets, resolutions, bound, backend=backend)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed), dtype=out.dtype)
    upstream = upstream.to(out.device)
    out.backward(upstream)
    return out.detach(), table.grad


def assert_rel_close(got, expected, tol=1e-5):
    # fp32: both sides do the same float ops per corner; only the order of summation (corners, and points sharing
    # a row in backward) differs, which costs a few ulps of the largest magnitude, far below 1e-5.
    scale = expected.abs().max().clamp_min(1e-30)
    assert ((got - expected).abs().max() / scale).item() < tol


@pytest.mark.parametrize("features,bound", [(2, 1.0), (1, 0.5), (4, 3.0)])
def test_cpu_matches_reference(cpu_module, features, bound):
    points, table, offsets, resolutions = random_inputs(MEDIUM, 3000, features=features, bound=bound, seed=features)
    before = ops.backend_calls["cpu"]
    out_cpu, grad_cpu = fwd_bwd(points, table, offsets, resolutions, bound, "cpu")
    assert ops.backend_calls["cpu"] == before + 1, "the C++ path did not run"
    out_ref, grad_ref = fwd_bwd(points, table, offsets, resolutions, bound, "torch")
    assert_rel_close(out_cpu, out_ref)
    assert_rel_close(grad_cpu, grad_ref)


def test_cpu_matches_reference_default_layout(cpu_module):
    points, table, offsets, resolutions = random_inputs(level_layout(16, 16, 2048, log2_table_size=19), 2000)
    out_cpu, grad_cpu = fwd_bwd(points, table, offsets, resolutions, 1.0, "cpu")
    out_ref, grad_ref = fwd_bwd(points, table, offsets, resolutions, 1.0, "torch")
    assert_rel_close(out_cpu, out_ref)
    assert_rel_close(grad_cpu, grad_ref)


def test_cpu_backward_is_deterministic(cpu_module):
    """Each level's slice of the gradient is summed by one thread in point order: bitwise repeatable."""
    points, table, offsets, resolutions = random_inputs(MEDIUM, 3000, seed=7)
    first = fwd_bwd(points, table, offsets, resolutions, 1.0, "cpu")[1]
    second = fwd_bwd(points, table, offsets, resolutions, 1.0, "cpu")[1]
    assert torch.equal(first, second)


def test_cpu_falls_back_when_points_need_grad(cpu_module):
    points, table, offsets, resolutions = random_inputs(TINY, 7)
    points.requires_grad_(True)
    before = ops.backend_calls["torch"]
    out = ops.hashgrid_encode(points, table, offsets, resolutions, backend="cpu")
    assert ops.backend_calls["torch"] == before + 1
    out.sum().backward()
    assert points.grad is not None and points.grad.abs().sum() > 0


# --- edges -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_empty_batch(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    _, table, offsets, resolutions = random_inputs(MEDIUM, 1)
    out, grad = fwd_bwd(torch.zeros(0, 3), table, offsets, resolutions, 1.0, backend)
    assert out.shape == (0, 16) and grad.shape == table.shape and grad.abs().sum() == 0


def test_cell_boundaries_and_bound(cpu_module):
    resolutions, offsets = MEDIUM
    # vertices of level 0 (R = 16, exact in binary), faces of the box and corners of it
    ticks = torch.linspace(-1, 1, 17)
    grid = torch.stack(torch.meshgrid(ticks, ticks[::4], ticks[::8], indexing="ij"), -1).reshape(-1, 3)
    corners = torch.tensor([[-1.0, -1, -1], [1, 1, 1], [1, -1, 1], [-1, 1, 0.5]])
    points = torch.cat([grid, corners])
    _, table, _, _ = random_inputs(MEDIUM, 1)
    out_cpu, grad_cpu = fwd_bwd(points, table, offsets, resolutions, 1.0, "cpu")
    out_ref, grad_ref = fwd_bwd(points, table, offsets, resolutions, 1.0, "torch")
    assert_rel_close(out_cpu, out_ref)
    assert_rel_close(grad_cpu, grad_ref)
    # (-1,-1,-1) reads row 0 of every level exactly; (1,1,1) the last dense vertex of level 0
    torch.testing.assert_close(out_ref[-4].view(8, 2), table[list(offsets[:-1])], rtol=0, atol=0)
    last_dense = offsets[0] + (resolutions[0] + 1) ** 3 - 1
    torch.testing.assert_close(out_ref[-3, :2], table[last_dense], rtol=0, atol=0)


def test_boundary_points_match_naive_loop():
    points = torch.tensor([[-1.0, -1, -1], [1, 1, 1], [0, 0.2, -1], [1, 0, 0.6]], dtype=torch.float64)
    _, table, offsets, resolutions = random_inputs(TINY, 1, dtype=torch.float64)
    torch.testing.assert_close(reference.hashgrid_encode(points, table, offsets, resolutions),
                               naive_hashgrid(points, table, offsets, resolutions, 1.0), rtol=1e-12, atol=1e-12)


def test_far_face_belongs_to_the_last_cell():
    """On x = +bound the cell index is clamped to R - 1 (frac = 1): no read past the level, and the point gradient
    is the slope of the last cell, i.e. the one-sided difference from inside."""
    resolutions, offsets = (3,), (0, 64)  # one dense level holding exactly its 4^3 vertices
    table = torch.rand(64, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    point = torch.tensor([[1.0, 0.1, -0.3]], dtype=torch.float64, requires_grad=True)
    out = reference.hashgrid_encode(point, table, offsets, resolutions)
    out.sum().backward()
    step = 1e-7
    inside = reference.hashgrid_encode(point.detach() - torch.tensor([[step, 0, 0]], dtype=torch.float64), table,
                                       offsets, resolutions)
    assert point.grad[0, 0].item() == pytest.approx(((out - inside) / step).item(), rel=1e-5)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_outside_points_are_clamped(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    points, table, offsets, resolutions = random_inputs(MEDIUM, 50, seed=5)
    outside = points * 3  # most coordinates leave [-1, 1]
    got = ops.hashgrid_encode(outside, table, offsets, resolutions, backend=backend)
    expected = ops.hashgrid_encode(outside.clamp(-1, 1), table, offsets, resolutions, backend=backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_outside_points_get_no_point_gradient():
    points = torch.tensor([[2.0, 0.3, -5.0]], dtype=torch.float64, requires_grad=True)
    _, table, offsets, resolutions = random_inputs(TINY, 1, dtype=torch.float64)
    reference.hashgrid_encode(points, table, offsets, resolutions).sum().backward()
    assert points.grad[0, 0] == 0 and points.grad[0, 2] == 0 and points.grad[0, 1] != 0


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_non_contiguous_input(backend, request):
    if backend == "cpu":
        request.getfixturevalue("cpu_module")
    points, table, offsets, resolutions = random_inputs(MEDIUM, 64)
    strided = points.t().contiguous().t()  # same values, column-major
    assert not strided.is_contiguous()
    wide_table = torch.cat([table, table], dim=1)[:, : table.shape[1]]  # same values, row stride 2F
    assert not wide_table.is_contiguous()
    got = ops.hashgrid_encode(strided, wide_table, offsets, resolutions, backend=backend)
    expected = ops.hashgrid_encode(points, table, offsets, resolutions, backend=backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_float64_on_cpu_backend_runs_the_reference():
    points, table, offsets, resolutions = random_inputs(TINY, 4, dtype=torch.float64)
    before = ops.backend_calls["torch"]
    out = ops.hashgrid_encode(points, table, offsets, resolutions, backend="cpu")
    assert ops.backend_calls["torch"] == before + 1 and out.dtype == torch.float64


@pytest.mark.parametrize("bad,message", [
    (dict(points=torch.zeros(4, 2)), "points must be \\[N, 3\\]"),
    (dict(points=torch.zeros(4, 3, dtype=torch.int64)), "float"),
    (dict(table=torch.zeros(10, 2)), "offsets\\[-1\\]"),
    (dict(resolutions=(2,)), "L \\+ 1 offsets"),
    (dict(bound=0.0), "bound must be > 0"),
    (dict(backend="cuda"), "needs cuda tensors"),
    (dict(backend="gpu"), "unknown backend"),
])
def test_bad_inputs_raise_readable_errors(bad, message):
    points, table, offsets, resolutions = random_inputs(TINY, 4)
    args = dict(points=points, table=table, offsets=offsets, resolutions=resolutions, bound=1.0, backend="torch")
    args.update(bad)
    if args["backend"] == "cuda" and torch.cuda.is_available():
        pytest.skip("cpu tensors with backend cuda only error on machines where cuda is a different device")
    with pytest.raises((ValueError, TypeError), match=message):
        ops.hashgrid_encode(args["points"], args["table"], args["offsets"], args["resolutions"], args["bound"],
                            backend=args["backend"])


# --- nvcc and CUDA -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cu_compiles_with_nvcc():
    ok, message = nvcc_compile_check(CU_FILE)
    assert ok, message


@requires_cuda
@pytest.mark.parametrize("layout", [TINY, MEDIUM])
def test_cuda_matches_reference(layout):
    module, status = load("hashgrid", "cuda")
    assert module is not None, status
    points, table, offsets, resolutions = random_inputs(layout, 5000)
    before = ops.backend_calls["cuda"]
    out_cuda, grad_cuda = fwd_bwd(points.cuda(), table.cuda(), offsets, resolutions, 1.0, "cuda")
    assert ops.backend_calls["cuda"] == before + 1
    out_ref, grad_ref = fwd_bwd(points, table, offsets, resolutions, 1.0, "torch")
    # CUDA contracts multiply-adds into FMAs and sums gradients with atomics in any order: a few ulps
    assert_rel_close(out_cuda.cpu(), out_ref)
    assert_rel_close(grad_cuda.cpu(), grad_ref)


@requires_cuda
def test_cuda_empty_batch():
    _, table, offsets, resolutions = random_inputs(MEDIUM, 1)
    out, grad = fwd_bwd(torch.zeros(0, 3, device="cuda"), table.cuda(), offsets, resolutions, 1.0, "cuda")
    assert out.shape == (0, 16) and grad.abs().sum() == 0
