// Gaussian splatting tile rasterizer, C++/OpenMP. Spec: cuda_ext/rasterize/reference.py `rasterize` (float32).
//
// forward : means2d [N,2], conics [N,3], colors [N,C], opacities [N], depths [N], radii [N] int64 (0: skip),
//           width, height, t_min -> image [H,W,C], alpha [H,W], tile_offsets [tiles+1], tile_ids [M], last [H,W]
// backward: the forward's inputs and outputs, grad_image [H,W,C], grad_alpha [H,W]
//           -> grad means2d [N,2], conics [N,3], colors [N,C], opacities [N]
//
// Binning: each Gaussian goes to the 16x16 tiles its square |d| <= radius touches; each tile's list is sorted by
// (depth, index), the reference's stable depth order restricted to the tile. OpenMP over tiles; a pixel walks its
// tile's list front to back and stops where the transmittance would fall below t_min (its count is kept for the
// backward pass). Backward walks each pixel's list in reverse, recovering the transmittance before each Gaussian by
// division (alpha <= 0.99 keeps that exact enough), and accumulates per-thread gradients that are summed at the end
// (deterministic for a fixed thread count).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int kTile = 16;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kAlphaMax = 0.99f;

struct Bins {
  int tiles_x = 0, tiles_y = 0;
  std::vector<int64_t> offsets;  // [tiles + 1]
  std::vector<int64_t> ids;      // Gaussians per tile, depth order
};

// The tile range [x0, x1) x [y0, y1) that the square of Gaussian g touches; empty when it is off screen.
inline bool tile_range(const float* m, int64_t r, int width, int height, int tiles_x, int tiles_y, int* x0, int* x1,
                       int* y0, int* y1) {
  if (r <= 0) return false;
  // pixel centres c = i + 0.5 with |c - m| <= r
  const double lo_x = std::ceil(m[0] - r - 0.5), hi_x = std::floor(m[0] + r - 0.5);
  const double lo_y = std::ceil(m[1] - r - 0.5), hi_y = std::floor(m[1] + r - 0.5);
  if (hi_x < 0 || hi_y < 0 || lo_x > width - 1 || lo_y > height - 1 || lo_x > hi_x || lo_y > hi_y) return false;
  *x0 = static_cast<int>(std::max(lo_x, 0.0)) / kTile;
  *x1 = static_cast<int>(std::min(hi_x, width - 1.0)) / kTile + 1;
  *y0 = static_cast<int>(std::max(lo_y, 0.0)) / kTile;
  *y1 = static_cast<int>(std::min(hi_y, height - 1.0)) / kTile + 1;
  return *x0 < *x1 && *y0 < *y1 && *x0 < tiles_x && *y0 < tiles_y;
}

Bins bin(const float* means2d, const float* depths, const int64_t* radii, int64_t n, int width, int height) {
  Bins b;
  b.tiles_x = (width + kTile - 1) / kTile;
  b.tiles_y = (height + kTile - 1) / kTile;
  const int64_t tiles = static_cast<int64_t>(b.tiles_x) * b.tiles_y;
  std::vector<int64_t> counts(tiles, 0);
  int x0, x1, y0, y1;
  for (int64_t g = 0; g < n; ++g) {
    if (!tile_range(means2d + 2 * g, radii[g], width, height, b.tiles_x, b.tiles_y, &x0, &x1, &y0, &y1)) continue;
    for (int ty = y0; ty < y1; ++ty)
      for (int tx = x0; tx < x1; ++tx) ++counts[static_cast<int64_t>(ty) * b.tiles_x + tx];
  }
  b.offsets.assign(tiles + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), b.offsets.begin() + 1);
  b.ids.resize(b.offsets[tiles]);
  std::vector<int64_t> fill(b.offsets.begin(), b.offsets.end() - 1);
  for (int64_t g = 0; g < n; ++g) {  // in index order: a stable sort by depth keeps the reference's tie order
    if (!tile_range(means2d + 2 * g, radii[g], width, height, b.tiles_x, b.tiles_y, &x0, &x1, &y0, &y1)) continue;
    for (int ty = y0; ty < y1; ++ty)
      for (int tx = x0; tx < x1; ++tx) b.ids[fill[static_cast<int64_t>(ty) * b.tiles_x + tx]++] = g;
  }
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t t = 0; t < tiles; ++t) {
    std::stable_sort(b.ids.begin() + b.offsets[t], b.ids.begin() + b.offsets[t + 1],
                     [depths](int64_t i, int64_t j) { return depths[i] < depths[j]; });
  }
  return b;
}

