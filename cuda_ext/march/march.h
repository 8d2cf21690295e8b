// Launchers of the marching kernels (march.cu), called from bindings_cuda.cpp. Spec: reference.py.
#pragma once

#ifndef SYNCTALK_HOST_EMULATION  // tests/render/test_kernels_on_host.py compiles the kernels with g++
#include <cuda_runtime.h>
#endif

#include <cstdint>

// Parameters shared by both passes; grid is a [res_x, res_y, res_z] uint8 (bool) occupancy over aabb.
template <typename scalar_t>
struct MarchParams {
  const scalar_t* rays_o;  // [R, 3]
  const scalar_t* rays_d;  // [R, 3]
  const scalar_t* near;    // [R]
  const scalar_t* far;     // [R]
  const uint8_t* grid;     // [X * Y * Z]
  int res_x, res_y, res_z;
  scalar_t aabb[6];
  scalar_t step_size, cone_angle, max_step_size;
  int64_t max_steps;
  int64_t n_rays;
};

// Pass 1: counts [R] int64 = samples kept per ray.
template <typename scalar_t>
cudaError_t march_count_launch(const MarchParams<scalar_t>& params, int64_t* counts, cudaStream_t stream);

// Pass 2: writes each ray's samples at offsets [R] (exclusive cumsum of counts).
template <typename scalar_t>
cudaError_t march_fill_launch(const MarchParams<scalar_t>& params, const int64_t* offsets, int64_t* ray_indices,
                              scalar_t* t_starts, scalar_t* t_ends, cudaStream_t stream);
