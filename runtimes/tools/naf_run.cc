// naf-run: run an exported NAF model with any naf runtime backend built here (ONNX Runtime,
// OpenVINO, TensorRT; chosen from the artifact's extension or --backend), on an image (a picture
// file, a uint8 HWC .npy frame, or a normalised float32 .npy tensor) and .npy features; write the
// output as .npy and print the latency.
//
// Exit status, as the Python tool's (README "Failure modes"): 0 done; 2 bad input (command line,
// files, shapes, artifact, plugin, a runtime failing on the artifact); 3 the runtime or GPU the
// artifact needs is missing here (or its backend was not built into this naf-run); 4 internal error.
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "image_io.h"
#include "naf/upsampler.h"
#include "npy.h"
#if defined(NAF_RUN_WITH_ONNXRUNTIME)
#include "naf/onnxruntime_upsampler.h"
#endif
#if defined(NAF_RUN_WITH_OPENVINO)
#include "naf/openvino_upsampler.h"
#endif
#if defined(NAF_RUN_WITH_TENSORRT)
#include "naf/tensorrt_upsampler.h"
#endif

namespace {

constexpr int kExitBadInput = 2, kExitRuntimeMissing = 3, kExitInternal = 4;

constexpr const char* kUsage =
    "usage: naf-run --model ARTIFACT --image IMAGE --features FEATURES.npy [--output OUT.npy]\n"
    "               [--backend onnxruntime|openvino|tensorrt] [--plugin LIBRARY] [--threads N]\n"
    "               [--repeat N] [--channel-order rgb|bgr] [--save-input PATH.npy]\n"
    "               [--lean-memory] [--ort-library PATH] [--ov-device NAME]\n"
    "               [--ov-precision auto|f32|bf16|f16|default] [--ov-cache-dir DIR]\n"
    "               [--cuda-device N] [--cuda-graph]\n"
    "\n"
    "Runs an exported NAF model with the backend its extension names (.onnx: ONNX Runtime, .xml:\n"
    "OpenVINO, .engine/.plan: TensorRT) and writes the upsampled features.\n"
    "  --model PATH        exported model: naf_*.onnx, an OpenVINO IR .xml, a TensorRT .engine\n"
    "  --backend NAME      override the backend (e.g. openvino for an .onnx file)\n"
    "  --plugin PATH       the backend's plugin library (default: the one next to the runtime library)\n"
    "  --image PATH        a picture (PNG, JPEG, PNM) or a uint8 .npy (H, W, 3): resized to the model's\n"
    "                      size and ImageNet-normalised inside; or a float32 .npy (B, 3, Hi, Wi),\n"
    "                      already normalised\n"
    "  --features PATH     float32 or float16 .npy (B, C, h, w)\n"
    "  --output PATH       float32 .npy (B, C, H, W) to write (omit to only time the model)\n"
    "  --threads N         CPU threads of ONNX Runtime / OpenVINO (default 0: the runtime's choice)\n"
    "  --repeat N          run N times and print the median latency (default 1)\n"
    "  --channel-order O   channel order of a uint8 .npy frame (default rgb; picture files are RGB)\n"
    "  --save-input PATH   also write the normalised image the model gets, float32 (B, 3, Hi, Wi)\n"
    "  --lean-memory       ONNX Runtime: CPU memory arena off (lower peak memory)\n"
    "  --ort-library PATH  ONNX Runtime: the libonnxruntime to load (default: next to the runtime\n"
    "                      library, the build's, then the system's)\n"
    "  --ov-device NAME    OpenVINO device (default CPU)\n"
    "  --ov-precision P    OpenVINO inference precision (default auto: as naf-export compiles it)\n"
    "  --ov-cache-dir DIR  OpenVINO model cache\n"
    "  --cuda-device N     TensorRT: CUDA device ordinal (default 0)\n"
    "  --cuda-graph        TensorRT: replay the engine as a CUDA graph\n"
    "  --version           print the backends this naf-run was built with\n";

struct UsageError {
  std::string message;
};

struct Args {
  std::string model, backend, plugin, image, features, output, save_input, channel_order = "rgb";
  std::string ov_device = "CPU", ov_precision = "auto", ov_cache_dir, ort_library;
  int threads = 0, repeat = 1, cuda_device = 0;
  bool lean_memory = false, cuda_graph = false;
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

std::string built_backends() {
  std::string s;
#if defined(NAF_RUN_WITH_ONNXRUNTIME)
  s += " onnxruntime";
#endif
#if defined(NAF_RUN_WITH_OPENVINO)
  s += " openvino";
#endif
#if defined(NAF_RUN_WITH_TENSORRT)
  s += " tensorrt";
#endif
  return s.empty() ? " (none)" : s;
}

Args parse_args(int argc, char** argv) {
  Args args;
  const std::pair<const char*, std::string Args::*> strings[] = {
      {"--model", &Args::model},          {"--backend", &Args::backend},       {"--plugin", &Args::plugin},
      {"--image", &Args::image},          {"--features", &Args::features},     {"--output", &Args::output},
      {"--save-input", &Args::save_input}, {"--channel-order", &Args::channel_order},
      {"--ov-device", &Args::ov_device},  {"--ov-precision", &Args::ov_precision},
      {"--ov-cache-dir", &Args::ov_cache_dir}, {"--ort-library", &Args::ort_library}};
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
    if (flag == "--version") {
      std::printf("naf-run, backends:%s; image formats: %s\n", built_backends().c_str(),
                  naf::image::supported_formats().c_str());
      std::exit(0);
    }
    if (flag == "--lean-memory" || flag == "--cuda-graph") {
      if (has_value) throw UsageError{flag + " takes no value"};
      (flag == "--lean-memory" ? args.lean_memory : args.cuda_graph) = true;
      continue;
    }
    std::string Args::*target = nullptr;
    for (const auto& s : strings) {
      if (flag == s.first) target = s.second;
    }
    const bool is_int = flag == "--threads" || flag == "--repeat" || flag == "--cuda-device";
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
    } else if (flag == "--cuda-device") {
      args.cuda_device = parse_int(flag, value, 0, 1024);
    } else {
      args.*target = value;
    }
  }
  for (const auto& required : {std::make_pair("--model", &args.model), std::make_pair("--image", &args.image),
                               std::make_pair("--features", &args.features)}) {
    if (required.second->empty()) throw UsageError{std::string(required.first) + " is required"};
  }
  if (args.channel_order != "rgb" && args.channel_order != "bgr") {
    throw UsageError{"--channel-order expects rgb or bgr, got '" + args.channel_order + "'"};
  }
  return args;
}

