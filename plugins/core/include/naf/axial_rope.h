// Axial rotary position embedding of a (B, D, H, W) map: the backend-free core of the
// `naf::AxialRoPE` operator, NAF's query/key RoPE (release `RopePositionEmbedding`, DINOv3 style).
//
// D = num_heads * head_dim, head_dim a multiple of 4, Q = head_dim / 4. In each head, channel i of
// the first half pairs with channel i + head_dim / 2 of the second; pair i rotates by the angle
// table of the rows (i < Q: cos_h[i, y], sin_h[i, y]) or of the columns (i >= Q:
// cos_w[i - Q, x], sin_w[i - Q, x]):
//   y[first]  = x[first] * cos - x[second] * sin
//   y[second] = x[second] * cos + x[first] * sin
// The tables come in precomputed (the exporter takes them from PyTorch), so the operator is
// exact to the model's float32 angles. One read and one write of the map, where the standard
// ONNX form (Slice, four Mul, Sub, Add, Concat) takes about six.
//
// Layout: dense, contiguous, row-major:
//   x              (B, D, H, W)   float32 or float16
//   cos_h, sin_h   (Q, H)         same dtype as x
//   cos_w, sin_w   (Q, W)         same dtype as x
//   y              (B, D, H, W)   same dtype as x
#ifndef NAF_AXIAL_ROPE_H_
#define NAF_AXIAL_ROPE_H_

#include "naf/cross_scale_attention.h"  // NAF_CORE_API, NafDType, NafParallelFor, error codes

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NafRopeShape {
  int64_t batch;      // B >= 0
  int64_t channels;   // D
  int64_t height;     // H
  int64_t width;      // W
  int64_t num_heads;  // divides D; D / num_heads a multiple of 4
} NafRopeShape;

// Checks the shape contract. Same return convention as naf_csna_check_shape.
NAF_CORE_API int naf_rope_check_shape(const NafRopeShape* shape, char* message, size_t message_size);

// CPU forward, as naf_gn_silu_forward_cpu: `num_tasks` tasks through `parallel_for`, or the
// calling thread when it is NULL. `y` must not overlap an input.
NAF_CORE_API int naf_rope_forward_cpu(const NafRopeShape* shape, NafDType dtype, const void* x, const void* cos_h,
                                      const void* sin_h, const void* cos_w, const void* sin_w, void* y,
                                      NafParallelFor parallel_for, void* runner_data, int num_tasks, char* message,
                                      size_t message_size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // NAF_AXIAL_ROPE_H_
