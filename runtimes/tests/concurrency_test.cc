// The thread-safety claims of the CPU backends (runtimes/README.md): one instance, run() from
// several threads at once, gives every thread the numbers a single-threaded run gives. Target
// naf_runtime_concurrency_test, run by tests/test_runtimes.py (also under AddressSanitizer).
//
// usage: naf_runtime_concurrency_test onnxruntime|openvino MODEL PLUGIN THREADS RUNS
// Each thread alternates a uint8 frame (its own size, so each thread resizes differently) and a
// float16-features run, compares each output with the sequential reference, and reports
// "OK" or the first mismatch.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "naf/upsampler.h"
#if defined(NAF_RUN_WITH_ONNXRUNTIME)
#include "naf/onnxruntime_upsampler.h"
#endif
#if defined(NAF_RUN_WITH_OPENVINO)
#include "naf/openvino_upsampler.h"
#endif

namespace {

struct Case {
  std::vector<uint8_t> frame;
  int64_t height, width;
  std::vector<uint16_t> features;  // float16 patterns
  std::vector<float> expected;
};

uint16_t to_half_bits(float v) {  // small values in (-4, 4): normal halves, truncated mantissa is fine here
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  if (exponent <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent) << 10) | ((bits >> 13) & 0x3ffu));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s onnxruntime|openvino MODEL PLUGIN THREADS RUNS\n", argv[0]);
    return 2;
  }
  const std::string backend = argv[1];
  const int threads = std::atoi(argv[4]), runs = std::atoi(argv[5]);
  try {
    naf::UpsamplerOptions options;
    options.plugin_path = argv[3];
    options.threads = 1;  // the runtimes' own pools stay small: the threads here are the point
    std::unique_ptr<naf::Upsampler> up;
#if defined(NAF_RUN_WITH_ONNXRUNTIME)
    if (backend == "onnxruntime") up.reset(new naf::OrtUpsampler(argv[2], options));
#endif
#if defined(NAF_RUN_WITH_OPENVINO)
    if (backend == "openvino") up.reset(new naf::OpenVinoUpsampler(argv[2], options));
#endif
    if (!up) {
      std::fprintf(stderr, "backend %s not built\n", backend.c_str());
      return 2;
    }
    naf::Shape fshape = up->features_shape();
    fshape[0] = 1;
    const size_t fcount = static_cast<size_t>(fshape[1] * fshape[2] * fshape[3]);
    std::vector<Case> cases(static_cast<size_t>(threads));
    uint32_t seed = 12345;
    const auto rnd = [&] {
      seed = seed * 1664525u + 1013904223u;
      return seed >> 8;
    };
    for (int t = 0; t < threads; ++t) {
      Case& c = cases[static_cast<size_t>(t)];
      c.height = 40 + 13 * t;
      c.width = 90 - 7 * t;
      c.frame.resize(static_cast<size_t>(c.height * c.width * 3));
      for (auto& v : c.frame) v = static_cast<uint8_t>(rnd());
      c.features.resize(fcount);
      for (auto& v : c.features) v = to_half_bits(static_cast<float>(rnd() % 2000) / 500.0f - 2.0f);
      up->run(naf::Frame{c.frame.data(), c.height, c.width, 0},
              naf::FeaturesView{c.features.data(), fshape, naf::ElementType::kFloat16}, c.expected);
    }
    std::atomic<int> mismatches{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const Case& c = cases[static_cast<size_t>(t)];
        std::vector<float> out;
        for (int r = 0; r < runs; ++r) {
          try {
            up->run(naf::Frame{c.frame.data(), c.height, c.width, 0},
                    naf::FeaturesView{c.features.data(), fshape, naf::ElementType::kFloat16}, out);
            if (out != c.expected) mismatches.fetch_add(1);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "thread %d: %s\n", t, e.what());
            mismatches.fetch_add(1);
          }
        }
      });
    }
    for (auto& th : pool) th.join();
    if (mismatches.load() != 0) {
      std::printf("%d of %d concurrent runs differ from the sequential ones\n", mismatches.load(), threads * runs);
      return 1;
    }
    std::printf("OK (%d threads x %d runs)\n", threads, runs);
  } catch (const naf::RuntimeError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
