// Ray marching through an occupancy grid, CUDA kernels + launchers. Spec: cuda_ext/march/reference.py.
//
// One thread per ray, two passes with the same walk: count kept samples, then (after a cumsum of the counts in
// bindings_cuda.cpp) write them. Step rule as in the reference: t_k = near + k * step_size for cone_angle == 0,
// else t_{k+1} = t_k + clamp(t_k * cone_angle, step_size, max_step_size); candidate [t_k, min(t_{k+1}, far)] is
// kept when its midpoint is in an occupied cell, at most max_steps per ray. Empty cells are stepped through (no DDA
// skip) so the samples equal the reference's; a skip that lands on the same step grid is a possible speed-up.
//
// No torch headers: tensors and checks live in bindings_cuda.cpp, so this file compiles with plain nvcc.
#ifndef SYNCTALK_HOST_EMULATION  // tests/render/test_kernels_on_host.py compiles the kernels with g++
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "march.h"

namespace {

constexpr int kThreads = 256;

// Products that must not be fused into an FMA with the following add, so t and the sample points round exactly
// like the reference's separate multiply and add (and samples on cell borders fall on the same side).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename scalar_t>
__device__ __forceinline__ int cell_index(scalar_t x, scalar_t lo, scalar_t hi, int res) {
  if (res == 1) return 0;  // also covers the unbounded "no grid" box, where (x - lo) / (hi - lo) is nan
  const int i = static_cast<int>(floor(mul_rn((x - lo) / (hi - lo), static_cast<scalar_t>(res))));
  return i < 0 ? 0 : (i >= res ? res - 1 : i);
}

template <typename scalar_t>
__device__ __forceinline__ bool occupied(const MarchParams<scalar_t>& p, scalar_t x, scalar_t y, scalar_t z) {
  if (!(x >= p.aabb[0] && x <= p.aabb[3] && y >= p.aabb[1] && y <= p.aabb[4] && z >= p.aabb[2] && z <= p.aabb[5])) {
    return false;
  }
  const int i = cell_index(x, p.aabb[0], p.aabb[3], p.res_x);
  const int j = cell_index(y, p.aabb[1], p.aabb[4], p.res_y);
  const int k = cell_index(z, p.aabb[2], p.aabb[5], p.res_z);
  return p.grid[(static_cast<int64_t>(i) * p.res_y + j) * p.res_z + k] != 0;
}

// Walks one ray; with kWrite, stores the samples from `out` on. Returns the number kept.
template <typename scalar_t, bool kWrite>
__device__ int64_t walk(const MarchParams<scalar_t>& p, int64_t ray, int64_t out, int64_t* ray_indices,
                        scalar_t* t_starts, scalar_t* t_ends) {
  const scalar_t near = p.near[ray];
  const scalar_t far = p.far[ray];
  if (!(isfinite(near) && isfinite(far) && near < far)) return 0;
  const scalar_t ox = p.rays_o[3 * ray], oy = p.rays_o[3 * ray + 1], oz = p.rays_o[3 * ray + 2];
  const scalar_t dx = p.rays_d[3 * ray], dy = p.rays_d[3 * ray + 1], dz = p.rays_d[3 * ray + 2];
  int64_t kept = 0;
  int64_t k = 0;
  scalar_t t = near;
  while (t < far && kept < p.max_steps) {
    scalar_t t_next;
    if (p.cone_angle == scalar_t(0)) {
      t_next = near + mul_rn(static_cast<scalar_t>(k + 1), p.step_size);
    } else {
      const scalar_t dt = fmin(fmax(mul_rn(t, p.cone_angle), p.step_size), p.max_step_size);
      t_next = t + dt;
    }
    if (!(t_next > t)) break;  // step below float resolution at this t: stop rather than loop forever
    const scalar_t end = fmin(t_next, far);
    const scalar_t mid = (t + end) * scalar_t(0.5);
    if (occupied(p, ox + mul_rn(dx, mid), oy + mul_rn(dy, mid), oz + mul_rn(dz, mid))) {
      if (kWrite) {
        ray_indices[out + kept] = ray;
        t_starts[out + kept] = t;
        t_ends[out + kept] = end;
      }
      ++kept;
    }
    ++k;
    t = t_next;
  }
  return kept;
}

template <typename scalar_t>
__global__ void march_count_kernel(const MarchParams<scalar_t> p, int64_t* __restrict__ counts) {
  const int64_t ray = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ray >= p.n_rays) return;
  counts[ray] = walk<scalar_t, false>(p, ray, 0, nullptr, nullptr, nullptr);
}

template <typename scalar_t>
__global__ void march_fill_kernel(const MarchParams<scalar_t> p, const int64_t* __restrict__ offsets,
                                  int64_t* __restrict__ ray_indices, scalar_t* __restrict__ t_starts,
                                  scalar_t* __restrict__ t_ends) {
  const int64_t ray = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ray >= p.n_rays) return;
  walk<scalar_t, true>(p, ray, offsets[ray], ray_indices, t_starts, t_ends);
}

inline unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

}  // namespace

#ifndef SYNCTALK_HOST_EMULATION  // launchers: CUDA only

template <typename scalar_t>
cudaError_t march_count_launch(const MarchParams<scalar_t>& params, int64_t* counts, cudaStream_t stream) {
  if (params.n_rays == 0) return cudaSuccess;
  march_count_kernel<scalar_t><<<blocks_for(params.n_rays), kThreads, 0, stream>>>(params, counts);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t march_fill_launch(const MarchParams<scalar_t>& params, const int64_t* offsets, int64_t* ray_indices,
                              scalar_t* t_starts, scalar_t* t_ends, cudaStream_t stream) {
  if (params.n_rays == 0) return cudaSuccess;
  march_fill_kernel<scalar_t><<<blocks_for(params.n_rays), kThreads, 0, stream>>>(params, offsets, ray_indices,
                                                                                    t_starts, t_ends);
  return cudaGetLastError();
}

template cudaError_t march_count_launch<float>(const MarchParams<float>&, int64_t*, cudaStream_t);
template cudaError_t march_count_launch<double>(const MarchParams<double>&, int64_t*, cudaStream_t);
template cudaError_t march_fill_launch<float>(const MarchParams<float>&, const int64_t*, int64_t*, float*, float*,
                                              cudaStream_t);
template cudaError_t march_fill_launch<double>(const MarchParams<double>&, const int64_t*, int64_t*, double*,
                                               double*, cudaStream_t);
#endif  // SYNCTALK_HOST_EMULATION
