// TensorRT IPluginV3 adapter of the cross-scale neighborhood attention core.
#include "cross_scale_attention_plugin.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <sstream>

#include "naf/cross_scale_attention_cuda.h"

namespace naf {
namespace tensorrt {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IPluginCapability;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using Severity = nvinfer1::ILogger::Severity;

char const* const kPluginName = "CrossScaleNeighborhoodAttention";
char const* const kPluginVersion = "1";
char const* const kPluginNamespace = "";

namespace {

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

constexpr char const* kInputNames[kNumInputs] = {"query", "key", "value", "row_index", "col_index"};

bool isFloatType(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }

std::string describe(int32_t numHeads, float scale) {
  std::ostringstream s;
  s << "num_heads=" << numHeads << ";scale=";
  if (std::isnan(scale))
    s << "default";
  else
    s << scale;
  return s.str();
}

// Logs `what` as an error and returns -1 (the value TensorRT treats as failure).
int32_t fail(char const* where, std::string const& what) noexcept {
  try {
    logMessage(Severity::kERROR, std::string(kPluginName) + "::" + where + ": " + what);
  } catch (...) {
  }
  return -1;
}

}  // namespace

void setLoggerFinderImpl(nvinfer1::ILoggerFinder* finder) noexcept { gLoggerFinder.store(finder); }

void logMessage(Severity severity, std::string const& message) noexcept {
  nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
  nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(severity, message.c_str());
  } else if (severity <= Severity::kWARNING) {
    std::fprintf(stderr, "[naf_tensorrt] %s\n", message.c_str());
  }
}

std::string checkDims(Dims const* dims, int32_t nbInputs, int32_t numHeads) {
  if (nbInputs != kNumInputs) {
    return "expected 5 inputs (query, key, value, row_index, col_index), got " +
           std::to_string(nbInputs);
  }
  int32_t const ranks[kNumInputs] = {4, 4, 4, 2, 2};
  for (int32_t x = 0; x < kNumInputs; ++x) {
    if (dims[x].nbDims != ranks[x]) {
      return std::string(kInputNames[x]) + ": expected rank " + std::to_string(ranks[x]) +
             ", got rank " + std::to_string(dims[x].nbDims);
    }
    for (int32_t a = 0; a < dims[x].nbDims; ++a) {
      if (dims[x].d[a] == 0) return std::string(kInputNames[x]) + ": empty tensor";
    }
  }
  if (numHeads < 1) return "num_heads must be positive, got " + std::to_string(numHeads);

  // -1 is a dimension not known yet (build phase); every relation involving one is skipped.
  auto known = [](int64_t v) { return v >= 0; };
  auto mismatch = [&](int64_t a, int64_t b) { return known(a) && known(b) && a != b; };
  auto less = [&](int64_t a, int64_t b) { return known(a) && known(b) && a < b; };

  Dims const& q = dims[kQuery];
  Dims const& k = dims[kKey];
  Dims const& v = dims[kValue];
  Dims const& ri = dims[kRowIndex];
  Dims const& ci = dims[kColIndex];
  std::ostringstream msg;
  if (mismatch(q.d[0], k.d[0]) || mismatch(q.d[0], v.d[0])) {
    msg << "query, key and value must share the batch size, got " << q.d[0] << ", " << k.d[0]
        << ", " << v.d[0];
  } else if (mismatch(q.d[1], k.d[1])) {
    msg << "key: expected " << q.d[1] << " channels like query, got " << k.d[1];
  } else if (mismatch(k.d[2], v.d[2]) || mismatch(k.d[3], v.d[3])) {
    msg << "value: spatial size must equal key's " << k.d[2] << "x" << k.d[3] << ", got "
        << v.d[2] << "x" << v.d[3];
  } else if (known(q.d[1]) && q.d[1] % numHeads != 0) {
    msg << "query: channel count " << q.d[1] << " is not divisible by num_heads=" << numHeads;
  } else if (known(v.d[1]) && v.d[1] % numHeads != 0) {
    msg << "value: channel count " << v.d[1] << " is not divisible by num_heads=" << numHeads;
  } else if (mismatch(ri.d[0], q.d[2])) {
    msg << "row_index: expected " << q.d[2] << " rows (query height), got " << ri.d[0];
  } else if (mismatch(ci.d[0], q.d[3])) {
    msg << "col_index: expected " << q.d[3] << " rows (query width), got " << ci.d[0];
  } else if (mismatch(ri.d[1], ci.d[1])) {
    msg << "row_index and col_index must have the same kernel size, got " << ri.d[1] << " and "
        << ci.d[1];
  } else if (known(ri.d[1]) && ri.d[1] % 2 == 0) {
    msg << "row_index: kernel size (second dimension) must be odd, got " << ri.d[1];
  } else if (less(k.d[2], ri.d[1]) || less(k.d[3], ri.d[1])) {
    msg << "key: low-resolution size " << k.d[2] << "x" << k.d[3]
        << " must be at least the kernel size " << ri.d[1];
  } else if (less(q.d[2], k.d[2]) || less(q.d[3], k.d[3])) {
    msg << "query: output size " << q.d[2] << "x" << q.d[3]
        << " must be at least the low-resolution size " << k.d[2] << "x" << k.d[3];
  }
  return msg.str();
}

// ---- plugin ------------------------------------------------------------------------------------

CrossScaleAttentionPlugin::CrossScaleAttentionPlugin(int32_t num_heads, float scale)
    : mNumHeads(num_heads), mScale(scale), mDescription(describe(num_heads, scale)) {
  // The serialized fields point at this object's own members, so clones never share them.
  mFields.emplace_back("num_heads", &mNumHeads, PluginFieldType::kINT32, 1);
  mFields.emplace_back("scale", &mScale, PluginFieldType::kFLOAT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

IPluginCapability* CrossScaleAttentionPlugin::getCapabilityInterface(
    PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* CrossScaleAttentionPlugin::clone() noexcept {
  try {
    return new CrossScaleAttentionPlugin(mNumHeads, mScale);
  } catch (std::exception const& e) {
    fail("clone", e.what());
  }
  return nullptr;
}

char const* CrossScaleAttentionPlugin::getPluginName() const noexcept { return kPluginName; }
char const* CrossScaleAttentionPlugin::getPluginVersion() const noexcept { return kPluginVersion; }
char const* CrossScaleAttentionPlugin::getPluginNamespace() const noexcept {
  return kPluginNamespace;
}

int32_t CrossScaleAttentionPlugin::getNbOutputs() const noexcept { return kNumOutputs; }

int32_t CrossScaleAttentionPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                      DataType const* inputTypes,
                                                      int32_t nbInputs) const noexcept {
  if (nbInputs != kNumInputs || nbOutputs != kNumOutputs) {
    return fail("getOutputDataTypes", "expected 5 inputs and 1 output");
  }
  if (!isFloatType(inputTypes[kValue])) {
    return fail("getOutputDataTypes", "value must be float32 or float16");
  }
  outputTypes[0] = inputTypes[kValue];
  return 0;
}

int32_t CrossScaleAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                                   DimsExprs const* /*shapeInputs*/,
                                                   int32_t /*nbShapeInputs*/, DimsExprs* outputs,
                                                   int32_t nbOutputs,
                                                   nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
  if (nbInputs != kNumInputs || nbOutputs != kNumOutputs) {
    return fail("getOutputShapes", "expected 5 inputs and 1 output");
  }
  if (inputs[kQuery].nbDims != 4 || inputs[kValue].nbDims != 4) {
    return fail("getOutputShapes", "query and value must be 4-D (B, C, H, W)");
  }
  // (B, C, H, W): batch and spatial size of the query, channels of the value. The input
  // expressions are reused as they are, so dynamic dimensions stay symbolic.
  outputs[0].nbDims = 4;
  outputs[0].d[0] = inputs[kQuery].d[0];
  outputs[0].d[1] = inputs[kValue].d[1];
  outputs[0].d[2] = inputs[kQuery].d[2];
  outputs[0].d[3] = inputs[kQuery].d[3];
  return 0;
}

bool CrossScaleAttentionPlugin::supportsFormatCombination(int32_t pos,
                                                          DynamicPluginTensorDesc const* inOut,
                                                          int32_t nbInputs,
                                                          int32_t nbOutputs) noexcept {
  if (nbInputs != kNumInputs || nbOutputs != kNumOutputs || pos < 0 ||
      pos >= kNumInputs + kNumOutputs) {
    return false;
  }
  PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  switch (pos) {
    case kQuery:
      return isFloatType(desc.type);
    case kKey:
    case kValue:
      return desc.type == inOut[kQuery].desc.type;
    case kRowIndex:
    case kColIndex:
      return desc.type == DataType::kINT32;
    default:  // the output: value's (= query's) type
      return desc.type == inOut[kQuery].desc.type;
  }
}

int32_t CrossScaleAttentionPlugin::configurePlugin(DynamicPluginTensorDesc const* in,
                                                   int32_t nbInputs,
                                                   DynamicPluginTensorDesc const* out,
                                                   int32_t nbOutputs) noexcept {
  try {
    if (nbInputs != kNumInputs || nbOutputs != kNumOutputs) {
      return fail("configurePlugin", "expected 5 inputs and 1 output");
    }
    DataType const t = in[kQuery].desc.type;
    if (!isFloatType(t) || in[kKey].desc.type != t || in[kValue].desc.type != t ||
        out[0].desc.type != t) {
      return fail("configurePlugin", "query, key, value and output must share float32 or float16");
    }
    if (in[kRowIndex].desc.type != DataType::kINT32 || in[kColIndex].desc.type != DataType::kINT32) {
      return fail("configurePlugin", "row_index and col_index must be int32");
    }
    Dims dims[kNumInputs];
    for (int32_t x = 0; x < kNumInputs; ++x) dims[x] = in[x].desc.dims;
    std::string const problem = checkDims(dims, nbInputs, mNumHeads);
    if (!problem.empty()) return fail("configurePlugin", problem);
    return 0;
  } catch (std::exception const& e) {
    return fail("configurePlugin", e.what());
  }
}

size_t CrossScaleAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/,
                                                   int32_t /*nbInputs*/,
                                                   DynamicPluginTensorDesc const* /*outputs*/,
                                                   int32_t /*nbOutputs*/) const noexcept {
  return 0;  // the kernel allocates nothing; bad indices show up as NaN outputs
}

char const* CrossScaleAttentionPlugin::getTimingCacheID() noexcept { return mDescription.c_str(); }
char const* CrossScaleAttentionPlugin::getMetadataString() noexcept { return mDescription.c_str(); }

int32_t CrossScaleAttentionPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                                 PluginTensorDesc const* out,
                                                 int32_t nbOutputs) noexcept {
  try {
    if (nbInputs != kNumInputs || nbOutputs != kNumOutputs) {
      return fail("onShapeChange", "expected 5 inputs and 1 output");
    }
    Dims dims[kNumInputs];
    for (int32_t x = 0; x < kNumInputs; ++x) dims[x] = in[x].dims;
    std::string const problem = checkDims(dims, nbInputs, mNumHeads);
    if (!problem.empty()) return fail("onShapeChange", problem);
    Dims const& o = out[0].dims;
    if (o.nbDims != 4 || o.d[0] != in[kQuery].dims.d[0] || o.d[1] != in[kValue].dims.d[1] ||
        o.d[2] != in[kQuery].dims.d[2] || o.d[3] != in[kQuery].dims.d[3]) {
      return fail("onShapeChange", "output must be (B, C, H, W) of query and value");
    }
    return 0;
  } catch (std::exception const& e) {
    return fail("onShapeChange", e.what());
  }
}

