// naf_ort_runtime: run an exported NAF model (naf_fused.onnx / naf_portable.onnx) in ONNX Runtime
// from C++, without Python. One class, OrtUpsampler; every failure is a naf::RuntimeError whose
// message names the argument at fault and what was expected.
//
// The ONNX Runtime headers are not part of this interface (the implementation keeps them), so
// an application can include this header with or without its own ONNX Runtime headers.
#ifndef NAF_ORT_RUNTIME_H_
#define NAF_ORT_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(_WIN32)
#error "naf_ort_runtime supports Linux and macOS only (ONNX Runtime takes wide-character paths on Windows)"
#endif
// The library is built with hidden visibility; only what is marked here is exported.
#define NAF_ORT_RUNTIME_API __attribute__((visibility("default")))

namespace naf {

// Raised for every error: bad arguments, unreadable models, missing plugin, ONNX Runtime failures
// (their status message is included).
class NAF_ORT_RUNTIME_API RuntimeError : public std::runtime_error {
 public:
  explicit RuntimeError(const std::string& message) : std::runtime_error(message) {}
};

struct OrtUpsamplerOptions {
  // ONNX Runtime intra-op threads (also used by the plugin's kernel); 0 = ONNX Runtime's default
  // (one per physical core).
  int intra_op_threads = 0;
  // ONNX Runtime's memory pattern is always off (448x448, C=384: peak 2.06 -> 1.38 GB, ~4 % slower).
  // true: also disable its CPU memory arena (DisableCpuMemArena). Intermediate buffers are then
  // returned to the system after each run instead of being cached: peak 1.38 -> 0.83 GB at
  // 448x448 for ~15 % more time in page faults. false (default): arena on.
  bool lean_memory = false;
};

// One ONNX Runtime session (CPU execution provider) on an exported NAF model with inputs
// `image` (B,3,Hi,Wi) and `features` (B,C,h,w), output `upsampled` (B,C,H,W), all float32.
//
// run() may be called from several threads at once (ONNX Runtime sessions are thread-safe),
// each with its own output vector.
class NAF_ORT_RUNTIME_API OrtUpsampler {
 public:
  // model_path: the .onnx file. plugin_path: libnaf_onnxruntime.so; required when the model
  // uses the custom operator naf::CrossScaleNeighborhoodAttention (fused export), ignored
  // otherwise (may be empty).
  OrtUpsampler(const std::string& model_path, const std::string& plugin_path = std::string(),
               const OrtUpsamplerOptions& options = OrtUpsamplerOptions());
  ~OrtUpsampler();
  OrtUpsampler(OrtUpsampler&&) noexcept;
  OrtUpsampler& operator=(OrtUpsampler&&) noexcept;
  OrtUpsampler(const OrtUpsampler&) = delete;
  OrtUpsampler& operator=(const OrtUpsampler&) = delete;

  // Shapes the model was exported for; -1 marks a symbolic dimension (the batch, when exported
  // with a dynamic batch).
  const std::vector<int64_t>& image_shape() const;     // (B, 3, Hi, Wi)
  const std::vector<int64_t>& features_shape() const;  // (B, C, h, w)
  const std::vector<int64_t>& output_shape() const;    // (B, C, H, W)
  // Whether the model contains the fused custom operator (and so loaded the plugin).
  bool uses_plugin() const;
  // Version string of the ONNX Runtime library in use, e.g. "1.32.0".
  static std::string onnxruntime_version();

  // Runs the model on C-order float32 buffers. image_shape / features_shape must match the
  // model's input shapes (symbolic dimensions: any value > 0; both batches equal). `out` is
  // resized to the output's element count (its storage is reused when already that size) and
  // out_shape receives (B, C, H, W).
  void run(const float* image, const std::vector<int64_t>& image_shape, const float* features,
           const std::vector<int64_t>& features_shape, std::vector<float>& out,
           std::vector<int64_t>& out_shape) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace naf

#endif  // NAF_ORT_RUNTIME_H_
