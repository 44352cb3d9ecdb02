// GroupNorm -> SiLU -> reflect padding, fused: the backend-free core of the
// `naf::GroupNormSiLU` operator, the step NAF's image encoder runs before every convolution of
// its blocks (release `EncBlock`: GroupNorm(8), SiLU, then a reflect-padded Conv).
//
//   y[n, c] = pad_reflect(silu((x[n, c] - mean[n, g]) / sqrt(var[n, g] + epsilon) * gamma[c] + beta[c]), pad)
//
// with g = c / (C / G), mean and (biased) var over the C/G channels x H x W of group g, as
// torch.nn.GroupNorm. Reflect padding mirrors without repeating the edge (ONNX Pad mode "reflect").
// Fusing saves the runtime the ~eight full passes over the map that the operator takes as
// standard ONNX nodes; statistics are accumulated in float64, element math in float32.
//
// Layout: dense, contiguous, row-major:
//   x      (N, C, H, W)              float32 or float16
//   gamma  (C)                       same dtype as x
//   beta   (C)                       same dtype as x
//   y      (N, C, H + 2p, W + 2p)    same dtype as x
#ifndef NAF_GROUP_NORM_SILU_H_
#define NAF_GROUP_NORM_SILU_H_

#include "naf/cross_scale_attention.h"  // NAF_CORE_API, NafDType, NafParallelFor, error codes

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NafGnShape {
  int64_t batch;       // N
  int64_t channels;    // C
  int64_t height;      // H
  int64_t width;       // W
  int64_t num_groups;  // G, divides C
  int64_t pad;         // p >= 0, reflect padding of each spatial side; p < H and p < W
} NafGnShape;

// Checks the shape contract (sizes positive, N >= 0, G divides C, 0 <= p < min(H, W)). Same
// return convention as naf_csna_check_shape.
NAF_CORE_API int naf_gn_silu_check_shape(const NafGnShape* shape, char* message, size_t message_size);

// CPU forward. `epsilon` must be finite and >= 0. The work runs as `num_tasks` tasks through
// `parallel_for` (see NafParallelFor), or on the calling thread when `parallel_for` is NULL.
// Returns 0 on success; otherwise an NAF_CSNA_ERROR_* code with the reason in `message`, and `y`
// untouched when the arguments are at fault.
NAF_CORE_API int naf_gn_silu_forward_cpu(const NafGnShape* shape, NafDType dtype, const void* x,
                                         const void* gamma, const void* beta, float epsilon, void* y,
                                         NafParallelFor parallel_for, void* runner_data, int num_tasks,
                                         char* message, size_t message_size);

// ---------------------------------------------------------------------------------------------
// Quantized form: the same operator between two INT8 convolutions, for ONNX Runtime's INT8 models.
//   y_q = quantize(pad_reflect(silu(groupnorm(dequantize(x_q))))), with
//   dequantize(q) = (q - zero_point) * scale and quantize(v) = saturate(round_half_even(v / scale) + zero_point)
// as ONNX DequantizeLinear / QuantizeLinear. The statistics are exact (integer sums); the
// element step is one 256-entry table per plane, so the map is read twice and written once in
// 8 bits instead of running DequantizeLinear, the float kernel and QuantizeLinear over float maps.
//
//   x      (N, C, H, W)              int8 or uint8
//   gamma  (C), beta (C)             float32
//   y      (N, C, H + 2p, W + 2p)    same type as x

typedef enum NafQType { NAF_QTYPE_INT8 = 0, NAF_QTYPE_UINT8 = 1 } NafQType;

typedef struct NafQuantization {
  float scale;         // finite, > 0
  int32_t zero_point;  // within the range of the quantized type
} NafQuantization;

// CPU forward, same conventions as naf_gn_silu_forward_cpu.
NAF_CORE_API int naf_qgn_silu_forward_cpu(const NafGnShape* shape, NafQType qtype, const void* x,
                                          NafQuantization x_quant, const float* gamma, const float* beta,
                                          float epsilon, NafQuantization y_quant, void* y,
                                          NafParallelFor parallel_for, void* runner_data, int num_tasks,
                                          char* message, size_t message_size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // NAF_GROUP_NORM_SILU_H_
