// Python bindings of the CUDA hash grid: tensor checks, device guard, stream, allocation; kernels in hashgrid.cu.
// Same function names as hashgrid_cpu.cpp, so ops.py calls either module the same way.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <vector>

#include "hashgrid.h"

namespace {

void check_cuda_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), "hashgrid cuda: ", name,
              " must be a contiguous float32 CUDA tensor");
}

int check_levels(const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions) {
  TORCH_CHECK(offsets.size() == resolutions.size() + 1, "hashgrid cuda: offsets must have one more entry than "
              "resolutions, got ", offsets.size(), " and ", resolutions.size());
  TORCH_CHECK(resolutions.size() <= static_cast<size_t>(kMaxLevels), "hashgrid cuda: at most ", kMaxLevels,
              " levels, got ", resolutions.size());
  return static_cast<int>(resolutions.size());
}

}  // namespace

torch::Tensor hashgrid_forward(const torch::Tensor& points, const torch::Tensor& embeddings,
                               const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                               double bound) {
  check_cuda_float(points, "points");
  check_cuda_float(embeddings, "embeddings");
  const int num_levels = check_levels(offsets, resolutions);
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "hashgrid cuda: points must be [N, 3], got ", points.sizes());
  TORCH_CHECK(embeddings.dim() == 2 && embeddings.size(0) == offsets.back(),
              "hashgrid cuda: embeddings must be [offsets[-1], F], got ", embeddings.sizes());
  const int f_dim = static_cast<int>(embeddings.size(1));
  TORCH_CHECK(f_dim >= 1 && f_dim <= kMaxFeatures, "hashgrid cuda: 1 to ", kMaxFeatures, " features per level");
  const c10::cuda::CUDAGuard guard(points.device());
  const int64_t n = points.size(0);
  auto out = torch::empty({n, static_cast<int64_t>(num_levels) * f_dim}, points.options());
  const cudaError_t err = hashgrid_forward_launch(
      points.data_ptr<float>(), embeddings.data_ptr<float>(), out.data_ptr<float>(), n, f_dim, offsets.data(),
      resolutions.data(), num_levels, static_cast<float>(bound), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "hashgrid cuda forward: ", cudaGetErrorString(err));
  return out;
}

torch::Tensor hashgrid_backward(const torch::Tensor& grad_out, const torch::Tensor& points,
                                const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                                double bound, int64_t num_rows) {
  check_cuda_float(grad_out, "grad_out");
  check_cuda_float(points, "points");
  const int num_levels = check_levels(offsets, resolutions);
  TORCH_CHECK(num_levels > 0 && grad_out.dim() == 2 && grad_out.size(0) == points.size(0) &&
                  grad_out.size(1) % num_levels == 0,
              "hashgrid cuda: grad_out must be [N, L*F], got ", grad_out.sizes());
  const int f_dim = static_cast<int>(grad_out.size(1) / num_levels);
  TORCH_CHECK(f_dim >= 1 && f_dim <= kMaxFeatures, "hashgrid cuda: 1 to ", kMaxFeatures, " features per level");
  const c10::cuda::CUDAGuard guard(points.device());
  auto grad_table = torch::zeros({num_rows, f_dim}, points.options());
  const cudaError_t err = hashgrid_backward_launch(
      grad_out.data_ptr<float>(), points.data_ptr<float>(), grad_table.data_ptr<float>(), points.size(0), f_dim,
      offsets.data(), resolutions.data(), num_levels, static_cast<float>(bound), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "hashgrid cuda backward: ", cudaGetErrorString(err));
  return grad_table;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk 3D hash grid, CUDA (forward, backward w.r.t. embeddings)";
  m.def("forward", &hashgrid_forward, "points [N,3], embeddings [E,F], offsets, resolutions, bound -> [N, L*F]");
  m.def("backward", &hashgrid_backward,
        "grad_out [N,L*F], points [N,3], offsets, resolutions, bound, num_rows -> grad embeddings [E,F]");
}
