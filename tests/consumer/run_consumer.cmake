# ctest `consumer` (see tests/consumer.cmake): moegrad is usable from another project both ways.
#   1. cmake --install the already-built moegrad into a scratch prefix, then configure, build and
#      run this directory's project with find_package(moegrad) through CMAKE_PREFIX_PATH;
#   2. configure, build and run the same project with add_subdirectory(<moegrad source>), tests,
#      benchmarks, examples and CUDA off, unoptimized so that compiling the engine stays quick.
# Run as: cmake -DMOEGRAD_SOURCE_DIR=... -DMOEGRAD_BINARY_DIR=... -DWORK_DIR=...
#               [-DGENERATOR=...] [-DCXX_COMPILER=...] [-DCONFIG=...] -P run_consumer.cmake
cmake_minimum_required(VERSION 3.21)
foreach(var MOEGRAD_SOURCE_DIR MOEGRAD_BINARY_DIR WORK_DIR)
  if(NOT ${var})
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()
set(consumer_src ${CMAKE_CURRENT_LIST_DIR})
if(NOT GENERATOR)
  set(GENERATOR "Unix Makefiles")
endif()
set(common_args -G ${GENERATOR})
if(CXX_COMPILER)
  list(APPEND common_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)

function(step what)
  message(STATUS "consumer: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer: ${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# ---- 1. installed package
set(prefix ${WORK_DIR}/prefix)
set(install_args --install ${MOEGRAD_BINARY_DIR} --prefix ${prefix})
if(CONFIG)
  list(APPEND install_args --config ${CONFIG})
endif()
step("install into ${prefix}" ${CMAKE_COMMAND} ${install_args})
# The consumer is built like the libraries it links: an ASan/UBSan (Sanitize) build of moegrad
# needs the sanitizer runtimes in the executable too.
set(find_args -DCMAKE_BUILD_TYPE=Release)
if(CONFIG STREQUAL "Sanitize")
  set(find_args -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined"
      "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined")
endif()
step("configure with find_package" ${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/find
     ${common_args} ${find_args} -DCMAKE_PREFIX_PATH=${prefix})
step("build with find_package" ${CMAKE_COMMAND} --build ${WORK_DIR}/find -j ${jobs})
step("run with find_package" ${WORK_DIR}/find/consumer)

# ---- 2. add_subdirectory of the source tree
step("configure with add_subdirectory" ${CMAKE_COMMAND} -S ${consumer_src} -B ${WORK_DIR}/subdir
     ${common_args} -DMOEGRAD_SOURCE_DIR=${MOEGRAD_SOURCE_DIR} -DCMAKE_BUILD_TYPE=Debug
     -DCMAKE_CXX_FLAGS_DEBUG=-O0 -DMOEGRAD_BUILD_TESTS=OFF -DMOEGRAD_BUILD_BENCH=OFF
     -DMOEGRAD_BUILD_EXAMPLES=OFF -DMOEGRAD_CUDA=OFF)
step("build with add_subdirectory" ${CMAKE_COMMAND} --build ${WORK_DIR}/subdir -j ${jobs})
step("run with add_subdirectory" ${WORK_DIR}/subdir/consumer)
