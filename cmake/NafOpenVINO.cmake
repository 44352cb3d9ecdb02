# naf_find_openvino(): finds OpenVINO (component Runtime) and its TBB for the OpenVINO extension
# (plugins/openvino) and the OpenVINO runtime backend (runtimes/openvino). Sets OpenVINO_FOUND
# and, when found, the imported targets openvino::runtime and TBB::tbb in the calling directory.
#
# OpenVINO's CMake config comes from -DOpenVINO_DIR=<dir>, or, when not given, from the `openvino`
# pip wheel importable by the Python interpreter of the build (NafPython): <site-packages>/openvino/cmake.
# A user's -DOpenVINO_DIR is kept; one found through Python is looked up again at every configure,
# since a reused build folder may now be configured by another interpreter (pip build isolation).
macro(naf_find_openvino)
  if(NOT OpenVINO_DIR OR OpenVINO_DIR STREQUAL NAF_OPENVINO_DIR_FROM_PYTHON)
    include(NafPython)
    naf_python_interpreter(_naf_python)
    set(_naf_ov_cmake_dir "")
    if(_naf_python AND NOT CMAKE_CROSSCOMPILING)
      execute_process(
        COMMAND "${_naf_python}" -c "import os, openvino; print(os.path.join(os.path.dirname(openvino.__file__), 'cmake'))"
        OUTPUT_VARIABLE _naf_ov_cmake_dir OUTPUT_STRIP_TRAILING_WHITESPACE
        ERROR_QUIET RESULT_VARIABLE _naf_ov_rc)
      if(NOT _naf_ov_rc EQUAL 0 OR NOT EXISTS "${_naf_ov_cmake_dir}/OpenVINOConfig.cmake")
        set(_naf_ov_cmake_dir "")
      endif()
    endif()
    # The wheel keeps TBBConfig.cmake next to OpenVINOConfig.cmake.
    set(OpenVINO_DIR "${_naf_ov_cmake_dir}" CACHE PATH "Directory containing OpenVINOConfig.cmake" FORCE)
    set(TBB_DIR "${_naf_ov_cmake_dir}" CACHE PATH "Directory containing TBBConfig.cmake" FORCE)
    set(NAF_OPENVINO_DIR_FROM_PYTHON "${_naf_ov_cmake_dir}" CACHE INTERNAL "OpenVINO_DIR as found through Python")
  endif()
  find_package(OpenVINO CONFIG QUIET COMPONENTS Runtime)
  if(OpenVINO_FOUND)
    # TBB is OpenVINO's thread pool; the wheel ships its CMake config next to OpenVINO's.
    find_package(TBB CONFIG QUIET COMPONENTS tbb HINTS "${OpenVINO_DIR}")
  endif()
endmacro()
