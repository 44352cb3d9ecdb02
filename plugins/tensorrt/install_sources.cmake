# Installs the TensorRT plugin's sources (plugins/tensorrt/plugin_src.manifest) in the layout of
# OUT/plugin_src, so an installed naf-export can hand them to `--target tensorrt` users who build
# the plugin on their own machine (e.g. a Jetson). Included from the top-level CMakeLists.txt.
if(DEFINED SKBUILD_PLATLIB_DIR)
  set(_naf_plugin_src_dest "naf_export/plugin_src")
else()
  set(_naf_plugin_src_dest "share/naf_export/plugin_src")
endif()

get_filename_component(_naf_repo "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/plugin_src.manifest" _naf_manifest_lines)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${CMAKE_CURRENT_LIST_DIR}/plugin_src.manifest")
foreach(_line IN LISTS _naf_manifest_lines)
  string(STRIP "${_line}" _line)
  if(_line STREQUAL "" OR _line MATCHES "^#")
    continue()
  endif()
  string(REGEX REPLACE "[ \t]+" ";" _fields "${_line}")
  list(GET _fields 0 _src)
  list(LENGTH _fields _count)
  if(_count GREATER 1)
    list(GET _fields 1 _dest)
  else()
    set(_dest "${_src}")
  endif()
  get_filename_component(_dest_dir "${_dest}" DIRECTORY)
  get_filename_component(_dest_name "${_dest}" NAME)
  install(FILES "${_naf_repo}/${_src}"
          DESTINATION "${_naf_plugin_src_dest}/${_dest_dir}"
          RENAME "${_dest_name}"
          COMPONENT naf_plugin_src)
endforeach()
