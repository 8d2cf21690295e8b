"""The CUDA kernels' bodies, compiled for the CPU with g++ and a small shim, against the PyTorch references.

Without a GPU the .cu files are otherwise only compile-checked. Here each kernel runs once per ray on the host
(``blockIdx.x`` = ray, one thread per block): the indexing, the step rule and the closed-form backward are checked
on every machine with a C++ compiler. Launch configuration, streams and the bindings are not covered (they are on a
GPU, in test_cuda_kernels.py). The .cu files guard their CUDA-only parts with ``SYNCTALK_HOST_EMULATION``.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cuda_ext.composite import reference as composite_ref
from cuda_ext.march import reference as march_ref

ROOT = Path(__file__).resolve().parents[2] / "cuda_ext"

SHIM = r"""
#define SYNCTALK_HOST_EMULATION
#include <cmath>
#include <cstdint>
using std::exp; using std::floor; using std::fmin; using std::fmax; using std::isfinite;
#define __global__
#define __device__
#define __forceinline__ inline
typedef int cudaError_t;
typedef void* cudaStream_t;
struct Dim3 { unsigned int x = 0, y = 0, z = 0; };
static Dim3 blockIdx, threadIdx, blockDim;
inline float __fmul_rn(float a, float b) { return a * b; }  // -ffp-contract=off keeps the products unfused
inline double __dmul_rn(double a, double b) { return a * b; }
"""

COMPOSITE = SHIM + r"""
#include "composite/composite.cu"
template <typename T>
void forward(int64_t n_rays, const int64_t* info, const T* ts, const T* te, const T* sig, const T* rgb, int c_rgb,
             const T* ex, int c_ex, int sum_ex, T* w, T* tr, T* op, T* dp, T* col, T* oex) {
  blockDim.x = 1;
  for (int64_t r = 0; r < n_rays; ++r) {
    blockIdx.x = static_cast<unsigned int>(r);
    composite_forward_kernel<T>(n_rays, info, ts, te, sig, rgb, c_rgb, ex, c_ex, sum_ex != 0, w, tr, op, dp, col, oex);
  }
}
template <typename T>
void backward(int64_t n_rays, const int64_t* info, const T* ts, const T* te, const T* sig, const T* rgb, int c_rgb,
              const T* ex, int c_ex, int sum_ex, const T* w, const T* tr, const T* gw, const T* gt, const T* go,
              const T* gd, const T* gc, const T* ge, T* gts, T* gte, T* gsig, T* grgb, T* gex) {
  blockDim.x = 1;
  for (int64_t r = 0; r < n_rays; ++r) {
    blockIdx.x = static_cast<unsigned int>(r);
    composite_backward_kernel<T>(n_rays, info, ts, te, sig, rgb, c_rgb, ex, c_ex, sum_ex != 0, w, tr, gw, gt, go, gd,
                                 gc, ge, gts, gte, gsig, grgb, gex);
  }
}
#define EXPORT(T, S)                                                                                               \
  extern "C" void forward_##S(int64_t n, const int64_t* i, const T* a, const T* b, const T* c, const T* d, int e,  \
                              const T* f, int g, int h, T* j, T* k, T* l, T* m, T* o, T* p) {                      \
    forward<T>(n, i, a, b, c, d, e, f, g, h, j, k, l, m, o, p);                                                    \
  }                                                                                                                \
  extern "C" void backward_##S(int64_t n, const int64_t* i, const T* a, const T* b, const T* c, const T* d, int e, \
                               const T* f, int g, int h, const T* w, const T* t, const T* gw, const T* gt,          \
                               const T* go, const T* gd, const T* gc, const T* ge, T* o1, T* o2, T* o3, T* o4,      \
                               T* o5) {                                                                            \
    backward<T>(n, i, a, b, c, d, e, f, g, h, w, t, gw, gt, go, gd, gc, ge, o1, o2, o3, o4, o5);                    \
  }
