# Cross-compilation toolchain: x86-64 host -> NVIDIA Jetson Orin (aarch64, JetPack 6, sm_87).
#
# Host prerequisites (Ubuntu 22.04, matching JetPack 6's L4T r36):
#   sudo apt-get install g++-aarch64-linux-gnu
#   CUDA for the host plus its aarch64 cross target of the *same version as JetPack*
#   (JetPack 6.0/6.1/6.2: CUDA 12.2 / 12.6), e.g. from NVIDIA's repository:
#     sudo apt-get install cuda-toolkit-12-6 cuda-cross-aarch64-12-6
#   which provides /usr/local/cuda-12.6/targets/aarch64-linux.
#   A sysroot with the Jetson's TensorRT (copy /usr/include/aarch64-linux-gnu/NvInfer*.h and
#   /usr/lib/aarch64-linux-gnu/libnvinfer.so* from the device, or unpack the JetPack
#   nv-tensorrt debs), passed as -DTensorRT_ROOT=<dir with include/ and lib/>.
#
# Usage:
#   cmake -S . -B build-jetson -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/aarch64-jetson.cmake \
#         -DCUDAToolkit_ROOT=/usr/local/cuda-12.6 -DTensorRT_ROOT=$HOME/jetson-sysroot/tensorrt \
#         -DNAF_WITH_CUDA=ON -DNAF_BUILD_TENSORRT=ON -DNAF_BUILD_ONNXRUNTIME=OFF -DNAF_BUILD_OPENVINO=OFF
#   cmake --build build-jetson --target naf_tensorrt -j
#
# The CPU parts alone (core, ONNX Runtime plugin, runtimes/ with naf-run) need only
# g++-aarch64-linux-gnu: -DNAF_WITH_CUDA=OFF -DNAF_BUILD_TENSORRT=OFF -DNAF_BUILD_OPENVINO=OFF
# -DNAF_BUILD_RUNTIMES=ON -DNAF_RUNTIME_OPENVINO=OFF -DNAF_RUNTIME_TENSORRT=OFF (runtimes/README.md;
# tests/test_aarch64.py builds exactly that and runs the kernels under qemu-aarch64).
#
# Overridable cache variables: NAF_JETSON_TRIPLE (compiler prefix), NAF_JETSON_SYSROOT.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(NAF_JETSON_TRIPLE "aarch64-linux-gnu" CACHE STRING "Cross compiler prefix")
set(NAF_JETSON_SYSROOT "" CACHE PATH "Optional sysroot copied from the Jetson (rootfs)")

set(CMAKE_C_COMPILER "${NAF_JETSON_TRIPLE}-gcc")
set(CMAKE_CXX_COMPILER "${NAF_JETSON_TRIPLE}-g++")
# nvcc drives the aarch64 host compiler; CMake picks the toolkit's targets/aarch64-linux tree
# (headers, libcudart) because CMAKE_SYSTEM_PROCESSOR is aarch64 while cross-compiling.
set(CMAKE_CUDA_HOST_COMPILER "${NAF_JETSON_TRIPLE}-g++")
if(NOT DEFINED CMAKE_CUDA_COMPILER AND DEFINED CUDAToolkit_ROOT)
  set(CMAKE_CUDA_COMPILER "${CUDAToolkit_ROOT}/bin/nvcc")
endif()

# Jetson Orin (AGX, NX, Nano) is compute capability 8.7.
set(NAF_CUDA_ARCHITECTURES "87" CACHE STRING "CUDA architectures (87: Jetson Orin)")
set(CMAKE_CUDA_ARCHITECTURES "87" CACHE STRING "CUDA architectures")

if(NAF_JETSON_SYSROOT)
  set(CMAKE_SYSROOT "${NAF_JETSON_SYSROOT}")
  list(APPEND CMAKE_FIND_ROOT_PATH "${NAF_JETSON_SYSROOT}")
endif()
if(DEFINED TensorRT_ROOT)
  list(APPEND CMAKE_FIND_ROOT_PATH "${TensorRT_ROOT}")
endif()
# Programs from the host, libraries and headers from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
