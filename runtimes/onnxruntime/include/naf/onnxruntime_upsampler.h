// naf::OrtUpsampler: the ONNX Runtime backend of naf::Upsampler (CPU execution provider).
//
// Runs naf_fused*.onnx (naf operations: attention, GroupNormSiLU, QGroupNormSiLU, AxialRoPE) with
// the custom-op library libnaf_onnxruntime.so, registered whenever the model imports the `naf`
// domain, or naf_portable.onnx with nothing else. Float32 inputs and output (fp16 and INT8
// exports keep float32 I/O).
//
// Thread-safety: run() may be called from several threads at once on one instance (ONNX Runtime
// sessions are thread-safe); each concurrent call uses its own conversion buffers from a pool,
// and each caller passes its own output buffer. Reuse: one session for the object's lifetime;
// the output is written straight into the caller's buffer.
//
// libonnxruntime is loaded at run time (options.onnxruntime.library), not linked, so one build
// runs with any ONNX Runtime >= 1.14 (C API version 14; the plugin needs >= 1.17), and a missing
// or too old runtime is a RuntimeError of kind kRuntimeUnavailable. No ONNX Runtime header is
// included.
#ifndef NAF_ONNXRUNTIME_UPSAMPLER_H_
#define NAF_ONNXRUNTIME_UPSAMPLER_H_

#include <memory>
#include <string>

#include "naf/upsampler.h"

namespace naf {

class NAF_RUNTIME_API OrtUpsampler final : public Upsampler {
 public:
  // model_path: an exported .onnx file. Uses options.threads (intra-op threads),
  // options.onnxruntime (lean_memory, library), options.plugin_path (default: libnaf_onnxruntime.so
  // next to this library) and options.channel_order.
  explicit OrtUpsampler(const std::string& model_path, const UpsamplerOptions& options = UpsamplerOptions());
  ~OrtUpsampler() override;

  Backend backend() const override { return Backend::kOnnxRuntime; }
  std::string runtime_version() const override { return onnxruntime_version(); }
  bool uses_plugin() const override;
  std::string plugin_path() const override;
  // Version string of the ONNX Runtime library in use, e.g. "1.32.0" (loads the default one when
  // none is loaded yet; "(not loaded)" when there is none).
  static std::string onnxruntime_version();

 private:
  void execute(const Request& request) override;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace naf

#endif  // NAF_ONNXRUNTIME_UPSAMPLER_H_
