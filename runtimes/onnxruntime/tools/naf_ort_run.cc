// naf-ort-run: run an exported NAF model on .npy inputs with naf_ort_runtime, write the output as
// .npy, print the latency. Exit status: 0 success, 1 runtime error, 2 bad command line.
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "naf/ort_runtime.h"
#include "npy.h"

namespace {

constexpr const char* kUsage =
    "usage: naf-ort-run --model MODEL.onnx [--plugin libnaf_onnxruntime.so] --image IMAGE.npy\n"
    "                   --features FEATURES.npy [--output OUT.npy] [--threads N] [--repeat N]\n"
    "                   [--lean-memory]\n"
    "\n"
    "Runs an exported NAF model in ONNX Runtime (CPU) and writes the upsampled features.\n"
    "  --model PATH      exported model (naf_fused.onnx or naf_portable.onnx)\n"
    "  --plugin PATH     custom-op library libnaf_onnxruntime.so (needed by fused models)\n"
    "  --image PATH      float32 .npy (B, 3, Hi, Wi), ImageNet-normalised RGB\n"
    "  --features PATH   float32 .npy (B, C, h, w)\n"
    "  --output PATH     float32 .npy (B, C, H, W) to write (omit to only time the model)\n"
    "  --threads N       ONNX Runtime intra-op threads (default 0: one per physical core)\n"
    "  --repeat N        run N times and print the median latency (default 1)\n"
    "  --lean-memory     disable ONNX Runtime's CPU memory arena: lower peak memory, slightly\n"
    "                    slower repeated runs\n";

struct UsageError {
  std::string message;
};

struct Args {
  std::string model, plugin, image, features, output;
  int threads = 0;
  int repeat = 1;
  bool lean_memory = false;
};

int parse_int(const std::string& flag, const std::string& text, int min, int max) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || v < min || v > max) {
    throw UsageError{flag + " expects an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
                     "], got '" + text + "'"};
  }
  return static_cast<int>(v);
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    bool has_value = false;
    const size_t eq = flag.find('=');
    if (flag.rfind("--", 0) == 0 && eq != std::string::npos) {  // --flag=value
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--lean-memory") {
      if (has_value) throw UsageError{"--lean-memory takes no value"};
      args.lean_memory = true;
      continue;
    }
    std::string* target = flag == "--model"      ? &args.model
                          : flag == "--plugin"   ? &args.plugin
                          : flag == "--image"    ? &args.image
                          : flag == "--features" ? &args.features
                          : flag == "--output"   ? &args.output
                                                 : nullptr;
    const bool is_int = flag == "--threads" || flag == "--repeat";
    if (target == nullptr && !is_int) throw UsageError{"unknown argument '" + flag + "'"};
    if (!has_value) {
      if (i + 1 >= argc) throw UsageError{flag + " needs a value"};
      value = argv[++i];
    }
    if (value.empty()) throw UsageError{flag + " needs a non-empty value"};
    if (flag == "--threads") {
      args.threads = parse_int(flag, value, 0, 4096);
    } else if (flag == "--repeat") {
      args.repeat = parse_int(flag, value, 1, 1000000);
    } else {
      *target = value;
    }
  }
  for (const auto& required : {std::make_pair("--model", &args.model), std::make_pair("--image", &args.image),
                               std::make_pair("--features", &args.features)}) {
    if (required.second->empty()) throw UsageError{std::string(required.first) + " is required"};
  }
  return args;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

double peak_rss_mib() {
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
#if defined(__APPLE__)
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // bytes
#else
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB
#endif
}

int run(const Args& args) {
  const naf::npy::Array image = naf::npy::read(args.image, "image '" + args.image + "'");
  const naf::npy::Array features = naf::npy::read(args.features, "features '" + args.features + "'");

  naf::OrtUpsamplerOptions options;
  options.intra_op_threads = args.threads;
  options.lean_memory = args.lean_memory;
  const naf::OrtUpsampler upsampler(args.model, args.plugin, options);
  const std::string plugin_note = upsampler.uses_plugin() ? " (plugin " + args.plugin + ")" : "";
  std::printf("model %s%s, ONNX Runtime %s, threads %d, memory %s\n", args.model.c_str(), plugin_note.c_str(),
              naf::OrtUpsampler::onnxruntime_version().c_str(), args.threads,
              args.lean_memory ? "lean (arena off)" : "arena");

  std::vector<float> out;
  std::vector<int64_t> out_shape;
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(args.repeat));
  for (int r = 0; r < args.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    upsampler.run(image.data.data(), image.shape, features.data.data(), features.shape, out, out_shape);
    const auto stop = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  std::printf("image %s, features %s -> upsampled %s\n", shape_string(image.shape).c_str(),
              shape_string(features.shape).c_str(), shape_string(out_shape).c_str());
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::printf("latency: median %.3f ms over %zu run%s (min %.3f, max %.3f; first %.3f)\n", median, n,
              n == 1 ? "" : "s", sorted.front(), sorted.back(), ms.front());
  std::printf("peak RSS: %.1f MiB\n", peak_rss_mib());
  if (!args.output.empty()) {
    naf::npy::write(args.output, out.data(), out_shape, "output '" + args.output + "'");
    std::printf("wrote %s\n", args.output.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "naf-ort-run: error: %s\n\n%s", e.message.c_str(), kUsage);
    return 2;
  }
  try {
    return run(args);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "naf-ort-run: error: out of memory\n");
  } catch (const std::exception& e) {  // naf::RuntimeError, naf::npy::NpyError
    std::fprintf(stderr, "naf-ort-run: error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "naf-ort-run: error: unknown exception\n");
  }
  return 1;
}
