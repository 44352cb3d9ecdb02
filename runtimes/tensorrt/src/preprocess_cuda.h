// CUDA side of the TensorRT backend's input handling: the frame preprocessing of
// runtimes/src/preprocess.h on the GPU (same weight tables, same float32 rounding: products and
// sums use __fmul_rn/__fadd_rn, so nothing fuses into an FMA and the result equals the CPU path's),
// and float16 <-> float32 conversions for engines whose I/O types differ from the caller's.
// Internal header (not installed). All pointers are device pointers; every function only
// enqueues on `stream` and returns the launch error.
#ifndef NAF_RUNTIMES_TENSORRT_PREPROCESS_CUDA_H_
#define NAF_RUNTIMES_TENSORRT_PREPROCESS_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace naf {
namespace trt {

// One axis of the resize (detail::AxisWeights uploaded): output o reads `count[o]` inputs from
// `start[o]` with weights[o * taps ...]. `identity`: in == out, the pass is skipped.
struct DeviceAxis {
  int64_t in = 0, out = 0;
  int taps = 0;
  bool identity = false;
  const int32_t* start = nullptr;
  const int32_t* count = nullptr;
  const float* weights = nullptr;
};

// uint8 HWC frame (rows `row_stride` bytes apart) -> dst (3, y.out, x.out), float32 or float16
// (`dst_half`). `tmp` holds 3 * y.in * x.out floats.
cudaError_t preprocess_frame(const uint8_t* frame, int64_t row_stride, bool bgr, const DeviceAxis& x,
                             const DeviceAxis& y, float* tmp, void* dst, bool dst_half, cudaStream_t stream);

cudaError_t half_to_float(const uint16_t* src, float* dst, size_t count, cudaStream_t stream);
cudaError_t float_to_half(const float* src, uint16_t* dst, size_t count, cudaStream_t stream);

}  // namespace trt
}  // namespace naf

#endif  // NAF_RUNTIMES_TENSORRT_PREPROCESS_CUDA_H_
