# CUDA kernel of the operator core. Included by plugins/core/CMakeLists.txt when NAF_WITH_CUDA is
# ON (plugins/CMakeLists.txt has enabled the CUDA language and found CUDAToolkit by then).
#
# naf_core_cuda is an OBJECT library: every consumer (the TensorRT plugin, the ONNX Runtime
# plugin's CUDA build, libnaf_cuda for PyTorch) compiles the kernel in by linking it and inherits
# the include directories; each consumer chooses its CUDA runtime (shared or static).
add_library(naf_core_cuda OBJECT "${CMAKE_CURRENT_LIST_DIR}/src/cross_scale_attention.cu")
target_include_directories(naf_core_cuda PUBLIC "${CMAKE_CURRENT_LIST_DIR}/include" ${CUDAToolkit_INCLUDE_DIRS})
set_target_properties(naf_core_cuda PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_SEPARABLE_COMPILATION OFF
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
  CUDA_RUNTIME_LIBRARY None)
target_compile_options(naf_core_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fvisibility=hidden>)
# Experimental staging layout of the kernel, off until scripts/gpu_check.py has measured it on a GPU.
option(NAF_CUDA_PADDED_STAGING "CUDA kernel: padded value staging stride (experimental, not yet run on a GPU)" OFF)
if(NAF_CUDA_PADDED_STAGING)
  target_compile_definitions(naf_core_cuda PRIVATE NAF_CSNA_PADDED_STAGING=1)
endif()

# libnaf_cuda: the kernel's C entry point (naf_csna_forward_cuda) as a library of its own, for
# PyTorch on CUDA (naf_export/cuda_attention.py loads it with ctypes). The CUDA runtime is linked
# statically, so no libcudart has to be on the loader path and PyTorch's is left alone: both use the
# device's primary context, so device pointers and streams pass between them.
if(TARGET CUDA::cudart_static)
  add_library(naf_cuda SHARED)
  target_link_libraries(naf_cuda PRIVATE naf_core_cuda CUDA::cudart_static)
  set_target_properties(naf_cuda PROPERTIES LINKER_LANGUAGE CXX CUDA_RUNTIME_LIBRARY Static
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
    target_link_options(naf_cuda PRIVATE "LINKER:--no-undefined"
      "LINKER:--version-script=${CMAKE_CURRENT_LIST_DIR}/naf_core.map")
  endif()
  if(DEFINED NAF_INSTALL_LIBDIR)
    install(TARGETS naf_cuda LIBRARY DESTINATION ${NAF_INSTALL_LIBDIR} RUNTIME DESTINATION ${NAF_INSTALL_LIBDIR})
  endif()
endif()
