// naf::Upsampler: the checks every backend shares (shapes, pointers, the output buffer) and the
// host-side conversions (frame preprocessing, float16 features), so each backend only runs its
// runtime on buffers that are already known to be right.
#include "naf/upsampler.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <new>
#include <utility>

#include "artifact.h"
#include "preprocess.h"

namespace naf {

using detail::in_quotes;
using detail::shape_string;

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::kOnnxRuntime: return "onnxruntime";
    case Backend::kOpenVino: return "openvino";
    case Backend::kTensorRt: return "tensorrt";
  }
  return "unknown";
}

Backend parse_backend(const std::string& name) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "onnxruntime" || n == "ort") return Backend::kOnnxRuntime;
  if (n == "openvino" || n == "ov") return Backend::kOpenVino;
  if (n == "tensorrt" || n == "trt") return Backend::kTensorRt;
  throw RuntimeError("backend: unknown backend " + in_quotes(name) + " (expected onnxruntime, openvino or tensorrt)");
}

Backend backend_for_artifact(const std::string& path) {
  const std::string ext = detail::file_extension(path);
  if (ext == ".onnx") return Backend::kOnnxRuntime;
  if (ext == ".xml") return Backend::kOpenVino;
  if (ext == ".engine" || ext == ".plan" || ext == ".trt") return Backend::kTensorRt;
  const std::string what = detail::describe_non_model(path);
  throw RuntimeError("model: cannot tell the backend of " + in_quotes(path) + (what.empty() ? "" : " (it is " + what + ")") +
                     ": expected an .onnx (ONNX Runtime), .xml (OpenVINO IR) or .engine (TensorRT) file");
}

namespace {

constexpr const char* kImageForm[] = {"B", "3", "Hi", "Wi"};
constexpr const char* kFeaturesForm[] = {"B", "C", "h", "w"};
constexpr const char* kOutputForm[] = {"B", "C", "H", "W"};

// The model's shape with symbolic dimensions written as letters, e.g. (B, 3, 64, 64).
std::string expected_string(const Shape& dims, const char* const* form) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    s += i ? ", " : "";
    s += dims[i] < 0 ? std::string(form[i]) : std::to_string(dims[i]);
  }
  return s + ")";
}

std::string form_string(const char* const* form) { return expected_string({-1, -1, -1, -1}, form); }

// Element count of a shape whose dimensions are all > 0, overflow-checked against what a buffer
// of `element_bytes`-sized elements can address.
size_t element_count(const Shape& dims, const char* name, size_t element_bytes) {
  size_t count = 1;
  const size_t limit = static_cast<size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / element_bytes;
  for (int64_t d : dims) {
    if (d <= 0) throw RuntimeError(std::string(name) + ": every dimension must be > 0, got " + shape_string(dims));
    if (static_cast<uint64_t>(d) > limit / count) {
      throw RuntimeError(std::string(name) + ": shape " + shape_string(dims) + " is too large");
    }
    count *= static_cast<size_t>(d);
  }
  return count;
}

void check_input_shape(const char* name, const char* type, const Shape& expected, const char* const* form,
                       const Shape& got) {
  bool ok = got.size() == expected.size();
  for (size_t i = 0; ok && i < got.size(); ++i) ok = expected[i] < 0 ? got[i] > 0 : got[i] == expected[i];
  if (ok) return;
  std::string any;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] < 0) any += std::string(any.empty() ? " (" : ", ") + form[i] + " any > 0";
  }
  throw RuntimeError(std::string(name) + ": expected a " + type + " tensor of shape " + form_string(form) + " = " +
                     expected_string(expected, form) + (any.empty() ? "" : any + ")") + " for this model, got " +
                     shape_string(got));
}

// Largest frame accepted: the Python tool's decompression-bomb limit (Pillow's, ~89 MP).
constexpr int64_t kMaxFramePixels = 89478485;

}  // namespace

Upsampler::Upsampler(std::string artifact, UpsamplerOptions options)
    : artifact_(std::move(artifact)), options_(std::move(options)) {
  if (options_.threads < 0) {
    throw RuntimeError("options: threads must be >= 0 (0 = the runtime's default), got " +
                       std::to_string(options_.threads));
  }
  if (options_.channel_order != ChannelOrder::kRGB && options_.channel_order != ChannelOrder::kBGR) {
    throw RuntimeError("options: channel_order must be kRGB or kBGR");
  }
  if (artifact_.empty()) throw RuntimeError("model: no model path given");
  if (!detail::is_regular_file(artifact_)) {
    throw RuntimeError("model: no such file " + in_quotes(artifact_) + " (expected an exported NAF model)");
  }
}

