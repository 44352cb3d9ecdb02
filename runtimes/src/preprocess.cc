// CPU preprocessing; rule and rounding in preprocess.h. Built with -ffp-contract=off: the products
// and sums must round as PyTorch's float32 code does, not fuse into FMAs.
#include "preprocess.h"

#include "float16.h"  // plugins/core/src: the core's portable conversion

#include <algorithm>
#include <cmath>
#include <cstring>

namespace naf {
namespace detail {

AxisWeights antialias_bilinear_weights(int64_t in, int64_t out) {
  // PyTorch (upsample, antialias=True, align_corners=False, no scale factor given), with its
  // types: the scale and every weight are float32, `center`, `support` and the filter argument go
  // through double where PyTorch's expressions mix in a double literal.
  AxisWeights w;
  w.in = in;
  w.out = out;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = scale >= 1.0f ? static_cast<float>(1.0 * scale) : 1.0f;  // (interp_size / 2) * scale
  w.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  const float invscale = scale >= 1.0f ? static_cast<float>(1.0 / scale) : 1.0f;
  w.start.resize(static_cast<size_t>(out));
  w.count.resize(static_cast<size_t>(out));
  w.weights.assign(static_cast<size_t>(out) * static_cast<size_t>(w.taps), 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const float center = static_cast<float>(scale * (static_cast<double>(i) + 0.5));
    const int64_t xmin = std::max<int64_t>(static_cast<int64_t>(static_cast<double>(center - support) + 0.5), 0);
    int64_t xsize = std::min<int64_t>(static_cast<int64_t>(static_cast<double>(center + support) + 0.5), in) - xmin;
    xsize = std::min<int64_t>(std::max<int64_t>(xsize, 0), w.taps);
    float* wt = &w.weights[static_cast<size_t>(i) * static_cast<size_t>(w.taps)];
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; ++j) {
      // (j + xmin - center + 0.5) * invscale: the integer sum meets the float center as float.
      const float arg = static_cast<float>((static_cast<double>(static_cast<float>(j + xmin) - center) + 0.5) * invscale);
      const float a = std::fabs(arg);
      const float v = a < 1.0f ? static_cast<float>(1.0 - a) : 0.0f;
      wt[j] = v;
      total += v;
    }
    if (total != 0.0f) {
      for (int64_t j = 0; j < xsize; ++j) wt[j] /= total;
    }
    w.start[static_cast<size_t>(i)] = static_cast<int32_t>(xmin);
    w.count[static_cast<size_t>(i)] = static_cast<int32_t>(xsize);
  }
  return w;
}

namespace {

// u8 / 255 in float32, tabulated (the same correctly rounded quotients).
struct UnitTable {
  float v[256];
  UnitTable() {
    for (int i = 0; i < 256; ++i) v[i] = static_cast<float>(i) / 255.0f;
  }
};
const UnitTable& unit_table() {
  static const UnitTable table;
  return table;
}

}  // namespace

void preprocess_frame(const uint8_t* frame, int64_t height, int64_t width, int64_t row_stride, bool bgr,
                      int64_t out_h, int64_t out_w, float* dst, std::vector<float>& tmp) {
  const float* unit = unit_table().v;
  const AxisWeights wx = antialias_bilinear_weights(width, out_w);
  const AxisWeights wy = antialias_bilinear_weights(height, out_h);
  const size_t plane_tmp = static_cast<size_t>(height) * static_cast<size_t>(out_w);
  tmp.resize(3 * plane_tmp);
  // Width pass (or the plain conversion when the width is unchanged): frame -> tmp (3, height, out_w).
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = frame + y * row_stride;
    for (int c = 0; c < 3; ++c) {
      const int src_c = bgr ? 2 - c : c;
      float* t = tmp.data() + static_cast<size_t>(c) * plane_tmp + static_cast<size_t>(y) * static_cast<size_t>(out_w);
      if (wx.identity()) {
        for (int64_t x = 0; x < width; ++x) t[x] = unit[row[3 * x + src_c]];
        continue;
      }
      for (int64_t o = 0; o < out_w; ++o) {
        const float* wt = &wx.weights[static_cast<size_t>(o) * static_cast<size_t>(wx.taps)];
        const uint8_t* px = row + 3 * static_cast<int64_t>(wx.start[static_cast<size_t>(o)]) + src_c;
        const int n = wx.count[static_cast<size_t>(o)];
        float acc = n > 0 ? unit[px[0]] * wt[0] : 0.0f;
        for (int j = 1; j < n; ++j) acc += unit[px[3 * j]] * wt[j];
        t[o] = acc;
      }
    }
  }
  // Height pass (or a copy), clamp, normalise: tmp -> dst (3, out_h, out_w).
  const size_t plane_out = static_cast<size_t>(out_h) * static_cast<size_t>(out_w);
  for (int c = 0; c < 3; ++c) {
    const float mean = kImagenetMean[c], stdev = kImagenetStd[c];
    const float* t = tmp.data() + static_cast<size_t>(c) * plane_tmp;
    float* d = dst + static_cast<size_t>(c) * plane_out;
    for (int64_t o = 0; o < out_h; ++o) {
      float* drow = d + static_cast<size_t>(o) * static_cast<size_t>(out_w);
      if (wy.identity()) {
        std::memcpy(drow, t + static_cast<size_t>(o) * static_cast<size_t>(out_w), sizeof(float) * static_cast<size_t>(out_w));
      } else {
        const float* wt = &wy.weights[static_cast<size_t>(o) * static_cast<size_t>(wy.taps)];
        const float* src = t + static_cast<size_t>(wy.start[static_cast<size_t>(o)]) * static_cast<size_t>(out_w);
        const int n = wy.count[static_cast<size_t>(o)];
        for (int64_t x = 0; x < out_w; ++x) {
          float acc = n > 0 ? src[x] * wt[0] : 0.0f;
          for (int j = 1; j < n; ++j) acc += src[static_cast<size_t>(j) * static_cast<size_t>(out_w) + x] * wt[j];
          drow[x] = acc;
        }
      }
      for (int64_t x = 0; x < out_w; ++x) {
        const float v = std::min(std::max(drow[x], 0.0f), 1.0f);
        drow[x] = (v - mean) / stdev;
      }
    }
  }
}

float half_to_float(uint16_t h) { return naf_float16::half_to_float_portable(h); }

void half_to_float(const uint16_t* src, float* dst, size_t count) {
  for (size_t i = 0; i < count; ++i) dst[i] = half_to_float(src[i]);
}

}  // namespace detail
}  // namespace naf
