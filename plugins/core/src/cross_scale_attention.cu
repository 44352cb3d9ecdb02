// CUDA forward of the cross-scale neighborhood attention (contract: DESIGN.md section 2,
// API: naf/cross_scale_attention_cuda.h).
//
// out[b, n*e+u, i, j] = sum_{a,c} softmax_{a,c}(scale * <q[b, n, :, i, j], k[b, n, :, R[i,a], Cc[j,c]]>)
//                                  * v[b, n*e+u, R[i,a], Cc[j,c]]
//
// Main kernel (csna_tiled_kernel): one CTA per (tile of tile_h x 16 output pixels, head, batch),
// one thread per pixel of the tile.
//
//   1. The tile's row and column index tables are read and range-checked; the valid entries give
//      the bounding rectangle of every window in the tile (RH x RW low-resolution positions, the
//      "union"). Neighbouring output pixels share most of their window (all pixels of one
//      low-resolution cell share it exactly when H % h == 0), so the union is small: 9 x 9 for
//      the main case (d = H/h = 16, tile 8 x 16 aligned to the cells).
//   2. The head's keys over the union are staged once in shared memory (fp32, position-major).
//   3. Phase 1, one thread per pixel: the logits of the pixel's *distinct* window positions, query
//      held in registers 32 channels at a time, keys read from shared memory (a broadcast when
//      the warp shares the window). The softmax (max-subtracted, fp32) turns them into weights
//      that are written into a dense (union position x pixel) matrix P, zero outside the
//      pixel's window; a position that appears twice in a window (nearest-exact upsampling
//      repeats source rows) gets its multiplicity as a factor, exactly as softmax over the K*K
//      taps would give it.
//   4. Phase 2: out(pixels x channels) = P^T (pixels x union) * V(union x channels), a small
//      dense product. The values are staged over the keys' shared memory (in chunks of channels
//      when the shared-memory budget needs it); each lane computes 4 pixels x 4 channels with
//      two 128-bit shared loads per union position (conflict-free by construction), and writes
//      4 consecutive pixels of each channel (NCHW, 16-byte stores when aligned).
//
// Tiles whose union turns out larger than the capacity chosen on the host (only possible with
// index tables that are not the contract's) fall back, inside the CTA, to a direct per-pixel
// computation from global memory, so correctness never depends on the capacity estimate. A
// separate naive kernel (same per-pixel routine) serves shapes whose tiles cannot fit in shared
// memory at all (very large kernel sizes or head dims).
//
// Out-of-range index entries never cause an out-of-bounds read: the affected output pixels are
// written as NaN and *error_flag is set to 1.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>

#include "naf/cross_scale_attention_cuda.h"

#ifndef NAF_CSNA_PADDED_STAGING
#define NAF_CSNA_PADDED_STAGING 0  // CMake NAF_CUDA_PADDED_STAGING: see choose_config
#endif

namespace {

constexpr int kTileW = 16;         // output columns per tile: 4 lanes x 4 pixels in phase 2
constexpr int kQueryChunk = 32;    // query channels held in registers at a time (phase 1)
constexpr int kChannelBlock = 32;  // value channels per warp item in phase 2: 8 lanes x 4
constexpr int kMaxTileH = 8;       // up to 8 x 16 = 128 pixels = 128 threads per CTA
constexpr int kNaiveThreads = 128;
constexpr int kNaiveChannels = 8;  // value channels accumulated per pass in the naive routine

struct Params {
  const void* query;
  const void* key;
  const void* value;
  const int32_t* row_index;
  const int32_t* col_index;
  void* output;
  int32_t* error_flag;

  int batch, dq_all, c_all;   // B, Dq, C
  int H, W, h, w, K, heads;   // output size, input size, kernel size, heads
  int dq, e;                  // per-head query/key and value channels
  float scale;

