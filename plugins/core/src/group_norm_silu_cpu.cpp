// CPU implementation of the C ABI in naf/group_norm_silu.h: per-plane moments in parallel, the
// group statistics combined on the calling thread (Chan et al.'s pairwise formula, float64), then
// every output plane in parallel. Memory traffic is two reads of x and one write of y, the least
// a two-pass normalisation can do.
#include "naf/group_norm_silu.h"

#include "cpu_common.h"

#include <cmath>
#include <type_traits>
#include <vector>

namespace naf_cpu {
namespace {

enum class GnPhase { moments, apply };

struct GnProblem : WorkQueue {
  NafGnShape shape{};
  NafDType dtype = NAF_DTYPE_FLOAT32;
  const void* x = nullptr;
  void* y = nullptr;
  std::vector<float> shift, scale, bias;  // per plane (n, c)
  std::vector<double> sum, sum_sq;        // per plane, of x - shift
  GnPhase phase = GnPhase::moments;
};

}  // namespace
}  // namespace naf_cpu

#define NAF_KERNEL_INC "group_norm_silu_cpu_kernel.inc"
#include "cpu_isa_variants.inc"
#undef NAF_KERNEL_INC

namespace naf_cpu {
namespace {

using GnWorker = void (*)(GnProblem&);


int run_phase(GnProblem& pb, GnPhase phase, GnWorker worker, NafParallelFor parallel_for, void* runner_data,
              int num_tasks, char* message, size_t message_size) {
  pb.phase = phase;
  return run_tasks(pb, worker, parallel_for, runner_data, num_tasks, message, message_size);
}

// Group statistics from the per-plane moments -> per-plane scale and bias of the affine step.
template <typename T>
void combine(GnProblem& pb, const T* gamma, const T* beta, float epsilon) {
  const NafGnShape& s = pb.shape;
  const i64 per_group = s.channels / s.num_groups;
  const double count = static_cast<double>(s.height * s.width);
  const auto as_float = [](T v) {
    if constexpr (std::is_same<T, float>::value) {
      return v;
    } else {
      return half_to_float_portable(v);
    }
  };
  for (i64 n = 0; n < s.batch; ++n) {
    for (i64 g = 0; g < s.num_groups; ++g) {
      const i64 first = n * s.channels + g * per_group;
      double mean = 0.0;
      for (i64 c = first; c < first + per_group; ++c) mean += pb.shift[c] + pb.sum[c] / count;
      mean /= static_cast<double>(per_group);
      double m2 = 0.0;
      for (i64 c = first; c < first + per_group; ++c) {
        const double channel_mean = pb.shift[c] + pb.sum[c] / count;
        m2 += std::max(0.0, pb.sum_sq[c] - pb.sum[c] * pb.sum[c] / count) +
              count * (channel_mean - mean) * (channel_mean - mean);
      }
      const double rstd = 1.0 / std::sqrt(m2 / (count * per_group) + epsilon);
      for (i64 c = first; c < first + per_group; ++c) {
        const double a = static_cast<double>(as_float(gamma[c - n * s.channels])) * rstd;
        pb.scale[c] = static_cast<float>(a);
        pb.bias[c] = static_cast<float>(as_float(beta[c - n * s.channels]) - mean * a);
      }
    }
  }
}

int forward(const NafGnShape* shape, NafDType dtype, const void* x, const void* gamma, const void* beta,
            float epsilon, void* y, NafParallelFor parallel_for, void* runner_data, int num_tasks, char* message,
            size_t message_size) {
  int rc = naf_gn_silu_check_shape(shape, message, message_size);
  if (rc != 0) return rc;
  if (!(epsilon >= 0.0f) || !std::isfinite(epsilon)) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "epsilon: expected a finite value >= 0, got %g",
                  static_cast<double>(epsilon));
  }
  const NafGnShape& s = *shape;
  rc = check_dtype(dtype, message, message_size);
  if (rc != 0) return rc;
  if (s.batch == 0) return 0;  // empty tensors may come with null data pointers
  const i64 elem = dtype == NAF_DTYPE_FLOAT16 ? 2 : 4;
  const i64 planes = s.batch * s.channels;
  rc = check_buffers(dtype, {y, planes * (s.height + 2 * s.pad) * (s.width + 2 * s.pad) * elem, "y"},
                     {{x, planes * s.height * s.width * elem, "x"}, {gamma, s.channels * elem, "gamma"},
                      {beta, s.channels * elem, "beta"}},
                     message, message_size);
  if (rc != 0) return rc;
  return guarded(message, message_size, [&]() -> int {
    GnProblem pb;
    pb.shape = s;
    pb.dtype = dtype;
    pb.x = x;
    pb.y = y;
    pb.num_items = planes;
    for (auto* v : {&pb.shift, &pb.scale, &pb.bias}) v->assign(static_cast<size_t>(planes), 0.0f);
    pb.sum.assign(static_cast<size_t>(planes), 0.0);
    pb.sum_sq.assign(static_cast<size_t>(planes), 0.0);
    const GnWorker worker = NAF_ISA_PICK(gn_worker);
    const int moments = run_phase(pb, GnPhase::moments, worker, parallel_for, runner_data, num_tasks, message,
                                  message_size);
    if (moments != 0) return moments;
    if (dtype == NAF_DTYPE_FLOAT16) {
      combine(pb, static_cast<const uint16_t*>(gamma), static_cast<const uint16_t*>(beta), epsilon);
    } else {
      combine(pb, static_cast<const float*>(gamma), static_cast<const float*>(beta), epsilon);
    }
    return run_phase(pb, GnPhase::apply, worker, parallel_for, runner_data, num_tasks, message, message_size);
  });
}

}  // namespace
}  // namespace naf_cpu

