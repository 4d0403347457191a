# CUDA is optional: AUTO turns it on when a CUDA compiler exists, so a machine without nvcc
# configures cleanly. With it, engine/CMakeLists.txt compiles the CUDA backend (engine/cuda/) into
# moegrad_engine: real code for sm_80 and sm_90 plus sm_90 PTX for newer GPUs.
#
# EMULATE builds the same backend for the CUDA emulator (tests/cuda_emulator), which runs its
# kernels on the CPU: a machine without a GPU then executes every CUDA code path.
include(CheckLanguage)
set(MOEGRAD_HAVE_CUDA OFF)
set(MOEGRAD_CUDA_EMULATOR OFF)
if(MOEGRAD_CUDA STREQUAL "EMULATE")
  set(MOEGRAD_HAVE_CUDA ON)
  set(MOEGRAD_CUDA_EMULATOR ON)
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/cuda_emulator ${PROJECT_BINARY_DIR}/cuda_emulator)
elseif(NOT MOEGRAD_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # before enable_language, which would otherwise cache nvcc's own default (sm_75 for nvcc 13)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual" CACHE STRING "CUDA architectures")
    endif()
    enable_language(CUDA)
    # CMake 3.25 knows nvcc only up to C++17; nvcc 12+ takes -std=c++20 (the engine's headers).
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    # the shared runtime: the engine links CUDA::cudart, and one runtime per process
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    find_package(CUDAToolkit REQUIRED)
    set(MOEGRAD_HAVE_CUDA ON)
  elseif(MOEGRAD_CUDA STREQUAL "ON")
    message(FATAL_ERROR "MOEGRAD_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "moegrad: CUDA backend ${MOEGRAD_HAVE_CUDA} (emulated: ${MOEGRAD_CUDA_EMULATOR})")
