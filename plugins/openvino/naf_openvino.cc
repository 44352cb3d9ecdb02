// OpenVINO extension library: the `naf::CrossScaleNeighborhoodAttention` operation (contract:
// DESIGN.md section 2) and its ONNX frontend mapping. A thin adapter: shape/type inference for the
// graph, and an `evaluate` that checks what only it can see (ranks, shape agreement between
// inputs, dtypes), then calls the backend-free core. Every failure becomes an ov::Exception whose
// message names the argument; nothing here computes attention itself.
#include "naf/openvino_extension.hpp"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/version.hpp>
#include <openvino/frontend/node_context.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>

#include "naf/axial_rope.h"
#include "naf/cross_scale_attention.h"

#define NAF_STRINGIFY_(x) #x
#define NAF_STRINGIFY(x) NAF_STRINGIFY_(x)
#define NAF_OV_VERSION \
  NAF_STRINGIFY(OPENVINO_VERSION_MAJOR) "." NAF_STRINGIFY(OPENVINO_VERSION_MINOR) "." NAF_STRINGIFY(OPENVINO_VERSION_PATCH)

namespace naf {
namespace openvino {
namespace {

constexpr const char* kOpName = "CrossScaleNeighborhoodAttention";
constexpr const char* kDomain = "naf";
constexpr size_t kNumInputs = 5;
constexpr std::array<const char*, kNumInputs> kInputNames{"query", "key", "value", "row_index", "col_index"};
constexpr std::array<const char*, kNumInputs> kInputForms{"(B, Dq, H, W)", "(B, Dq, h, w)", "(B, C, h, w)",
                                                         "(H, K)", "(W, K)"};
constexpr std::array<int64_t, kNumInputs> kInputRanks{4, 4, 4, 2, 2};

std::string shape_string(const ov::Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The core's task runner on TBB, which is OpenVINO's own thread pool: evaluate() runs inside the
// CPU plugin's task arena, so the operator uses exactly the threads the compiled model was given
// (INFERENCE_NUM_THREADS) instead of starting threads that would compete with them.
int tbb_parallel_for(void* /*runner_data*/, NafTaskFn task, void* task_data, size_t count) {
  try {
    tbb::parallel_for(
        tbb::blocked_range<size_t>(0, count, 1),
        [&](const tbb::blocked_range<size_t>& range) {
          for (size_t i = range.begin(); i != range.end(); ++i) task(task_data, i);
        },
        tbb::simple_partitioner());
    return 0;
  } catch (...) {
    return 1;
  }
}

}  // namespace

CrossScaleNeighborhoodAttention::CrossScaleNeighborhoodAttention(const ov::OutputVector& inputs, int64_t num_heads,
                                                                 float scale)
    : Op(inputs), num_heads_(num_heads), scale_(scale) {
  constructor_validate_and_infer_types();
}

// Graph-time checks use "compatible" so that dynamic dimensions (a symbolic batch) pass; the
// exact checks happen in evaluate() on concrete shapes.
void CrossScaleNeighborhoodAttention::validate_and_infer_types() {
  NODE_VALIDATION_CHECK(this, get_input_size() == kNumInputs,
                        "expected 5 inputs (query, key, value, row_index, col_index), got ", get_input_size());
  NODE_VALIDATION_CHECK(this, num_heads_ > 0, "attribute 'num_heads' must be > 0, got ", num_heads_);

  ov::element::Type type = get_input_element_type(0);
  for (size_t i = 1; i < 3; ++i) {
    NODE_VALIDATION_CHECK(this, ov::element::Type::merge(type, type, get_input_element_type(i)), kInputNames[i],
                          ": element type ", get_input_element_type(i), " differs from the query's ",
                          get_input_element_type(0));
  }
  NODE_VALIDATION_CHECK(this, type.is_dynamic() || type == ov::element::f32 || type == ov::element::f16,
                        "query/key/value: element type must be f32 or f16, got ", type);
  for (size_t i = 3; i < kNumInputs; ++i) {
    const auto& et = get_input_element_type(i);
    NODE_VALIDATION_CHECK(this, et.is_dynamic() || et == ov::element::i32, kInputNames[i],
                          ": element type must be i32, got ", et);
  }
  std::array<ov::PartialShape, kNumInputs> shapes;
  for (size_t i = 0; i < kNumInputs; ++i) {
    shapes[i] = get_input_partial_shape(i);
    NODE_VALIDATION_CHECK(this, shapes[i].rank().compatible(kInputRanks[i]), kInputNames[i], ": expected rank ",
                          kInputRanks[i], " ", kInputForms[i], ", got shape ", shapes[i]);
  }
  const auto& q = shapes[0];
  const auto& k = shapes[1];
  const auto& v = shapes[2];
  const auto& rows = shapes[3];
  const auto& cols = shapes[4];
  const bool qs = q.rank().is_static(), ks = k.rank().is_static(), vs = v.rank().is_static();
  if (qs && ks) {
    NODE_VALIDATION_CHECK(this, k[0].compatible(q[0]), "key: batch ", k[0], " differs from the query's ", q[0]);
    NODE_VALIDATION_CHECK(this, k[1].compatible(q[1]), "key: channel count ", k[1], " differs from the query's ",
                          q[1]);
  }
  if (ks && vs) {
    NODE_VALIDATION_CHECK(this, v[2].compatible(k[2]) && v[3].compatible(k[3]), "value: spatial size ", v[2], "x",
                          v[3], " differs from the key's ", k[2], "x", k[3]);
  }
  if (qs && rows.rank().is_static()) {
    NODE_VALIDATION_CHECK(this, rows[0].compatible(q[2]), "row_index: has ", rows[0],
                          " rows, expected H=", q[2], " (the query height)");
  }
  if (qs && cols.rank().is_static()) {
    NODE_VALIDATION_CHECK(this, cols[0].compatible(q[3]), "col_index: has ", cols[0],
                          " rows, expected W=", q[3], " (the query width)");
  }

  // Output (B, C, H, W): B from query merged with value, C from value, H and W from query.
  ov::PartialShape out = ov::PartialShape::dynamic(4);
  if (qs) {
    out[0] = q[0];
    out[2] = q[2];
    out[3] = q[3];
  }
  if (vs) {
    NODE_VALIDATION_CHECK(this, ov::Dimension::merge(out[0], out[0], v[0]), "value: batch ", v[0],
                          " differs from the query's ", out[0]);
    out[1] = v[1];
  }
  set_output_type(0, type, out);
}

std::shared_ptr<ov::Node> CrossScaleNeighborhoodAttention::clone_with_new_inputs(const ov::OutputVector& new_args) const {
  OPENVINO_ASSERT(new_args.size() == kNumInputs, kOpName, ": expected 5 inputs, got ", new_args.size());
  return std::make_shared<CrossScaleNeighborhoodAttention>(new_args, num_heads_, scale_);
}

// Serialized into the IR as <data num_heads="4" scale="0.125"/>; read back the same way.
bool CrossScaleNeighborhoodAttention::visit_attributes(ov::AttributeVisitor& visitor) {
  visitor.on_attribute("num_heads", num_heads_);
  visitor.on_attribute("scale", scale_);
  return true;
}

bool CrossScaleNeighborhoodAttention::has_evaluate() const {
  const auto& type = get_input_element_type(0);
  return type == ov::element::f32 || type == ov::element::f16;
}

bool CrossScaleNeighborhoodAttention::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
  OPENVINO_ASSERT(inputs.size() == kNumInputs, kOpName, ": expected 5 inputs, got ", inputs.size());
  OPENVINO_ASSERT(outputs.size() == 1, kOpName, ": expected 1 output, got ", outputs.size());
  std::array<ov::Shape, kNumInputs> dims;
  for (size_t i = 0; i < kNumInputs; ++i) {
    dims[i] = inputs[i].get_shape();
    OPENVINO_ASSERT(dims[i].size() == static_cast<size_t>(kInputRanks[i]), kOpName, ": ", kInputNames[i],
                    ": expected rank ", kInputRanks[i], " ", kInputForms[i], ", got shape ", shape_string(dims[i]));
    // The core reads dense row-major buffers; OpenVINO may hand over views (e.g. ROI tensors).
    OPENVINO_ASSERT(inputs[i].is_continuous(), kOpName, ": ", kInputNames[i], ": expected a dense tensor");
  }
  const auto type = inputs[0].get_element_type();
  OPENVINO_ASSERT(type == ov::element::f32 || type == ov::element::f16, kOpName,
                  ": query: element type must be f32 or f16, got ", type);
  for (size_t i = 1; i < 3; ++i) {
    OPENVINO_ASSERT(inputs[i].get_element_type() == type, kOpName, ": ", kInputNames[i], ": element type ",
                    inputs[i].get_element_type(), " differs from the query's ", type);
  }
  for (size_t i = 3; i < kNumInputs; ++i) {
    OPENVINO_ASSERT(inputs[i].get_element_type() == ov::element::i32, kOpName, ": ", kInputNames[i],
                    ": element type must be i32, got ", inputs[i].get_element_type());
  }
  std::array<std::vector<int64_t>, kNumInputs> dims64;
  for (size_t i = 0; i < kNumInputs; ++i) dims64[i].assign(dims[i].begin(), dims[i].end());
  char message[512] = {0};
  NafCsnaShape shape{};
  if (naf_csna_shape_from_dims(dims64[0].data(), dims64[1].data(), dims64[2].data(), dims64[3].data(),
                               dims64[4].data(), num_heads_, &shape, message, sizeof message) != 0) {
    OPENVINO_THROW(kOpName, ": ", message);
  }