Upsampler::~Upsampler() = default;

void Upsampler::set_model_shapes(Shape image, Shape features, Shape output) {
  const struct {
    const char* role;
    const char* name;
    const Shape& dims;
    const char* const* form;
  } tensors[] = {{"input", "image", image, kImageForm},
                 {"input", "features", features, kFeaturesForm},
                 {"output", "upsampled", output, kOutputForm}};
  for (const auto& t : tensors) {
    if (t.dims.size() != 4) {
      throw RuntimeError(std::string("model: ") + t.role + " '" + t.name + "' has rank " + std::to_string(t.dims.size()) +
                         ", expected 4 " + form_string(t.form) + " (an exported NAF model)");
    }
  }
  if (image[1] >= 0 && image[1] != 3) {
    throw RuntimeError("model: input 'image' has " + std::to_string(image[1]) + " channels, expected 3 (RGB)");
  }
  if ((image[0] < 0) != (features[0] < 0) || (image[0] >= 0 && image[0] != features[0])) {
    throw RuntimeError("model: inputs 'image' " + shape_string(image) + " and 'features' " + shape_string(features) +
                       " disagree on the batch");
  }
  for (size_t i = 1; i < 4; ++i) {
    if (image[i] < 0 || features[i] < 0 || output[i] < 0) {
      throw RuntimeError("model: only the batch may be dynamic; this model has image " + shape_string(image) +
                         ", features " + shape_string(features) + ", output " + shape_string(output) +
                         " (-1: dynamic); export it with fixed sizes");
    }
  }
  image_shape_ = std::move(image);
  features_shape_ = std::move(features);
  output_shape_ = std::move(output);
  if (image_shape_[0] >= 0) {
    min_batch_ = max_batch_ = image_shape_[0];
  } else {
    min_batch_ = 1;
    max_batch_ = std::numeric_limits<int64_t>::max();
  }
}

void Upsampler::set_batch_range(int64_t min_batch, int64_t max_batch) {
  min_batch_ = min_batch;
  max_batch_ = max_batch;
}

Shape Upsampler::output_shape(int64_t batch) const {
  Shape s = output_shape_;
  if (!s.empty()) s[0] = batch;
  return s;
}

size_t Upsampler::output_size(int64_t batch) const {
  return element_count(output_shape(batch), "output", sizeof(float));
}

Shape Upsampler::run_checked(Request& request, const Shape& image_shape, const FeaturesView& features,
                             size_t out_capacity) {
  if (image_shape_.empty()) throw RuntimeError("run: this upsampler holds no model");
  const Shape& fshape = features.shape;
  const char* ftype = features.type == ElementType::kFloat16 ? "float16" : "float32";
  if (features.type != ElementType::kFloat32 && features.type != ElementType::kFloat16) {
    throw RuntimeError("features: type must be kFloat32 or kFloat16");
  }
  check_input_shape("features", ftype, features_shape_, kFeaturesForm, fshape);
  if (fshape[0] != image_shape[0]) {
    throw RuntimeError("features: batch size " + std::to_string(fshape[0]) + " differs from the image's " +
                       std::to_string(image_shape[0]));
  }
  const int64_t batch = image_shape[0];
  if (batch < min_batch_ || batch > max_batch_) {
    throw RuntimeError("image: batch " + std::to_string(batch) + " is outside what this model accepts (" +
                       std::to_string(min_batch_) + ".." +
                       (max_batch_ == std::numeric_limits<int64_t>::max() ? std::string("any") : std::to_string(max_batch_)) +
                       ")");
  }
  element_count(fshape, "features", features.type == ElementType::kFloat16 ? 2 : 4);
  if (features.data == nullptr) throw RuntimeError("features: null data pointer");
  const Shape out_shape = output_shape(batch);
  const size_t needed = element_count(out_shape, "output", sizeof(float));
  if (request.out == nullptr) throw RuntimeError("out: null output buffer");
  if (out_capacity < needed) {
    throw RuntimeError("out: the buffer holds " + std::to_string(out_capacity) + " floats, the output " +
                       shape_string(out_shape) + " needs " + std::to_string(needed));
  }
  request.batch = batch;
  request.features = &features;
  execute(request);
  return out_shape;
}

Shape Upsampler::run(const ImageView& image, const FeaturesView& features, float* out, size_t out_capacity) {
  if (image_shape_.empty()) throw RuntimeError("run: this upsampler holds no model");
  check_input_shape("image", "float32", image_shape_, kImageForm, image.shape);
  element_count(image.shape, "image", sizeof(float));
  if (image.data == nullptr) throw RuntimeError("image: null data pointer");
  Request request;
  request.image = image.data;
  request.out = out;
  return run_checked(request, image.shape, features, out_capacity);
}

