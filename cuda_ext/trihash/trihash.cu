// Tri-plane multiresolution 2D hash grid, CUDA kernels + launchers. Spec: cuda_ext/trihash/reference.py (float32).
//
// forward : one thread per (point, plane x level): 4 bilinear corners, F <= kMaxFeatures registers.
// backward: one thread per (point, plane x level), atomicAdd of weight * grad into the table gradient (corners are
//           shared between points and hashed levels collide; float atomics make the last bits run-dependent).
// No gradient w.r.t. the points (ops.py uses the reference when points require grad).
//
// No torch headers here: tensors, checks, device guard and stream live in bindings_cuda.cpp, so this file compiles
// in seconds with plain nvcc (the compile check in tests/cuda_ext runs on machines with a CPU-only torch).
#include <cuda_runtime.h>

#include <cstdint>

#include "trihash.h"

namespace {

constexpr int kPlanes = 3;
constexpr int kThreads = 256;

struct Levels {
  int64_t offset[kMaxLevels];
  uint32_t size[kMaxLevels];
  uint32_t mask[kMaxLevels];  // size - 1 for power-of-two sizes (a mask, not a division), else 0
  uint32_t res[kMaxLevels];
  bool dense[kMaxLevels];
  int count;
};

// Rows (within one plane's table) and bilinear weights of the 4 corners, in the reference's order and float ops.
__device__ __forceinline__ void corners(const float* __restrict__ point, int plane, int l, const Levels& lv,
                                        float bound, float two_bound, int64_t* rows, float* weights) {
  const int axis0 = plane == 1 ? 1 : 0;  // xy, yz, xz
  const int axis1 = plane == 0 ? 1 : 2;
  const int axes[2] = {axis0, axis1};
  const uint32_t res = lv.res[l];
  uint32_t cell[2];
  float frac[2];
#pragma unroll
  for (int d = 0; d < 2; ++d) {
    float u = __fdiv_rn(point[axes[d]] + bound, two_bound);
    u = fminf(fmaxf(u, 0.f), 1.f);
    const float pos = __fmul_rn(u, static_cast<float>(res));
    const float fl = fminf(floorf(pos), static_cast<float>(res - 1));
    cell[d] = static_cast<uint32_t>(fl);
    frac[d] = pos - fl;
  }
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const uint32_t bx = c & 1, by = (c >> 1) & 1;
    weights[c] = __fmul_rn(bx ? frac[0] : 1.f - frac[0], by ? frac[1] : 1.f - frac[1]);
    const uint32_t x = cell[0] + bx, y = cell[1] + by;
    const uint32_t h = x * 1u ^ y * 2654435761u;  // uint32 wrap-around is the hash
    const uint32_t row = lv.dense[l] ? x + (res + 1) * y : (lv.mask[l] ? (h & lv.mask[l]) : h % lv.size[l]);
    rows[c] = lv.offset[l] + row;
  }
}

__global__ void trihash_forward_kernel(const float* __restrict__ points, const float* __restrict__ table,
                                       float* __restrict__ out, int64_t n, int64_t num_rows, int f_dim,
                                       Levels levels, float bound, float two_bound) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int task = blockIdx.y;  // plane * L + level: also the output block index
  if (i >= n) return;
  const int plane = task / levels.count, l = task % levels.count;
  int64_t rows[4];
  float weights[4];
  corners(points + i * 3, plane, l, levels, bound, two_bound, rows, weights);
  const float* plane_table = table + plane * num_rows * f_dim;
  float acc[kMaxFeatures] = {0.f};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const float* src = plane_table + rows[c] * f_dim;
    for (int f = 0; f < f_dim; ++f) acc[f] += weights[c] * src[f];
  }
  float* dst = out + (i * kPlanes * levels.count + task) * f_dim;
  for (int f = 0; f < f_dim; ++f) dst[f] = acc[f];
}

__global__ void trihash_backward_kernel(const float* __restrict__ grad_out, const float* __restrict__ points,
                                        float* __restrict__ grad_table, int64_t n, int64_t num_rows, int f_dim,
                                        Levels levels, float bound, float two_bound) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int task = blockIdx.y;
  if (i >= n) return;
  const int plane = task / levels.count, l = task % levels.count;
  int64_t rows[4];
  float weights[4];
  corners(points + i * 3, plane, l, levels, bound, two_bound, rows, weights);
  const float* g = grad_out + (i * kPlanes * levels.count + task) * f_dim;
  float* plane_grad = grad_table + plane * num_rows * f_dim;
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    float* dst = plane_grad + rows[c] * f_dim;
    for (int f = 0; f < f_dim; ++f) atomicAdd(dst + f, weights[c] * g[f]);
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
    lv.dense[l] = stride * stride <= static_cast<double>(lv.size[l]);
  }
  return lv;
}

}  // namespace

cudaError_t trihash_forward_launch(const float* points, const float* table, float* out, int64_t n, int64_t num_rows,
                                   int f_dim, const int64_t* offsets, const int64_t* resolutions, int num_levels,
                                   float bound, cudaStream_t stream) {
  if (n == 0 || num_levels == 0) return cudaSuccess;
  const Levels levels = make_levels(offsets, resolutions, num_levels);
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), kPlanes * num_levels);
  trihash_forward_kernel<<<grid, kThreads, 0, stream>>>(points, table, out, n, num_rows, f_dim, levels, bound,
                                                        2.f * bound);
  return cudaGetLastError();
}

cudaError_t trihash_backward_launch(const float* grad_out, const float* points, float* grad_table, int64_t n,
                                    int64_t num_rows, int f_dim, const int64_t* offsets, const int64_t* resolutions,
                                    int num_levels, float bound, cudaStream_t stream) {
  if (n == 0 || num_levels == 0) return cudaSuccess;
  const Levels levels = make_levels(offsets, resolutions, num_levels);
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), kPlanes * num_levels);
  trihash_backward_kernel<<<grid, kThreads, 0, stream>>>(grad_out, points, grad_table, n, num_rows, f_dim, levels,
                                                         bound, 2.f * bound);
  return cudaGetLastError();
}
