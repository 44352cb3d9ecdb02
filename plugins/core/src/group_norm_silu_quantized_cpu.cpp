// CPU implementation of naf_qgn_silu_forward_cpu (naf/group_norm_silu.h): GroupNorm -> SiLU ->
// reflect pad between two INT8 convolutions, in 8 bits end to end.
//
// Phase 1, per plane (n, c): exact integer sums of (q - zero_point) and its square. The group
// statistics follow in float64 on the calling thread. Phase 2, per plane: every 8-bit input value
// maps to one 8-bit output value, so the plane's affine GroupNorm step, SiLU and requantization
// become one 256-entry table, computed in float32 in the order the unfused path (DequantizeLinear,
// the float kernel, QuantizeLinear) takes, then applied to every pixel of the plane and its
// mirrored border.
#include "naf/group_norm_silu.h"

#include "cpu_common.h"

#include <cmath>
#include <vector>

namespace naf_cpu {
namespace {

// The integer value a stored byte holds.
inline int32_t value_of(uint8_t byte, NafQType qtype) {
  return qtype == NAF_QTYPE_INT8 ? static_cast<int32_t>(static_cast<int8_t>(byte)) : static_cast<int32_t>(byte);
}

inline uint8_t store_of(int32_t value, NafQType qtype) {
  return qtype == NAF_QTYPE_INT8 ? static_cast<uint8_t>(static_cast<int8_t>(value)) : static_cast<uint8_t>(value);
}

// Sums of u = byte ^ flip and of u squared, exact. With flip = 0x80 an int8 q reads as q + 128
// (offset binary), so u - offset is the stored value minus its zero point either way.
struct ByteSums {
  int64_t sum = 0, sum_sq = 0;
};

ByteSums byte_sums_portable(const uint8_t* x, i64 count, uint8_t flip) {
  ByteSums s;
  for (i64 i = 0; i < count; ++i) {
    const int64_t u = x[i] ^ flip;
    s.sum += u;
    s.sum_sq += u * u;
  }
  return s;
}

// Bytes -> u8 LUT, one plane row.
void lookup_portable(const uint8_t* table, const uint8_t* src, uint8_t* dst, i64 n) {
  for (i64 j = 0; j < n; ++j) dst[j] = table[src[j]];
}

#if NAF_X86_DISPATCH
__attribute__((target("avx512f,avx512bw"))) ByteSums byte_sums_avx512(const uint8_t* x, i64 count, uint8_t flip) {
  ByteSums s;
  i64 i = 0;
  const __m512i zero = _mm512_setzero_si512(), flips = _mm512_set1_epi8(static_cast<char>(flip));
  while (i + 64 <= count) {
    // Squares of u8 values are < 2^16; pairs of them summed into int32 lanes stay exact for
    // 2^14 vectors, after which the lanes are flushed into the int64 totals.
    __m512i sum64 = zero, sq32 = zero;
    const i64 stop = std::min(count - 63, i + 64 * 8192);
    for (; i < stop; i += 64) {
      const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(x + i), flips);
      sum64 = _mm512_add_epi64(sum64, _mm512_sad_epu8(v, zero));
      const __m512i lo = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(v));
      const __m512i hi = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(v, 1));
      sq32 = _mm512_add_epi32(sq32, _mm512_add_epi32(_mm512_madd_epi16(lo, lo), _mm512_madd_epi16(hi, hi)));
    }
    s.sum += _mm512_reduce_add_epi64(sum64);
    alignas(64) int32_t lanes[16];
    _mm512_store_si512(lanes, sq32);
    for (int32_t lane : lanes) s.sum_sq += static_cast<uint32_t>(lane);
  }
  const ByteSums tail = byte_sums_portable(x + i, count - i, flip);
  s.sum += tail.sum;
  s.sum_sq += tail.sum_sq;
  return s;
}

// 256-entry table in four registers; permutex2var looks up 7 index bits in two of them, the
// index's top bit picks the pair.
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void lookup_vbmi(const uint8_t* table, const uint8_t* src,
                                                                          uint8_t* dst, i64 n) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  i64 j = 0;
  for (; j + 64 <= n; j += 64) {
    const __m512i x = _mm512_loadu_si512(src + j);
    const __m512i low = _mm512_permutex2var_epi8(t0, x, t1), high = _mm512_permutex2var_epi8(t2, x, t3);
    _mm512_storeu_si512(dst + j, _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high));
  }
  lookup_portable(table, src + j, dst + j, n - j);
}
#endif

