// naf::Upsampler: run an exported NAF model from C++, without Python, through one interface
// whatever the runtime behind it (ONNX Runtime, OpenVINO or TensorRT; see naf/onnxruntime_upsampler.h,
// naf/openvino_upsampler.h, naf/tensorrt_upsampler.h).
//
//   naf::UpsamplerOptions options;                      // plugin found next to the library by default
//   naf::OrtUpsampler upsampler("naf_fused.onnx", options);
//   std::vector<float> out;                              // reused across frames: sized once
//   upsampler.run(frame, features, out);                 // uint8 HWC camera frame, any size
//
// The model contract: inputs `image` (B, 3, Hi, Wi) float32, ImageNet-normalised RGB, and
// `features` (B, C, h, w); output `upsampled` (B, C, H, W) float32. The sizes are fixed at export;
// the batch may be symbolic (exported with a dynamic batch).
//
// Every failure is a naf::RuntimeError whose message starts with the argument at fault
// ("image: ...", "features: ...", "out: ...", "model: ...", "plugin: ...", "options: ...";
// "run: ..." / "enqueue: ..." for the call as a whole) and says
// what was expected. No header of a runtime is included here.
#ifndef NAF_UPSAMPLER_H_
#define NAF_UPSAMPLER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(_WIN32)
#error "naf runtimes support Linux (and macOS) only"
#endif
// The libraries are built with hidden visibility; what is marked here is exported.
#define NAF_RUNTIME_API __attribute__((visibility("default")))

struct CUstream_st;  // cudaStream_t is CUstream_st*: options take one without including CUDA

namespace naf {

class NAF_RUNTIME_API RuntimeError : public std::runtime_error {
 public:
  // What kind of failure, for callers that react differently (naf-run maps them to exit codes).
  enum class Kind {
    kBadInput,            // an argument, file, artifact or plugin that cannot be used
    kRuntimeUnavailable,  // the runtime (or a GPU) is missing here
  };
  explicit RuntimeError(const std::string& message, Kind kind = Kind::kBadInput)
      : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

using Shape = std::vector<int64_t>;

enum class Backend { kOnnxRuntime, kOpenVino, kTensorRt };
// "onnxruntime", "openvino", "tensorrt".
NAF_RUNTIME_API const char* backend_name(Backend backend);
// The backend an artifact's file name implies: .onnx -> ONNX Runtime, .xml -> OpenVINO,
// .engine / .plan -> TensorRT. Other files raise a RuntimeError naming `model` (and saying what
// the file is when it is an image or .npy file).
NAF_RUNTIME_API Backend backend_for_artifact(const std::string& path);
// Parses a backend name: onnxruntime|ort, openvino|ov, tensorrt|trt; raises naming `backend`.
NAF_RUNTIME_API Backend parse_backend(const std::string& name);

// Element type of a features buffer. Float16 is IEEE binary16 passed as its 16-bit pattern.
enum class ElementType { kFloat32, kFloat16 };
// Channel order of a uint8 camera frame.
enum class ChannelOrder { kRGB, kBGR };

// A float32 image already in the model's form: (B, 3, Hi, Wi), C order, ImageNet-normalised RGB.
struct ImageView {
  const float* data = nullptr;
  Shape shape;
};

// Features from the backbone: (B, C, h, w), C order, float32 or float16.
struct FeaturesView {
  const void* data = nullptr;
  Shape shape;
  ElementType type = ElementType::kFloat32;
};

// One uint8 camera frame, height x width pixels of 3 interleaved channels (HWC), RGB or BGR as
// UpsamplerOptions::channel_order says. Any size: it is resized to the model's image size with
// PyTorch's antialiased bilinear rule (naf_export.samples.resize_image: interpolate(mode="bilinear",
// align_corners=False, antialias=True), clamped to [0, 1]), then ImageNet-normalised, exactly what
// the Python tool does to a picture. A frame already at the model's size is only normalised and
// gives exactly the Python tool's tensor; a resized one agrees to one float32 rounding step.
struct Frame {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t row_stride = 0;  // bytes from one row to the next; 0 means 3 * width (packed)
};

struct UpsamplerOptions {
  // Plugin library (libnaf_onnxruntime.so / libnaf_openvino.so / libnaf_tensorrt.so), loaded only
  // when the model uses a naf operation. Empty: the library of that name next to the backend's
  // own library (cmake --install puts both in <prefix>/lib), for TensorRT also the path recorded
  // in the engine's .json sidecar.
  std::string plugin_path;
  // CPU threads of ONNX Runtime / OpenVINO (0: the runtime's default, one per core).
  int threads = 0;
  // Channel order of Frame inputs.
  ChannelOrder channel_order = ChannelOrder::kRGB;

  struct OnnxRuntime {
    // true: ONNX Runtime's CPU memory arena off (lower peak memory, buffers returned after each run).
    bool lean_memory = false;
    // libonnxruntime to load (once per process). Empty: the one already in the process, else
    // libonnxruntime.so.1 next to libnaf_runtime_onnxruntime.so, the one found at build time, then
    // the dynamic loader's search (LD_LIBRARY_PATH, system).
    std::string library;
  } onnxruntime;

