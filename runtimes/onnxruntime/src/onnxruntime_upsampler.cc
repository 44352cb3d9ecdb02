// naf::OrtUpsampler on ONNX Runtime's C API.
//
// The C API (not the C++ wrapper) is used on purpose: the wrapper binds to the header's API
// version (29 here) and would fail on an older runtime, while this file asks for version 14
// (ONNX Runtime 1.14, the first with RegisterCustomOpsLibrary_V2) and uses nothing newer, so the
// same source builds and runs against the ONNX Runtime releases shipped for Jetson; and
// libonnxruntime is opened at run time (load_api), so the binary is not tied to one release.
#include "naf/onnxruntime_upsampler.h"

#include <dlfcn.h>
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "artifact.h"
#include "pool.h"

namespace naf {
namespace {

using detail::in_quotes;

constexpr uint32_t kMinOrtApiVersion = 14;
constexpr const char* kImage = "image";
constexpr const char* kFeatures = "features";
constexpr const char* kOutput = "upsampled";
constexpr const char* kNafDomain = "naf";
constexpr const char* kPluginFile = "libnaf_onnxruntime.so";
// An object of this library, whose address tells where the library lies (the default plugin and
// a bundled libonnxruntime are next to it).
const char kSelf = 0;

// --- Loading ONNX Runtime ----------------------------------------------------------------------
// libonnxruntime is loaded at run time, not linked: ONNX Runtime versions its exported symbol
// (OrtGetApiBase@VERS_1.32.0), so a linked binary only starts with the exact release it was built
// against, and a mismatch kills the process in the dynamic loader. Loaded here, any release whose
// C API offers version 14 works, and a wrong one is a RuntimeError naming it.
std::mutex g_load_mutex;
std::atomic<const OrtApi*> g_api{nullptr};
const OrtApiBase* g_base = nullptr;
std::string g_loaded_from;

#ifndef NAF_ORT_BUILD_LIBRARY
#define NAF_ORT_BUILD_LIBRARY ""
#endif

std::string version_of(const OrtApiBase* base) {
  return base && base->GetVersionString ? base->GetVersionString() : "(unknown version)";
}

// Loads libonnxruntime once per process: `requested` when given; otherwise the one already in the
// process (e.g. Python's onnxruntime), libonnxruntime.so.1 next to this library (an install
// bundles it there), the library found at build time, then the dynamic loader's search.
const OrtApi& load_api(const std::string& requested) {
  if (const OrtApi* ready = g_api.load()) return *ready;
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (const OrtApi* ready = g_api.load()) return *ready;
  using GetBase = const OrtApiBase* (*)();
  GetBase get_base = nullptr;
  std::string tried;
  const auto try_open = [&](const std::string& path) {
    if (path.empty() || get_base != nullptr) return;
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      tried += "\n  " + path + ": " + (why ? why : "cannot be loaded");
      return;
    }
    get_base = reinterpret_cast<GetBase>(::dlsym(handle, "OrtGetApiBase"));
    if (get_base == nullptr) {
      tried += "\n  " + path + ": no OrtGetApiBase (not an ONNX Runtime library)";
      return;  // left loaded: unloading a library that ran its constructors is not worth the risk
    }
    g_loaded_from = path;
  };
  if (!requested.empty()) {
    try_open(requested);
  } else {
    get_base = reinterpret_cast<GetBase>(::dlsym(RTLD_DEFAULT, "OrtGetApiBase"));
    if (get_base != nullptr) g_loaded_from = "(already loaded in this process)";
    const std::string here = detail::library_dir_of(&kSelf);
    if (!here.empty()) try_open(here + "/libonnxruntime.so.1");
    try_open(NAF_ORT_BUILD_LIBRARY);
    try_open("libonnxruntime.so.1");
  }
  if (get_base == nullptr) {
    throw RuntimeError("onnxruntime: cannot load libonnxruntime (install ONNX Runtime >= 1.14, put "
                       "libonnxruntime.so.1 next to libnaf_runtime_onnxruntime.so or on LD_LIBRARY_PATH, or set "
                       "UpsamplerOptions::onnxruntime.library / naf-run --ort-library); tried:" + tried,
                       RuntimeError::Kind::kRuntimeUnavailable);
  }
  const OrtApiBase* base = get_base();
  const OrtApi* ptr = base && base->GetApi ? base->GetApi(kMinOrtApiVersion) : nullptr;
  if (ptr == nullptr) {
    throw RuntimeError("onnxruntime: ONNX Runtime " + version_of(base) + " (" + g_loaded_from +
                           ") does not provide C API version " + std::to_string(kMinOrtApiVersion) +
                           ": the onnxruntime backend needs ONNX Runtime 1.14 or newer",
                       RuntimeError::Kind::kRuntimeUnavailable);
  }
  g_base = base;
  g_api.store(ptr);
  return *ptr;
}

// The API of the loaded runtime (every OrtUpsampler has loaded it in its constructor).
const OrtApi& api() { return *g_api.load(); }

std::string ort_version_string() {
  try {
    load_api("");
  } catch (const RuntimeError&) {
    return "(not loaded)";
  }
  return version_of(g_base);
}

// "1.16.3" < 1.17: the plugin's minimum (it uses API 17).
bool older_than(const std::string& version, int major, int minor) {
  int v_major = 0, v_minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &v_major, &v_minor) != 2) return false;
  return v_major < major || (v_major == major && v_minor < minor);
}

