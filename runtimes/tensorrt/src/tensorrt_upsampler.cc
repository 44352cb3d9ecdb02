// naf::TensorRtUpsampler on TensorRT 10's C++ runtime API and the CUDA runtime. The decisions that
// need no GPU (option checks, the sidecar, versions, the binding plan) are in engine_plan.cc, where
// they are tested without TensorRT; this file only asks TensorRT and CUDA.
#include "naf/tensorrt_upsampler.h"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "artifact.h"
#include "engine_plan.h"
#include "preprocess.h"
#include "preprocess_cuda.h"

namespace naf {
namespace {

using detail::in_quotes;

constexpr const char* kPluginFile = "libnaf_tensorrt.so";
constexpr const char* kPluginName = "CrossScaleNeighborhoodAttention";
const char kSelf = 0;  // its address tells where this library lies

void cuda_check(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // reported here, not again by the next, unrelated launch check
  throw RuntimeError(what + ": CUDA error " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

// Makes `device` current for one call and gives the caller's thread its own device back.
class DeviceGuard {
 public:
  DeviceGuard(int device, const char* caller) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    cuda_check(cudaSetDevice(device), std::string(caller) + ": selecting CUDA device " + std::to_string(device));
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// TensorRT binds only addresses aligned to 256 bytes (IExecutionContext::setTensorAddress).
constexpr uintptr_t kBindAlignment = 256;
bool bindable(const void* p) { return reinterpret_cast<uintptr_t>(p) % kBindAlignment == 0; }

// `p` must be memory the device can read (device, managed, or host memory mapped for the device);
// plain host memory is refused naming `what`, before any kernel could fault on it.
void check_device_pointer(const void* p, const char* what) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();
    throw RuntimeError(std::string(what) + ": not a CUDA device pointer");
  }
  if (attributes.type == cudaMemoryTypeUnregistered ||
      (attributes.type == cudaMemoryTypeHost && attributes.devicePointer == nullptr)) {
    throw RuntimeError(std::string(what) + ": expected a device pointer, got host memory (use run() for host buffers)");
  }
}

// Serialises plugin registration in this process: two upsamplers constructed at once must not
// both try to load the library (TensorRT refuses the second).
std::mutex& registry_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Collects TensorRT's error messages, so a failure can say what TensorRT said.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity > Severity::kERROR || message == nullptr) return;
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!errors_.empty()) errors_ += "; ";
      errors_ += message;
      if (errors_.size() > 4000) errors_.resize(4000);
    } catch (...) {  // logging must never throw into TensorRT
    }
  }
  std::string take() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::string out;
    out.swap(errors_);
    return out;
  }

 private:
  std::mutex mutex_;
  std::string errors_;
};

// Device allocation that only grows.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* ensure(size_t bytes, const char* what) {
    if (bytes <= bytes_) return ptr_;
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    cuda_check(cudaMalloc(&ptr_, bytes), std::string(what) + ": allocating " + std::to_string(bytes) + " bytes on the GPU");
    bytes_ = bytes;
    return ptr_;
  }
  void* get() const { return ptr_; }
  bool fits(size_t bytes) const { return bytes <= bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

trt::DType dtype_of(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return trt::DType::kFloat32;
    case nvinfer1::DataType::kHALF: return trt::DType::kFloat16;
    default: return trt::DType::kOther;
  }
}

const char* dtype_name(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kBOOL: return "bool";
    case nvinfer1::DataType::kUINT8: return "uint8";
    case nvinfer1::DataType::kBF16: return "bfloat16";
    case nvinfer1::DataType::kINT64: return "int64";
    default: return "an unsupported type";
  }
}

Shape dims_of(const nvinfer1::Dims& d) {
  Shape s;
  for (int32_t i = 0; i < d.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i) s.push_back(d.d[i] < 0 ? -1 : d.d[i]);
  return s;
}

nvinfer1::Dims to_dims(const Shape& s) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<int32_t>(s.size());
  for (size_t i = 0; i < s.size(); ++i) d.d[i] = s[i];
  return d;
}

size_t count_of(const Shape& s) {
  size_t n = 1;
  for (int64_t d : s) n *= static_cast<size_t>(d);
  return n;
}

size_t element_bytes(trt::DType t) { return t == trt::DType::kFloat16 ? 2 : 4; }

}  // namespace

