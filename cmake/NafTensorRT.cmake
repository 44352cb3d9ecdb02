# naf_find_tensorrt(): finds TensorRT for the plugin (plugins/tensorrt, also standalone from
# OUT/plugin_src, which ships this file) and the runtime backend (runtimes/tensorrt). Sets, in the
# calling scope:
#   TensorRT_INCLUDE_DIR (cache)   directory with NvInferRuntime.h, or ...-NOTFOUND
#   TensorRT_LIBRARY (cache)       libnvinfer, or ...-NOTFOUND (headers-only checks need none)
#   TensorRT_VERSION, TensorRT_VERSION_MAJOR/MINOR/PATCH   from NvInferVersion.h
#
# Hints: -DTensorRT_ROOT=/opt/TensorRT-10.x (prefix with include/ and lib/; also the environment
# variable TensorRT_ROOT), -DTensorRT_INCLUDE_DIR=... / -DTensorRT_LIBRARY=...; Debian/JetPack
# packages (/usr/include/<arch>, /usr/lib/<arch>) are found without hints.
macro(naf_find_tensorrt)
  set(TensorRT_ROOT "$ENV{TensorRT_ROOT}" CACHE PATH "TensorRT install prefix (include/, lib/)")
  find_path(TensorRT_INCLUDE_DIR NvInferRuntime.h HINTS "${TensorRT_ROOT}" PATH_SUFFIXES include)
  set(TensorRT_VERSION "")
  set(TensorRT_VERSION_MAJOR "")
  if(TensorRT_INCLUDE_DIR AND EXISTS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h")
    # 10.x headers spell the version either directly or through the TRT_*_ENTERPRISE macros.
    file(STRINGS "${TensorRT_INCLUDE_DIR}/NvInferVersion.h" _naf_trt_version_lines
      REGEX "^#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? +[0-9]+")
    foreach(_part MAJOR MINOR PATCH)
      set(TensorRT_VERSION_${_part} "")
      foreach(_line IN LISTS _naf_trt_version_lines)
        if(_line MATCHES "^#define (NV_TENSORRT|TRT)_${_part}(_ENTERPRISE)? +([0-9]+)")
          set(TensorRT_VERSION_${_part} "${CMAKE_MATCH_3}")
        endif()
      endforeach()
    endforeach()
    set(TensorRT_VERSION "${TensorRT_VERSION_MAJOR}.${TensorRT_VERSION_MINOR}.${TensorRT_VERSION_PATCH}")
  endif()
  find_library(TensorRT_LIBRARY NAMES nvinfer nvinfer_10 HINTS "${TensorRT_ROOT}" PATH_SUFFIXES lib lib64)
endmacro()