struct ByteKernels {
  ByteSums (*sums)(const uint8_t*, i64, uint8_t);
  void (*lookup)(const uint8_t*, const uint8_t*, uint8_t*, i64);
};

ByteKernels select_byte_kernels() {
  ByteKernels k{byte_sums_portable, lookup_portable};
#if NAF_X86_DISPATCH
  if (select_isa() == Isa::avx512) {
    k.sums = byte_sums_avx512;
    if (__builtin_cpu_supports("avx512vbmi")) k.lookup = lookup_vbmi;
  }
#endif
  return k;
}

struct QgnProblem : WorkQueue {
  NafGnShape shape{};
  NafQType qtype = NAF_QTYPE_INT8;
  const uint8_t* x = nullptr;  // raw bytes; `qtype` says how to read them
  uint8_t* y = nullptr;
  NafQuantization x_quant{}, y_quant{};
  std::vector<int64_t> sum, sum_sq;  // per plane, of q - zero_point
  std::vector<float> scale, bias;    // per plane: y = silu(dequantize(q) * scale + bias)
  bool moments_phase = true;
  ByteKernels kernels = select_byte_kernels();
};

void moments(QgnProblem& pb, i64 plane) {
  const i64 count = pb.shape.height * pb.shape.width;
  const bool signed_bytes = pb.qtype == NAF_QTYPE_INT8;
  const ByteSums u = pb.kernels.sums(pb.x + plane * count, count, signed_bytes ? 0x80 : 0);
  const int64_t offset = pb.x_quant.zero_point + (signed_bytes ? 128 : 0);  // q - zero_point = u - offset
  pb.sum[plane] = u.sum - offset * count;
  pb.sum_sq[plane] = u.sum_sq - 2 * offset * u.sum + offset * offset * count;
}

void apply(QgnProblem& pb, i64 plane) {
  const NafGnShape& s = pb.shape;
  const i64 h = s.height, w = s.width, p = s.pad, out_w = w + 2 * p;
  const float scale = pb.scale[plane], bias = pb.bias[plane];
  const int32_t lo = pb.qtype == NAF_QTYPE_INT8 ? -128 : 0, hi = pb.qtype == NAF_QTYPE_INT8 ? 127 : 255;
  uint8_t table[256];
  for (int byte = 0; byte < 256; ++byte) {
    const float x = static_cast<float>(value_of(static_cast<uint8_t>(byte), pb.qtype) - pb.x_quant.zero_point) *
                    pb.x_quant.scale;  // DequantizeLinear
    const float v = x * scale + bias;
    const float silu = v / (1.0f + std::exp(-v));
    const float q = std::nearbyint(silu / pb.y_quant.scale) + static_cast<float>(pb.y_quant.zero_point);
    // Saturate; a NaN (from a NaN gamma or beta) goes to the low end instead of an undefined conversion.
    table[byte] = store_of(q >= static_cast<float>(hi) ? hi : (q >= static_cast<float>(lo) ? static_cast<int32_t>(q) : lo),
                           pb.qtype);
  }
  const uint8_t* src_plane = pb.x + plane * h * w;
  uint8_t* dst = pb.y + plane * (h + 2 * p) * out_w;
  for (i64 r = -p; r < h + p; ++r, dst += out_w) {
    const i64 src_r = r < 0 ? -r : (r >= h ? 2 * (h - 1) - r : r);
    uint8_t* center = dst + p;
    pb.kernels.lookup(table, src_plane + src_r * w, center, w);
    for (i64 k = 1; k <= p; ++k) {
      center[-k] = center[k];
      center[w - 1 + k] = center[w - 1 - k];
    }
  }
}

void qgn_worker(QgnProblem& pb) {
  for (i64 plane; (plane = pb.take()) >= 0;) {
    if (pb.moments_phase) {
      moments(pb, plane);
    } else {
      apply(pb, plane);
    }
  }
}

// Group statistics (float64, in dequantized units) -> per-plane scale and bias of the affine step.
void combine(QgnProblem& pb, const float* gamma, const float* beta, float epsilon) {
  const NafGnShape& s = pb.shape;
  const i64 per_group = s.channels / s.num_groups;
  const double count = static_cast<double>(s.height * s.width * per_group);
  const double step = pb.x_quant.scale;
  for (i64 n = 0; n < s.batch; ++n) {
    for (i64 g = 0; g < s.num_groups; ++g) {
      const i64 first = n * s.channels + g * per_group;
      int64_t s1 = 0, s2 = 0;
      for (i64 c = first; c < first + per_group; ++c) s1 += pb.sum[c], s2 += pb.sum_sq[c];
      const double mean_q = static_cast<double>(s1) / count;
      const double var_q = std::max(0.0, static_cast<double>(s2) / count - mean_q * mean_q);
      const double mean = mean_q * step;
      const double rstd = 1.0 / std::sqrt(var_q * step * step + epsilon);
      for (i64 c = first; c < first + per_group; ++c) {
        const double a = static_cast<double>(gamma[c - n * s.channels]) * rstd;
        pb.scale[c] = static_cast<float>(a);
        pb.bias[c] = static_cast<float>(beta[c - n * s.channels] - mean * a);
      }
    }
  }
}