int32_t CrossScaleAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc,
                                           PluginTensorDesc const* /*outputDesc*/,
                                           void const* const* inputs, void* const* outputs,
                                           void* /*workspace*/, cudaStream_t stream) noexcept {
  Dims const& q = inputDesc[kQuery].dims;
  Dims const& v = inputDesc[kValue].dims;
  NafCsnaShape shape{};
  shape.batch = q.d[0];
  shape.query_channels = q.d[1];
  shape.value_channels = v.d[1];
  shape.out_height = q.d[2];
  shape.out_width = q.d[3];
  shape.in_height = v.d[2];
  shape.in_width = v.d[3];
  shape.kernel_size = inputDesc[kRowIndex].dims.d[1];
  shape.num_heads = mNumHeads;

  NafDType const dtype =
      inputDesc[kQuery].type == DataType::kHALF ? NAF_DTYPE_FLOAT16 : NAF_DTYPE_FLOAT32;
  float scale = mScale;
  if (std::isnan(scale)) {
    scale = 1.0F / std::sqrt(static_cast<float>(shape.query_channels / mNumHeads));
  }
  // The shapes were validated in onShapeChange; naf_csna_forward_cuda checks them again and
  // range-checks every index entry on the device (bad entries give NaN outputs).
  cudaError_t const err = naf_csna_forward_cuda(
      &shape, dtype, inputs[kQuery], inputs[kKey], inputs[kValue],
      static_cast<int32_t const*>(inputs[kRowIndex]), static_cast<int32_t const*>(inputs[kColIndex]),
      scale, outputs[0], /*error_flag=*/nullptr, stream);
  if (err != cudaSuccess) {
    return fail("enqueue", std::string("naf_csna_forward_cuda failed: ") + cudaGetErrorName(err));
  }
  return 0;
}