EXPORT(double, f64)
EXPORT(float, f32)
"""

MARCH = SHIM + r"""
#include "march/march.cu"
template <typename T>
MarchParams<T> params(int64_t n_rays, const T* o, const T* d, const T* near, const T* far, const uint8_t* grid,
                      int rx, int ry, int rz, const T* aabb, double step, double cone, double max_step,
                      int64_t max_steps) {
  MarchParams<T> p{};
  p.rays_o = o; p.rays_d = d; p.near = near; p.far = far; p.grid = grid;
  p.res_x = rx; p.res_y = ry; p.res_z = rz;
  for (int i = 0; i < 6; ++i) p.aabb[i] = aabb[i];
  p.step_size = static_cast<T>(step); p.cone_angle = static_cast<T>(cone); p.max_step_size = static_cast<T>(max_step);
  p.max_steps = max_steps; p.n_rays = n_rays;
  return p;
}
#define EXPORT(T, S)                                                                                               \
  extern "C" void count_##S(int64_t n, const T* o, const T* d, const T* ne, const T* fa, const uint8_t* g, int rx,  \
                            int ry, int rz, const T* box, double st, double co, double ms, int64_t mx,               \
                            int64_t* counts) {                                                                     \
    const auto p = params<T>(n, o, d, ne, fa, g, rx, ry, rz, box, st, co, ms, mx);                                 \
    blockDim.x = 1;                                                                                                \
    for (int64_t r = 0; r < n; ++r) { blockIdx.x = static_cast<unsigned int>(r); march_count_kernel<T>(p, counts); } \
  }                                                                                                                \
  extern "C" void fill_##S(int64_t n, const T* o, const T* d, const T* ne, const T* fa, const uint8_t* g, int rx,   \
                           int ry, int rz, const T* box, double st, double co, double ms, int64_t mx,                \
                           const int64_t* offsets, int64_t* ids, T* ts, T* te) {                                  \
    const auto p = params<T>(n, o, d, ne, fa, g, rx, ry, rz, box, st, co, ms, mx);                                 \
    blockDim.x = 1;                                                                                                \
    for (int64_t r = 0; r < n; ++r) {                                                                              \
      blockIdx.x = static_cast<unsigned int>(r);                                                                   \
      march_fill_kernel<T>(p, offsets, ids, ts, te);                                                               \
    }                                                                                                              \
  }
