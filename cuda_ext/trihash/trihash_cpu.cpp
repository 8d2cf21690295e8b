// Tri-plane multiresolution 2D hash grid, C++/OpenMP fast path. Spec: cuda_ext/trihash/reference.py (float32).
//
// forward : points [N, 3] f32, embeddings [3, E, F] f32  -> [N, 3*L*F]   OpenMP over blocks of points
// backward: grad_out [N, 3*L*F] f32, points [N, 3] f32    -> [3, E, F]    OpenMP over (plane, level) pairs
//
// As in hashgrid_cpu.cpp, one (plane, level) at a time within a block of points and a software prefetch of the rows
// kAhead points ahead keep the random table reads from stalling on cache misses.
//
// Backward needs no atomics and no per-thread copies: each (plane, level) pair owns a disjoint slice of the table
// gradient, so one thread per pair scatters into its own slice — race-free and deterministic. 36 pairs by default.
// No gradient w.r.t. the points (ops.py falls back to the reference when points require grad).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 4096;  // points per forward work item
constexpr int kPlanes = 3;
constexpr int kAxes[kPlanes][2] = {{0, 1}, {1, 2}, {0, 2}};  // xy, yz, xz
constexpr uint32_t kPrimes[2] = {1u, 2654435761u};

struct Level {
  int64_t offset;   // first row of the level
  uint32_t size;    // rows of the level
  uint32_t mask;    // size - 1 when size is a power of two (h % size == h & mask), else 0
  uint32_t res;     // cells per axis
  bool dense;       // (res + 1)^2 <= size: plain row-major indexing
};

std::vector<Level> make_levels(const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions) {
  TORCH_CHECK(offsets.size() == resolutions.size() + 1, "trihash: offsets must have one more entry than "
              "resolutions, got ", offsets.size(), " and ", resolutions.size());
  std::vector<Level> levels;
  for (size_t l = 0; l < resolutions.size(); ++l) {
    Level lv;
    lv.offset = offsets[l];
    lv.size = static_cast<uint32_t>(offsets[l + 1] - offsets[l]);
    lv.mask = (lv.size & (lv.size - 1)) == 0 ? lv.size - 1 : 0;
    lv.res = static_cast<uint32_t>(resolutions[l]);
    const double vertices = (static_cast<double>(lv.res) + 1.0) * (static_cast<double>(lv.res) + 1.0);
    lv.dense = vertices <= static_cast<double>(lv.size);
    levels.push_back(lv);
  }
  return levels;
}

inline uint32_t corner_row(uint32_t x, uint32_t y, const Level& lv) {
  if (lv.dense) return x + (lv.res + 1) * y;
  const uint32_t h = x * kPrimes[0] ^ y * kPrimes[1];  // uint32 wrap-around is the hash
  return lv.mask ? (h & lv.mask) : h % lv.size;
}

// Lookahead of the software prefetch: the rows of point i + kAhead are requested while point i is accumulated,
// hiding the cache misses of the hashed levels.
constexpr int kAhead = 8;

struct Corners {
  int64_t rows[4];  // rows of the plane's table
  float weights[4];
};

// Bilinear corners of one point in one level: rows (within the plane's table) and weights, in the reference's
// corner order (corner bit d set = +1 along the plane's axis d) and with its float ops, so results agree. The rows
// are prefetched from `base` (the plane's table or its gradient) for reading (kRw = 0) or writing (kRw = 1).
template <int kRw>
inline void corners(const float* unit, int plane, const Level& lv, const float* base, int64_t f_dim,
                    Corners* out) {
  int64_t* rows = out->rows;
  float* weights = out->weights;
  uint32_t cell[2];
  float frac[2];
  for (int d = 0; d < 2; ++d) {
    const float pos = unit[kAxes[plane][d]] * static_cast<float>(lv.res);
    float fl = std::floor(pos);
    if (fl > static_cast<float>(lv.res - 1)) fl = static_cast<float>(lv.res - 1);
    cell[d] = static_cast<uint32_t>(fl);
    frac[d] = pos - fl;
  }
  for (int c = 0; c < 4; ++c) {
    const int bx = c & 1, by = (c >> 1) & 1;
    float w = 1.f;
    w *= bx ? frac[0] : 1.f - frac[0];
    w *= by ? frac[1] : 1.f - frac[1];
    weights[c] = w;
    rows[c] = lv.offset + corner_row(cell[0] + bx, cell[1] + by, lv);
    __builtin_prefetch(base + rows[c] * f_dim, kRw, 1);
  }
}

// Points in the unit cube, [N, 3], computed once per call (not once per plane and level).
std::vector<float> to_units(const torch::Tensor& points, double bound) {
  const int64_t count = points.numel();
  const float* p = points.data_ptr<float>();
  const float fbound = static_cast<float>(bound);
  const float two_bound = static_cast<float>(2.0 * bound);
  std::vector<float> units(count);
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t k = 0; k < count; ++k) {
    const float u = (p[k] + fbound) / two_bound;
    units[k] = u < 0.f ? 0.f : (u > 1.f ? 1.f : u);
  }
  return units;
}

