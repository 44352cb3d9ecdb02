# Locates the ONNX Runtime C/C++ API headers and defines the INTERFACE target
# `naf::onnxruntime_headers`.
#
# The onnxruntime pip wheel ships no headers, so, in order:
#   1. -DONNXRUNTIME_INCLUDE_DIR=<dir with onnxruntime_c_api.h> (your own ONNX Runtime);
#   2. a cache directory: $ENV{NAF_EXPORT_CACHE}/onnxruntime-headers-<ver>, else
#      ~/.cache/naf-export/onnxruntime-headers-<ver>;
#   3. `npm pack` of the npm package below (it bundles the headers of ONNX Runtime's C API,
#      version 29, inside its iOS framework); only one Headers folder is kept in the cache.
# The C API is forward compatible, so these headers serve any newer runtime as well.
include_guard(GLOBAL)
include("${CMAKE_CURRENT_LIST_DIR}/OnnxRuntimeHeaderCache.cmake")

set(ONNXRUNTIME_INCLUDE_DIR "" CACHE PATH "Directory containing onnxruntime_c_api.h (skips the download)")

function(_naf_fetch_ort_headers cache_dir)
  find_program(NAF_NPM_EXECUTABLE npm)
  if(NOT NAF_NPM_EXECUTABLE)
    message(FATAL_ERROR
      "ONNX Runtime headers not found. Either pass -DONNXRUNTIME_INCLUDE_DIR=<dir containing "
      "onnxruntime_c_api.h> (e.g. the include/ folder of an onnxruntime release archive), "
      "install npm (Node.js) so the build can fetch ${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION}, "
      "or configure with -DNAF_BUILD_ONNXRUNTIME=OFF.")
  endif()
  set(work "${CMAKE_BINARY_DIR}/_onnxruntime_headers_download")
  file(REMOVE_RECURSE "${work}")
  file(MAKE_DIRECTORY "${work}")
  message(STATUS "naf-export: fetching ONNX Runtime headers with npm pack "
                 "${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION} (about 150 MB, once)")
  # A private npm cache keeps the 150 MB tarball out of ~/.npm; both are deleted below.
  execute_process(
    COMMAND "${NAF_NPM_EXECUTABLE}" pack "${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION}"
            --cache "${work}/npm-cache" --silent
    WORKING_DIRECTORY "${work}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  file(GLOB tarball "${work}/*.tgz")
  if(NOT rc EQUAL 0 OR NOT tarball)
    file(REMOVE_RECURSE "${work}")
    message(FATAL_ERROR
      "npm pack ${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION} failed (${rc}): ${err}\n"
      "Pass -DONNXRUNTIME_INCLUDE_DIR=<dir containing onnxruntime_c_api.h> instead, or "
      "configure with -DNAF_BUILD_ONNXRUNTIME=OFF.")
  endif()
  file(ARCHIVE_EXTRACT INPUT "${tarball}" DESTINATION "${work}/x"
       PATTERNS "package/Plugins/*/onnxruntime.framework/Headers/*")
  file(GLOB_RECURSE c_api "${work}/x/*/onnxruntime_c_api.h")
  if(NOT c_api)
    file(REMOVE_RECURSE "${work}")
    message(FATAL_ERROR "${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION} has no onnxruntime_c_api.h; "
                        "pass -DONNXRUNTIME_INCLUDE_DIR=<dir containing onnxruntime_c_api.h>.")
  endif()
  list(SORT c_api)
  list(GET c_api 0 first)
  get_filename_component(headers "${first}" DIRECTORY)
  file(GLOB header_files "${headers}/*.h")
  file(MAKE_DIRECTORY "${cache_dir}")
  file(COPY ${header_files} DESTINATION "${cache_dir}")
  file(REMOVE_RECURSE "${work}")
endfunction()

_naf_ort_headers_ok("${ONNXRUNTIME_INCLUDE_DIR}" _naf_given_ok)
if(ONNXRUNTIME_INCLUDE_DIR AND NOT _naf_given_ok)
  message(FATAL_ERROR "ONNXRUNTIME_INCLUDE_DIR=${ONNXRUNTIME_INCLUDE_DIR} does not contain "
                      "onnxruntime_c_api.h and onnxruntime_cxx_api.h.")
endif()
if(NOT _naf_given_ok)
  naf_ort_header_cache_dir(_naf_ort_cache)
  _naf_ort_headers_ok("${_naf_ort_cache}" _naf_cache_ok)
  if(NOT _naf_cache_ok)
    _naf_fetch_ort_headers("${_naf_ort_cache}")
  endif()
  set(ONNXRUNTIME_INCLUDE_DIR "${_naf_ort_cache}" CACHE PATH
      "Directory containing onnxruntime_c_api.h (skips the download)" FORCE)
endif()
message(STATUS "naf-export: ONNX Runtime headers in ${ONNXRUNTIME_INCLUDE_DIR}")

if(NOT TARGET naf::onnxruntime_headers)
  add_library(naf_onnxruntime_headers INTERFACE)
  add_library(naf::onnxruntime_headers ALIAS naf_onnxruntime_headers)
  # SYSTEM: the third-party headers' own warnings are not ours to fix.
  target_include_directories(naf_onnxruntime_headers SYSTEM INTERFACE "${ONNXRUNTIME_INCLUDE_DIR}")
endif()
