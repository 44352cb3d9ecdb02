# naf_python_interpreter(<out-var>): the Python interpreter whose wheels (onnxruntime, openvino)
# the native build may take libraries and CMake configs from: the one given to CMake
# (Python_EXECUTABLE, which scikit-build-core passes, or Python3_EXECUTABLE), else python3 on PATH.
# Empty when there is none.
function(naf_python_interpreter out_var)
  foreach(candidate IN ITEMS "${Python_EXECUTABLE}" "${Python3_EXECUTABLE}")
    if(candidate)
      set(${out_var} "${candidate}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  # find_program caches its result under this name: a normal variable of the same name would
  # hide it, hence a name of its own.
  find_program(NAF_PYTHON_ON_PATH NAMES python3 python)
  if(NAF_PYTHON_ON_PATH)
    set(${out_var} "${NAF_PYTHON_ON_PATH}" PARENT_SCOPE)
  else()
    set(${out_var} "" PARENT_SCOPE)
  endif()
endfunction()
