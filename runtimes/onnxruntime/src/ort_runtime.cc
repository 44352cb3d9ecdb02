// naf::OrtUpsampler on ONNX Runtime's C API.
//
// The C API (not the C++ wrapper) is used on purpose: the wrapper binds to the header's API
// version (29 here) and would fail on an older runtime, while this file asks for version 14
// (ONNX Runtime 1.14, the first with RegisterCustomOpsLibrary_V2) and uses nothing newer, so the
// same source builds and runs against the ONNX Runtime releases shipped for Jetson.
#include "naf/ort_runtime.h"

#include <onnxruntime_c_api.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace naf {
namespace {

constexpr uint32_t kMinOrtApiVersion = 14;
constexpr const char* kImage = "image";
constexpr const char* kFeatures = "features";
constexpr const char* kOutput = "upsampled";
constexpr const char* kNafDomain = "naf";
constexpr const char* kPluginFile = "libnaf_onnxruntime.so";

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string ort_version_string() {
  const OrtApiBase* base = OrtGetApiBase();
  return base && base->GetVersionString ? base->GetVersionString() : "(unknown version)";
}

const OrtApi& api() {
  static const OrtApi* const ptr = [] {
    const OrtApiBase* base = OrtGetApiBase();
    return base ? base->GetApi(kMinOrtApiVersion) : nullptr;
  }();
  if (ptr == nullptr) {
    throw RuntimeError("ONNX Runtime " + ort_version_string() + " does not provide C API version " +
                       std::to_string(kMinOrtApiVersion) + ": naf_ort_runtime needs ONNX Runtime 1.14 or newer");
  }
  return *ptr;
}

// Turns a failed OrtStatus into a RuntimeError prefixed with what was being done.
void check(OrtStatus* status, const std::string& context) {
  if (status == nullptr) return;
  const std::string message = api().GetErrorMessage(status);
  api().ReleaseStatus(status);
  throw RuntimeError(context + ": " + message);
}

// unique_ptr deleter for every ORT handle type used here.
struct Release {
  void operator()(OrtEnv* p) const { api().ReleaseEnv(p); }
  void operator()(OrtSessionOptions* p) const { api().ReleaseSessionOptions(p); }
  void operator()(OrtSession* p) const { api().ReleaseSession(p); }
  void operator()(OrtMemoryInfo* p) const { api().ReleaseMemoryInfo(p); }
  void operator()(OrtTypeInfo* p) const { api().ReleaseTypeInfo(p); }
  void operator()(OrtValue* p) const { api().ReleaseValue(p); }
  void operator()(OrtTensorTypeAndShapeInfo* p) const { api().ReleaseTensorTypeAndShapeInfo(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Release>;

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// --- Which operator-set domains does the model import? --------------------------------------
// A minimal protobuf scan of ModelProto's top-level fields (opset_import is field 8, its domain
// field 1). Length-delimited fields other than opset_import, the graph above all, are skipped by
// seeking, so this reads a few hundred bytes of any model. Returns false when the file is not a
// well-formed protobuf message; the caller then lets ONNX Runtime report the problem.
class ProtoReader {
 public:
  ProtoReader(std::istream& in, uint64_t size) : in_(in), size_(size) {}
  bool done() const { return pos_ >= size_; }
  bool varint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      unsigned char byte = 0;
      if (!bytes(&byte, 1)) return false;
      *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;  // more than 10 bytes: corrupt
  }
  bool bytes(void* dst, uint64_t n) {
    if (n > size_ - pos_) return false;
    if (!in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(n))) return false;
    pos_ += n;
    return true;
  }
  bool skip(uint64_t n) {
    if (n > size_ - pos_) return false;
    pos_ += n;
    return static_cast<bool>(in_.seekg(static_cast<std::streamoff>(pos_)));
  }
  // Skips one field of wire type `wire` whose tag was just read.
  bool skip_field(uint64_t wire) {
    uint64_t n = 0;
    switch (wire) {
      case 0: return varint(&n);
      case 1: return skip(8);
      case 2: return varint(&n) && skip(n);
      case 5: return skip(4);
      default: return false;  // groups (3, 4) do not occur in ONNX files
    }
  }

 private:
  std::istream& in_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Domain of one serialized OperatorSetIdProto (field 1, string; absent means "").
bool opset_domain(const std::string& msg, std::string* domain) {
  domain->clear();
  size_t pos = 0;
  auto varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64 && pos < msg.size(); shift += 7) {
      const auto byte = static_cast<unsigned char>(msg[pos++]);
      *v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  };
  while (pos < msg.size()) {
    uint64_t tag = 0, n = 0;
    if (!varint(&tag)) return false;
    const uint64_t wire = tag & 7;
    if (wire == 0) {
      if (!varint(&n)) return false;
    } else if (wire == 2) {
      if (!varint(&n) || n > msg.size() - pos) return false;
      if ((tag >> 3) == 1) domain->assign(msg, pos, n);
      pos += n;
    } else if (wire == 1 || wire == 5) {
      n = wire == 1 ? 8 : 4;
      if (n > msg.size() - pos) return false;
      pos += n;
    } else {
      return false;
    }
  }
  return true;
}

bool model_domains(const std::string& path, std::vector<std::string>* domains) {
  std::ifstream in(path, std::ios::binary);
  if (!in || !in.seekg(0, std::ios::end)) return false;
  const std::streamoff size = in.tellg();
  if (size <= 0 || !in.seekg(0)) return false;
  ProtoReader reader(in, static_cast<uint64_t>(size));
  constexpr uint64_t kOpsetImportField = 8;
  constexpr uint64_t kMaxOpsetEntry = 4096;  // a domain name and a version: tiny
  while (!reader.done()) {
    uint64_t tag = 0;
    if (!reader.varint(&tag)) return false;
    const uint64_t field = tag >> 3, wire = tag & 7;
    if (field == kOpsetImportField && wire == 2) {
      uint64_t n = 0;
      if (!reader.varint(&n) || n > kMaxOpsetEntry) return false;
      std::string msg(static_cast<size_t>(n), '\0');
      std::string domain;
      if (!reader.bytes(&msg[0], n) || !opset_domain(msg, &domain)) return false;
      domains->push_back(domain);
    } else if (field == 0 || !reader.skip_field(wire)) {
      return false;
    }
  }
  return true;
}

// --- Shapes -----------------------------------------------------------------------------------
struct TensorSpec {
  std::string name;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;  // -1: symbolic
};

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// The model's shape with symbolic dimensions written as the letter of `form`, e.g. (B, 3, 64, 64).
std::string expected_string(const std::vector<int64_t>& dims, const char* const* form) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    s += i ? ", " : "";
    s += dims[i] < 0 ? std::string(form[i]) : std::to_string(dims[i]);
  }
  return s + ")";
}

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
        std::string("model: reading the type of ") + what + " " + quoted(spec.name));
  Owned<OrtTypeInfo> info(raw_info);
  ONNXType onnx_type = ONNX_TYPE_UNKNOWN;
  check(a.GetOnnxTypeFromTypeInfo(info.get(), &onnx_type), "model: reading a type");
  if (onnx_type != ONNX_TYPE_TENSOR) {
    throw RuntimeError(std::string("model: ") + what + " " + quoted(spec.name) + " is not a tensor");
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

const char* const kImageForm[] = {"B", "3", "Hi", "Wi"};
const char* const kFeaturesForm[] = {"B", "C", "h", "w"};
const char* const kOutputForm[] = {"B", "C", "H", "W"};

void check_model_tensor(const TensorSpec& spec, const char* role, const char* const* form) {
  if (spec.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    throw RuntimeError(std::string("model: ") + role + " " + quoted(spec.name) + " is " + type_name(spec.type) +
                       "; naf_ort_runtime runs float32 models only");
  }
  if (spec.dims.size() != 4) {
    throw RuntimeError(std::string("model: ") + role + " " + quoted(spec.name) + " has rank " +
                       std::to_string(spec.dims.size()) + ", expected 4 " + expected_string({-1, -1, -1, -1}, form));
  }
}

// Number of elements of a caller-given shape, each dimension > 0, with overflow checked.
size_t element_count(const std::vector<int64_t>& dims, const char* name) {
  size_t count = 1;
  const size_t limit = static_cast<size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / sizeof(float);
  for (int64_t d : dims) {
    if (d <= 0) throw RuntimeError(std::string(name) + ": every dimension must be > 0, got " + dims_string(dims));
    if (static_cast<uint64_t>(d) > limit / count) {
      throw RuntimeError(std::string(name) + ": shape " + dims_string(dims) + " is too large");
    }
    count *= static_cast<size_t>(d);
  }
  return count;
}

void check_input_shape(const char* name, const std::vector<int64_t>& expected, const char* const* form,
                       const std::vector<int64_t>& got) {
  bool ok = got.size() == expected.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = expected[i] < 0 ? got[i] > 0 : got[i] == expected[i];
  if (!ok) {
    std::string any;
    for (size_t i = 0; i < expected.size(); ++i) {
      if (expected[i] < 0) any += std::string(any.empty() ? " (" : ", ") + form[i] + " any > 0";
    }
    throw RuntimeError(std::string(name) + ": expected a float32 tensor of shape " +
                       expected_string({-1, -1, -1, -1}, form) + " = " + expected_string(expected, form) +
                       (any.empty() ? "" : any + ")") + " for this model, got " + dims_string(got));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
struct OrtUpsampler::Impl {
  // Declaration order is release order reversed: the session goes before its options and env.
  Owned<OrtEnv> env;
  Owned<OrtSessionOptions> session_options;
  Owned<OrtSession> session;
  Owned<OrtMemoryInfo> memory;
  std::vector<int64_t> image, features, output;
  bool uses_plugin = false;
};

OrtUpsampler::OrtUpsampler(const std::string& model_path, const std::string& plugin_path,
                           const OrtUpsamplerOptions& options)
    : impl_(new Impl) {
  const OrtApi& a = api();
  if (options.intra_op_threads < 0) {
    throw RuntimeError("options: intra_op_threads must be >= 0 (0 = ONNX Runtime's default), got " +
                       std::to_string(options.intra_op_threads));
  }
  if (model_path.empty()) throw RuntimeError("model: no model path given");
  if (!is_regular_file(model_path)) {
    throw RuntimeError("model: no such file " + quoted(model_path) + " (expected an exported NAF .onnx model)");
  }
  std::vector<std::string> domains;
  const bool scanned = model_domains(model_path, &domains);
  const bool needs_plugin = scanned && std::find(domains.begin(), domains.end(), kNafDomain) != domains.end();
  if (needs_plugin && plugin_path.empty()) {
    throw RuntimeError("plugin: model " + quoted(model_path) +
                       " uses the custom operator naf::CrossScaleNeighborhoodAttention (fused attention) and needs "
                       "the ONNX Runtime custom-op library " + kPluginFile +
                       ": pass its path (naf-ort-run --plugin; built from plugins/onnxruntime, installed with the "
                       "Python package as naf_export/lib/" + kPluginFile + "), or export with --attention portable");
  }

  OrtEnv* env = nullptr;
  check(a.CreateEnv(ORT_LOGGING_LEVEL_WARNING, "naf-ort-runtime", &env), "ONNX Runtime environment");
  impl_->env.reset(env);
  OrtSessionOptions* so = nullptr;
  check(a.CreateSessionOptions(&so), "ONNX Runtime session options");
  impl_->session_options.reset(so);
  check(a.SetIntraOpNumThreads(so, options.intra_op_threads), "options: intra_op_threads");
  // The memory pattern pre-plans one block for all intermediates of a run: a third more peak
  // memory at 448x448 (2.06 -> 1.38 GB) for ~4 % speed, a bad trade on an edge device.
  check(a.DisableMemPattern(so), "options: memory pattern");
  if (options.lean_memory) check(a.DisableCpuMemArena(so), "options: lean_memory");

  // An unparseable file (scanned == false) still gets the plugin, so ONNX Runtime's own error
  // about the file is what the caller sees, not a misleading "plugin needed".
  const bool register_plugin = !plugin_path.empty() && (needs_plugin || !scanned);
  if (register_plugin) {
    const bool bare_name = plugin_path.find('/') == std::string::npos;
    if (!bare_name && !is_regular_file(plugin_path)) {
      throw RuntimeError("plugin: no such file " + quoted(plugin_path) + " (expected the custom-op library " +
                         kPluginFile + ")");
    }
    // dlopen searches the library path for bare names and never the working directory: a
    // file in the working directory is what a user means by a bare name.
    const std::string to_load = bare_name && is_regular_file(plugin_path) ? "./" + plugin_path : plugin_path;
    check(a.RegisterCustomOpsLibrary_V2(so, to_load.c_str()),
          "plugin: ONNX Runtime cannot load the custom-op library " + quoted(plugin_path));
    impl_->uses_plugin = needs_plugin;
  }

  OrtSession* session = nullptr;
  OrtStatus* status = a.CreateSession(env, model_path.c_str(), so, &session);
  if (status != nullptr) {
    std::string message = a.GetErrorMessage(status);
    a.ReleaseStatus(status);
    if (!register_plugin && message.find("CrossScaleNeighborhoodAttention") != std::string::npos) {
      message += " (the model needs the custom-op library " + std::string(kPluginFile) + ": pass its path)";
    }
    throw RuntimeError("model: ONNX Runtime cannot load " + quoted(model_path) + ": " + message);
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
    for (size_t i = 0; i < specs.size(); ++i) s += (i ? ", " : "") + quoted(specs[i].name);
    return s + "]";
  };
  const auto find = [](const std::vector<TensorSpec>& specs, const char* name) {
    return std::find_if(specs.begin(), specs.end(), [&](const TensorSpec& s) { return s.name == name; });
  };
  if (n_inputs != 2 || find(inputs, kImage) == inputs.end() || find(inputs, kFeatures) == inputs.end()) {
    throw RuntimeError("model: " + quoted(model_path) + " has inputs " + list(inputs) +
                       ", expected ['image', 'features'] (an exported NAF model)");
  }
  const auto out_it = find(outputs, kOutput);
  if (out_it == outputs.end()) {
    throw RuntimeError("model: " + quoted(model_path) + " has outputs " + list(outputs) +
                       ", expected 'upsampled' (an exported NAF model)");
  }
  const TensorSpec& image = *find(inputs, kImage);
  const TensorSpec& features = *find(inputs, kFeatures);
  check_model_tensor(image, "input", kImageForm);
  check_model_tensor(features, "input", kFeaturesForm);
  check_model_tensor(*out_it, "output", kOutputForm);
  if (image.dims[1] >= 0 && image.dims[1] != 3) {
    throw RuntimeError("model: input 'image' has " + std::to_string(image.dims[1]) + " channels, expected 3 (RGB)");
  }
  impl_->image = image.dims;
  impl_->features = features.dims;
  impl_->output = out_it->dims;

  OrtMemoryInfo* memory = nullptr;
  check(a.CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory), "ONNX Runtime memory info");
  impl_->memory.reset(memory);
}

OrtUpsampler::~OrtUpsampler() = default;
OrtUpsampler::OrtUpsampler(OrtUpsampler&&) noexcept = default;
OrtUpsampler& OrtUpsampler::operator=(OrtUpsampler&&) noexcept = default;

const std::vector<int64_t>& OrtUpsampler::image_shape() const { return impl_->image; }
const std::vector<int64_t>& OrtUpsampler::features_shape() const { return impl_->features; }
const std::vector<int64_t>& OrtUpsampler::output_shape() const { return impl_->output; }
bool OrtUpsampler::uses_plugin() const { return impl_->uses_plugin; }
std::string OrtUpsampler::onnxruntime_version() { return ort_version_string(); }

void OrtUpsampler::run(const float* image, const std::vector<int64_t>& image_shape, const float* features,
                       const std::vector<int64_t>& features_shape, std::vector<float>& out,
                       std::vector<int64_t>& out_shape) const {
  if (!impl_) throw RuntimeError("run: this OrtUpsampler was moved from");
  const OrtApi& a = api();
  check_input_shape(kImage, impl_->image, kImageForm, image_shape);
  check_input_shape(kFeatures, impl_->features, kFeaturesForm, features_shape);
  if (image_shape[0] != features_shape[0]) {
    throw RuntimeError("features: batch size " + std::to_string(features_shape[0]) + " differs from the image's " +
                       std::to_string(image_shape[0]));
  }
  const size_t image_count = element_count(image_shape, kImage);
  const size_t features_count = element_count(features_shape, kFeatures);
  if (image == nullptr) throw RuntimeError("image: null data pointer");
  if (features == nullptr) throw RuntimeError("features: null data pointer");

  // ORT only reads inputs; its C API takes non-const pointers for both directions.
  OrtValue* raw = nullptr;
  check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), const_cast<float*>(image), image_count * sizeof(float),
                                         image_shape.data(), image_shape.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                                         &raw),
        "image: creating the input tensor");
  Owned<OrtValue> image_value(raw);
  raw = nullptr;
  check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), const_cast<float*>(features),
                                         features_count * sizeof(float), features_shape.data(), features_shape.size(),
                                         ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
        "features: creating the input tensor");
  Owned<OrtValue> features_value(raw);

  // When the output shape is known (static apart from the batch), ORT writes straight into
  // `out`: no second full-size buffer, which matters at large output sizes.
  std::vector<int64_t> expected_out = impl_->output;
  if (expected_out[0] < 0) expected_out[0] = image_shape[0];
  const bool known = std::all_of(expected_out.begin(), expected_out.end(), [](int64_t d) { return d > 0; });
  Owned<OrtValue> output_value;
  if (known) {
    const size_t count = element_count(expected_out, "output");
    try {
      out.resize(count);
    } catch (const std::bad_alloc&) {
      throw RuntimeError("output: cannot allocate " + std::to_string(count * sizeof(float)) + " bytes for shape " +
                         dims_string(expected_out));
    }
    raw = nullptr;
    check(a.CreateTensorWithDataAsOrtValue(impl_->memory.get(), out.data(), count * sizeof(float),
                                           expected_out.data(), expected_out.size(),
                                           ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &raw),
          "output: creating the output tensor");
    output_value.reset(raw);
  }

  const char* input_names[] = {kImage, kFeatures};
  const OrtValue* input_values[] = {image_value.get(), features_value.get()};
  const char* output_names[] = {kOutput};
  OrtValue* output_raw = output_value.release();  // Run keeps a given output, or creates one
  OrtStatus* status = a.Run(impl_->session.get(), nullptr, input_names, input_values, 2, output_names, 1, &output_raw);
  output_value.reset(output_raw);
  check(status, "run: ONNX Runtime failed");

  if (known) {
    out_shape = expected_out;
    return;
  }
  OrtTensorTypeAndShapeInfo* raw_shape = nullptr;
  check(a.GetTensorTypeAndShape(output_value.get(), &raw_shape), "output: reading the shape");
  Owned<OrtTensorTypeAndShapeInfo> shape_info(raw_shape);
  size_t rank = 0, count = 0;
  check(a.GetDimensionsCount(shape_info.get(), &rank), "output: reading the rank");
  std::vector<int64_t> dims(rank);
  if (rank > 0) check(a.GetDimensions(shape_info.get(), dims.data(), rank), "output: reading the shape");
  check(a.GetTensorShapeElementCount(shape_info.get(), &count), "output: reading the size");
  void* data = nullptr;
  check(a.GetTensorMutableData(output_value.get(), &data), "output: reading the data");
  try {
    out.assign(static_cast<const float*>(data), static_cast<const float*>(data) + count);
  } catch (const std::bad_alloc&) {
    throw RuntimeError("output: cannot allocate " + std::to_string(count * sizeof(float)) + " bytes");
  }
  out_shape = dims;
}

}  // namespace naf
