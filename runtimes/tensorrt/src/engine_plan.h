// Host-side logic of the TensorRT backend, kept free of TensorRT and CUDA so it is compiled and
// tested everywhere (runtimes/tests/runtime_unit_tests.cc feeds it fake engine descriptions):
// option checks, the engine's .json sidecar, version checks, which plugin to load, and the checks
// of the engine's I/O tensors (names, modes, types, shapes, optimisation profile) that turn into
// the binding plan the backend follows. Every error is a naf::RuntimeError naming its argument.
// Internal header (not installed).
#ifndef NAF_RUNTIMES_TENSORRT_ENGINE_PLAN_H_
#define NAF_RUNTIMES_TENSORRT_ENGINE_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "naf/upsampler.h"

namespace naf {
namespace trt {

// TensorRT's version integers are major * 10000 + minor * 100 + patch (NV_TENSORRT_VERSION,
// getInferLibVersion()).
std::string version_string(int32_t version);

enum class DType { kFloat32, kFloat16, kOther };

// What the backend reads from an ICudaEngine, in plain types.
struct IoTensor {
  std::string name;
  bool input = false;
  DType type = DType::kOther;
  std::string type_name;  // for messages ("int8", ...)
  Shape dims;             // -1: dynamic
  bool on_device = true;  // TensorLocation::kDEVICE
};
struct EngineDescription {
  std::vector<IoTensor> tensors;
  // Batch range of optimisation profile 0 for the inputs (min, max of dimension 0); 0 when the
  // engine has no dynamic dimension.
  int64_t profile_min_batch = 0, profile_max_batch = 0;
  int32_t num_profiles = 0;
};

// The binding plan: which tensor is which, their types and the engine's shapes.
struct EnginePlan {
  std::string image, features, output;  // tensor names ("image", "features", "upsampled")
  DType image_type = DType::kFloat32, features_type = DType::kFloat32, output_type = DType::kFloat32;
  Shape image_shape, features_shape, output_shape;  // -1: the dynamic batch
  int64_t min_batch = 1, max_batch = 1;
};
EnginePlan plan_engine(const EngineDescription& engine, const std::string& engine_path);

// <engine>.json written by naf-export next to each engine.
struct Sidecar {
  bool present = false;
  std::string tensorrt;   // the TensorRT version that built the engine ("10.14.1.48"), may be empty
  bool plugin_recorded = false;
  std::string plugin;     // the plugin library used at build time; empty with plugin_recorded: none
  std::string precision;  // fp32, fp16, int8
};
std::string sidecar_path(const std::string& engine_path);
// Reads the sidecar when present; a sidecar that is not valid JSON raises naming `model`.
Sidecar read_sidecar(const std::string& engine_path);

// Refuses a TensorRT library older than the headers the backend was compiled with, or of another
// major version (its C++ interface differs): `header_version` is NV_TENSORRT_VERSION,
// `library_version` getInferLibVersion().
void check_library_version(int32_t header_version, int32_t library_version);
// Refuses an engine whose sidecar says it was built by another TensorRT release than the running
// one (engines only load in the release that built them).
void check_engine_version(const Sidecar& sidecar, int32_t library_version, const std::string& engine_path);
// The message for an engine TensorRT could not deserialize: names `model`, the likely cause
// (version, GPU, missing plugin) and TensorRT's own errors.
std::string deserialize_failure(const std::string& engine_path, int32_t library_version, const Sidecar& sidecar,
                                bool plugin_loaded, const std::string& tensorrt_errors);

// Options the backend reads: the CUDA device ordinal must exist (`device_count` from CUDA).
void check_options(const UpsamplerOptions& options, int device_count);

// Which plugin library to load: options.plugin_path, else the one recorded in the sidecar if it
// still exists, else `default_path` (libnaf_tensorrt.so next to the backend library, may be "").
// Returns "" when no plugin is needed (the sidecar records none) or none was found; `required`
// tells whether the engine is known to need one.
std::string choose_plugin(const UpsamplerOptions& options, const Sidecar& sidecar, const std::string& default_path,
                          bool* required);

}  // namespace trt
}  // namespace naf

#endif  // NAF_RUNTIMES_TENSORRT_ENGINE_PLAN_H_
