// 3D multiresolution hash grid, C++/OpenMP fast path. Spec: cuda_ext/hashgrid/reference.py (same maths, float32).
//
// forward : points [N, 3] f32, embeddings [E, F] f32  -> [N, L*F]      OpenMP over blocks of points
// backward: grad_out [N, L*F] f32, points [N, 3] f32   -> [E, F]        OpenMP over levels
//
// The lookups are random reads into a table much larger than the caches (2^19 rows x 16 levels, 48 MB). Two things
// hide the misses: one level at a time within a block of points (that level's 4 MB slice stays in cache), and a
// software prefetch of the rows kAhead points ahead (about 3x faster than the plain loop on a 2-core EPYC VM).
//
// Backward needs no atomics and no per-thread copies: each level owns a disjoint slice of rows
// [offsets[l], offsets[l+1]) of the table gradient, so one thread per level scatters into its own slice. That is
// race-free and deterministic (same sums in the same order on every run). Parallelism is the number of levels
// (16 by default), enough for the CPUs this path is for. No gradient w.r.t. the points (ops.py falls back to the
// reference when points require grad).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 4096;  // points per forward work item
constexpr int kDim = 3;
constexpr uint32_t kPrimes[3] = {1u, 2654435761u, 805459861u};

struct Level {
  int64_t offset;   // first row of the level
  uint32_t size;    // rows of the level
  uint32_t mask;    // size - 1 when size is a power of two (h % size == h & mask), else 0
  uint32_t res;     // cells per axis
  bool dense;       // (res + 1)^3 <= size: plain row-major indexing
};

std::vector<Level> make_levels(const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions) {
  TORCH_CHECK(offsets.size() == resolutions.size() + 1, "hashgrid: offsets must have one more entry than "
              "resolutions, got ", offsets.size(), " and ", resolutions.size());
  std::vector<Level> levels;
  for (size_t l = 0; l < resolutions.size(); ++l) {
    Level lv;
    lv.offset = offsets[l];
    lv.size = static_cast<uint32_t>(offsets[l + 1] - offsets[l]);
    lv.mask = (lv.size & (lv.size - 1)) == 0 ? lv.size - 1 : 0;
    lv.res = static_cast<uint32_t>(resolutions[l]);
    const double vertices = std::pow(static_cast<double>(lv.res) + 1.0, kDim);
    lv.dense = vertices <= static_cast<double>(lv.size);
    levels.push_back(lv);
  }
  return levels;
}

inline uint32_t corner_row(const uint32_t* c, const Level& lv) {
  if (lv.dense) {
    const uint32_t stride = lv.res + 1;
    return c[0] + stride * (c[1] + stride * c[2]);
  }
  // uint32 wrap-around is the hash (reference.py emulates it in int64); a mask instead of a division when possible
  const uint32_t h = c[0] * kPrimes[0] ^ c[1] * kPrimes[1] ^ c[2] * kPrimes[2];
  return lv.mask ? (h & lv.mask) : h % lv.size;
}

// Cell and fractional position of one point in one level; identical float ops to reference.py so that cells agree.
inline void locate(const float* unit, const Level& lv, uint32_t* cell, float* frac) {
  for (int d = 0; d < kDim; ++d) {
    const float pos = unit[d] * static_cast<float>(lv.res);
    float fl = std::floor(pos);
    if (fl > static_cast<float>(lv.res - 1)) fl = static_cast<float>(lv.res - 1);
    cell[d] = static_cast<uint32_t>(fl);
    frac[d] = pos - fl;
  }
}

constexpr int kCorners = 1 << kDim;
// Lookahead of the software prefetch: the rows of point i + kAhead are requested while point i is accumulated,
// hiding the cache misses of the hashed levels (a random read per corner into a table larger than the caches).
constexpr int kAhead = 8;

struct Corners {
  int64_t rows[kCorners];  // rows of the whole table
  float weights[kCorners];
};

// Rows and trilinear weights of one point in one level (corner bit d set = +1 along axis d, as in reference.py),
// with its rows prefetched for reading (rw = 0) or writing (rw = 1).
template <int kRw>
inline void corners(const float* unit, const Level& lv, const float* base, int64_t f_dim, Corners* out) {
  float frac[kDim];
  uint32_t cell[kDim], corner[kDim];
  locate(unit, lv, cell, frac);
  for (int c = 0; c < kCorners; ++c) {
    float w = 1.f;
    for (int d = 0; d < kDim; ++d) {
      const int bit = (c >> d) & 1;
      corner[d] = cell[d] + bit;
      w *= bit ? frac[d] : 1.f - frac[d];
    }
    out->weights[c] = w;
    out->rows[c] = lv.offset + corner_row(corner, lv);
    __builtin_prefetch(base + out->rows[c] * f_dim, kRw, 1);
  }
}