extern "C" {

NAF_CORE_API int naf_gn_silu_check_shape(const NafGnShape* shape, char* message, size_t message_size) {
  using naf_cpu::report;
  if (shape == nullptr) return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "shape: null pointer");
  const NafGnShape& s = *shape;
  if (s.batch < 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE, "x: batch must be >= 0, got %lld",
                  static_cast<long long>(s.batch));
  }
  if (s.channels <= 0 || s.height <= 0 || s.width <= 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "x: expected (N, C, H, W) with C, H, W > 0, got C=%lld H=%lld W=%lld",
                  static_cast<long long>(s.channels), static_cast<long long>(s.height),
                  static_cast<long long>(s.width));
  }
  if (s.num_groups <= 0 || s.channels % s.num_groups != 0) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "num_groups: expected a positive divisor of the channel count C=%lld, got %lld",
                  static_cast<long long>(s.channels), static_cast<long long>(s.num_groups));
  }
  if (s.pad < 0 || s.pad >= s.height || s.pad >= s.width) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE,
                  "pad: reflect padding needs 0 <= pad < min(H, W) = %lld, got %lld",
                  static_cast<long long>(std::min(s.height, s.width)), static_cast<long long>(s.pad));
  }
  // Sizes whose byte counts would overflow int64 (hostile dimensions) are refused too.
  const double bytes = 4.0 * static_cast<double>(s.batch) * static_cast<double>(s.channels) *
                       (static_cast<double>(s.height) + 2.0 * static_cast<double>(s.pad)) *
                       (static_cast<double>(s.width) + 2.0 * static_cast<double>(s.pad));
  if (bytes > 9.0e18) {
    return report(message, message_size, NAF_CSNA_ERROR_SHAPE, "x: tensor too large (%g bytes)", bytes);
  }
  return 0;
}

NAF_CORE_API int naf_gn_silu_forward_cpu(const NafGnShape* shape, NafDType dtype, const void* x, const void* gamma,
                                         const void* beta, float epsilon, void* y, NafParallelFor parallel_for,
                                         void* runner_data, int num_tasks, char* message, size_t message_size) {
  return naf_cpu::forward(shape, dtype, x, gamma, beta, epsilon, y, parallel_for, runner_data, num_tasks, message,
                          message_size);
}

}  // extern "C"
