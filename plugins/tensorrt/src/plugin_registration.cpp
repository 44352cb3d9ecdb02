// Entry points of libnaf_tensorrt.so.
//
// * Dynamic loading (the recommended way): `trtexec --dynamicPlugins=libnaf_tensorrt.so`,
//   `IPluginRegistry::loadLibrary(path)`, Python `trt.get_plugin_registry().load_library(path)`.
//   TensorRT dlopens the library, hands it a logger finder through `setLoggerFinder` and
//   registers the creators returned by `getCreators`.
// * Explicit registration for applications that link the library: naf_tensorrt_register_plugins.
// * Static registration (creator registered by a static initializer on load, for
//   `trtexec --staticPlugins` or Python `ctypes.CDLL`): only when built with
//   -DNAF_TENSORRT_STATIC_REGISTRATION=ON, because loadLibrary refuses a library whose creators
//   are already registered.
#include <NvInferRuntime.h>

#include <cstdint>

#include "cross_scale_attention_plugin.h"

#if defined(_WIN32)
#define NAF_TRT_API __declspec(dllexport)
#else
#define NAF_TRT_API __attribute__((visibility("default")))
#endif

namespace {

naf::tensorrt::CrossScaleAttentionPluginCreator& creatorInstance() {
  static naf::tensorrt::CrossScaleAttentionPluginCreator creator;
  return creator;
}

}  // namespace

extern "C" {

NAF_TRT_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  naf::tensorrt::setLoggerFinderImpl(finder);
}

NAF_TRT_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creatorInstance()};
  nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
  return creators;
}

// Registers the creator with `registry` (the global registry when null). Returns false when
// TensorRT refuses it, e.g. because a creator of the same name and version is already there.
NAF_TRT_API bool naf_tensorrt_register_plugins(nvinfer1::IPluginRegistry* registry) {
  if (registry == nullptr) registry = getPluginRegistry();
  if (registry == nullptr) return false;
  return registry->registerCreator(creatorInstance(), naf::tensorrt::kPluginNamespace);
}

}  // extern "C"

#if defined(NAF_TENSORRT_STATIC_REGISTRATION)
namespace naf {
namespace tensorrt {
REGISTER_TENSORRT_PLUGIN(CrossScaleAttentionPluginCreator);
}  // namespace tensorrt
}  // namespace naf
#endif