  // Tiled-kernel configuration (chosen on the host, see choose_config).
  int tile_h;         // output rows per tile; threads per CTA = tile_h * kTileW
  int tiles_w;        // tiles along W
  int u_cap;          // capacity of the staged union, in low-resolution positions
  int dq_pad;         // dq rounded up to kQueryChunk (channels staged per key position)
  int region_stride;  // floats per position in the key/value staging region
  int ec;             // value channels staged per pass (multiple of kChannelBlock)
  int vec_store;      // output rows can be written 4 pixels at a time
};

// ---- storage-type helpers -------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

template <typename T>
__device__ __forceinline__ float load(const T* __restrict__ base, int64_t offset) {
  return to_float(base[offset]);
}

// Four consecutive outputs; dst is 16-byte (float) or 4-byte (half) aligned by construction.
__device__ __forceinline__ void store4(float* dst, const float (&o)[4]) {
  *reinterpret_cast<float4*>(dst) = make_float4(o[0], o[1], o[2], o[3]);
}
__device__ __forceinline__ void store4(__half* dst, const float (&o)[4]) {
  __half2* d2 = reinterpret_cast<__half2*>(dst);
  d2[0] = __floats2half2_rn(o[0], o[1]);
  d2[1] = __floats2half2_rn(o[2], o[3]);
}

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

__device__ __forceinline__ void raise_error(int32_t* flag) {
  if (flag != nullptr) *reinterpret_cast<volatile int32_t*>(flag) = 1;
}

__host__ __device__ __forceinline__ int round_up(int x, int m) { return (x + m - 1) / m * m; }

// ---- per-pixel direct computation (fallback) --------------------------------------------------

// Computes every channel of head n at output pixel (i, j) straight from global memory: one pass
// for the softmax maximum, then, per group of kNaiveChannels channels, one pass accumulating
// exp(logit - max) and the weighted values. Slow (logits are recomputed per channel group) but
// needs no shared memory and accepts any index table.
template <typename T>
__device__ __noinline__ void naive_pixel(const Params& p, int b, int n, int i, int j) {
  const int K = p.K;
  const int32_t* __restrict__ rows = p.row_index + static_cast<int64_t>(i) * K;
  const int32_t* __restrict__ cols = p.col_index + static_cast<int64_t>(j) * K;
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int64_t hw = static_cast<int64_t>(p.h) * p.w;
  T* __restrict__ out = static_cast<T*>(p.output) +
                        (static_cast<int64_t>(b) * p.c_all + static_cast<int64_t>(n) * p.e) * HW +
                        static_cast<int64_t>(i) * p.W + j;

  bool valid = true;
  for (int a = 0; a < K; ++a) {
    const int r = rows[a];
    const int c = cols[a];
    valid = valid && r >= 0 && r < p.h && c >= 0 && c < p.w;
  }
  if (!valid) {
    for (int u = 0; u < p.e; ++u) out[u * HW] = from_float<T>(quiet_nan());
    raise_error(p.error_flag);
    return;
  }

  const T* __restrict__ q = static_cast<const T*>(p.query) +
                            (static_cast<int64_t>(b) * p.dq_all + static_cast<int64_t>(n) * p.dq) * HW +
                            static_cast<int64_t>(i) * p.W + j;
  const T* __restrict__ k = static_cast<const T*>(p.key) +
                            (static_cast<int64_t>(b) * p.dq_all + static_cast<int64_t>(n) * p.dq) * hw;
  const T* __restrict__ v = static_cast<const T*>(p.value) +
                            (static_cast<int64_t>(b) * p.c_all + static_cast<int64_t>(n) * p.e) * hw;

  auto logit = [&](int64_t pos) {
    float s = 0.f;
    for (int t = 0; t < p.dq; ++t) s = fmaf(load(q, t * HW), load(k, t * hw + pos), s);
    return s * p.scale;
  };

  float m = -INFINITY;
  for (int a = 0; a < K; ++a)
    for (int c = 0; c < K; ++c) m = fmaxf(m, logit(static_cast<int64_t>(rows[a]) * p.w + cols[c]));

  for (int u0 = 0; u0 < p.e; u0 += kNaiveChannels) {
    float acc[kNaiveChannels];
#pragma unroll
    for (int x = 0; x < kNaiveChannels; ++x) acc[x] = 0.f;
    float sum = 0.f;
    for (int a = 0; a < K; ++a) {
      for (int c = 0; c < K; ++c) {
        const int64_t pos = static_cast<int64_t>(rows[a]) * p.w + cols[c];
        const float wgt = expf(logit(pos) - m);
        sum += wgt;
#pragma unroll
        for (int x = 0; x < kNaiveChannels; ++x)
          if (u0 + x < p.e) acc[x] = fmaf(wgt, load(v, (u0 + x) * hw + pos), acc[x]);
      }
    }
    const float inv = 1.f / sum;
#pragma unroll
    for (int x = 0; x < kNaiveChannels; ++x)
      if (u0 + x < p.e) out[(u0 + x) * HW] = from_float<T>(acc[x] * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kNaiveThreads)
    csna_naive_kernel(const __grid_constant__ Params p) {
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  const int64_t total = HW * p.heads * p.batch;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int j = static_cast<int>(idx % p.W);
  const int i = static_cast<int>((idx / p.W) % p.H);
  const int n = static_cast<int>((idx / HW) % p.heads);
  const int b = static_cast<int>(idx / (HW * p.heads));
  naive_pixel<T>(p, b, n, i, j);
}

// ---- tiled kernel -------------------------------------------------------------------------------

// Reads the K index entries of output row/column `pos` (one thread per row/column of the tile).
// Returns -1 if an entry is out of [0, in_size), 0 otherwise; widens [bounds[0], bounds[1]] by
// the valid entries.
__device__ int scan_window(const int32_t* __restrict__ index, int pos, int K, int in_size,
                           int* bounds) {
  int lo = INT_MAX, hi = INT_MIN;
  bool valid = true;
  for (int a = 0; a < K; ++a) {
    const int v = index[static_cast<int64_t>(pos) * K + a];
    valid = valid && v >= 0 && v < in_size;
    lo = min(lo, v);
    hi = max(hi, v);
  }
  if (!valid) return -1;
  atomicMin(&bounds[0], lo);
  atomicMax(&bounds[1], hi);
  return 0;
}

// Distinct window entries of output row/column `pos`, relative to `origin`, with multiplicity.
// Returns the number of distinct entries.
__device__ int list_window(const int32_t* __restrict__ index, int pos, int K, int origin,
                           int* list, int* mult) {
  int count = 0;
  for (int a = 0; a < K; ++a) {
    const int v = index[static_cast<int64_t>(pos) * K + a] - origin;
    int x = 0;
    while (x < count && list[x] != v) ++x;
    if (x < count) {
      ++mult[x];
    } else {
      list[count] = v;
      mult[count] = 1;
      ++count;
    }
  }
  return count;
}

// Copies channels [0, channels) of the union positions from global memory (channel planes of
// h*w elements at `base`) into region[u * stride + channel] as float; channels [channels, padded)
// are zero-filled. Consecutive threads take consecutive positions of one channel; the flat index
// is advanced without divisions. Returns whether this thread staged a NaN or infinite value.
template <typename T>
__device__ bool stage_union(float* region, int stride, const T* __restrict__ base, int64_t hw,
                            const int* pos_offset, int U, int channels, int padded, int tid,
                            int nthreads) {
  if (U == 0) return false;
  int t = tid / U;
  int u = tid - t * U;
  const int dt = nthreads / U;
  const int du = nthreads - dt * U;
  bool nonfinite = false;
  while (t < padded) {
    const float x = (t < channels) ? load(base, t * hw + pos_offset[u]) : 0.f;
    nonfinite = nonfinite || !isfinite(x);
    region[u * stride + t] = x;
    u += du;
    t += dt;
    if (u >= U) {
      u -= U;
      ++t;
    }
  }
  return nonfinite;
}

template <typename T>
__global__ void __launch_bounds__(kMaxTileH * kTileW)
    csna_tiled_kernel(const __grid_constant__ Params p) {
  extern __shared__ float4 smem_f4[];
  const int tile_h = p.tile_h;
  const int npix = tile_h * kTileW;  // == blockDim.x
  const int nthreads = npix;
  const int K = p.K;
  const int tid = threadIdx.x;

  // Shared memory: P (union x pixels), the key/value staging region (union x region_stride),
  // then the small per-row / per-column window tables.
  float* probs = reinterpret_cast<float*>(smem_f4);
  float* region = probs + p.u_cap * npix;
  int* row_list = reinterpret_cast<int*>(region + p.u_cap * p.region_stride);  // [tile_h][K]
  int* row_mult = row_list + tile_h * K;                                        // [tile_h][K]
  int* col_list = row_mult + tile_h * K;                                        // [kTileW][K]
  int* col_mult = col_list + kTileW * K;                                        // [kTileW][K]
  int* row_count = col_mult + kTileW * K;  // [tile_h]: distinct entries, 0 outside, -1 invalid
  int* col_count = row_count + tile_h;     // [kTileW]
  int* bounds = col_count + kTileW;        // row min, row max, col min, col max
  int* pos_offset = bounds + 4;            // [u_cap]: offset of union position u in an h*w plane

  const int tile = blockIdx.x;
  const int i0 = (tile / p.tiles_w) * tile_h;
  const int j0 = (tile % p.tiles_w) * kTileW;
  const int n = blockIdx.y;
  const int b = blockIdx.z;

  // ---- 1. window tables and the union rectangle
  if (tid == 0) {
    bounds[0] = INT_MAX;
    bounds[1] = INT_MIN;
    bounds[2] = INT_MAX;
    bounds[3] = INT_MIN;
  }
  __syncthreads();
  const bool row_thread = tid < tile_h;
  const bool col_thread = !row_thread && tid < tile_h + kTileW;
  const int axis_pos = row_thread ? i0 + tid : j0 + (tid - tile_h);
  int axis_state = 0;  // 0: outside the map or not an axis thread, -1: invalid entry
  if (row_thread && axis_pos < p.H)
    axis_state = scan_window(p.row_index, axis_pos, K, p.h, &bounds[0]);
  if (col_thread && axis_pos < p.W)
    axis_state = scan_window(p.col_index, axis_pos, K, p.w, &bounds[2]);
  if (axis_state < 0) raise_error(p.error_flag);
  __syncthreads();

  const int rmin = bounds[0];
  const int cmin = bounds[2];
  const int RH = bounds[1] >= rmin ? bounds[1] - rmin + 1 : 0;
  const int RW = bounds[3] >= cmin ? bounds[3] - cmin + 1 : 0;
  const int U = RH * RW;  // RH <= h, RW <= w: no overflow for any map that fits in memory

  if (U > p.u_cap) {
    // The windows of this tile spread wider than the host's estimate: direct computation.
    const int i = i0 + tid / kTileW;
    const int j = j0 + tid % kTileW;
    if (i < p.H && j < p.W) naive_pixel<T>(p, b, n, i, j);
    return;  // CTA-uniform branch: no barrier below is reached by only part of the CTA
  }

  if (row_thread) {
    int count = axis_state;
    if (axis_pos < p.H && axis_state == 0)
      count = list_window(p.row_index, axis_pos, K, rmin, row_list + tid * K, row_mult + tid * K);
    row_count[tid] = count;
  } else if (col_thread) {
    const int tj = tid - tile_h;
    int count = axis_state;
    if (axis_pos < p.W && axis_state == 0)
      count = list_window(p.col_index, axis_pos, K, cmin, col_list + tj * K, col_mult + tj * K);
    col_count[tj] = count;
  }
  for (int u = tid; u < U; u += nthreads) {
    const int r = u / RW;
    pos_offset[u] = (rmin + r) * p.w + cmin + (u - r * RW);
  }
  __syncthreads();

  // ---- 2. P = 0, keys of the union -> region[u][t] (t < dq_pad, zero-padded)
  for (int idx = tid; idx < U * npix; idx += nthreads) probs[idx] = 0.f;
  const int64_t hw = static_cast<int64_t>(p.h) * p.w;
  const T* __restrict__ kbase =
      static_cast<const T*>(p.key) +
      (static_cast<int64_t>(b) * p.dq_all + static_cast<int64_t>(n) * p.dq) * hw;
  stage_union(region, p.region_stride, kbase, hw, pos_offset, U, p.dq, p.dq_pad, tid, nthreads);
  __syncthreads();

  // ---- 3. phase 1: logits and softmax, one thread per pixel
  const int64_t HW = static_cast<int64_t>(p.H) * p.W;
  {
    const int ti = tid / kTileW;
    const int tj = tid % kTileW;
    const int i = i0 + ti;
    const int j = j0 + tj;
    const int nr = row_count[ti];
    const int nc = col_count[tj];
    if (i < p.H && j < p.W && nr > 0 && nc > 0) {
      const int* rl = row_list + ti * K;
      const int* cl = col_list + tj * K;
      const T* __restrict__ qpix =
          static_cast<const T*>(p.query) +
          (static_cast<int64_t>(b) * p.dq_all + static_cast<int64_t>(n) * p.dq) * HW +
          static_cast<int64_t>(i) * p.W + j;

      for (int t0 = 0; t0 < p.dq; t0 += kQueryChunk) {
        float qr[kQueryChunk];
#pragma unroll
        for (int x = 0; x < kQueryChunk; ++x)
          qr[x] = (t0 + x < p.dq) ? load(qpix, (t0 + x) * HW) : 0.f;
        for (int a = 0; a < nr; ++a) {
          const int urow = rl[a] * RW;
          for (int c = 0; c < nc; ++c) {
            const int u = urow + cl[c];
            const float4* kv = reinterpret_cast<const float4*>(region + u * p.region_stride + t0);
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;  // four chains for ILP
#pragma unroll
            for (int x = 0; x < kQueryChunk / 4; ++x) {
              const float4 kk = kv[x];
              s0 = fmaf(qr[4 * x + 0], kk.x, s0);
              s1 = fmaf(qr[4 * x + 1], kk.y, s1);
              s2 = fmaf(qr[4 * x + 2], kk.z, s2);
              s3 = fmaf(qr[4 * x + 3], kk.w, s3);
            }
            float* slot = probs + u * npix + tid;
            const float dot = (s0 + s1) + (s2 + s3);
            *slot = (t0 == 0) ? dot : *slot + dot;
          }
        }
      }

      // Softmax over the K*K taps = over distinct positions weighted by their multiplicity.
      const int* rm = row_mult + ti * K;
      const int* cm = col_mult + tj * K;
      float m = -INFINITY;
      for (int a = 0; a < nr; ++a)
        for (int c = 0; c < nc; ++c)
          m = fmaxf(m, p.scale * probs[(rl[a] * RW + cl[c]) * npix + tid]);
      float sum = 0.f;
      for (int a = 0; a < nr; ++a) {
        for (int c = 0; c < nc; ++c) {
          float* slot = probs + (rl[a] * RW + cl[c]) * npix + tid;
          const float wgt = static_cast<float>(rm[a] * cm[c]) * expf(p.scale * *slot - m);
          *slot = wgt;
          sum += wgt;
        }
      }
      const float inv = 1.f / sum;
      for (int a = 0; a < nr; ++a)
        for (int c = 0; c < nc; ++c) probs[(rl[a] * RW + cl[c]) * npix + tid] *= inv;
    }
  }

  // ---- 4. phase 2: out = P^T V, values staged chunk by chunk over the key region
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int nwarps = nthreads / 32;
  const int pg = lane & 3;   // pixel group: pixels 4*pg .. 4*pg+3 of a tile row
  const int cg = lane >> 2;  // channel group: channels 4*cg .. 4*cg+3 of a 32-channel block
  const T* __restrict__ vbase =
      static_cast<const T*>(p.value) +
      (static_cast<int64_t>(b) * p.c_all + static_cast<int64_t>(n) * p.e) * hw;
  T* __restrict__ obase = static_cast<T*>(p.output) +
                          (static_cast<int64_t>(b) * p.c_all + static_cast<int64_t>(n) * p.e) * HW;

  for (int ch0 = 0; ch0 < p.e; ch0 += p.ec) {
    const int nch = min(p.ec, p.e - ch0);
    const int nch_pad = round_up(nch, kChannelBlock);
    __syncthreads();  // phase 1 / the previous chunk is done with the region
    const bool chunk_nonfinite = __syncthreads_or(
        stage_union(region, p.region_stride, vbase + ch0 * hw, hw, pos_offset, U, nch, nch_pad, tid, nthreads));

    if (chunk_nonfinite) {
      // A NaN/inf value must reach exactly the outputs whose window holds it, but the dense
      // product below multiplies it by the zero weights of pixels whose window misses it
      // (0 * inf = NaN). Such chunks (rare) sum each pixel's own window positions instead.
      const int ti = tid / kTileW;
      const int tj = tid % kTileW;
      const int i = i0 + ti;
      const int j = j0 + tj;
      const int nr = row_count[ti];
      const int nc = col_count[tj];
      if (i < p.H && j < p.W) {
        const int* rl = row_list + ti * K;
        const int* cl = col_list + tj * K;
        T* __restrict__ opix = obase + static_cast<int64_t>(ch0) * HW + static_cast<int64_t>(i) * p.W + j;
        for (int ch = 0; ch < nch; ++ch) {
          float acc = 0.f;
          for (int a = 0; a < nr; ++a)
            for (int c = 0; c < nc; ++c) {
              const int u = rl[a] * RW + cl[c];
              acc = fmaf(probs[u * npix + tid], region[u * p.region_stride + ch], acc);
            }
          opix[static_cast<int64_t>(ch) * HW] = from_float<T>((nr < 0 || nc < 0) ? quiet_nan() : acc);
        }
      }
      continue;  // CTA-uniform: every thread took this branch
    }

    const int nblocks = nch_pad / kChannelBlock;
    for (int item = warp; item < tile_h * nblocks; item += nwarps) {
      const int ti = item / nblocks;
      const int cb = item - ti * nblocks;
      const int i = i0 + ti;
      if (i >= p.H) continue;  // warp-uniform

      float acc[4][4];
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] = 0.f;
      const float* prow = probs + ti * kTileW + pg * 4;
      const float* vrow = region + cb * kChannelBlock + cg * 4;
      for (int u = 0; u < U; ++u) {
        const float4 pv = *reinterpret_cast<const float4*>(prow + u * npix);
        const float4 vv = *reinterpret_cast<const float4*>(vrow + u * p.region_stride);
        const float pw[4] = {pv.x, pv.y, pv.z, pv.w};
        const float vw[4] = {vv.x, vv.y, vv.z, vv.w};
#pragma unroll
        for (int x = 0; x < 4; ++x)
#pragma unroll
          for (int y = 0; y < 4; ++y) acc[x][y] = fmaf(pw[x], vw[y], acc[x][y]);
      }

      const int jb = j0 + pg * 4;
      const bool row_bad = row_count[ti] < 0;
      bool bad[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) bad[x] = row_bad || col_count[pg * 4 + x] < 0;
#pragma unroll
      for (int y = 0; y < 4; ++y) {
        const int ch = cb * kChannelBlock + cg * 4 + y;  // within the chunk
        if (ch >= nch) break;
        T* orow = obase + static_cast<int64_t>(ch0 + ch) * HW + static_cast<int64_t>(i) * p.W;
        float o[4];
#pragma unroll
        for (int x = 0; x < 4; ++x) o[x] = bad[x] ? quiet_nan() : acc[x][y];
        if (p.vec_store && jb + 3 < p.W) {
          store4(orow + jb, o);
        } else {
#pragma unroll
          for (int x = 0; x < 4; ++x)
            if (jb + x < p.W) orow[jb + x] = from_float<T>(o[x]);
        }
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------

// Input index that nearest-exact resizing in_size -> out_size reads for output index p (closed
// form; PyTorch's float arithmetic can differ by one for some sizes, hence the margin below).
int approx_source(int64_t p, int in_size, int out_size) {
  const int64_t s = static_cast<int64_t>(std::floor((static_cast<double>(p) + 0.5) * in_size / out_size));
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(s, 0), in_size - 1));
}

// Largest extent (max - min + 1) of the windows of `tile` consecutive output indices, predicted
// from the contract's formula (DESIGN.md section 2).
int predict_span(int out_size, int in_size, int K, int tile) {
  const int d = out_size / in_size;
  int best = 0;
  for (int t0 = 0; t0 < out_size; t0 += tile) {
    int lo = INT_MAX, hi = INT_MIN;
    for (int i = t0; i < std::min(out_size, t0 + tile); ++i) {
      const int g = i % d;
      const int len = (out_size - g + d - 1) / d;
      const int s = std::min(std::max(i / d - K / 2, 0), len - K);
      lo = std::min(lo, approx_source(g + static_cast<int64_t>(d) * s, in_size, out_size));
      hi = std::max(hi, approx_source(g + static_cast<int64_t>(d) * (s + K - 1), in_size, out_size));
    }
    best = std::max(best, hi - lo + 1);
  }
  const int margin = (out_size % in_size == 0) ? 0 : 2;  // exact when the ratio is an integer
  return std::min(in_size, best + margin);
}

size_t tiled_smem_bytes(int tile_h, int u_cap, int region_stride, int K) {
  const size_t floats = static_cast<size_t>(u_cap) * (tile_h * kTileW + region_stride);
  const size_t ints =
      static_cast<size_t>(2 * tile_h * K + 2 * kTileW * K + tile_h + kTileW + 4 + u_cap);
  return (floats + ints) * 4;
}

// Picks tile height, staged-union capacity and value chunk for the tiled kernel. Prefers a
// configuration that leaves room for two CTAs per SM, then one that fits at all. Returns the
// shared-memory size, or 0 when no configuration fits (then the naive kernel runs).
size_t choose_config(Params& p, int smem_limit) {
  const int dq_pad = round_up(p.dq, kQueryChunk);
  const int dq_stride = dq_pad + 4;  // +4 floats: distinct positions start in distinct banks
  const int e_pad = round_up(p.e, kChannelBlock);
  const int col_span = predict_span(p.W, p.w, p.K, kTileW);
  for (int budget : {smem_limit / 2, smem_limit}) {
    for (int tile_h : {8, 4, 2}) {
      const int64_t u_cap64 =
          static_cast<int64_t>(predict_span(p.H, p.h, p.K, tile_h)) * col_span;
      if (u_cap64 > INT_MAX / 1024) continue;
      const int u_cap = static_cast<int>(u_cap64);
      for (int ec = e_pad; ec >= kChannelBlock; ec = round_up(ec / 2, kChannelBlock)) {
#if NAF_CSNA_PADDED_STAGING
        // Experimental (not yet run on a GPU; scripts/gpu_check.py compares it with the default):
        // value chunks keep the +4 padding too. ec is a multiple of 32, so an unpadded stride
        // puts every staged position of a channel in one shared-memory bank (32-way conflicts
        // for e = 96, 192, 256 with 4 heads); stride % 32 == 4 spreads them over 8 banks and keeps
        // the 16-byte alignment of the float4 reads.
        const int stride = std::max(dq_stride, ec + 4);
#else
        const int stride = std::max(dq_stride, ec);
#endif
        const size_t bytes = tiled_smem_bytes(tile_h, u_cap, stride, p.K);
        if (bytes <= static_cast<size_t>(budget)) {
          p.tile_h = tile_h;
          p.u_cap = u_cap;
          p.dq_pad = dq_pad;
          p.region_stride = stride;
          p.ec = ec;
          return bytes;
        }
        if (ec == kChannelBlock) break;
      }
    }
  }
  return 0;
}

constexpr int kMaxDevices = 64;
std::atomic<int> g_smem_optin[kMaxDevices];            // 0: not queried yet
std::atomic<bool> g_attr_set[2][kMaxDevices];          // per storage type

// Opt-in shared memory per block of `device`; on first use also raises the tiled kernels'
// dynamic shared-memory limit to it (a per-function, per-device attribute; setting it once to
// the same value keeps concurrent callers race-free).
int prepare_device(int device, NafDType dtype, cudaError_t* err) {
  *err = cudaSuccess;
  int optin = (device >= 0 && device < kMaxDevices) ? g_smem_optin[device].load() : 0;
  if (optin == 0) {
    *err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (*err != cudaSuccess) return 0;
    if (device >= 0 && device < kMaxDevices) g_smem_optin[device].store(optin);
  }
  const int t = dtype == NAF_DTYPE_FLOAT16 ? 1 : 0;
  if (device < 0 || device >= kMaxDevices || !g_attr_set[t][device].load()) {
    *err = (t == 1) ? cudaFuncSetAttribute(csna_tiled_kernel<__half>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, optin)
                    : cudaFuncSetAttribute(csna_tiled_kernel<float>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    if (*err != cudaSuccess) return 0;
    if (device >= 0 && device < kMaxDevices) g_attr_set[t][device].store(true);
  }
  return optin;
}

bool shape_ok(const NafCsnaShape& s) {
  const int64_t vals[] = {s.batch,    s.query_channels, s.value_channels, s.out_height, s.out_width,
                          s.in_height, s.in_width,      s.kernel_size,    s.num_heads};
  for (int64_t v : vals)
    if (v < 1 || v > INT_MAX) return false;
  if (s.kernel_size % 2 == 0) return false;
  if (s.in_height < s.kernel_size || s.in_width < s.kernel_size) return false;
  if (s.out_height < s.in_height || s.out_width < s.in_width) return false;
  if (s.query_channels % s.num_heads != 0 || s.value_channels % s.num_heads != 0) return false;
  if (s.out_height * s.out_width > INT_MAX || s.in_height * s.in_width > INT_MAX) return false;
  if (s.out_height * s.kernel_size > INT_MAX || s.out_width * s.kernel_size > INT_MAX) return false;
  return true;
}

template <typename T>
cudaError_t launch(Params& p, int smem_limit, cudaStream_t stream) {
  const size_t smem = choose_config(p, smem_limit);
  // Vector stores need 4-pixel groups aligned in memory: W % 4 == 0 and an aligned output base.
  const uintptr_t align = sizeof(T) == 4 ? 16 : 4;
  p.vec_store = (p.W % 4 == 0) && (reinterpret_cast<uintptr_t>(p.output) % align == 0);
  if (smem > 0 && p.heads <= 65535 && p.batch <= 65535) {
    p.tiles_w = (p.W + kTileW - 1) / kTileW;
    const int64_t tiles = static_cast<int64_t>(p.tiles_w) * ((p.H + p.tile_h - 1) / p.tile_h);
    if (tiles <= INT_MAX) {
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads),
                      static_cast<unsigned>(p.batch));
      csna_tiled_kernel<T><<<grid, p.tile_h * kTileW, smem, stream>>>(p);
      return cudaGetLastError();
    }
  }
  const int64_t total = static_cast<int64_t>(p.H) * p.W * p.heads * p.batch;
  const int64_t blocks = (total + kNaiveThreads - 1) / kNaiveThreads;
  if (blocks > INT_MAX) return cudaErrorInvalidConfiguration;
  csna_naive_kernel<T><<<static_cast<unsigned>(blocks), kNaiveThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

extern "C" NAF_CORE_API cudaError_t naf_csna_forward_cuda(const NafCsnaShape* shape, NafDType dtype,
                                                          const void* query, const void* key,
                                                          const void* value, const int32_t* row_index,
                                                          const int32_t* col_index, float scale,
                                                          void* output, int32_t* error_flag,
                                                          cudaStream_t stream) {
  if (shape == nullptr || query == nullptr || key == nullptr || value == nullptr ||
      row_index == nullptr || col_index == nullptr || output == nullptr)
    return cudaErrorInvalidValue;
  if (dtype != NAF_DTYPE_FLOAT32 && dtype != NAF_DTYPE_FLOAT16) return cudaErrorInvalidValue;
  if (!shape_ok(*shape)) return cudaErrorInvalidValue;

  Params p{};
  p.query = query;
  p.key = key;
  p.value = value;
  p.row_index = row_index;
  p.col_index = col_index;
  p.output = output;
  p.error_flag = error_flag;
  p.batch = static_cast<int>(shape->batch);
  p.dq_all = static_cast<int>(shape->query_channels);
  p.c_all = static_cast<int>(shape->value_channels);
  p.H = static_cast<int>(shape->out_height);
  p.W = static_cast<int>(shape->out_width);
  p.h = static_cast<int>(shape->in_height);
  p.w = static_cast<int>(shape->in_width);
  p.K = static_cast<int>(shape->kernel_size);
  p.heads = static_cast<int>(shape->num_heads);
  p.dq = p.dq_all / p.heads;
  p.e = p.c_all / p.heads;
  p.scale = scale;

  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const int smem_limit = prepare_device(device, dtype, &err);
  if (err != cudaSuccess) return err;

  return dtype == NAF_DTYPE_FLOAT16 ? launch<__half>(p, smem_limit, stream)
                                    : launch<float>(p, smem_limit, stream);
}
