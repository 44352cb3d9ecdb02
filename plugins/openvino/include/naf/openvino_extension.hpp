// OpenVINO extension for `naf::CrossScaleNeighborhoodAttention` (contract: DESIGN.md section 2)
// and `naf::AxialRoPE` (the queries' RoPE in one pass, naf/axial_rope.h).
//
// Applications normally never include this header: they load the shared library with
// `ov::Core::add_extension("libnaf_openvino.so")`, which registers the operation (for IR `.xml`
// files) and the ONNX frontend mapping (domain "naf"). The library exports only the OpenVINO entry
// point `create_extensions` and `naf_openvino_built_with`; the class below is declared here for
// the extension's own build and for projects that compile naf_openvino.cc into their binary.
#ifndef NAF_OPENVINO_EXTENSION_HPP_
#define NAF_OPENVINO_EXTENSION_HPP_

#include <cstdint>
#include <memory>

#include <openvino/op/op.hpp>

#if defined(_WIN32)
#define NAF_OPENVINO_API __declspec(dllexport)
#else
#define NAF_OPENVINO_API __attribute__((visibility("default")))
#endif

namespace naf {
namespace openvino {

// Inputs: query (B, Dq, H, W), key (B, Dq, h, w), value (B, C, h, w) (one dtype: f32 or f16),
// row_index (H, K) i32, col_index (W, K) i32. Output: (B, C, H, W) of the value dtype.
// Attributes: num_heads (> 0, divides Dq and C), scale (logit scale).
class CrossScaleNeighborhoodAttention : public ov::op::Op {
 public:
  // IR: <layer type="CrossScaleNeighborhoodAttention" version="naf_opset1">.
  OPENVINO_OP("CrossScaleNeighborhoodAttention", "naf_opset1");

  CrossScaleNeighborhoodAttention() = default;
  CrossScaleNeighborhoodAttention(const ov::OutputVector& inputs, int64_t num_heads, float scale);

  void validate_and_infer_types() override;
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& new_args) const override;
  bool visit_attributes(ov::AttributeVisitor& visitor) override;
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
  bool has_evaluate() const override;

  int64_t num_heads() const { return num_heads_; }
  float scale() const { return scale_; }

 private:
  int64_t num_heads_ = 0;
  float scale_ = 0.0f;
};

// `naf::AxialRoPE` (naf/axial_rope.h): the queries' rotary embedding in one pass. Inputs: x
// (B, D, H, W), cos_h, sin_h (Q, H), cos_w, sin_w (Q, W), Q = D / num_heads / 4, one dtype (f32 or
// f16). Output: like x. Attribute: num_heads.
class AxialRoPE : public ov::op::Op {
 public:
  OPENVINO_OP("AxialRoPE", "naf_opset1");

  AxialRoPE() = default;
  AxialRoPE(const ov::OutputVector& inputs, int64_t num_heads);

  void validate_and_infer_types() override;
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& new_args) const override;
  bool visit_attributes(ov::AttributeVisitor& visitor) override;
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
  bool has_evaluate() const override;

  int64_t num_heads() const { return num_heads_; }

 private:
  int64_t num_heads_ = 0;
};

}  // namespace openvino
}  // namespace naf

extern "C" {
// "MAJOR.MINOR.PATCH" of the OpenVINO headers the library was compiled against. An extension
// only loads into that exact OpenVINO release.
NAF_OPENVINO_API const char* naf_openvino_built_with(void);
}

#endif  // NAF_OPENVINO_EXTENSION_HPP_
