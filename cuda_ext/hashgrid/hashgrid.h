// Launchers of the CUDA hash grid (hashgrid.cu), called by bindings_cuda.cpp. Raw pointers, no torch types, so the
// .cu compiles without torch headers. All pointers are device pointers except offsets/resolutions (host).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

constexpr int kMaxLevels = 32;    // levels are passed by value in the kernel parameters
constexpr int kMaxFeatures = 8;   // features per level accumulate in registers

// points [n, 3], table [offsets[L], F] -> out [n, L*F] (fully written).
cudaError_t hashgrid_forward_launch(const float* points, const float* table, float* out, int64_t n, int f_dim,
                                    const int64_t* offsets, const int64_t* resolutions, int num_levels, float bound,
                                    cudaStream_t stream);

// grad_out [n, L*F], points [n, 3] -> grad_table [offsets[L], F] (accumulated into; pass zeros).
cudaError_t hashgrid_backward_launch(const float* grad_out, const float* points, float* grad_table, int64_t n,
                                     int f_dim, const int64_t* offsets, const int64_t* resolutions, int num_levels,
                                     float bound, cudaStream_t stream);
