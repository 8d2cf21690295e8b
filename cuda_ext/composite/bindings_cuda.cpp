// Python bindings of the CUDA compositing kernels: tensor checks, device guard, stream, allocation, dtype dispatch.
// Kernels in composite.cu; called by cuda_ext/composite/ops.py (_CompositeCUDA).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <vector>

#include "composite.h"

namespace {

void check_samples(const torch::Tensor& t, const char* name, const torch::Tensor& like, int64_t rows, int dims) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), "composite cuda: ", name, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "composite cuda: ", name, " must be ", like.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dims && t.size(0) == rows, "composite cuda: ", name, " must have ", dims,
              " dims and ", rows, " rows, got ", t.sizes());
}

void check_info(const torch::Tensor& info) {
  TORCH_CHECK(info.is_cuda() && info.is_contiguous() && info.scalar_type() == torch::kInt64 && info.dim() == 2 &&
                  info.size(1) == 2,
              "composite cuda: info must be a contiguous [R, 2] int64 CUDA tensor, got ", info.sizes());
}

}  // namespace

std::vector<torch::Tensor> composite_forward(const torch::Tensor& info, const torch::Tensor& t_starts,
                                             const torch::Tensor& t_ends, const torch::Tensor& sigmas,
                                             const torch::Tensor& rgbs, const torch::Tensor& extras,
                                             bool sum_extras) {
  check_info(info);
  const int64_t n = sigmas.size(0);
  const int64_t n_rays = info.size(0);
  for (auto [t, name] : {std::pair{&t_starts, "t_starts"}, {&t_ends, "t_ends"}, {&sigmas, "sigmas"}}) {
    check_samples(*t, name, sigmas, n, 1);
  }
  check_samples(rgbs, "rgbs", sigmas, n, 2);
  check_samples(extras, "extras", sigmas, n, 2);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  auto weights = torch::empty_like(sigmas);
  auto trans = torch::empty_like(sigmas);
  auto opacities = torch::zeros({n_rays}, sigmas.options());
  auto depths = torch::zeros({n_rays}, sigmas.options());
  auto colors = torch::zeros({n_rays, rgbs.size(1)}, sigmas.options());
  auto out_extras = torch::zeros({n_rays, extras.size(1)}, sigmas.options());
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_forward", [&] {
    err = composite_forward_launch<scalar_t>(
        n_rays, info.data_ptr<int64_t>(), t_starts.data_ptr<scalar_t>(), t_ends.data_ptr<scalar_t>(),
        sigmas.data_ptr<scalar_t>(), rgbs.data_ptr<scalar_t>(), static_cast<int>(rgbs.size(1)),
        extras.data_ptr<scalar_t>(), static_cast<int>(extras.size(1)), sum_extras, weights.data_ptr<scalar_t>(),
        trans.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
        colors.data_ptr<scalar_t>(), out_extras.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream());
  });
  TORCH_CHECK(err == cudaSuccess, "composite cuda forward: ", cudaGetErrorString(err));
  return {weights, trans, opacities, depths, colors, out_extras};
}

std::vector<torch::Tensor> composite_backward(
    const torch::Tensor& info, const torch::Tensor& t_starts, const torch::Tensor& t_ends,
    const torch::Tensor& sigmas, const torch::Tensor& rgbs, const torch::Tensor& extras, const torch::Tensor& weights,
    const torch::Tensor& trans, const torch::Tensor& grad_weights, const torch::Tensor& grad_trans,
    const torch::Tensor& grad_opacities, const torch::Tensor& grad_depths, const torch::Tensor& grad_colors,
    const torch::Tensor& grad_extras, bool sum_extras) {
  check_info(info);
  const int64_t n = sigmas.size(0);
  const int64_t n_rays = info.size(0);
  for (auto [t, name] : {std::pair{&t_starts, "t_starts"}, {&t_ends, "t_ends"}, {&sigmas, "sigmas"},
                         {&weights, "weights"}, {&trans, "trans"}, {&grad_weights, "grad_weights"},
                         {&grad_trans, "grad_trans"}}) {
    check_samples(*t, name, sigmas, n, 1);
  }
  check_samples(rgbs, "rgbs", sigmas, n, 2);
  check_samples(extras, "extras", sigmas, n, 2);
  check_samples(grad_opacities, "grad_opacities", sigmas, n_rays, 1);
  check_samples(grad_depths, "grad_depths", sigmas, n_rays, 1);
  check_samples(grad_colors, "grad_colors", sigmas, n_rays, 2);
  check_samples(grad_extras, "grad_extras", sigmas, n_rays, 2);
  TORCH_CHECK(grad_colors.size(1) == rgbs.size(1) && grad_extras.size(1) == extras.size(1),
              "composite cuda: gradient channels do not match rgbs/extras");
  const c10::cuda::CUDAGuard guard(sigmas.device());
  auto grad_t_starts = torch::empty_like(sigmas);
  auto grad_t_ends = torch::empty_like(sigmas);
  auto grad_sigmas = torch::empty_like(sigmas);
  auto grad_rgbs = torch::empty_like(rgbs);
  auto grad_out_extras = torch::empty_like(extras);
  cudaError_t err = cudaSuccess;
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_backward", [&] {
    err = composite_backward_launch<scalar_t>(
        n_rays, info.data_ptr<int64_t>(), t_starts.data_ptr<scalar_t>(), t_ends.data_ptr<scalar_t>(),
        sigmas.data_ptr<scalar_t>(), rgbs.data_ptr<scalar_t>(), static_cast<int>(rgbs.size(1)),
        extras.data_ptr<scalar_t>(), static_cast<int>(extras.size(1)), sum_extras, weights.data_ptr<scalar_t>(),
        trans.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(), grad_trans.data_ptr<scalar_t>(),
        grad_opacities.data_ptr<scalar_t>(), grad_depths.data_ptr<scalar_t>(), grad_colors.data_ptr<scalar_t>(),
        grad_extras.data_ptr<scalar_t>(), grad_t_starts.data_ptr<scalar_t>(), grad_t_ends.data_ptr<scalar_t>(),
        grad_sigmas.data_ptr<scalar_t>(), grad_rgbs.data_ptr<scalar_t>(), grad_out_extras.data_ptr<scalar_t>(),
        c10::cuda::getCurrentCUDAStream());
  });
  TORCH_CHECK(err == cudaSuccess, "composite cuda backward: ", cudaGetErrorString(err));
  return {grad_t_starts, grad_t_ends, grad_sigmas, grad_rgbs, grad_out_extras};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk volume compositing, CUDA (packed samples, forward and backward)";
  m.def("composite_forward", &composite_forward,
        "info [R,2], t_starts, t_ends, sigmas [S], rgbs [S,C], extras [S,E], sum_extras -> "
        "weights, trans [S], opacities, depths [R], colors [R,C], extras [R,E]");
  m.def("composite_backward", &composite_backward,
        "saved inputs and outputs + output gradients -> grad t_starts, t_ends, sigmas [S], rgbs [S,C], extras [S,E]");
}
