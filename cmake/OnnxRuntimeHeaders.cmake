# Locates the ONNX Runtime C/C++ API headers and defines the INTERFACE target
# `naf::onnxruntime_headers`.
#
# The onnxruntime pip wheel ships no headers, so, in order:
#   1. -DONNXRUNTIME_INCLUDE_DIR=<dir with onnxruntime_c_api.h> (your own ONNX Runtime);
#   2. the cache: $ENV{NAF_EXPORT_CACHE}/onnxruntime-headers-<ver>, else
#      ~/.cache/naf-export/onnxruntime-headers-<ver>;
#   3. the ONNX Runtime release archive NAF_ORT_ARCHIVE_URL, downloaded once and checked against
#      NAF_ORT_ARCHIVE_SHA256 (a machine with internet access);
#   4. `npm pack` of NAF_ORT_NPM_PACKAGE (machines that reach only the npm registry).
# Routes 3 and 4 keep only the headers, in the cache. When none works, configuring fails with
# what each route needs. (Variables: cmake/OnnxRuntimeHeaderCache.cmake.)
include_guard(GLOBAL)
include("${CMAKE_CURRENT_LIST_DIR}/OnnxRuntimeHeaderCache.cmake")

set(ONNXRUNTIME_INCLUDE_DIR "" CACHE PATH "Directory containing onnxruntime_c_api.h (skips the download)")

# Copies the headers of the folder holding the first onnxruntime_c_api.h under <tree> into
# <cache_dir>; <ok> = TRUE when there was one.
function(_naf_keep_headers tree cache_dir ok)
  file(GLOB_RECURSE c_api "${tree}/*/onnxruntime_c_api.h")
  if(NOT c_api)
    set(${ok} FALSE PARENT_SCOPE)
    return()
  endif()
  list(SORT c_api)
  list(GET c_api 0 first)
  get_filename_component(headers "${first}" DIRECTORY)
  file(GLOB header_files "${headers}/*.h")
  file(MAKE_DIRECTORY "${cache_dir}")
  file(COPY ${header_files} DESTINATION "${cache_dir}")
  set(${ok} TRUE PARENT_SCOPE)
endfunction()

# Route 3. <reason> = empty on success, else why not.
function(_naf_ort_headers_from_archive cache_dir reason)
  set(work "${CMAKE_BINARY_DIR}/_onnxruntime_headers_archive")
  file(REMOVE_RECURSE "${work}")
  file(MAKE_DIRECTORY "${work}")
  string(REGEX REPLACE "^.*/" "" name "${NAF_ORT_ARCHIVE_URL}")
  message(STATUS "naf-export: fetching ONNX Runtime headers from ${NAF_ORT_ARCHIVE_URL} (about 11 MB, once)")
  # The digest is compared here, not by EXPECTED_HASH, which would stop configuring instead of
  # letting the next route try.
  file(DOWNLOAD "${NAF_ORT_ARCHIVE_URL}" "${work}/${name}" STATUS status TIMEOUT 300 INACTIVITY_TIMEOUT 30
       TLS_VERIFY ON)
  list(GET status 0 code)
  if(NOT code EQUAL 0)
    list(GET status 1 text)
    file(REMOVE_RECURSE "${work}")
    set(${reason} "download of ${NAF_ORT_ARCHIVE_URL} failed: ${text}" PARENT_SCOPE)
    return()
  endif()
  file(SHA256 "${work}/${name}" actual)
  string(TOLOWER "${NAF_ORT_ARCHIVE_SHA256}" expected)
  if(NOT actual STREQUAL expected)
    file(REMOVE_RECURSE "${work}")
    set(${reason} "${NAF_ORT_ARCHIVE_URL} has SHA-256 ${actual}, expected ${expected} (NAF_ORT_ARCHIVE_SHA256): refused"
        PARENT_SCOPE)
    return()
  endif()
  file(ARCHIVE_EXTRACT INPUT "${work}/${name}" DESTINATION "${work}/x" PATTERNS "*/include/*")
  _naf_keep_headers("${work}/x" "${cache_dir}" ok)
  file(REMOVE_RECURSE "${work}")
  if(ok)
    set(${reason} "" PARENT_SCOPE)
  else()
    set(${reason} "${NAF_ORT_ARCHIVE_URL} has no include/onnxruntime_c_api.h" PARENT_SCOPE)
  endif()
endfunction()

# Route 4. <reason> = empty on success, else why not.
function(_naf_ort_headers_from_npm cache_dir reason)
  # On PATH only, as a shell would find it (not in CMake's system prefixes).
  find_program(NAF_NPM_EXECUTABLE npm NO_CMAKE_PATH NO_CMAKE_ENVIRONMENT_PATH NO_CMAKE_SYSTEM_PATH)
  if(NOT NAF_NPM_EXECUTABLE)
    set(${reason} "npm (Node.js) is not installed" PARENT_SCOPE)
    return()
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
    set(${reason} "npm pack ${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION} failed (${rc}): ${err}" PARENT_SCOPE)
    return()
  endif()
  file(ARCHIVE_EXTRACT INPUT "${tarball}" DESTINATION "${work}/x"
       PATTERNS "package/Plugins/*/onnxruntime.framework/Headers/*")
  _naf_keep_headers("${work}/x" "${cache_dir}" ok)
  file(REMOVE_RECURSE "${work}")
  if(ok)
    set(${reason} "" PARENT_SCOPE)
  else()
    set(${reason} "${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION} has no onnxruntime_c_api.h" PARENT_SCOPE)
  endif()
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
    _naf_ort_headers_from_archive("${_naf_ort_cache}" _naf_archive_failed)
    if(_naf_archive_failed)
      message(STATUS "naf-export: ${_naf_archive_failed}; trying npm")
      _naf_ort_headers_from_npm("${_naf_ort_cache}" _naf_npm_failed)
      if(_naf_npm_failed)
        message(FATAL_ERROR
          "ONNX Runtime C headers (C API of ONNX Runtime ${NAF_ORT_HEADERS_VERSION}) not found. Provide one of:\n"
          "  1. -DONNXRUNTIME_INCLUDE_DIR=<dir containing onnxruntime_c_api.h> (e.g. the include/ folder of an "
          "ONNX Runtime release archive);\n"
          "  2. the headers in the cache folder ${_naf_ort_cache};\n"
          "  3. internet access to ${NAF_ORT_ARCHIVE_URL}, or a copy of that archive given as "
          "-DNAF_ORT_ARCHIVE_URL=file:///path/to/the/archive (SHA-256 ${NAF_ORT_ARCHIVE_SHA256}; "
          "another archive needs -DNAF_ORT_ARCHIVE_SHA256=<its digest>) -- here: ${_naf_archive_failed};\n"
          "  4. npm (Node.js) with access to the npm registry (${NAF_ORT_NPM_PACKAGE}@${NAF_ORT_NPM_VERSION}) "
          "-- here: ${_naf_npm_failed}.\n"
          "Or configure with -DNAF_BUILD_ONNXRUNTIME=OFF to skip the ONNX Runtime plugin.")
      endif()
    endif()
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
