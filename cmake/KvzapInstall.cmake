# KvzapInstall: what `cmake --install` puts in place (docs/runtime-api.md):
#   bin/kvzap                                  the CLI
#   lib/libkvzap.a                             the library (static)
#   include/kvzap/{common,trainer}/*.h         the runtime API's headers, in
#                                              their source layout
#   lib/pkgconfig/kvzap.pc                     pkg-config (use --static)
#   lib/cmake/kvzap/kvzapConfig.cmake (+ Version, Targets)
#                                              find_package(kvzap CONFIG):
#                                              imported target kvzap::kvzap
#   share/doc/kvzap/                           runtime-api.md, examples/
# Included at the very end of the top-level CMakeLists.txt, once every
# target and dependency is defined: the link dependencies written into
# kvzap.pc and kvzapConfig.cmake are read from kvzap_lib's
# INTERFACE_LINK_LIBRARIES, so a dependency added there is picked up without
# changes here (an imported target from a package not known below gets a
# warning at configure time).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(KVZ_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/kvzap CACHE STRING
    "Where kvzapConfig.cmake is installed (relative to the prefix)")
set(KVZ_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig CACHE STRING
    "Where kvzap.pc is installed (relative to the prefix)")
set(KVZ_INSTALL_HEADER_ROOTS trainer/surrogate.h trainer/export.h trainer/prune.h)

