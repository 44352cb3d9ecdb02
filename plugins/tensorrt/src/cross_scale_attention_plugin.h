// TensorRT 10 plugin for the `naf::CrossScaleNeighborhoodAttention` operator (DESIGN.md section 2).
//
// Registered as name "CrossScaleNeighborhoodAttention", version "1", namespace "" so that
// TensorRT's ONNX parser finds it by op_type (plugin fallback). The math lives in the operator
// core (naf_csna_forward_cuda); this file only adapts it to the IPluginV3 interfaces.
#ifndef NAF_TENSORRT_CROSS_SCALE_ATTENTION_PLUGIN_H_
#define NAF_TENSORRT_CROSS_SCALE_ATTENTION_PLUGIN_H_

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "naf/cross_scale_attention.h"

namespace naf {
namespace tensorrt {

extern char const* const kPluginName;     // "CrossScaleNeighborhoodAttention"
extern char const* const kPluginVersion;  // "1"
extern char const* const kPluginNamespace;  // ""

// Inputs: 0 query (B,Dq,H,W), 1 key (B,Dq,h,w), 2 value (B,C,h,w) float32|float16;
// 3 row_index (H,K), 4 col_index (W,K) int32. Output 0: (B,C,H,W), value's type.
enum : int32_t { kQuery = 0, kKey, kValue, kRowIndex, kColIndex, kNumInputs };
constexpr int32_t kNumOutputs = 1;

class CrossScaleAttentionPlugin final : public nvinfer1::IPluginV3,
                                        public nvinfer1::IPluginV3OneCore,
                                        public nvinfer1::IPluginV3OneBuild,
                                        public nvinfer1::IPluginV3OneRuntime {
 public:
  // `scale` NaN means "not given": (Dq / num_heads) ** -0.5 is used at execution.
  CrossScaleAttentionPlugin(int32_t num_heads, float scale);
  CrossScaleAttentionPlugin(CrossScaleAttentionPlugin const&) = delete;
  CrossScaleAttentionPlugin& operator=(CrossScaleAttentionPlugin const&) = delete;
  ~CrossScaleAttentionPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;
  char const* getTimingCacheID() noexcept override;
  char const* getMetadataString() noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                  nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

  int32_t numHeads() const { return mNumHeads; }
  float scale() const { return mScale; }

 private:
  int32_t mNumHeads;
  float mScale;
  std::string mDescription;  // attribute string for getTimingCacheID / getMetadataString
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

class CrossScaleAttentionPluginCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  CrossScaleAttentionPluginCreator();
  ~CrossScaleAttentionPluginCreator() override = default;

  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

 private:
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

// Shape contract check on concrete dimensions (a -1 dimension is accepted as "not known yet").
// Returns an empty string when valid, otherwise a message naming the offending input.
std::string checkDims(nvinfer1::Dims const* dims, int32_t nbInputs, int32_t numHeads);

// Routes a message to the logger TensorRT provides through setLoggerFinder, else to stderr.
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;
void setLoggerFinderImpl(nvinfer1::ILoggerFinder* finder) noexcept;

}  // namespace tensorrt
}  // namespace naf

#endif  // NAF_TENSORRT_CROSS_SCALE_ATTENTION_PLUGIN_H_