nvinfer1::IPluginV3* CrossScaleAttentionPlugin::attachToContext(
    nvinfer1::IPluginResourceContext* /*context*/) noexcept {
  return clone();  // no per-context resources
}

PluginFieldCollection const* CrossScaleAttentionPlugin::getFieldsToSerialize() noexcept {
  return &mFieldCollection;
}

// ---- creator -----------------------------------------------------------------------------------

CrossScaleAttentionPluginCreator::CrossScaleAttentionPluginCreator() {
  mFields.emplace_back("num_heads", nullptr, PluginFieldType::kINT32, 1);
  mFields.emplace_back("scale", nullptr, PluginFieldType::kFLOAT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

char const* CrossScaleAttentionPluginCreator::getPluginName() const noexcept { return kPluginName; }
char const* CrossScaleAttentionPluginCreator::getPluginVersion() const noexcept {
  return kPluginVersion;
}
char const* CrossScaleAttentionPluginCreator::getPluginNamespace() const noexcept {
  return kPluginNamespace;
}

PluginFieldCollection const* CrossScaleAttentionPluginCreator::getFieldNames() noexcept {
  return &mFieldCollection;
}

nvinfer1::IPluginV3* CrossScaleAttentionPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc,
    nvinfer1::TensorRTPhase /*phase*/) noexcept {
  // Build phase: the ONNX node's attributes (the parser passes ints as kINT32, floats as
  // kFLOAT32); runtime phase: what getFieldsToSerialize wrote. Both are read the same way;
  // 64-bit variants are accepted for callers building the network by hand.
  try {
    int64_t numHeads = 0;
    bool haveHeads = false;
    float scale = std::numeric_limits<float>::quiet_NaN();
    for (int32_t x = 0; fc != nullptr && x < fc->nbFields; ++x) {
      PluginField const& f = fc->fields[x];
      if (f.name == nullptr || f.data == nullptr || f.length < 1) continue;
      if (std::strcmp(f.name, "num_heads") == 0) {
        if (f.type == PluginFieldType::kINT32) {
          numHeads = *static_cast<int32_t const*>(f.data);
        } else if (f.type == PluginFieldType::kINT64) {
          numHeads = *static_cast<int64_t const*>(f.data);
        } else {
          fail("createPlugin", "attribute num_heads must be an int32 (or int64) field");
          return nullptr;
        }
        haveHeads = true;
      } else if (std::strcmp(f.name, "scale") == 0) {
        if (f.type == PluginFieldType::kFLOAT32) {
          scale = *static_cast<float const*>(f.data);
        } else if (f.type == PluginFieldType::kFLOAT64) {
          scale = static_cast<float>(*static_cast<double const*>(f.data));
        } else {
          fail("createPlugin", "attribute scale must be a float32 (or float64) field");
          return nullptr;
        }
      }
    }
    if (!haveHeads || numHeads < 1 || numHeads > std::numeric_limits<int32_t>::max()) {
      fail("createPlugin", "attribute num_heads (a positive int) is required");
      return nullptr;
    }
    return new CrossScaleAttentionPlugin(static_cast<int32_t>(numHeads), scale);
  } catch (std::exception const& e) {
    fail("createPlugin", e.what());
  }
  return nullptr;
}

}  // namespace tensorrt
}  // namespace naf
