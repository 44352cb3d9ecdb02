// naf::TensorRtUpsampler: the TensorRT backend of naf::Upsampler (TensorRT >= 10, CUDA >= 12).
//
// Runs a serialized engine (naf-export --target tensorrt: naf_<precision>.engine and its .json
// sidecar, or trtexec --saveEngine). The plugin library libnaf_tensorrt.so is loaded into
// TensorRT's plugin registry before deserializing (options.plugin_path, else the sidecar's record,
// else the file next to this library); an engine whose sidecar records no plugin loads none.
//
// Device memory is allocated once (grown only for a larger batch of a dynamic-batch engine);
// every run enqueues on one CUDA stream: options.tensorrt.stream, or one this object creates.
//  * run() (naf::Upsampler): host inputs -> host output. Frames are uploaded as uint8 (3 bytes a
//    pixel) and preprocessed on the GPU (resize + normalise + HWC->CHW, same numbers as the CPU
//    path); float16 features are converted on the GPU. Synchronises the stream before returning.
//  * enqueue(): everything already on the device, nothing copied through the host: the caller's
//    buffers are bound to the engine directly when their types match it and they are 256-byte
//    aligned (else copied on the device). Waits on the host only for a new frame size (resize
//    tables) or a larger batch (buffers grow), both refused inside the caller's graph capture.
//  * options.tensorrt.cuda_graph: enqueueV3 is captured into a CUDA graph on first use and
//    replayed afterwards (re-captured when the batch or the bound device addresses change).
//
// Thread-safety: one instance per thread for parallel work; calls on one instance are serialised
// by a mutex inside (one execution context, one set of buffers), and each call's GPU work is
// ordered after the previous call's (an event), whatever streams they use. The caller's current
// CUDA device is restored after every call.
#ifndef NAF_TENSORRT_UPSAMPLER_H_
#define NAF_TENSORRT_UPSAMPLER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "naf/upsampler.h"

namespace naf {

// Inputs that already live on the CUDA device of the upsampler.
struct DeviceInputs {
  // Either a normalised float32 image (batch, 3, Hi, Wi)...
  const float* image = nullptr;
  int64_t batch = 1;
  // ...or one uint8 HWC frame (batch 1), of any size, preprocessed on the GPU.
  const uint8_t* frame = nullptr;
  int64_t frame_height = 0, frame_width = 0, frame_row_stride = 0;  // stride 0: 3 * width
  // Features (batch, C, h, w).
  const void* features = nullptr;
  ElementType features_type = ElementType::kFloat32;
};

class NAF_RUNTIME_API TensorRtUpsampler final : public Upsampler {
 public:
  // engine_path: a .engine / .plan file. Uses options.tensorrt (device, stream, cuda_graph),
  // options.plugin_path and options.channel_order; options.threads does not apply.
  explicit TensorRtUpsampler(const std::string& engine_path, const UpsamplerOptions& options = UpsamplerOptions());
  ~TensorRtUpsampler() override;

  Backend backend() const override { return Backend::kTensorRt; }
  std::string runtime_version() const override { return tensorrt_version(); }
  bool uses_plugin() const override;
  std::string plugin_path() const override;
  // Version of the libnvinfer in use, e.g. "10.14.1".
  static std::string tensorrt_version();

  // Enqueues one inference on `stream` (null: the upsampler's stream) with device inputs and a
  // device output `out` (float32, at least output_size(batch) floats). Returns once enqueued;
  // synchronise `stream` before reading `out`. The inputs must stay valid until then.
  Shape enqueue(const DeviceInputs& inputs, float* out, size_t out_capacity, CUstream_st* stream = nullptr);

 private:
  void execute(const Request& request) override;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace naf

#endif  // NAF_TENSORRT_UPSAMPLER_H_
