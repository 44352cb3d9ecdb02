// CPU implementation of the C ABI in naf/cross_scale_attention.h (math: DESIGN.md section 2).
//
// Speed comes from sharing key/value windows. Output rows with the same row window form runs
// (always the case inside one low-resolution cell when H % h == 0); likewise columns. The rows are
// cut into blocks of whole runs (or pieces of long runs), the columns too, and every
// (row block x column block) of pixels is computed against the union of its pixels' windows as
// two small dense GEMMs (see the kernel file). Where a pixel's window is smaller than the union
// (non-integer ratios fragment the runs), an additive -inf/log(multiplicity) bias restricts its
// softmax to exactly its own K*K entries, duplicates included. Block sizes come from a cost
// model that trades wasted keys against idle vector lanes.
//
// The kernel is compiled for AVX-512, AVX2+FMA and the baseline ISA and picked at run time, so
// one binary is portable (cpu_isa_variants.inc, select_isa in cpu_common.h).
#include "naf/cross_scale_attention.h"

#include "cpu_common.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

namespace naf_cpu {
namespace {

constexpr i64 kPixelPad = 16;  // pixel rows of scratch are padded to whole 16-float vectors

// Row stride of pixel-indexed scratch: one extra vector breaks the power-of-two strides that
// would make the column walks of the softmax and GEMMs collide in the same L1 sets.
constexpr i64 pixel_stride(i64 pixels) { return round_up(pixels, kPixelPad) + kPixelPad; }

// ---------------------------------------------------------------------------------------------
// Blocking plan along one axis (rows or columns).

struct AxisBlock {
  i64 begin, end;    // output positions [begin, end)
  i64 union_offset;  // into AxisPlan::union_index: sorted distinct input positions of all windows
  i64 union_size;
  i64 bias_offset;   // into AxisPlan::bias: (end - begin) x union_size log-multiplicities
  bool uniform;      // every position's window is exactly the union, once each: bias is all 0
};

struct AxisPlan {
  std::vector<AxisBlock> blocks;
  std::vector<int32_t> union_index;
  std::vector<float> bias;
  i64 max_len = 0, max_union = 0;
};

// Cuts [0, n) into blocks of at most `target` positions made of whole runs of identical windows
// (one run per block unless `merge_runs`); a run longer than `target` is split into near-equal
// pieces.
AxisPlan plan_axis(const int32_t* table, i64 n, i64 k, i64 target, bool merge_runs) {
  const auto same_window = [&](i64 a, i64 b) {
    return std::memcmp(table + a * k, table + b * k, static_cast<size_t>(k) * sizeof(int32_t)) == 0;
  };
  const auto run_end = [&](i64 i) {
    i64 j = i + 1;
    while (j < n && same_window(i, j)) ++j;
    return j;
  };
  std::vector<std::pair<i64, i64>> spans;
  for (i64 i = 0; i < n;) {
    const i64 end = run_end(i);
    if (end - i >= target) {
      const i64 len = end - i, pieces = (len + target - 1) / target;
      for (i64 p = 0; p < pieces; ++p) spans.emplace_back(i + len * p / pieces, i + len * (p + 1) / pieces);
      i = end;
      continue;
    }
    i64 merged = end;
    while (merge_runs && merged < n) {
      const i64 next = run_end(merged);
      if (next - i > target) break;
      merged = next;
    }
    spans.emplace_back(i, merged);
    i = merged;
  }

  AxisPlan plan;
  std::vector<int32_t> window;
  for (const auto& [begin, end] : spans) {
    window.assign(table + begin * k, table + end * k);
    std::sort(window.begin(), window.end());
    window.erase(std::unique(window.begin(), window.end()), window.end());
    AxisBlock block{begin, end, static_cast<i64>(plan.union_index.size()), static_cast<i64>(window.size()),
                    static_cast<i64>(plan.bias.size()), true};
    plan.union_index.insert(plan.union_index.end(), window.begin(), window.end());
    for (i64 pos = begin; pos < end; ++pos) {
      for (int32_t x : window) {
        const i64 count = std::count(table + pos * k, table + (pos + 1) * k, x);
        plan.bias.push_back(count > 0 ? std::log(static_cast<float>(count)) : -INFINITY);
        block.uniform = block.uniform && count == 1;
      }
    }
    plan.max_len = std::max(plan.max_len, end - begin);
    plan.max_union = std::max(plan.max_union, block.union_size);
    plan.blocks.push_back(block);
  }
  return plan;
}

// Estimated cost, in vector multiply-adds, of computing every block pair of two axis plans:
// both GEMMs and the softmax per 16-pixel vector and key, plus the window gathers per key.
double plan_cost(const AxisPlan& rows, const AxisPlan& cols, i64 dq, i64 e) {
  const auto histogram = [](const AxisPlan& plan) {
    std::vector<std::pair<std::pair<i64, i64>, i64>> h;  // ((length, union), count)
    for (const AxisBlock& b : plan.blocks) {
      const std::pair<i64, i64> key{b.end - b.begin, b.union_size};
      auto it = std::find_if(h.begin(), h.end(), [&](const auto& entry) { return entry.first == key; });
      if (it == h.end()) {
        h.push_back({key, 1});
      } else {
        ++it->second;
      }
    }
    return h;
  };
  double cost = 0;
  for (const auto& [r, r_count] : histogram(rows)) {
    for (const auto& [c, c_count] : histogram(cols)) {
      const double keys = static_cast<double>(r.second * c.second);
      const double vectors = static_cast<double>(round_up(r.first * c.first, kPixelPad) / kPixelPad);
      const double block = keys * (vectors * static_cast<double>(dq + e + 12) + static_cast<double>(dq + e)) + 200;
      cost += block * static_cast<double>(r_count * c_count);
    }
  }
  return cost;
}

// ---------------------------------------------------------------------------------------------

struct Problem : WorkQueue {
  NafCsnaShape shape;
  NafDType dtype;
  i64 dq, e;
  const void* query;
  const float* key_panel;  // see prepare_key_value
  float* key_panel_mut;
  i64 key_panel_stride;
  const float* value_t;
  float* value_t_mut;
  void* output;
  float scale;
  AxisPlan rows, cols;
  i64 max_keys = 0, max_pixel_stride = 0;
  // float32 output whose planes and rows start on 64-byte boundaries: whole-vector row segments
  // are written with non-temporal stores (the output is far larger than any cache).
  bool stream_output = false;
  i64 col_groups = 1;
};

}  // namespace
}  // namespace naf_cpu

