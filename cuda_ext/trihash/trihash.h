// Launchers of the CUDA tri-plane hash grid (trihash.cu), called by bindings_cuda.cpp. Raw pointers, no torch
// types, so the .cu compiles without torch headers. Device pointers except offsets/resolutions (host).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

constexpr int kMaxLevels = 32;    // levels are passed by value in the kernel parameters
constexpr int kMaxFeatures = 8;   // features per level accumulate in registers

// points [n, 3], table [3, num_rows, F] -> out [n, 3*L*F] (fully written).
cudaError_t trihash_forward_launch(const float* points, const float* table, float* out, int64_t n, int64_t num_rows,
                                   int f_dim, const int64_t* offsets, const int64_t* resolutions, int num_levels,
                                   float bound, cudaStream_t stream);

// grad_out [n, 3*L*F], points [n, 3] -> grad_table [3, num_rows, F] (accumulated into; pass zeros).
cudaError_t trihash_backward_launch(const float* grad_out, const float* points, float* grad_table, int64_t n,
                                    int64_t num_rows, int f_dim, const int64_t* offsets, const int64_t* resolutions,
                                    int num_levels, float bound, cudaStream_t stream);
