// Python bindings of the CUDA marcher: checks, device guard, stream, the two passes and the cumsum between them.
// Kernels in march.cu; called by cuda_ext/march/ops.py.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <vector>

#include "march.h"

std::vector<torch::Tensor> march_forward(const torch::Tensor& rays_o, const torch::Tensor& rays_d,
                                         const torch::Tensor& near, const torch::Tensor& far,
                                         const torch::Tensor& grid, const torch::Tensor& aabb, double step_size,
                                         double cone_angle, double max_step_size, int64_t max_steps) {
  const int64_t n_rays = rays_o.size(0);
  for (auto [t, name] : {std::pair{&rays_o, "rays_o"}, {&rays_d, "rays_d"}, {&near, "near"}, {&far, "far"},
                         {&aabb, "aabb"}}) {
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == near.scalar_type(), "march cuda: ", name,
                " must be a contiguous CUDA tensor of dtype ", near.scalar_type());
  }
  TORCH_CHECK(rays_o.dim() == 2 && rays_o.size(1) == 3 && rays_d.sizes() == rays_o.sizes(),
              "march cuda: rays_o and rays_d must be [R, 3], got ", rays_o.sizes(), " and ", rays_d.sizes());
  TORCH_CHECK(near.numel() == n_rays && far.numel() == n_rays, "march cuda: near and far must be [R]");
  TORCH_CHECK(grid.is_cuda() && grid.is_contiguous() && grid.scalar_type() == torch::kUInt8 && grid.dim() == 3,
              "march cuda: grid must be a contiguous [X, Y, Z] uint8 CUDA tensor, got ", grid.sizes());
  TORCH_CHECK(aabb.numel() == 6, "march cuda: aabb must be [6]");
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto aabb_host = aabb.cpu();
  auto counts = torch::zeros({n_rays}, rays_o.options().dtype(torch::kInt64));
  torch::Tensor ray_indices, t_starts, t_ends;
  AT_DISPATCH_FLOATING_TYPES(near.scalar_type(), "march_forward", [&] {
    MarchParams<scalar_t> p{};
    p.rays_o = rays_o.data_ptr<scalar_t>();
    p.rays_d = rays_d.data_ptr<scalar_t>();
    p.near = near.data_ptr<scalar_t>();
    p.far = far.data_ptr<scalar_t>();
    p.grid = grid.data_ptr<uint8_t>();
    p.res_x = static_cast<int>(grid.size(0));
    p.res_y = static_cast<int>(grid.size(1));
    p.res_z = static_cast<int>(grid.size(2));
    for (int i = 0; i < 6; ++i) p.aabb[i] = aabb_host.data_ptr<scalar_t>()[i];
    p.step_size = static_cast<scalar_t>(step_size);
    p.cone_angle = static_cast<scalar_t>(cone_angle);
    p.max_step_size = static_cast<scalar_t>(max_step_size);
    p.max_steps = max_steps;
    p.n_rays = n_rays;
    cudaError_t err = march_count_launch<scalar_t>(p, counts.data_ptr<int64_t>(), stream);
    TORCH_CHECK(err == cudaSuccess, "march cuda count: ", cudaGetErrorString(err));
    const auto offsets = counts.cumsum(0) - counts;
    const int64_t total = n_rays ? counts.sum().item<int64_t>() : 0;  // one sync: the output size
    ray_indices = torch::empty({total}, counts.options());
    t_starts = torch::empty({total}, near.options());
    t_ends = torch::empty({total}, near.options());
    err = march_fill_launch<scalar_t>(p, offsets.data_ptr<int64_t>(), ray_indices.data_ptr<int64_t>(),
                                      t_starts.data_ptr<scalar_t>(), t_ends.data_ptr<scalar_t>(), stream);
    TORCH_CHECK(err == cudaSuccess, "march cuda fill: ", cudaGetErrorString(err));
  });
  return {ray_indices, t_starts, t_ends};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk ray marching through an occupancy grid, CUDA (packed samples)";
  m.def("march_forward", &march_forward,
        "rays_o, rays_d [R,3], near, far [R], grid [X,Y,Z] uint8, aabb [6], step_size, cone_angle, max_step_size, "
        "max_steps -> ray_indices [S] int64, t_starts [S], t_ends [S]");
}