void check_points(const torch::Tensor& points) {
  TORCH_CHECK(points.device().is_cpu() && points.scalar_type() == torch::kFloat32 && points.is_contiguous(),
              "trihash cpu: points must be a contiguous float32 CPU tensor");
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "trihash cpu: points must be [N, 3], got ", points.sizes());
}

}  // namespace

torch::Tensor trihash_forward(const torch::Tensor& points, const torch::Tensor& embeddings,
                              const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                              double bound) {
  check_points(points);
  TORCH_CHECK(embeddings.device().is_cpu() && embeddings.scalar_type() == torch::kFloat32 &&
                  embeddings.is_contiguous() && embeddings.dim() == 3 && embeddings.size(0) == kPlanes,
              "trihash cpu: embeddings must be a contiguous float32 CPU tensor [3, E, F]");
  const auto levels = make_levels(offsets, resolutions);
  TORCH_CHECK(embeddings.size(1) == offsets.back(), "trihash cpu: embeddings have ", embeddings.size(1),
              " rows per plane, offsets say ", offsets.back());
  const int64_t n = points.size(0);
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  const int64_t num_rows = embeddings.size(1);
  const int64_t f_dim = embeddings.size(2);
  const int64_t width = kPlanes * num_levels * f_dim;
  auto out = torch::zeros({n, width}, points.options());
  const float* table = embeddings.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const std::vector<float> units = to_units(points, bound);

  // Blocks of points, dynamically scheduled (robust when other processes share the cores); inside a block, one
  // (plane, level) at a time so that its slice of the table stays in cache.
  const int64_t num_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t block = 0; block < num_blocks; ++block) {
    const int64_t end = std::min(n, (block + 1) * kBlock);
    for (int64_t task = 0; task < kPlanes * num_levels; ++task) {
      const int plane = static_cast<int>(task / num_levels);
      const Level& lv = levels[task % num_levels];
      const float* plane_table = table + plane * num_rows * f_dim;
      const int64_t begin = block * kBlock;
      Corners ring[kAhead];
      for (int64_t j = begin; j < std::min(end, begin + kAhead); ++j) {
        corners<0>(units.data() + j * 3, plane, lv, plane_table, f_dim, &ring[(j - begin) % kAhead]);
      }
      for (int64_t i = begin; i < end; ++i) {
        Corners& now = ring[(i - begin) % kAhead];
        float* feat = dst + i * width + task * f_dim;
        for (int c = 0; c < 4; ++c) {
          const float* src = plane_table + now.rows[c] * f_dim;
          for (int64_t f = 0; f < f_dim; ++f) feat[f] += now.weights[c] * src[f];
        }
        if (i + kAhead < end) corners<0>(units.data() + (i + kAhead) * 3, plane, lv, plane_table, f_dim, &now);
      }
    }
  }
  return out;
}

torch::Tensor trihash_backward(const torch::Tensor& grad_out, const torch::Tensor& points,
                               const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                               double bound, int64_t num_rows) {
  check_points(points);
  const auto levels = make_levels(offsets, resolutions);
  const int64_t n = points.size(0);
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() &&
                  grad_out.dim() == 2 && grad_out.size(0) == n && num_levels > 0 &&
                  grad_out.size(1) % (kPlanes * num_levels) == 0,
              "trihash cpu: grad_out must be a contiguous float32 CPU tensor [N, 3*L*F]");
  const int64_t f_dim = grad_out.size(1) / (kPlanes * num_levels);
  const int64_t width = grad_out.size(1);
  auto grad_table = torch::zeros({kPlanes, num_rows, f_dim}, points.options());
  const float* g = grad_out.data_ptr<float>();
  float* dst = grad_table.data_ptr<float>();
  const std::vector<float> units = to_units(points, bound);

  // One (plane, level) pair per iteration: its rows are written by exactly one thread (see the header comment).
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t task = 0; task < kPlanes * num_levels; ++task) {
    const int plane = static_cast<int>(task / num_levels);
    const int64_t l = task % num_levels;
    const Level& lv = levels[l];
    float* plane_grad = dst + plane * num_rows * f_dim;
    Corners ring[kAhead];
    for (int64_t j = 0; j < std::min<int64_t>(n, kAhead); ++j) {
      corners<1>(units.data() + j * 3, plane, lv, plane_grad, f_dim, &ring[j]);
    }
    for (int64_t i = 0; i < n; ++i) {
      Corners& now = ring[i % kAhead];
      const float* gi = g + i * width + task * f_dim;
      for (int c = 0; c < 4; ++c) {
        float* row = plane_grad + now.rows[c] * f_dim;
        for (int64_t f = 0; f < f_dim; ++f) row[f] += now.weights[c] * gi[f];
      }
      if (i + kAhead < n) corners<1>(units.data() + (i + kAhead) * 3, plane, lv, plane_grad, f_dim, &now);
    }
  }
  return grad_table;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk tri-plane 2D hash grid, C++/OpenMP (forward, backward w.r.t. embeddings)";
  m.def("forward", &trihash_forward,
        "points [N,3], embeddings [3,E,F], offsets, resolutions, bound -> [N, 3*L*F]");
  m.def("backward", &trihash_backward,
        "grad_out [N,3*L*F], points [N,3], offsets, resolutions, bound, num_rows -> grad embeddings [3,E,F]");
}