// ---------------------------------------------------------------------------------------------
// The kernel, once per instruction set.

#define NAF_KERNEL_INC "cross_scale_attention_cpu_kernel.inc"
#include "cpu_isa_variants.inc"
#undef NAF_KERNEL_INC

namespace naf_cpu {
namespace {

struct Kernel {
  void (*worker)(Problem&);
  bool (*prepare_key_value)(Problem&, const void*, const void*, float*);
};

Kernel select_kernel() { return {NAF_ISA_PICK(worker), NAF_ISA_PICK(prepare_key_value)}; }

// Threads started here; the calling thread is one of them.
int run_on_threads(Problem& pb, const Kernel& kernel, int num_threads) {
  std::vector<std::thread> threads;
  try {
    for (int t = 1; t < num_threads; ++t) threads.emplace_back(kernel.worker, std::ref(pb));
  } catch (...) {
    // Fewer threads is still correct: workers share the items dynamically.
  }
  kernel.worker(pb);
  for (std::thread& t : threads) t.join();
  return 0;
}

struct TaskRunner {
  NafParallelFor parallel_for;
  void* runner_data;
  int num_tasks;
};

int forward(const NafCsnaShape* shape, NafDType dtype, const void* query, const void* key, const void* value,
            const int32_t* row_index, const int32_t* col_index, float scale, void* output, int num_threads,
            const TaskRunner* runner, char* message, size_t message_size) {
  int rc = naf_csna_check_shape(shape, message, message_size);
  if (rc != 0) return rc;
  const NafCsnaShape& s = *shape;
  const i64 elem = dtype == NAF_DTYPE_FLOAT16 ? 2 : 4;
  rc = check_buffers(dtype, {output, s.batch * s.value_channels * s.out_height * s.out_width * elem, "output"},
                     {{query, s.batch * s.query_channels * s.out_height * s.out_width * elem, "query"},
                      {key, s.batch * s.query_channels * s.in_height * s.in_width * elem, "key"},
                      {value, s.batch * s.value_channels * s.in_height * s.in_width * elem, "value"},
                      {row_index, s.out_height * s.kernel_size * 4, "row_index"},
                      {col_index, s.out_width * s.kernel_size * 4, "col_index"}},
                     message, message_size);
  if (rc != 0) return rc;
  rc = naf_csna_check_indices(shape, row_index, col_index, message, message_size);
  if (rc != 0) return rc;

  return guarded(message, message_size, [&]() -> int {
    const Kernel kernel = select_kernel();
    int workers = runner ? runner->num_tasks : num_threads;
    if (workers <= 0) workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    Problem pb;
    pb.shape = s;
    pb.dtype = dtype;
    pb.dq = s.query_channels / s.num_heads;
    pb.e = s.value_channels / s.num_heads;
    pb.query = query;
    pb.output = output;
    pb.scale = scale;
    pb.stream_output = dtype == NAF_DTYPE_FLOAT32 && reinterpret_cast<uintptr_t>(output) % 64 == 0 &&
                       s.out_width % 16 == 0;

    // Key and value are small (low resolution): re-laid out once here for the window gathers.
    pb.key_panel_stride = round_up(s.in_width, kPixelPad) + kPixelPad;
    AlignedFloats key_panel = allocate_floats(s.batch * s.query_channels * s.in_height * pb.key_panel_stride);
    AlignedFloats value_t = allocate_floats(s.batch * s.value_channels * s.in_height * s.in_width);
    AlignedFloats row_tmp = allocate_floats(dtype == NAF_DTYPE_FLOAT16 ? s.in_height * s.in_width : 0);
    pb.key_panel = pb.key_panel_mut = key_panel.get();
    pb.value_t = pb.value_t_mut = value_t.get();
    // Blocks merging several runs give keys outside a pixel's window weight exactly 0, and
    // 0 * inf is NaN: with a non-finite key or value, blocks hold one run each, so every key of
    // a block lies in every one of its pixels' windows, as in the reference.
    const bool merge_runs = kernel.prepare_key_value(pb, key, value, row_tmp.get());

    // Choose the blocking with the lowest modelled cost; at most 512 pixels per block.
    static constexpr i64 kTargets[] = {1, 2, 4, 8, 16, 32};
    std::vector<AxisPlan> row_plans, col_plans;
    for (i64 t : kTargets) {
      row_plans.push_back(plan_axis(row_index, s.out_height, s.kernel_size, t, merge_runs));
      col_plans.push_back(plan_axis(col_index, s.out_width, s.kernel_size, t, merge_runs));
    }
    double best = INFINITY;
    size_t best_r = 0, best_c = 0;
    for (size_t r = 0; r < row_plans.size(); ++r) {
      for (size_t c = 0; c < col_plans.size(); ++c) {
        if (row_plans[r].max_len * col_plans[c].max_len > 512) continue;
        const double cost = plan_cost(row_plans[r], col_plans[c], pb.dq, pb.e);
        if (cost < best) best = cost, best_r = r, best_c = c;
      }
    }
    pb.rows = std::move(row_plans[best_r]);
    pb.cols = std::move(col_plans[best_c]);
    pb.max_keys = pb.rows.max_union * pb.cols.max_union;
    pb.max_pixel_stride = pixel_stride(pb.rows.max_len * pb.cols.max_len);

    // Work items: (batch, head, row block, group of column blocks); enough for load balance.
    const i64 row_items = s.batch * s.num_heads * static_cast<i64>(pb.rows.blocks.size());
    pb.col_groups = std::clamp<i64>((4 * workers + row_items - 1) / row_items, 1,
                                    static_cast<i64>(pb.cols.blocks.size()));
    pb.num_items = row_items * pb.col_groups;
    workers = static_cast<int>(std::min<i64>(workers, pb.num_items));

    if (runner) {
      return run_tasks(pb, kernel.worker, runner->parallel_for, runner->runner_data, workers, message, message_size);
    }
    run_on_threads(pb, kernel, workers);
    if (pb.failed.load() != 0) {
      return report(message, message_size, NAF_CSNA_ERROR_RESOURCE, "out of memory allocating kernel scratch");
    }
    return 0;
  });
}

}  // namespace
}  // namespace naf_cpu

