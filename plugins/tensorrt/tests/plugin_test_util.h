// Helpers of the plugin's test programs (plugin_host_check.cpp, plugin_device_check.cpp): tensor
// descriptions as TensorRT fills them, and the plugin's capability interfaces.
#ifndef NAF_TENSORRT_PLUGIN_TEST_UTIL_H_
#define NAF_TENSORRT_PLUGIN_TEST_UTIL_H_

#include <NvInferRuntime.h>

#include <cstdint>
#include <initializer_list>

namespace naf_plugin_test {

inline nvinfer1::PluginTensorDesc desc(std::initializer_list<int64_t> dims, nvinfer1::DataType type) {
  nvinfer1::PluginTensorDesc d{};
  d.dims.nbDims = static_cast<int32_t>(dims.size());
  int32_t i = 0;
  for (int64_t v : dims) d.dims.d[i++] = v;
  d.type = type;
  d.format = nvinfer1::TensorFormat::kLINEAR;
  d.scale = -1.0F;
  return d;
}

template <typename T>
T* capability(nvinfer1::IPluginV3* plugin, nvinfer1::PluginCapabilityType type) {
  return static_cast<T*>(plugin->getCapabilityInterface(type));
}

}  // namespace naf_plugin_test

#endif  // NAF_TENSORRT_PLUGIN_TEST_UTIL_H_
