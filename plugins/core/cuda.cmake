# CUDA kernel of the operator core. Included by plugins/core/CMakeLists.txt when NAF_WITH_CUDA is
# ON (plugins/CMakeLists.txt has enabled the CUDA language and found CUDAToolkit by then).
#
# naf_core_cuda is an OBJECT library: every consumer (the TensorRT plugin, a CUDA build of the
# core library, ...) compiles the kernel in through $<TARGET_OBJECTS:naf_core_cuda> or by linking
# it, and inherits the include directory and the CUDA runtime.
add_library(naf_core_cuda OBJECT "${CMAKE_CURRENT_LIST_DIR}/src/cross_scale_attention.cu")
target_include_directories(naf_core_cuda PUBLIC "${CMAKE_CURRENT_LIST_DIR}/include")
target_link_libraries(naf_core_cuda PUBLIC CUDA::cudart)
set_target_properties(naf_core_cuda PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
  CUDA_RUNTIME_LIBRARY Shared)
target_compile_options(naf_core_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fvisibility=hidden>)
