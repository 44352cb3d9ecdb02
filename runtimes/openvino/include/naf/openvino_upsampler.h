// naf::OpenVinoUpsampler: the OpenVINO backend of naf::Upsampler.
//
// Runs an exported OpenVINO IR (.xml + .bin, naf-export --target openvino) or an .onnx file. When
// the model uses a naf operation (IR: an operation of version naf_opset1; ONNX: the `naf` domain)
// the extension library libnaf_openvino.so is registered first (ov::Core::add_extension); it
// only loads into the OpenVINO release it was built against, which is checked (its
// naf_openvino.json) before loading. The model is compiled once, in the constructor.
//
// Thread-safety: run() may be called from several threads at once. Each concurrent call leases an
// ov::InferRequest (with its conversion buffers) from a pool; requests are created on first need
// and reused for every later frame, so a single-threaded caller uses exactly one. Inputs and the
// caller's output buffer are bound to the request as tensors over the caller's memory.
#ifndef NAF_OPENVINO_UPSAMPLER_H_
#define NAF_OPENVINO_UPSAMPLER_H_

#include <memory>
#include <string>

#include "naf/upsampler.h"

namespace naf {

class NAF_RUNTIME_API OpenVinoUpsampler final : public Upsampler {
 public:
  // model_path: .xml (its .bin next to it) or .onnx. Uses options.threads
  // (INFERENCE_NUM_THREADS), options.openvino (device, inference_precision, cache_dir),
  // options.plugin_path (default: libnaf_openvino.so next to this library), options.channel_order.
  explicit OpenVinoUpsampler(const std::string& model_path, const UpsamplerOptions& options = UpsamplerOptions());
  ~OpenVinoUpsampler() override;

  Backend backend() const override { return Backend::kOpenVino; }
  std::string runtime_version() const override { return openvino_version(); }
  bool uses_plugin() const override;
  std::string plugin_path() const override;
  // The OpenVINO release in use, e.g. "2026.4.1".
  static std::string openvino_version();
  // The inference precision the model was compiled with ("f32", "bf16", ...).
  std::string inference_precision() const;

 private:
  void execute(const Request& request) override;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace naf

#endif  // NAF_OPENVINO_UPSAMPLER_H_