struct TensorRtUpsampler::Impl {
  Logger logger;
  // Destruction order matters: context, then engine, then runtime (reverse of declaration).
  std::unique_ptr<nvinfer1::IRuntime> runtime;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  trt::EnginePlan plan;
  trt::Sidecar sidecar;
  std::string plugin;
  int device = 0;
  cudaStream_t stream = nullptr;
  bool own_stream = false;
  bool cuda_graph = false;
  bool bgr = false;

  // Engine-side buffers (types of the engine) and conversion buffers, allocated once, grown only.
  DeviceBuffer image, features, output, staging_in, staging_out, frame, resize_tmp, resize_tables;
  // Resize tables of the last frame size (uploaded once per size; the host copy stays alive for
  // the asynchronous upload).
  int64_t table_h = -1, table_w = -1;
  std::vector<char> table_host;
  trt::DeviceAxis axis_x, axis_y;

  // CUDA graph of enqueueV3 for one batch and one set of bound addresses.
  cudaGraphExec_t graph = nullptr;
  int64_t graph_batch = -1;
  const void* graph_addresses[3] = {nullptr, nullptr, nullptr};
  cudaStream_t graph_stream = nullptr;

  // Calls on different streams share the context and the buffers: each call's work waits for
  // the previous call's (`done`, recorded on `last_stream`).
  cudaEvent_t done = nullptr;
  cudaStream_t last_stream = nullptr;

  std::mutex mutex;

  ~Impl() {
    int previous = -1;
    if (cudaGetDevice(&previous) == cudaSuccess) cudaSetDevice(device);
    if (done != nullptr) {
      cudaEventSynchronize(done);  // enqueue()d work may still read the buffers freed below
      cudaEventDestroy(done);
    }
    if (graph != nullptr) cudaGraphExecDestroy(graph);
    context.reset();
    engine.reset();
    runtime.reset();
    if (own_stream && stream != nullptr) cudaStreamDestroy(stream);
    if (previous >= 0) cudaSetDevice(previous);
  }

  // Orders this call's work on `s` after the previous call's, whatever its stream.
  void begin_on(cudaStream_t s, const char* caller) {
    if (last_stream != nullptr && last_stream != s) {
      cuda_check(cudaStreamWaitEvent(s, done, 0), std::string(caller) + ": ordering after the previous call");
    }
  }
  void end_on(cudaStream_t s, const char* caller) {
    cuda_check(cudaEventRecord(done, s), std::string(caller) + ": recording completion");
    last_stream = s;
  }

  void resize_tables_for(int64_t h, int64_t w, int64_t out_h, int64_t out_w, cudaStream_t s);
  void bind_and_enqueue(int64_t batch, const void* image_ptr, const void* features_ptr, void* output_ptr, cudaStream_t s,
                        const char* caller, bool caller_capturing);
};

void TensorRtUpsampler::Impl::resize_tables_for(int64_t h, int64_t w, int64_t out_h, int64_t out_w, cudaStream_t s) {
  if (h == table_h && w == table_w) return;
  const detail::AxisWeights wx = detail::antialias_bilinear_weights(w, out_w);
  const detail::AxisWeights wy = detail::antialias_bilinear_weights(h, out_h);
  // One upload: x.start, x.count, x.weights, y.start, y.count, y.weights (each 4-byte elements).
  const size_t parts[6] = {wx.start.size(), wx.count.size(), wx.weights.size(),
                           wy.start.size(), wy.count.size(), wy.weights.size()};
  size_t total = 0;
  for (size_t p : parts) total += p * 4;
  // The old tables (device) and their host copy may still be in use by queued work, on any stream.
  if (last_stream != nullptr) cuda_check(cudaEventSynchronize(done), "frame: waiting for the previous frame");
  table_h = table_w = -1;  // until the new tables are complete: a failure below must not leave stale ones
  table_host.resize(total);
  const void* sources[6] = {wx.start.data(), wx.count.data(), wx.weights.data(),
                            wy.start.data(), wy.count.data(), wy.weights.data()};
  size_t offset = 0;
  size_t offsets[6];
  for (int i = 0; i < 6; ++i) {
    offsets[i] = offset;
    if (parts[i]) std::memcpy(table_host.data() + offset, sources[i], parts[i] * 4);
    offset += parts[i] * 4;
  }
  char* base = static_cast<char*>(resize_tables.ensure(total, "frame"));
  cuda_check(cudaMemcpyAsync(base, table_host.data(), total, cudaMemcpyHostToDevice, s), "frame: uploading the resize tables");
  const auto axis = [&](const detail::AxisWeights& a, size_t first) {
    trt::DeviceAxis d;
    d.in = a.in;
    d.out = a.out;
    d.taps = a.taps;
    d.identity = a.identity();
    d.start = reinterpret_cast<const int32_t*>(base + offsets[first]);
    d.count = reinterpret_cast<const int32_t*>(base + offsets[first + 1]);
    d.weights = reinterpret_cast<const float*>(base + offsets[first + 2]);
    return d;
  };
  axis_x = axis(wx, 0);
  axis_y = axis(wy, 3);
  table_h = h;
  table_w = w;
}

