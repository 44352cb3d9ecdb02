# CUDA architectures of every CUDA target (the kernel, the TensorRT plugin, the runtime backend's
# preprocessing, the PyTorch op's library), from one cache variable:
#
#   NAF_CUDA_ARCHITECTURES   compute capabilities, e.g. "87" on a Jetson Orin. Default
#                            75;80;86;87;89;90: T4, A100, A10/RTX 30xx, Orin, L4/L40/RTX 40xx, H100/H200.
#
# Each gets its machine code (sm_XX); the newest also gets PTX (compute_XX), which the driver
# compiles on first load for GPUs newer than the list (Blackwell, ...). Entries already spelled
# with CMake's -real / -virtual suffixes are kept as written. Shipped in OUT/plugin_src.
set(NAF_CUDA_ARCHITECTURES "75;80;86;87;89;90" CACHE STRING
    "CUDA compute capabilities to compile for (machine code for each, PTX for the last)")

# naf_cuda_architectures(<out_var>): NAF_CUDA_ARCHITECTURES in CMAKE_CUDA_ARCHITECTURES' syntax.
function(naf_cuda_architectures out_var)
  set(archs "${NAF_CUDA_ARCHITECTURES}")
  list(LENGTH archs count)
  if(count EQUAL 0)
    message(FATAL_ERROR "naf-export: NAF_CUDA_ARCHITECTURES is empty; expected compute capabilities such as 87 or 75;80;86;87;89;90")
  endif()
  math(EXPR last "${count} - 1")
  set(result "")
  foreach(index RANGE ${last})
    list(GET archs ${index} arch)
    if(NOT arch MATCHES "^[0-9]+[a-z]?(-real|-virtual)?$")
      message(FATAL_ERROR "naf-export: NAF_CUDA_ARCHITECTURES entry '${arch}' is not a compute capability "
                          "(expected numbers such as 75;80;86;87;89;90)")
    endif()
    if(arch MATCHES "-(real|virtual)$" OR index EQUAL last)
      list(APPEND result "${arch}")  # the last one: machine code and PTX
    else()
      list(APPEND result "${arch}-real")
    endif()
  endforeach()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()