// ---------------------------------------------------------------------------------------------
// C ABI

extern "C" {

NAF_CORE_API int naf_csna_abi_version(void) { return NAF_CSNA_ABI_VERSION; }

NAF_CORE_API int naf_csna_shape_from_dims(const int64_t* q, const int64_t* k, const int64_t* v,
                                          const int64_t* rows, const int64_t* cols, int64_t num_heads,
                                          NafCsnaShape* shape, char* message, size_t message_size) {
  using naf_cpu::report;
  constexpr int kShape = NAF_CSNA_ERROR_SHAPE;
  if (q == nullptr || k == nullptr || v == nullptr || rows == nullptr || cols == nullptr || shape == nullptr) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "dims: null pointer");
  }
  using ll = long long;
  if (k[0] != q[0]) {
    return report(message, message_size, kShape, "key: batch size %lld differs from the query's %lld", ll(k[0]), ll(q[0]));
  }
  if (v[0] != q[0]) {
    return report(message, message_size, kShape, "value: batch size %lld differs from the query's %lld", ll(v[0]),
                  ll(q[0]));
  }
  if (k[1] != q[1]) {
    return report(message, message_size, kShape, "key: channel count %lld differs from the query's %lld", ll(k[1]),
                  ll(q[1]));
  }
  if (v[2] != k[2] || v[3] != k[3]) {
    return report(message, message_size, kShape, "value: spatial size [%lld, %lld] differs from the key's [%lld, %lld]",
                  ll(v[2]), ll(v[3]), ll(k[2]), ll(k[3]));
  }
  if (rows[0] != q[2]) {
    return report(message, message_size, kShape, "row_index: has %lld rows, expected H=%lld (the query height)",
                  ll(rows[0]), ll(q[2]));
  }
  if (cols[0] != q[3]) {
    return report(message, message_size, kShape, "col_index: has %lld rows, expected W=%lld (the query width)",
                  ll(cols[0]), ll(q[3]));
  }
  if (cols[1] != rows[1]) {
    return report(message, message_size, kShape, "col_index: kernel size %lld differs from row_index's %lld",
                  ll(cols[1]), ll(rows[1]));
  }
  *shape = NafCsnaShape{q[0], q[1], v[1], q[2], q[3], k[2], k[3], rows[1], num_heads};
  return 0;
}