void TensorRtUpsampler::Impl::bind_and_enqueue(int64_t batch, const void* image_ptr, const void* features_ptr,
                                               void* output_ptr, cudaStream_t s, const char* caller,
                                               bool caller_capturing) {
  const std::string who(caller);
  Shape image_shape = plan.image_shape, features_shape = plan.features_shape;
  image_shape[0] = features_shape[0] = batch;
  if (!context->setInputShape(plan.image.c_str(), to_dims(image_shape)) ||
      !context->setInputShape(plan.features.c_str(), to_dims(features_shape))) {
    throw RuntimeError("image: TensorRT rejected the input shapes " + detail::shape_string(image_shape) + " / " +
                       detail::shape_string(features_shape) + " (" + logger.take() + ")");
  }
  // TensorRT's API takes non-const addresses for inputs too; it only reads them.
  if (!context->setInputTensorAddress(plan.image.c_str(), image_ptr)) {
    throw RuntimeError("image: TensorRT rejected the device address (" + logger.take() + ")");
  }
  if (!context->setInputTensorAddress(plan.features.c_str(), features_ptr)) {
    throw RuntimeError("features: TensorRT rejected the device address (" + logger.take() + ")");
  }
  if (!context->setTensorAddress(plan.output.c_str(), output_ptr)) {
    throw RuntimeError("out: TensorRT rejected the device address (" + logger.take() + ")");
  }
  const void* addresses[3] = {image_ptr, features_ptr, output_ptr};
  if (cuda_graph && graph != nullptr && graph_batch == batch && graph_stream == s &&
      std::equal(addresses, addresses + 3, graph_addresses)) {
    cuda_check(cudaGraphLaunch(graph, s), who + ": launching the CUDA graph");
    return;
  }
  if (!context->enqueueV3(s)) throw RuntimeError(who + ": TensorRT failed to enqueue the engine (" + logger.take() + ")");
  // A caller capturing its own graph records the enqueue above; no graph of ours inside theirs.
  if (!cuda_graph || caller_capturing) return;
  // The call above ran this frame (and let TensorRT finish any shape-dependent setup, which must
  // not happen inside a capture); the capture records the same work for replay.
  if (graph != nullptr) {
    cudaGraphExecDestroy(graph);
    graph = nullptr;
  }
  cudaGraph_t captured = nullptr;
  if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    cuda_graph = false;  // e.g. the legacy default stream: run without graphs
    return;
  }
  const bool enqueued = context->enqueueV3(s);
  const cudaError_t ended = cudaStreamEndCapture(s, &captured);
  if (!enqueued || ended != cudaSuccess || captured == nullptr ||
      cudaGraphInstantiate(&graph, captured, 0) != cudaSuccess) {
    cudaGetLastError();
    if (captured != nullptr) cudaGraphDestroy(captured);
    graph = nullptr;
    cuda_graph = false;
    logger.take();
    return;
  }
  cudaGraphDestroy(captured);
  graph_batch = batch;
  graph_stream = s;
  std::copy(addresses, addresses + 3, graph_addresses);
}