// Turns a failed OrtStatus into a RuntimeError prefixed with what was being done.
void check(OrtStatus* status, const std::string& context) {
  if (status == nullptr) return;
  const std::string message = api().GetErrorMessage(status);
  api().ReleaseStatus(status);
  throw RuntimeError(context + ": " + message);
}

struct Release {
  void operator()(OrtEnv* p) const { api().ReleaseEnv(p); }
  void operator()(OrtSessionOptions* p) const { api().ReleaseSessionOptions(p); }
  void operator()(OrtSession* p) const { api().ReleaseSession(p); }
  void operator()(OrtMemoryInfo* p) const { api().ReleaseMemoryInfo(p); }
  void operator()(OrtTypeInfo* p) const { api().ReleaseTypeInfo(p); }
  void operator()(OrtValue* p) const { api().ReleaseValue(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Release>;

struct TensorSpec {
  std::string name;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  Shape dims;  // -1: symbolic
};

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    default: return "a non-float32 type";
  }
}

TensorSpec describe(const OrtSession* session, size_t index, bool input) {
  const OrtApi& a = api();
  const char* what = input ? "input" : "output";
  OrtAllocator* allocator = nullptr;
  check(a.GetAllocatorWithDefaultOptions(&allocator), "model: ONNX Runtime allocator");
  TensorSpec spec;
  char* name = nullptr;
  check(input ? a.SessionGetInputName(session, index, allocator, &name)
              : a.SessionGetOutputName(session, index, allocator, &name),
        std::string("model: reading the name of ") + what + " " + std::to_string(index));
  spec.name = name ? name : "";
  check(a.AllocatorFree(allocator, name), "model: ONNX Runtime allocator");

  OrtTypeInfo* raw_info = nullptr;
  check(input ? a.SessionGetInputTypeInfo(session, index, &raw_info)
              : a.SessionGetOutputTypeInfo(session, index, &raw_info),
        std::string("model: reading the type of ") + what + " " + in_quotes(spec.name));
  Owned<OrtTypeInfo> info(raw_info);
  ONNXType onnx_type = ONNX_TYPE_UNKNOWN;
  check(a.GetOnnxTypeFromTypeInfo(info.get(), &onnx_type), "model: reading a type");
  if (onnx_type != ONNX_TYPE_TENSOR) {
    throw RuntimeError(std::string("model: ") + what + " " + in_quotes(spec.name) + " is not a tensor");
  }
  const OrtTensorTypeAndShapeInfo* tensor = nullptr;  // owned by `info`
  check(a.CastTypeInfoToTensorInfo(info.get(), &tensor), "model: reading a tensor type");
  size_t rank = 0;
  check(a.GetTensorElementType(tensor, &spec.type), "model: reading an element type");
  check(a.GetDimensionsCount(tensor, &rank), "model: reading a rank");
  spec.dims.assign(rank, -1);
  if (rank > 0) check(a.GetDimensions(tensor, spec.dims.data(), rank), "model: reading a shape");
  for (int64_t& d : spec.dims) d = d < 0 ? -1 : d;
  return spec;
}

void check_float32(const TensorSpec& spec, const char* role) {
  if (spec.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw RuntimeError(std::string("model: ") + role + " " + in_quotes(spec.name) + " is " + type_name(spec.type) +
                       "; the onnxruntime backend runs models with float32 inputs and output");
  }
}

}  // namespace