  auto& out = outputs[0];
  const ov::Shape out_shape{dims[0][0], dims[2][1], dims[0][2], dims[0][3]};
  if (shape.batch == 0) {  // empty batch: empty output
    out.set_shape(out_shape);
    return true;
  }

  const NafDType dtype = type == ov::element::f16 ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32;
  const auto* row_index = inputs[3].data<const int32_t>();
  const auto* col_index = inputs[4].data<const int32_t>();
  // Validate before touching the output, so a bad node fails without side effects (the core
  // checks again itself; checking here keeps its message for the user). naf_csna_check_indices
  // checks the shape contract first.
  int rc = naf_csna_check_indices(&shape, row_index, col_index, message, sizeof message);
  if (rc != 0) OPENVINO_THROW(kOpName, ": ", message);

  out.set_shape(out_shape);  // allocates when the plugin left the output unallocated (dynamic shapes)
  OPENVINO_ASSERT(out.get_element_type() == type, kOpName, ": output: element type ", out.get_element_type(),
                  " differs from the value's ", type);
  OPENVINO_ASSERT(out.is_continuous(), kOpName, ": output: expected a dense tensor");
  const int tasks = std::max(1, tbb::this_task_arena::max_concurrency());
  rc = naf_csna_forward_cpu_parallel(&shape, dtype, inputs[0].data(), inputs[1].data(), inputs[2].data(), row_index,
                                     col_index, scale_, out.data(), tbb_parallel_for, nullptr, tasks, message,
                                     sizeof message);
  if (rc != 0) OPENVINO_THROW(kOpName, ": ", message);
  return true;
}

// ---- AxialRoPE ----------------------------------------------------------------------------------

namespace {
constexpr const char* kRopeOpName = "AxialRoPE";
constexpr std::array<const char*, 5> kRopeInputNames{"x", "cos_h", "sin_h", "cos_w", "sin_w"};
}  // namespace

AxialRoPE::AxialRoPE(const ov::OutputVector& inputs, int64_t num_heads) : Op(inputs), num_heads_(num_heads) {
  constructor_validate_and_infer_types();
}

void AxialRoPE::validate_and_infer_types() {
  NODE_VALIDATION_CHECK(this, get_input_size() == 5, "expected 5 inputs (x, cos_h, sin_h, cos_w, sin_w), got ",
                        get_input_size());
  NODE_VALIDATION_CHECK(this, num_heads_ > 0, "attribute 'num_heads' must be > 0, got ", num_heads_);
  ov::element::Type type = get_input_element_type(0);
  for (size_t i = 1; i < 5; ++i) {
    NODE_VALIDATION_CHECK(this, ov::element::Type::merge(type, type, get_input_element_type(i)), kRopeInputNames[i],
                          ": element type ", get_input_element_type(i), " differs from x's ", get_input_element_type(0));
  }
  NODE_VALIDATION_CHECK(this, type.is_dynamic() || type == ov::element::f32 || type == ov::element::f16,
                        "x: element type must be f32 or f16, got ", type);
  const ov::PartialShape& x = get_input_partial_shape(0);
  NODE_VALIDATION_CHECK(this, x.rank().compatible(4), "x: expected rank 4 (B, D, H, W), got shape ", x);
  for (size_t i = 1; i < 5; ++i) {
    NODE_VALIDATION_CHECK(this, get_input_partial_shape(i).rank().compatible(2), kRopeInputNames[i],
                          ": expected rank 2 (head_dim / 4, H or W), got shape ", get_input_partial_shape(i));
  }
  set_output_type(0, type, x);
}

std::shared_ptr<ov::Node> AxialRoPE::clone_with_new_inputs(const ov::OutputVector& new_args) const {
  OPENVINO_ASSERT(new_args.size() == 5, kRopeOpName, ": expected 5 inputs, got ", new_args.size());
  return std::make_shared<AxialRoPE>(new_args, num_heads_);
}

bool AxialRoPE::visit_attributes(ov::AttributeVisitor& visitor) {
  visitor.on_attribute("num_heads", num_heads_);
  return true;
}

bool AxialRoPE::has_evaluate() const {
  const auto& type = get_input_element_type(0);
  return type == ov::element::f32 || type == ov::element::f16;
}

bool AxialRoPE::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
  OPENVINO_ASSERT(inputs.size() == 5 && outputs.size() == 1, kRopeOpName, ": expected 5 inputs and 1 output");
  const ov::Shape x = inputs[0].get_shape();
  OPENVINO_ASSERT(x.size() == 4, kRopeOpName, ": x: expected rank 4 (B, D, H, W), got shape ", shape_string(x));
  const NafRopeShape shape{static_cast<int64_t>(x[0]), static_cast<int64_t>(x[1]), static_cast<int64_t>(x[2]),
                           static_cast<int64_t>(x[3]), num_heads_};
  char message[512] = {0};
  if (naf_rope_check_shape(&shape, message, sizeof message) != 0) OPENVINO_THROW(kRopeOpName, ": ", message);
  const auto type = inputs[0].get_element_type();
  const size_t quarter = x[1] / static_cast<size_t>(num_heads_) / 4;
  for (size_t i = 0; i < 5; ++i) {
    OPENVINO_ASSERT(inputs[i].get_element_type() == type, kRopeOpName, ": ", kRopeInputNames[i], ": element type ",
                    inputs[i].get_element_type(), " differs from x's ", type);
    OPENVINO_ASSERT(inputs[i].is_continuous(), kRopeOpName, ": ", kRopeInputNames[i], ": expected a dense tensor");
    if (i > 0) {
      const ov::Shape expected{quarter, i <= 2 ? x[2] : x[3]};
      OPENVINO_ASSERT(inputs[i].get_shape() == expected, kRopeOpName, ": ", kRopeInputNames[i], ": expected shape ",
                      shape_string(expected), ", got ", shape_string(inputs[i].get_shape()));
    }
  }
  auto& out = outputs[0];
  out.set_shape(x);
  if (shape.batch == 0) return true;
  OPENVINO_ASSERT(out.get_element_type() == type && out.is_continuous(), kRopeOpName,
                  ": output: expected a dense tensor of x's type");
  const int tasks = std::max(1, tbb::this_task_arena::max_concurrency());
  const int rc = naf_rope_forward_cpu(&shape, type == ov::element::f16 ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32,
                                      inputs[0].data(), inputs[1].data(), inputs[2].data(), inputs[3].data(),
                                      inputs[4].data(), out.data(), tbb_parallel_for, nullptr, tasks, message,
                                      sizeof message);
  if (rc != 0) OPENVINO_THROW(kRopeOpName, ": ", message);
  return true;
}

namespace {

ov::OutputVector convert_onnx_rope(const ov::frontend::NodeContext& node) {
  if (node.get_input_size() != 5) {
    OPENVINO_THROW("naf::", kRopeOpName, ": expected 5 inputs (x, cos_h, sin_h, cos_w, sin_w), got ",
                   node.get_input_size());
  }
  if (!node.has_attribute("num_heads")) {
    OPENVINO_THROW("naf::", kRopeOpName, ": attribute 'num_heads' (int) is required and missing");
  }
  const ov::Any num_heads = node.get_attribute_as_any("num_heads");
  if (!num_heads.is<int64_t>()) {
    OPENVINO_THROW("naf::", kRopeOpName, ": attribute 'num_heads' must be an int (ONNX INT), got ",
                   num_heads.type_info().name());
  }
  ov::OutputVector inputs;
  for (int i = 0; i < 5; ++i) inputs.push_back(node.get_input(i));
  return std::make_shared<AxialRoPE>(inputs, num_heads.as<int64_t>())->outputs();
}

// ONNX node -> operation. The attributes are read here (not by OpExtension's generic attribute
// mapping) so that a missing or mistyped one is reported by name.
ov::OutputVector convert_onnx_node(const ov::frontend::NodeContext& node) {
  const size_t count = node.get_input_size();
  if (count != kNumInputs) {
    OPENVINO_THROW("naf::", kOpName, ": expected 5 inputs (query, key, value, row_index, col_index), got ", count);
  }
  ov::OutputVector inputs;
  for (size_t i = 0; i < kNumInputs; ++i) inputs.push_back(node.get_input(static_cast<int>(i)));
  if (!node.has_attribute("num_heads")) {
    OPENVINO_THROW("naf::", kOpName, ": attribute 'num_heads' (int) is required and missing");
  }
  if (!node.has_attribute("scale")) {
    OPENVINO_THROW("naf::", kOpName, ": attribute 'scale' (float) is required and missing");
  }
  // The attribute's own ONNX type, not get_attribute<T>, which would convert a float num_heads
  // to an int where ONNX Runtime (and the contract) refuse it.
  const ov::Any num_heads = node.get_attribute_as_any("num_heads");
  if (!num_heads.is<int64_t>()) {
    OPENVINO_THROW("naf::", kOpName, ": attribute 'num_heads' must be an int (ONNX INT), got ", num_heads.type_info().name());
  }
  // The ONNX frontend holds FLOAT attributes as double.
  const ov::Any scale = node.get_attribute_as_any("scale");
  if (!scale.is<double>() && !scale.is<float>()) {
    OPENVINO_THROW("naf::", kOpName, ": attribute 'scale' must be a float (ONNX FLOAT), got ", scale.type_info().name());
  }
  const float scale_value = scale.is<double>() ? static_cast<float>(scale.as<double>()) : scale.as<float>();
  return std::make_shared<CrossScaleNeighborhoodAttention>(inputs, num_heads.as<int64_t>(), scale_value)->outputs();
}

std::vector<ov::Extension::Ptr> make_extensions() {
  // Loading into another OpenVINO release than the headers' would break the C++ ABI; the
  // library's soname dependency normally prevents it, this catches the rest with a clear message.
  const std::string running = ov::get_openvino_version().buildNumber;
  const std::string built = NAF_OV_VERSION;
  if (running.compare(0, built.size(), built) != 0 ||
      (running.size() > built.size() && std::isdigit(static_cast<unsigned char>(running[built.size()])))) {
    OPENVINO_THROW("libnaf_openvino was built against OpenVINO ", built, " but is loaded into OpenVINO ", running,
                   "; rebuild it against this OpenVINO (pip install . in the naf-export repository)");
  }
  return {
      // IR (.xml) deserialization and programmatic use.
      std::make_shared<ov::OpExtension<CrossScaleNeighborhoodAttention>>(),
      // ONNX frontend: op_type CrossScaleNeighborhoodAttention in domain "naf".
      std::make_shared<ov::frontend::onnx::ConversionExtension>(kOpName, kDomain, convert_onnx_node),
      std::make_shared<ov::OpExtension<AxialRoPE>>(),
      std::make_shared<ov::frontend::onnx::ConversionExtension>(kRopeOpName, kDomain, convert_onnx_rope),
  };
}

}  // namespace
}  // namespace openvino
}  // namespace naf

extern "C" NAF_OPENVINO_API const char* naf_openvino_built_with(void) { return NAF_OV_VERSION; }

OPENVINO_CREATE_EXTENSIONS(naf::openvino::make_extensions());