// alpha of Gaussian g at pixel centre (px, py), 0 when skipped; also exp(power) and the offsets for backward.
inline float alpha_at(const float* m, const float* q, float o, int64_t r, float px, float py, float* gauss,
                      float* dx_out, float* dy_out, bool* clamped_power) {
  const float dx = px - m[0], dy = py - m[1];
  if (std::fabs(dx) > static_cast<float>(r) || std::fabs(dy) > static_cast<float>(r)) return 0.0f;
  float power = -0.5f * (q[0] * dx * dx + q[2] * dy * dy) - q[1] * dx * dy;
  *clamped_power = power > 0.0f;
  if (*clamped_power) power = 0.0f;
  const float g = std::exp(power);
  const float alpha = std::min(kAlphaMax, o * g);
  if (alpha < kAlphaMin) return 0.0f;
  *gauss = g;
  *dx_out = dx;
  *dy_out = dy;
  return alpha;
}

struct Packed {
  float mx, my, a, b, c, o, r, skip_below;
  int64_t g;
};

inline Packed pack(const float* m, const float* q, const float* o, const int64_t* r, int64_t g) {
  // alpha = o exp(power) < 1/255 exactly when power < -log(255 o); a margin of 1e-3 leaves the decision at the
  // boundary to the exact test, as the reference makes it
  const float skip = -std::log(255.0f * std::max(o[g], 1e-30f)) - 1e-3f;
  return {m[2 * g], m[2 * g + 1], q[3 * g], q[3 * g + 1], q[3 * g + 2], o[g], static_cast<float>(r[g]), skip, g};
}

void check(const torch::Tensor& t, const char* name, int64_t dim0, int64_t dim1, torch::ScalarType type) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == type, "rasterize cpu: ", name,
              " must be a contiguous CPU tensor of ", type);
  TORCH_CHECK(t.size(0) == dim0 && (dim1 < 0 || (t.dim() == 2 && t.size(1) == dim1)), "rasterize cpu: ", name,
              " has shape ", t.sizes());
}

void check_inputs(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& colors,
                  const torch::Tensor& opacities, const torch::Tensor& depths, const torch::Tensor& radii) {
  const int64_t n = means2d.size(0);
  check(means2d, "means2d", n, 2, torch::kFloat32);
  check(conics, "conics", n, 3, torch::kFloat32);
  TORCH_CHECK(colors.dim() == 2, "rasterize cpu: colors must be [N, C]");
  check(colors, "colors", n, colors.size(1), torch::kFloat32);
  check(opacities, "opacities", n, -1, torch::kFloat32);
  check(depths, "depths", n, -1, torch::kFloat32);
  check(radii, "radii", n, -1, torch::kInt64);
}