Shape Upsampler::run(const Frame& frame, const FeaturesView& features, float* out, size_t out_capacity) {
  if (image_shape_.empty()) throw RuntimeError("run: this upsampler holds no model");
  if (frame.data == nullptr) throw RuntimeError("frame: null data pointer");
  if (frame.height <= 0 || frame.width <= 0) {
    throw RuntimeError("frame: height and width must be > 0, got " + std::to_string(frame.height) + "x" +
                       std::to_string(frame.width));
  }
  if (frame.height > kMaxFramePixels / frame.width) {
    throw RuntimeError("frame: " + std::to_string(frame.width) + "x" + std::to_string(frame.height) +
                       " pixels is more than the " + std::to_string(kMaxFramePixels) + " a frame may have");
  }
  if (frame.row_stride != 0 && frame.row_stride < 3 * frame.width) {
    throw RuntimeError("frame: row_stride " + std::to_string(frame.row_stride) + " is smaller than 3 * width = " +
                       std::to_string(3 * frame.width) + " bytes");
  }
  if (min_batch_ > 1) {
    throw RuntimeError("frame: this model takes a batch of " + std::to_string(min_batch_) +
                       " images; a frame is one image (pass a float ImageView instead)");
  }
  Request request;
  request.frame = &frame;
  request.out = out;
  return run_checked(request, Shape{1, 3, image_shape_[2], image_shape_[3]}, features, out_capacity);
}

namespace {

void resize_output(std::vector<float>& out, size_t count, const Shape& shape) {
  try {
    out.resize(count);
  } catch (const std::bad_alloc&) {
    throw RuntimeError("out: cannot allocate " + std::to_string(count * sizeof(float)) + " bytes for the output " +
                       shape_string(shape));
  }
}

}  // namespace

Shape Upsampler::run(const ImageView& image, const FeaturesView& features, std::vector<float>& out) {
  if (image.shape.size() == 4 && image.shape[0] > 0) {
    const Shape shape = output_shape(image.shape[0]);
    resize_output(out, element_count(shape, "output", sizeof(float)), shape);
  }
  return run(image, features, out.data(), out.size());
}

Shape Upsampler::run(const Frame& frame, const FeaturesView& features, std::vector<float>& out) {
  if (!output_shape_.empty()) resize_output(out, output_size(1), output_shape(1));
  return run(frame, features, out.data(), out.size());
}

void Upsampler::preprocess(const Frame& frame, std::vector<float>& out) const {
  if (frame.data == nullptr || frame.height <= 0 || frame.width <= 0 ||
      frame.height > kMaxFramePixels / frame.width || (frame.row_stride != 0 && frame.row_stride < 3 * frame.width)) {
    throw RuntimeError("frame: expected a non-null frame of positive size with row_stride 0 or >= 3 * width");
  }
  const int64_t h = image_shape_[2], w = image_shape_[3];
  resize_output(out, static_cast<size_t>(3 * h * w), Shape{3, h, w});
  std::vector<float> tmp;
  detail::preprocess_frame(frame.data, frame.height, frame.width, frame.row_stride ? frame.row_stride : 3 * frame.width,
                           options_.channel_order == ChannelOrder::kBGR, h, w, out.data(), tmp);
}

Upsampler::HostInputs Upsampler::host_inputs(const Request& request, HostScratch& scratch) const {
  HostInputs inputs;
  try {
    if (request.frame != nullptr) {
      const Frame& f = *request.frame;
      const int64_t h = image_shape_[2], w = image_shape_[3];
      scratch.image.resize(static_cast<size_t>(3 * h * w));
      detail::preprocess_frame(f.data, f.height, f.width, f.row_stride ? f.row_stride : 3 * f.width,
                               options_.channel_order == ChannelOrder::kBGR, h, w, scratch.image.data(), scratch.resize);
      inputs.image = scratch.image.data();
    } else {
      inputs.image = request.image;
    }
    const FeaturesView& features = *request.features;
    if (features.type == ElementType::kFloat16) {
      const size_t count = element_count(features.shape, "features", 2);
      scratch.features.resize(count);
      detail::half_to_float(static_cast<const uint16_t*>(features.data), scratch.features.data(), count);
      inputs.features = scratch.features.data();
    } else {
      inputs.features = static_cast<const float*>(features.data);
    }
  } catch (const std::bad_alloc&) {
    throw RuntimeError("run: out of memory converting the inputs");
  }
  return inputs;
}

}  // namespace naf
