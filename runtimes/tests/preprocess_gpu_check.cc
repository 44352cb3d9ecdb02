// The TensorRT backend's frame preprocessing on the GPU (tensorrt/src/preprocess.cu) against the
// CPU path (src/preprocess.cc) it must equal bit for bit: frame sizes up, down and equal to the
// model's, RGB and BGR, a padded row stride, float32 and float16 output; and the float16 <->
// float32 conversions against the CPU's. Run by scripts/gpu_check.py on a GPU; prints one line per
// case and exits 0 when all are equal, 3 when there is no CUDA device.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "float16.h"  // plugins/core/src
#include "preprocess.h"
#include "preprocess_cuda.h"

namespace {

int gFailures = 0;

template <typename T>
T* device_copy(const std::vector<T>& host) {
  void* device = nullptr;
  cudaMalloc(&device, host.size() * sizeof(T) + 1);
  cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(device);
}

naf::trt::DeviceAxis upload(const naf::detail::AxisWeights& a, std::vector<void*>& owned) {
  naf::trt::DeviceAxis d;
  d.in = a.in;
  d.out = a.out;
  d.taps = a.taps;
  d.identity = a.identity();
  int32_t* start = device_copy(a.start);
  int32_t* count = device_copy(a.count);
  float* weights = device_copy(a.weights);
  owned.insert(owned.end(), {start, count, weights});
  d.start = start;
  d.count = count;
  d.weights = weights;
  return d;
}

void check_case(int64_t h, int64_t w, int64_t out_h, int64_t out_w, bool bgr, int64_t pad, bool half) {
  const int64_t stride = 3 * w + pad;
  std::vector<uint8_t> frame(static_cast<size_t>(stride * h));
  uint32_t state = static_cast<uint32_t>(h * 7919 + w * 104729 + pad);
  for (auto& v : frame) v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
  std::vector<float> expected(static_cast<size_t>(3 * out_h * out_w)), tmp;
  naf::detail::preprocess_frame(frame.data(), h, w, stride, bgr, out_h, out_w, expected.data(), tmp);

  std::vector<void*> owned;
  const naf::trt::DeviceAxis x = upload(naf::detail::antialias_bilinear_weights(w, out_w), owned);
  const naf::trt::DeviceAxis y = upload(naf::detail::antialias_bilinear_weights(h, out_h), owned);
  uint8_t* d_frame = device_copy(frame);
  void* d_tmp_raw = nullptr;
  void* d_out = nullptr;
  cudaMalloc(&d_tmp_raw, static_cast<size_t>(3 * h * out_w) * 4);
  float* d_tmp = static_cast<float*>(d_tmp_raw);
  cudaMalloc(&d_out, expected.size() * 4);
  const cudaError_t launched = naf::trt::preprocess_frame(d_frame, stride, bgr, x, y, d_tmp, d_out, half, nullptr);
  const cudaError_t finished = cudaDeviceSynchronize();
  std::vector<float> got(expected.size());
  size_t mismatches = 0;
  if (half) {
    std::vector<uint16_t> bits(expected.size());
    cudaMemcpy(bits.data(), d_out, bits.size() * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < bits.size(); ++i) {
      mismatches += bits[i] != naf_float16::float_to_half_portable(expected[i]);  // rounding of the CPU's value
    }
  } else {
    cudaMemcpy(got.data(), d_out, got.size() * 4, cudaMemcpyDeviceToHost);
    mismatches = static_cast<size_t>(std::memcmp(got.data(), expected.data(), got.size() * 4) != 0);
    if (mismatches) {
      mismatches = 0;
      for (size_t i = 0; i < got.size(); ++i) mismatches += std::memcmp(&got[i], &expected[i], 4) != 0;
    }
  }
  const bool ok = launched == cudaSuccess && finished == cudaSuccess && mismatches == 0;
  std::printf("%s frame %lldx%lld (stride %lld) -> %lldx%lld %s %s: %zu values differ%s\n", ok ? "PASS" : "FAIL",
              static_cast<long long>(h), static_cast<long long>(w), static_cast<long long>(stride),
              static_cast<long long>(out_h), static_cast<long long>(out_w), bgr ? "BGR" : "RGB",
              half ? "float16" : "float32", mismatches,
              launched != cudaSuccess || finished != cudaSuccess ? " (CUDA error)" : "");
  gFailures += !ok;
  for (void* p : owned) cudaFree(p);
  cudaFree(d_frame);
  cudaFree(d_tmp);
  cudaFree(d_out);
}

void check_conversions() {
  std::vector<uint16_t> halves(65536);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(i);
  std::vector<float> floats(halves.size());
  uint16_t* d_half = device_copy(halves);
  void* d_float_raw = nullptr;
  cudaMalloc(&d_float_raw, floats.size() * 4);
  float* d_float = static_cast<float*>(d_float_raw);
  naf::trt::half_to_float(d_half, d_float, halves.size(), nullptr);
  cudaMemcpy(floats.data(), d_float, floats.size() * 4, cudaMemcpyDeviceToHost);
  size_t bad = 0;
  for (size_t i = 0; i < halves.size(); ++i) {
    const float want = naf::detail::half_to_float(halves[i]);
    bad += std::memcmp(&want, &floats[i], 4) != 0 && !(want != want && floats[i] != floats[i]);
  }
  std::printf("%s float16 -> float32, all 65536 bit patterns: %zu differ\n", bad ? "FAIL" : "PASS", bad);
  gFailures += bad != 0;
  std::vector<uint16_t> back(halves.size());
  naf::trt::float_to_half(d_float, d_half, floats.size(), nullptr);
  cudaMemcpy(back.data(), d_half, back.size() * 2, cudaMemcpyDeviceToHost);
  bad = 0;
  for (size_t i = 0; i < back.size(); ++i) {
    const bool nan = ((halves[i] & 0x7c00u) == 0x7c00u) && (halves[i] & 0x3ffu);
    bad += nan ? !(((back[i] & 0x7c00u) == 0x7c00u) && (back[i] & 0x3ffu)) : back[i] != halves[i];
  }
  std::printf("%s float32 -> float16 round trip of every float16: %zu differ\n", bad ? "FAIL" : "PASS", bad);
  gFailures += bad != 0;
  cudaFree(d_half);
  cudaFree(d_float);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP no CUDA device\n");
    return 3;
  }
  check_case(720, 1280, 448, 448, true, 0, false);   // a 720p camera frame, downscaled
  check_case(720, 1280, 448, 448, false, 64, true);  // padded rows, float16 engine input
  check_case(448, 448, 448, 448, false, 0, false);   // already at the model's size: normalise only
  check_case(97, 131, 224, 224, true, 5, false);     // upscaled, odd sizes
  check_case(97, 131, 224, 224, false, 0, true);
  check_conversions();
  std::printf(gFailures ? "%d check(s) failed\n" : "OK\n", gFailures);
  return gFailures ? 1 : 0;
}