  struct OpenVino {
    std::string device = "CPU";
    // INFERENCE_PRECISION_HINT: "auto" (f32 for float IRs, bf16 for IRs written for bf16, the
    // device default for INT8 ones; what naf-export does), "f32", "bf16", "f16", or "default".
    std::string inference_precision = "auto";
    std::string cache_dir;  // OpenVINO model cache (CACHE_DIR); empty: none
  } openvino;

  struct TensorRt {
    int device = 0;                 // CUDA device ordinal
    CUstream_st* stream = nullptr;  // stream of run(); null: one the upsampler creates
    bool cuda_graph = false;        // replay enqueueV3 as a CUDA graph (captured on first use)
  } tensorrt;
};

// One loaded model. Construct a backend class (OrtUpsampler, OpenVinoUpsampler,
// TensorRtUpsampler); use it through this interface. Not copyable; movable through
// std::unique_ptr<Upsampler>. Thread-safety is per backend (see each header).
class NAF_RUNTIME_API Upsampler {
 public:
  virtual ~Upsampler();
  Upsampler(const Upsampler&) = delete;
  Upsampler& operator=(const Upsampler&) = delete;

  // Shapes the model was exported for; -1 marks the symbolic batch.
  const Shape& image_shape() const { return image_shape_; }        // (B, 3, Hi, Wi)
  const Shape& features_shape() const { return features_shape_; }  // (B, C, h, w)
  const Shape& output_shape() const { return output_shape_; }      // (B, C, H, W)
  // The output shape for `batch` images, and its element count (what `out` must hold).
  Shape output_shape(int64_t batch) const;
  size_t output_size(int64_t batch = 1) const;
  // Batches the model accepts: [1, 1] for a static batch of 1, [min, max] of a TensorRT profile.
  int64_t min_batch() const { return min_batch_; }
  int64_t max_batch() const { return max_batch_; }

  const std::string& artifact() const { return artifact_; }
  const UpsamplerOptions& options() const { return options_; }
  virtual Backend backend() const = 0;
  // Version of the runtime library in use, e.g. "1.32.0".
  virtual std::string runtime_version() const = 0;
  // Whether the model uses naf operations, and so loaded the plugin; and which file.
  virtual bool uses_plugin() const = 0;
  virtual std::string plugin_path() const = 0;

  // Runs the model. The image is either a normalised float tensor or one uint8 frame (batch 1);
  // features are float32 or float16 of the model's shape. The output (B, C, H, W) float32 goes into
  // `out`, a caller-owned buffer of at least output_size(B) floats, or a vector resized to exactly
  // that (its storage is reused across calls). Returns the output shape.
  Shape run(const ImageView& image, const FeaturesView& features, float* out, size_t out_capacity);
  Shape run(const Frame& frame, const FeaturesView& features, float* out, size_t out_capacity);
  Shape run(const ImageView& image, const FeaturesView& features, std::vector<float>& out);
  Shape run(const Frame& frame, const FeaturesView& features, std::vector<float>& out);

  // The normalised image run() feeds the model for `frame` (3 * Hi * Wi floats, CHW) into `out`.
  void preprocess(const Frame& frame, std::vector<float>& out) const;

 protected:
  Upsampler(std::string artifact, UpsamplerOptions options);
  // Called by each backend's constructor once the model is loaded: checks the model's contract
  // (ranks, 3 image channels, equal batches) and stores the shapes; errors name `model`.
  void set_model_shapes(Shape image, Shape features, Shape output);
  void set_batch_range(int64_t min_batch, int64_t max_batch);

  // One checked call: every pointer non-null, every shape the model's, `out` large enough.
  struct Request {
    int64_t batch = 0;
    const float* image = nullptr;  // normalised (batch, 3, Hi, Wi), or null when `frame` is set
    const Frame* frame = nullptr;  // uint8 frame (batch 1), or null
    const FeaturesView* features = nullptr;
    float* out = nullptr;          // output_size(batch) floats
  };
  virtual void execute(const Request& request) = 0;

  // Host memory for the conversions below; one per concurrent call.
  struct HostScratch {
    std::vector<float> image, features, resize;
  };
  // The float32 image and features for a host runtime: the caller's buffers when they already are
  // that, else converted (frame preprocessing, float16 features) into `scratch`.
  struct HostInputs {
    const float* image = nullptr;
    const float* features = nullptr;
  };
  HostInputs host_inputs(const Request& request, HostScratch& scratch) const;

 private:
  Shape run_checked(Request& request, const Shape& image_shape, const FeaturesView& features, size_t out_capacity);

  std::string artifact_;
  UpsamplerOptions options_;
  Shape image_shape_, features_shape_, output_shape_;
  int64_t min_batch_ = 1, max_batch_ = 1;
};

}  // namespace naf

#endif  // NAF_UPSAMPLER_H_
