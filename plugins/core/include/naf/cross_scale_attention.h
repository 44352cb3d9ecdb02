// Cross-scale neighborhood attention: the backend-free core of the
// `naf::CrossScaleNeighborhoodAttention` operator (contract: DESIGN.md section 2).
//
// Every runtime adapter (ONNX Runtime, TensorRT, OpenVINO) and the ctypes binding used by the
// Python tests call these functions and nothing else; the math lives only here (CPU) and in
// cross_scale_attention.cu (CUDA).
//
// Layout: all tensors are dense, contiguous, row-major:
//   query      (B, Dq, H, W)     float32 or float16
//   key        (B, Dq, h, w)     same dtype as query
//   value      (B, C,  h, w)     same dtype as query
//   row_index  (H, K)            int32, values in [0, h)
//   col_index  (W, K)            int32, values in [0, w)
//   output     (B, C,  H, W)     same dtype as value
// Accumulation is float32 whatever the storage type. Float16 is IEEE binary16 passed as its raw
// 16-bit pattern (uint16_t), so this header needs no half-precision type.
#ifndef NAF_CROSS_SCALE_ATTENTION_H_
#define NAF_CROSS_SCALE_ATTENTION_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define NAF_CORE_API __declspec(dllexport)
#else
#define NAF_CORE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define NAF_CSNA_ABI_VERSION 1

typedef enum NafDType { NAF_DTYPE_FLOAT32 = 0, NAF_DTYPE_FLOAT16 = 1 } NafDType;

typedef struct NafCsnaShape {
  int64_t batch;           // B
  int64_t query_channels;  // Dq (query and key channels)
  int64_t value_channels;  // C  (value and output channels)
  int64_t out_height;      // H
  int64_t out_width;       // W
  int64_t in_height;       // h
  int64_t in_width;        // w
  int64_t kernel_size;     // K (odd, >= 1)
  int64_t num_heads;       // divides both Dq and C
} NafCsnaShape;

// Returns the ABI version the library was built with (NAF_CSNA_ABI_VERSION).
NAF_CORE_API int naf_csna_abi_version(void);

// Checks the shape contract: every size positive, K odd, h >= K, w >= K, H >= h, W >= w,
// num_heads divides Dq and C. Returns 0 when valid; otherwise writes a NUL-terminated message
// naming the offending argument and the expected form into `message` (at most `message_size`
// bytes, may be NULL) and returns a non-zero code.
NAF_CORE_API int naf_csna_check_shape(const NafCsnaShape* shape, char* message, size_t message_size);

// Builds the shape struct from the five inputs' dimensions -- query (B, Dq, H, W), key (B, Dq, h, w),
// value (B, C, h, w), row_index (H, K), col_index (W, K), arrays of 4, 4, 4, 2 and 2 entries --
// after checking that they agree with each other (the checks every runtime adapter needs before
// calling the core; naf_csna_check_shape then checks the contract itself). Same return
// convention as naf_csna_check_shape; `shape` is written only on success.
NAF_CORE_API int naf_csna_shape_from_dims(const int64_t* query, const int64_t* key, const int64_t* value,
                                          const int64_t* row_index, const int64_t* col_index,
                                          int64_t num_heads, NafCsnaShape* shape, char* message,
                                          size_t message_size);

// Checks every entry of the host-resident index tables lies in range ([0, h) for rows, [0, w)
// for columns). Same return convention as naf_csna_check_shape.
NAF_CORE_API int naf_csna_check_indices(const NafCsnaShape* shape, const int32_t* row_index,
                                        const int32_t* col_index, char* message,
                                        size_t message_size);

// CPU forward. Validates shape and indices itself (so it never reads out of bounds), then
// computes `output`. `num_threads` <= 0 means one thread per hardware core.
// Returns 0 on success; on failure writes the reason into `message` and leaves `output` untouched.
NAF_CORE_API int naf_csna_forward_cpu(const NafCsnaShape* shape, NafDType dtype, const void* query,
                                      const void* key, const void* value, const int32_t* row_index,
                                      const int32_t* col_index, float scale, void* output,
                                      int num_threads, char* message, size_t message_size);

// Non-zero return codes of the functions above.
#define NAF_CSNA_ERROR_SHAPE 1     // shape contract violated
#define NAF_CSNA_ERROR_INDEX 2     // index table entry out of range
#define NAF_CSNA_ERROR_ARGUMENT 3  // null pointer, unknown dtype, output aliasing an input
#define NAF_CSNA_ERROR_RESOURCE 4  // out of memory, thread start or task runner failure

// A host runtime's parallel-for: runs task(task_data, i) for every i in [0, count), possibly
// concurrently, and returns once all have finished; returns 0 on success.
typedef void (*NafTaskFn)(void* task_data, size_t index);
typedef int (*NafParallelFor)(void* runner_data, NafTaskFn task, void* task_data, size_t count);

// Same as naf_csna_forward_cpu, but the work runs as `num_tasks` tasks through `parallel_for`
// (e.g. ONNX Runtime's intra-op thread pool) instead of on threads this library starts, so the
// operator does not compete with the runtime's own threads. Tasks share the work dynamically:
// any pool size, including running the tasks one after another, gives the same result.
NAF_CORE_API int naf_csna_forward_cpu_parallel(const NafCsnaShape* shape, NafDType dtype,
                                               const void* query, const void* key,
                                               const void* value, const int32_t* row_index,
                                               const int32_t* col_index, float scale,
                                               void* output, NafParallelFor parallel_for,
                                               void* runner_data, int num_tasks, char* message,
                                               size_t message_size);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // NAF_CROSS_SCALE_ATTENTION_H_
