// CPU implementation of the C ABI in naf/axial_rope.h: channel pairs in parallel, each rotating
// its two planes row by row (one read and one write of the map).
#include "naf/axial_rope.h"

#include "cpu_common.h"

#include <cmath>
#include <type_traits>
#include <vector>

namespace naf_cpu {
namespace {

struct RopeProblem : WorkQueue {
  NafRopeShape shape{};
  NafDType dtype = NAF_DTYPE_FLOAT32;
  const void* x = nullptr;
  void* y = nullptr;
  std::vector<float> cos_h, sin_h, cos_w, sin_w;  // the tables in float32
};

}  // namespace
}  // namespace naf_cpu

#define NAF_KERNEL_INC "axial_rope_cpu_kernel.inc"
#include "cpu_isa_variants.inc"
#undef NAF_KERNEL_INC

namespace naf_cpu {
namespace {


std::vector<float> table_as_float(const void* table, NafDType dtype, i64 count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (i64 i = 0; i < count; ++i) {
    out[i] = dtype == NAF_DTYPE_FLOAT16 ? half_to_float_portable(static_cast<const uint16_t*>(table)[i])
                                       : static_cast<const float*>(table)[i];
  }
  return out;
}

int forward(const NafRopeShape* shape, NafDType dtype, const void* x, const void* cos_h, const void* sin_h,
            const void* cos_w, const void* sin_w, void* y, NafParallelFor parallel_for, void* runner_data,
            int num_tasks, char* message, size_t message_size) {
  int rc = naf_rope_check_shape(shape, message, message_size);
  if (rc != 0) return rc;
  const NafRopeShape& s = *shape;
  rc = check_dtype(dtype, message, message_size);
  if (rc != 0) return rc;
  if (s.batch == 0) return 0;  // empty tensors may come with null data pointers
  const i64 elem = dtype == NAF_DTYPE_FLOAT16 ? 2 : 4;
  const i64 quarter = s.channels / s.num_heads / 4;
  const i64 map_bytes = s.batch * s.channels * s.height * s.width * elem;
  rc = check_buffers(dtype, {y, map_bytes, "y"},
                     {{x, map_bytes, "x"}, {cos_h, quarter * s.height * elem, "cos_h"},
                      {sin_h, quarter * s.height * elem, "sin_h"}, {cos_w, quarter * s.width * elem, "cos_w"},
                      {sin_w, quarter * s.width * elem, "sin_w"}},
                     message, message_size);
  if (rc != 0) return rc;
  return guarded(message, message_size, [&]() -> int {
    RopeProblem pb;
    pb.shape = s;
    pb.dtype = dtype;
    pb.x = x;
    pb.y = y;
    pb.cos_h = table_as_float(cos_h, dtype, quarter * s.height);
    pb.sin_h = table_as_float(sin_h, dtype, quarter * s.height);
    pb.cos_w = table_as_float(cos_w, dtype, quarter * s.width);
    pb.sin_w = table_as_float(sin_w, dtype, quarter * s.width);
    pb.num_items = s.batch * s.channels / 2;  // channel pairs
    return run_tasks(pb, NAF_ISA_PICK(rope_worker), parallel_for, runner_data, num_tasks, message, message_size);
  });
}

}  // namespace
}  // namespace naf_cpu

extern "C" {

NAF_CORE_API int naf_rope_check_shape(const NafRopeShape* shape, char* message, size_t message_size) {
  using naf_cpu::report;
  if (shape == nullptr) return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "shape: null pointer");
  const NafRopeShape& s = *shape;
  if (s.batch < 0 || s.channels <= 0 || s.height <= 0 || s.width <= 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "x: expected (B, D, H, W) with B >= 0 and D, H, W > 0, got B=%lld D=%lld H=%lld W=%lld",
                  static_cast<long long>(s.batch), static_cast<long long>(s.channels),
                  static_cast<long long>(s.height), static_cast<long long>(s.width));
  }
  if (s.num_heads <= 0 || s.channels % s.num_heads != 0 || (s.channels / s.num_heads) % 4 != 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "num_heads: expected a divisor of D=%lld leaving a head size that is a multiple of 4, got %lld",
                  static_cast<long long>(s.channels), static_cast<long long>(s.num_heads));
  }
  const double bytes = 4.0 * static_cast<double>(s.batch) * static_cast<double>(s.channels) *
                       static_cast<double>(s.height) * static_cast<double>(s.width);
  if (bytes > 9.0e18) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE, "x: tensor too large (%g bytes)", bytes);
  }
  return 0;
}

NAF_CORE_API int naf_rope_forward_cpu(const NafRopeShape* shape, NafDType dtype, const void* x, const void* cos_h,
                                      const void* sin_h, const void* cos_w, const void* sin_w, void* y,
                                      NafParallelFor parallel_for, void* runner_data, int num_tasks, char* message,
                                      size_t message_size) {
  return naf_cpu::forward(shape, dtype, x, cos_h, sin_h, cos_w, sin_w, y, parallel_for, runner_data, num_tasks,
                          message, message_size);
}

}  // extern "C"
