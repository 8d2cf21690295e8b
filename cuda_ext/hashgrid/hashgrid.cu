// 3D multiresolution hash grid, CUDA kernels + launchers. Spec: cuda_ext/hashgrid/reference.py (float32).
//
// forward : one thread per (point, level): 8 corner rows, trilinear weights, F <= kMaxFeatures registers.
// backward: one thread per (point, level), atomicAdd of weight * grad into the table gradient (hash collisions and
//           shared corners make rows contended; float atomics make the sum order, and so the last bits,
//           run-dependent). No gradient w.r.t. the points (ops.py uses the reference when points require grad).
//
// No torch headers here: tensors, checks, device guard and stream live in bindings_cuda.cpp, so this file compiles
// in seconds with plain nvcc (the compile check in tests/cuda_ext runs on machines with a CPU-only torch).
#include <cuda_runtime.h>

#include <cstdint>

#include "hashgrid.h"

namespace {

constexpr int kDim = 3;
constexpr int kThreads = 256;

// Level table passed by value (kernel parameter space), so no device copy of offsets/resolutions is needed.
struct Levels {
  int64_t offset[kMaxLevels];
  uint32_t size[kMaxLevels];
  uint32_t mask[kMaxLevels];  // size - 1 for power-of-two sizes (a mask, not a division), else 0
  uint32_t res[kMaxLevels];
  bool dense[kMaxLevels];
  int count;
};

__device__ __forceinline__ uint32_t corner_row(const uint32_t* c, const Levels& lv, int l) {
  if (lv.dense[l]) {
    const uint32_t stride = lv.res[l] + 1;
    return c[0] + stride * (c[1] + stride * c[2]);
  }
  const uint32_t h = c[0] * 1u ^ c[1] * 2654435761u ^ c[2] * 805459861u;  // uint32 wrap-around is the hash
  return lv.mask[l] ? (h & lv.mask[l]) : h % lv.size[l];
}

// Cell and fractions of point i in level l, with the reference's float ops.
__device__ __forceinline__ void locate(const float* __restrict__ point, float bound, float two_bound, uint32_t res,
                                       uint32_t* cell, float* frac) {
#pragma unroll
  for (int d = 0; d < kDim; ++d) {
    float u = __fdiv_rn(point[d] + bound, two_bound);
    u = fminf(fmaxf(u, 0.f), 1.f);
    const float pos = __fmul_rn(u, static_cast<float>(res));
    const float fl = fminf(floorf(pos), static_cast<float>(res - 1));
    cell[d] = static_cast<uint32_t>(fl);
    frac[d] = pos - fl;
  }
}

__global__ void hashgrid_forward_kernel(const float* __restrict__ points, const float* __restrict__ table,
                                        float* __restrict__ out, int64_t n, int f_dim, Levels levels, float bound,
                                        float two_bound) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  uint32_t cell[kDim], corner[kDim];
  float frac[kDim];
  locate(points + i * kDim, bound, two_bound, levels.res[l], cell, frac);
  float acc[kMaxFeatures] = {0.f};
#pragma unroll
  for (int c = 0; c < (1 << kDim); ++c) {
    float w = 1.f;
#pragma unroll
    for (int d = 0; d < kDim; ++d) {
      const int bit = (c >> d) & 1;
      corner[d] = cell[d] + bit;
      w = __fmul_rn(w, bit ? frac[d] : 1.f - frac[d]);
    }
    const float* src = table + (levels.offset[l] + corner_row(corner, levels, l)) * f_dim;
    for (int f = 0; f < f_dim; ++f) acc[f] += w * src[f];
  }
  float* dst = out + (i * levels.count + l) * f_dim;
  for (int f = 0; f < f_dim; ++f) dst[f] = acc[f];
}

__global__ void hashgrid_backward_kernel(const float* __restrict__ grad_out, const float* __restrict__ points,
                                         float* __restrict__ grad_table, int64_t n, int f_dim, Levels levels,
                                         float bound, float two_bound) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  uint32_t cell[kDim], corner[kDim];
  float frac[kDim];
  locate(points + i * kDim, bound, two_bound, levels.res[l], cell, frac);
  const float* g = grad_out + (i * levels.count + l) * f_dim;
#pragma unroll
  for (int c = 0; c < (1 << kDim); ++c) {
    float w = 1.f;
#pragma unroll
    for (int d = 0; d < kDim; ++d) {
      const int bit = (c >> d) & 1;
      corner[d] = cell[d] + bit;
      w = __fmul_rn(w, bit ? frac[d] : 1.f - frac[d]);
    }
    float* dst = grad_table + (levels.offset[l] + corner_row(corner, levels, l)) * f_dim;
    for (int f = 0; f < f_dim; ++f) atomicAdd(dst + f, w * g[f]);
  }
}

Levels make_levels(const int64_t* offsets, const int64_t* resolutions, int num_levels) {
  Levels lv;
  lv.count = num_levels;
  for (int l = 0; l < num_levels; ++l) {
    lv.offset[l] = offsets[l];
    lv.size[l] = static_cast<uint32_t>(offsets[l + 1] - offsets[l]);
    lv.mask[l] = (lv.size[l] & (lv.size[l] - 1)) == 0 ? lv.size[l] - 1 : 0;
    lv.res[l] = static_cast<uint32_t>(resolutions[l]);
    const double stride = static_cast<double>(lv.res[l]) + 1.0;
    lv.dense[l] = stride * stride * stride <= static_cast<double>(lv.size[l]);
  }
  return lv;
}

}  // namespace

cudaError_t hashgrid_forward_launch(const float* points, const float* table, float* out, int64_t n, int f_dim,
                                    const int64_t* offsets, const int64_t* resolutions, int num_levels, float bound,
                                    cudaStream_t stream) {
  if (n == 0 || num_levels == 0) return cudaSuccess;
  const Levels levels = make_levels(offsets, resolutions, num_levels);
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), num_levels);
  hashgrid_forward_kernel<<<grid, kThreads, 0, stream>>>(points, table, out, n, f_dim, levels, bound, 2.f * bound);
  return cudaGetLastError();
}

cudaError_t hashgrid_backward_launch(const float* grad_out, const float* points, float* grad_table, int64_t n,
                                     int f_dim, const int64_t* offsets, const int64_t* resolutions, int num_levels,
                                     float bound, cudaStream_t stream) {
  if (n == 0 || num_levels == 0) return cudaSuccess;
  const Levels levels = make_levels(offsets, resolutions, num_levels);
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), num_levels);
  hashgrid_backward_kernel<<<grid, kThreads, 0, stream>>>(grad_out, points, grad_table, n, f_dim, levels, bound,
                                                          2.f * bound);
  return cudaGetLastError();
}
