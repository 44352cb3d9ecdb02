// The core's CPU kernels (attention, GroupNorm+SiLU float and 8-bit, axial RoPE) on cases whose
// inputs and reference outputs were computed elsewhere (tests/test_aarch64.py writes them with
// PyTorch on x86), so the same binary checks any build of the core, natively or cross-compiled
// and run under an emulator (qemu-aarch64 for Jetson's CPU). Target naf_core_selftest.
//
// usage: naf_core_selftest CASE_DIR
//   CASE_DIR/cases.txt, one case per line:
//     attention  NAME B Dq C H W h w K heads scale f32|f16 TOL
//     groupnorm  NAME N C H W groups pad eps f32|f16 TOL
//     qgroupnorm NAME N C H W groups pad eps u8|i8 x_scale x_zero y_scale y_zero MAX_STEP MAX_FRACTION
//     rope       NAME B D H W heads f32|f16 TOL
//   and NAME.<tensor>.bin raw little-endian tensors: attention query key value row_index col_index,
//   groupnorm x gamma beta, qgroupnorm x gamma beta, rope x cos_h sin_h cos_w sin_w; each case's
//   NAME.expected.bin is the reference output in float32 (in the output type for qgroupnorm).
//   TOL bounds the relative L2 error; float16 outputs are compared after conversion to float32.
// Prints "NAME: <measure> ok|FAIL" per case and "OK" when every case passed; exit status 1
// otherwise.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../src/float16.h"
#include "naf/axial_rope.h"
#include "naf/cross_scale_attention.h"
#include "naf/group_norm_silu.h"

namespace {

std::string dir;

std::vector<unsigned char> load(const std::string& name, const std::string& tensor, size_t expected_bytes) {
  const std::string path = dir + "/" + name + "." + tensor + ".bin";
  std::ifstream in(path, std::ios::binary);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.eof() && !in.good()) throw std::runtime_error("cannot read " + path);
  if (bytes.size() != expected_bytes) {
    throw std::runtime_error(path + ": " + std::to_string(bytes.size()) + " bytes, expected " +
                             std::to_string(expected_bytes));
  }
  return bytes;
}

// Output bytes (float32 or float16) as float32 values.
std::vector<float> as_float(const std::vector<unsigned char>& bytes, bool half) {
  std::vector<float> out(bytes.size() / (half ? 2 : 4));
  for (size_t i = 0; i < out.size(); ++i) {
    if (half) {
      uint16_t h;
      std::memcpy(&h, &bytes[2 * i], 2);
      out[i] = naf_float16::half_to_float_portable(h);
    } else {
      std::memcpy(&out[i], &bytes[4 * i], 4);
    }
  }
  return out;
}

double rel_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

bool report(const std::string& name, int rc, const char* message, double value, double tol, const char* what) {
  if (rc != 0) {
    std::printf("%s: kernel error %d: %s FAIL\n", name.c_str(), rc, message);
    return false;
  }
  const bool ok = value <= tol && std::isfinite(value);
  std::printf("%s: %s %.3g (bound %.3g) %s\n", name.c_str(), what, value, tol, ok ? "ok" : "FAIL");
  return ok;
}

bool run_attention(std::istringstream& line) {
  std::string name, dtype;
  NafCsnaShape s{};
  double scale = 0, tol = 0;
  line >> name >> s.batch >> s.query_channels >> s.value_channels >> s.out_height >> s.out_width >> s.in_height >>
      s.in_width >> s.kernel_size >> s.num_heads >> scale >> dtype >> tol;
  const bool half = dtype == "f16";
  const size_t item = half ? 2 : 4;
  const size_t nq = static_cast<size_t>(s.batch * s.query_channels * s.out_height * s.out_width);
  const size_t nk = static_cast<size_t>(s.batch * s.query_channels * s.in_height * s.in_width);
  const size_t nv = static_cast<size_t>(s.batch * s.value_channels * s.in_height * s.in_width);
  const size_t no = static_cast<size_t>(s.batch * s.value_channels * s.out_height * s.out_width);
  const auto q = load(name, "query", nq * item), k = load(name, "key", nk * item), v = load(name, "value", nv * item);
  const auto rows = load(name, "row_index", static_cast<size_t>(s.out_height * s.kernel_size) * 4);
  const auto cols = load(name, "col_index", static_cast<size_t>(s.out_width * s.kernel_size) * 4);
  const auto expected = as_float(load(name, "expected", no * 4), false);
  std::vector<unsigned char> out(no * item);
  char message[512] = {};
  const int rc = naf_csna_forward_cpu(&s, half ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32, q.data(), k.data(), v.data(),
                                      reinterpret_cast<const int32_t*>(rows.data()),
                                      reinterpret_cast<const int32_t*>(cols.data()), static_cast<float>(scale),
                                      out.data(), 2, message, sizeof message);
  return report(name, rc, message, rc ? 0 : rel_l2(as_float(out, half), expected), tol, "rel_l2");
}

bool run_groupnorm(std::istringstream& line) {
  std::string name, dtype;
  NafGnShape s{};
  double eps = 0, tol = 0;
  line >> name >> s.batch >> s.channels >> s.height >> s.width >> s.num_groups >> s.pad >> eps >> dtype >> tol;
  const bool half = dtype == "f16";
  const size_t item = half ? 2 : 4;
  const size_t nx = static_cast<size_t>(s.batch * s.channels * s.height * s.width);
  const size_t ny = static_cast<size_t>(s.batch * s.channels * (s.height + 2 * s.pad) * (s.width + 2 * s.pad));
  const auto x = load(name, "x", nx * item);
  const auto gamma = load(name, "gamma", static_cast<size_t>(s.channels) * item);
  const auto beta = load(name, "beta", static_cast<size_t>(s.channels) * item);
  const auto expected = as_float(load(name, "expected", ny * 4), false);
  std::vector<unsigned char> out(ny * item);
  char message[512] = {};
  const int rc = naf_gn_silu_forward_cpu(&s, half ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32, x.data(), gamma.data(),
                                         beta.data(), static_cast<float>(eps), out.data(), nullptr, nullptr, 1, message,
                                         sizeof message);
  return report(name, rc, message, rc ? 0 : rel_l2(as_float(out, half), expected), tol, "rel_l2");
}

