// ONNX Runtime custom-op library, domain "naf", opset 1: "CrossScaleNeighborhoodAttention"
// (contract: DESIGN.md section 2; CPU and, when built with CUDA, CUDA kernels), and for the image
// encoder, CPU only, "GroupNormSiLU" (GroupNorm -> SiLU -> reflect pad, naf/group_norm_silu.h),
// its 8-bit form "QGroupNormSiLU" (between INT8 convolutions) and "AxialRoPE" (naf/axial_rope.h).
// Thin adapters: they read tensors and attributes, check what only they can see (ranks, shape
// agreement between inputs), and call the backend-free core. Every failure becomes an ORT error
// status whose message names the operator and the problem.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "naf/cross_scale_attention.h"
#include "naf/axial_rope.h"
#include "naf/group_norm_silu.h"
#ifdef NAF_ORT_WITH_CUDA
#include "naf/cross_scale_attention_cuda.h"
#endif

namespace {

constexpr const char* kDomain = "naf";
constexpr const char* kOpName = "CrossScaleNeighborhoodAttention";
constexpr const char* kGnOpName = "GroupNormSiLU";
constexpr const char* kQgnOpName = "QGroupNormSiLU";
constexpr const char* kRopeOpName = "AxialRoPE";
// Oldest C API with everything used here (KernelContext_ParallelFor, CreateKernelV2/ComputeV2,
// InferOutputShapeFn): ONNX Runtime 1.17. Newer runtimes serve older API versions unchanged.
constexpr uint32_t kOrtApiVersion = 17;
constexpr size_t kNumInputs = 5;
const char* const kInputNames[kNumInputs] = {"query", "key", "value", "row_index", "col_index"};

const OrtApi* g_api = nullptr;

OrtStatusPtr make_error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT,
                        const char* op = kOpName) {
  return g_api->CreateStatus(code, (std::string(op) + ": " + message).c_str());
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A required attribute of the node; missing or of another type is an error naming it.
OrtStatusPtr required_attribute(const OrtKernelInfo* info, const char* op, const char* name, int64_t* out) {
  if (OrtStatus* st = g_api->KernelInfoGetAttribute_int64(info, name, out)) {
    g_api->ReleaseStatus(st);
    return make_error(std::string("attribute '") + name + "' (int) is required and missing or not an int",
                      ORT_INVALID_ARGUMENT, op);
  }
  return nullptr;
}

OrtStatusPtr required_attribute(const OrtKernelInfo* info, const char* op, const char* name, float* out) {
  if (OrtStatus* st = g_api->KernelInfoGetAttribute_float(info, name, out)) {
    g_api->ReleaseStatus(st);
    return make_error(std::string("attribute '") + name + "' (float) is required and missing or not a float",
                      ORT_INVALID_ARGUMENT, op);
  }
  return nullptr;
}

// An optional attribute: `*out` keeps its default when the node has none.
void optional_attribute(const OrtKernelInfo* info, const char* name, int64_t* out) {
  int64_t value = 0;
  if (OrtStatus* st = g_api->KernelInfoGetAttribute_int64(info, name, &value)) return g_api->ReleaseStatus(st);
  *out = value;
}

void optional_attribute(const OrtKernelInfo* info, const char* name, float* out) {
  float value = 0;
  if (OrtStatus* st = g_api->KernelInfoGetAttribute_float(info, name, &value)) return g_api->ReleaseStatus(st);
  *out = value;
}

struct Attributes {
  int64_t num_heads = 0;
  float scale = 0;
};

// Reads num_heads (int, > 0) and scale (float), both required.
OrtStatusPtr read_attributes(const OrtKernelInfo* info, Attributes* out) {
  if (OrtStatusPtr st = required_attribute(info, kOpName, "num_heads", &out->num_heads)) return st;
  if (out->num_heads <= 0) {
    return make_error("attribute 'num_heads' must be > 0, got " + std::to_string(out->num_heads));
  }
  return required_attribute(info, kOpName, "scale", &out->scale);
}

// Shapes of the five inputs, checked against each other; fills the core's shape struct.
OrtStatusPtr read_shape(Ort::KernelContext& ctx, const Attributes& attrs, NafCsnaShape* shape,
                        ONNXTensorElementDataType* dtype) {
  std::vector<int64_t> dims[kNumInputs];
  const size_t ranks[kNumInputs] = {4, 4, 4, 2, 2};
  const char* forms[kNumInputs] = {"(B, Dq, H, W)", "(B, Dq, h, w)", "(B, C, h, w)", "(H, K)", "(W, K)"};
  for (size_t i = 0; i < kNumInputs; ++i) {
    auto info = ctx.GetInput(i).GetTensorTypeAndShapeInfo();
    dims[i] = info.GetShape();
    if (dims[i].size() != ranks[i]) {
      return make_error(std::string(kInputNames[i]) + ": expected rank " + std::to_string(ranks[i]) + " " +
                        forms[i] + ", got shape " + shape_string(dims[i]));
    }
    if (i == 0) *dtype = info.GetElementType();
  }
  char message[256] = {0};
  if (naf_csna_shape_from_dims(dims[0].data(), dims[1].data(), dims[2].data(), dims[3].data(), dims[4].data(),
                               attrs.num_heads, shape, message, sizeof message) != 0) {
    return make_error(message);
  }
  return nullptr;
}

OrtStatusPtr allocate_output(Ort::KernelContext& ctx, const NafCsnaShape& s, void** data) {
  const std::vector<int64_t> out_shape{s.batch, s.value_channels, s.out_height, s.out_width};
  *data = ctx.GetOutput(0, out_shape).GetTensorMutableRawData();
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// CPU kernel

struct ParallelForData {
  const OrtKernelContext* context;
  std::string error;
};

// The core's task runner on ORT's intra-op thread pool (honours intra_op_num_threads).
int ort_parallel_for(void* runner_data, NafTaskFn task, void* task_data, size_t count) {
  auto* data = static_cast<ParallelForData*>(runner_data);
  if (OrtStatus* st = g_api->KernelContext_ParallelFor(data->context, task, count, count, task_data)) {
    data->error = g_api->GetErrorMessage(st);
    g_api->ReleaseStatus(st);
    return 1;
  }
  return 0;
}

NafDType naf_dtype(ONNXTensorElementDataType elem) {
  return elem == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32;
}

// Runs a kernel body, turning C++ exceptions into statuses that name the operator.
template <typename Body>
OrtStatusPtr guarded(const char* op, Body&& body) {
  try {
    return body();
  } catch (const Ort::Exception& e) {
    return make_error(e.what(), e.GetOrtErrorCode(), op);
  } catch (const std::exception& e) {
    return make_error(e.what(), ORT_RUNTIME_EXCEPTION, op);
  }
}

// Calls a core CPU entry point `forward(parallel_for, runner_data, num_tasks, message, size)` on
// ORT's intra-op thread pool (honours intra_op_num_threads) and maps its return code to a status.
template <typename Forward>
OrtStatusPtr run_cpu_forward(OrtKernelContext* context, const char* op, Forward&& forward) {
  ParallelForData runner{context, {}};
  char message[512] = {0};
  const int tasks = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int rc = forward(ort_parallel_for, static_cast<void*>(&runner), tasks, message, sizeof message);
  if (rc == 0) return nullptr;
  return make_error(runner.error.empty() ? message : std::string(message) + ": " + runner.error,
                    rc == NAF_CSNA_ERROR_RESOURCE ? ORT_RUNTIME_EXCEPTION : ORT_INVALID_ARGUMENT, op);
}

struct CpuKernel {
  Attributes attrs;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(kOpName, [&]() -> OrtStatusPtr {
      Ort::KernelContext ctx(context);
      NafCsnaShape shape{};
      ONNXTensorElementDataType elem{};
      if (OrtStatusPtr st = read_shape(ctx, attrs, &shape, &elem)) return st;
      void* out = nullptr;
      if (shape.batch == 0) return allocate_output(ctx, shape, &out);  // empty batch: empty output
      const int32_t* rows = ctx.GetInput(3).GetTensorData<int32_t>();
      const int32_t* cols = ctx.GetInput(4).GetTensorData<int32_t>();
      char message[512] = {0};
      // Validate before allocating the output, so a bad node fails without side effects
      // (naf_csna_check_indices checks the shape contract first).
      if (naf_csna_check_indices(&shape, rows, cols, message, sizeof message) != 0) return make_error(message);
      if (OrtStatusPtr st = allocate_output(ctx, shape, &out)) return st;
      return run_cpu_forward(context, kOpName, [&](NafParallelFor pf, void* runner, int tasks, char* msg, size_t size) {
        return naf_csna_forward_cpu_parallel(&shape, naf_dtype(elem), ctx.GetInput(0).GetTensorRawData(),
                                             ctx.GetInput(1).GetTensorRawData(), ctx.GetInput(2).GetTensorRawData(),
                                             rows, cols, attrs.scale, out, pf, runner, tasks, msg, size);
      });
    });
  }
};

// ---------------------------------------------------------------------------------------------
// GroupNormSiLU, CPU: inputs X (N, C, H, W), gamma (C), beta (C); output (N, C, H+2p, W+2p).

struct GnAttributes {
  int64_t num_groups = 0;
  float epsilon = 1e-5f;
  int64_t pad = 0;
};

// Every input of an encoder op has the op's type unless the kernel says otherwise.
struct SameTypeInputs {
  static ONNXTensorElementDataType input_type(size_t /*index*/, ONNXTensorElementDataType type) { return type; }
};

// num_groups (int, required), epsilon (float, default 1e-5), pad (int, default 0), for both forms.
OrtStatusPtr read_gn_attributes(const OrtKernelInfo* info, const char* op, GnAttributes* attrs) {
  if (OrtStatusPtr st = required_attribute(info, op, "num_groups", &attrs->num_groups)) return st;
  optional_attribute(info, "epsilon", &attrs->epsilon);
  optional_attribute(info, "pad", &attrs->pad);
  return nullptr;
}

// The shape checks both forms need: X of rank 4 whose shape passes the core's contract, gamma and
// beta (inputs `gamma_index` and the next) of shape [C]. Fills `shape` and allocates output 0
// (N, C, H + 2p, W + 2p) into `*out`.
OrtStatusPtr read_gn_shape(Ort::KernelContext& ctx, const char* op, const GnAttributes& attrs, size_t gamma_index,
                           NafGnShape* shape, void** out) {
  const auto error = [op](const std::string& message) { return make_error(message, ORT_INVALID_ARGUMENT, op); };
  const std::vector<int64_t> x = ctx.GetInput(0).GetTensorTypeAndShapeInfo().GetShape();
  if (x.size() != 4) return error("X: expected rank 4 (N, C, H, W), got shape " + shape_string(x));
  const char* names[] = {"gamma", "beta"};
  for (size_t i = 0; i < 2; ++i) {
    const std::vector<int64_t> dims = ctx.GetInput(gamma_index + i).GetTensorTypeAndShapeInfo().GetShape();
    if (dims.size() != 1 || dims[0] != x[1]) {
      return error(std::string(names[i]) + ": expected shape [C] = [" + std::to_string(x[1]) +
                   "] (one value per channel of X), got " + shape_string(dims));
    }
  }
  *shape = NafGnShape{x[0], x[1], x[2], x[3], attrs.num_groups, attrs.pad};
  char message[512] = {0};
  if (naf_gn_silu_check_shape(shape, message, sizeof message) != 0) return error(message);
  *out = ctx.GetOutput(0, {x[0], x[1], x[2] + 2 * attrs.pad, x[3] + 2 * attrs.pad}).GetTensorMutableRawData();
  return nullptr;
}

struct GnCpuKernel : SameTypeInputs {
  static constexpr const char* kName = kGnOpName;
  static constexpr size_t kNumInputs = 3;
  GnAttributes attrs;

  static OrtStatusPtr Create(const OrtKernelInfo* info, void** kernel) {
    GnAttributes attrs;
    if (OrtStatusPtr st = read_gn_attributes(info, kName, &attrs)) return st;
    *kernel = new GnCpuKernel{{}, attrs};
    return nullptr;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(kName, [&]() -> OrtStatusPtr {
      Ort::KernelContext ctx(context);
      NafGnShape shape{};
      void* out = nullptr;
      if (OrtStatusPtr st = read_gn_shape(ctx, kName, attrs, 1, &shape, &out)) return st;
      if (shape.batch == 0) return nullptr;
      const auto x_info = ctx.GetInput(0).GetTensorTypeAndShapeInfo();
      return run_cpu_forward(context, kName, [&](NafParallelFor pf, void* runner, int tasks, char* msg, size_t size) {
        return naf_gn_silu_forward_cpu(&shape, naf_dtype(x_info.GetElementType()), ctx.GetInput(0).GetTensorRawData(),
                                       ctx.GetInput(1).GetTensorRawData(), ctx.GetInput(2).GetTensorRawData(),
                                       attrs.epsilon, out, pf, runner, tasks, msg, size);
      });
    });
  }
};

// ---------------------------------------------------------------------------------------------
// QGroupNormSiLU, CPU: inputs X (N, C, H, W) int8/uint8, x_scale (float scalar), x_zero_point (X's
// type, scalar), gamma (C) float, beta (C) float, y_scale, y_zero_point; output Y (N, C, H+2p, W+2p)
// of X's type: GroupNormSiLU between DequantizeLinear and QuantizeLinear, in 8 bits.

struct QgnCpuKernel {
  static constexpr const char* kName = kQgnOpName;
  static constexpr size_t kNumInputs = 7;
  GnAttributes attrs;

  // X, its zero points and Y have the op's type; scales, gamma and beta are float.
  static ONNXTensorElementDataType input_type(size_t index, ONNXTensorElementDataType type) {
    return index == 0 || index == 2 || index == 6 ? type : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }

  static OrtStatusPtr Create(const OrtKernelInfo* info, void** kernel) {
    GnAttributes attrs;
    if (OrtStatusPtr st = read_gn_attributes(info, kName, &attrs)) return st;
    *kernel = new QgnCpuKernel{attrs};
    return nullptr;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(kName, [&]() -> OrtStatusPtr {
      const auto error = [](const std::string& message) { return make_error(message, ORT_INVALID_ARGUMENT, kName); };
      Ort::KernelContext ctx(context);
      const NafQType qtype = ctx.GetInput(0).GetTensorTypeAndShapeInfo().GetElementType() ==
                                     ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8
                                 ? NAF_QTYPE_INT8
                                 : NAF_QTYPE_UINT8;
      const char* scalars[] = {"", "x_scale", "x_zero_point", "", "", "y_scale", "y_zero_point"};
      for (size_t i : {1, 2, 5, 6}) {
        if (ctx.GetInput(i).GetTensorTypeAndShapeInfo().GetElementCount() != 1) {
          return error(std::string(scalars[i]) + ": expected one value (per-tensor quantization)");
        }
      }
      const auto zero_point = [&](size_t i) {
        const void* data = ctx.GetInput(i).GetTensorRawData();
        return qtype == NAF_QTYPE_INT8 ? static_cast<int32_t>(*static_cast<const int8_t*>(data))
                                       : static_cast<int32_t>(*static_cast<const uint8_t*>(data));
      };
      const NafQuantization x_quant{*ctx.GetInput(1).GetTensorData<float>(), zero_point(2)};
      const NafQuantization y_quant{*ctx.GetInput(5).GetTensorData<float>(), zero_point(6)};
      NafGnShape shape{};
      void* out = nullptr;
      if (OrtStatusPtr st = read_gn_shape(ctx, kName, attrs, 3, &shape, &out)) return st;
      if (shape.batch == 0) return nullptr;
      return run_cpu_forward(context, kName, [&](NafParallelFor pf, void* runner, int tasks, char* msg, size_t size) {
        return naf_qgn_silu_forward_cpu(&shape, qtype, ctx.GetInput(0).GetTensorRawData(), x_quant,
                                        ctx.GetInput(3).GetTensorData<float>(), ctx.GetInput(4).GetTensorData<float>(),
                                        attrs.epsilon, y_quant, out, pf, runner, tasks, msg, size);
      });
    });
  }
};

// ---------------------------------------------------------------------------------------------
// AxialRoPE, CPU: inputs X (B, D, H, W), cos_h, sin_h (Q, H), cos_w, sin_w (Q, W) with
// Q = D / num_heads / 4; output (B, D, H, W).

struct RopeCpuKernel : SameTypeInputs {
  static constexpr const char* kName = kRopeOpName;
  static constexpr size_t kNumInputs = 5;
  int64_t num_heads = 0;

  static OrtStatusPtr Create(const OrtKernelInfo* info, void** kernel) {
    int64_t heads = 0;
    if (OrtStatusPtr st = required_attribute(info, kName, "num_heads", &heads)) return st;
    *kernel = new RopeCpuKernel{{}, heads};
    return nullptr;
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded(kName, [&]() -> OrtStatusPtr {
      const auto error = [](const std::string& message) { return make_error(message, ORT_INVALID_ARGUMENT, kName); };
      Ort::KernelContext ctx(context);
      auto x_info = ctx.GetInput(0).GetTensorTypeAndShapeInfo();
      const std::vector<int64_t> x = x_info.GetShape();
      if (x.size() != 4) return error("X: expected rank 4 (B, D, H, W), got shape " + shape_string(x));
      const NafRopeShape shape{x[0], x[1], x[2], x[3], num_heads};
      char message[512] = {0};
      if (naf_rope_check_shape(&shape, message, sizeof message) != 0) return error(message);
      const int64_t quarter = x[1] / num_heads / 4;
      const char* names[] = {"cos_h", "sin_h", "cos_w", "sin_w"};
      for (size_t i = 1; i <= 4; ++i) {
        const std::vector<int64_t> dims = ctx.GetInput(i).GetTensorTypeAndShapeInfo().GetShape();
        const std::vector<int64_t> expected{quarter, i <= 2 ? x[2] : x[3]};
        if (dims != expected) {
          return error(std::string(names[i - 1]) + ": expected shape " + shape_string(expected) +
                       " (head_dim / 4, " + (i <= 2 ? "H" : "W") + "), got " + shape_string(dims));
        }
      }
      void* out = ctx.GetOutput(0, x).GetTensorMutableRawData();
      if (shape.batch == 0) return nullptr;
      return run_cpu_forward(context, kName, [&](NafParallelFor pf, void* runner, int tasks, char* msg, size_t size) {
        return naf_rope_forward_cpu(&shape, naf_dtype(x_info.GetElementType()), ctx.GetInput(0).GetTensorRawData(),
                                    ctx.GetInput(1).GetTensorRawData(), ctx.GetInput(2).GetTensorRawData(),
                                    ctx.GetInput(3).GetTensorRawData(), ctx.GetInput(4).GetTensorRawData(), out, pf,
                                    runner, tasks, msg, size);
      });
    });
  }
};

// ---------------------------------------------------------------------------------------------
// CUDA kernel (CUDA execution provider): same checks, then the core's CUDA entry point on ORT's
// compute stream. Index tables stay on the device; the kernel range-checks them and raises a
// device flag, read back after the launch (this synchronises the stream once per call).

#ifdef NAF_ORT_WITH_CUDA
struct CudaKernel {
  Attributes attrs;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Ort::KernelContext ctx(context);
      NafCsnaShape shape{};
      ONNXTensorElementDataType elem{};
      if (OrtStatusPtr st = read_shape(ctx, attrs, &shape, &elem)) return st;
      const NafDType dtype = elem == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32;
      void* out = nullptr;
      if (shape.batch == 0) return allocate_output(ctx, shape, &out);
      char message[512] = {0};
      if (naf_csna_check_shape(&shape, message, sizeof message) != 0) return make_error(message);
      if (OrtStatusPtr st = allocate_output(ctx, shape, &out)) return st;

      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
      const int device = ctx.GetInput(0).GetTensorMemoryInfo().GetDeviceId();
      Ort::MemoryInfo device_memory("Cuda", OrtDeviceAllocator, device, OrtMemTypeDefault);
      const OrtMemoryInfo* device_memory_info = device_memory;
      Ort::Allocator allocator = ctx.GetAllocator(*device_memory_info);
      std::unique_ptr<void, std::function<void(void*)>> flag(allocator.Alloc(sizeof(int32_t)),
                                                             [&allocator](void* p) { allocator.Free(p); });
      int32_t host_flag = 0;
      cudaError_t err = cudaMemsetAsync(flag.get(), 0, sizeof(int32_t), stream);
      if (err == cudaSuccess) {
        err = naf_csna_forward_cuda(&shape, dtype, ctx.GetInput(0).GetTensorRawData(),
                                    ctx.GetInput(1).GetTensorRawData(), ctx.GetInput(2).GetTensorRawData(),
                                    ctx.GetInput(3).GetTensorData<int32_t>(), ctx.GetInput(4).GetTensorData<int32_t>(),
                                    attrs.scale, out, static_cast<int32_t*>(flag.get()), stream);
      }
      if (err == cudaSuccess) err = cudaMemcpyAsync(&host_flag, flag.get(), sizeof host_flag, cudaMemcpyDeviceToHost, stream);
      if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
      if (err != cudaSuccess) {
        return make_error(std::string("CUDA error: ") + cudaGetErrorString(err), ORT_RUNTIME_EXCEPTION);
      }
      if (host_flag != 0) {
        return make_error("row_index/col_index: an entry is outside [0, h) / [0, w) (h=" + std::to_string(shape.in_height) +
                          ", w=" + std::to_string(shape.in_width) + ")");
      }
      return nullptr;
    } catch (const Ort::Exception& e) {
      return make_error(e.what(), e.GetOrtErrorCode());
    } catch (const std::exception& e) {
      return make_error(e.what(), ORT_RUNTIME_EXCEPTION);
    }
  }
};
#endif