int check_quantization(const NafQuantization& q, NafQType qtype, const char* name, char* message,
                       size_t message_size) {
  const int32_t lo = qtype == NAF_QTYPE_INT8 ? -128 : 0, hi = qtype == NAF_QTYPE_INT8 ? 127 : 255;
  if (!(q.scale > 0.0f) || !std::isfinite(q.scale)) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "%s_scale: expected a finite value > 0, got %g",
                  name, static_cast<double>(q.scale));
  }
  if (q.zero_point < lo || q.zero_point > hi) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "%s_zero_point: expected %d..%d, got %d", name, lo,
                  hi, q.zero_point);
  }
  return 0;
}

int forward(const NafGnShape* shape, NafQType qtype, const void* x, NafQuantization x_quant, const float* gamma,
            const float* beta, float epsilon, NafQuantization y_quant, void* y, NafParallelFor parallel_for,
            void* runner_data, int num_tasks, char* message, size_t message_size) {
  int rc = naf_gn_silu_check_shape(shape, message, message_size);
  if (rc != 0) return rc;
  if (qtype != NAF_QTYPE_INT8 && qtype != NAF_QTYPE_UINT8) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT,
                  "qtype: unsupported value %d (expected NAF_QTYPE_INT8=0 or NAF_QTYPE_UINT8=1)", static_cast<int>(qtype));
  }
  if (!(epsilon >= 0.0f) || !std::isfinite(epsilon)) {
    return report(message, message_size, NAF_CSNA_ERROR_ARGUMENT, "epsilon: expected a finite value >= 0, got %g",
                  static_cast<double>(epsilon));
  }
  if ((rc = check_quantization(x_quant, qtype, "x", message, message_size)) != 0) return rc;
  if ((rc = check_quantization(y_quant, qtype, "y", message, message_size)) != 0) return rc;
  const NafGnShape& s = *shape;
  if (s.batch == 0) return 0;  // empty tensors may come with null data pointers
  const i64 planes = s.batch * s.channels;
  rc = check_pointers({y, planes * (s.height + 2 * s.pad) * (s.width + 2 * s.pad), "y"},
                      {{x, planes * s.height * s.width, "x"}, {gamma, s.channels * 4, "gamma"},
                       {beta, s.channels * 4, "beta"}},
                      message, message_size);
  if (rc != 0) return rc;
  return guarded(message, message_size, [&]() -> int {
    QgnProblem pb;
    pb.shape = s;
    pb.qtype = qtype;
    pb.x = static_cast<const uint8_t*>(x);
    pb.y = static_cast<uint8_t*>(y);
    pb.x_quant = x_quant;
    pb.y_quant = y_quant;
    pb.num_items = planes;
    pb.sum.assign(static_cast<size_t>(planes), 0);
    pb.sum_sq.assign(static_cast<size_t>(planes), 0);
    pb.scale.assign(static_cast<size_t>(planes), 0.0f);
    pb.bias.assign(static_cast<size_t>(planes), 0.0f);
    rc = run_tasks(pb, &qgn_worker, parallel_for, runner_data, num_tasks, message, message_size);
    if (rc != 0) return rc;
    combine(pb, gamma, beta, epsilon);
    pb.moments_phase = false;
    return run_tasks(pb, &qgn_worker, parallel_for, runner_data, num_tasks, message, message_size);
  });
}

}  // namespace
}  // namespace naf_cpu

extern "C" NAF_CORE_API int naf_qgn_silu_forward_cpu(const NafGnShape* shape, NafQType qtype, const void* x,
                                                     NafQuantization x_quant, const float* gamma, const float* beta,
                                                     float epsilon, NafQuantization y_quant, void* y,
                                                     NafParallelFor parallel_for, void* runner_data, int num_tasks,
                                                     char* message, size_t message_size) {
  return naf_cpu::forward(shape, qtype, x, x_quant, gamma, beta, epsilon, y_quant, y, parallel_for, runner_data,
                          num_tasks, message, message_size);
}
