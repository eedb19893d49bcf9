# cuda_emu.cmake: the KVZ_CUDA_EMU build (included by the top-level
# CMakeLists.txt). kernels/*.cu are rewritten by rewrite_cu.pl into C++ in
# the build tree and compiled with g++ against the stand-in CUDA headers in
# tests/cuda_emu/include; the emulator runtime (tests/cuda_emu/src) joins
# libkvzap; nothing comes from a CUDA toolkit.
#   kvz_cuda_emu_sources(<list var>)  adds the rewritten .cu files and the
#                                     runtime
#   kvz_cuda_emu_configure(<target>)  compile definitions and include paths
#   kvz_cuda_emu_selftest()           adds the emulator self-test kernels to
#                                     tests/test_gpu_emulator
enable_language(CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
find_package(Perl REQUIRED)

set(KVZ_EMU_DIR ${CMAKE_SOURCE_DIR}/tests/cuda_emu)
set(KVZ_EMU_GEN_DIR ${CMAKE_BINARY_DIR}/cuda_emu_gen)
file(GLOB KVZ_EMU_RUNTIME_SOURCES CONFIGURE_DEPENDS ${KVZ_EMU_DIR}/src/*.cpp)
# Warnings for the emulated .cu code are shown but never fatal (nvcc builds
# them without -Wall); the emulator's own sources follow KVZ_WERROR.
set(KVZ_EMU_CU_FLAGS -Wall -Wno-unused-function -ffp-contract=off)
set(KVZ_EMU_RUNTIME_FLAGS -Wall -Wextra)
if(KVZ_WERROR)
  list(APPEND KVZ_EMU_RUNTIME_FLAGS -Werror)
endif()

# OUT_VAR: the generated .cpp for the .cu file CU.
function(kvz_cuda_emu_rewrite CU OUT_VAR)
  get_filename_component(name ${CU} NAME_WE)
  set(gen ${KVZ_EMU_GEN_DIR}/${name}.cu.cpp)
  add_custom_command(OUTPUT ${gen}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${KVZ_EMU_GEN_DIR}
    COMMAND ${PERL_EXECUTABLE} ${KVZ_EMU_DIR}/rewrite_cu.pl ${CU} ${gen}
    DEPENDS ${CU} ${KVZ_EMU_DIR}/rewrite_cu.pl
    COMMENT "CUDA emulator: rewriting ${name}.cu" VERBATIM)
  get_filename_component(cu_dir ${CU} DIRECTORY)
  set_source_files_properties(${gen} ${ARGN} PROPERTIES
    INCLUDE_DIRECTORIES "${KVZ_EMU_DIR}/include;${cu_dir}"
    COMPILE_OPTIONS "${KVZ_EMU_CU_FLAGS}")
  set(${OUT_VAR} ${gen} PARENT_SCOPE)
endfunction()

function(kvz_cuda_emu_sources LIST_VAR)
  set(sources ${${LIST_VAR}})
  file(GLOB cu_files CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/*.cu)
  foreach(cu ${cu_files})
    kvz_cuda_emu_rewrite(${cu} gen)
    list(APPEND sources ${gen})
  endforeach()
  set_source_files_properties(${KVZ_EMU_RUNTIME_SOURCES} PROPERTIES
    INCLUDE_DIRECTORIES "${KVZ_EMU_DIR}/include"
    COMPILE_OPTIONS "${KVZ_EMU_RUNTIME_FLAGS}")
  list(APPEND sources ${KVZ_EMU_RUNTIME_SOURCES})
  set(${LIST_VAR} ${sources} PARENT_SCOPE)
endfunction()

function(kvz_cuda_emu_configure TARGET)
  target_compile_definitions(${TARGET} PUBLIC KVZ_HAVE_CUDA=1 KVZ_CUDA_EMU=1)
endfunction()

function(kvz_cuda_emu_selftest)
  if(NOT TARGET test_gpu_emulator)
    return()
  endif()
  file(GLOB selftests CONFIGURE_DEPENDS ${KVZ_EMU_DIR}/selftest/*.cu)
  # The rewrite rule lives in this directory, the test target in tests/:
  # a custom target carries the rule, the properties go to the target's dir.
  set(gens)
  foreach(cu ${selftests})
    kvz_cuda_emu_rewrite(${cu} gen TARGET_DIRECTORY test_gpu_emulator)
    list(APPEND gens ${gen})
  endforeach()
  add_custom_target(kvz_cuda_emu_selftest_sources DEPENDS ${gens})
  target_sources(test_gpu_emulator PRIVATE ${gens})
  add_dependencies(test_gpu_emulator kvz_cuda_emu_selftest_sources)
endfunction()