// Points in the unit cube, [N, 3], computed once per call (not once per level).
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
              "hashgrid cpu: points must be a contiguous float32 CPU tensor");
  TORCH_CHECK(points.dim() == 2 && points.size(1) == kDim, "hashgrid cpu: points must be [N, 3], got ",
              points.sizes());
}

}  // namespace

torch::Tensor hashgrid_forward(const torch::Tensor& points, const torch::Tensor& embeddings,
                               const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                               double bound) {
  check_points(points);
  TORCH_CHECK(embeddings.device().is_cpu() && embeddings.scalar_type() == torch::kFloat32 &&
                  embeddings.is_contiguous() && embeddings.dim() == 2,
              "hashgrid cpu: embeddings must be a contiguous float32 CPU tensor [E, F]");
  const auto levels = make_levels(offsets, resolutions);
  TORCH_CHECK(embeddings.size(0) == offsets.back(), "hashgrid cpu: embeddings have ", embeddings.size(0),
              " rows, offsets say ", offsets.back());
  const int64_t n = points.size(0);
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  const int64_t f_dim = embeddings.size(1);
  auto out = torch::zeros({n, num_levels * f_dim}, points.options());
  const float* table = embeddings.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const std::vector<float> units = to_units(points, bound);

  // Blocks of points, dynamically scheduled (robust when other processes share the cores); inside a block,
  // one level at a time so that level's slice of the table stays in cache.
  const int64_t num_blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t block = 0; block < num_blocks; ++block) {
    const int64_t end = std::min(n, (block + 1) * kBlock);
    for (int64_t l = 0; l < num_levels; ++l) {
      const Level& lv = levels[l];
      const int64_t begin = block * kBlock;
      Corners ring[kAhead];
      for (int64_t j = begin; j < std::min(end, begin + kAhead); ++j) {
        corners<0>(units.data() + j * kDim, lv, table, f_dim, &ring[(j - begin) % kAhead]);
      }
      for (int64_t i = begin; i < end; ++i) {
        Corners& now = ring[(i - begin) % kAhead];
        float* feat = dst + (i * num_levels + l) * f_dim;
        for (int c = 0; c < kCorners; ++c) {
          const float* src = table + now.rows[c] * f_dim;
          for (int64_t f = 0; f < f_dim; ++f) feat[f] += now.weights[c] * src[f];
        }
        if (i + kAhead < end) corners<0>(units.data() + (i + kAhead) * kDim, lv, table, f_dim, &now);
      }
    }
  }
  return out;
}

torch::Tensor hashgrid_backward(const torch::Tensor& grad_out, const torch::Tensor& points,
                                const std::vector<int64_t>& offsets, const std::vector<int64_t>& resolutions,
                                double bound, int64_t num_rows) {
  check_points(points);
  const auto levels = make_levels(offsets, resolutions);
  const int64_t n = points.size(0);
  const int64_t num_levels = static_cast<int64_t>(levels.size());
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == torch::kFloat32 && grad_out.is_contiguous() &&
                  grad_out.dim() == 2 && grad_out.size(0) == n && num_levels > 0 &&
                  grad_out.size(1) % num_levels == 0,
              "hashgrid cpu: grad_out must be a contiguous float32 CPU tensor [N, L*F]");
  const int64_t f_dim = grad_out.size(1) / num_levels;
  auto grad_table = torch::zeros({num_rows, f_dim}, points.options());
  const float* g = grad_out.data_ptr<float>();
  float* dst = grad_table.data_ptr<float>();
  const std::vector<float> units = to_units(points, bound);

  // One level per iteration: a level's rows are written by exactly one thread (see the header comment).
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t l = 0; l < num_levels; ++l) {
    const Level& lv = levels[l];
    Corners ring[kAhead];
    for (int64_t j = 0; j < std::min<int64_t>(n, kAhead); ++j) {
      corners<1>(units.data() + j * kDim, lv, dst, f_dim, &ring[j]);
    }
    for (int64_t i = 0; i < n; ++i) {
      Corners& now = ring[i % kAhead];
      const float* gi = g + (i * num_levels + l) * f_dim;
      for (int c = 0; c < kCorners; ++c) {
        float* row = dst + now.rows[c] * f_dim;
        for (int64_t f = 0; f < f_dim; ++f) row[f] += now.weights[c] * gi[f];
      }
      if (i + kAhead < n) corners<1>(units.data() + (i + kAhead) * kDim, lv, dst, f_dim, &now);
    }
  }
  return grad_table;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "synctalk 3D hash grid, C++/OpenMP (forward, backward w.r.t. embeddings)";
  m.def("forward", &hashgrid_forward, "points [N,3], embeddings [E,F], offsets, resolutions, bound -> [N, L*F]");
  m.def("backward", &hashgrid_backward,
        "grad_out [N,L*F], points [N,3], offsets, resolutions, bound, num_rows -> grad embeddings [E,F]");
}