double peak_rss_mib() {
#if defined(__linux__)
  // VmHWM: this process's own high-water mark. getrusage's ru_maxrss survives execve, so a
  // naf-run started by a large parent (a Python harness) would report the parent's peak.
  {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
    }
  }
#endif
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
#if defined(__APPLE__)
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // bytes
#else
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB
#endif
}

std::unique_ptr<naf::Upsampler> open_upsampler(naf::Backend backend, const std::string& model,
                                               const naf::UpsamplerOptions& options) {
  switch (backend) {
    case naf::Backend::kOnnxRuntime:
#if defined(NAF_RUN_WITH_ONNXRUNTIME)
      return std::unique_ptr<naf::Upsampler>(new naf::OrtUpsampler(model, options));
#else
      break;
#endif
    case naf::Backend::kOpenVino:
#if defined(NAF_RUN_WITH_OPENVINO)
      return std::unique_ptr<naf::Upsampler>(new naf::OpenVinoUpsampler(model, options));
#else
      break;
#endif
    case naf::Backend::kTensorRt:
#if defined(NAF_RUN_WITH_TENSORRT)
      return std::unique_ptr<naf::Upsampler>(new naf::TensorRtUpsampler(model, options));
#else
      break;
#endif
  }
  throw naf::RuntimeError(std::string("backend: this naf-run was built without the ") + naf::backend_name(backend) +
                              " backend (built with:" + built_backends() + "); rebuild runtimes/ where " +
                              naf::backend_name(backend) + " is installed (runtimes/README.md)",
                          naf::RuntimeError::Kind::kRuntimeUnavailable);
}

bool is_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[6] = {};
  return in.read(magic, 6) && std::memcmp(magic, "\x93NUMPY", 6) == 0;
}

struct Input {
  naf::npy::Array array;    // a .npy image or frame
  naf::image::Rgb8 picture;  // a decoded picture file
  bool frame = false;
  naf::Frame view;
};