std::vector<torch::Tensor> rasterize_forward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                             const torch::Tensor& colors, const torch::Tensor& opacities,
                                             const torch::Tensor& depths, const torch::Tensor& radii, int64_t width,
                                             int64_t height, double t_min) {
  check_inputs(means2d, conics, colors, opacities, depths, radii);
  TORCH_CHECK(width > 0 && height > 0, "rasterize cpu: width and height must be positive");
  const int64_t n = means2d.size(0), channels = colors.size(1);
  const float* m = means2d.data_ptr<float>();
  const float* q = conics.data_ptr<float>();
  const float* c = colors.data_ptr<float>();
  const float* o = opacities.data_ptr<float>();
  const int64_t* r = radii.data_ptr<int64_t>();
  Bins b = bin(m, depths.data_ptr<float>(), r, n, static_cast<int>(width), static_cast<int>(height));
  auto image = torch::zeros({height, width, channels}, colors.options());
  auto alpha_out = torch::zeros({height, width}, colors.options());
  auto last = torch::zeros({height, width}, torch::dtype(torch::kInt32));
  float* img = image.data_ptr<float>();
  float* acc = alpha_out.data_ptr<float>();
  int32_t* lst = last.data_ptr<int32_t>();
  const int64_t tiles = static_cast<int64_t>(b.tiles_x) * b.tiles_y;
  const float tmin = static_cast<float>(t_min);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < tiles; ++t) {
    const int tx = static_cast<int>(t % b.tiles_x), ty = static_cast<int>(t / b.tiles_x);
    const int64_t begin = b.offsets[t], end = b.offsets[t + 1];
    // the tile's Gaussians side by side (no random reads in the pixel loop), each with the power below which its
    // alpha is under 1/255, so most far pixels skip the exp
    std::vector<Packed> local(end - begin);
    for (int64_t k = begin; k < end; ++k) local[k - begin] = pack(m, q, o, r, b.ids[k]);
    for (int y = ty * kTile; y < std::min<int64_t>((ty + 1) * kTile, height); ++y) {
      for (int x = tx * kTile; x < std::min<int64_t>((tx + 1) * kTile, width); ++x) {
        const float px = x + 0.5f, py = y + 0.5f;
        float T = 1.0f;
        float* pixel = img + (static_cast<int64_t>(y) * width + x) * channels;
        int64_t done = 0;
        for (int64_t k = 0; k < end - begin; ++k) {
          const Packed& p = local[k];
          const float dx = px - p.mx, dy = py - p.my;
          if (std::fabs(dx) > p.r || std::fabs(dy) > p.r) continue;
          const float power = -0.5f * (p.a * dx * dx + p.c * dy * dy) - p.b * dx * dy;
          if (power < p.skip_below) continue;
          const float alpha = std::min(kAlphaMax, p.o * std::exp(std::min(power, 0.0f)));
          if (alpha < kAlphaMin) continue;
          const float next = T * (1.0f - alpha);
          if (next < tmin) break;
          const float w = alpha * T;
          const float* col = c + p.g * channels;
          for (int64_t ch = 0; ch < channels; ++ch) pixel[ch] += w * col[ch];
          T = next;
          done = k + 1;
        }
        acc[static_cast<int64_t>(y) * width + x] = 1.0f - T;
        lst[static_cast<int64_t>(y) * width + x] = static_cast<int32_t>(done);
      }
    }
  }
  auto offsets = torch::from_blob(b.offsets.data(), {tiles + 1}, torch::kInt64).clone();
  auto ids = torch::from_blob(b.ids.data(), {static_cast<int64_t>(b.ids.size())}, torch::kInt64).clone();
  return {image, alpha_out, offsets, ids, last};
}