NAF_CORE_API int naf_csna_check_shape(const NafCsnaShape* shape, char* message, size_t message_size) {
  using naf_cpu::report;
  if (shape == nullptr) return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "shape: null pointer");
  const NafCsnaShape& s = *shape;
  const struct {
    int64_t value;
    const char* what;
  } positive[] = {{s.batch, "query/key/value: batch size B"},   {s.query_channels, "query: channel count Dq"},
                  {s.value_channels, "value: channel count C"},  {s.out_height, "query: height H"},
                  {s.out_width, "query: width W"},               {s.in_height, "key: height h"},
                  {s.in_width, "key: width w"},                  {s.kernel_size, "kernel_size"},
                  {s.num_heads, "num_heads"}};
  for (const auto& p : positive) {
    if (p.value < 1) {
      return report(message, message_size, NAF_CSNA_ERROR_SHAPE, "%s must be >= 1, got %lld", p.what,
                    static_cast<long long>(p.value));
    }
  }
  if (s.kernel_size % 2 == 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE, "kernel_size must be odd, got %lld",
                  static_cast<long long>(s.kernel_size));
  }
  if (s.query_channels % s.num_heads != 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "query: channel count %lld is not divisible by num_heads=%lld",
                  static_cast<long long>(s.query_channels), static_cast<long long>(s.num_heads));
  }
  if (s.value_channels % s.num_heads != 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "value: channel count %lld is not divisible by num_heads=%lld",
                  static_cast<long long>(s.value_channels), static_cast<long long>(s.num_heads));
  }
  if (s.in_height < s.kernel_size || s.in_width < s.kernel_size) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "key: spatial size (h=%lld, w=%lld) is smaller than kernel_size=%lld (need h >= K and w >= K)",
                  static_cast<long long>(s.in_height), static_cast<long long>(s.in_width),
                  static_cast<long long>(s.kernel_size));
  }
  if (s.out_height < s.in_height || s.out_width < s.in_width) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "query: spatial size (H=%lld, W=%lld) is smaller than the key's (h=%lld, w=%lld); the "
                  "operator only upsamples",
                  static_cast<long long>(s.out_height), static_cast<long long>(s.out_width),
                  static_cast<long long>(s.in_height), static_cast<long long>(s.in_width));
  }
  // Every element offset (and byte size) must fit comfortably in int64 and size_t.
  const int64_t products[][4] = {{s.batch, s.query_channels, s.out_height, s.out_width},
                                 {s.batch, s.value_channels, s.out_height, s.out_width},
                                 {s.batch, std::max(s.query_channels, s.value_channels), s.in_height, s.in_width},
                                 {s.out_height, s.kernel_size, s.kernel_size, 1},
                                 {s.out_width, s.kernel_size, s.kernel_size, 1}};
  for (const auto& factors : products) {
    int64_t total = 4;  // bytes per element, at most
    for (int64_t f : factors) {
      if (__builtin_mul_overflow(total, f, &total) || total > (int64_t{1} << 50)) {
        return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                      "shape: tensor sizes too large (B=%lld, Dq=%lld, C=%lld, H=%lld, W=%lld, K=%lld)",
                      static_cast<long long>(s.batch), static_cast<long long>(s.query_channels),
                      static_cast<long long>(s.value_channels), static_cast<long long>(s.out_height),
                      static_cast<long long>(s.out_width), static_cast<long long>(s.kernel_size));
      }
    }
  }
  return 0;
}