TensorRtUpsampler::TensorRtUpsampler(const std::string& engine_path, const UpsamplerOptions& options)
    : Upsampler(engine_path, options), impl_(new Impl) {
  Impl& m = *impl_;
  detail::check_artifact_kind(engine_path, Backend::kTensorRt);
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess) {
    cudaGetLastError();
    device_count = 0;
  }
  trt::check_options(options, device_count);
  m.device = options.tensorrt.device;
  m.cuda_graph = options.tensorrt.cuda_graph;
  m.bgr = options.channel_order == ChannelOrder::kBGR;
  const DeviceGuard on_device(m.device, ("options: tensorrt.device " + std::to_string(m.device)).c_str());
  trt::check_library_version(NV_TENSORRT_VERSION, getInferLibVersion());
  m.sidecar = trt::read_sidecar(engine_path);
  trt::check_engine_version(m.sidecar, getInferLibVersion(), engine_path);

  m.runtime.reset(nvinfer1::createInferRuntime(m.logger));
  if (!m.runtime) {
    throw RuntimeError("tensorrt: cannot create the TensorRT runtime (" + m.logger.take() + ")",
                       RuntimeError::Kind::kRuntimeUnavailable);
  }
  bool required = false;
  const std::string plugin = trt::choose_plugin(
      options, m.sidecar, detail::resolve_plugin_path("", &kSelf, kPluginFile), &required);
  if (required && plugin.empty()) {
    throw RuntimeError("plugin: engine " + in_quotes(engine_path) + " contains the " + std::string(kPluginName) +
                       " plugin (its sidecar records " + in_quotes(m.sidecar.plugin) + ") and needs " + kPluginFile +
                       ", which is neither there nor next to this library: pass its path (UpsamplerOptions::plugin_path, "
                       "naf-run --plugin)");
  }
  if (!plugin.empty()) {
    const std::string resolved = detail::resolve_plugin_path(plugin, &kSelf, kPluginFile);
    if (resolved.find('/') != std::string::npos) {
      detail::check_plugin_file(resolved, "getCreators", kPluginFile, "TensorRT plugin library");
    }
    nvinfer1::IPluginRegistry& registry = m.runtime->getPluginRegistry();
    // TensorRT refuses a library whose creators are already registered (another upsampler in
    // this process loaded it): then the registered creator serves this engine too.
    const std::lock_guard<std::mutex> registering(registry_mutex());
    if (registry.getCreator(kPluginName, "1", "") == nullptr && registry.loadLibrary(resolved.c_str()) == nullptr) {
      throw RuntimeError("plugin: TensorRT " + trt::version_string(getInferLibVersion()) + " cannot load " +
                         in_quotes(resolved) + " (" + m.logger.take() + ")");
    }
    m.plugin = resolved;
  }

  std::vector<char> blob;
  {
    std::ifstream in(engine_path, std::ios::binary);
    blob.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) throw RuntimeError("model: cannot read " + in_quotes(engine_path));
  }
  if (blob.empty()) throw RuntimeError("model: " + in_quotes(engine_path) + " is empty");
  m.engine.reset(m.runtime->deserializeCudaEngine(blob.data(), blob.size()));
  if (!m.engine) {
    throw RuntimeError(trt::deserialize_failure(engine_path, getInferLibVersion(), m.sidecar, !m.plugin.empty(),
                                                m.logger.take()));
  }
  blob.clear();
  blob.shrink_to_fit();

  trt::EngineDescription description;
  for (int32_t i = 0; i < m.engine->getNbIOTensors(); ++i) {
    const char* name = m.engine->getIOTensorName(i);
    trt::IoTensor t;
    t.name = name ? name : "";
    t.input = m.engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    const nvinfer1::DataType type = m.engine->getTensorDataType(name);
    t.type = dtype_of(type);
    t.type_name = dtype_name(type);
    t.dims = dims_of(m.engine->getTensorShape(name));
    t.on_device = m.engine->getTensorLocation(name) == nvinfer1::TensorLocation::kDEVICE;
    description.tensors.push_back(std::move(t));
  }
  description.num_profiles = m.engine->getNbOptimizationProfiles();
  if (description.num_profiles > 0) {
    // The batches both inputs' profiles allow (trtexec may give them different ranges).
    bool first = true;
    for (const auto& t : description.tensors) {
      if ((t.name == "image" || t.name == "features") && t.input && !t.dims.empty() && t.dims[0] < 0) {
        const Shape lo = dims_of(m.engine->getProfileShape(t.name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN));
        const Shape hi = dims_of(m.engine->getProfileShape(t.name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX));
        const int64_t min_batch = lo.empty() ? 0 : lo[0], max_batch = hi.empty() ? 0 : hi[0];
        description.profile_min_batch = first ? min_batch : std::max(description.profile_min_batch, min_batch);
        description.profile_max_batch = first ? max_batch : std::min(description.profile_max_batch, max_batch);
        first = false;
      }
    }
  }
  m.plan = trt::plan_engine(description, engine_path);
  set_model_shapes(m.plan.image_shape, m.plan.features_shape, m.plan.output_shape);
  set_batch_range(m.plan.min_batch, m.plan.max_batch);

  m.context.reset(m.engine->createExecutionContext());
  if (!m.context) {
    throw RuntimeError("model: cannot create an execution context for " + in_quotes(engine_path) + " (" + m.logger.take() +
                       "); is the GPU out of memory?");
  }
  if (options.tensorrt.stream != nullptr) {
    m.stream = options.tensorrt.stream;
  } else {
    cuda_check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "tensorrt: creating a CUDA stream");
    m.own_stream = true;
  }
  cuda_check(cudaEventCreateWithFlags(&m.done, cudaEventDisableTiming), "tensorrt: creating a CUDA event");
  // Buffers for the smallest batch now, so steady-state frames allocate nothing.
  const int64_t b = m.plan.min_batch;
  m.image.ensure(count_of({b, 3, image_shape()[2], image_shape()[3]}) * element_bytes(m.plan.image_type), "image");
  Shape fs = features_shape();
  fs[0] = b;
  m.features.ensure(count_of(fs) * element_bytes(m.plan.features_type), "features");
  m.output.ensure(count_of(output_shape(b)) * element_bytes(m.plan.output_type), "output");
}