EXPORT(double, f64)
EXPORT(float, f32)
"""


def _build(tmp_path_factory, name: str, source: str) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++/c++) to build the kernels for the host")
    folder = tmp_path_factory.mktemp(name)
    (folder / f"{name}.cpp").write_text(source)
    library = folder / f"{name}.so"
    proc = subprocess.run([compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", f"-I{ROOT}",
                           str(folder / f"{name}.cpp"), "-o", str(library)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(library))


@pytest.fixture(scope="module")
def composite_lib(tmp_path_factory):
    return _build(tmp_path_factory, "composite_host", COMPOSITE)


@pytest.fixture(scope="module")
def march_lib(tmp_path_factory):
    return _build(tmp_path_factory, "march_host", MARCH)


def _ptr(tensor: torch.Tensor) -> ctypes.c_void_p:
    assert tensor.is_contiguous()
    return ctypes.c_void_p(tensor.data_ptr())


def _packed(dtype, n_rays=25, seed=0):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 12, (n_rays,), generator=gen)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    n = int(ray_indices.numel())
    lengths = torch.rand(n, generator=gen, dtype=dtype) * 0.1 + 0.01
    t_ends = composite_ref.exclusive_cumsum_packed(lengths, ray_indices, n_rays) + lengths + 0.5
    return {"ray_indices": ray_indices, "t_starts": (t_ends - lengths).contiguous(), "t_ends": t_ends,
            "sigmas": torch.rand(n, generator=gen, dtype=dtype) * 10, "rgbs": torch.rand(n, 3, generator=gen,
                                                                                         dtype=dtype),
            "extras": torch.randn(n, 2, generator=gen, dtype=dtype), "n_rays": n_rays}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("extras_mode", ["weighted", "sum"])
def test_composite_kernels_match_reference(composite_lib, dtype, extras_mode):
    s = _packed(dtype)
    n_rays, n = s["n_rays"], s["sigmas"].shape[0]
    info = composite_ref.pack_info(s["ray_indices"], n_rays).contiguous()
    suffix = "f64" if dtype == torch.float64 else "f32"
    weights, trans = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
    opacities, depths = torch.zeros(n_rays, dtype=dtype), torch.zeros(n_rays, dtype=dtype)
    colors, extras = torch.zeros(n_rays, 3, dtype=dtype), torch.zeros(n_rays, 2, dtype=dtype)
    sum_extras = int(extras_mode == "sum")
    common = [ctypes.c_int64(n_rays), _ptr(info), _ptr(s["t_starts"]), _ptr(s["t_ends"]), _ptr(s["sigmas"]),
              _ptr(s["rgbs"]), ctypes.c_int(3), _ptr(s["extras"]), ctypes.c_int(2), ctypes.c_int(sum_extras)]
    getattr(composite_lib, f"forward_{suffix}")(*common, _ptr(weights), _ptr(trans), _ptr(opacities), _ptr(depths),
                                                _ptr(colors), _ptr(extras))
    inputs = [s[k].clone().requires_grad_(True) for k in ("t_starts", "t_ends", "sigmas", "rgbs", "extras")]
    ref = composite_ref.composite(s["ray_indices"], *inputs[:4], n_rays, inputs[4], extras_mode)
    # float32: per-ray sequential float sums vs the reference's float64 cumsum + index_add
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for got, want in zip((weights, trans, opacities, depths, colors, extras),
                         (ref.weights, ref.transmittance, ref.opacities, ref.depths, ref.colors, ref.extras),
                         strict=True):
        torch.testing.assert_close(got, want.detach(), **tol)

    gen = torch.Generator().manual_seed(1)
    upstream = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in
                (ref.weights, ref.transmittance, ref.opacities, ref.depths, ref.colors, ref.extras)]
    want_grads = torch.autograd.grad([ref.weights, ref.transmittance, ref.opacities, ref.depths, ref.colors,
                                      ref.extras], inputs, upstream)
    got_grads = [torch.empty_like(s[k]) for k in ("t_starts", "t_ends", "sigmas", "rgbs", "extras")]
    getattr(composite_lib, f"backward_{suffix}")(*common, _ptr(weights), _ptr(trans),
                                                 *[_ptr(u.contiguous()) for u in upstream],
                                                 *[_ptr(g) for g in got_grads])
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for got, want in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got, want, **tol)


def _run_march(lib, dtype, rays_o, rays_d, near, far, binary, aabb, step, cone, max_step, max_steps):
    suffix = "f64" if dtype == torch.float64 else "f32"
    n_rays = rays_o.shape[0]
    grid = binary.contiguous().view(torch.uint8)
    box = aabb.to(dtype).contiguous()  # keep a reference: ctypes holds only the address
    args = [ctypes.c_int64(n_rays), _ptr(rays_o), _ptr(rays_d), _ptr(near), _ptr(far), _ptr(grid),
            *[ctypes.c_int(r) for r in grid.shape], _ptr(box), ctypes.c_double(step),
            ctypes.c_double(cone), ctypes.c_double(max_step), ctypes.c_int64(max_steps)]
    counts = torch.zeros(n_rays, dtype=torch.long)
    getattr(lib, f"count_{suffix}")(*args, _ptr(counts))
    total = int(counts.sum())
    offsets = (torch.cumsum(counts, 0) - counts).contiguous()
    ids, starts, ends = torch.empty(total, dtype=torch.long), torch.empty(total, dtype=dtype), torch.empty(total,
                                                                                                             dtype=dtype)
    getattr(lib, f"fill_{suffix}")(*args, _ptr(offsets), _ptr(ids), _ptr(starts), _ptr(ends))
    return ids, starts, ends


@pytest.mark.parametrize(("cone_angle", "max_steps"), [(0.0, 1000), (0.0, 4), (0.04, 1000), (0.3, 5)])
def test_march_kernels_match_reference(march_lib, cone_angle, max_steps):
    from synctalk.render.occupancy import OccupancyGrid
    from synctalk.render.rays import ray_aabb_intersect

    dtype = torch.float64
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=(8, 9, 10))
    grid.binary.copy_((torch.linalg.norm(grid.cell_centers(), dim=-1) < 0.7).reshape(grid.resolution))
    gen = torch.Generator().manual_seed(0)
    origins = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen, dtype=dtype), dim=-1) * 2.5
    dirs = torch.nn.functional.normalize(torch.rand(200, 3, generator=gen, dtype=dtype) * 2.6 - 1.3 - origins, dim=-1)
    near, far, hit = ray_aabb_intersect(origins, dirs, grid.aabb)
    assert 0 < hit.sum() < 200  # some rays miss: the kernel must skip them
    want = march_ref.march(origins, dirs, near, far, grid.binary, grid.aabb, 0.03, cone_angle, 0.1, max_steps)
    got = _run_march(march_lib, dtype, origins, dirs, near, far, grid.binary, grid.aabb, 0.03, cone_angle, 0.1,
                     max_steps)
    assert want[0].numel() > 100
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)  # float64, same operations in the same order: bit-equal


def test_march_kernel_without_grid_float32(march_lib):
    """ops.march passes 'no grid' as one occupied cell over an infinite box: samples everywhere in [near, far]."""
    rays_o, rays_d = torch.tensor([[0.0, 0, -2], [5.0, 5, 5]]), torch.tensor([[0.0, 0, 1], [1.0, 0, 0]])
    near, far = torch.tensor([1.0, math.inf]), torch.tensor([3.0, math.inf])
    box = torch.tensor([-math.inf] * 3 + [math.inf] * 3)
    ids, starts, ends = _run_march(march_lib, torch.float32, rays_o, rays_d, near, far,
                                   torch.ones(1, 1, 1, dtype=torch.bool), box, 0.5, 0.0, 3.0e38, 1024)
    assert ids.tolist() == [0, 0, 0, 0] and starts.tolist() == [1.0, 1.5, 2.0, 2.5]
    assert ends.tolist() == [1.5, 2.0, 2.5, 3.0]
