// Image preprocessing shared by every backend (the CPU path here, the TensorRT CUDA kernels take
// the same weight tables): uint8 HWC frame -> ImageNet-normalised float CHW at the model's size.
//
// The rule is the Python tool's (naf_export.samples: image_to_tensor, resize_image,
// normalize_image), step by step in float32:
//   x = u8 / 255
//   x = interpolate(x, (Hi, Wi), mode="bilinear", align_corners=False, antialias=True), as PyTorch's
//       CPU kernel: separable, width pass first, then height; a pass whose size is unchanged is
//       skipped (so a frame at the model's size is copied exactly)
//   x = clamp(x, 0, 1)
//   x = (x - mean[c]) / std[c]
// A frame at the model's size gives bit for bit the Python tool's tensor. A resized one agrees
// to about one float32 rounding step per value (measured max 6e-7 after normalisation): PyTorch's
// compiled kernel contracts some of its multiply-adds into FMAs, which this code does not try to
// mimic.
// Internal header (not installed).
#ifndef NAF_RUNTIMES_PREPROCESS_H_
#define NAF_RUNTIMES_PREPROCESS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace naf {
namespace detail {

constexpr float kImagenetMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kImagenetStd[3] = {0.229f, 0.224f, 0.225f};

// Antialiased bilinear weights of one axis, in PyTorch's float32 arithmetic: output index o reads
// inputs start[o] .. start[o] + count[o] - 1 with weights[o * taps + j].
struct AxisWeights {
  int64_t in = 0, out = 0;
  int taps = 0;  // maximum taps per output (row length of `weights`)
  std::vector<int32_t> start, count;
  std::vector<float> weights;
  bool identity() const { return in == out; }
};
AxisWeights antialias_bilinear_weights(int64_t in, int64_t out);

// Frame (height x width x 3 uint8, rows `row_stride` bytes apart, RGB or BGR) -> `dst`
// (3, out_h, out_w) float32, the rule above. `tmp` is scratch (reused across calls).
void preprocess_frame(const uint8_t* frame, int64_t height, int64_t width, int64_t row_stride, bool bgr,
                      int64_t out_h, int64_t out_w, float* dst, std::vector<float>& tmp);

// IEEE binary16 -> float32, exact (subnormals, infinities and NaN payloads kept).
float half_to_float(uint16_t h);
void half_to_float(const uint16_t* src, float* dst, size_t count);

}  // namespace detail
}  // namespace naf

#endif  // NAF_RUNTIMES_PREPROCESS_H_
