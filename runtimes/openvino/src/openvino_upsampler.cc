// naf::OpenVinoUpsampler on OpenVINO's C++ API. Settings follow the Python runner
// (naf_export.runners.openvino.OpenVinoRunner): latency hint, float32 inference precision for
// float models, so both give the same numbers for the same artifact.
#include "naf/openvino_upsampler.h"

#include <openvino/openvino.hpp>

#include <algorithm>
#include <exception>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "artifact.h"
#include "pool.h"

namespace naf {
namespace {

using detail::in_quotes;

constexpr const char* kPluginFile = "libnaf_openvino.so";
const char kSelf = 0;  // its address tells where this library lies

std::string running_release() { return detail::release_of(ov::get_openvino_version().buildNumber); }

// The port whose tensor names include `name`; null when none.
const ov::Output<const ov::Node>* find_port(const std::vector<ov::Output<const ov::Node>>& ports, const char* name) {
  for (const auto& port : ports) {
    const auto& names = port.get_names();
    if (names.count(name)) return &port;
  }
  return nullptr;
}

std::string port_list(const std::vector<ov::Output<const ov::Node>>& ports) {
  std::string s = "[";
  for (size_t i = 0; i < ports.size(); ++i) {
    std::string name;
    try {
      name = ports[i].get_any_name();
    } catch (const std::exception&) {
      name = "?";
    }
    s += (i ? ", " : "") + in_quotes(name);
  }
  return s + "]";
}

Shape partial_dims(const ov::PartialShape& shape) {
  Shape dims;
  if (shape.rank().is_dynamic()) return dims;
  for (const auto& d : shape) dims.push_back(d.is_static() ? d.get_length() : -1);
  return dims;
}

ov::Shape to_ov(const Shape& s) {
  ov::Shape out;
  for (int64_t d : s) out.push_back(static_cast<size_t>(d));
  return out;
}

// The precision naf-export compiles this model with ("auto"), as OpenVinoRunner's precision_hint:
// none (the device default) for INT8 models, bf16 for IRs written for bf16, f32 otherwise.
std::string auto_precision(const std::string& path) {
  if (detail::file_extension(path) == ".xml") {
    if (detail::file_contains(path, "type=\"FakeQuantize\"")) return "default";
    // rt_info <naf_export><precision value="bf16" /> (see runners/openvino.py IR_PRECISION_KEY).
    std::string text;
    {
      std::ifstream in(path);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    static const std::regex bf16("<naf_export>\\s*<precision value=\"bf16\"");
    if (std::regex_search(text, bf16)) return "bf16";
    return "f32";
  }
  return detail::file_contains(path, "QuantizeLinear") ? "default" : "f32";
}

}  // namespace

struct OpenVinoUpsampler::Impl {
  struct Slot {
    ov::InferRequest request;
    HostScratch scratch;
  };
  ov::Core core;
  ov::CompiledModel compiled;
  ov::Output<const ov::Node> image, features, output;
  std::string plugin;
  std::string precision;
  detail::Pool<Slot> slots;
};

OpenVinoUpsampler::OpenVinoUpsampler(const std::string& model_path, const UpsamplerOptions& options)
    : Upsampler(model_path, options), impl_(new Impl) {
  detail::check_artifact_kind(model_path, Backend::kOpenVino);
  const bool ir = detail::file_extension(model_path) == ".xml";
  if (ir) {
    const std::string weights = model_path.substr(0, model_path.size() - 4) + ".bin";
    if (!detail::is_regular_file(weights)) {
      throw RuntimeError("model: the IR weights " + in_quotes(weights) + " next to " + in_quotes(model_path) + " are missing");
    }
  }
  const std::string& precision = options.openvino.inference_precision;
  if (precision != "auto" && precision != "f32" && precision != "bf16" && precision != "f16" && precision != "default") {
    throw RuntimeError("options: openvino.inference_precision must be auto, f32, bf16, f16 or default, got " +
                       in_quotes(precision));
  }
  if (options.openvino.device.empty()) throw RuntimeError("options: openvino.device is empty (e.g. \"CPU\")");

  bool needs_plugin = false;
  if (ir) {
    needs_plugin = detail::ir_uses_naf_ops(model_path);
  } else {
    std::vector<std::string> domains;
    needs_plugin = detail::onnx_domains(model_path, &domains) &&
                   std::find(domains.begin(), domains.end(), "naf") != domains.end();
  }
  ov::Core& core = impl_->core;
  if (needs_plugin) {
    const std::string plugin = detail::resolve_plugin_path(options.plugin_path, &kSelf, kPluginFile);
    if (plugin.empty()) {
      throw RuntimeError("plugin: model " + in_quotes(model_path) +
                         " uses naf operations (naf_opset1 / domain 'naf') and needs the OpenVINO extension library " +
                         std::string(kPluginFile) +
                         ", which is not next to this library: pass its path (UpsamplerOptions::plugin_path, naf-run "
                         "--plugin), or export with --attention portable");
    }
    if (plugin.find('/') != std::string::npos) {
      detail::check_plugin_file(plugin, "create_extensions", kPluginFile, "OpenVINO extension library");
      // An extension only loads into the release it was compiled against: say so plainly
      // instead of OpenVINO's symbol or ABI error.
      detail::JsonValue info;
      std::string error;
      if (detail::read_json_file(detail::directory_of(plugin) + "/naf_openvino.json", &info, &error)) {
        const detail::JsonValue* built = info.find("openvino_version");
        if (built != nullptr && built->type == detail::JsonValue::Type::kString && built->string != running_release()) {
          throw RuntimeError("plugin: " + in_quotes(plugin) + " was built against OpenVINO " + built->string +
                             ", but this process runs OpenVINO " + running_release() +
                             "; rebuild the extension against " + running_release() + " (or run the OpenVINO it was "
                             "built for)");
        }
      }
    }
    try {
      core.add_extension(plugin);
    } catch (const std::exception& e) {
      throw RuntimeError("plugin: OpenVINO " + running_release() + " cannot load the extension library " +
                         in_quotes(plugin) + ": " + e.what());
    }
    impl_->plugin = plugin;
  }

  ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
  impl_->precision = precision == "auto" ? auto_precision(model_path) : precision;
  if (impl_->precision == "f32") config.emplace(ov::hint::inference_precision(ov::element::f32));
  if (impl_->precision == "bf16") config.emplace(ov::hint::inference_precision(ov::element::bf16));
  if (impl_->precision == "f16") config.emplace(ov::hint::inference_precision(ov::element::f16));
  if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
  try {
    if (!options.openvino.cache_dir.empty()) core.set_property(ov::cache_dir(options.openvino.cache_dir));
  } catch (const std::exception& e) {
    throw RuntimeError("options: openvino.cache_dir " + in_quotes(options.openvino.cache_dir) + ": " + e.what());
  }
  std::shared_ptr<ov::Model> model;
  try {
    model = core.read_model(model_path);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    std::string hint;
    if (what.find("GroupNormSiLU") != std::string::npos) {
      hint = " (GroupNormSiLU is an ONNX Runtime-only operation: this is an export for --target onnxruntime; "
             "run it with the onnxruntime backend, or export with --target openvino)";
    } else if (impl_->plugin.empty() && what.find("CrossScaleNeighborhoodAttention") != std::string::npos) {
      hint = " (the model needs the extension library " + std::string(kPluginFile) + ")";
    }
    throw RuntimeError("model: OpenVINO cannot read " + in_quotes(model_path) + ": " + what + hint);
  }
  try {
    impl_->compiled = core.compile_model(model, options.openvino.device, config);
  } catch (const std::exception& e) {
    throw RuntimeError("model: OpenVINO cannot compile " + in_quotes(model_path) + " for " + options.openvino.device +
                       ": " + e.what());
  }
  const auto inputs = impl_->compiled.inputs();
  const auto outputs = impl_->compiled.outputs();
  const auto* image = find_port(inputs, "image");
  const auto* features = find_port(inputs, "features");
  const auto* output = find_port(outputs, "upsampled");
  if (inputs.size() != 2 || image == nullptr || features == nullptr) {
    throw RuntimeError("model: " + in_quotes(model_path) + " has inputs " + port_list(inputs) +
                       ", expected ['image', 'features'] (an exported NAF model)");
  }
  if (output == nullptr) {
    throw RuntimeError("model: " + in_quotes(model_path) + " has outputs " + port_list(outputs) +
                       ", expected 'upsampled' (an exported NAF model)");
  }
  for (const auto* port : {image, features, output}) {
    if (port->get_element_type() != ov::element::f32) {
      throw RuntimeError("model: " + in_quotes(port->get_any_name()) + " is " + port->get_element_type().get_type_name() +
                         "; the openvino backend runs models with float32 inputs and output");
    }
  }
  impl_->image = *image;
  impl_->features = *features;
  impl_->output = *output;
  set_model_shapes(partial_dims(image->get_partial_shape()), partial_dims(features->get_partial_shape()),
                   partial_dims(output->get_partial_shape()));
  // One request up front: a model that cannot run fails here, not at the first frame.
  try {
    std::unique_ptr<Impl::Slot> slot(new Impl::Slot{impl_->compiled.create_infer_request(), {}});
    auto lease = impl_->slots.acquire([&] { return std::move(slot); });
  } catch (const std::exception& e) {
    throw RuntimeError("model: OpenVINO cannot create an infer request for " + in_quotes(model_path) + ": " + e.what());
  }
}

OpenVinoUpsampler::~OpenVinoUpsampler() = default;

bool OpenVinoUpsampler::uses_plugin() const { return !impl_->plugin.empty(); }
std::string OpenVinoUpsampler::plugin_path() const { return impl_->plugin; }
std::string OpenVinoUpsampler::openvino_version() { return running_release(); }
std::string OpenVinoUpsampler::inference_precision() const { return impl_->precision; }

void OpenVinoUpsampler::execute(const Request& request) {
  auto slot = impl_->slots.acquire([this] {
    try {
      return std::unique_ptr<Impl::Slot>(new Impl::Slot{impl_->compiled.create_infer_request(), {}});
    } catch (const std::exception& e) {
      throw RuntimeError(std::string("run: OpenVINO cannot create an infer request: ") + e.what());
    }
  });
  const HostInputs inputs = host_inputs(request, slot->scratch);
  Shape features_shape = this->features_shape();
  features_shape[0] = request.batch;
  try {
    // Tensors over the caller's memory: no copies on this side (ov::Tensor does not own them).
    const ov::Tensor image(ov::element::f32, to_ov({request.batch, 3, image_shape()[2], image_shape()[3]}),
                           const_cast<float*>(inputs.image));
    const ov::Tensor features(ov::element::f32, to_ov(features_shape), const_cast<float*>(inputs.features));
    const ov::Tensor output(ov::element::f32, to_ov(output_shape(request.batch)), request.out);
    slot->request.set_tensor(impl_->image, image);
    slot->request.set_tensor(impl_->features, features);
    slot->request.set_tensor(impl_->output, output);
    slot->request.infer();
  } catch (const std::exception& e) {
    throw RuntimeError(std::string("run: OpenVINO failed running ") + in_quotes(artifact()) + ": " + e.what());
  }
}

}  // namespace naf