TensorRtUpsampler::~TensorRtUpsampler() = default;

bool TensorRtUpsampler::uses_plugin() const { return !impl_->plugin.empty(); }
std::string TensorRtUpsampler::plugin_path() const { return impl_->plugin; }
std::string TensorRtUpsampler::tensorrt_version() { return trt::version_string(getInferLibVersion()); }

void TensorRtUpsampler::execute(const Request& request) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  const DeviceGuard on_device(m.device, "run");
  const cudaStream_t s = m.stream;
  m.begin_on(s, "run");
  const int64_t batch = request.batch;
  const Shape image_shape{batch, 3, this->image_shape()[2], this->image_shape()[3]};
  Shape features_shape = this->features_shape();
  features_shape[0] = batch;
  const Shape out_shape = output_shape(batch);
  const size_t image_count = count_of(image_shape), features_count = count_of(features_shape),
               out_count = count_of(out_shape);
  void* image = m.image.ensure(image_count * element_bytes(m.plan.image_type), "image");
  void* features = m.features.ensure(features_count * element_bytes(m.plan.features_type), "features");
  void* output = m.output.ensure(out_count * element_bytes(m.plan.output_type), "output");

  // Image: a frame goes up as uint8 and is preprocessed on the GPU; a float image is copied
  // (through a float32 staging buffer when the engine takes float16).
  if (request.frame != nullptr) {
    const Frame& f = *request.frame;
    const int64_t stride = f.row_stride ? f.row_stride : 3 * f.width;
    void* frame = m.frame.ensure(static_cast<size_t>(3 * f.width * f.height), "frame");
    cuda_check(cudaMemcpy2DAsync(frame, static_cast<size_t>(3 * f.width), f.data, static_cast<size_t>(stride),
                                 static_cast<size_t>(3 * f.width), static_cast<size_t>(f.height), cudaMemcpyHostToDevice, s),
               "frame: uploading");
    m.resize_tables_for(f.height, f.width, image_shape[2], image_shape[3], s);
    float* tmp = static_cast<float*>(m.resize_tmp.ensure(static_cast<size_t>(3 * f.height * image_shape[3]) * 4, "frame"));
    cuda_check(trt::preprocess_frame(static_cast<const uint8_t*>(frame), 3 * f.width, m.bgr, m.axis_x, m.axis_y, tmp,
                                     image, m.plan.image_type == trt::DType::kFloat16, s),
               "frame: preprocessing on the GPU");
  } else if (m.plan.image_type == trt::DType::kFloat32) {
    cuda_check(cudaMemcpyAsync(image, request.image, image_count * 4, cudaMemcpyHostToDevice, s), "image: uploading");
  } else {
    float* staging = static_cast<float*>(m.staging_in.ensure(image_count * 4, "image"));
    cuda_check(cudaMemcpyAsync(staging, request.image, image_count * 4, cudaMemcpyHostToDevice, s), "image: uploading");
    cuda_check(trt::float_to_half(staging, static_cast<uint16_t*>(image), image_count, s), "image: converting");
  }

  // Features: copied as they are when the engine takes their type, converted on the GPU otherwise.
  const FeaturesView& fv = *request.features;
  const trt::DType given = fv.type == ElementType::kFloat16 ? trt::DType::kFloat16 : trt::DType::kFloat32;
  if (given == m.plan.features_type) {
    cuda_check(cudaMemcpyAsync(features, fv.data, features_count * element_bytes(given), cudaMemcpyHostToDevice, s),
               "features: uploading");
  } else {
    void* staging = m.staging_in.ensure(features_count * element_bytes(given), "features");
    cuda_check(cudaMemcpyAsync(staging, fv.data, features_count * element_bytes(given), cudaMemcpyHostToDevice, s),
               "features: uploading");
    cuda_check(given == trt::DType::kFloat16
                   ? trt::half_to_float(static_cast<const uint16_t*>(staging), static_cast<float*>(features), features_count, s)
                   : trt::float_to_half(static_cast<const float*>(staging), static_cast<uint16_t*>(features), features_count, s),
               "features: converting");
  }

  m.bind_and_enqueue(batch, image, features, output, s, "run", false);

  if (m.plan.output_type == trt::DType::kFloat32) {
    cuda_check(cudaMemcpyAsync(request.out, output, out_count * 4, cudaMemcpyDeviceToHost, s), "out: downloading");
  } else {
    float* staging = static_cast<float*>(m.staging_out.ensure(out_count * 4, "out"));
    cuda_check(trt::half_to_float(static_cast<const uint16_t*>(output), staging, out_count, s), "out: converting");
    cuda_check(cudaMemcpyAsync(request.out, staging, out_count * 4, cudaMemcpyDeviceToHost, s), "out: downloading");
  }
  m.end_on(s, "run");
  cuda_check(cudaStreamSynchronize(s), "run: the engine or the preprocessing failed on the GPU");
}

