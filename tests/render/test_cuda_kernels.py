"""CUDA kernels: each .cu compiles with nvcc (when present); on a GPU, kernels equal the references."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import requires_cuda

from cuda_ext.composite import ops as composite_ops
from cuda_ext.composite import reference as composite_ref
from cuda_ext.march import ops as march_ops
from cuda_ext.march import reference as march_ref

ROOT = Path(__file__).resolve().parents[2] / "cuda_ext"
KERNELS = [ROOT / "composite" / "composite.cu", ROOT / "march" / "march.cu"]


def test_requires_cuda_marker_matches_this_machine():
    # the marker's condition must be evaluated (a bool), not a function object that is always truthy
    assert requires_cuda.mark.args[0] is (not torch.cuda.is_available())


@pytest.mark.parametrize("path", KERNELS, ids=lambda p: p.name)
def test_kernel_compiles_with_nvcc(path):
    assert path.is_file()
    try:
        from cuda_ext.build import nvcc_compile_check
    except ImportError:
        nvcc_compile_check = None
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: cannot compile-check CUDA sources here")
    if nvcc_compile_check is None:
        pytest.skip("cuda_ext.build.nvcc_compile_check is not available")
    ok, message = nvcc_compile_check(path)
    assert ok, message


def test_auto_uses_torch_on_cpu_and_says_so(caplog, monkeypatch):
    from cuda_ext import build

    monkeypatch.setattr(build, "_CHOSEN", set())
    with caplog.at_level(logging.INFO, logger="synctalk.cuda_ext"):
        assert build.resolve_backend("composite", "auto", "cpu", extra=("nerfacc",)) == ("torch", None)
        build.resolve_backend("composite", "auto", "cpu", extra=("nerfacc",))
    messages = [r.getMessage() for r in caplog.records if "composite backend" in r.getMessage()]
    assert messages == ["composite backend: torch (cpu: no cpu sources in cuda_ext/composite/)"]  # logged once


# ---------------------------------------------------------------------------------------------------- on a GPU only


def _packed_inputs(dtype, n_rays=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 40, (n_rays,), generator=gen)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = int(ray_indices.numel())
    lengths = torch.rand(n, generator=gen, dtype=dtype) * 0.05 + 0.01
    t_ends = composite_ref.exclusive_cumsum_packed(lengths, ray_indices, n_rays) + lengths + 1.0
    return {"ray_indices": ray_indices, "t_starts": t_ends - lengths, "t_ends": t_ends,
            "sigmas": torch.rand(n, generator=gen, dtype=dtype) * 30, "rgbs": torch.rand(n, 3, generator=gen,
                                                                                         dtype=dtype),
            "extras": torch.randn(n, 4, generator=gen, dtype=dtype), "n_rays": n_rays}


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_composite_cuda_matches_reference(dtype, extras_mode):
    s = _packed_inputs(dtype)
    keys = ("t_starts", "t_ends", "sigmas", "rgbs", "extras")
    outputs, grads = {}, {}
    upstream = None
    for backend in ("torch", "cuda"):
        inputs = [s[k].cuda().requires_grad_(True) for k in keys]
        r = composite_ops.composite(s["ray_indices"].cuda(), *inputs[:4], s["n_rays"], inputs[4], extras_mode,
                                    torch.tensor([0.2, 0.4, 0.6], dtype=dtype, device="cuda"), backend=backend)
        outs = (r.colors, r.opacities, r.depths, r.extras, r.weights, r.transmittance)
        if upstream is None:  # one random upstream gradient pushed through both graphs
            gen = torch.Generator(device="cuda").manual_seed(1)
            upstream = [torch.randn(o.shape, generator=gen, dtype=dtype, device="cuda") for o in outs]
        outputs[backend] = outs
        grads[backend] = torch.autograd.grad(outs, inputs, upstream)
    # float32: per-ray sequential sums vs global float64 cumsum + index_add → ~1e-5 relative
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for a, b in zip(outputs["cuda"], outputs["torch"], strict=True):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(grads["cuda"], grads["torch"], strict=True):
        torch.testing.assert_close(a, b, **tol)


@requires_cuda
def test_composite_cuda_edges():
    empty = torch.zeros(0, device="cuda")
    r = composite_ops.composite(torch.zeros(0, dtype=torch.long, device="cuda"), empty, empty, empty,
                                torch.zeros(0, 3, device="cuda"), 3, background=1.0, backend="cuda")
    assert r.colors.tolist() == [[1.0, 1.0, 1.0]] * 3


@requires_cuda
@pytest.mark.parametrize("cone_angle", [0.0, 0.03])
def test_march_cuda_matches_reference(cone_angle):
    from synctalk.render.occupancy import OccupancyGrid
    from synctalk.render.rays import ray_aabb_intersect

    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1], dtype=torch.float64), resolution=16).cuda()
    grid.binary.copy_((torch.linalg.norm(grid.cell_centers(), dim=-1) < 0.7).reshape(grid.resolution))
    gen = torch.Generator().manual_seed(0)
    origins = torch.nn.functional.normalize(torch.randn(2000, 3, generator=gen, dtype=torch.float64), dim=-1) * 2.5
    dirs = torch.nn.functional.normalize(torch.rand(2000, 3, generator=gen, dtype=torch.float64) - 0.5 - origins,
                                         dim=-1)
    origins, dirs = origins.cuda(), dirs.cuda()
    near, far, _ = ray_aabb_intersect(origins, dirs, grid.aabb)
    want = march_ref.march(origins, dirs, near, far, grid.binary, grid.aabb, 0.01, cone_angle, 0.05, 200)
    got = march_ops.march(origins, dirs, near, far, grid.binary, grid.aabb, 0.01, cone_angle, 0.05, 200,
                          backend="cuda")
    # float64 on both sides and march.cu forbids FMA contraction: the same roundings, so exact
    assert torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


@requires_cuda
def test_march_cuda_float32_and_no_grid():
    rays_o = torch.tensor([[0.0, 0, -2], [5.0, 5, 5]], device="cuda")
    rays_d = torch.tensor([[0.0, 0, 1], [1.0, 0, 0]], device="cuda")
    near = torch.tensor([1.0, float("inf")], device="cuda")
    far = torch.tensor([3.0, float("inf")], device="cuda")
    ids, starts, ends = march_ops.march(rays_o, rays_d, near, far, None, None, 0.5, backend="cuda")
    assert ids.tolist() == [0, 0, 0, 0] and starts.tolist() == [1.0, 1.5, 2.0, 2.5]


def test_auto_falls_back_once_when_the_build_fails(monkeypatch, caplog):
    """Pretend CUDA exists but the extension cannot be built: auto → torch with the reason, cuda → error."""
    from cuda_ext import build

    calls = []

    def fake_build(op, kind):
        calls.append((op, kind))
        return None, "no nvcc (install the CUDA toolkit)"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build, "_load_uncached", fake_build)
    monkeypatch.setattr(build, "_RESULTS", {})
    monkeypatch.setattr(build, "_CHOSEN", set())
    monkeypatch.setattr(build, "_FALLBACKS", {})
    with caplog.at_level(logging.INFO, logger="synctalk.cuda_ext"):
        for _ in range(3):
            assert build.resolve_backend("march", "auto", "cuda") == ("torch", None)
    assert calls == [("march", "cuda")]  # the failure is remembered, not retried
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and caplog.records[0].levelno == logging.WARNING  # one warning, not one per call
    assert messages[0].startswith("march: no CUDA kernel, the PyTorch reference runs on the GPU instead")
    assert "no nvcc (install the CUDA toolkit)" in messages[0] and "None" not in messages[0]
    assert [f.op for f in build.fallbacks()] == ["march"]
    with pytest.raises(RuntimeError, match="unavailable: no nvcc"):
        build.resolve_backend("march", "cuda", "cuda")


@requires_cuda
def test_nerfacc_march_on_cuda_renders_like_torch():
    """nerfacc steps differently (its own rule, empty-space skipping): compare renders, not samples."""
    from synctalk.render import OccupancyGrid, composite_samples, march_rays

    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=32).cuda()  # all cells occupied
    gen = torch.Generator().manual_seed(0)
    rays_o = (torch.randn(500, 3, generator=gen) * 0.3 + torch.tensor([0.0, 0, -3])).cuda()
    rays_d = torch.nn.functional.normalize(torch.tensor([0.0, 0, 1]) + 0.2 * torch.randn(500, 3, generator=gen),
                                           dim=-1).cuda()
    renders = {}
    for backend in ("torch", "nerfacc"):
        samples = march_rays(rays_o, rays_d, 0.01, grid=grid, backend=backend)
        sigmas = torch.full((len(samples),), 0.8, device="cuda")
        rgbs = torch.full((len(samples), 3), 0.5, device="cuda")
        renders[backend] = composite_samples(samples, sigmas, rgbs, background=1.0, backend=backend)
    # constant density over the whole box: opacity = 1 - exp(-0.8 * chord) up to how each clips the last step
    torch.testing.assert_close(renders["nerfacc"].opacities, renders["torch"].opacities, rtol=0, atol=1e-2)