NAF_CORE_API int naf_csna_check_indices(const NafCsnaShape* shape, const int32_t* row_index,
                                        const int32_t* col_index, char* message, size_t message_size) {
  using naf_cpu::report;
  const int rc = naf_csna_check_shape(shape, message, message_size);
  if (rc != 0) return rc;
  const struct {
    const int32_t* table;
    int64_t rows, limit;
    const char *name, *limit_name;
  } tables[] = {{row_index, shape->out_height, shape->in_height, "row_index", "h"},
                {col_index, shape->out_width, shape->in_width, "col_index", "w"}};
  for (const auto& t : tables) {
    if (t.table == nullptr) return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "%s: null pointer", t.name);
    const int64_t k = shape->kernel_size;
    for (int64_t i = 0; i < t.rows * k; ++i) {
      if (t.table[i] < 0 || t.table[i] >= t.limit) {
        return report(message, message_size, NAF_CSNA_ERROR_INDEX, "%s: entry [%lld, %lld] = %d is outside [0, %s=%lld)",
                      t.name, static_cast<long long>(i / k), static_cast<long long>(i % k), t.table[i], t.limit_name,
                      static_cast<long long>(t.limit));
      }
    }
  }
  return 0;
}

NAF_CORE_API int naf_csna_forward_cpu(const NafCsnaShape* shape, NafDType dtype, const void* query,
                                      const void* key, const void* value, const int32_t* row_index,
                                      const int32_t* col_index, float scale, void* output, int num_threads,
                                      char* message, size_t message_size) {
  return naf_cpu::forward(shape, dtype, query, key, value, row_index, col_index, scale, output, num_threads,
                          nullptr, message, message_size);
}

NAF_CORE_API int naf_csna_forward_cpu_parallel(const NafCsnaShape* shape, NafDType dtype, const void* query,
                                               const void* key, const void* value, const int32_t* row_index,
                                               const int32_t* col_index, float scale, void* output,
                                               NafParallelFor parallel_for, void* runner_data, int num_tasks,
                                               char* message, size_t message_size) {
  if (parallel_for == nullptr) {
    return naf_cpu::report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "parallel_for: null pointer");
  }
  const naf_cpu::TaskRunner runner{parallel_for, runner_data, num_tasks};
  return naf_cpu::forward(shape, dtype, query, key, value, row_index, col_index, scale, output, 0, &runner,
                          message, message_size);
}

}  // extern "C"
