// Gaussian splatting tile rasterizer, C++/OpenMP. Spec: cuda_ext/rasterize/reference.py `rasterize` (float32).
//
// forward : means2d [N,2], conics [N,3], colors [N,C], opacities [N], depths [N], radii [N,2] int64 (0: skip),
//           width, height, t_min -> image [H,W,C], alpha [H,W], tile_offsets [tiles+1], tile_ids [M], last [H,W]
// backward: the forward's inputs and outputs, grad_image [H,W,C], grad_alpha [H,W]
//           -> grad means2d [N,2], conics [N,3], colors [N,C], opacities [N]
//
// Binning: each Gaussian goes to the 16x16 tiles its box |d_x| <= r_x, |d_y| <= r_y touches, in the order of one
// stable sort of all Gaussians by depth, so each tile's list is in (depth, index) order, the reference's stable
// depth order restricted to the tile. OpenMP over tiles; within a tile, row
// by row, each Gaussian visits only the pixels of the row its ellipse reaches with alpha >= 1/255 (a quadratic in
// dx), and each pixel stops where its transmittance would fall below t_min (its count is kept for the backward
// pass). Backward walks each pixel's list in reverse from that count, recovering the transmittance before each
// Gaussian by division (alpha <= 0.99 keeps that exact enough), and accumulates per-thread gradients that are summed
// at the end (deterministic for a fixed thread count).
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

// The tile range [x0, x1) x [y0, y1) that the box of Gaussian g touches; empty when it is off screen.
inline bool tile_range(const float* m, const int64_t* r, int width, int height, int tiles_x, int tiles_y, int* x0,
                       int* x1, int* y0, int* y1) {
  if (r[0] <= 0 || r[1] <= 0) return false;
  // pixel centres c = i + 0.5 with |c - m| <= r
  const double lo_x = std::ceil(m[0] - r[0] - 0.5), hi_x = std::floor(m[0] + r[0] - 0.5);
  const double lo_y = std::ceil(m[1] - r[1] - 0.5), hi_y = std::floor(m[1] + r[1] - 0.5);
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
    if (!tile_range(means2d + 2 * g, radii + 2 * g, width, height, b.tiles_x, b.tiles_y, &x0, &x1, &y0, &y1)) continue;
    for (int ty = y0; ty < y1; ++ty)
      for (int tx = x0; tx < x1; ++tx) ++counts[static_cast<int64_t>(ty) * b.tiles_x + tx];
  }
  b.offsets.assign(tiles + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), b.offsets.begin() + 1);
  b.ids.resize(b.offsets[tiles]);
  // one stable sort of all Gaussians by depth (ties in index order, as the reference), then each tile's list is
  // filled in that order: already depth-sorted, no per-tile sort
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [depths](int64_t i, int64_t j) { return depths[i] < depths[j]; });
  std::vector<int64_t> fill(b.offsets.begin(), b.offsets.end() - 1);
  for (const int64_t g : order) {
    if (!tile_range(means2d + 2 * g, radii + 2 * g, width, height, b.tiles_x, b.tiles_y, &x0, &x1, &y0, &y1)) continue;
    for (int ty = y0; ty < y1; ++ty)
      for (int tx = x0; tx < x1; ++tx) b.ids[fill[static_cast<int64_t>(ty) * b.tiles_x + tx]++] = g;
  }
  return b;
}

struct Packed {
  float mx, my, a, b, c, o, rx, ry, skip_below;
  int64_t g;
};

inline Packed pack(const float* m, const float* q, const float* o, const int64_t* r, int64_t g) {
  // alpha = o exp(power) < 1/255 exactly when power < -log(255 o); a margin of 1e-3 leaves the decision at the
  // boundary to the exact test, as the reference makes it
  const float skip = -std::log(255.0f * std::max(o[g], 1e-30f)) - 1e-3f;
  return {m[2 * g], m[2 * g + 1], q[3 * g], q[3 * g + 1], q[3 * g + 2], o[g], static_cast<float>(r[2 * g]),
          static_cast<float>(r[2 * g + 1]), skip, g};
}

