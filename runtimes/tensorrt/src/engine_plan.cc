#include "engine_plan.h"

#include <algorithm>

#include "artifact.h"

namespace naf {
namespace trt {

using detail::in_quotes;
using detail::shape_string;

std::string version_string(int32_t version) {
  if (version <= 0) return "(unknown)";
  return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
}

namespace {

std::string names(const std::vector<const IoTensor*>& tensors) {
  std::string s = "[";
  for (size_t i = 0; i < tensors.size(); ++i) s += (i ? ", " : "") + in_quotes(tensors[i]->name);
  return s + "]";
}

}  // namespace

EnginePlan plan_engine(const EngineDescription& engine, const std::string& engine_path) {
  std::vector<const IoTensor*> inputs, outputs;
  for (const IoTensor& t : engine.tensors) (t.input ? inputs : outputs).push_back(&t);
  const auto find = [](const std::vector<const IoTensor*>& list, const char* name) -> const IoTensor* {
    for (const IoTensor* t : list) {
      if (t->name == name) return t;
    }
    return nullptr;
  };
  const IoTensor* image = find(inputs, "image");
  const IoTensor* features = find(inputs, "features");
  const IoTensor* output = find(outputs, "upsampled");
  if (inputs.size() != 2 || image == nullptr || features == nullptr || outputs.size() != 1 || output == nullptr) {
    throw RuntimeError("model: engine " + in_quotes(engine_path) + " has inputs " + names(inputs) + " and outputs " +
                       names(outputs) + ", expected inputs ['image', 'features'] and output 'upsampled' (an engine of an "
                       "exported NAF model)");
  }
  for (const IoTensor* t : {image, features, output}) {
    if (t->type == DType::kOther) {
      throw RuntimeError("model: engine tensor " + in_quotes(t->name) + " is " + t->type_name +
                         "; the tensorrt backend binds float32 or float16 inputs and output");
    }
    if (!t->on_device) {
      throw RuntimeError("model: engine tensor " + in_quotes(t->name) + " lives in host memory; the tensorrt backend binds "
                         "device tensors only");
    }
    if (t->dims.size() != 4) {
      throw RuntimeError("model: engine tensor " + in_quotes(t->name) + " has shape " + shape_string(t->dims) +
                         ", expected rank 4");
    }
    for (size_t i = 1; i < 4; ++i) {
      if (t->dims[i] < 0) {
        throw RuntimeError("model: engine tensor " + in_quotes(t->name) + " has shape " + shape_string(t->dims) +
                           " (-1: dynamic); only the batch may be dynamic (the sizes are fixed at export)");
      }
    }
  }
  if ((image->dims[0] < 0) != (features->dims[0] < 0)) {
    throw RuntimeError("model: engine inputs 'image' " + shape_string(image->dims) + " and 'features' " +
                       shape_string(features->dims) + " disagree on the batch");
  }
  EnginePlan plan;
  plan.image = image->name;
  plan.features = features->name;
  plan.output = output->name;
  plan.image_type = image->type;
  plan.features_type = features->type;
  plan.output_type = output->type;
  plan.image_shape = image->dims;
  plan.features_shape = features->dims;
  plan.output_shape = output->dims;
  if (image->dims[0] >= 0) {
    plan.min_batch = plan.max_batch = image->dims[0];
  } else {
    if (engine.num_profiles < 1 || engine.profile_min_batch < 1 || engine.profile_max_batch < engine.profile_min_batch) {
      throw RuntimeError("model: engine " + in_quotes(engine_path) + " has a dynamic batch but no usable optimisation "
                         "profile (min " + std::to_string(engine.profile_min_batch) + ", max " +
                         std::to_string(engine.profile_max_batch) + ")");
    }
    plan.min_batch = engine.profile_min_batch;
    plan.max_batch = engine.profile_max_batch;
  }
  return plan;
}

std::string sidecar_path(const std::string& engine_path) { return engine_path + ".json"; }

Sidecar read_sidecar(const std::string& engine_path) {
  Sidecar sidecar;
  const std::string path = sidecar_path(engine_path);
  if (!detail::is_regular_file(path)) return sidecar;
  detail::JsonValue json;
  std::string error;
  if (!detail::read_json_file(path, &json, &error) || json.type != detail::JsonValue::Type::kObject) {
    throw RuntimeError("model: the engine's sidecar " + in_quotes(path) + " is not a JSON object (" +
                       (error.empty() ? "wrong type" : error) + "); delete or regenerate it");
  }
  sidecar.present = true;
  if (const auto* v = json.find("tensorrt")) {
    if (v->type == detail::JsonValue::Type::kString) sidecar.tensorrt = v->string;
  }
  if (const auto* v = json.find("plugin")) {
    sidecar.plugin_recorded = true;
    if (v->type == detail::JsonValue::Type::kString) sidecar.plugin = v->string;
  }
  if (const auto* v = json.find("precision")) {
    if (v->type == detail::JsonValue::Type::kString) sidecar.precision = v->string;
  }
  return sidecar;
}

void check_library_version(int32_t header_version, int32_t library_version) {
  const std::string headers = version_string(header_version), library = version_string(library_version);
  if (library_version / 10000 != header_version / 10000 || library_version < header_version) {
    throw RuntimeError("tensorrt: this backend was compiled against the TensorRT " + headers +
                           " headers but the libnvinfer loaded is TensorRT " + library +
                           "; install TensorRT " + headers + " (or newer within " +
                           std::to_string(header_version / 10000) + ".x) or rebuild the runtime against " + library,
                       RuntimeError::Kind::kRuntimeUnavailable);
  }
}

void check_engine_version(const Sidecar& sidecar, int32_t library_version, const std::string& engine_path) {
  if (sidecar.tensorrt.empty()) return;
  const std::string built = detail::release_of(sidecar.tensorrt), running = version_string(library_version);
  if (!built.empty() && built != running) {
    throw RuntimeError("model: engine " + in_quotes(engine_path) + " was built with TensorRT " + sidecar.tensorrt +
                       " (its sidecar says so), this is TensorRT " + running +
                       "; engines only load in the TensorRT release (and on the GPU model) that built them: rebuild "
                       "it here (naf-export --target tensorrt, or trtexec --onnx=... --saveEngine=...)");
  }
}

std::string deserialize_failure(const std::string& engine_path, int32_t library_version, const Sidecar& sidecar,
                                bool plugin_loaded, const std::string& tensorrt_errors) {
  std::string cause;
  if (!plugin_loaded && (tensorrt_errors.find("CrossScaleNeighborhoodAttention") != std::string::npos ||
                         tensorrt_errors.find("plugin") != std::string::npos)) {
    cause = "it needs the CrossScaleNeighborhoodAttention plugin and libnaf_tensorrt.so is not loaded (pass "
            "UpsamplerOptions::plugin_path / naf-run --plugin)";
  } else if (!sidecar.tensorrt.empty() && detail::release_of(sidecar.tensorrt) != version_string(library_version)) {
    cause = "it was built with TensorRT " + sidecar.tensorrt + ", this is TensorRT " + version_string(library_version);
  } else {
    cause = "it was built by another TensorRT version or for another GPU, or it is not a TensorRT engine";
  }
  return "model: TensorRT " + version_string(library_version) + " cannot deserialize " + in_quotes(engine_path) + ": " +
         cause + (tensorrt_errors.empty() ? "" : " (TensorRT: " + tensorrt_errors + ")");
}

void check_options(const UpsamplerOptions& options, int device_count) {
  if (device_count <= 0) {
    throw RuntimeError("tensorrt: no CUDA device is available (the tensorrt backend needs an NVIDIA GPU and its driver)",
                       RuntimeError::Kind::kRuntimeUnavailable);
  }
  if (options.tensorrt.device < 0 || options.tensorrt.device >= device_count) {
    throw RuntimeError("options: tensorrt.device " + std::to_string(options.tensorrt.device) +
                       " does not exist (this machine has " + std::to_string(device_count) + " CUDA device" +
                       (device_count == 1 ? "" : "s") + ": 0.." + std::to_string(device_count - 1) + ")");
  }
}

std::string choose_plugin(const UpsamplerOptions& options, const Sidecar& sidecar, const std::string& default_path,
                          bool* required) {
  // The sidecar says whether the engine holds the plugin ("plugin": path, or null for none).
  // Without that record nothing tells: a plugin is loaded when one is at hand, and
  // deserialization says whether it was needed.
  const bool recorded = sidecar.present && sidecar.plugin_recorded;
  *required = recorded && !sidecar.plugin.empty();
  if (recorded && sidecar.plugin.empty()) return "";
  if (!options.plugin_path.empty()) return options.plugin_path;
  if (!sidecar.plugin.empty() && detail::is_regular_file(sidecar.plugin)) return sidecar.plugin;
  return default_path;
}

}  // namespace trt
}  // namespace naf