struct OrtUpsampler::Impl {
  // Declaration order is release order reversed: the session goes before its options and env.
  Owned<OrtEnv> env;
  Owned<OrtSessionOptions> session_options;
  Owned<OrtSession> session;
  Owned<OrtMemoryInfo> memory;
  bool uses_plugin = false;
  std::string plugin;
  detail::Pool<HostScratch> scratch;
};

OrtUpsampler::OrtUpsampler(const std::string& model_path, const UpsamplerOptions& options)
    : Upsampler(model_path, options), impl_(new Impl) {
  detail::check_artifact_kind(model_path, Backend::kOnnxRuntime);
  const OrtApi& a = load_api(options.onnxruntime.library);
  std::vector<std::string> domains;
  const bool scanned = detail::onnx_domains(model_path, &domains);
  const bool needs_plugin = scanned && std::find(domains.begin(), domains.end(), kNafDomain) != domains.end();
  // An unparseable file (scanned == false) still gets a given plugin, so ONNX Runtime's own error
  // about the file is what the caller sees, not a misleading "plugin needed".
  const std::string plugin = needs_plugin || (!scanned && !options.plugin_path.empty())
                                 ? detail::resolve_plugin_path(options.plugin_path, &kSelf,
                                                               kPluginFile)
                                 : std::string();
  if (needs_plugin && plugin.empty()) {
    throw RuntimeError("plugin: model " + in_quotes(model_path) +
                       " uses naf operations (domain 'naf': the fused attention "
                       "naf::CrossScaleNeighborhoodAttention, GroupNormSiLU, AxialRoPE) and needs the ONNX Runtime "
                       "custom-op library " + std::string(kPluginFile) +
                       ", which is not next to this library: pass its path (UpsamplerOptions::plugin_path, naf-run "
                       "--plugin; built from plugins/onnxruntime, installed with the Python package as "
                       "naf_export/lib/" + kPluginFile + "), or export with --attention portable");
  }
  if (!plugin.empty() && plugin.find('/') != std::string::npos) {
    detail::check_plugin_file(plugin, "RegisterCustomOps", kPluginFile, "ONNX Runtime custom-op library");
  }
  if (needs_plugin && older_than(version_of(g_base), 1, 17)) {
    throw RuntimeError("plugin: " + in_quotes(plugin) + " needs ONNX Runtime 1.17 or newer, this process runs ONNX "
                           "Runtime " + version_of(g_base) + " (" + g_loaded_from + ")",
                       RuntimeError::Kind::kRuntimeUnavailable);
  }

  OrtEnv* env = nullptr;
  check(a.CreateEnv(ORT_LOGGING_LEVEL_WARNING, "naf-runtime", &env), "ONNX Runtime environment");
  impl_->env.reset(env);
  OrtSessionOptions* so = nullptr;
  check(a.CreateSessionOptions(&so), "ONNX Runtime session options");
  impl_->session_options.reset(so);
  check(a.SetIntraOpNumThreads(so, options.threads), "options: threads");
  // The memory pattern pre-plans one block for all intermediates of a run: a third more peak
  // memory at 448x448 (2.06 -> 1.38 GB) for ~4 % speed, a bad trade on an edge device.
  check(a.DisableMemPattern(so), "options: memory pattern");
  if (options.onnxruntime.lean_memory) check(a.DisableCpuMemArena(so), "options: onnxruntime.lean_memory");
  if (!plugin.empty()) {
    check(a.RegisterCustomOpsLibrary_V2(so, plugin.c_str()),
          "plugin: ONNX Runtime " + version_of(g_base) + " cannot load the custom-op library " + in_quotes(plugin));
    impl_->uses_plugin = needs_plugin;
    impl_->plugin = plugin;
  }

  OrtSession* session = nullptr;
  OrtStatus* status = a.CreateSession(env, model_path.c_str(), so, &session);
  if (status != nullptr) {
    std::string message = a.GetErrorMessage(status);
    a.ReleaseStatus(status);
    if (plugin.empty() && message.find("CrossScaleNeighborhoodAttention") != std::string::npos) {
      message += " (the model needs the custom-op library " + std::string(kPluginFile) + ": pass its path)";
    }
    throw RuntimeError("model: ONNX Runtime cannot load " + in_quotes(model_path) + ": " + message);
  }
  impl_->session.reset(session);

  size_t n_inputs = 0, n_outputs = 0;
  check(a.SessionGetInputCount(session, &n_inputs), "model: reading the inputs");
  check(a.SessionGetOutputCount(session, &n_outputs), "model: reading the outputs");
  std::vector<TensorSpec> inputs, outputs;
  for (size_t i = 0; i < n_inputs; ++i) inputs.push_back(describe(session, i, true));
  for (size_t i = 0; i < n_outputs; ++i) outputs.push_back(describe(session, i, false));
  auto list = [](const std::vector<TensorSpec>& specs) {
    std::string s = "[";
    for (size_t i = 0; i < specs.size(); ++i) s += (i ? ", " : "") + in_quotes(specs[i].name);
    return s + "]";
  };
  const auto find = [](const std::vector<TensorSpec>& specs, const char* name) {
    return std::find_if(specs.begin(), specs.end(), [&](const TensorSpec& s) { return s.name == name; });
  };
  if (n_inputs != 2 || find(inputs, kImage) == inputs.end() || find(inputs, kFeatures) == inputs.end()) {
    throw RuntimeError("model: " + in_quotes(model_path) + " has inputs " + list(inputs) +
                       ", expected ['image', 'features'] (an exported NAF model)");
  }
  const auto out_it = find(outputs, kOutput);
  if (out_it == outputs.end()) {
    throw RuntimeError("model: " + in_quotes(model_path) + " has outputs " + list(outputs) +
                       ", expected 'upsampled' (an exported NAF model)");
  }
  const TensorSpec& image = *find(inputs, kImage);
  const TensorSpec& features = *find(inputs, kFeatures);
  check_float32(image, "input");
  check_float32(features, "input");
  check_float32(*out_it, "output");
  set_model_shapes(image.dims, features.dims, out_it->dims);

  OrtMemoryInfo* memory = nullptr;
  check(a.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory), "ONNX Runtime memory info");
  impl_->memory.reset(memory);
}

