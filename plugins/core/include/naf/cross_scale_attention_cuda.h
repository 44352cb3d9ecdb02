// CUDA entry point of the cross-scale neighborhood attention core. Same layout and contract as
// cross_scale_attention.h; all pointers are device pointers.
#ifndef NAF_CROSS_SCALE_ATTENTION_CUDA_H_
#define NAF_CROSS_SCALE_ATTENTION_CUDA_H_

#include <cuda_runtime_api.h>

#include "naf/cross_scale_attention.h"

#ifdef __cplusplus
extern "C" {
#endif

// Enqueues the forward pass on `stream`; allocates nothing. The shape must already have passed
// naf_csna_check_shape. Index entries are range-checked on the device: an out-of-range entry
// never causes an out-of-bounds read; the affected outputs are written as NaN and, when
// `error_flag` (device int32, may be NULL) is given, 1 is stored there.
// Returns cudaSuccess or the launch error.
NAF_CORE_API cudaError_t naf_csna_forward_cuda(const NafCsnaShape* shape, NafDType dtype,
                                               const void* query, const void* key,
                                               const void* value, const int32_t* row_index,
                                               const int32_t* col_index, float scale,
                                               void* output, int32_t* error_flag,
                                               cudaStream_t stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // NAF_CROSS_SCALE_ATTENTION_CUDA_H_