Input load_image(const std::string& path) {
  Input in;
  const std::string name = "image '" + path + "'";
  if (is_npy(path)) {
    in.array = naf::npy::read(path, name);
    const auto& s = in.array.shape;
    if (in.array.dtype == naf::npy::DType::kUint8) {
      if (s.size() != 3 || s[2] != 3) {
        throw naf::npy::NpyError(name + ": a uint8 image must be a frame of shape (H, W, 3), got rank " +
                                 std::to_string(s.size()));
      }
      in.frame = true;
      in.view.data = in.array.bytes();
      in.view.height = s[0];
      in.view.width = s[1];
    } else if (in.array.dtype != naf::npy::DType::kFloat32) {
      throw naf::npy::NpyError(name + ": expected a float32 (B, 3, Hi, Wi) tensor or a uint8 (H, W, 3) frame, got " +
                               naf::npy::dtype_name(in.array.dtype));
    }
    return in;
  }
  in.picture = naf::image::read(path, name);
  in.frame = true;
  in.view.data = in.picture.pixels.data();
  in.view.height = in.picture.height;
  in.view.width = in.picture.width;
  return in;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

int run(const Args& args) {
  const naf::Backend backend = args.backend.empty() ? naf::backend_for_artifact(args.model) : naf::parse_backend(args.backend);
  const Input image = load_image(args.image);
  const naf::npy::Array features = naf::npy::read(args.features, "features '" + args.features + "'");
  if (features.dtype == naf::npy::DType::kUint8) {
    throw naf::npy::NpyError("features '" + args.features + "': expected float32 or float16, got uint8");
  }

  naf::UpsamplerOptions options;
  options.plugin_path = args.plugin;
  options.threads = args.threads;
  // Picture files decode to RGB; --channel-order describes .npy frames.
  const bool picture = image.frame && image.array.shape.empty();
  options.channel_order = !picture && args.channel_order == "bgr" ? naf::ChannelOrder::kBGR : naf::ChannelOrder::kRGB;
  options.onnxruntime.lean_memory = args.lean_memory;
  options.onnxruntime.library = args.ort_library;
  options.openvino.device = args.ov_device;
  options.openvino.inference_precision = args.ov_precision;
  options.openvino.cache_dir = args.ov_cache_dir;
  options.tensorrt.device = args.cuda_device;
  options.tensorrt.cuda_graph = args.cuda_graph;
  const std::unique_ptr<naf::Upsampler> upsampler = open_upsampler(backend, args.model, options);
  const std::string plugin_note = upsampler->uses_plugin() ? ", plugin " + upsampler->plugin_path() : "";
  std::printf("model %s (backend %s %s%s), threads %d\n", args.model.c_str(), naf::backend_name(backend),
              upsampler->runtime_version().c_str(), plugin_note.c_str(), args.threads);

  const naf::FeaturesView fv{features.data(), features.shape,
                             features.dtype == naf::npy::DType::kFloat16 ? naf::ElementType::kFloat16
                                                                        : naf::ElementType::kFloat32};
  const naf::ImageView iv{static_cast<const float*>(image.array.data()), image.array.shape};
  std::vector<float> out;
  std::vector<int64_t> out_shape;
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(args.repeat));
  for (int r = 0; r < args.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    out_shape = image.frame ? upsampler->run(image.view, fv, out) : upsampler->run(iv, fv, out);
    const auto stop = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
  }
  const std::string source = image.frame ? " from a " + std::to_string(image.view.width) + "x" +
                                               std::to_string(image.view.height) + " " +
                                               (options.channel_order == naf::ChannelOrder::kBGR ? "BGR" : "RGB") + " frame"
                                         : "";
  const std::vector<int64_t> model_image = image.frame ? std::vector<int64_t>{1, 3, upsampler->image_shape()[2],
                                                                               upsampler->image_shape()[3]}
                                                       : image.array.shape;
  std::printf("image %s%s, features %s %s -> upsampled %s\n", shape_string(model_image).c_str(), source.c_str(),
              shape_string(features.shape).c_str(), naf::npy::dtype_name(features.dtype), shape_string(out_shape).c_str());
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::printf("latency: median %.3f ms over %zu run%s (min %.3f, max %.3f; first %.3f)\n", median, n,
              n == 1 ? "" : "s", sorted.front(), sorted.back(), ms.front());
  std::printf("peak RSS: %.1f MiB\n", peak_rss_mib());
  if (!args.save_input.empty()) {
    std::vector<float> normalised;
    if (image.frame) {
      upsampler->preprocess(image.view, normalised);
    } else {
      normalised.assign(iv.data, iv.data + image.array.count());
    }
    naf::npy::write(args.save_input, normalised.data(), model_image, "save-input '" + args.save_input + "'");
    std::printf("wrote %s\n", args.save_input.c_str());
  }
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
    std::fprintf(stderr, "naf-run: error: %s\n\n%s", e.message.c_str(), kUsage);
    return kExitBadInput;
  }
  try {
    return run(args);
  } catch (const naf::RuntimeError& e) {
    std::fprintf(stderr, "naf-run: error: %s\n", e.what());
    return e.kind() == naf::RuntimeError::Kind::kRuntimeUnavailable ? kExitRuntimeMissing : kExitBadInput;
  } catch (const naf::npy::NpyError& e) {
    std::fprintf(stderr, "naf-run: error: %s\n", e.what());
    return kExitBadInput;
  } catch (const naf::image::ImageError& e) {
    std::fprintf(stderr, "naf-run: error: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "naf-run: error: out of memory\n");
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "naf-run: internal error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "naf-run: internal error: unknown exception\n");
  }
  return kExitInternal;
}