# --- public headers: the roots and every header they include ("..."),
#     transitively, installed under include/kvzap/ in their source layout so
#     their relative includes ("../common/kvz_error.h") still resolve ---
set(_kvz_headers)
set(_kvz_todo ${KVZ_INSTALL_HEADER_ROOTS})
while(_kvz_todo)
  list(POP_FRONT _kvz_todo _h)
  if(_h IN_LIST _kvz_headers)
    continue()
  endif()
  if(NOT EXISTS ${CMAKE_SOURCE_DIR}/${_h} OR _h MATCHES "^\\.\\./")
    message(FATAL_ERROR "kvzap install: public header ${_h} is not in the source tree")
  endif()
  list(APPEND _kvz_headers ${_h})
  set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${CMAKE_SOURCE_DIR}/${_h})
  file(STRINGS ${CMAKE_SOURCE_DIR}/${_h} _incs REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  get_filename_component(_dir ${_h} DIRECTORY)
  foreach(_line IN LISTS _incs)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" _inc "${_line}")
    if(_dir)
      set(_inc "${_dir}/${_inc}")
    endif()
    cmake_path(NORMAL_PATH _inc)
    list(APPEND _kvz_todo ${_inc})
  endforeach()
endwhile()
list(SORT _kvz_headers)
foreach(_h IN LISTS _kvz_headers)
  get_filename_component(_dir ${_h} DIRECTORY)
  install(FILES ${CMAKE_SOURCE_DIR}/${_h}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kvzap/${_dir} COMPONENT devel)
endforeach()
string(REPLACE ";" " " _kvz_headers_text "${_kvz_headers}")
message(STATUS "kvzap: installed headers: ${_kvz_headers_text}")

# --- the library's usage requirements for an installed consumer. Include
#     directories (the source tree, HDF5's) and compile definitions
#     (_POSIX_C_SOURCE, KVZ_VERSION, KVZ_HAVE_CUDA) are the build's own: the
#     installed headers need none of them, so they stay build-tree only and
#     consumers get -I<prefix>/include (#include <kvzap/trainer/export.h>). ---
set_target_properties(kvzap_lib PROPERTIES EXPORT_NAME kvzap)
foreach(_prop INTERFACE_INCLUDE_DIRECTORIES INTERFACE_COMPILE_DEFINITIONS)
  get_target_property(_vals kvzap_lib ${_prop})
  if(_vals)
    set(_wrapped)
    foreach(_v IN LISTS _vals)
      list(APPEND _wrapped "$<BUILD_INTERFACE:${_v}>")
    endforeach()
    set_property(TARGET kvzap_lib PROPERTY ${_prop} ${_wrapped})
  endif()
endforeach()
set_property(TARGET kvzap_lib APPEND PROPERTY INTERFACE_INCLUDE_DIRECTORIES
             "$<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>")
# An instrumented library (KVZ_SANITIZE, KVZ_FUZZ) needs the sanitizer
# runtimes wherever it is linked: the directory's link options go along.
get_directory_property(_kvz_link_opts DIRECTORY ${CMAKE_SOURCE_DIR} LINK_OPTIONS)
if(_kvz_link_opts)
  list(REMOVE_DUPLICATES _kvz_link_opts)
endif()
set(KVZ_CFG_SANITIZED OFF)
if(_kvz_link_opts MATCHES "-fsanitize")
  set(KVZ_CFG_SANITIZED ON)
endif()
foreach(_o IN LISTS _kvz_link_opts)
  set_property(TARGET kvzap_lib APPEND PROPERTY INTERFACE_LINK_OPTIONS "$<INSTALL_INTERFACE:${_o}>")
endforeach()
# CUDA objects (nvcc compiles .cu as C++) need the C++ runtime; the build
# links with the CUDA/C++ driver, a C-only consumer must name it.
if(KVZ_HAVE_CUDA)
  foreach(_l IN LISTS CMAKE_CUDA_IMPLICIT_LINK_LIBRARIES)
    if(NOT _l MATCHES "^(c|m|gcc|gcc_s|gcc_eh)$")
      set_property(TARGET kvzap_lib APPEND PROPERTY INTERFACE_LINK_LIBRARIES
                   "$<INSTALL_INTERFACE:${_l}>")
    endif()
  endforeach()
endif()

# --- the link dependencies, for kvzap.pc and kvzapConfig.cmake, collected
#     in global properties:
#       KVZ_PC_REQUIRES     pkg-config modules (Requires.private)
#       KVZ_PC_LIBS         flags and library files (Libs.private)
#       KVZ_CFG_PACKAGES    CMake packages the exported targets come from
#       KVZ_CFG_PKGCONFIG   prefix=module pairs for pkg_check_modules
#       KVZ_CFG_FILES       absolute library paths the consumer must have ---
string(TOUPPER "${CMAKE_BUILD_TYPE}" _kvz_cfg)
function(_kvz_link_item item)
  if(item MATCHES "^\\$<LINK_ONLY:(.*)>$" OR item MATCHES "^\\$<INSTALL_INTERFACE:(.*)>$")
    set(item "${CMAKE_MATCH_1}")
  elseif(item MATCHES "^\\$<BUILD_INTERFACE:")
    return()
  elseif(item MATCHES "\\$<")
    message(WARNING "kvzap install: link item ${item} (a generator expression) "
                    "is left out of kvzap.pc")
    return()
  endif()
  get_property(_seen GLOBAL PROPERTY _KVZ_LINK_SEEN)
  if(item IN_LIST _seen)
    return()
  endif()
  set_property(GLOBAL APPEND PROPERTY _KVZ_LINK_SEEN ${item})
  if(TARGET ${item})
    get_target_property(_imported ${item} IMPORTED)
    if(NOT _imported)
      message(WARNING "kvzap install: kvzap_lib links the build target ${item}, "
                      "which is not installed; kvzap.pc and kvzapConfig.cmake lack it")
      return()
    endif()
    if(item MATCHES "^PkgConfig::(.+)$")
      set(_prefix ${CMAKE_MATCH_1})
      if(NOT DEFINED ${_prefix}_MODULE_NAME)
        message(FATAL_ERROR "kvzap install: ${item}: no ${_prefix}_MODULE_NAME "
                            "(one module per pkg_check_modules call, please)")
      endif()
      set_property(GLOBAL APPEND PROPERTY KVZ_PC_REQUIRES ${${_prefix}_MODULE_NAME})
      set_property(GLOBAL APPEND PROPERTY KVZ_CFG_PKGCONFIG "${_prefix}=${${_prefix}_MODULE_NAME}")
      return()
    endif()
    if(item MATCHES "^Threads::")
      set_property(GLOBAL APPEND PROPERTY KVZ_CFG_PACKAGES "Threads")
    elseif(item MATCHES "^CUDA::")
      set_property(GLOBAL APPEND PROPERTY KVZ_CFG_PACKAGES "CUDAToolkit")
    elseif(item MATCHES "^hdf5::")
      set_property(GLOBAL APPEND PROPERTY KVZ_CFG_PACKAGES "HDF5 COMPONENTS C")
    else()
      message(WARNING "kvzap install: imported target ${item}: add its package to "
                      "cmake/KvzapInstall.cmake (kvzapConfig.cmake will not find it)")
    endif()
    get_target_property(_type ${item} TYPE)
    if(NOT _type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(_loc ${item} IMPORTED_LOCATION_${_kvz_cfg})
      if(NOT _loc)
        get_target_property(_loc ${item} IMPORTED_LOCATION)
      endif()
      if(_loc)
        set_property(GLOBAL APPEND PROPERTY KVZ_PC_LIBS ${_loc})
      endif()
    endif()
    get_target_property(_deps ${item} INTERFACE_LINK_LIBRARIES)
    if(_deps)
      foreach(_d IN LISTS _deps)
        _kvz_link_item("${_d}")
      endforeach()
    endif()
  elseif(IS_ABSOLUTE "${item}")
    set_property(GLOBAL APPEND PROPERTY KVZ_PC_LIBS ${item})
    set_property(GLOBAL APPEND PROPERTY KVZ_CFG_FILES ${item})
  elseif(item MATCHES "^-")
    set_property(GLOBAL APPEND PROPERTY KVZ_PC_LIBS ${item})
  elseif(item MATCHES "::")
    message(WARNING "kvzap install: link item ${item} is not a target; left out")
  else()
    set_property(GLOBAL APPEND PROPERTY KVZ_PC_LIBS -l${item})
  endif()
endfunction()
get_target_property(_kvz_iface kvzap_lib INTERFACE_LINK_LIBRARIES)
foreach(_item IN LISTS _kvz_iface)
  _kvz_link_item("${_item}")
endforeach()
set_property(GLOBAL APPEND PROPERTY KVZ_PC_LIBS ${_kvz_link_opts})
foreach(_var KVZ_PC_REQUIRES KVZ_PC_LIBS KVZ_CFG_PACKAGES KVZ_CFG_PKGCONFIG KVZ_CFG_FILES)
  get_property(${_var} GLOBAL PROPERTY ${_var})
  if(${_var})
    list(REMOVE_DUPLICATES ${_var})
  endif()
endforeach()

# --- install rules ---
install(TARGETS kvzap_lib EXPORT kvzapTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT devel)
# The CLI keeps the link path of its non-system shared libraries (OpenBLAS's
# openblas-pthread/, HDF5's serial/, CUDA's) as its installed RPATH.
set_target_properties(kvzap PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
install(TARGETS kvzap RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(EXPORT kvzapTargets NAMESPACE kvzap:: FILE kvzapTargets.cmake
        DESTINATION ${KVZ_INSTALL_CMAKEDIR} COMPONENT devel)

# kvzapConfig.cmake: the packages and pkg-config modules behind the exported
# target's INTERFACE_LINK_LIBRARIES, found again in the consumer.
set(KVZ_CONFIG_DEPENDENCIES "")
foreach(_p IN LISTS KVZ_CFG_PACKAGES)
  string(APPEND KVZ_CONFIG_DEPENDENCIES "_kvzap_find_package(${_p})\n")
endforeach()
foreach(_p IN LISTS KVZ_CFG_PKGCONFIG)
  string(REPLACE "=" ";" _p "${_p}")
  list(GET _p 0 _prefix)
  list(GET _p 1 _module)
  string(APPEND KVZ_CONFIG_DEPENDENCIES "_kvzap_pkg_module(${_prefix} \"${_module}\")\n")
endforeach()
set(KVZ_CONFIG_FILES "${KVZ_CFG_FILES}")
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kvzapConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/kvzapConfig.cmake INSTALL_DESTINATION ${KVZ_INSTALL_CMAKEDIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/kvzapConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/kvzapConfig.cmake
        ${CMAKE_BINARY_DIR}/cmake/kvzapConfigVersion.cmake
        DESTINATION ${KVZ_INSTALL_CMAKEDIR} COMPONENT devel)

# kvzap.pc: relocatable (paths from ${pcfiledir}) where the install
# directories are relative, since `cmake --install --prefix` may change the
# prefix after configuring.
if(IS_ABSOLUTE "${KVZ_INSTALL_PKGCONFIGDIR}")
  set(KVZ_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _rel "/kvzap-prefix/${KVZ_INSTALL_PKGCONFIGDIR}" "/kvzap-prefix")
  string(REGEX REPLACE "/$" "" _rel "${_rel}")
  set(KVZ_PC_PREFIX "\${pcfiledir}/${_rel}")
endif()
foreach(_d LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_d}}")
    set(KVZ_PC_${_d} "${CMAKE_INSTALL_${_d}}")
  else()
    set(KVZ_PC_${_d} "\${prefix}/${CMAKE_INSTALL_${_d}}")
  endif()
endforeach()
list(JOIN KVZ_PC_REQUIRES " " KVZ_PC_REQUIRES_TEXT)
list(JOIN KVZ_PC_LIBS " " KVZ_PC_LIBS_TEXT)
configure_file(${CMAKE_SOURCE_DIR}/cmake/kvzap.pc.in ${CMAKE_BINARY_DIR}/cmake/kvzap.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cmake/kvzap.pc DESTINATION ${KVZ_INSTALL_PKGCONFIGDIR}
        COMPONENT devel)

install(FILES ${CMAKE_SOURCE_DIR}/docs/runtime-api.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT devel)
install(FILES ${CMAKE_SOURCE_DIR}/docs/examples/score_export.c
        ${CMAKE_SOURCE_DIR}/docs/examples/CMakeLists.txt
        ${CMAKE_SOURCE_DIR}/docs/examples/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples COMPONENT devel)
message(STATUS "kvzap: install: Requires.private ${KVZ_PC_REQUIRES_TEXT}")