OrtUpsampler::~OrtUpsampler() = default;

bool OrtUpsampler::uses_plugin() const { return impl_->uses_plugin; }
std::string OrtUpsampler::plugin_path() const { return impl_->plugin; }
std::string OrtUpsampler::onnxruntime_version() { return ort_version_string(); }

void OrtUpsampler::execute(const Request& request) {
  const OrtApi& a = api();
  auto scratch = impl_->scratch.acquire([] { return std::unique_ptr<HostScratch>(new HostScratch); });
  const HostInputs inputs = host_inputs(request, *scratch);
  const Shape image_dims{request.batch, 3, image_shape()[2], image_shape()[3]};
  Shape features_dims = features_shape();
  features_dims[0] = request.batch;
  const Shape out_dims = output_shape(request.batch);
  const auto bytes = [](const Shape& s) {
    size_t n = sizeof(float);
    for (int64_t d : s) n *= static_cast<size_t>(d);
    return n;
  };

  // ORT only reads inputs; its C API takes non-const pointers for both directions. The output is
  // the caller's buffer: ORT writes straight into it (no second full-size buffer).
  OrtValue* raw = nullptr;
  check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), const_cast<float*>(inputs.image), bytes(image_dims),
                                         image_dims.data(), image_dims.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
        "image: creating the input tensor");
  Owned<OrtValue> image_value(raw);
  raw = nullptr;
  check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), const_cast<float*>(inputs.features), bytes(features_dims),
                                         features_dims.data(), features_dims.size(),
                                         ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
        "features: creating the input tensor");
  Owned<OrtValue> features_value(raw);
  raw = nullptr;
  check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), request.out, bytes(out_dims), out_dims.data(),
                                         out_dims.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
        "out: creating the output tensor");
  Owned<OrtValue> output_value(raw);

  const char* input_names[] = {kImage, kFeatures};
  const OrtValue* input_values[] = {image_value.get(), features_value.get()};
  const char* output_names[] = {kOutput};
  OrtValue* output_raw = output_value.get();
  check(a.Run(impl_->session.get(), nullptr, input_names, input_values, 2, output_names, 1, &output_raw),
        "run: ONNX Runtime failed");
}

}  // namespace naf