// The pixels [x0, x1] of a row (pixel centres y + 0.5 = py) inside [x_begin, x_end) where Gaussian p can reach
// alpha >= 1/255 within its box: power(dx) >= skip_below <=> a dx² + 2 b dy dx + c dy² + 2 skip_below <= 0.
inline bool row_span(const Packed& p, float py, int x_begin, int x_end, int* x0, int* x1) {
  const float dy = py - p.my;
  if (std::fabs(dy) > p.ry) return false;
  const float disc = p.b * p.b * dy * dy - p.a * (p.c * dy * dy + 2.0f * p.skip_below);
  if (disc < 0.0f) return false;
  const float half = std::sqrt(disc) / p.a, centre = p.mx - p.b * dy / p.a;
  const float lo = std::max(centre - half, p.mx - p.rx) - 0.5f, hi = std::min(centre + half, p.mx + p.rx) - 0.5f;
  *x0 = std::max(x_begin, static_cast<int>(std::floor(lo)));
  *x1 = std::min(x_end - 1, static_cast<int>(std::ceil(hi)));
  return *x0 <= *x1;
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
  check(radii, "radii", n, 2, torch::kInt64);
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
    // Row by row: each Gaussian visits only the pixels of the row where its ellipse can reach alpha >= 1/255
    // (the exact test below decides at the edge), and the row stops when all its pixels are opaque.
    const int x_begin = tx * kTile, x_end = static_cast<int>(std::min<int64_t>(x_begin + kTile, width));
    float T[kTile];
    int64_t done[kTile];
    for (int y = ty * kTile; y < std::min<int64_t>((ty + 1) * kTile, height); ++y) {
      const float py = y + 0.5f;
      float* row = img + static_cast<int64_t>(y) * width * channels;
      int active = x_end - x_begin;
      bool stopped[kTile] = {};
      std::fill(T, T + kTile, 1.0f);
      std::fill(done, done + kTile, int64_t{0});
      for (int64_t k = 0; k < end - begin && active > 0; ++k) {
        const Packed& p = local[k];
        const float dy = py - p.my;
        int x0, x1;
        if (!row_span(p, py, x_begin, x_end, &x0, &x1)) continue;
        for (int x = x0; x <= x1; ++x) {
          const int i = x - x_begin;
          if (stopped[i]) continue;
          const float dx = x + 0.5f - p.mx;
          if (std::fabs(dx) > p.rx) continue;
          const float power = -0.5f * (p.a * dx * dx + p.c * dy * dy) - p.b * dx * dy;
          const float alpha = std::min(kAlphaMax, p.o * std::exp(std::min(power, 0.0f)));
          if (alpha < kAlphaMin) continue;
          const float next = T[i] * (1.0f - alpha);
          if (next < tmin) {
            stopped[i] = true;
            --active;
            continue;
          }
          const float w = alpha * T[i];
          const float* col = c + p.g * channels;
          float* pixel = row + static_cast<int64_t>(x) * channels;
          for (int64_t ch = 0; ch < channels; ++ch) pixel[ch] += w * col[ch];
          T[i] = next;
          done[i] = k + 1;
        }
      }
      for (int x = x_begin; x < x_end; ++x) {
        acc[static_cast<int64_t>(y) * width + x] = 1.0f - T[x - x_begin];
        lst[static_cast<int64_t>(y) * width + x] = static_cast<int32_t>(done[x - x_begin]);
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
    const int64_t end = offsets[t + 1];
    std::vector<Packed> local(end - begin);
    for (int64_t k = begin; k < end; ++k) local[k - begin] = pack(m, q, o, r, ids[k]);
    const int x_begin = tx * kTile, x_end = static_cast<int>(std::min<int64_t>(x_begin + kTile, width));
    float T[kTile], t_final[kTile];
    std::vector<float> behind(kTile * channels);  // per pixel: colour composited behind the current Gaussian
    // Row by row, each pixel's list in reverse from its last composited Gaussian (the forward's row spans)
    for (int y = ty * kTile; y < std::min<int64_t>((ty + 1) * kTile, height); ++y) {
      const float py = y + 0.5f;
      const int64_t row = static_cast<int64_t>(y) * width;
      int32_t longest = 0;
      for (int x = x_begin; x < x_end; ++x) {
        t_final[x - x_begin] = T[x - x_begin] = 1.0f - acc[row + x];
        longest = std::max(longest, lst[row + x]);
      }
      std::fill(behind.begin(), behind.end(), 0.0f);
      for (int64_t k = longest - 1; k >= 0; --k) {
        const Packed& p = local[k];
        const float dy = py - p.my;
        int x0, x1;
        if (!row_span(p, py, x_begin, x_end, &x0, &x1)) continue;
        float* gg = grads + p.g * stride;
        for (int x = x0; x <= x1; ++x) {
          const int i = x - x_begin;
          const int64_t pix = row + x;
          if (k >= lst[pix]) continue;
          const float dx = x + 0.5f - p.mx;
          if (std::fabs(dx) > p.rx) continue;
          float power = -0.5f * (p.a * dx * dx + p.c * dy * dy) - p.b * dx * dy;
          const bool clamped_power = power > 0.0f;
          if (clamped_power) power = 0.0f;
          const float gauss = std::exp(power);
          const float alpha = std::min(kAlphaMax, p.o * gauss);
          if (alpha < kAlphaMin) continue;
          T[i] /= (1.0f - alpha);  // transmittance in front of the Gaussian
          const float* g_pix = gi + pix * channels;
          const float* col = c + p.g * channels;
          float* back = behind.data() + i * channels;
          float d_alpha = ga[pix] * t_final[i] / (1.0f - alpha);
          for (int64_t ch = 0; ch < channels; ++ch) {
            gg[5 + ch] += alpha * T[i] * g_pix[ch];
            d_alpha += g_pix[ch] * (T[i] * col[ch] - back[ch] / (1.0f - alpha));
            back[ch] += alpha * T[i] * col[ch];
          }
          if (p.o * gauss > kAlphaMax) continue;  // clamped alpha: no gradient to the opacity or the shape
          gg[5 + channels] += gauss * d_alpha;
          if (clamped_power) continue;
          const float d_power = p.o * gauss * d_alpha;
          gg[0] += d_power * (p.a * dx + p.b * dy);  // d power / d mean_x = a dx + b dy
          gg[1] += d_power * (p.b * dx + p.c * dy);  // d power / d mean_y = b dx + c dy
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