// ---------------------------------------------------------------------------------------------
// Op definitions: one per (execution provider, dtype). ORT merges ops of one name into a single
// schema and picks the kernel whose types match, so query/key/value/output share one type T.

template <typename Kernel>
struct CrossScaleOp : Ort::CustomOpBase<CrossScaleOp<Kernel>, Kernel, /*WithStatus=*/true> {
  CrossScaleOp(const char* provider, ONNXTensorElementDataType type) : provider_(provider), type_(type) {
    // Tell ORT we were written against API 17 (it only reads the OrtCustomOp fields that exist
    // in that version), whatever the version of the headers used to build.
    this->version = kOrtApiVersion;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    Attributes attrs;
    if (OrtStatusPtr st = read_attributes(info, &attrs)) return st;
    *kernel = new Kernel{attrs};
    return nullptr;
  }

  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return provider_; }
  size_t GetInputTypeCount() const { return kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index < 3 ? type_ : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return type_; }

  // Output (B, C, H, W) = (value[0], value[1], query[2], query[3]). Best effort: ORT ignores the
  // returned status, so malformed inputs are left to Compute, which reports them precisely.
  static OrtStatusPtr InferOutputShape(Ort::ShapeInferContext& ctx) {
    try {
      if (ctx.GetInputCount() < 3) return nullptr;
      const auto& q = ctx.GetInputShape(0);
      const auto& v = ctx.GetInputShape(2);
      if (q.size() != 4 || v.size() != 4) return nullptr;
      Ort::ShapeInferContext::Shape out{v[0], v[1], q[2], q[3]};
      for (const auto& dim : out) {
        if (!dim.IsInt() && (dim.AsSym() == nullptr || dim.AsSym()[0] == '\0')) return nullptr;  // unnamed
      }
      ctx.SetOutputShape(0, out);
    } catch (...) {
    }
    return nullptr;
  }

 private:
  const char* provider_;
  ONNXTensorElementDataType type_;
};

