# Where cmake/OnnxRuntimeHeaders.cmake keeps the ONNX Runtime headers it fetches, and where it
# fetches them from, without fetching anything: for builds that may use cached headers but must
# not download them.
include_guard(GLOBAL)

# The C API the plugins are compiled against: ONNX Runtime 1.29 (C API 29). The API is forward
# compatible, so libraries built against it load in every newer runtime.
set(NAF_ORT_HEADERS_VERSION "1.29.0" CACHE STRING "ONNX Runtime release whose C/C++ API headers are used")
# The release archive (any platform's carries the same headers; this is Linux x64's) and its
# SHA-256 as published with the release: the normal route on a machine with internet access.
set(NAF_ORT_ARCHIVE_URL
    "https://github.com/microsoft/onnxruntime/releases/download/v1.29.0/onnxruntime-linux-x64-1.29.0.tgz"
    CACHE STRING "ONNX Runtime release archive to take the headers from (http(s):// or file://)")
set(NAF_ORT_ARCHIVE_SHA256 "c3fddc4f139a045b0c4902c57410f0694f1c2fdf9b6939fbe38b1aeae7cd14ba"
    CACHE STRING "SHA-256 the archive at NAF_ORT_ARCHIVE_URL must have")
# Last resort: an npm package that bundles the same headers (C API 29) in its iOS framework.
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

# <out> = the cache folder for NAF_ORT_HEADERS_VERSION: under $ENV{NAF_EXPORT_CACHE}, else
# ~/.cache/naf-export.
function(naf_ort_header_cache_dir out)
  if(DEFINED ENV{NAF_EXPORT_CACHE} AND NOT "$ENV{NAF_EXPORT_CACHE}" STREQUAL "")
    set(root "$ENV{NAF_EXPORT_CACHE}")
  else()
    set(root "$ENV{HOME}/.cache/naf-export")
  endif()
  set(${out} "${root}/onnxruntime-headers-${NAF_ORT_HEADERS_VERSION}" PARENT_SCOPE)
endfunction()
