// Volume compositing, CUDA kernels + launchers. Spec: cuda_ext/composite/reference.py (composite and
// composite_backward; the variable names below follow it).
//
// One thread per ray walks that ray's contiguous samples in t order (packed layout, `info` = first sample, count).
// Forward: T_i = exp(-sum_{j<i} a_i), w_i = T_i (1 - exp(-a_i)), a_i = sigma_i (t_end_i - t_start_i).
// Backward: two passes over the ray — total of c_k = g_k w_k + gT_k T_k, then dL/da_i = g_i T_{i+1} - sum_{k>i} c_k
// with the suffix sum as total - running inclusive sum. Running sums are in double: the suffix is a difference of
// two large sums and float32 would lose digits on long rays.
//
// No torch headers: tensors and checks live in bindings_cuda.cpp, so this file compiles with plain nvcc.
#ifndef SYNCTALK_HOST_EMULATION  // tests/render/test_kernels_on_host.py compiles the kernels with g++
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "composite.h"

namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void composite_forward_kernel(int64_t n_rays, const int64_t* __restrict__ info,
                                         const scalar_t* __restrict__ t_starts, const scalar_t* __restrict__ t_ends,
                                         const scalar_t* __restrict__ sigmas, const scalar_t* __restrict__ rgbs,
                                         int c_rgb, const scalar_t* __restrict__ extras, int c_ex, bool sum_extras,
                                         scalar_t* __restrict__ weights, scalar_t* __restrict__ trans,
                                         scalar_t* __restrict__ opacities, scalar_t* __restrict__ depths,
                                         scalar_t* __restrict__ colors, scalar_t* __restrict__ out_extras) {
  const int64_t ray = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ray >= n_rays) return;
  const int64_t start = info[2 * ray];
  const int64_t count = info[2 * ray + 1];
  double thickness_before = 0.0;  // sum_{j<i} a_j, like the reference's float64 cumsum
  scalar_t opacity = 0, depth = 0;
  scalar_t* color = colors + ray * c_rgb;
  scalar_t* extra = out_extras + ray * c_ex;
  for (int64_t i = start; i < start + count; ++i) {
    const scalar_t thickness = sigmas[i] * (t_ends[i] - t_starts[i]);
    const scalar_t transmittance = exp(-static_cast<scalar_t>(thickness_before));
    const scalar_t weight = transmittance * (scalar_t(1) - exp(-thickness));
    weights[i] = weight;
    trans[i] = transmittance;
    opacity += weight;
    depth += weight * (t_starts[i] + t_ends[i]) * scalar_t(0.5);
    for (int c = 0; c < c_rgb; ++c) color[c] += weight * rgbs[i * c_rgb + c];
    const scalar_t factor = sum_extras ? scalar_t(1) : weight;
    for (int c = 0; c < c_ex; ++c) extra[c] += factor * extras[i * c_ex + c];
    thickness_before += static_cast<double>(thickness);
  }
  opacities[ray] = opacity;
  depths[ray] = depth;
}