// The image-encoder ops (GnCpuKernel, RopeCpuKernel), one per element type. No shape inference
// function: ORT builds one schema per op name from the first op registered, and a static
// inference function would give float16 nodes a float32 output type; without one, ORT propagates
// the input type and learns shapes at run time.
template <typename Kernel, ONNXTensorElementDataType kType>
struct EncoderCpuOp : Ort::CustomOpBase<EncoderCpuOp<Kernel, kType>, Kernel, /*WithStatus=*/true> {
  EncoderCpuOp() { this->version = kOrtApiVersion; }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    return Kernel::Create(info, kernel);
  }

  const char* GetName() const { return Kernel::kName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return Kernel::kNumInputs; }
  ONNXTensorElementDataType GetInputType(size_t index) const { return Kernel::input_type(index, kType); }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return kType; }
};

std::mutex g_domains_mutex;
std::vector<Ort::CustomOpDomain> g_domains;  // must outlive every session using them

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (api == nullptr) {
    // Too old a runtime: API version 1 still exists and can carry the error message.
    const std::string message = std::string("naf_onnxruntime needs ONNX Runtime >= 1.17 (C API ") +
                                std::to_string(kOrtApiVersion) + "), this is " + api_base->GetVersionString();
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  g_api = api;
  Ort::InitApi(api);

  static CrossScaleOp<CpuKernel> cpu_float("CPUExecutionProvider", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  static CrossScaleOp<CpuKernel> cpu_half("CPUExecutionProvider", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
  static EncoderCpuOp<GnCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT> gn_float;
  static EncoderCpuOp<GnCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16> gn_half;
  static EncoderCpuOp<QgnCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8> qgn_int8;
  static EncoderCpuOp<QgnCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8> qgn_uint8;
  static EncoderCpuOp<RopeCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT> rope_float;
  static EncoderCpuOp<RopeCpuKernel, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16> rope_half;
#ifdef NAF_ORT_WITH_CUDA
  static CrossScaleOp<CudaKernel> cuda_float("CUDAExecutionProvider", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  static CrossScaleOp<CudaKernel> cuda_half("CUDAExecutionProvider", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
#endif
  try {
    Ort::CustomOpDomain domain(kDomain);
    domain.Add(&cpu_float);
    domain.Add(&cpu_half);
    domain.Add(&gn_float);
    domain.Add(&gn_half);
    domain.Add(&qgn_int8);
    domain.Add(&qgn_uint8);
    domain.Add(&rope_float);
    domain.Add(&rope_half);
#ifdef NAF_ORT_WITH_CUDA
    domain.Add(&cuda_float);
    domain.Add(&cuda_half);
#endif
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(g_domains_mutex);
    g_domains.push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  }
  return nullptr;
}