std::vector<torch::Tensor> rasterize_backward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                              const torch::Tensor& colors, const torch::Tensor& opacities,
                                              const torch::Tensor& radii, const torch::Tensor& alpha_out,
                                              const torch::Tensor& tile_offsets, const torch::Tensor& tile_ids,
                                              const torch::Tensor& last, const torch::Tensor& grad_image,
                                              const torch::Tensor& grad_alpha) {
  const int64_t n = means2d.size(0), channels = colors.size(1);
  const int64_t height = alpha_out.size(0), width = alpha_out.size(1);
  TORCH_CHECK(grad_image.is_contiguous() && grad_alpha.is_contiguous() && grad_image.size(2) == channels,
              "rasterize cpu backward: gradients must be contiguous [H, W, C] and [H, W]");
  const float* m = means2d.data_ptr<float>();
  const float* q = conics.data_ptr<float>();
  const float* c = colors.data_ptr<float>();
  const float* o = opacities.data_ptr<float>();
  const int64_t* r = radii.data_ptr<int64_t>();
  const float* acc = alpha_out.data_ptr<float>();
  const int64_t* offsets = tile_offsets.data_ptr<int64_t>();
  const int64_t* ids = tile_ids.data_ptr<int64_t>();
  const int32_t* lst = last.data_ptr<int32_t>();
  const float* gi = grad_image.data_ptr<float>();
  const float* ga = grad_alpha.data_ptr<float>();
  const int tiles_x = static_cast<int>((width + kTile - 1) / kTile);
  const int64_t tiles = tile_offsets.size(0) - 1;
  const int64_t stride = 2 + 3 + channels + 1;  // per Gaussian: means2d, conic, colour, opacity
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  std::vector<float> partial(static_cast<size_t>(threads) * n * stride, 0.0f);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < tiles; ++t) {
    int thread = 0;
#ifdef _OPENMP
    thread = omp_get_thread_num();
#endif
    float* grads = partial.data() + static_cast<size_t>(thread) * n * stride;
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>(t / tiles_x);
    const int64_t begin = offsets[t];
    std::vector<float> behind(channels);
    for (int y = ty * kTile; y < std::min<int64_t>((ty + 1) * kTile, height); ++y) {
      for (int x = tx * kTile; x < std::min<int64_t>((tx + 1) * kTile, width); ++x) {
        const int64_t pix = static_cast<int64_t>(y) * width + x;
        const float px = x + 0.5f, py = y + 0.5f;
        const float t_final = 1.0f - acc[pix];
        float T = t_final;
        std::fill(behind.begin(), behind.end(), 0.0f);  // colour composited behind the current Gaussian
        const float* g_pix = gi + pix * channels;
        for (int64_t k = begin + lst[pix] - 1; k >= begin; --k) {
          const int64_t g = ids[k];
          float gauss, dx, dy;
          bool clamped_power;
          const float alpha = alpha_at(m + 2 * g, q + 3 * g, o[g], r[g], px, py, &gauss, &dx, &dy, &clamped_power);
          if (alpha == 0.0f) continue;
          T /= (1.0f - alpha);  // transmittance in front of g
          float* gg = grads + g * stride;
          float d_alpha = ga[pix] * t_final / (1.0f - alpha);
          for (int64_t ch = 0; ch < channels; ++ch) {
            const float col = c[g * channels + ch];
            gg[5 + ch] += alpha * T * g_pix[ch];
            d_alpha += g_pix[ch] * (T * col - behind[ch] / (1.0f - alpha));
            behind[ch] += alpha * T * col;
          }
          if (o[g] * gauss > kAlphaMax) continue;  // clamped alpha: no gradient to the opacity or the shape
          gg[5 + channels] += gauss * d_alpha;
          if (clamped_power) continue;
          const float d_power = o[g] * gauss * d_alpha;
          gg[0] += d_power * (q[3 * g] * dx + q[3 * g + 1] * dy);      // d power / d mean_x = a dx + b dy
          gg[1] += d_power * (q[3 * g + 1] * dx + q[3 * g + 2] * dy);  // d power / d mean_y = b dx + c dy
          gg[2] += d_power * (-0.5f * dx * dx);
          gg[3] += d_power * (-dx * dy);
          gg[4] += d_power * (-0.5f * dy * dy);
        }
      }
    }
  }
  auto grad_means2d = torch::zeros({n, 2}, means2d.options());
  auto grad_conics = torch::zeros({n, 3}, means2d.options());
  auto grad_colors = torch::zeros({n, channels}, means2d.options());
  auto grad_opacities = torch::zeros({n}, means2d.options());
  float* gm = grad_means2d.data_ptr<float>();
  float* gq = grad_conics.data_ptr<float>();
  float* gc = grad_colors.data_ptr<float>();
  float* go = grad_opacities.data_ptr<float>();
#pragma omp parallel for
  for (int64_t g = 0; g < n; ++g) {
    for (int th = 0; th < threads; ++th) {
      const float* s = partial.data() + (static_cast<size_t>(th) * n + g) * stride;
      gm[2 * g] += s[0];
      gm[2 * g + 1] += s[1];
      for (int k = 0; k < 3; ++k) gq[3 * g + k] += s[2 + k];
      for (int64_t ch = 0; ch < channels; ++ch) gc[g * channels + ch] += s[5 + ch];
      go[g] += s[5 + channels];
    }
  }
  return {grad_means2d, grad_conics, grad_colors, grad_opacities};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk Gaussian splatting tile rasterizer, C++/OpenMP (forward, backward)";
  m.def("forward", &rasterize_forward,
        "means2d, conics, colors, opacities, depths, radii, width, height, t_min -> image, alpha, tile offsets, "
        "tile ids, per-pixel count");
  m.def("backward", &rasterize_backward,
        "means2d, conics, colors, opacities, radii, alpha, tile offsets, tile ids, counts, grad image, grad alpha "
        "-> grad means2d, conics, colors, opacities");
}
