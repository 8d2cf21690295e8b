// Launchers of the compositing kernels (composite.cu), called from bindings_cuda.cpp. Spec: reference.py.
#pragma once

#ifndef SYNCTALK_HOST_EMULATION  // tests/render/test_kernels_on_host.py compiles the kernels with g++
#include <cuda_runtime.h>
#endif

#include <cstdint>

// Per-ray forward. info [R, 2] int64 (first sample, count); per-sample inputs [S] / [S, C]; outputs: weights [S],
// trans [S] (written), opacities [R], depths [R], colors [R, C_rgb], extras [R, C_ex] (must be zero on entry).
template <typename scalar_t>
cudaError_t composite_forward_launch(int64_t n_rays, const int64_t* info, const scalar_t* t_starts,
                                     const scalar_t* t_ends, const scalar_t* sigmas, const scalar_t* rgbs, int c_rgb,
                                     const scalar_t* extras, int c_ex, bool sum_extras, scalar_t* weights,
                                     scalar_t* trans, scalar_t* opacities, scalar_t* depths, scalar_t* colors,
                                     scalar_t* out_extras, cudaStream_t stream);

// Per-ray backward (closed form of reference.composite_backward): writes every per-sample gradient.
template <typename scalar_t>
cudaError_t composite_backward_launch(int64_t n_rays, const int64_t* info, const scalar_t* t_starts,
                                      const scalar_t* t_ends, const scalar_t* sigmas, const scalar_t* rgbs, int c_rgb,
                                      const scalar_t* extras, int c_ex, bool sum_extras, const scalar_t* weights,
                                      const scalar_t* trans, const scalar_t* grad_weights, const scalar_t* grad_trans,
                                      const scalar_t* grad_opacities, const scalar_t* grad_depths,
                                      const scalar_t* grad_colors, const scalar_t* grad_extras,
                                      scalar_t* grad_t_starts, scalar_t* grad_t_ends, scalar_t* grad_sigmas,
                                      scalar_t* grad_rgbs, scalar_t* grad_out_extras, cudaStream_t stream);