template <typename scalar_t>
__global__ void composite_backward_kernel(
    int64_t n_rays, const int64_t* __restrict__ info, const scalar_t* __restrict__ t_starts,
    const scalar_t* __restrict__ t_ends, const scalar_t* __restrict__ sigmas, const scalar_t* __restrict__ rgbs,
    int c_rgb, const scalar_t* __restrict__ extras, int c_ex, bool sum_extras, const scalar_t* __restrict__ weights,
    const scalar_t* __restrict__ trans, const scalar_t* __restrict__ grad_weights,
    const scalar_t* __restrict__ grad_trans, const scalar_t* __restrict__ grad_opacities,
    const scalar_t* __restrict__ grad_depths, const scalar_t* __restrict__ grad_colors,
    const scalar_t* __restrict__ grad_extras, scalar_t* __restrict__ grad_t_starts,
    scalar_t* __restrict__ grad_t_ends, scalar_t* __restrict__ grad_sigmas, scalar_t* __restrict__ grad_rgbs,
    scalar_t* __restrict__ grad_out_extras) {
  const int64_t ray = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ray >= n_rays) return;
  const int64_t start = info[2 * ray];
  const int64_t count = info[2 * ray + 1];
  const scalar_t g_opacity = grad_opacities[ray];
  const scalar_t g_depth = grad_depths[ray];
  const scalar_t* g_color = grad_colors + ray * c_rgb;
  const scalar_t* g_extra = grad_extras + ray * c_ex;

  // g_i = dL/dw_i through every output that sums weights
  auto grad_weight = [&](int64_t i) -> scalar_t {
    scalar_t g = grad_weights[i] + g_opacity + g_depth * (t_starts[i] + t_ends[i]) * scalar_t(0.5);
    for (int c = 0; c < c_rgb; ++c) g += g_color[c] * rgbs[i * c_rgb + c];
    if (!sum_extras) {
      for (int c = 0; c < c_ex; ++c) g += g_extra[c] * extras[i * c_ex + c];
    }
    return g;
  };

  double total = 0.0;
  for (int64_t i = start; i < start + count; ++i) {
    total += static_cast<double>(grad_weight(i) * weights[i] + grad_trans[i] * trans[i]);
  }
  double inclusive = 0.0;
  for (int64_t i = start; i < start + count; ++i) {
    const scalar_t g = grad_weight(i);
    const scalar_t w = weights[i];
    inclusive += static_cast<double>(g * w + grad_trans[i] * trans[i]);
    const scalar_t after = static_cast<scalar_t>(total - inclusive);  // sum over k > i
    const scalar_t grad_thickness = g * (trans[i] - w) - after;     // trans - w = T_{i+1}
    const scalar_t half_depth = g_depth * w * scalar_t(0.5);
    grad_sigmas[i] = grad_thickness * (t_ends[i] - t_starts[i]);
    grad_t_ends[i] = grad_thickness * sigmas[i] + half_depth;
    grad_t_starts[i] = -grad_thickness * sigmas[i] + half_depth;
    for (int c = 0; c < c_rgb; ++c) grad_rgbs[i * c_rgb + c] = g_color[c] * w;
    const scalar_t factor = sum_extras ? scalar_t(1) : w;
    for (int c = 0; c < c_ex; ++c) grad_out_extras[i * c_ex + c] = g_extra[c] * factor;
  }
}

inline unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

}  // namespace

#ifndef SYNCTALK_HOST_EMULATION  // launchers: CUDA only

template <typename scalar_t>
cudaError_t composite_forward_launch(int64_t n_rays, const int64_t* info, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const scalar_t* sigmas, const scalar_t* rgbs, int c_rgb,
                                     const scalar_t* extras, int c_ex, bool sum_extras, scalar_t* weights,
                                     scalar_t* trans, scalar_t* opacities, scalar_t* depths, scalar_t* colors,
                                     scalar_t* out_extras, cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;
  composite_forward_kernel<scalar_t><<<blocks_for(n_rays), kThreads, 0, stream>>>(
      n_rays, info, t_starts, t_ends, sigmas, rgbs, c_rgb, extras, c_ex, sum_extras, weights, trans, opacities,
      depths, colors, out_extras);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t composite_backward_launch(int64_t n_rays, const int64_t* info, const scalar_t* t_starts,
                                      const scalar_t* t_ends, const scalar_t* sigmas, const scalar_t* rgbs, int c_rgb,
                                      const scalar_t* extras, int c_ex, bool sum_extras, const scalar_t* weights,
                                      const scalar_t* trans, const scalar_t* grad_weights, const scalar_t* grad_trans,
                                      const scalar_t* grad_opacities, const scalar_t* grad_depths,
                                      const scalar_t* grad_colors, const scalar_t* grad_extras,
                                      scalar_t* grad_t_starts, scalar_t* grad_t_ends, scalar_t* grad_sigmas,
                                      scalar_t* grad_rgbs, scalar_t* grad_out_extras, cudaStream_t stream) {
  if (n_rays == 0) return cudaSuccess;
  composite_backward_kernel<scalar_t><<<blocks_for(n_rays), kThreads, 0, stream>>>(
      n_rays, info, t_starts, t_ends, sigmas, rgbs, c_rgb, extras, c_ex, sum_extras, weights, trans, grad_weights,
      grad_trans, grad_opacities, grad_depths, grad_colors, grad_extras, grad_t_starts, grad_t_ends, grad_sigmas,
      grad_rgbs, grad_out_extras);
  return cudaGetLastError();
}

// float32 and float64 instantiations (the bindings dispatch on dtype)
#define INSTANTIATE(T)                                                                                                \
  template cudaError_t composite_forward_launch<T>(int64_t, const int64_t*, const T*, const T*, const T*, const T*,  \
                                                   int, const T*, int, bool, T*, T*, T*, T*, T*, T*, cudaStream_t);  \
  template cudaError_t composite_backward_launch<T>(int64_t, const int64_t*, const T*, const T*, const T*, const T*, \
                                                    int, const T*, int, bool, const T*, const T*, const T*, const T*, \
                                                    const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*,       \
                                                    cudaStream_t);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE
#endif  // SYNCTALK_HOST_EMULATION