Shape TensorRtUpsampler::enqueue(const DeviceInputs& in, float* out, size_t out_capacity, CUstream_st* stream) {
  Impl& m = *impl_;
  const bool frame = in.frame != nullptr;
  if (frame == (in.image != nullptr)) {
    throw RuntimeError("image: pass exactly one of DeviceInputs::image (normalised float32) and DeviceInputs::frame (uint8)");
  }
  const int64_t batch = frame ? 1 : in.batch;
  if (batch < min_batch() || batch > max_batch()) {
    throw RuntimeError("image: batch " + std::to_string(batch) + " is outside the engine's range " +
                       std::to_string(min_batch()) + ".." + std::to_string(max_batch()));
  }
  if (frame && (in.frame_height <= 0 || in.frame_width <= 0 ||
                (in.frame_row_stride != 0 && in.frame_row_stride < 3 * in.frame_width))) {
    throw RuntimeError("frame: height and width must be > 0 and frame_row_stride 0 or >= 3 * width, got " +
                       std::to_string(in.frame_height) + "x" + std::to_string(in.frame_width) + ", stride " +
                       std::to_string(in.frame_row_stride));
  }
  if (in.features == nullptr) throw RuntimeError("features: null device pointer");
  if (in.features_type != ElementType::kFloat32 && in.features_type != ElementType::kFloat16) {
    throw RuntimeError("features: features_type must be kFloat32 or kFloat16");
  }
  if (out == nullptr) throw RuntimeError("out: null device pointer");
  check_device_pointer(frame ? static_cast<const void*>(in.frame) : in.image, frame ? "frame" : "image");
  check_device_pointer(in.features, "features");
  check_device_pointer(out, "out");
  const Shape out_shape = output_shape(batch);
  const size_t out_count = count_of(out_shape);
  if (out_capacity < out_count) {
    throw RuntimeError("out: the buffer holds " + std::to_string(out_capacity) + " floats, the output " +
                       detail::shape_string(out_shape) + " needs " + std::to_string(out_count));
  }
  std::lock_guard<std::mutex> lock(m.mutex);
  const DeviceGuard on_device(m.device, "enqueue");
  const cudaStream_t s = stream != nullptr ? stream : m.stream;
  const Shape image_shape{batch, 3, this->image_shape()[2], this->image_shape()[3]};
  Shape features_shape = this->features_shape();
  features_shape[0] = batch;
  const size_t image_count = count_of(image_shape), features_count = count_of(features_shape);
  const trt::DType given = in.features_type == ElementType::kFloat16 ? trt::DType::kFloat16 : trt::DType::kFloat32;
  // What this call will use of the internal buffers: the caller's own are bound directly where
  // the engine takes their type and they are 256-byte aligned, copied or converted otherwise.
  const bool image_direct = !frame && m.plan.image_type == trt::DType::kFloat32 && bindable(in.image);
  const bool features_direct = given == m.plan.features_type && bindable(in.features);
  const bool out_direct = m.plan.output_type == trt::DType::kFloat32 && bindable(out);

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cuda_check(cudaStreamIsCapturing(s, &capture), "enqueue: querying the stream");
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  if (capturing) {
    // Inside the caller's graph capture nothing may allocate or wait on the host.
    const bool tables_ready = !frame || (in.frame_height == m.table_h && in.frame_width == m.table_w);
    const bool buffers_ready =
        (image_direct || m.image.fits(image_count * element_bytes(m.plan.image_type))) &&
        (features_direct || m.features.fits(features_count * element_bytes(m.plan.features_type))) &&
        (out_direct || m.output.fits(out_count * element_bytes(m.plan.output_type))) &&
        (!frame || m.resize_tmp.fits(static_cast<size_t>(3 * in.frame_height * image_shape[3]) * 4));
    if (!tables_ready || !buffers_ready) {
      throw RuntimeError("enqueue: the stream is being captured into a CUDA graph, and this call would allocate or "
                         "wait on the host (first frame of this size or a larger batch): make one call with the same "
                         "sizes before capturing");
    }
  }
  m.begin_on(s, "enqueue");

  const void* image = in.image;
  if (!image_direct) {
    void* converted = m.image.ensure(image_count * element_bytes(m.plan.image_type), "image");
    if (!frame && m.plan.image_type == trt::DType::kFloat32) {
      cuda_check(cudaMemcpyAsync(converted, in.image, image_count * 4, cudaMemcpyDeviceToDevice, s), "image: copying");
    } else if (frame) {
      m.resize_tables_for(in.frame_height, in.frame_width, image_shape[2], image_shape[3], s);
      float* tmp = static_cast<float*>(
          m.resize_tmp.ensure(static_cast<size_t>(3 * in.frame_height * image_shape[3]) * 4, "frame"));
      cuda_check(trt::preprocess_frame(in.frame, in.frame_row_stride ? in.frame_row_stride : 3 * in.frame_width, m.bgr,
                                       m.axis_x, m.axis_y, tmp, converted, m.plan.image_type == trt::DType::kFloat16, s),
                 "frame: preprocessing on the GPU");
    } else {
      cuda_check(trt::float_to_half(in.image, static_cast<uint16_t*>(converted), image_count, s), "image: converting");
    }
    image = converted;
  }
  const void* features = in.features;
  if (!features_direct) {
    void* converted = m.features.ensure(features_count * element_bytes(m.plan.features_type), "features");
    cuda_check(given == m.plan.features_type
                   ? cudaMemcpyAsync(converted, in.features, features_count * element_bytes(given),
                                     cudaMemcpyDeviceToDevice, s)
               : given == trt::DType::kFloat16
                   ? trt::half_to_float(static_cast<const uint16_t*>(in.features), static_cast<float*>(converted),
                                        features_count, s)
                   : trt::float_to_half(static_cast<const float*>(in.features), static_cast<uint16_t*>(converted),
                                        features_count, s),
               "features: converting");
    features = converted;
  }
  if (out_direct) {
    m.bind_and_enqueue(batch, image, features, out, s, "enqueue", capturing);
  } else {
    void* engine_out = m.output.ensure(out_count * element_bytes(m.plan.output_type), "out");
    m.bind_and_enqueue(batch, image, features, engine_out, s, "enqueue", capturing);
    cuda_check(m.plan.output_type == trt::DType::kFloat32
                   ? cudaMemcpyAsync(out, engine_out, out_count * 4, cudaMemcpyDeviceToDevice, s)
                   : trt::half_to_float(static_cast<const uint16_t*>(engine_out), out, out_count, s),
               "out: converting");
  }
  m.end_on(s, "enqueue");
  return out_shape;
}

}  // namespace naf
