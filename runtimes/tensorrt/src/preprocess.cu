// GPU frame preprocessing and type conversions of the TensorRT backend (preprocess_cuda.h).
#include <cuda_fp16.h>

#include "preprocess_cuda.h"

namespace naf {
namespace trt {
namespace {

constexpr int kThreads = 256;

__constant__ float kMean[3] = {0.485f, 0.456f, 0.406f};
__constant__ float kStd[3] = {0.229f, 0.224f, 0.225f};

unsigned blocks_for(size_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__device__ float unit(uint8_t v) { return __fdiv_rn(static_cast<float>(v), 255.0f); }

// Width pass: one thread per (c, row, output column) -> tmp (3, y_in, x.out).
__global__ void width_pass(const uint8_t* __restrict__ frame, int64_t row_stride, int bgr, DeviceAxis x, int64_t rows,
                           float* __restrict__ tmp) {
  const size_t total = static_cast<size_t>(3) * rows * x.out;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int64_t o = static_cast<int64_t>(i % x.out);
    const int64_t y = static_cast<int64_t>((i / x.out) % rows);
    const int c = static_cast<int>(i / (static_cast<size_t>(x.out) * rows));
    const int src_c = bgr ? 2 - c : c;
    const uint8_t* row = frame + y * row_stride;
    float acc;
    if (x.identity) {
      acc = unit(row[3 * o + src_c]);
    } else {
      const int n = x.count[o];
      const float* w = x.weights + o * x.taps;
      const uint8_t* px = row + 3 * static_cast<int64_t>(x.start[o]) + src_c;
      acc = n > 0 ? __fmul_rn(unit(px[0]), w[0]) : 0.0f;
      for (int j = 1; j < n; ++j) acc = __fadd_rn(acc, __fmul_rn(unit(px[3 * j]), w[j]));
    }
    tmp[i] = acc;
  }
}

// Height pass, clamp, normalise: one thread per (c, output row, output column).
__global__ void height_pass(const float* __restrict__ tmp, DeviceAxis x, DeviceAxis y, void* __restrict__ dst,
                            int dst_half) {
  const size_t total = static_cast<size_t>(3) * y.out * x.out;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int64_t ox = static_cast<int64_t>(i % x.out);
    const int64_t oy = static_cast<int64_t>((i / x.out) % y.out);
    const int c = static_cast<int>(i / (static_cast<size_t>(x.out) * y.out));
    const float* plane = tmp + static_cast<size_t>(c) * y.in * x.out;
    float acc;
    if (y.identity) {
      acc = plane[oy * x.out + ox];
    } else {
      const int n = y.count[oy];
      const float* w = y.weights + oy * y.taps;
      const float* src = plane + static_cast<int64_t>(y.start[oy]) * x.out + ox;
      acc = n > 0 ? __fmul_rn(src[0], w[0]) : 0.0f;
      for (int j = 1; j < n; ++j) acc = __fadd_rn(acc, __fmul_rn(src[static_cast<int64_t>(j) * x.out], w[j]));
    }
    const float v = fminf(fmaxf(acc, 0.0f), 1.0f);
    const float normalised = __fdiv_rn(__fsub_rn(v, kMean[c]), kStd[c]);
    if (dst_half) {
      static_cast<__half*>(dst)[i] = __float2half_rn(normalised);
    } else {
      static_cast<float*>(dst)[i] = normalised;
    }
  }
}

__global__ void half_to_float_kernel(const __half* __restrict__ src, float* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = __half2float(src[i]);
  }
}

__global__ void float_to_half_kernel(const float* __restrict__ src, __half* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = __float2half_rn(src[i]);
  }
}

unsigned grid_for(size_t n) {
  const unsigned b = blocks_for(n);
  return b == 0 ? 1 : (b > 65535u * 8u ? 65535u * 8u : b);  // grid-stride loops cover the rest
}

}  // namespace

cudaError_t preprocess_frame(const uint8_t* frame, int64_t row_stride, bool bgr, const DeviceAxis& x,
                             const DeviceAxis& y, float* tmp, void* dst, bool dst_half, cudaStream_t stream) {
  const size_t first = static_cast<size_t>(3) * y.in * x.out;
  width_pass<<<grid_for(first), kThreads, 0, stream>>>(frame, row_stride, bgr ? 1 : 0, x, y.in, tmp);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  const size_t second = static_cast<size_t>(3) * y.out * x.out;
  height_pass<<<grid_for(second), kThreads, 0, stream>>>(tmp, x, y, dst, dst_half ? 1 : 0);
  return cudaGetLastError();
}

cudaError_t half_to_float(const uint16_t* src, float* dst, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  half_to_float_kernel<<<grid_for(count), kThreads, 0, stream>>>(reinterpret_cast<const __half*>(src), dst, count);
  return cudaGetLastError();
}

cudaError_t float_to_half(const float* src, uint16_t* dst, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  float_to_half_kernel<<<grid_for(count), kThreads, 0, stream>>>(src, reinterpret_cast<__half*>(dst), count);
  return cudaGetLastError();
}

}  // namespace trt
}  // namespace naf