bool run_qgroupnorm(std::istringstream& line) {
  std::string name, qtype;
  NafGnShape s{};
  double eps = 0, x_scale = 0, y_scale = 0, max_fraction = 0;
  int x_zero = 0, y_zero = 0, max_step = 0;
  line >> name >> s.batch >> s.channels >> s.height >> s.width >> s.num_groups >> s.pad >> eps >> qtype >> x_scale >>
      x_zero >> y_scale >> y_zero >> max_step >> max_fraction;
  const bool is_signed = qtype == "i8";
  const size_t nx = static_cast<size_t>(s.batch * s.channels * s.height * s.width);
  const size_t ny = static_cast<size_t>(s.batch * s.channels * (s.height + 2 * s.pad) * (s.width + 2 * s.pad));
  const auto x = load(name, "x", nx);
  const auto gamma = load(name, "gamma", static_cast<size_t>(s.channels) * 4);
  const auto beta = load(name, "beta", static_cast<size_t>(s.channels) * 4);
  const auto expected = load(name, "expected", ny);
  std::vector<unsigned char> out(ny);
  char message[512] = {};
  const int rc = naf_qgn_silu_forward_cpu(
      &s, is_signed ? NAF_QTYPE_INT8 : NAF_QTYPE_UINT8, x.data(), NafQuantization{static_cast<float>(x_scale), x_zero},
      reinterpret_cast<const float*>(gamma.data()), reinterpret_cast<const float*>(beta.data()), static_cast<float>(eps),
      NafQuantization{static_cast<float>(y_scale), y_zero}, out.data(), nullptr, nullptr, 1, message, sizeof message);
  if (rc != 0) return report(name, rc, message, 0, 0, "");
  int worst = 0;
  size_t differing = 0;
  for (size_t i = 0; i < ny; ++i) {
    const int a = is_signed ? static_cast<int8_t>(out[i]) : out[i];
    const int b = is_signed ? static_cast<int8_t>(expected[i]) : expected[i];
    worst = std::max(worst, std::abs(a - b));
    differing += a != b;
  }
  const double fraction = static_cast<double>(differing) / static_cast<double>(ny);
  const bool ok = worst <= max_step && fraction <= max_fraction;
  std::printf("%s: max step %d (bound %d), differing %.3g (bound %.3g) %s\n", name.c_str(), worst, max_step, fraction,
              max_fraction, ok ? "ok" : "FAIL");
  return ok;
}

bool run_rope(std::istringstream& line) {
  std::string name, dtype;
  NafRopeShape s{};
  double tol = 0;
  line >> name >> s.batch >> s.channels >> s.height >> s.width >> s.num_heads >> dtype >> tol;
  const bool half = dtype == "f16";
  const size_t item = half ? 2 : 4;
  const size_t n = static_cast<size_t>(s.batch * s.channels * s.height * s.width);
  const size_t quarter = static_cast<size_t>(s.channels / s.num_heads / 4);
  const auto x = load(name, "x", n * item);
  const auto cos_h = load(name, "cos_h", quarter * static_cast<size_t>(s.height) * item);
  const auto sin_h = load(name, "sin_h", quarter * static_cast<size_t>(s.height) * item);
  const auto cos_w = load(name, "cos_w", quarter * static_cast<size_t>(s.width) * item);
  const auto sin_w = load(name, "sin_w", quarter * static_cast<size_t>(s.width) * item);
  const auto expected = as_float(load(name, "expected", n * 4), false);
  std::vector<unsigned char> out(n * item);
  char message[512] = {};
  const int rc = naf_rope_forward_cpu(&s, half ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32, x.data(), cos_h.data(),
                                      sin_h.data(), cos_w.data(), sin_w.data(), out.data(), nullptr, nullptr, 1, message,
                                      sizeof message);
  return report(name, rc, message, rc ? 0 : rel_l2(as_float(out, half), expected), tol, "rel_l2");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CASE_DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  std::ifstream cases(dir + "/cases.txt");
  if (!cases) {
    std::fprintf(stderr, "cannot read %s/cases.txt\n", dir.c_str());
    return 2;
  }
  int failed = 0, total = 0;
  std::string text;
  while (std::getline(cases, text)) {
    if (text.empty() || text[0] == '#') continue;
    std::istringstream line(text);
    std::string kind;
    line >> kind;
    bool ok = false;
    try {
      if (kind == "attention") ok = run_attention(line);
      else if (kind == "groupnorm") ok = run_groupnorm(line);
      else if (kind == "qgroupnorm") ok = run_qgroupnorm(line);
      else if (kind == "rope") ok = run_rope(line);
      else std::printf("unknown case kind '%s' FAIL\n", kind.c_str());
    } catch (const std::exception& e) {
      std::printf("%s FAIL\n", e.what());
    }
    ++total;
    failed += ok ? 0 : 1;
  }
  if (failed || total == 0) {
    std::printf("%d of %d cases failed\n", failed, total);
    return 1;
  }
  std::printf("OK (%d cases, %s)\n", total,
#if defined(__aarch64__)
              "aarch64"
#elif defined(__x86_64__)
              "x86-64"
#else
              "other"
#endif
  );
  return 0;
}
