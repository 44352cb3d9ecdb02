# Where cmake/OnnxRuntimeHeaders.cmake keeps the ONNX Runtime headers it fetches, without
# fetching anything: for builds that may use cached headers but must not download them.
include_guard(GLOBAL)

set(NAF_ORT_NPM_PACKAGE "com.github.asus4.onnxruntime" CACHE STRING "npm package carrying ONNX Runtime headers")
set(NAF_ORT_NPM_VERSION "0.4.9" CACHE STRING "Version of NAF_ORT_NPM_PACKAGE")

# <out> = TRUE when <dir> holds both C and C++ API headers.
function(_naf_ort_headers_ok dir out)
  if(dir AND EXISTS "${dir}/onnxruntime_c_api.h" AND EXISTS "${dir}/onnxruntime_cxx_api.h")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# <out> = the cache folder for NAF_ORT_NPM_VERSION: $ENV{NAF_EXPORT_CACHE}, else ~/.cache/naf-export.
function(naf_ort_header_cache_dir out)
  if(DEFINED ENV{NAF_EXPORT_CACHE} AND NOT "$ENV{NAF_EXPORT_CACHE}" STREQUAL "")
    set(root "$ENV{NAF_EXPORT_CACHE}")
  else()
    set(root "$ENV{HOME}/.cache/naf-export")
  endif()
  set(${out} "${root}/onnxruntime-headers-${NAF_ORT_NPM_VERSION}" PARENT_SCOPE)
endfunction()
