// IEEE binary16 <-> float32 in portable C++ (round to nearest even, NaN stays NaN), for code that
// cannot count on F16C/AVX-512 FP16: the CPU kernels' generic path (cpu_common.h), the core's
// self-test and the runtimes' float16 features (runtimes/src/preprocess.cc). Header-only, internal.
#ifndef NAF_CORE_FLOAT16_H_
#define NAF_CORE_FLOAT16_H_

#include <cstdint>
#include <cstring>

namespace naf_float16 {


inline float half_to_float_portable(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else {
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24, exact
    std::memcpy(&bits, &magnitude, sizeof bits);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_half_portable(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u) {  // inf, NaN (forced quiet so it cannot turn into inf)
    return static_cast<uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u));
  }
  if (magnitude >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536: inf
  if (magnitude < 0x38800000u) {
    // Result is subnormal or zero: adding 0.5 aligns the half's 2^-24 units with the float's last
    // mantissa bit, so the FPU's own round-to-nearest-even does the rounding.
    float x;
    std::memcpy(&x, &magnitude, sizeof x);
    x += 0.5f;
    std::memcpy(&magnitude, &x, sizeof x);
    return static_cast<uint16_t>(sign | (magnitude - 0x3f000000u));
  }
  const uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xc8000fffu + odd;  // rebias exponent 127 -> 15 (mod 2^32), add half an ulp - 1 + odd
  return static_cast<uint16_t>(sign | (magnitude >> 13));
}

}  // namespace naf_float16

#endif  // NAF_CORE_FLOAT16_H_
